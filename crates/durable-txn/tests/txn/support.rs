//! Test helpers: storage in temporary folders, a commit counter, and a tiny actor.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use durable_sql::{CommitEvent, Options};
use durable_txn::{Actor, Object, Storage};

/// Storage in its own temporary folder.
pub struct Dir {
    pub dir: tempfile::TempDir,
}

impl Dir {
    pub fn new() -> Dir {
        Dir { dir: tempfile::tempdir().expect("temp dir") }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("object.sqlite")
    }

    pub fn open(&self) -> Storage {
        Storage::open(self.path(), Options::default()).expect("open storage")
    }

    /// A closure that opens this folder's storage (an object runtime's opener).
    pub fn opener(&self) -> impl Fn() -> durable_txn::Result<Storage> + Send + Sync + 'static {
        let path = self.path();
        move || Storage::open(&path, Options::default())
    }
}

/// Counts the commits of `storage`'s database (a subscriber of its commit pipeline).
pub fn count_commits(storage: &Storage) -> Arc<AtomicUsize> {
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    storage.sql().unwrap().subscribe(Arc::new(move |event: &CommitEvent<'_>| {
        if let CommitEvent::Committed { .. } = event {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    }));
    count
}

/// An actor with no state and the default (empty) alarm handler.
pub struct Plain;

impl Actor for Plain {}

/// Starts a `Plain` object over `dir`.
pub fn plain(dir: &Dir) -> Object<Plain> {
    Object::spawn(dir.opener(), |_| Plain)
}

/// Reads `key` as an i64 through `storage`, outside any runtime.
pub fn read_i64(storage: &Storage, key: &str) -> Option<i64> {
    storage.get::<i64>(key).now().expect("ready").expect("get")
}
