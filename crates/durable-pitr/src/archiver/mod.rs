//! `Archiver`: attaches to one object's database, captures what its commit pipeline reports
//! durable into the journal, names positions (bookmarks), restores on open, and runs the
//! upload, compaction and retention steps.
//!
//! The work is split along its seams, one file each:
//!
//! | file | holds |
//! |---|---|
//! | `open.rs` | [`Archiver::open`]: the object's lock, journal recovery, adopting WAL commits, rebuilding a missing database, applying a pending restore, the history's identity |
//! | `capture.rs` | capture (WAL frames → journal records), sealing, checkpoints, and the commit-pipeline subscriber that drives them |
//! | `rebuild.rs` | rebuilding a database image at a position from snapshots and segments |
//! | `history.rs` | bookmarks: resolving them, the bookmark for a time, restore requests, listing history |
//! | `maintain.rs` | upload of sealed segments, snapshots and merges (compaction), retention |
//!
//! # Lock discipline
//!
//! Two locks matter: the database's (durable-sql's connection lock) and the archiver's own
//! (`Inner`, one mutex).
//!
//! 1. The database lock is taken before the archiver's, never after: a capture that must not
//!    let a commit slip in (before a checkpoint) runs inside [`Database::internal`] and locks
//!    `Inner` there. Pipeline events delivered with the database locked (`Resetting`, `Reset`)
//!    lock only `Inner`.
//! 2. `Inner` is never held across an `.await`: async steps copy what they need (a
//!    [`Sources`] value), unlock, do the object-store I/O, and lock again to record the outcome.
//!    So maintenance never blocks captures, and nothing needs a `try_lock`.
//! 3. Local file I/O (journal appends and fsyncs, the WAL read) happens under `Inner`.
//! 4. A `Durable` event arrives on the pipeline's delivery thread (a sync thread under group
//!    commit): it takes the database lock, then `Inner` (rule 1), and may checkpoint.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use durable_sql::{Database, SubscriptionId};

use crate::archive::{Archive, Catalog};
use crate::bookmark::HistoryKey;
use crate::config::ArchiveConfig;
use crate::error::{ArchiveError, Error, Result, corrupt, io_error};
use crate::journal::Journal;
use crate::record::Kind;
use crate::wal::{self, WalPos};

mod capture;
mod check;
mod history;
mod maintain;
mod open;
mod reader;
mod rebuild;

pub use check::ArchiveCheck;
pub use reader::ArchiveReader;

use rebuild::Sources;

/// The files an archiver keeps next to the database `<db>`: the folder `<db>-pitr/`.
#[derive(Debug, Clone)]
struct Paths {
    db: PathBuf,
    wal: PathBuf,
    shm: PathBuf,
    dir: PathBuf,
    pending: PathBuf,
    image: PathBuf,
    meta: PathBuf,
}

impl Paths {
    fn new(db: &Path) -> Paths {
        let mut dir = db.as_os_str().to_owned();
        dir.push("-pitr");
        let dir = PathBuf::from(dir);
        Paths {
            db: db.to_path_buf(),
            wal: durable_sql::files::wal_path(db),
            shm: durable_sql::files::shm_path(db),
            pending: dir.join("restore.pending"),
            image: dir.join("restore.img"),
            meta: dir.join("meta"),
            dir,
        }
    }
}

/// The newest position of history and where capture stands in the WAL.
#[derive(Debug, Clone, Copy)]
struct Head {
    epoch: u32,
    seq: u64,
    ts: u64,
    wal: WalPos,
    /// Database size in bytes after the head commit.
    db_bytes: u64,
}

struct Inner {
    config: ArchiveConfig,
    archive: Archive,
    history: HistoryKey,
    paths: Paths,
    journal: Journal,
    catalog: Catalog,
    head: Head,
    poisoned: Option<String>,
    /// The last failed upload's error, cleared by the next successful one.
    upload_error: Option<String>,
    /// The newest position, for whoever waits for history to upload
    /// ([`Archiver::watch_head`]).
    head_tx: tokio::sync::watch::Sender<u64>,
    /// Commits of the database (its pipeline's numbers) captured but not yet in the archive
    /// store, each with the position that holds it: (commit, position).
    replica: std::collections::VecDeque<(u64, u64)>,
    /// The newest commit whose history is in the archive store
    /// ([`Archiver::watch_replicated`]).
    replicated_tx: tokio::sync::watch::Sender<u64>,
    /// The newest position in the store as of the last upload (`uploaded_seq` without
    /// scanning the catalog; only uploads move it).
    uploaded_hint: u64,
    /// The newest position in the node's shared log (`log.rs`): in the store, not yet in
    /// the object's own segments.
    logged_seq: u64,
    /// The first position this archiver put into the shared log (`None` before the first).
    log_from: Option<u64>,
    /// Another node took the object over: this archiver writes nothing more.
    fenced: bool,
    /// The WAL, kept open between captures.
    wal_reader: wal::WalReader,
    /// Every position up to this one is durable in the local WAL: captured when the
    /// database reported every commit so far durable, or after [`Inner::wal_durable`]
    /// synced it. Uploads of positions up to it need no WAL sync of their own.
    durable_head: u64,
    /// Held for the archiver's life: one archiver per object.
    _lock: File,
}

/// The archiver of one object's database: capture, bookmarks, restore, upload, compaction,
/// retention. See the crate documentation for how a host uses it.
pub struct Archiver {
    inner: Arc<Mutex<Inner>>,
    /// One upload at a time: uploads read and delete the local copies of sealed segments.
    upload_lock: tokio::sync::Mutex<()>,
    /// One delta in the shared log at a time ([`Archiver::replicate`]).
    log_lock: tokio::sync::Mutex<()>,
    db: Database,
    /// The archiver's place in the database's commit pipeline.
    subscription: SubscriptionId,
}

impl std::fmt::Debug for Archiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("Archiver")
            .field("db", &inner.paths.db)
            .field("epoch", &inner.head.epoch)
            .field("seq", &inner.head.seq)
            .finish_non_exhaustive()
    }
}

impl Drop for Archiver {
    fn drop(&mut self) {
        // Commits made after this are adopted from the WAL by the next archiver to open.
        self.db.unsubscribe(self.subscription);
    }
}

/// What [`Archiver::status`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// The current epoch (restores so far).
    pub epoch: u32,
    /// The newest sequence number.
    pub seq: u64,
    /// Sealed segments not yet uploaded.
    pub local_segments: usize,
    /// Segments in the archive.
    pub archived_segments: usize,
    /// Snapshots in the archive.
    pub snapshots: usize,
    /// Bytes in the open journal segment.
    pub open_segment_bytes: u64,
    /// The newest position in the archive store (0 when none is).
    pub uploaded_seq: u64,
    /// Positions of history not yet in the archive store: the upload lag in commits.
    pub pending: u64,
    /// How long the oldest of those has waited, in milliseconds: the upload lag in time (0
    /// when nothing waits).
    pub lag_ms: u64,
    /// The last upload's error, when it failed (cleared by the next successful upload).
    pub last_error: Option<String>,
    /// The lease term this archiver writes under (0: no leases, see [`crate::Node`]).
    pub term: u32,
    /// The newest position in the archive store, in the object's segments or in its node's
    /// shared log ([`Archiver::replicate`]): what survives the loss of this machine.
    pub replicated_seq: u64,
    /// How long the oldest position past `replicated_seq` has waited, in milliseconds (0
    /// when none waits).
    pub replica_lag_ms: u64,
}

/// What a point of history is (see [`HistoryEntry::kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PointKind {
    /// The database when its history began.
    Init,
    /// A commit.
    Commit,
    /// A restore: the first point of a new epoch.
    Restore,
    /// The WAL was changed outside the archiver; the point holds a full image.
    Discontinuity,
    /// `deleteAll()`: the new, empty database.
    Reset,
}

impl PointKind {
    fn of(kind: Kind) -> PointKind {
        match kind {
            Kind::Init => PointKind::Init,
            Kind::EpochStart => PointKind::Restore,
            Kind::Discontinuity => PointKind::Discontinuity,
            Kind::Reset => PointKind::Reset,
            Kind::Commit | Kind::Mark => PointKind::Commit,
        }
    }

    /// A lowercase name: `init`, `commit`, `restore`, `discontinuity` or `reset`.
    pub fn as_str(self) -> &'static str {
        match self {
            PointKind::Init => "init",
            PointKind::Commit => "commit",
            PointKind::Restore => "restore",
            PointKind::Discontinuity => "discontinuity",
            PointKind::Reset => "reset",
        }
    }
}

/// One retained point of an object's history, as [`Archiver::history`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HistoryEntry {
    /// The epoch (restores before this point).
    pub epoch: u32,
    /// The sequence number (0 for the start of history; one more per point).
    pub seq: u64,
    /// The commit's time, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The bookmark naming the state right after this point.
    pub bookmark: String,
    /// The database's size in bytes after this point (pages times page size).
    pub db_bytes: u64,
    /// What the point is.
    pub kind: PointKind,
}

fn now_ts(config: &ArchiveConfig) -> u64 {
    config.clock.now_ms().max(0) as u64
}

pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(|e| {
        Error::Archive(ArchiveError::Io {
            action: "draw random bytes",
            path: "getrandom".into(),
            source: std::io::Error::other(e.to_string()),
        })
    })?;
    Ok(out)
}

/// Writes `bytes` to `path` atomically: a temporary file, fsync, rename, fsync of the folder.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = File::create(&tmp).map_err(io_error("create", &tmp))?;
    f.write_all(bytes).map_err(io_error("write", &tmp))?;
    f.sync_all().map_err(io_error("sync", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io_error("rename", &tmp))?;
    crate::journal::sync_dir(path.parent().unwrap_or(Path::new(".")))
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error("remove", path)(e)),
    }
}

/// Reads a database file whose WAL is empty: its page size and pages.
fn read_db_file(path: &Path) -> Result<(u32, Vec<u8>)> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_error("read", path)(e)),
    };
    if data.is_empty() {
        return Ok((0, data));
    }
    let raw = data.get(16..18).map(|b| u16::from_be_bytes([b[0], b[1]]) as u32).unwrap_or(0);
    let page_size = if raw == 1 { 65536 } else { raw };
    if !(512..=65536).contains(&page_size)
        || !page_size.is_power_of_two()
        || data.len() % page_size as usize != 0
    {
        return Err(corrupt(path.display().to_string(), "not a database file"));
    }
    Ok((page_size, data))
}

fn full_image_pages(page_size: u32, data: &[u8]) -> BTreeMap<u32, Vec<u8>> {
    if page_size == 0 {
        return BTreeMap::new();
    }
    data.chunks(page_size as usize).enumerate().map(|(i, p)| (i as u32 + 1, p.to_vec())).collect()
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    fn fail(&self, point: &'static str) -> Result<()> {
        self.archive.fail(point)
    }

    /// After a failed archive step: when a later lease term fenced this writer, stops the
    /// archiver for good and returns true; the caller then stops the database's commit
    /// pipeline with [`Archiver::stop_durability`] once it has let go of this lock (the
    /// pipeline's delivery lock comes before the archiver's: a sync thread delivering
    /// `Durable` holds it while it waits for this one).
    pub(super) fn fenced(&mut self, error: &Error) -> bool {
        let Error::Archive(ArchiveError::Fenced { .. }) = error else { return false };
        self.fenced = true;
        if self.poisoned.is_none() {
            tracing::error!(%error, db = %self.paths.db.display(), "archiver fenced");
            self.poisoned = Some(error.to_string());
        }
        true
    }

    fn check_poisoned(&self) -> Result<()> {
        match &self.poisoned {
            Some(why) => Err(Error::Archive(ArchiveError::Poisoned(why.clone()))),
            None => Ok(()),
        }
    }

    /// Records the first failure of a step that leaves the archiver unable to go on: every
    /// later call reports it.
    fn poison<T>(&mut self, result: Result<T>) -> Result<T> {
        if let Err(e) = &result
            && self.poisoned.is_none()
        {
            tracing::error!(error = %e, db = %self.paths.db.display(), "archiver stopped");
            self.poisoned = Some(e.to_string());
        }
        result
    }

    /// True when nothing this archiver can read holds a base for its history: no snapshot,
    /// and no segment or journal record reaching back to the history's first position. It
    /// happens when a journal that already uploaded part of its history is pointed at
    /// another archive.
    pub(super) fn without_base(&self) -> bool {
        if self.head.seq == 0 || !self.catalog.snapshots.is_empty() {
            return false;
        }
        let segments = self.catalog.segments.iter().map(|e| e.name.first_seq);
        let journal = self.journal.index().first().map(|e| e.seq);
        segments.chain(journal).min().is_none_or(|first| first > 0)
    }

    /// Commits up to `commit` are captured, in positions up to the head.
    /// Runs on every `Durable` event: no catalog scan here, only the newest upload's
    /// position as the last upload left it, and nothing at all while nobody watches.
    pub(super) fn note_captured(&mut self, commit: u64) {
        if self.replicated_tx.receiver_count() == 0 {
            return;
        }
        self.replica.push_back((commit, self.head.seq));
        self.release_replicated(self.uploaded_hint.max(self.logged_seq));
    }

    /// After an upload: tells [`Archiver::watch_replicated`] which commits are in the
    /// archive store now.
    pub(super) fn publish_replicated(&mut self) {
        self.uploaded_hint = self.uploaded_seq();
        self.release_replicated(self.uploaded_hint.max(self.logged_seq));
    }

    fn release_replicated(&mut self, uploaded: u64) {
        let mut newest = None;
        while let Some(&(commit, position)) = self.replica.front() {
            if position > uploaded {
                break;
            }
            newest = Some(commit);
            self.replica.pop_front();
        }
        if let Some(commit) = newest {
            self.replicated_tx.send_if_modified(|r| {
                let newer = commit > *r;
                *r = (*r).max(commit);
                newer
            });
        }
    }

    /// The newest position in the archive store.
    pub(super) fn uploaded_seq(&self) -> u64 {
        self.catalog
            .segments
            .iter()
            .filter(|e| e.remote)
            .map(|e| e.name.last_seq)
            .max()
            .unwrap_or(0)
    }

    /// The time stamp of the oldest position past `uploaded`.
    fn oldest_ts_after(&self, uploaded: u64) -> Option<u64> {
        let sealed = self
            .catalog
            .segments
            .iter()
            .filter(|e| !e.remote && e.name.last_seq > uploaded)
            .map(|e| e.name.first_ts)
            .min();
        let open = self.journal.index().iter().find(|e| e.seq > uploaded).map(|e| e.ts);
        sealed.into_iter().chain(open).min()
    }

    fn sources(&self) -> Sources {
        Sources {
            archive: self.archive.clone(),
            history: self.history,
            catalog: self.catalog.clone(),
            open_journal: self.journal.open_path().map(Path::to_path_buf),
        }
    }
}

impl Archiver {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// Where the archiver stands.
    pub fn status(&self) -> Status {
        let inner = self.lock();
        let uploaded_seq = inner.uploaded_seq();
        let now = now_ts(&inner.config);
        let lag_ms = inner.oldest_ts_after(uploaded_seq).map_or(0, |ts| now.saturating_sub(ts));
        let replicated_seq = uploaded_seq.max(inner.logged_seq);
        let replica_lag_ms =
            inner.oldest_ts_after(replicated_seq).map_or(0, |ts| now.saturating_sub(ts));
        Status {
            replicated_seq,
            replica_lag_ms,
            uploaded_seq,
            pending: inner.head.seq.saturating_sub(uploaded_seq),
            lag_ms,
            last_error: inner.upload_error.clone(),
            term: inner.archive.term,
            epoch: inner.head.epoch,
            seq: inner.head.seq,
            local_segments: inner.catalog.segments.iter().filter(|e| e.local.is_some()).count(),
            archived_segments: inner.catalog.segments.iter().filter(|e| e.remote).count(),
            snapshots: inner.catalog.snapshots.len(),
            open_segment_bytes: inner.journal.open_len(),
        }
    }

    /// A receiver of the newest position: it changes whenever history grows, so a host can
    /// upload soon after (continuous archiving).
    pub fn watch_head(&self) -> tokio::sync::watch::Receiver<u64> {
        self.lock().head_tx.subscribe()
    }

    /// A receiver of the newest commit of the database (numbered as its commit pipeline
    /// numbers them, [`durable_sql::CommitEvent`]) whose history is in the archive store:
    /// what a host waits on to release results only once they survive the loss of this
    /// machine. Commits captured while no receiver exists are not tracked: subscribe before
    /// the commits you wait for (a later commit's upload covers earlier ones anyway).
    pub fn watch_replicated(&self) -> tokio::sync::watch::Receiver<u64> {
        self.lock().replicated_tx.subscribe()
    }

    /// True once another node has taken the object over (a later lease term fenced this
    /// archiver): its history from then on is the new owner's, and what this one still
    /// holds will never be uploaded.
    pub fn is_fenced(&self) -> bool {
        self.lock().fenced
    }

    /// After a failed archive step, with the archiver unlocked: when a later lease term
    /// fenced this writer, stops the archiver and the database's commit pipeline for good
    /// (whoever waits on durability fails; the object must be opened again, where it lives
    /// now).
    pub(super) fn after_failure(&self, error: &Error) {
        let fenced = self.lock().fenced(error);
        if fenced {
            self.stop_durability(error);
        }
    }

    /// Stops the database's commit pipeline with `error` (fencing). Never call it with the
    /// archiver locked.
    pub(super) fn stop_durability(&self, error: &Error) {
        self.db.fail_durability(std::io::Error::other(error.to_string()));
    }

    /// Captures, checkpoints, seals and uploads: after this the archive holds the object's
    /// whole history. Close (or drop) every handle of the database afterwards, then the lock
    /// is released.
    ///
    /// Under a lease, a close that uploaded everything releases it: another node may open
    /// the object at once. After a failed upload the lease stays (the node is alive and
    /// holds history no one else has); reopening here uploads it.
    pub async fn close(self) -> Result<()> {
        self.checkpoint()?;
        self.flush().await?;
        self.release().await
    }

    /// Lets go of the object's lease (nothing without leases), so another node may open it
    /// at once. Call it after a successful [`flush`](Archiver::flush), when the object is
    /// closing: any later upload of this archiver is fenced once another node takes over.
    pub async fn release(&self) -> Result<()> {
        let archive = self.lock().archive.clone();
        if archive.term > 0 {
            crate::lease::mark(&archive, &format!("lease/{:08x}.released", archive.term)).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_archivers_files_sit_beside_the_database() {
        let p = Paths::new(Path::new("data/room.sqlite"));
        assert_eq!(p.wal, Path::new("data/room.sqlite-wal"));
        assert_eq!(p.shm, Path::new("data/room.sqlite-shm"));
        assert_eq!(p.dir, Path::new("data/room.sqlite-pitr"));
        assert_eq!(p.pending, Path::new("data/room.sqlite-pitr/restore.pending"));
        assert_eq!(p.meta, Path::new("data/room.sqlite-pitr/meta"));
    }

    #[test]
    fn a_file_that_is_not_a_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.sqlite");
        assert_eq!(read_db_file(&path).unwrap(), (0, Vec::new()), "missing: empty");
        std::fs::write(&path, vec![0u8; 1000]).unwrap();
        assert!(read_db_file(&path).unwrap_err().to_string().contains("not a database file"));
        let mut page = vec![0u8; 4096];
        page[16..18].copy_from_slice(&4096u16.to_be_bytes());
        std::fs::write(&path, [page.clone(), page.clone()].concat()).unwrap();
        assert_eq!(read_db_file(&path).unwrap().0, 4096);
        // 65536 is written as 1.
        let mut big = vec![0u8; 65536];
        big[16..18].copy_from_slice(&1u16.to_be_bytes());
        std::fs::write(&path, &big).unwrap();
        assert_eq!(read_db_file(&path).unwrap().0, 65536);
        // A size that is not a whole number of pages.
        std::fs::write(&path, [page.clone(), vec![0u8; 10]].concat()).unwrap();
        assert!(read_db_file(&path).is_err());
    }

    #[test]
    fn a_full_image_numbers_its_pages_from_one() {
        let pages = full_image_pages(4, b"aaaabbbbcccc");
        assert_eq!(pages.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(pages[&2], b"bbbb");
        assert!(full_image_pages(0, b"").is_empty());
    }

    #[test]
    fn atomic_writes_leave_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1);
        remove_if_exists(&path).unwrap();
        remove_if_exists(&path).unwrap();
    }
}
