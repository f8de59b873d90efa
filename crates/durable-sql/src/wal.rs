//! The WAL seam for archivers: told after every commit and around a reset, so that a layer
//! above can copy committed WAL frames before anything else touches the WAL.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Mutex;

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

    /// A handle that makes this database's commits durable from any thread (see [`WalSync`]).
    pub fn wal_sync(&self) -> WalSync {
        WalSync { path: self.wal_path(), open: Mutex::new(None) }
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

/// Makes a database's committed transactions durable, from any thread: an `fdatasync` of its
/// `-wal` file (and of the folder, the first time a new WAL file is seen).
///
/// This is how commits share fsyncs. Open the database with
/// [`Synchronous::Normal`](crate::Synchronous::Normal): a `COMMIT` then writes its frames to
/// the WAL without waiting for the disk, and SQLite still syncs around every checkpoint, so
/// the file is never corrupt. A commit is durable once a [`sync`](WalSync::sync) that
/// started after it returns, exactly as under `FULL`; one `sync` covers every commit made
/// before it, so a layer that batches them pays one fsync for many commits, and can run it on
/// another thread while the next commits are being made.
///
/// ```
/// use durable_sql::{Database, Options, Synchronous, params};
///
/// let dir = tempfile::tempdir()?;
/// let options = Options { synchronous: Synchronous::Normal, ..Options::default() };
/// let db = Database::open(dir.path().join("o.sqlite"), options)?;
/// let wal = db.wal_sync();
/// db.exec("CREATE TABLE t(x)", &[])?;
/// db.commit()?;
/// db.exec("INSERT INTO t VALUES (?)", &params![1])?;
/// db.commit()?;
/// std::thread::spawn(move || wal.sync()).join().unwrap()?; // both commits are durable now
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct WalSync {
    path: Option<PathBuf>,
    /// The WAL file last synced and its identity, kept open between syncs.
    open: Mutex<Option<(File, FileId)>>,
}

type FileId = (u64, u64);

#[cfg(unix)]
fn file_id(meta: &std::fs::Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

#[cfg(not(unix))]
fn file_id(meta: &std::fs::Metadata) -> FileId {
    // No stable identity: a changed length or time makes the handle reopen.
    let modified = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
    (meta.len(), modified.map_or(0, |d| d.as_nanos() as u64))
}

impl WalSync {
    /// The WAL file this handle syncs (`None` for an in-memory database).
    pub fn path(&self) -> Option<&std::path::Path> {
        self.path.as_deref()
    }

    /// Makes every transaction committed before the call durable. Nothing to do for an
    /// in-memory database or while no WAL file exists (nothing was written since the last
    /// checkpoint that removed it, and a checkpoint syncs the database file).
    pub fn sync(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let id = file_id(&meta);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.as_ref().map(|(_, known)| *known) != Some(id) {
            let file = match File::open(path) {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            };
            // A WAL file created since the last sync: its folder entry must be durable too.
            if let Some(dir) = path.parent() {
                sync_dir(dir)?;
            }
            *open = Some((file, id));
        }
        match open.as_ref() {
            Some((file, _)) => file.sync_data(),
            None => Ok(()),
        }
    }
}

#[cfg(unix)]
pub(crate) fn sync_dir(dir: &std::path::Path) -> std::io::Result<()> {
    let dir = if dir.as_os_str().is_empty() { std::path::Path::new(".") } else { dir };
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
pub(crate) fn sync_dir(_dir: &std::path::Path) -> std::io::Result<()> {
    Ok(())
}
