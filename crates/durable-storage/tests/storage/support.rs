//! Test helpers: namespaces in temporary folders, fast options, a multi-threaded runtime.

use std::time::Duration;

use durable_storage::sql::Durability;
use durable_storage::{ManualClock, Namespace, NamespaceOptions};

/// A fixed "now" for manual clocks (2027-01-15).
pub const T0: i64 = 1_800_000_000_000;
pub const MINUTE: i64 = 60_000;
pub const HOUR: i64 = 3_600_000;

/// A temporary folder for one namespace.
pub struct Dir {
    pub dir: tempfile::TempDir,
}

impl Dir {
    pub fn new() -> Dir {
        Dir { dir: tempfile::tempdir().expect("temp dir") }
    }

    pub fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("ns")
    }

    pub fn open(&self, options: NamespaceOptions) -> Namespace {
        Namespace::open(self.path(), options).expect("open namespace")
    }
}

/// Options without fsync (tests need no power-loss safety), on `clock`.
pub fn fast(clock: &ManualClock) -> NamespaceOptions {
    let mut options = NamespaceOptions::new().clock(clock.clone());
    options.sql.durability = Durability::Off;
    options
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Waits (up to 5 s) until `f` holds.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// The result of a storage call that needs no I/O.
pub fn now<T>(op: durable_storage::Op<T>) -> T {
    op.now().expect("no I/O needed").expect("storage call")
}

/// An event on `object` that adds `n` to its `notes` table; the call's error as text.
pub async fn add_note<A: durable_storage::Actor>(
    object: &durable_storage::ObjectHandle<A>,
    n: i64,
) -> Result<(), String> {
    object
        .call(move |ctx| async move {
            let db = ctx.storage().sql()?;
            db.exec("CREATE TABLE IF NOT EXISTS notes(n INTEGER)", &[])?;
            db.exec("INSERT INTO notes VALUES (?)", &[n.into()])?;
            Ok::<_, durable_storage::txn::Error>(())
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}
