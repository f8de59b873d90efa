//! The facade of durable-storage: Cloudflare Durable Objects' storage API for Rust programs.
//!
//! - [`Storage`] is one object's `ctx.storage`: the SQL API, the sync and async KV APIs,
//!   both transaction forms, alarms, `sync` and `delete_all`. Every write between two commit
//!   points is one atomic transaction.
//! - [`Namespace`] is a data directory of objects opened by name, one database file each,
//!   with one live handle per object, objects closed when idle, a lock against a second
//!   process, and an index of pending alarms so that [`Namespace::run_alarms`] wakes only the
//!   objects whose alarm is due.
//! - [`Object`] (through [`Namespace::object`]) runs an object's code in turns, with the
//!   output and input gates and alarm events.
//!
//! - Point-in-time recovery: every SQLite-backed object of a namespace archives its history
//!   (locally by default, [`Archive`]); [`StorageHandle`] has the bookmark calls
//!   (`current_bookmark`, `bookmark_for_time`, `on_next_session_restore_bookmark`, `history`,
//!   `image_at`).
//!
//! Each lower layer is re-exported as a module: [`sql`], [`kv`], [`backend`], [`txn`],
//! [`pitr`].
//!
//! Without the object runtime, commit points are explicit (`sync`):
//!
//! ```
//! use durable_storage::{Namespace, NamespaceOptions};
//!
//! let dir = std::env::temp_dir().join(format!("durable-doc-{}", std::process::id()));
//! let ns = Namespace::open(&dir, NamespaceOptions::default())?;
//! let room = ns.storage("room 42")?;
//! room.put("topic", "storage");                         // takes effect now
//! room.sql()?.exec("CREATE TABLE msgs (body TEXT)", &[])?; // the same transaction
//! room.sync().wait()?;                                   // one commit (and fsync) for both
//!
//! // The live handle is shared: a second `storage` call returns the same object.
//! let again = ns.storage("room 42")?;
//! let topic: Option<String> = again.get("topic").now().ok().unwrap()?;
//! assert_eq!(topic.as_deref(), Some("storage"));
//! assert_eq!(ns.names()?, ["room 42"]);
//! # drop((room, again, ns));
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! With the object runtime (inside a tokio runtime), events run in turns. [`Error`] is the
//! one error type of object code: every layer's error converts into it, so a handler uses
//! `?` on any storage call, and [`ObjectHandle::try_call`] hands back the handler's error and
//! the event's own (the object was reset under it) as one `Error`:
//!
//! ```
//! use std::sync::Arc;
//! use durable_storage::{Actor, Namespace, NamespaceOptions};
//!
//! struct Counter;
//! impl Actor for Counter {}
//!
//! # let dir = std::env::temp_dir().join(format!("durable-doc-rt-{}", std::process::id()));
//! # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! # rt.block_on(async {
//! let ns = Namespace::open(&dir, NamespaceOptions::default())?;
//! let counter = ns.object("visits", |_| Counter)?;
//! let n = counter
//!     .try_call(|ctx| async move {
//!         let n: i64 = ctx.storage().get("n").await?.unwrap_or(0);
//!         ctx.storage().put("n", &(n + 1));  // committed when the turn ends
//!         Ok(n + 1)
//!     })
//!     .await?;
//! assert_eq!(n, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The facade is the only place the layers are wired: a namespace opens each database with
//! its [durability](sql::Durability) (group commit by default) and, when archived, through
//! the archiver, which follows the database's commit pipeline by itself (ARCHITECTURE.md,
//! "The commit pipeline").
//!
//! Architecture Invariant: the facade adds naming, lifetime and scheduling of objects; every
//! storage behaviour (turns, gates, alarms in the object's database) belongs to the layers
//! below, which know nothing of namespaces.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod archive;
mod call;
mod error;
mod index;
mod names;
mod namespace;
mod scheduler;

pub use durable_backend as backend;
pub use durable_kv as kv;
pub use durable_pitr as pitr;
pub use durable_sql as sql;
pub use durable_txn as txn;

pub use durable_kv::{Kv, ListOptions, Value};
pub use durable_sql::{Cursor, Database, Row, SqlValue, params};
pub use durable_txn::{
    Actor, AlarmInfo, AlarmTime, Clock, Compatibility, Context, GetOptions, HandlerError, Object,
    ObjectOptions, Op, PutOptions, Recovery, Storage, SystemClock, Transaction, TurnEnd,
};

/// The workspace's manual clock, for tests (the `testing` feature): one clock drives alarms,
/// commit stamps and the recovery window.
#[cfg(feature = "testing")]
pub use durable_sql::testing::ManualClock;

pub use archive::{Archive, ArchiveStore, ConfigureArchive, ImageAt};
pub use error::{Error, Result};
pub use index::INDEX_FILE;
pub use names::{MAX_ESCAPED, SUFFIX};
pub use namespace::{
    Backend, LOCK_FILE, Namespace, NamespaceOptions, ObjectHandle, Replication, StorageHandle,
};
pub use scheduler::AlarmScheduler;
