//! KV inside an object's SQLite database: the Durable Objects KV APIs over `_cf_KV`.
//!
//! [`Kv`] stores string keys (ordered by their UTF-8 bytes) with values of any
//! `Serialize` type in the runtime's table layout, `_cf_KV (key TEXT PRIMARY KEY, value BLOB)
//! WITHOUT ROWID`, created on the first write and invisible to user SQL. Values go through
//! [`codec`]: a format-version byte, then serde's data model in bincode's fixed-width
//! primitives (format 2), self-describing, so any stored value also reads as [`Value`] (or
//! `serde_json::Value`) and stored structs follow serde's evolution rules. [`Value`] holds
//! untyped data and round-trips exactly. [`ListOptions`] compiles the runtime's list options
//! (prefix, start, start_after, end, limit, reverse) into one key range.
//!
//! ```
//! use durable_kv::{Kv, ListOptions, Value};
//! use durable_sql::{Database, Options};
//!
//! let db = Database::open_in_memory(Options::default())?;
//! let kv = Kv::new(db.clone());
//! kv.put("user:1", &"ada")?;
//! kv.put("user:2", &Value::Float(f64::NAN))?;
//! assert_eq!(kv.get::<String>("user:1")?.as_deref(), Some("ada"));
//! assert!(kv.delete("user:1")?);
//!
//! let listed: Vec<(String, Value)> =
//!     kv.list(&ListOptions::new().prefix("user:"))?;
//! assert_eq!(listed.len(), 1);
//!
//! // Typed values read as `Value` too: a struct is an object of its fields.
//! #[derive(serde::Serialize)]
//! struct Point { x: i32 }
//! kv.put("point", &Point { x: 3 })?;
//! let point = Value::Object(vec![("x".into(), Value::Integer(3))]);
//! assert_eq!(kv.get::<Value>("point")?, Some(point));
//! db.commit()?;
//! Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Architecture Invariant: this crate knows nothing of turns, gates or tokio. Its writes join
//! the SQL layer's implicit transaction; the layer above decides when that commits.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod clone_size;
pub mod codec;
mod error;
mod kv;
mod list;
pub mod table;
mod value;

pub use error::{Error, Result};
pub use kv::{Kv, KvLimits, ListIter};
pub use list::{KeyRange, ListOptions, prefix_successor};
pub use value::{MAX_DEPTH, Value};
