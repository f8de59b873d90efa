//! durable-backend's integration tests: the generic contract suite on both implementations,
//! the SQLite backend's durability, the fault-injecting wrapper, and the write-behind cache.
//!
//! Cache tests cite the acceptance cases of `shared/spec/legacy-kv-and-gates.md` section 6
//! by number where one applies.

#[path = "backend/support.rs"]
mod support;

#[path = "backend/cache.rs"]
mod cache;
#[path = "backend/faulty.rs"]
mod faulty;
#[path = "backend/implementations.rs"]
mod implementations;
