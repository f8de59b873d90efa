//! `Namespace`: the objects of one data directory, opened by name, one database file each.
//!
//! ```text
//!  ns.storage("a") ──► registry["a"] being opened? ──yes──► wait for that open, look again
//!                              │ no
//!                              ▼
//!                      registry["a"] alive? ──yes──► the same StorageHandle
//!                              │ no: mark "a" opening, unlock the registry
//!                              ▼
//!        open a.sqlite (archived: lease, catalog), set the clock, install the alarm listener
//!                              │ lock the registry again
//!                              ▼
//!        registry["a"] = the new StorageHandle, unmark, wake the waiters
//!                                                   │
//!               every commit that changes the alarm ▼
//!                                     _index.sqlite: alarms(name, at_ms)
//! ```
//!
//! The registry lock is only held for map lookups and inserts, never across an open, an
//! archive round trip or a close: opens of different objects run at once, and calls for
//! open objects never wait behind one.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Duration;

use durable_backend::SqliteBackend;
use durable_backend::cache::CacheOptions;
use durable_pitr::Archiver;
use durable_sql::{Database, Durability, Options};
use durable_txn::{
    Actor, AlarmListener, Clock, Compatibility, Object, ObjectOptions, Storage, SystemClock,
};
use tokio::sync::Notify;

use crate::archive::{Archive, ArchiveStore, Archiving, Pace};
use crate::error::{Error, Result};
use crate::index::Index;
use crate::names::{self, Decoded, Stem};

/// When an object's results are released (its output gate opens).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Replication {
    /// Once its commits are durable on the local disk (fsync). The archive store follows
    /// within [`NamespaceOptions::archive_lag`]: losing the machine loses at most that.
    #[default]
    Local,
    /// Once its commits are also in the archive store, so a confirmed write survives the
    /// loss of the machine, as on Cloudflare. Uploads start as soon as a commit is durable
    /// locally; each carries every commit made while the previous one was in flight. A
    /// store that does not confirm within [`NamespaceOptions::replication_timeout`] fails
    /// the waiting results (nothing confirmed is lost; the history uploads later). Needs
    /// an archive.
    Replicated,
}

/// Where a namespace's objects keep their data (the seed's choice per class).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Backend {
    /// SQLite-backed objects (`new_sqlite_classes`): every API.
    #[default]
    Sqlite,
    /// KV-backed objects (`new_classes`, the legacy backend): the async KV API only, over a
    /// [`SqliteBackend`] file per object through the write-behind cache. The SQL API, the
    /// sync KV API and point-in-time recovery answer with the runtime's "not available"
    /// errors.
    Kv,
}

/// How a [`Namespace`] opens and keeps its objects: `NamespaceOptions::new()` and one
/// builder method per option (more may come, so there is no struct literal outside this
/// crate).
#[derive(Clone)]
#[non_exhaustive]
pub struct NamespaceOptions {
    /// The objects' backend.
    pub backend: Backend,
    /// How each object's database is opened. The default is durable-sql's default with
    /// `exclusive_locking` on (the namespace's lock already keeps other processes out, and
    /// exclusive mode spares SQLite its shared-memory file) and **group commit**
    /// ([`Durability::Group`]): a turn's commit writes the WAL without waiting for the disk,
    /// a shared pool of threads fsyncs it, and the object's results wait behind its output
    /// gate until that fsync returns. The object's next turns run meanwhile and share the
    /// next fsync, and many objects' fsyncs run at once. Durability is that of an fsync per
    /// commit: nothing a caller has seen is lost. Writes made with `allow_unconfirmed`
    /// release their results without waiting. [`Durability::Full`] fsyncs inside every
    /// commit, before its turn ends; [`Durability::Off`] never fsyncs (tests).
    pub sql: Options,
    /// The write-behind cache of KV-backed objects.
    pub cache: CacheOptions,
    /// How many idle objects stay open, least recently used dropped first (0, the default:
    /// an object closes as soon as its last handle is dropped).
    pub keep_open: usize,
    /// The clock objects read "now" from and alarms are scheduled by.
    pub clock: Arc<dyn Clock>,
    /// Point-in-time recovery of SQLite-backed objects.
    pub archive: Archive,
    /// How long a critical section of an object's code (`block_concurrency_while`, an
    /// async `transaction`) may hold its input gate before the object is reset (30 s, as
    /// the runtime).
    pub critical_section_timeout: Duration,
    /// The runtime's behaviours of which compatibility date the objects follow (today's
    /// runtime default: `delete_all()` deletes the alarm too).
    pub compatibility: Compatibility,
    /// Continuous archiving: the most an archived object's newest commit waits before it is
    /// in the archive store (1 s). Uploads start when the oldest waiting commit is half this
    /// old, so one upload carries every commit made meanwhile.
    pub archive_lag: Duration,
    /// How often an archived object that keeps writing runs compaction (snapshots, merges)
    /// and retention in the background (60 s); also at its first upload after opening.
    pub archive_maintenance: Duration,
    /// How long dropping the last [`Namespace`] handle waits for closed objects' final
    /// uploads before it gives up and logs what is left (30 s; their history waits in the
    /// local journal and uploads at their next open). [`Namespace::close`] waits as long as
    /// it takes.
    pub close_timeout: Duration,
    /// Single-writer leases (with an archive store other than the local default): how long
    /// an object's lease outlives its node's last heartbeat (10 s). Another node may take
    /// the object over after that; heartbeats go every third of it.
    pub lease: Duration,
    /// How long opening an object another live node owns waits for its lease to be
    /// released or to expire before failing with the owner's name (0, the default: fail
    /// at once).
    pub lease_wait: Duration,
    /// This node's id among the nodes sharing the archive (default: a random id kept in
    /// the data folder's `_node` file, so a restarted process is the same node).
    pub node_id: Option<String>,
    /// The address this node advertises in its leases (for example `10.0.0.7:8080`), so
    /// others can forward requests for its objects ([`Namespace::owner`]).
    pub advertise: Option<String>,
    /// When results are released: after the local fsync ([`Replication::Local`], the
    /// default) or once the archive store holds the commits too.
    pub replication: Replication,
    /// Under [`Replication::Replicated`], how long results wait for the archive store
    /// before they fail (30 s).
    pub replication_timeout: Duration,
}

impl Default for NamespaceOptions {
    fn default() -> Self {
        NamespaceOptions {
            backend: Backend::default(),
            sql: Options::default().exclusive_locking(true).durability(Durability::Group),
            cache: CacheOptions::default(),
            keep_open: 0,
            clock: Arc::new(SystemClock),
            archive: Archive::default(),
            critical_section_timeout: Duration::from_secs(30),
            compatibility: Compatibility::default(),
            archive_lag: Duration::from_secs(1),
            archive_maintenance: Duration::from_secs(60),
            close_timeout: Duration::from_secs(30),
            lease: Duration::from_secs(10),
            lease_wait: Duration::ZERO,
            node_id: None,
            advertise: None,
            replication: Replication::Local,
            replication_timeout: Duration::from_secs(30),
        }
    }
}

impl NamespaceOptions {
    /// The defaults (`NamespaceOptions::default()`); chain the builder methods to change them: `NamespaceOptions::new().backend(Backend::Kv).keep_open(16)`.
    pub fn new() -> NamespaceOptions {
        NamespaceOptions::default()
    }

    /// The objects' backend ([`backend`](NamespaceOptions::backend)).
    #[must_use]
    pub fn backend(mut self, backend: Backend) -> NamespaceOptions {
        self.backend = backend;
        self
    }

    /// How each object's database is opened ([`sql`](NamespaceOptions::sql)).
    #[must_use]
    pub fn sql(mut self, sql: Options) -> NamespaceOptions {
        self.sql = sql;
        self
    }

    /// The write-behind cache of KV-backed objects ([`cache`](NamespaceOptions::cache)).
    #[must_use]
    pub fn cache(mut self, cache: CacheOptions) -> NamespaceOptions {
        self.cache = cache;
        self
    }

    /// How many idle objects stay open ([`keep_open`](NamespaceOptions::keep_open)).
    #[must_use]
    pub fn keep_open(mut self, keep_open: usize) -> NamespaceOptions {
        self.keep_open = keep_open;
        self
    }

    /// The clock objects and alarms follow ([`clock`](NamespaceOptions::clock)); an `Arc<dyn Clock>` is a clock too.
    #[must_use]
    pub fn clock(mut self, clock: impl Clock) -> NamespaceOptions {
        self.clock = Arc::new(clock);
        self
    }

    /// Point-in-time recovery of SQLite-backed objects ([`archive`](NamespaceOptions::archive)).
    #[must_use]
    pub fn archive(mut self, archive: Archive) -> NamespaceOptions {
        self.archive = archive;
        self
    }

    /// How long a critical section may hold an object's input gate ([`critical_section_timeout`](NamespaceOptions::critical_section_timeout)).
    #[must_use]
    pub fn critical_section_timeout(
        mut self,
        critical_section_timeout: Duration,
    ) -> NamespaceOptions {
        self.critical_section_timeout = critical_section_timeout;
        self
    }

    /// The runtime behaviours the objects follow ([`compatibility`](NamespaceOptions::compatibility)).
    #[must_use]
    pub fn compatibility(mut self, compatibility: Compatibility) -> NamespaceOptions {
        self.compatibility = compatibility;
        self
    }

    /// The most a commit waits before it is in the archive store ([`archive_lag`](NamespaceOptions::archive_lag)).
    #[must_use]
    pub fn archive_lag(mut self, archive_lag: Duration) -> NamespaceOptions {
        self.archive_lag = archive_lag;
        self
    }

    /// How often archived objects run compaction and retention ([`archive_maintenance`](NamespaceOptions::archive_maintenance)).
    #[must_use]
    pub fn archive_maintenance(mut self, archive_maintenance: Duration) -> NamespaceOptions {
        self.archive_maintenance = archive_maintenance;
        self
    }

    /// How long dropping the last namespace handle waits for final uploads ([`close_timeout`](NamespaceOptions::close_timeout)).
    #[must_use]
    pub fn close_timeout(mut self, close_timeout: Duration) -> NamespaceOptions {
        self.close_timeout = close_timeout;
        self
    }

    /// How long a lease outlives its node's last heartbeat ([`lease`](NamespaceOptions::lease)).
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> NamespaceOptions {
        self.lease = lease;
        self
    }

    /// How long opening an object owned elsewhere waits ([`lease_wait`](NamespaceOptions::lease_wait)).
    #[must_use]
    pub fn lease_wait(mut self, lease_wait: Duration) -> NamespaceOptions {
        self.lease_wait = lease_wait;
        self
    }

    /// This node's id ([`node_id`](NamespaceOptions::node_id)).
    #[must_use]
    pub fn node_id(mut self, node_id: impl Into<String>) -> NamespaceOptions {
        self.node_id = Some(node_id.into());
        self
    }

    /// The address this node advertises ([`advertise`](NamespaceOptions::advertise)).
    #[must_use]
    pub fn advertise(mut self, address: impl Into<String>) -> NamespaceOptions {
        self.advertise = Some(address.into());
        self
    }

    /// When results are released ([`replication`](NamespaceOptions::replication)).
    #[must_use]
    pub fn replication(mut self, replication: Replication) -> NamespaceOptions {
        self.replication = replication;
        self
    }

    /// How long replicated results wait for the store ([`replication_timeout`](NamespaceOptions::replication_timeout)).
    #[must_use]
    pub fn replication_timeout(mut self, timeout: Duration) -> NamespaceOptions {
        self.replication_timeout = timeout;
        self
    }
}

impl std::fmt::Debug for NamespaceOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamespaceOptions")
            .field("backend", &self.backend)
            .field("sql", &self.sql)
            .field("cache", &self.cache)
            .field("keep_open", &self.keep_open)
            .field("archive", &self.archive)
            .field("critical_section_timeout", &self.critical_section_timeout)
            .field("compatibility", &self.compatibility)
            .field("archive_lag", &self.archive_lag)
            .field("archive_maintenance", &self.archive_maintenance)
            .field("close_timeout", &self.close_timeout)
            .field("lease", &self.lease)
            .field("lease_wait", &self.lease_wait)
            .field("node_id", &self.node_id)
            .field("advertise", &self.advertise)
            .field("replication", &self.replication)
            .field("replication_timeout", &self.replication_timeout)
            .finish_non_exhaustive()
    }
}

/// The name of the namespace's lock file.
pub const LOCK_FILE: &str = ".lock";

/// What every handle of the namespace shares; handles keep it (and so the lock) alive.
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) options: NamespaceOptions,
    pub(crate) index: Index,
    /// Told whenever the index changes (the alarm scheduler waits on it).
    pub(crate) changed: Notify,
    opened: AtomicU64,
    /// Where and how objects archive (from `options.archive`; `None` when off or KV-backed).
    pub(crate) archiving: Option<Archiving>,
    /// Live `Namespace` handles (`NsInner`s): none left means the program let go of the
    /// namespace, and the last object to close waits for its upload.
    ns_handles: AtomicUsize,
    /// Held locked for the namespace's life.
    _lock: File,
    /// Dropped last, after the lock: [`Namespace::close`] waits for it.
    _gone: tokio::sync::watch::Sender<()>,
}

struct HandleInner {
    storage: Storage,
    name: String,
    /// The object's WAL archiver (SQLite-backed objects with an archive). It captures by
    /// itself, as a subscriber of the database's commit pipeline; the storage reaches it for
    /// the bookmark calls through a weak reference (`ArchiveRecovery`).
    archiver: Option<Arc<Archiver>>,
    /// The task that keeps the archiver's history uploaded.
    keeper: Option<tokio::task::JoinHandle<()>>,
    _shared: Arc<Shared>,
}

impl Drop for HandleInner {
    fn drop(&mut self) {
        let Some(archiver) = self.archiver.take() else { return };
        // The last commit first, then the archiver seals and uploads what it captured.
        if !self.storage.is_aborted()
            && let Err(error) = self.storage.end_turn()
        {
            tracing::warn!(%error, name = %self.name, "final commit failed");
        }
        // Checkpoint here, where the object's last commit just ran; the upload of what is
        // left runs on the archive runtime, which keeps the namespace open until it is over.
        if let Err(error) = archiver.checkpoint() {
            tracing::warn!(%error, name = %self.name, "archiver checkpoint at close failed");
        }
        match self._shared.archiving.as_ref() {
            Some(archiving) => {
                let keeper = self.keeper.take();
                archiving.close(&self.name, archiver, keeper, Box::new(self._shared.clone()));
                // With no `Namespace` handle left, this is the namespace closing: wait for the
                // upload here, so the folder is free once the last handle is gone.
                if self._shared.ns_handles.load(Ordering::SeqCst) == 0 {
                    archiving.wait_closed(&self.name, self._shared.options.close_timeout);
                }
            }
            None => drop(archiver),
        }
    }
}

/// A handle to one open object's [`Storage`], from [`Namespace::storage`]. It derefs to
/// `Storage`; clones share the object. The object stays open while a handle is alive (or
/// while the namespace keeps it, see [`NamespaceOptions::keep_open`]).
#[derive(Clone)]
pub struct StorageHandle {
    inner: Arc<HandleInner>,
}

impl StorageHandle {
    /// The object's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The object's storage.
    pub fn storage(&self) -> &Storage {
        &self.inner.storage
    }

    /// Runs `f`'s archive work on the namespace's archive runtime.
    fn with_archiver<'a, T: Send, F>(&'a self, f: impl FnOnce(&'a Archiver) -> F) -> Result<T>
    where
        F: Future<Output = durable_pitr::Result<T>> + Send,
    {
        match (self.inner.archiver.as_ref(), self.inner._shared.archiving.as_ref()) {
            (Some(archiver), Some(archiving)) => Ok(archiving.rt.block_on(f(archiver))?),
            _ => Err(durable_txn::Error::PitrNotAvailable.into()),
        }
    }

    /// A bookmark naming the object's current (durable) state: `getCurrentBookmark()`.
    /// Anything written before the call is committed first (as
    /// [`Storage::current_bookmark`], which an object's code calls).
    pub fn current_bookmark(&self) -> Result<String> {
        Ok(self.inner.storage.current_bookmark().wait()?)
    }

    /// The bookmark of the latest commit at or before `time_ms` (milliseconds since the
    /// epoch, within the last 30 days): `getBookmarkForTime()`.
    pub fn bookmark_for_time(&self, time_ms: i64) -> Result<String> {
        Ok(self.inner.storage.bookmark_for_time(time_ms).wait()?)
    }

    /// Records durably that the next session of this object starts at `bookmark`, and
    /// returns the bookmark that undoes the restore: `onNextSessionRestoreBookmark()`. The
    /// restore happens when the object is next opened (after every handle is dropped, or
    /// after an abort).
    pub fn on_next_session_restore_bookmark(&self, bookmark: &str) -> Result<String> {
        Ok(self.inner.storage.on_next_session_restore_bookmark(bookmark).wait()?)
    }

    /// Commits and syncs what was written before a PITR call, when the object has an
    /// archive (the call names or rebuilds durable history).
    fn sync_for_pitr(&self) -> Result<()> {
        if self.inner.archiver.is_some() {
            self.inner.storage.sync().wait()?;
        }
        Ok(())
    }

    /// The retained points of the object's history, newest first: at most `limit`, only
    /// those older than the bookmark `before` when given (pass the last bookmark of a page
    /// to get the next page). Covers the local journal and the archive. Anything written
    /// before the call is committed first.
    pub fn history(
        &self,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<durable_pitr::HistoryEntry>> {
        self.sync_for_pitr()?;
        self.with_archiver(|a| a.history(before, limit))
    }

    /// The database image (the bytes of the database file) at `bookmark`, rebuilt from
    /// history without touching the object: to verify a point or copy a state elsewhere.
    pub fn image_at(&self, bookmark: &str) -> Result<Vec<u8>> {
        self.with_archiver(|a| a.image_at(bookmark))
    }

    /// The archiver's state (epoch, newest commit, what is archived), when the object has
    /// an archive.
    pub fn archive_status(&self) -> Option<durable_pitr::Status> {
        self.inner.archiver.as_ref().map(|a| a.status())
    }

    /// Uploads the object's history, merges old segments and applies retention now. The
    /// namespace does all of this in the background (within
    /// [`NamespaceOptions::archive_lag`] for uploads, every
    /// [`NamespaceOptions::archive_maintenance`] for the rest); this is for tools and tests
    /// that want it done at a point of their choosing.
    pub fn maintain_archive(&self) -> Result<()> {
        self.with_archiver(|a| async move {
            a.flush().await?;
            a.compact().await?;
            a.retain().await?;
            Ok(())
        })
    }
}

impl Deref for StorageHandle {
    type Target = Storage;

    fn deref(&self) -> &Storage {
        &self.inner.storage
    }
}

impl std::fmt::Debug for StorageHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageHandle").field("name", &self.inner.name).finish_non_exhaustive()
    }
}

struct ObjectInner<A: Actor> {
    object: Object<A>,
    name: String,
}

/// A running object from [`Namespace::object`]. It derefs to [`Object`] (send it events
/// with `call`); clones share the runtime, which stops once every handle is dropped and its
/// events have finished, closing the object.
pub struct ObjectHandle<A: Actor> {
    inner: Arc<ObjectInner<A>>,
}

impl<A: Actor> Clone for ObjectHandle<A> {
    fn clone(&self) -> Self {
        ObjectHandle { inner: self.inner.clone() }
    }
}

impl<A: Actor> ObjectHandle<A> {
    /// The object's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The object's runtime.
    pub fn object(&self) -> &Object<A> {
        &self.inner.object
    }
}

impl<A: Actor> Deref for ObjectHandle<A> {
    type Target = Object<A>;

    fn deref(&self) -> &Object<A> {
        &self.inner.object
    }
}

impl<A: Actor> std::fmt::Debug for ObjectHandle<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectHandle").field("name", &self.inner.name).finish_non_exhaustive()
    }
}

struct OpenEntry {
    handle: Weak<HandleInner>,
    /// Alive while any clone of the object's `Storage` is (held by its alarm listener).
    storage_alive: Weak<()>,
}

struct RuntimeEntry {
    /// The runtime's `ObjectInner<A>`, for the actor type it was started with.
    object: Weak<dyn Any + Send + Sync>,
    /// Alive while the runtime's driver is (held by its opener).
    driver_alive: Weak<()>,
}

#[derive(Default)]
struct Registry {
    storages: HashMap<String, OpenEntry>,
    objects: HashMap<String, RuntimeEntry>,
    /// Objects being opened now, outside the registry lock (an archived open makes several
    /// round trips to the store and may wait for another node's lease): callers for the
    /// same name wait for that open instead of starting a second one.
    opening: HashMap<String, Arc<Opening>>,
    /// Recently used handles kept open, most recent last.
    keep: VecDeque<StorageHandle>,
    /// Dead entries are swept when a map grows past this.
    sweep_at: usize,
}

/// One open running outside the registry lock; done once its outcome is in the registry
/// (the handle in `storages`, or nothing when it failed).
#[derive(Default)]
struct Opening {
    done: Mutex<bool>,
    finished: Condvar,
}

impl Opening {
    fn finish(&self) {
        *self.done.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.finished.notify_all();
    }

    /// Blocks until the open is over. On a worker of a multi-threaded tokio runtime the
    /// worker's other tasks move to another thread meanwhile (as during an archived open).
    fn wait(&self) {
        let wait = || {
            let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
            while !*done {
                done = self.finished.wait(done).unwrap_or_else(|p| p.into_inner());
            }
        };
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
            _ => wait(),
        }
    }
}

/// Ends an open in the registry: takes its `opening` mark away and wakes whoever waits for
/// it. Dropped without [`finish`](OpeningMark::finish) (the open panicked), it does the
/// same, so that waiters never hang.
struct OpeningMark<'a> {
    registry: &'a Mutex<Registry>,
    name: &'a str,
    opening: Arc<Opening>,
    finished: bool,
}

impl OpeningMark<'_> {
    /// Called with the registry locked, once the open's outcome is in it: callers that look
    /// after this see the outcome, and those that waited are woken to look again.
    fn finish(mut self, registry: &mut Registry) {
        registry.opening.remove(self.name);
        self.opening.finish();
        self.finished = true;
    }
}

impl Drop for OpeningMark<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
            registry.opening.remove(self.name);
            drop(registry);
            self.opening.finish();
        }
    }
}

impl Registry {
    fn sweep(&mut self) {
        let len = self.storages.len().max(self.objects.len());
        if len < self.sweep_at.max(64) {
            return;
        }
        self.storages.retain(|_, e| e.storage_alive.strong_count() > 0);
        self.objects.retain(|_, e| e.driver_alive.strong_count() > 0);
        self.sweep_at = 2 * self.storages.len().max(self.objects.len());
    }

    /// Marks `handle` most recently used among the kept-open handles; returns those that
    /// fell out, for the caller to drop once the registry is unlocked (dropping the last
    /// handle of an object commits and closes it).
    #[must_use]
    fn keep(&mut self, handle: &StorageHandle, keep_open: usize) -> Vec<StorageHandle> {
        if keep_open == 0 {
            return Vec::new();
        }
        if let Some(pos) = self.keep.iter().position(|h| Arc::ptr_eq(&h.inner, &handle.inner)) {
            self.keep.remove(pos);
        }
        self.keep.push_back(handle.clone());
        let over = self.keep.len().saturating_sub(keep_open);
        self.keep.drain(..over).collect()
    }
}

struct NsInner {
    shared: Arc<Shared>,
    registry: Mutex<Registry>,
    /// Set by [`Namespace::close`], which waits for the final uploads itself.
    closed_explicitly: AtomicBool,
}

impl Drop for NsInner {
    /// The last handle of the namespace is gone: wait (at most `close_timeout`) for the final
    /// uploads of the objects that closed, so that a program that drops its namespace and
    /// exits leaves its history in the archive.
    fn drop(&mut self) {
        self.shared.ns_handles.fetch_sub(1, Ordering::SeqCst);
        if self.closed_explicitly.load(Ordering::SeqCst) {
            return;
        }
        let Some(archiving) = self.shared.archiving.as_ref() else { return };
        let still = archiving.wait_all_closed(self.shared.options.close_timeout);
        if !still.is_empty() {
            tracing::warn!(
                objects = ?still,
                "namespace dropped while history was still uploading; it waits in the objects' \
                 journals and uploads at their next open"
            );
        }
        let left = archiving.left.lock().unwrap_or_else(|p| p.into_inner());
        for (name, error) in left.iter() {
            tracing::warn!(name, error, "history not uploaded at close");
        }
    }
}

/// The objects of one data directory: each object, named by any string, owns one database
/// file there, created on first use.
///
/// - [`storage`](Namespace::storage) returns the object's live handle if it is open, and
///   opens it otherwise, so one object never has two handles writing it.
/// - An object stays open while a [`StorageHandle`] or [`ObjectHandle`] of it is alive and
///   closes when the last is dropped; [`NamespaceOptions::keep_open`] keeps that many idle
///   objects open as well, least recently used closed first. A bare `Storage` clone (from
///   `handle.storage().clone()` or `ctx.storage().clone()`) kept after its handles are gone
///   keeps the connection open without keeping the object registered: `storage` then fails
///   with [`Error::StillOpen`] rather than open a second connection.
/// - The namespace holds an exclusive lock on `dir/.lock` (`flock`) for as long as it or any
///   of its handles is alive, so two processes (or two `Namespace`s in one) never open the
///   same directory.
/// - An index, `dir/_index.sqlite`, keeps every object's pending alarm, so that
///   [`run_alarms`](Namespace::run_alarms) wakes only the objects whose alarm is due.
///
/// File names: see [`Namespace::file_name`]. `Namespace` is a cheap handle: clones share it.
#[derive(Clone)]
pub struct Namespace {
    inner: Arc<NsInner>,
}

impl std::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namespace").field("dir", &self.inner.shared.dir).finish_non_exhaustive()
    }
}

/// How long `storage` waits for an object's previous instance to finish closing.
const CLOSE_WAIT: Duration = Duration::from_millis(200);

impl Namespace {
    /// Opens the namespace in `dir` (created if missing) and takes its lock. Fails with
    /// [`Error::Locked`] if another process or `Namespace` has it open.
    pub fn open(dir: impl AsRef<Path>, options: NamespaceOptions) -> Result<Namespace> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = durable_sql::files::try_lock(&lock_path)
            .map_err(|e| Error::io(&lock_path, e))?
            .ok_or_else(|| Error::Locked { path: lock_path.clone() })?;
        let index = Index::open(&dir, options.sql.durability)?;
        // Objects are leased when the archive may be shared: any store but the folder inside
        // this namespace's own (locked) data folder.
        let (archive, leased) = match (&options.backend, &options.archive) {
            (Backend::Kv, _) | (_, Archive::Off) => (None, false),
            (Backend::Sqlite, Archive::Local) => {
                (Some(ArchiveStore::folder(dir.join("archive"))?), false)
            }
            (Backend::Sqlite, Archive::Store(store)) => (Some(store.clone()), true),
        };
        if options.replication == Replication::Replicated && archive.is_none() {
            return Err(Error::NoArchive);
        }
        let pace = Pace {
            lag: options.archive_lag,
            maintain_every: options.archive_maintenance,
            replicated: (options.replication == Replication::Replicated)
                .then_some(options.replication_timeout),
        };
        let leases = if leased {
            let id = match &options.node_id {
                Some(id) => id.clone(),
                None => node_id(&dir)?,
            };
            Some(crate::archive::Leasing {
                id,
                address: options.advertise.clone(),
                lease: options.lease,
            })
        } else {
            None
        };
        let archiving = archive.map(|store| Archiving::new(store, pace, leases)).transpose()?;
        let shared = Arc::new(Shared {
            dir,
            options,
            index,
            changed: Notify::new(),
            opened: AtomicU64::new(0),
            archiving,
            ns_handles: AtomicUsize::new(1),
            _lock: lock,
            _gone: tokio::sync::watch::Sender::new(()),
        });
        Ok(Namespace {
            inner: Arc::new(NsInner {
                shared,
                registry: Mutex::new(Registry::default()),
                closed_explicitly: AtomicBool::new(false),
            }),
        })
    }

    /// Closes the namespace: lets go of this handle and waits until every object of it has
    /// closed (every [`StorageHandle`] and [`ObjectHandle`] dropped, every object runtime
    /// done with its events), its history is uploaded, and the folder's lock is free, so that
    /// the namespace can be opened again at once, here or by another process. Objects close
    /// as they do when dropped: their last writes committed and synced. A handle kept
    /// elsewhere keeps this waiting.
    ///
    /// Fails with [`Error::NotArchived`] naming the objects whose history could not be
    /// uploaded (an unreachable store): nothing is lost, it waits in their local journals
    /// and uploads at their next open.
    pub async fn close(self) -> Result<()> {
        let left = self.inner.shared.archiving.as_ref().map(|a| a.left.clone());
        let mut gone = self.inner.shared._gone.subscribe();
        self.inner.closed_explicitly.store(true, Ordering::SeqCst);
        drop(self);
        // Ends (with an error) once the shared state is dropped, its lock released.
        while gone.changed().await.is_ok() {}
        let left = left.map(|l| std::mem::take(&mut *l.lock().unwrap_or_else(|p| p.into_inner())));
        match left {
            Some(objects) if !objects.is_empty() => {
                Err(Error::NotArchived { objects: objects.into_iter().collect() })
            }
            _ => Ok(()),
        }
    }

    /// The node holding the lease of object `name`, with its advertised address (so a
    /// request can be forwarded there), or the last one that held it (`live` false). `None`
    /// when objects are not leased (no shared archive store) or no node ever opened it.
    /// Reads the archive store; opens nothing.
    pub fn owner(&self, name: &str) -> Result<Option<durable_pitr::Owner>> {
        match &self.inner.shared.archiving {
            Some(archiving) => archiving.owner(&Namespace::file_name(name)),
            None => Ok(None),
        }
    }

    /// The database image of object `name` at `bookmark` (or at its newest archived commit),
    /// rebuilt read-only from the archive store: no lock, no lease, nothing written, so it
    /// works while the object runs here or on another node. Returns the bookmark and the
    /// bytes of a SQLite database file. Fails with [`Error::NoArchive`] without an
    /// archive.
    pub fn archived_image(&self, name: &str, bookmark: Option<&str>) -> Result<(String, Vec<u8>)> {
        let Some(archiving) = &self.inner.shared.archiving else {
            return Err(Error::NoArchive);
        };
        let at = match bookmark {
            Some(b) => crate::archive::ImageAt::Bookmark(b),
            None => crate::archive::ImageAt::Latest,
        };
        archiving.rt.block_on(archiving.store.read_image_async(name, at))
    }

    /// The health of object `name`'s archived history, read from the archive store alone
    /// (no lock, no lease, nothing written; it works while the object runs here or on
    /// another node): superseded history, straddling segments and gaps, as
    /// [`durable_pitr::ArchiveCheck`] describes. `durable archive verify` reports it. Fails
    /// with [`Error::NoArchive`] without an archive.
    pub fn archive_check(&self, name: &str) -> Result<durable_pitr::ArchiveCheck> {
        let Some(archiving) = &self.inner.shared.archiving else {
            return Err(Error::NoArchive);
        };
        archiving.rt.block_on(archiving.store.check_async(name))
    }

    /// This namespace's node id when its objects are leased (an archive store shared with
    /// other nodes): [`NamespaceOptions::node_id`], or the id kept in the data folder.
    pub fn node_id(&self) -> Option<String> {
        self.inner.shared.archiving.as_ref().and_then(|a| a.node_id().map(str::to_owned))
    }

    /// The archive status of every open archived object (upload lag in commits and
    /// milliseconds, segments, the last upload error), sorted by name.
    pub fn archive_status(&self) -> Vec<(String, durable_pitr::Status)> {
        let handles: Vec<StorageHandle> = {
            let registry = self.registry();
            let live = registry.storages.values().filter_map(|e| e.handle.upgrade());
            live.map(|inner| StorageHandle { inner }).collect()
        };
        let mut out: Vec<(String, durable_pitr::Status)> = handles
            .iter()
            .filter_map(|h| h.archive_status().map(|s| (h.name().to_owned(), s)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The namespace's folder.
    pub fn dir(&self) -> &Path {
        &self.inner.shared.dir
    }

    /// The namespace's options.
    pub fn options(&self) -> &NamespaceOptions {
        &self.inner.shared.options
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.inner.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The file name of `name`'s database: `<stem>.sqlite`, where the stem is the name's
    /// UTF-8 bytes with `a`-`z`, `0`-`9` and `-` kept and every other byte written `_xx`
    /// (lowercase hex), `_` for the empty name, and `_h` + the SHA-256 of the name in hex when
    /// the escaped form would pass 200 bytes (the name is then kept in the index). So
    /// `room-42` is `room-42.sqlite` and `Room 42` is `_52oom_2042.sqlite`: safe on every file
    /// system, case-insensitive ones included, and distinct for distinct names.
    pub fn file_name(name: &str) -> String {
        format!("{}{}", names::stem(name).as_str(), names::SUFFIX)
    }

    /// The path of `name`'s database (which may not exist yet).
    pub fn path_of(&self, name: &str) -> PathBuf {
        self.dir().join(Namespace::file_name(name))
    }

    /// The names of every stored object (every database file in the folder), sorted by their
    /// UTF-8 bytes.
    pub fn names(&self) -> Result<Vec<String>> {
        let dir = self.dir();
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let entry = entry.map_err(|e| Error::io(dir, e))?;
            let file = entry.file_name();
            let Some(file) = file.to_str() else { continue };
            let Some(stem) = file.strip_suffix(names::SUFFIX) else { continue };
            match names::decode(stem) {
                Some(Decoded::Name(name)) => out.push(name),
                Some(Decoded::Digest) => {
                    if let Some(name) = self.inner.shared.index.long_name(stem)? {
                        out.push(name);
                    } else {
                        tracing::warn!(file, "object file with a digest name not in the index");
                    }
                }
                None => {}
            }
        }
        out.sort();
        Ok(out)
    }

    /// True when `name` has a database file.
    pub fn exists(&self, name: &str) -> bool {
        self.path_of(name).exists()
    }

    /// The names of the objects open now (a live handle, a kept-open one, or a running
    /// object), sorted.
    pub fn open_names(&self) -> Vec<String> {
        let registry = self.registry();
        let mut out: Vec<String> = registry
            .storages
            .iter()
            .filter(|(_, e)| e.storage_alive.strong_count() > 0)
            .map(|(name, _)| name.clone())
            .collect();
        out.sort();
        out
    }

    /// How many times this namespace opened an object's database since it was opened.
    pub fn opened_count(&self) -> u64 {
        self.inner.shared.opened.load(Ordering::SeqCst)
    }

    /// Closes the objects kept open only by [`NamespaceOptions::keep_open`].
    pub fn release_idle(&self) {
        let kept = std::mem::take(&mut self.registry().keep);
        drop(kept);
    }

    /// The object's storage: its live handle if it is open, else the object is opened
    /// (its database created on first use).
    ///
    /// Opening runs outside the namespace's registry lock: opens of different objects run
    /// at once, and calls for objects already open answer meanwhile. A call for an object
    /// another call is opening waits for that open and returns the handle it produced. If
    /// that open failed, the waiting call looks again as if it had just arrived: it opens
    /// the object itself (or waits for a caller that got there first), so the error it
    /// returns is that of an attempt made after it was called.
    ///
    /// Fails with [`Error::StillOpen`] when the object's previous instance was aborted (or
    /// its handles dropped while a clone of its `Storage` lives on) and is still referenced:
    /// a second connection is never opened beside it.
    pub fn storage(&self, name: &str) -> Result<StorageHandle> {
        let keep_open = self.inner.shared.options.keep_open;
        let mut waited = Duration::ZERO;
        loop {
            let mut registry = self.registry();
            if let Some(opening) = registry.opening.get(name).cloned() {
                drop(registry);
                opening.wait();
                continue;
            }
            if let Some(entry) = registry.storages.get(name) {
                if let Some(inner) = entry.handle.upgrade() {
                    let handle = StorageHandle { inner };
                    if handle.storage().is_aborted() {
                        // Let go of a kept-open aborted handle; anyone else's keeps it.
                        registry.keep.retain(|h| !Arc::ptr_eq(&h.inner, &handle.inner));
                        drop(registry);
                        if Arc::strong_count(&handle.inner) > 1 {
                            return Err(Error::StillOpen { name: name.into() });
                        }
                        drop(handle);
                        continue;
                    }
                    let evicted = registry.keep(&handle, keep_open);
                    drop(registry);
                    drop(evicted);
                    return Ok(handle);
                }
                if entry.storage_alive.strong_count() > 0 {
                    // The last handle is being dropped, or a Storage clone outlives it.
                    drop(registry);
                    if waited >= CLOSE_WAIT {
                        return Err(Error::StillOpen { name: name.into() });
                    }
                    std::thread::sleep(Duration::from_millis(1));
                    waited += Duration::from_millis(1);
                    continue;
                }
            }
            // Open outside the lock; the mark keeps every other caller for `name` waiting.
            let opening = Arc::new(Opening::default());
            registry.opening.insert(name.to_string(), opening.clone());
            drop(registry);
            let mark =
                OpeningMark { registry: &self.inner.registry, name, opening, finished: false };
            let opened = self.open_object(name);
            let mut registry = self.registry();
            let mut evicted = Vec::new();
            if let Ok((handle, storage_alive)) = &opened {
                registry.sweep();
                registry.storages.insert(
                    name.to_string(),
                    OpenEntry {
                        handle: Arc::downgrade(&handle.inner),
                        storage_alive: storage_alive.clone(),
                    },
                );
                evicted = registry.keep(handle, keep_open);
            }
            mark.finish(&mut registry);
            drop(registry);
            drop(evicted);
            return opened.map(|(handle, _)| handle);
        }
    }

    /// Opens `name`'s database. Runs without the registry lock; the caller's `opening` mark
    /// keeps other callers for `name` from opening it beside this.
    fn open_object(&self, name: &str) -> Result<(StorageHandle, Weak<()>)> {
        let shared = &self.inner.shared;
        let stem = names::stem(name);
        if let Stem::Digest(s) = &stem {
            shared.index.remember_long_name(s, name)?;
        }
        let path = shared.dir.join(format!("{}{}", stem.as_str(), names::SUFFIX));
        let options = &shared.options;
        let mut archiver = None;
        let mut keeper = None;
        let storage = match options.backend {
            Backend::Sqlite => {
                match shared.archiving.as_ref() {
                    None => Storage::open(&path, options.sql.clone())?,
                    // The archiver subscribes to the database's commit pipeline: it captures
                    // what each sync made durable, on the sync threads; the namespace keeps
                    // its history uploaded.
                    Some(archiving) => {
                        let rt = &archiving.rt;
                        archiving.wait_closed(name, Duration::MAX);
                        let config = archiving.config_for(&Namespace::file_name(name));
                        let (db, a) = rt.block_on(archiving.open_leased(
                            &path,
                            options.sql.clone(),
                            config,
                            options.lease_wait,
                        ))?;
                        let a = Arc::new(a);
                        let (kept, replicated) = archiving.keep(name, &a);
                        keeper = Some(kept);
                        let storage = Storage::new(db);
                        storage.set_replication(replicated);
                        let recovery = ArchiveRecovery {
                            archiver: Arc::downgrade(&a),
                            rt: rt.handle().clone(),
                        };
                        storage.set_recovery(Some(Arc::new(recovery)));
                        archiver = Some(a);
                        storage
                    }
                }
            }
            Backend::Kv => {
                let db = Database::open(&path, options.sql.clone())?;
                let backend = SqliteBackend::new(db)?;
                Storage::kv_backed(Arc::new(backend), options.cache.clone())
            }
        };
        shared.opened.fetch_add(1, Ordering::SeqCst);
        tracing::debug!(name, path = %path.display(), "object opened");
        storage.set_clock(options.clock.clone());
        storage.set_compatibility(options.compatibility);
        let alive = Arc::new(());
        let storage_alive = Arc::downgrade(&alive);
        storage.set_alarm_listener(Some(alarm_listener(shared, name, alive)));
        let inner = HandleInner {
            storage,
            name: name.to_string(),
            archiver,
            keeper,
            _shared: shared.clone(),
        };
        Ok((StorageHandle { inner: Arc::new(inner) }, storage_alive))
    }

    /// Starts the object runtime for `name` with the actor `make` builds, or returns the
    /// running one. The runtime opens the object through [`storage`](Namespace::storage)
    /// (so it shares the live handle) and keeps it open until the runtime stops: when every
    /// [`ObjectHandle`] is dropped and its events have finished. A due alarm fires as soon as
    /// the runtime starts.
    ///
    /// Fails with [`Error::NoRuntime`] outside a tokio runtime, [`Error::ActorMismatch`] when
    /// the object runs with another actor type, and [`Error::Busy`] while a previous runtime
    /// of the object still finishes events nobody waits for.
    pub fn object<A: Actor>(
        &self,
        name: &str,
        make: impl Fn(&Storage) -> A + Send + Sync + 'static,
    ) -> Result<ObjectHandle<A>> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::NoRuntime);
        }
        let registry = self.registry();
        if let Some(entry) = registry.objects.get(name) {
            if let Some(running) = entry.object.upgrade() {
                return match running.downcast::<ObjectInner<A>>() {
                    Ok(inner) => Ok(ObjectHandle { inner }),
                    Err(_) => Err(Error::ActorMismatch { name: name.into() }),
                };
            }
            if entry.driver_alive.strong_count() > 0 {
                return Err(Error::Busy { name: name.into() });
            }
        }
        self.spawn_object(registry, name, make)
    }

    fn spawn_object<A: Actor>(
        &self,
        mut registry: MutexGuard<'_, Registry>,
        name: &str,
        make: impl Fn(&Storage) -> A + Send + Sync + 'static,
    ) -> Result<ObjectHandle<A>> {
        let alive = Arc::new(());
        let driver_alive = Arc::downgrade(&alive);
        let ns = self.clone();
        let object_name = name.to_string();
        let slot: Mutex<Option<StorageHandle>> = Mutex::new(None);
        let open = move || {
            let _alive = &alive;
            let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(handle) = slot.as_ref()
                && !handle.is_aborted()
            {
                return Ok(handle.storage().clone());
            }
            *slot = None;
            let handle = ns.storage(&object_name).map_err(into_txn_error)?;
            let storage = handle.storage().clone();
            *slot = Some(handle);
            Ok(storage)
        };
        let options = ObjectOptions::default()
            .critical_section_timeout(self.inner.shared.options.critical_section_timeout);
        let object = Object::spawn_with(open, make, options);
        let inner = Arc::new(ObjectInner { object, name: name.to_string() });
        let any: Arc<dyn Any + Send + Sync> = inner.clone();
        registry.sweep();
        registry
            .objects
            .insert(name.to_string(), RuntimeEntry { object: Arc::downgrade(&any), driver_alive });
        Ok(ObjectHandle { inner })
    }

    /// Every indexed alarm: object name and time in milliseconds, sorted by name.
    pub fn alarms(&self) -> Result<Vec<(String, i64)>> {
        self.inner.shared.index.all()
    }

    /// The indexed alarm of `name`, in milliseconds.
    pub fn indexed_alarm(&self, name: &str) -> Result<Option<i64>> {
        self.inner.shared.index.get(name)
    }

    /// Opens every stored object once so that the alarm index matches their databases (after
    /// a crash between an object's commit and the index's write). Costs one open per object.
    pub fn rebuild_index(&self) -> Result<()> {
        let stored = self.names()?;
        for name in &stored {
            drop(self.storage(name)?);
        }
        for (name, _) in self.alarms()? {
            if stored.binary_search(&name).is_err() {
                self.inner.shared.index.set(&name, None)?;
            }
        }
        self.inner.shared.changed.notify_one();
        Ok(())
    }
}

/// The listener that keeps `name`'s row of the alarm index current. It holds `alive`, so
/// the registry knows when every clone of the object's `Storage` is gone.
fn alarm_listener(shared: &Arc<Shared>, name: &str, alive: Arc<()>) -> AlarmListener {
    let shared = Arc::downgrade(shared);
    let name = name.to_string();
    Arc::new(move |alarm| {
        let _alive = &alive;
        let Some(shared) = shared.upgrade() else { return };
        match shared.index.set(&name, alarm) {
            Ok(true) => shared.changed.notify_one(),
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, name, "alarm index not updated"),
        }
    })
}

/// The bookmark calls of an archived object's `Storage`, answered by its archiver (held
/// weakly: the handle owns the archiver and closes it) on the namespace's archive runtime.
struct ArchiveRecovery {
    archiver: Weak<Archiver>,
    rt: tokio::runtime::Handle,
}

impl ArchiveRecovery {
    fn archiver(&self) -> durable_txn::Result<Arc<Archiver>> {
        self.archiver.upgrade().ok_or(durable_txn::Error::NoLongerAccessible)
    }
}

fn recovery_error(e: durable_pitr::Error) -> durable_txn::Error {
    durable_txn::Error::Recovery(e.to_string())
}

impl durable_txn::Recovery for ArchiveRecovery {
    fn current_bookmark(&self) -> durable_txn::Result<String> {
        self.archiver()?.current_bookmark().map_err(recovery_error)
    }

    fn bookmark_for_time(&self, time_ms: i64) -> durable_txn::Op<String> {
        let archiver = match self.archiver() {
            Ok(a) => a,
            Err(e) => return durable_txn::Op::ready(Err(e)),
        };
        // The rebuild may read the archive: on the archive runtime, awaited without blocking
        // the caller's thread.
        let task = self.rt.spawn(async move { archiver.bookmark_for_time(time_ms).await });
        durable_txn::Op::io(async move {
            match task.await {
                Ok(result) => result.map_err(recovery_error),
                Err(_) => Err(durable_txn::Error::NoLongerAccessible),
            }
        })
    }

    fn on_next_session_restore_bookmark(&self, bookmark: &str) -> durable_txn::Result<String> {
        self.archiver()?.on_next_session_restore_bookmark(bookmark).map_err(recovery_error)
    }
}

/// The runtime's opener can only report the turn layer's errors.
fn into_txn_error(error: Error) -> durable_txn::Error {
    match error {
        Error::Storage(e) => e,
        other => {
            tracing::warn!(error = %other, "object could not be opened");
            durable_txn::Error::NoLongerAccessible
        }
    }
}

/// This data folder's node id: kept in `dir/_node`, made (random) on first use, so that a
/// restarted process is the same node and takes its own leases back at once.
fn node_id(dir: &Path) -> Result<String> {
    let path = dir.join("_node");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(&path, e)),
    }
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).map_err(|e| Error::io(&path, std::io::Error::other(e)))?;
    let id = format!("node-{}", hex::encode(bytes));
    let tmp = dir.join("_node.tmp");
    std::fs::write(&tmp, &id).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    Ok(id)
}
