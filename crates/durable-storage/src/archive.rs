//! Where a namespace archives its objects' history, and the runtime archive I/O runs on.
//!
//! ```text
//!  --archive URL ──► ArchiveStore::from_url ──► object_store::parse_url_opts (s3://, gs://, az://,
//!                                               memory://) or a local folder (file://, a path)
//!  Namespace ──owns──► ArchiveRuntime: a small multi-threaded tokio runtime with I/O and time
//!                      drivers; every archive future (open, uploads, rebuilds) runs there, so an
//!                      object store that needs a reactor (the S3 client) always has one
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use durable_pitr::object_store::ObjectStore;
use durable_pitr::object_store::memory::InMemory;
use durable_pitr::{ArchiveConfig, Archiver, Node, Owner};
use durable_txn::Replicated;
use tokio::sync::{Semaphore, watch};

use crate::error::{Error, Result};

/// Where a SQLite-backed namespace archives its objects' history (point-in-time recovery).
#[derive(Clone, Default)]
pub enum Archive {
    /// No archive: the bookmark calls answer with the runtime's "not implemented" error.
    Off,
    /// Each object's history in `archive/` inside the namespace's folder (the default).
    #[default]
    Local,
    /// Each object's history under a folder of its own in an object store (S3-compatible,
    /// Google Cloud Storage, Azure, a local folder elsewhere, memory).
    Store(ArchiveStore),
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Archive::Off => f.write_str("Off"),
            Archive::Local => f.write_str("Local"),
            Archive::Store(store) => write!(f, "Store({store:?})"),
        }
    }
}

/// Adjusts every object's [`ArchiveConfig`] (window, clock, segment limits, failpoints).
pub type ConfigureArchive = Arc<dyn Fn(&mut ArchiveConfig) + Send + Sync>;

/// An object store and a key prefix: object `name`'s history goes under
/// `PREFIX/<its file name>/` (see [`Namespace::file_name`](crate::Namespace::file_name)).
#[derive(Clone)]
pub struct ArchiveStore {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    /// What to call the store in messages (its URL or folder).
    location: String,
    configure: Option<ConfigureArchive>,
}

impl std::fmt::Debug for ArchiveStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.location)
    }
}

impl ArchiveStore {
    /// Archives into `store` under `prefix` (empty for the store's root).
    pub fn new(store: Arc<dyn ObjectStore>, prefix: impl Into<String>) -> ArchiveStore {
        let prefix = prefix.into().trim_matches('/').to_owned();
        let location = format!("{store}/{prefix}");
        ArchiveStore { store, prefix, location, configure: None }
    }

    /// Archives into the local folder `dir` (created if missing).
    pub fn folder(dir: impl AsRef<Path>) -> Result<ArchiveStore> {
        let dir = dir.as_ref();
        let mut store = ArchiveStore::new(durable_pitr::local_store(dir)?, "");
        store.location = dir.display().to_string();
        Ok(store)
    }

    /// Archives in memory (tests; lost with the process).
    pub fn in_memory() -> ArchiveStore {
        let mut store = ArchiveStore::new(Arc::new(InMemory::new()), "");
        store.location = "memory://".into();
        store
    }

    /// Parses an archive location: a folder path, `file:///path`, `memory://`, or an object
    /// store URL through object_store's own parsing: `s3://bucket/prefix` (the `s3` feature),
    /// `gs://bucket/prefix` (`gcs`), `az://container/prefix` (`azure`). The store's settings
    /// come from the environment as object_store reads them (`AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`,
    /// `GOOGLE_SERVICE_ACCOUNT`, `AZURE_STORAGE_ACCOUNT_NAME`, ...).
    pub fn from_url(url: &str) -> Result<ArchiveStore> {
        let bad = |detail: String| Error::ArchiveUrl { url: url.to_owned(), detail };
        if url.is_empty() {
            return Err(bad("empty".into()));
        }
        if !url.contains("://") {
            return ArchiveStore::folder(url);
        }
        let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        let feature = match parsed.scheme() {
            "file" => {
                let path: PathBuf =
                    parsed.to_file_path().map_err(|()| bad("not a local path".into()))?;
                return ArchiveStore::folder(path);
            }
            "memory" => return Ok(ArchiveStore::in_memory()),
            "s3" | "s3a" => ("s3", cfg!(feature = "s3")),
            "gs" => ("gcs", cfg!(feature = "gcs")),
            "az" | "adl" | "azure" | "abfs" | "abfss" => ("azure", cfg!(feature = "azure")),
            other => {
                return Err(bad(format!(
                    "unknown scheme {other:?} (give a folder, file:///path, s3://, gs:// or az://)"
                )));
            }
        };
        if !feature.1 {
            return Err(bad(format!(
                "this build has no {} support (build durable-storage with the `{}` feature)",
                parsed.scheme(),
                feature.0
            )));
        }
        let (store, path) = durable_pitr::object_store::parse_url_opts(&parsed, std::env::vars())
            .map_err(|e| bad(e.to_string()))?;
        let mut out = ArchiveStore::new(Arc::from(store), path.as_ref());
        out.location = url.to_owned();
        Ok(out)
    }

    /// Adjusts every object's [`ArchiveConfig`] before it opens (a shorter window, another
    /// clock, smaller segments; failpoints in tests).
    pub fn with_config(
        mut self,
        configure: impl Fn(&mut ArchiveConfig) + Send + Sync + 'static,
    ) -> Self {
        self.configure = Some(Arc::new(configure));
        self
    }

    /// The object store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The key prefix inside the store (no slash at either end; empty for the root).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The key prefix of the object whose database file is `file_name`.
    pub fn object_prefix(&self, file_name: &str) -> String {
        if self.prefix.is_empty() {
            file_name.to_owned()
        } else {
            format!("{}/{file_name}", self.prefix)
        }
    }

    /// The database image of object `name` (its name, not its file name) at `at`, rebuilt
    /// read-only from this archive: no namespace lock, no lease, nothing written, so it
    /// works while the object runs in another process or on another node. Returns the
    /// bookmark of the image and the bytes of a SQLite database file. Runs on a runtime of
    /// its own (see [`Namespace::archived_image`](crate::Namespace::archived_image) to use
    /// a namespace's).
    pub fn read_image(&self, name: &str, at: ImageAt<'_>) -> Result<(String, Vec<u8>)> {
        let rt = ArchiveRuntime::new()?;
        rt.block_on(self.read_image_async(name, at))
    }

    pub(crate) async fn read_image_async(
        &self,
        name: &str,
        at: ImageAt<'_>,
    ) -> Result<(String, Vec<u8>)> {
        use durable_pitr::{ArchiveError, ArchiveReader};
        let config = self.config_for(&crate::Namespace::file_name(name));
        let reader = ArchiveReader::open(&config).await?;
        let nothing = |detail: String| {
            Error::Pitr(durable_pitr::Error::Archive(ArchiveError::Missing { detail }))
        };
        let bookmark = match at {
            ImageAt::Bookmark(b) => b.to_owned(),
            ImageAt::Latest => reader
                .latest_bookmark()
                .ok_or_else(|| nothing(format!("no commit of {name:?} is archived")))?,
            ImageAt::Time(t) => reader.bookmark_for_time(t).await?.ok_or_else(|| {
                nothing(format!("no commit of {name:?} archived at or before {t} ms"))
            })?,
        };
        let image = reader.image_at(&bookmark).await?;
        Ok((bookmark, image))
    }

    /// The health of object `name`'s archived history (its name, not its file name), read
    /// from this archive's listing alone, like [`read_image`](Self::read_image): history a
    /// later lease term superseded (expected after a takeover), segments that straddle the
    /// start of a later term, and positions missing from the chain (see
    /// [`ArchiveCheck`](durable_pitr::ArchiveCheck)). Fails with `Missing` when nothing of
    /// the object was ever archived. Runs on a runtime of its own (see
    /// [`Namespace::archive_check`](crate::Namespace::archive_check) to use a namespace's).
    pub fn check(&self, name: &str) -> Result<durable_pitr::ArchiveCheck> {
        let rt = ArchiveRuntime::new()?;
        rt.block_on(self.check_async(name))
    }

    pub(crate) async fn check_async(&self, name: &str) -> Result<durable_pitr::ArchiveCheck> {
        let config = self.config_for(&crate::Namespace::file_name(name));
        Ok(durable_pitr::ArchiveReader::open(&config).await?.check())
    }

    /// The archive configuration of the object whose database file is `file_name`.
    pub fn config_for(&self, file_name: &str) -> ArchiveConfig {
        let mut config = ArchiveConfig::new(self.store.clone(), self.object_prefix(file_name));
        if let Some(configure) = &self.configure {
            configure(&mut config);
        }
        config
    }
}

/// Which state of an object's archived history [`ArchiveStore::read_image`] rebuilds.
#[derive(Debug, Clone, Copy)]
pub enum ImageAt<'a> {
    /// The newest archived commit.
    Latest,
    /// The commit a bookmark names.
    Bookmark(&'a str),
    /// The newest commit at or before this time (ms since the Unix epoch).
    Time(i64),
}

/// The tokio runtime a namespace runs its archive I/O on: two worker threads with the I/O
/// and time drivers, shut down in the background when the namespace goes (work left then,
/// such as an upload, is picked up at the next open: sealed history waits in the journal).
pub(crate) struct ArchiveRuntime {
    runtime: Option<tokio::runtime::Runtime>,
}

impl ArchiveRuntime {
    pub(crate) fn new() -> Result<ArchiveRuntime> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("durable-archive")
            .enable_all()
            .build()
            .map_err(|e| Error::io("archive runtime", e))?;
        Ok(ArchiveRuntime { runtime: Some(runtime) })
    }

    pub(crate) fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime.as_ref().expect("the runtime lives until drop").handle()
    }

    /// Runs `future` with this runtime's drivers and blocks the calling thread until it
    /// finishes. On a worker of a multi-threaded tokio runtime it first hands that worker's
    /// other tasks to the runtime (`block_in_place`), so they go on meanwhile; on a
    /// current-thread runtime (which cannot do that) it waits on a scoped thread.
    pub(crate) fn block_on<F>(&self, future: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        use tokio::runtime::{Handle, RuntimeFlavor};
        let handle = self.handle();
        match Handle::try_current().map(|h| h.runtime_flavor()) {
            Err(_) => handle.block_on(future),
            Ok(RuntimeFlavor::MultiThread) => {
                tokio::task::block_in_place(|| handle.block_on(future))
            }
            Ok(_) => {
                std::thread::scope(|scope| match scope.spawn(|| handle.block_on(future)).join() {
                    Ok(output) => output,
                    Err(panic) => std::panic::resume_unwind(panic),
                })
            }
        }
    }
}

impl Drop for ArchiveRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// How continuous archiving runs (from [`NamespaceOptions`](crate::NamespaceOptions)).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pace {
    /// The most an object's newest history may wait before it is in the archive store.
    pub lag: Duration,
    /// How often an object that uploaded runs compaction and retention.
    pub maintain_every: Duration,
    /// `Replication::Replicated`: upload at once, and results wait for it (at most this).
    pub replicated: Option<Duration>,
}

/// This namespace as a node taking single-writer leases (from
/// [`NamespaceOptions`](crate::NamespaceOptions)).
#[derive(Debug, Clone)]
pub(crate) struct Leasing {
    pub id: String,
    pub address: Option<String>,
    pub lease: Duration,
}

/// A namespace's archiving: where to, the runtime it runs on, the node it is when objects
/// are leased, and the objects whose last history is still uploading after they closed.
pub(crate) struct Archiving {
    pub store: ArchiveStore,
    pub rt: ArchiveRuntime,
    /// The node, when objects are leased; its heartbeat task.
    node: Option<(Arc<Node>, tokio::task::JoinHandle<()>)>,
    pace: Pace,
    /// At most this many uploads at once, across the namespace's objects.
    permits: Arc<Semaphore>,
    /// Under `Replicated` with a node and a near store, the objects' own uploads take these
    /// instead (see [`UPLOADS_BESIDE_THE_LOG`]).
    beside_log: Arc<Semaphore>,
    /// Objects closing: their final upload runs; `true` once it is over.
    closing: Mutex<HashMap<String, watch::Receiver<bool>>>,
    /// Objects whose history could not be uploaded when they closed, with the error. Shared
    /// with [`Namespace::close`](crate::Namespace::close), which reports them.
    pub left: Arc<Mutex<BTreeMap<String, String>>>,
}

/// Uploads running at once per namespace.
const UPLOADS_AT_ONCE: usize = 64;

/// Uploads of the objects' own segments running at once per namespace under `Replicated`
/// with a node, while the store is near ([`Node::store_is_near`]). There
/// the results wait for the log's rounds, and the segments are background work (the log
/// holds the commits meanwhile) that competes with the rounds for the same server: benchmark
/// (r), 100 objects paced at 1,000 events/s against the local S3 server, four runs each,
/// alternating: a confirm p99 of 40-279 ms with 64 uploads at once, 11-44 ms with 2; back
/// to back, p99 54-135 ms against 32-237 ms, at the same throughput. Against a far store
/// every upload waits on the network, not the server, and all [`UPLOADS_AT_ONCE`] run.
const UPLOADS_BESIDE_THE_LOG: usize = 2;

impl Archiving {
    pub(crate) fn new(
        store: ArchiveStore,
        pace: Pace,
        leasing: Option<Leasing>,
    ) -> Result<Archiving> {
        let rt = ArchiveRuntime::new()?;
        let node = match leasing {
            None => None,
            Some(l) => {
                let node = Arc::new(Node::new(
                    store.store.clone(),
                    store.prefix.clone(),
                    l.id,
                    l.address,
                    l.lease,
                )?);
                // The first heartbeat before any object opens: a lease is only as good as
                // the heartbeat behind it.
                if let Err(error) = rt.block_on(node.heartbeat()) {
                    tracing::warn!(%error, "node heartbeat failed; retrying in the background");
                }
                let beat = rt.handle().spawn(heartbeats(node.clone()));
                Some((node, beat))
            }
        };
        Ok(Archiving {
            store,
            rt,
            node,
            pace,
            permits: Arc::new(Semaphore::new(UPLOADS_AT_ONCE)),
            beside_log: Arc::new(Semaphore::new(UPLOADS_BESIDE_THE_LOG)),
            closing: Mutex::new(HashMap::new()),
            left: Arc::new(Mutex::new(BTreeMap::new())),
        })
    }

    /// The archive configuration of the object in `file_name`, under this node's leases.
    pub(crate) fn config_for(&self, file_name: &str) -> ArchiveConfig {
        let config = self.store.config_for(file_name);
        match &self.node {
            Some((node, _)) => config.with_node(node.clone()),
            None => config,
        }
    }

    /// Opens an object under the archiver, waiting up to `wait` for another live node to
    /// let go of its lease.
    pub(crate) async fn open_leased(
        &self,
        path: &Path,
        options: durable_sql::Options,
        config: ArchiveConfig,
        wait: Duration,
    ) -> durable_pitr::Result<(durable_sql::Database, Archiver)> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match Archiver::open(path, options.clone(), config.clone()).await {
                Err(durable_pitr::Error::Archive(durable_pitr::ArchiveError::LeaseHeld {
                    ..
                })) if tokio::time::Instant::now() < deadline => {
                    let step = deadline.saturating_duration_since(tokio::time::Instant::now());
                    tokio::time::sleep(step.min(Duration::from_millis(250))).await;
                }
                other => return other,
            }
        }
    }

    /// The node holding the lease of the object in `file_name` (`None` without leases, or
    /// when no node ever took it).
    pub(crate) fn owner(&self, file_name: &str) -> Result<Option<Owner>> {
        let Some((node, _)) = &self.node else { return Ok(None) };
        let config = self.store.config_for(file_name);
        Ok(self.rt.block_on(node.owner(&config))?)
    }

    /// This namespace's node id, when objects are leased.
    pub(crate) fn node_id(&self) -> Option<&str> {
        self.node.as_ref().map(|(n, _)| n.id())
    }

    fn closing(&self) -> MutexGuard<'_, HashMap<String, watch::Receiver<bool>>> {
        self.closing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the task that keeps `archiver`'s object archived: it uploads what the object
    /// commits within the lag bound and runs compaction and retention now and then. It ends
    /// when the archiver is dropped, or when [`close`](Archiving::close) stops it.
    ///
    /// Under `Replicated`, also returns what the object's results wait for: the commits in
    /// the store (or failed after the timeout).
    pub(crate) fn keep(
        &self,
        name: &str,
        archiver: &Arc<Archiver>,
    ) -> (tokio::task::JoinHandle<()>, Option<watch::Receiver<Replicated>>) {
        let replica = self.pace.replicated.map(|timeout| {
            let (tx, rx) = watch::channel(Replicated::default());
            (tx, rx, timeout)
        });
        let (report, rx) = match replica {
            Some((tx, rx, timeout)) => (Some((tx, timeout)), Some(rx)),
            None => (None, None),
        };
        // Under leases, `Replicated` commits go to the store through the node's shared log
        // (one upload for every object's new commits); the object's own segments follow at
        // the archive lag's pace, as under `Local`.
        let logged = self.pace.replicated.is_some() && self.node.is_some();
        let mut pace = self.pace;
        let mut companions = Vec::new();
        if logged {
            pace.replicated = None;
            let replicator = replicate_continuously(
                name.to_owned(),
                Arc::downgrade(archiver),
                archiver.watch_head(),
            );
            companions.push(AbortOnDrop(self.rt.handle().spawn(replicator)));
        }
        if let Some((tx, timeout)) = report {
            let watcher = replication_watch(
                Arc::downgrade(archiver),
                archiver.watch_replicated(),
                tx,
                timeout,
            );
            companions.push(AbortOnDrop(self.rt.handle().spawn(watcher)));
        }
        let permits = Permits {
            all: self.permits.clone(),
            beside_log: logged
                .then(|| self.node.as_ref().map(|(n, _)| (n.clone(), self.beside_log.clone())))
                .flatten(),
        };
        let task = keep_archived(
            name.to_owned(),
            Arc::downgrade(archiver),
            archiver.watch_head(),
            pace,
            permits,
            companions,
        );
        (self.rt.handle().spawn(task), rx)
    }

    /// Stops the object's keeper, uploads the rest of its history in the background, then
    /// drops its archiver (releasing the object's lock). `owner` (the namespace's shared
    /// state) is kept alive until then, so the namespace's lock is held until its history is
    /// out.
    pub(crate) fn close(
        &self,
        name: &str,
        archiver: Arc<Archiver>,
        keeper: Option<tokio::task::JoinHandle<()>>,
        owner: Box<dyn Send>,
    ) {
        let (done, rx) = watch::channel(false);
        self.closing().insert(name.to_owned(), rx);
        let name = name.to_owned();
        let left = self.left.clone();
        self.rt.handle().spawn(async move {
            if let Some(keeper) = keeper {
                keeper.abort();
                let _ = keeper.await;
            }
            // Everything uploaded: let go of the lease, so another node may open the object
            // at once (a failed upload keeps it: this node holds history nobody else has).
            let outcome = match archiver.flush().await {
                Ok(_) => archiver.release().await,
                Err(e) => Err(e),
            };
            {
                let mut left = left.lock().unwrap_or_else(|p| p.into_inner());
                match outcome {
                    Ok(_) => {
                        left.remove(&name);
                    }
                    // Taken over by another node: its history is the new owner's now, and
                    // nothing here waits to be uploaded.
                    Err(error) if archiver.is_fenced() => {
                        tracing::warn!(%error, name, "closed after another node took the object over");
                        left.remove(&name);
                    }
                    Err(error) => {
                        tracing::warn!(%error, name, "history not uploaded at close; it waits in the journal");
                        left.insert(name.clone(), error.to_string());
                    }
                }
            }
            // The object is released when its archiver goes: wait until nothing else (a
            // bookmark call that just started) holds it.
            for _ in 0..5_000 {
                if Arc::strong_count(&archiver) == 1 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            drop(archiver);
            // The namespace's state goes before `done`: whoever waits for it may rely on
            // holding the last reference (and so on the lock being released with it).
            drop(owner);
            let _ = done.send(true);
        });
    }

    /// Waits (at most `limit`) until `name`'s previous instance has finished closing (its
    /// final upload).
    pub(crate) fn wait_closed(&self, name: &str, limit: Duration) {
        let Some(mut rx) = self.closing().get(name).cloned() else { return };
        self.rt.block_on(async move {
            let _ = tokio::time::timeout(limit, rx.wait_for(|done| *done)).await;
        });
        let mut closing = self.closing();
        if closing.get(name).is_some_and(|rx| *rx.borrow()) {
            closing.remove(name);
        }
    }

    /// Waits, at most `limit`, until every closing object's final upload is over; the names
    /// of those still running.
    pub(crate) fn wait_all_closed(&self, limit: Duration) -> Vec<String> {
        let receivers: Vec<(String, watch::Receiver<bool>)> =
            self.closing().iter().map(|(n, rx)| (n.clone(), rx.clone())).collect();
        if receivers.is_empty() {
            return Vec::new();
        }
        let waits = receivers.iter().cloned().map(|(_, mut rx)| async move {
            let _ = rx.wait_for(|done| *done).await;
        });
        let all = futures_util::future::join_all(waits);
        let _ = self.rt.block_on(async move { tokio::time::timeout(limit, all).await });
        receivers.into_iter().filter(|(_, rx)| !*rx.borrow()).map(|(n, _)| n).collect()
    }
}

impl Drop for Archiving {
    fn drop(&mut self) {
        if let Some((_, beat)) = &self.node {
            beat.abort();
        }
    }
}

/// A node's heartbeats: every third of the lease, for as long as the namespace lives; and
/// every [`SWEEP_EVERY`] beats (and once at the start), a sweep of the shared logs stopped
/// nodes left behind ([`Node::sweep_logs`]), on a task of its own.
async fn heartbeats(node: Arc<Node>) {
    let every = node.lease() / 3;
    let mut beats = 0u64;
    loop {
        if beats.is_multiple_of(SWEEP_EVERY) {
            let node = node.clone();
            tokio::spawn(async move {
                match node.sweep_logs().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(n, "deleted what stopped nodes' logs no longer need"),
                    Err(error) => tracing::warn!(%error, "sweeping stopped nodes' logs failed"),
                }
            });
        }
        beats += 1;
        tokio::time::sleep(every).await;
        if let Err(error) = node.heartbeat().await {
            tracing::warn!(%error, node = node.id(), "node heartbeat failed");
        }
    }
}

/// Heartbeats between sweeps of stopped nodes' shared logs.
const SWEEP_EVERY: u64 = 30;

/// Aborts a task when dropped (a keeper's companion ends with it).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `Replicated`: forwards the archiver's replicated commits to the object's results, and
/// fails the waiting ones once the oldest has waited `timeout` for the store.
async fn replication_watch(
    archiver: Weak<Archiver>,
    mut replicated: watch::Receiver<u64>,
    report: watch::Sender<Replicated>,
    timeout: Duration,
) {
    let check = (timeout / 4).clamp(Duration::from_millis(10), Duration::from_millis(250));
    loop {
        let changed = tokio::time::timeout(check, replicated.changed()).await;
        if matches!(changed, Ok(Err(_))) {
            return;
        }
        let seq = *replicated.borrow_and_update();
        let Some(status) = archiver.upgrade().map(|a| a.status()) else { return };
        let late = Duration::from_millis(status.replica_lag_ms) >= timeout;
        report.send_if_modified(|r| {
            let before = r.clone();
            r.seq = r.seq.max(seq);
            r.failed = late.then(|| {
                let why = status.last_error.as_deref().unwrap_or("no answer");
                (
                    u64::MAX,
                    format!(
                        "the archive store did not confirm the write within {timeout:?}: {why}"
                    ),
                )
            });
            *r != before
        });
    }
}

/// The delay before retry `n` (1, 2, ...) of a failed upload: 100 ms, doubling, at most 5 s.
fn retry_delay(failures: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << failures.min(6).saturating_sub(1)))
        .min(Duration::from_secs(5))
}

/// `Replicated` under leases: hands each object's new commits to the node's shared log as
/// soon as they are captured, one delta in flight per object (the next carries whatever was
/// committed meanwhile), so results wait about one round of the log.
async fn replicate_continuously(
    name: String,
    archiver: Weak<Archiver>,
    mut head: watch::Receiver<u64>,
) {
    let mut failures = 0u32;
    loop {
        head.borrow_and_update();
        let Some(a) = archiver.upgrade() else { return };
        match a.replicate().await {
            Ok(true) => {
                failures = 0;
                continue;
            }
            Ok(false) => failures = 0,
            Err(durable_pitr::Error::Archive(
                durable_pitr::ArchiveError::Poisoned(_) | durable_pitr::ArchiveError::Fenced { .. },
            )) => return,
            Err(error) => {
                failures += 1;
                tracing::warn!(%error, name, failures, "replication failed; retrying");
                drop(a);
                tokio::time::sleep(retry_delay(failures)).await;
                continue;
            }
        }
        drop(a);
        if head.changed().await.is_err() {
            return;
        }
    }
}

/// Where an object's keeper takes its upload permit.
struct Permits {
    /// The namespace's ([`UPLOADS_AT_ONCE`]).
    all: Arc<Semaphore>,
    /// Behind the shared log: the node (whose log tells how near the store is) and the
    /// namespace's [`UPLOADS_BESIDE_THE_LOG`].
    beside_log: Option<(Arc<Node>, Arc<Semaphore>)>,
}

impl Permits {
    /// One upload's permit, from the few while the store is near. (`None` if the semaphore
    /// were closed, which nothing does; the keeper would then stop.)
    async fn acquire(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let semaphore = match &self.beside_log {
            Some((node, few)) if node.store_is_near() => few,
            _ => &self.all,
        };
        semaphore.clone().acquire_owned().await.ok()
    }
}

/// One object's continuous archiving (see [`Archiving::keep`]).
async fn keep_archived(
    name: String,
    archiver: Weak<Archiver>,
    mut head: watch::Receiver<u64>,
    pace: Pace,
    permits: Permits,
    _companions: Vec<AbortOnDrop>,
) {
    let mut failures = 0u32;
    // Maintenance is due at the first upload: an object that moves between nodes more
    // often than `maintain_every` would otherwise never get a snapshot, and every node
    // taking it over would rebuild it from its whole history (compaction does nothing when
    // nothing is due).
    let mut maintained = tokio::time::Instant::now()
        .checked_sub(pace.maintain_every)
        .unwrap_or_else(tokio::time::Instant::now);
    let mut uploaded = false;
    loop {
        let Some(status) = archiver.upgrade().map(|a| a.status()) else { return };
        if status.pending == 0 {
            // Nothing waits: sleep until history grows (or the archiver goes).
            if head.changed().await.is_err() {
                return;
            }
            continue;
        }
        // One upload carries every commit made meanwhile: wait until the oldest waiting
        // commit is half the lag bound old (or longer after failures).
        // Under `Replicated`, results wait for the upload: it starts at once (and carries
        // whatever was committed while the previous one was in flight).
        let half_lag = if pace.replicated.is_some() { Duration::ZERO } else { pace.lag / 2 };
        let mut wait = half_lag.saturating_sub(Duration::from_millis(status.lag_ms));
        if failures > 0 {
            wait = wait.max(retry_delay(failures));
        }
        tokio::time::sleep(wait).await;
        let Some(_permit) = permits.acquire().await else { return };
        let Some(a) = archiver.upgrade() else { return };
        match a.flush().await {
            Ok(_) => {
                failures = 0;
                uploaded = true;
            }
            Err(durable_pitr::Error::Archive(durable_pitr::ArchiveError::Poisoned(why))) => {
                tracing::error!(name, why, "archiver stopped: no more uploads for this object");
                return;
            }
            Err(
                error @ durable_pitr::Error::Archive(durable_pitr::ArchiveError::Fenced { .. }),
            ) => {
                tracing::error!(%error, name, "another node took this object over");
                return;
            }
            Err(error) => {
                failures += 1;
                tracing::warn!(%error, name, failures, "upload failed; retrying");
            }
        }
        if uploaded && maintained.elapsed() >= pace.maintain_every {
            maintained = tokio::time::Instant::now();
            uploaded = false;
            if let Err(error) = a.compact().await {
                tracing::warn!(%error, name, "compaction failed");
            }
            if let Err(error) = a.retain().await {
                tracing::warn!(%error, name, "retention failed");
            }
        }
    }
}
