//! Point-in-time recovery for durable-storage objects: the WAL archiver.
//!
//! An [`Archiver`] attaches to one object's SQLite database as a subscriber of its commit
//! pipeline (`durable_sql::pipeline`): every commit the pipeline reports durable has its pages
//! copied out of the WAL into a local *journal* (one record per commit, checksummed), and only
//! the archiver checkpoints the WAL, after the journal is durable, so no commit can escape
//! history. It works the same whether the database fsyncs inside every `COMMIT` or group
//! commits (the capture then runs on the sync threads, after the fsync). Sealed journal segments and snapshots go to an
//! [`object_store`] archive: a local folder next to the data by default, memory in tests,
//! S3-compatible storage with the `s3` feature.
//!
//! History is addressed by *bookmarks*, 55-character strings whose string order is history
//! order. The Durable Objects calls map one to one: [`Archiver::current_bookmark`],
//! [`Archiver::bookmark_for_time`] and [`Archiver::on_next_session_restore_bookmark`]; the
//! restore happens atomically the next time [`Archiver::open`] runs, is itself a point in
//! history that can be undone, and never deletes history.
//!
//! ```
//! use durable_pitr::{ArchiveConfig, Archiver};
//! use durable_sql::testing::ManualClock;
//! use durable_sql::{Options, params};
//! use std::sync::Arc;
//!
//! let rt = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
//! rt.block_on(async {
//!     let dir = tempfile::tempdir()?;
//!     let path = dir.path().join("room.sqlite");
//!     let clock = ManualClock::new(1_700_000_000_000);
//!     let config = || ArchiveConfig::local_for(&path).map(|c| c.with_clock(Arc::new(clock.clone())));
//!
//!     let (db, archiver) = Archiver::open(&path, Options::default(), config()?).await?;
//!     db.exec("CREATE TABLE t(x)", &[])?;
//!     db.exec("INSERT INTO t VALUES (?)", &params![1])?;
//!     db.commit()?; // durable, so captured into the journal
//!     let before = archiver.current_bookmark()?;
//!
//!     clock.advance(1_000);
//!     db.exec("DELETE FROM t", &[])?;
//!     db.commit()?;
//!     let undo = archiver.on_next_session_restore_bookmark(&before)?;
//!     archiver.close().await?;
//!     drop(db);
//!
//!     // The next session opens at `before`; `undo` would bring the deletion back.
//!     let (db, archiver) = Archiver::open(&path, Options::default(), config()?).await?;
//!     let n: i64 = db.exec("SELECT count(*) FROM t", &[])?.one()?;
//!     assert_eq!(n, 1);
//!     assert!(undo > before);
//!     archiver.close().await?;
//!     Ok::<(), Box<dyn std::error::Error>>(())
//! })?;
//! Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Architecture Invariant: this crate knows nothing of KV, turns or the facade; it sees one
//! database's pages and commits through `durable-sql`'s commit pipeline and
//! `Internal::checkpoint`.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod archive;
mod archiver;
mod bookmark;
mod clock;
mod codec;
mod config;
mod error;
mod journal;
mod lease;
mod log;
mod record;
mod wal;

pub use archiver::{ArchiveCheck, ArchiveReader, Archiver, HistoryEntry, PointKind, Status};
pub use bookmark::{BOOKMARK_LEN, Bookmark};
pub use clock::{Clock, SystemClock, system_time_ms};
#[cfg(feature = "testing")]
pub use config::Failpoint;
pub use config::{ArchiveConfig, local_store};
pub use error::{ArchiveError, BookmarkError, Error, Result, TimeError};
pub use lease::{Node, Owner};
/// The object store crate, for building stores (`object_store::aws::AmazonS3Builder` with
/// the `s3` feature).
pub use object_store;
