//! `Replication::Replicated`: an event's results are released only once its commits are in
//! the archive store, so what a caller saw survives the loss of the machine; a store that
//! does not answer fails the waiting results after the timeout, and loses nothing released.

use std::sync::Arc;
use std::time::{Duration, Instant};

use durable_storage::pitr::object_store::ObjectStore;
use durable_storage::pitr::object_store::memory::InMemory;
use durable_storage::pitr::object_store::throttle::{ThrottleConfig, ThrottledStore};
use durable_storage::{
    Actor, Archive, ArchiveStore, Error, Namespace, NamespaceOptions, ObjectHandle, Replication,
};

use crate::faulty_store::FaultyStore;
use crate::support::Dir;

struct Doc;
impl Actor for Doc {}

fn options(store: Arc<dyn ObjectStore>, replication: Replication) -> NamespaceOptions {
    NamespaceOptions::new()
        .archive(Archive::Store(ArchiveStore::new(store, "ns")))
        // Local mode would wait this long: only `Replicated` uploads at once.
        .archive_lag(Duration::from_secs(60))
        .replication(replication)
        .replication_timeout(Duration::from_millis(800))
}

async fn add(object: &ObjectHandle<Doc>, n: i64) -> Result<(), String> {
    crate::support::add_note(object, n).await
}

/// The notes the archive store holds for `name` (read-only, as another machine would).
fn archived(ns: &Namespace, dir: &Dir, name: &str) -> Vec<i64> {
    let image = match ns.archived_image(name, None) {
        Ok((_, image)) => image,
        Err(Error::Pitr(_)) => return Vec::new(),
        Err(e) => panic!("{e}"),
    };
    let file = dir.path().join("copy.sqlite");
    std::fs::write(&file, image).unwrap();
    let db = durable_storage::Database::open(&file, Default::default()).unwrap();
    let out = match db.exec("SELECT n FROM notes ORDER BY n", &[]) {
        Ok(cursor) => cursor.map(|r| r.unwrap().get::<i64>("n").unwrap()).collect(),
        Err(_) => Vec::new(),
    };
    drop(db);
    std::fs::remove_file(&file).unwrap();
    out
}

#[test]
fn replicated_results_wait_for_the_store_and_survive_the_machine() {
    crate::support::rt().block_on(async {
        let put = Duration::from_millis(150);
        let config = ThrottleConfig { wait_put_per_call: put, ..Default::default() };
        let store: Arc<dyn ObjectStore> = Arc::new(ThrottledStore::new(InMemory::new(), config));
        let dir = Dir::new();
        let ns = dir.open(options(store.clone(), Replication::Replicated));
        let doc = ns.object("doc", |_| Doc).unwrap();
        for n in 1..=3 {
            let started = Instant::now();
            add(&doc, n).await.unwrap();
            let took = started.elapsed();
            assert!(took >= put, "write {n} released after {took:?}, before the store's put");
            // Released means in the store: another machine sees it now.
            assert_eq!(archived(&ns, &dir, "doc"), (1..=n).collect::<Vec<_>>());
        }
        drop(doc);
        ns.close().await.unwrap();
        // Local mode releases at the local fsync; the store follows later.
        let dir = Dir::new();
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let ns = dir.open(options(store, Replication::Local));
        let doc = ns.object("doc", |_| Doc).unwrap();
        add(&doc, 1).await.unwrap();
        assert_eq!(archived(&ns, &dir, "doc"), Vec::<i64>::new(), "not uploaded yet");
        drop(doc);
        ns.close().await.unwrap();
    });
}

/// A bookmark call commits the event's writes and syncs them before naming the state; the
/// event's result still waits for the store. It used to be released at the local sync: the
/// failover test's zombie phase lost two acknowledged writes whose events took bookmarks.
#[test]
fn a_result_that_took_a_bookmark_waits_for_the_store_too() {
    crate::support::rt().block_on(async {
        let put = Duration::from_millis(150);
        let config = ThrottleConfig { wait_put_per_call: put, ..Default::default() };
        let store: Arc<dyn ObjectStore> = Arc::new(ThrottledStore::new(InMemory::new(), config));
        let dir = Dir::new();
        let ns = dir.open(options(store, Replication::Replicated));
        let doc = ns.object("doc", |_| Doc).unwrap();
        for n in 1..=3i64 {
            let started = Instant::now();
            let bookmark = doc
                .call(move |ctx| async move {
                    let db = ctx.storage().sql()?;
                    db.exec("CREATE TABLE IF NOT EXISTS notes(n INTEGER)", &[])?;
                    db.exec("INSERT INTO notes VALUES (?)", &[n.into()])?;
                    ctx.storage().current_bookmark().await
                })
                .await
                .unwrap()
                .unwrap();
            let took = started.elapsed();
            assert!(took >= put, "write {n} released after {took:?}, before the store's put");
            assert_eq!(archived(&ns, &dir, "doc"), (1..=n).collect::<Vec<_>>());
            // The bookmark names that state, in the store.
            let (_, image) = ns.archived_image("doc", Some(&bookmark)).unwrap();
            let file = dir.path().join("at.sqlite");
            std::fs::write(&file, image).unwrap();
            let db = durable_storage::Database::open(&file, Default::default()).unwrap();
            let count: i64 = db
                .exec("SELECT count(*) AS c FROM notes", &[])
                .unwrap()
                .one::<durable_storage::Row>()
                .unwrap()
                .get("c")
                .unwrap();
            assert_eq!(count, n);
            drop(db);
            std::fs::remove_file(&file).unwrap();
        }
        // Writes that did not ask to be confirmed, then a bookmark: the bookmark names
        // their state, so it waits for the store like a confirmed write.
        let unconfirmed = durable_storage::PutOptions::new().allow_unconfirmed(true);
        let started = Instant::now();
        let bookmark = doc
            .call(move |ctx| async move {
                ctx.storage().put_with("quick", &4i64, unconfirmed);
                ctx.storage().current_bookmark().await
            })
            .await
            .unwrap()
            .unwrap();
        let took = started.elapsed();
        assert!(took >= put, "the bookmark went out after {took:?}, before the store's put");
        assert!(ns.archived_image("doc", Some(&bookmark)).is_ok(), "{bookmark} not in the store");
        drop(doc);
        ns.close().await.unwrap();
    });
}

#[test]
fn an_unreachable_store_fails_replicated_results_after_the_timeout_and_loses_nothing() {
    crate::support::rt().block_on(async {
        let faulty = FaultyStore::new(Arc::new(InMemory::new()));
        let dir = Dir::new();
        let ns = dir.open(options(faulty.clone(), Replication::Replicated));
        let doc = ns.object("doc", |_| Doc).unwrap();
        add(&doc, 1).await.unwrap();
        faulty.fill();
        let started = Instant::now();
        let err = add(&doc, 2).await.unwrap_err();
        let took = started.elapsed();
        assert!(err.contains("did not confirm the write within"), "{err}");
        assert!(took >= Duration::from_millis(800) && took < Duration::from_secs(10), "{took:?}");
        // The store comes back: the object (reset by the failure) serves again, and every
        // released write is in the store.
        faulty.heal();
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Err(e) = add(&doc, 3).await {
            assert!(Instant::now() < deadline, "never recovered: {e}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let seen = archived(&ns, &dir, "doc");
        assert!(seen.contains(&1) && seen.contains(&3), "{seen:?}");
        drop(doc);
        ns.close().await.unwrap();
    });
}
