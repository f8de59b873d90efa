//! The WAL seam for archivers: told after every commit and around a reset, so that a layer
//! above can copy committed WAL frames before anything else touches the WAL.

use std::path::PathBuf;

use crate::db::{CheckpointMode, Database, Internal};
use crate::error::{Error, Result};

/// Told when the write-ahead log may have grown by a commit, and when the database is about
/// to be replaced by [`Database::reset`]. The point-in-time-recovery archiver installs one to
/// copy each commit's frames out of the WAL right after the commit.
///
/// This is separate from [`Observer`](crate::Observer), so the turn layer and the archiver
/// can each have theirs. Callbacks run while the database is locked, before the
/// [`Observer`](crate::Observer) hears of the same event: they must not call back into the
/// [`Database`], and they should not fail (an archiver that cannot copy records the failure
/// and reports it through its own API; the commit stands in the WAL).
pub trait WalObserver: Send {
    /// A `COMMIT` of the implicit transaction succeeded: its frames are in the WAL.
    fn committed(&mut self) {}
    /// [`Database::reset`] is about to close the connection and delete the database and its
    /// WAL. Everything committed so far is still in the files.
    fn before_reset(&mut self) {}
    /// [`Database::reset`] reopened an empty database (with an empty or absent WAL).
    fn after_reset(&mut self) {}
}

impl Database {
    /// Installs the [`WalObserver`] (replacing any earlier one).
    pub fn set_wal_observer(&self, observer: Option<Box<dyn WalObserver>>) {
        self.shared.lock().wal_observer = observer;
    }

    /// The WAL file of this database (`<path>-wal`), or `None` for an in-memory database.
    pub fn wal_path(&self) -> Option<PathBuf> {
        self.path().map(|p| {
            let mut name = p.into_os_string();
            name.push("-wal");
            PathBuf::from(name)
        })
    }
}

impl Internal<'_> {
    /// Checkpoints the WAL while the database stays locked (so no commit can slip in between
    /// an archiver's last copy of the WAL and the checkpoint). Returns the WAL's size in
    /// frames and how many of them are now in the database file. Fails with SQLite's error
    /// when a transaction is open.
    pub fn checkpoint(&mut self, mode: CheckpointMode) -> Result<(u32, u32)> {
        if !self.autocommit() {
            return Err(Error::Sqlite(crate::error::SqliteFailure {
                message: "cannot checkpoint while a transaction is open".into(),
                code: rusqlite::ffi::SQLITE_LOCKED,
                extended_code: rusqlite::ffi::SQLITE_LOCKED,
                offset: None,
            }));
        }
        self.checkpoint_locked(mode)
    }
}
