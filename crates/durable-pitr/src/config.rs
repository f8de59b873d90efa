//! `ArchiveConfig`: where history is archived, how long it is kept, the clock, and the limits
//! that decide when segments are sealed, snapshots taken and the WAL checkpointed.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;

use crate::clock::{Clock, SystemClock};
use crate::error::{ArchiveError, Error, Result};
use crate::lease::Node;

/// A crash-test hook: called with the name of each step (for example `"capture.after_append"`);
/// returning `true` makes that step fail with [`ArchiveError::Injected`], as if the process
/// died there. The names are listed in `docs/storage-format.md` (PITR, "Failpoints").
/// Installed with [`ArchiveConfig::with_failpoint`] (the `testing` feature).
pub type Failpoint = Arc<dyn Fn(&'static str) -> bool + Send + Sync>;

/// How one object's history is archived.
#[derive(Clone)]
#[non_exhaustive]
pub struct ArchiveConfig {
    /// Where sealed segments and snapshots go.
    pub store: Arc<dyn ObjectStore>,
    /// The object's folder inside the store (for example its name or id); empty for the root.
    pub prefix: String,
    /// How far back bookmarks and times are accepted, and what retention keeps (30 days).
    pub window: Duration,
    /// The clock that stamps commits and bounds the window.
    pub clock: Arc<dyn Clock>,
    /// Seal the open journal segment at this size (16 MiB).
    pub segment_max_bytes: u64,
    /// Seal the open journal segment when its first commit is this old (10 s).
    pub segment_max_age: Duration,
    /// Checkpoint the WAL once it holds this many frames (1,000).
    pub checkpoint_frames: u64,
    /// Upload and read attempts before an archive error is returned (5).
    pub attempts: u32,
    /// Take a snapshot at least this often while there are writes (24 h), besides whenever
    /// the log since the last snapshot outgrows the database.
    pub snapshot_interval: Duration,
    /// Merge segments older than this into larger ones (10 min: continuous archiving uploads
    /// a small segment about every half second while an object writes).
    pub merge_after: Duration,
    /// The largest merged segment (64 MiB).
    pub merge_max_bytes: u64,
    /// A merged segment never spans two periods of this length (1 day, in UTC), so
    /// retention can still delete old history period by period.
    pub merge_span: Duration,
    /// Retention deletes nothing younger than the window plus this grace (1 h).
    pub grace: Duration,
    /// `bookmark_for_time` accepts times this far in the future, as "now" (1 s).
    pub future_skew: Duration,
    /// The node this archiver runs on, when objects are leased (none: one writer is
    /// assumed, as with a local archive). With a node, opening takes the object's lease
    /// and every upload is fenced (see [`Node`]).
    pub node: Option<Arc<Node>>,
    /// Crash-test hook (none; set with `with_failpoint`, the `testing` feature).
    pub(crate) failpoint: Option<Failpoint>,
}

impl std::fmt::Debug for ArchiveConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveConfig")
            .field("store", &self.store.to_string())
            .field("prefix", &self.prefix)
            .field("window", &self.window)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl ArchiveConfig {
    /// Archives into `store` under `prefix`, with the default limits and the system clock.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: impl Into<String>) -> ArchiveConfig {
        ArchiveConfig {
            store,
            prefix: prefix.into(),
            window: Duration::from_secs(30 * 24 * 3600),
            clock: Arc::new(SystemClock),
            segment_max_bytes: 16 << 20,
            segment_max_age: Duration::from_secs(10),
            checkpoint_frames: 1000,
            attempts: 5,
            snapshot_interval: Duration::from_secs(24 * 3600),
            merge_after: Duration::from_secs(600),
            merge_max_bytes: 64 << 20,
            merge_span: Duration::from_secs(24 * 3600),
            grace: Duration::from_secs(3600),
            future_skew: Duration::from_secs(1),
            node: None,
            failpoint: None,
        }
    }

    /// The default: a local folder `archive/` next to the database file, with the file's name
    /// as prefix (`data/room.sqlite` archives into `data/archive/room.sqlite/`).
    pub fn local_for(db_path: impl AsRef<Path>) -> Result<ArchiveConfig> {
        let db_path = db_path.as_ref();
        let dir = db_path.parent().unwrap_or(Path::new(".")).join("archive");
        let name =
            db_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Ok(ArchiveConfig::new(local_store(&dir)?, name))
    }

    /// An in-memory archive (tests; lost with the process).
    pub fn in_memory() -> ArchiveConfig {
        ArchiveConfig::new(Arc::new(InMemory::new()), "")
    }

    /// Replaces the clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> ArchiveConfig {
        self.clock = clock;
        self
    }

    /// Opens objects under leases held by `node`.
    pub fn with_node(mut self, node: Arc<Node>) -> ArchiveConfig {
        self.node = Some(node);
        self
    }

    /// Replaces the window.
    pub fn with_window(mut self, window: Duration) -> ArchiveConfig {
        self.window = window;
        self
    }

    /// Installs a crash-test hook (a test double: the `testing` feature).
    #[cfg(feature = "testing")]
    pub fn with_failpoint(mut self, failpoint: Failpoint) -> ArchiveConfig {
        self.failpoint = Some(failpoint);
        self
    }

    pub(crate) fn window_ms(&self) -> i64 {
        i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX)
    }

    pub(crate) fn window_days(&self) -> u64 {
        self.window.as_secs() / 86_400
    }
}

/// A `LocalFileSystem` store rooted at `dir` (created if needed).
pub fn local_store(dir: &Path) -> Result<Arc<dyn ObjectStore>> {
    std::fs::create_dir_all(dir).map_err(crate::error::io_error("create", dir))?;
    let store = LocalFileSystem::new_with_prefix(dir).map_err(|source| {
        Error::Archive(ArchiveError::Store {
            action: "open",
            key: dir.display().to_string(),
            source,
        })
    })?;
    Ok(Arc::new(store))
}
