//! Integration tests of durable-sql: one test binary, one module per area, all sharing the
//! data-driven helpers in `support`.
//!
//! Expected strings and counter values come from the real runtime's recorded answers
//! (`shared/oracle/cases/*.expected.json`, cited by case number) and from the behavioural spec
//! (`shared/spec/sqlite-storage.md`, cited by section or section 9 item number). Replaying the
//! recorded cases op by op, counters included, is the conformance suite's job
//! (`tests/tests/conformance.rs`), which runs them through this crate.

#[path = "sql/support.rs"]
mod support;

#[path = "sql/authorizer.rs"]
mod authorizer;
#[path = "sql/cursor.rs"]
mod cursor;
#[path = "sql/durability.rs"]
mod durability;
#[path = "sql/exec.rs"]
mod exec;
#[path = "sql/held.rs"]
mod held;
#[path = "sql/hostile.rs"]
mod hostile;
#[path = "sql/limits.rs"]
mod limits;
#[path = "sql/open.rs"]
mod open;
#[path = "sql/size.rs"]
mod size;
#[path = "sql/transactions.rs"]
mod transactions;
#[path = "sql/typed.rs"]
mod typed;
#[path = "sql/values.rs"]
mod values;
