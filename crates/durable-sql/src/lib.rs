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
//! Architecture Invariant: this crate knows nothing of turns, tokio, KV or archives; it sees
//! one connection, statements and transactions. The layers above reach it through
//! [`Database::internal`] (trusted SQL), [`Observer`] and [`Database::checkpoint`].

#![deny(missing_docs)]

mod auth;
mod cache;
mod cursor;
mod db;
mod error;
mod held;
mod options;
mod raw;
mod value;
mod wal;

pub use auth::{RESERVED_PREFIX, is_reserved};
pub use cursor::{Cursor, Raw, Row};
pub use db::{CheckpointMode, Database, Internal, Observer};
pub use error::{Error, Result, SqliteFailure, code_name, extended_code_name};
pub use held::Held;
pub use options::{Limits, Options, Synchronous};
pub use value::{FromSqlValue, SqlValue};
pub use wal::{WalObserver, WalSync};

/// The rusqlite version this crate is built on, for layers that run trusted SQL through
/// [`Database::internal`].
pub use rusqlite;
