//! The SQL engine wrapper of durable-storage: one object's SQLite database with the Durable
//! Objects SQL API.
//!
//! A [`Database`] is one object's SQLite file in WAL mode. [`Database::exec`] runs SQL the way
//! the runtime's `sql.exec` does (multi-statement rules, eager first step, the runtime's error
//! messages), through an authorizer that keeps user SQL inside its own tables, with the
//! runtime's limits, and returns a [`Cursor`] with the runtime's row counters. Writes are
//! grouped into an implicit transaction that [`Database::commit`] ends;
//! [`Database::transaction_sync`] nests savepoints inside it.
//!
//! ```
//! use durable_sql::{Database, Options, params};
//!
//! let dir = tempfile::tempdir()?;
//! let db = Database::open(dir.path().join("object.sqlite"), Options::default())?;
//! db.exec("CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT)", &[])?;
//! db.transaction_sync(|| {
//!     db.exec("INSERT INTO users(name) VALUES (?)", &params!["ada"])?;
//!     db.exec("INSERT INTO users(name) VALUES (?)", &params!["grace"])?;
//!     Ok::<_, durable_sql::Error>(())
//! })?;
//! db.commit()?;
//!
//! let mut cursor = db.exec("SELECT name FROM users ORDER BY id", &[])?;
//! let names: Vec<String> = cursor.raw().map(|r| r.unwrap()[0].get().unwrap()).collect();
//! assert_eq!(names, ["ada", "grace"]);
//! assert_eq!(cursor.rows_read(), 2);
//!
//! // The project's own tables and transaction statements are out of reach of user SQL.
//! assert!(db.exec("CREATE TABLE _cf_mine(x)", &[]).is_err());
//! assert!(db.exec("BEGIN", &[]).is_err());
//! Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Every commit goes through one [commit pipeline](pipeline): it gets a sequence number, is
//! made durable as the database's [`Durability`] says (an fsync inside `COMMIT`, or group
//! commit: a shared pool of threads fsyncs the WAL, one fsync for many commits), and its
//! subscribers hear of it, in order, when it is made, when it is durable, and when the
//! database is wiped or closed. The layers above hang on it: the turn layer's output gate
//! waits for `Durable`, and the archiver captures what became durable.
//!
//! Architecture Invariant: this crate knows nothing of turns, tokio, KV or archives; it sees
//! one connection, statements and transactions. The layers above reach it through
//! [`Database::internal`] (trusted SQL), the [commit pipeline](pipeline)
//! ([`Database::subscribe`]) and [`Internal::checkpoint`].

#![deny(missing_docs)]

mod auth;
mod cache;
mod cursor;
mod db;
mod de;
mod error;
pub mod files;
mod held;
mod options;
pub mod pipeline;
mod raw;
mod sync_pool;
#[cfg(feature = "testing")]
pub mod testing;
mod value;

pub use auth::{RESERVED_PREFIX, is_reserved};
pub use cursor::{Cursor, Raw, Row, RowsAs};
pub use db::{CheckpointMode, Database, Internal};
pub use de::FromRow;
pub use error::{Error, Result, SqliteFailure, code_name, extended_code_name};
pub use held::Held;
pub use options::{Durability, Limits, Options};
pub use pipeline::{CommitEvent, CommitProgress, CommitSubscriber, SubscriptionId};
pub use value::{FromSqlValue, SqlValue};

/// The rusqlite version this crate is built on, for layers that run trusted SQL through
/// [`Database::internal`].
pub use rusqlite;
