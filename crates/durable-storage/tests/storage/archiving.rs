//! Continuous archiving: an archived object's history reaches the archive store by itself,
//! within the namespace's lag bound, so that a second machine opening the object from the
//! archive alone sees every commit; closing (or dropping) the namespace uploads what is left
//! or says what is not; compaction and retention run in the background.

use std::sync::Arc;
use std::time::{Duration, Instant};

use durable_storage::pitr::object_store::ObjectStore;
use durable_storage::pitr::object_store::memory::InMemory;
use durable_storage::pitr::object_store::throttle::{ThrottleConfig, ThrottledStore};
use durable_storage::{Actor, Archive, ArchiveStore, Error, Namespace, NamespaceOptions};

use crate::faulty_store::FaultyStore;
use crate::support::Dir;

struct Doc;
impl Actor for Doc {}

fn options(store: Arc<dyn ObjectStore>, lag: Duration) -> NamespaceOptions {
    NamespaceOptions::new().archive(Archive::Store(ArchiveStore::new(store, "ns"))).archive_lag(lag)
}

async fn add(object: &durable_storage::ObjectHandle<Doc>, n: i64) {
    object
        .call(move |ctx| async move {
            let db = ctx.storage().sql().unwrap();
            db.exec("CREATE TABLE IF NOT EXISTS notes(n INTEGER)", &[]).unwrap();
            db.exec("INSERT INTO notes VALUES (?)", &[n.into()]).unwrap();
        })
        .await
        .unwrap();
}

/// The notes of `name` as another machine sees them in the archive (read-only: the object
/// may still be owned by the first one).
fn from_the_archive_alone(store: Arc<dyn ObjectStore>, name: &str) -> Vec<i64> {
    let dir = Dir::new();
    let ns = dir.open(options(store, Duration::from_secs(60)));
    let image = match ns.archived_image(name, None) {
        Ok((_, image)) => image,
        Err(Error::Pitr(durable_storage::pitr::Error::Archive(
            durable_storage::pitr::ArchiveError::Missing { .. },
        ))) => return Vec::new(),
        Err(e) => panic!("{e}"),
    };
    let file = dir.path().join("copy.sqlite");
    std::fs::write(&file, image).unwrap();
    let db = durable_storage::Database::open(&file, Default::default()).unwrap();
    let Ok(cursor) = db.exec("SELECT n FROM notes ORDER BY n", &[]) else {
        return Vec::new();
    };
    cursor.map(|r| r.unwrap().get::<i64>("n").unwrap()).collect()
}

#[test]
fn history_reaches_the_archive_within_the_lag_without_anyone_asking() {
    crate::support::rt().block_on(async {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let dir = Dir::new();
        let lag = Duration::from_millis(300);
        let ns = dir.open(options(store.clone(), lag));
        let object = ns.object("doc", |_| Doc).unwrap();
        let mut worst = Duration::ZERO;
        for n in 0..10 {
            add(&object, n).await;
            // Written, released, and in the archive store within the bound.
            let written = Instant::now();
            loop {
                let status = &ns.archive_status()[0].1;
                if status.pending == 0 {
                    break;
                }
                assert!(written.elapsed() < lag * 3, "commit {n} still not uploaded: {status:?}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            worst = worst.max(written.elapsed());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(worst <= lag + Duration::from_millis(250), "worst lag {worst:?} over {lag:?}");
        // The machine is lost now (nothing closed, nothing pruned): another one opening
        // the object from the archive sees every commit.
        let store2 = store.clone();
        let seen = tokio::task::spawn_blocking(move || from_the_archive_alone(store2, "doc"))
            .await
            .unwrap();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        drop(object);
        ns.close().await.unwrap();
    });
}

#[test]
fn close_uploads_the_rest_or_names_what_is_left_and_loses_nothing() {
    crate::support::rt().block_on(async {
        let faulty = FaultyStore::new(Arc::new(InMemory::new()));
        let store: Arc<dyn ObjectStore> = faulty.clone();
        let dir = Dir::new();
        // A lag longer than the test: only closing uploads.
        let slow = options(store.clone(), Duration::from_secs(600));
        let ns = dir.open(slow.clone());
        let object = ns.object("doc", |_| Doc).unwrap();
        add(&object, 1).await;
        drop(object);
        ns.close().await.unwrap();
        assert_eq!(from_the_archive_alone(store.clone(), "doc"), [1]);

        let ns = dir.open(slow.clone());
        let object = ns.object("doc", |_| Doc).unwrap();
        add(&object, 2).await;
        faulty.fill();
        drop(object);
        let err = ns.close().await.unwrap_err();
        assert!(matches!(&err, Error::NotArchived { objects } if objects[0].0 == "doc"), "{err}");
        assert!(err.to_string().contains("No space left on device"), "{err}");
        // The store heals; the next open uploads what waited in the journal.
        faulty.heal();
        let ns = dir.open(options(store.clone(), Duration::from_millis(100)));
        let handle = ns.storage("doc").unwrap();
        crate::support::eventually("the backlog uploads", || {
            handle.archive_status().unwrap().pending == 0
        })
        .await;
        drop(handle);
        ns.close().await.unwrap();
        assert_eq!(from_the_archive_alone(store, "doc"), [1, 2]);
    });
}

#[test]
fn dropping_the_namespace_waits_for_the_last_uploads() {
    // Slow uploads: had the drop not waited, the archive would still be empty below.
    let config =
        ThrottleConfig { wait_put_per_call: Duration::from_millis(300), ..Default::default() };
    let store: Arc<dyn ObjectStore> = Arc::new(ThrottledStore::new(InMemory::new(), config));
    let dir = Dir::new();
    {
        let ns: Namespace = dir.open(options(store.clone(), Duration::from_secs(600)));
        let s = ns.storage("doc").unwrap();
        let db = s.sql().unwrap();
        db.exec("CREATE TABLE notes(n INTEGER)", &[]).unwrap();
        db.exec("INSERT INTO notes VALUES (7)", &[]).unwrap();
        s.sync().wait().unwrap();
        assert!(s.archive_status().unwrap().pending > 0, "nothing uploaded yet");
        // Handles and namespace dropped, as a program that exits does.
    }
    assert_eq!(from_the_archive_alone(store, "doc"), [7]);
}

#[test]
fn an_object_opened_for_less_than_the_maintenance_interval_is_compacted_too() {
    // Objects that move between nodes (or restart) more often than `archive_maintenance`
    // get maintained at their first upload after opening; otherwise their history would
    // never get a snapshot, and every opening elsewhere would replay all of it.
    crate::support::rt().block_on(async {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let dir = Dir::new();
        let mut opts = options(store.clone(), Duration::from_millis(20));
        opts.archive_maintenance = Duration::from_secs(3600);
        // A history that outgrows the small database, uploaded in a first session.
        let ns = dir.open(opts.clone());
        let object = ns.object("doc", |_| Doc).unwrap();
        for n in 0..40 {
            add(&object, n).await;
        }
        drop(object);
        ns.close().await.unwrap();
        // A second session, far shorter than the maintenance interval: its first upload
        // takes the snapshot.
        let ns = dir.open(opts);
        let object = ns.object("doc", |_| Doc).unwrap();
        add(&object, 40).await;
        crate::support::eventually("a snapshot soon after opening", || {
            ns.archive_status()[0].1.snapshots >= 1
        })
        .await;
        drop(object);
        ns.close().await.unwrap();
    });
}

#[test]
fn compaction_and_retention_run_in_the_background() {
    crate::support::rt().block_on(async {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let dir = Dir::new();
        let mut opts = options(store.clone(), Duration::from_millis(20));
        opts.archive_maintenance = Duration::from_millis(50);
        let ns = dir.open(opts);
        let object = ns.object("doc", |_| Doc).unwrap();
        for n in 0..40 {
            add(&object, n).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The log since the start outgrew the small database: a snapshot was taken.
        crate::support::eventually("a background snapshot", || {
            ns.archive_status()[0].1.snapshots >= 1
        })
        .await;
        drop(object);
        ns.close().await.unwrap();
    });
}

/// `Local` against a store that fails: events are confirmed at the local fsync as before,
/// the status shows the backlog (commits, seconds, the error), and once the store heals the
/// backlog goes up by itself, nobody asking. And one upload carries many commits: commits
/// made back to back go up in a few PUTs, not one each.
#[test]
fn under_local_a_failing_store_holds_nothing_up_and_the_backlog_uploads_by_itself() {
    crate::support::rt().block_on(async {
        let faulty = FaultyStore::new(Arc::new(InMemory::new()));
        let store: Arc<dyn ObjectStore> = faulty.clone();
        let dir = Dir::new();
        let ns = dir.open(options(store.clone(), Duration::from_millis(200)));
        let object = ns.object("doc", |_| Doc).unwrap();
        add(&object, 0).await;
        let pending = || ns.archive_status()[0].1.pending;
        crate::support::eventually("the first commit uploads", || pending() == 0).await;
        // Maintenance is due at the first upload; let it finish before counting.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = faulty.put_attempts();
        for n in 1..=20 {
            add(&object, n).await;
        }
        crate::support::eventually("the 20 commits upload", || pending() == 0).await;
        let puts = faulty.put_attempts() - before;
        assert!(puts <= 5, "{puts} PUTs for 20 commits made back to back");

        faulty.fill();
        let failing = Instant::now();
        for n in 21..=40 {
            let started = Instant::now();
            add(&object, n).await;
            let took = started.elapsed();
            assert!(took < Duration::from_millis(500), "commit {n} waited {took:?} for the store");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let status = ns.archive_status()[0].1.clone();
        assert_eq!(status.pending, 20, "{status:?}");
        let oldest = failing.elapsed().as_millis() as u64;
        assert!(status.lag_ms >= 300 && status.lag_ms <= oldest, "{status:?} after {oldest} ms");
        let error = status.last_error.clone().unwrap_or_default();
        assert!(error.contains("No space left on device"), "{status:?}");
        faulty.heal();
        crate::support::eventually("the backlog uploads by itself", || pending() == 0).await;
        assert_eq!(ns.archive_status()[0].1.last_error, None);
        let store2 = store.clone();
        let seen = tokio::task::spawn_blocking(move || from_the_archive_alone(store2, "doc"))
            .await
            .unwrap();
        assert_eq!(seen, (0..=40).collect::<Vec<_>>());
        drop(object);
        ns.close().await.unwrap();
    });
}
