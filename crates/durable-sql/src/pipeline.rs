//! The commit pipeline: every commit of a database gets a sequence number and is published,
//! in order, to the database's subscribers when it is made, when it becomes durable, and when
//! the database is wiped or closed.
//!
//! ```text
//!   Database::commit ── COMMIT ──► Committed{seq}       (committing thread, database locked)
//!        │
//!        ├─ Durability::Full / Off: the COMMIT synced (or never syncs)
//!        │      └────────────────► Durable{seq}          (committing thread, unlocked)
//!        └─ Durability::Group: the WAL is written, not synced
//!               └─ sync pool: one fdatasync of the WAL for every commit made so far
//!                      └─────────► Durable{latest}       (sync thread, unlocked)
//!                      └─ failed ► SyncFailed{durable}   (sticky: nothing later is durable)
//!   Database::reset ─► Resetting ─ files deleted, recreated, folder synced ─► Reset{seq}
//!   last handle dropped ─ final COMMIT, final sync ─► Closed{last, durable}
//! ```
//!
//! Ordering: `Committed` events come in sequence order, each before the `Durable` event that
//! covers it; `Durable` sequence numbers only grow (one covers every earlier commit, so a
//! subscriber may see 3 then 7 and never 4 to 6); `Resetting` and `Reset` come between the
//! commits they separate. `Durable` and `SyncFailed` are delivered by one thread at a time.
//!
//! Who may block where: `Committed`, `Resetting`, `Reset` and `Closed` are delivered with the
//! database locked: a subscriber must not call back into the [`Database`] and should only do
//! cheap bookkeeping. `Durable` and `SyncFailed` are delivered without the database lock and
//! hand the subscriber the database: it may lock it (an archiver captures and checkpoints
//! there), and while it runs no other `Durable` event of this database is delivered (other
//! databases are not held up). A subscriber never waits for another database's events.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, RwLock, Weak};

use crate::db::{Database, Shared};
use crate::options::Durability;

/// One event of a database's commit pipeline (see the [module docs](crate::pipeline) for
/// the order and the threads they come on).
#[derive(Debug)]
#[non_exhaustive]
pub enum CommitEvent<'a> {
    /// The implicit transaction committed; `seq` counts the handle's commits from 1.
    /// Delivered with the database locked.
    Committed {
        /// The commit's sequence number.
        seq: u64,
    },
    /// Every commit up to `seq` is durable. Delivered without the database lock, by one
    /// thread at a time; `db` may be used (locked, read, checkpointed).
    Durable {
        /// The newest durable commit.
        seq: u64,
        /// The database the commits belong to.
        db: &'a Database,
    },
    /// Making commits durable failed: commits after `durable` will never be reported durable
    /// by this handle (an fsync that failed may have dropped their pages). Open the database
    /// again to go on.
    SyncFailed {
        /// The newest commit known durable.
        durable: u64,
        /// What failed.
        error: &'a std::io::Error,
    },
    /// [`Database::reset`] is about to delete the database: everything committed is still in
    /// its files. Delivered with the database locked.
    Resetting,
    /// [`Database::reset`] replaced the database with an empty one, durably; commits up to
    /// `seq` are superseded. Delivered with the database locked.
    Reset {
        /// The last commit before the reset.
        seq: u64,
    },
    /// The last handle is gone and the connection closes. `durable` tells whether every
    /// commit, up to `last`, was made durable.
    Closed {
        /// The last commit of the handle.
        last: u64,
        /// Whether all of them are durable.
        durable: bool,
    },
}

/// Told the events of a database's commit pipeline, in order.
///
/// Closures `Fn(&CommitEvent<'_>)` are subscribers too.
pub trait CommitSubscriber: Send + Sync {
    /// One event. Must not panic; see [`CommitEvent`] for what may be done where.
    fn on_event(&self, event: &CommitEvent<'_>);
}

impl<F> CommitSubscriber for F
where
    F: Fn(&CommitEvent<'_>) + Send + Sync,
{
    fn on_event(&self, event: &CommitEvent<'_>) {
        self(event)
    }
}

/// Names a subscription, to end it with [`Database::unsubscribe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubscriptionId(u64);

/// Where a database's commits stand: see [`Database::commit_progress`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CommitProgress {
    /// The last commit's sequence number (0: none yet).
    pub committed: u64,
    /// Every commit up to this one is durable.
    pub durable: u64,
    /// The sync failure that stopped the pipeline, if one did.
    pub failed: Option<Arc<std::io::Error>>,
}

/// A function run before every group-commit sync, from the thread that syncs: an error
/// fails the sync (tests use it to hold or fail syncs).
pub type SyncHook = Arc<dyn Fn() -> std::io::Result<()> + Send + Sync>;

type Subscribers = Arc<[(u64, Arc<dyn CommitSubscriber>)]>;

#[derive(Default)]
struct SyncState {
    committed: u64,
    durable: u64,
    /// A thread is syncing for this database (the pool's or a caller of `sync`).
    running: bool,
    failed: Option<Arc<std::io::Error>>,
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One database's pipeline: sequence numbers, subscribers, and (group commit) its syncs.
pub(crate) struct Pipeline {
    durability: Durability,
    /// The WAL file group commit syncs (`None` in memory).
    wal: Option<PathBuf>,
    /// The database, for `Durable` events delivered by sync threads.
    db: OnceLock<Weak<Shared>>,
    subscribers: RwLock<Subscribers>,
    next_id: AtomicU64,
    sync: Mutex<SyncState>,
    /// Signalled when a sync ends (`running` goes false).
    idle: Condvar,
    /// The newest `Durable` delivered; held while delivering `Durable` and `SyncFailed`.
    delivered: Mutex<u64>,
    /// The WAL file last synced and its identity, kept open between syncs.
    wal_file: Mutex<Option<(File, FileId)>>,
    hook: Mutex<Option<SyncHook>>,
}

impl Pipeline {
    pub(crate) fn new(durability: Durability, path: Option<&Path>) -> Arc<Pipeline> {
        Arc::new(Pipeline {
            durability,
            wal: path.map(crate::files::wal_path),
            db: OnceLock::new(),
            subscribers: RwLock::new(Arc::new([])),
            next_id: AtomicU64::new(0),
            sync: Mutex::new(SyncState::default()),
            idle: Condvar::new(),
            delivered: Mutex::new(0),
            wal_file: Mutex::new(None),
            hook: Mutex::new(None),
        })
    }

    pub(crate) fn attach(&self, db: Weak<Shared>) {
        let _ = self.db.set(db);
    }

    pub(crate) fn durability(&self) -> Durability {
        self.durability
    }

    pub(crate) fn subscribe(&self, subscriber: Arc<dyn CommitSubscriber>) -> SubscriptionId {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut list = self.subscribers.write().unwrap_or_else(|p| p.into_inner());
        let mut next: Vec<_> = list.iter().cloned().collect();
        next.push((id, subscriber));
        *list = next.into();
        SubscriptionId(id)
    }

    /// Removes a subscriber, then waits for deliveries in flight without the database lock
    /// (`Durable`, `SyncFailed`); the caller waits for those under the lock.
    pub(crate) fn unsubscribe(&self, id: SubscriptionId) {
        {
            let mut list = self.subscribers.write().unwrap_or_else(|p| p.into_inner());
            let next: Vec<_> = list.iter().filter(|(i, _)| *i != id.0).cloned().collect();
            *list = next.into();
        }
        drop(lock(&self.delivered));
    }

    fn deliver(&self, event: &CommitEvent<'_>) {
        let list = self.subscribers.read().unwrap_or_else(|p| p.into_inner()).clone();
        for (_, subscriber) in list.iter() {
            subscriber.on_event(event);
        }
    }

    pub(crate) fn progress(&self) -> CommitProgress {
        let st = lock(&self.sync);
        CommitProgress { committed: st.committed, durable: st.durable, failed: st.failed.clone() }
    }

    #[cfg(feature = "testing")]
    pub(crate) fn set_hook(&self, hook: Option<SyncHook>) {
        *lock(&self.hook) = hook;
    }

    /// A commit was made (the database is locked): numbers it and tells the subscribers.
    pub(crate) fn committed(&self) -> u64 {
        let seq = {
            let mut st = lock(&self.sync);
            st.committed += 1;
            st.committed
        };
        self.deliver(&CommitEvent::Committed { seq });
        seq
    }

    /// After a commit, with the database unlocked: durable now (`Full`, `Off`), or handed to
    /// the sync pool (`Group`).
    pub(crate) fn after_commit(self: &Arc<Self>, seq: u64, db: &Database) {
        match self.durability {
            Durability::Group => self.schedule(),
            Durability::Full | Durability::Off => self.publish_durable(seq, Some(db)),
        }
    }

    fn schedule(self: &Arc<Self>) {
        {
            let mut st = lock(&self.sync);
            if st.running || st.failed.is_some() || st.durable >= st.committed {
                return;
            }
            st.running = true;
        }
        crate::sync_pool::submit(self.clone());
    }

    /// Marks commits up to `target` durable and tells the subscribers (unless a later
    /// `Durable` was delivered already).
    fn publish_durable(&self, target: u64, db: Option<&Database>) {
        let upgraded;
        let db = match db {
            Some(db) => Some(db),
            None => {
                upgraded = self.db.get().and_then(Weak::upgrade).map(|shared| Database { shared });
                upgraded.as_ref()
            }
        };
        let mut delivered = lock(&self.delivered);
        // Failed for good (a sync, or a host that stopped the pipeline): nothing later is
        // reported durable.
        if lock(&self.sync).failed.is_some() {
            return;
        }
        if *delivered < target {
            *delivered = target;
            if let Some(db) = db {
                self.deliver(&CommitEvent::Durable { seq: target, db });
            }
        }
        // After the subscribers: whoever waits for `durable` finds them done with the event.
        {
            let mut st = lock(&self.sync);
            st.durable = st.durable.max(target);
        }
        // `upgraded` is dropped after the delivery lock: if it was the last handle, the
        // database closes here, and closing never waits for a delivery.
        drop(delivered);
    }

    /// Stops the pipeline from outside, as a failed sync does (see `Database::fail_durability`).
    pub(crate) fn fail(&self, error: std::io::Error) {
        self.publish_failed(error);
    }

    fn publish_failed(&self, error: std::io::Error) -> Arc<std::io::Error> {
        let error = Arc::new(error);
        let _delivered = lock(&self.delivered);
        let (durable, first) = {
            let mut st = lock(&self.sync);
            let first = st.failed.get_or_insert_with(|| error.clone()).clone();
            (st.durable, first)
        };
        self.deliver(&CommitEvent::SyncFailed { durable, error: &error });
        first
    }

    /// Syncs the WAL once for every commit made so far and publishes the outcome; a panic of
    /// the hook or a subscriber counts as a failed sync.
    fn sync_round(&self) -> Result<u64, Arc<std::io::Error>> {
        let target = lock(&self.sync).committed;
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.sync_wal().map(|()| self.publish_durable(target, None))
        }))
        .unwrap_or_else(|_| {
            Err(std::io::Error::other("a sync hook or commit subscriber panicked"))
        });
        match outcome {
            Ok(()) => Ok(target),
            Err(error) => Err(self.publish_failed(error)),
        }
    }

    /// A pool thread's work: sync until every commit handed over is durable.
    pub(crate) fn drain(self: &Arc<Self>) {
        loop {
            let result = self.sync_round();
            let mut st = lock(&self.sync);
            if result.is_err() || st.committed <= st.durable {
                st.running = false;
                self.idle.notify_all();
                return;
            }
        }
    }

    /// Makes every commit made before the call durable, on this thread (after waiting for a
    /// sync already running).
    pub(crate) fn sync_now(self: &Arc<Self>) -> Result<(), Arc<std::io::Error>> {
        if self.durability != Durability::Group {
            return match &lock(&self.sync).failed {
                Some(error) => Err(error.clone()),
                None => Ok(()),
            };
        }
        let mut st = lock(&self.sync);
        let target = st.committed;
        loop {
            if let Some(e) = &st.failed {
                return Err(e.clone());
            }
            if st.durable >= target {
                return Ok(());
            }
            if !st.running {
                st.running = true;
                break;
            }
            st = self.idle.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        drop(st);
        let result = self.sync_round();
        let mut st = lock(&self.sync);
        if result.is_ok() && st.committed > st.durable {
            // Commits made meanwhile (by another handle): the pool takes them.
            drop(st);
            crate::sync_pool::submit(self.clone());
        } else {
            st.running = false;
            self.idle.notify_all();
        }
        result.map(|_| ())
    }

    /// The database is about to be wiped (locked).
    pub(crate) fn resetting(&self) {
        self.deliver(&CommitEvent::Resetting);
    }

    /// The database was wiped and recreated, durably (locked).
    pub(crate) fn reset_done(&self) {
        let seq = {
            let mut st = lock(&self.sync);
            st.durable = st.durable.max(st.committed);
            st.committed
        };
        self.deliver(&CommitEvent::Reset { seq });
    }

    /// The last handle is gone: makes the last commits durable and says so.
    pub(crate) fn close(&self) {
        let durable = match self.durability {
            Durability::Group => {
                let (committed, durable, failed) = {
                    let st = lock(&self.sync);
                    (st.committed, st.durable, st.failed.is_some())
                };
                if failed {
                    false
                } else if durable >= committed {
                    true
                } else {
                    match self.sync_wal() {
                        Ok(()) => {
                            lock(&self.sync).durable = committed;
                            true
                        }
                        Err(_) => false,
                    }
                }
            }
            Durability::Full | Durability::Off => true,
        };
        let last = lock(&self.sync).committed;
        self.deliver(&CommitEvent::Closed { last, durable });
    }

    /// One `fdatasync` of the WAL (and of the folder, the first time a new WAL file is seen).
    /// Nothing to do in memory or while no WAL file exists (a checkpoint that removed it
    /// synced the database file).
    fn sync_wal(&self) -> std::io::Result<()> {
        let hook = lock(&self.hook).clone();
        if let Some(hook) = hook {
            hook()?;
        }
        let Some(path) = &self.wal else { return Ok(()) };
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let id = file_id(&meta);
        let mut open = lock(&self.wal_file);
        if open.as_ref().map(|(_, known)| *known) != Some(id) {
            let file = match File::open(path) {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            };
            // A WAL file created since the last sync: its folder entry must be durable too.
            if let Some(dir) = path.parent() {
                crate::files::sync_dir(dir)?;
            }
            *open = Some((file, id));
        }
        match open.as_ref() {
            Some((file, _)) => file.sync_data(),
            None => Ok(()),
        }
    }
}
