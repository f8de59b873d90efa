//! Faults through the facade and the object runtime (issue 10, "Faults"): a database at its
//! size limit (spec sqlite-storage section 5.2, critical errors), an archive target that is
//! full or failing (a fault-injecting object store), and a failing legacy backend.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use durable_storage::backend::cache::CacheOptions;
use durable_storage::backend::{FaultyBackend, MemoryBackend, Op as Call};

use durable_storage::pitr::object_store::memory::InMemory;
use durable_storage::{Actor, Archive, ArchiveStore, NamespaceOptions, Object, SqlValue, Storage};

use crate::faulty_store::FaultyStore;
use crate::support::{Dir, rt};

const FULL: &str = "database or disk is full: SQLITE_FULL";

/// Counts its instances: a reset object gets a new one.
struct Counted;

impl Actor for Counted {}

fn counted(instances: &Arc<AtomicUsize>) -> impl Fn(&Storage) -> Counted + Send + Sync + 'static {
    let instances = instances.clone();
    move |_| {
        instances.fetch_add(1, Ordering::SeqCst);
        Counted
    }
}

fn tiny(archive: Archive) -> NamespaceOptions {
    let mut options = NamespaceOptions::new().archive(archive);
    options.sql.limits.max_database_size = 64 * 1024;
    options
}

fn rows(s: &Storage) -> Vec<String> {
    let db = s.sql().unwrap();
    let cursor = db.exec("SELECT tag FROM t WHERE tag NOT LIKE 'fill%' ORDER BY id", &[]).unwrap();
    cursor.map(|r| r.unwrap().get::<String>("tag").unwrap()).collect()
}

async fn database_at_its_size_limit(options: NamespaceOptions) {
    let dir = Dir::new();
    let ns = dir.open(options);
    let instances = Arc::new(AtomicUsize::new(0));
    let object = ns.object("full", counted(&instances)).unwrap();
    object
        .call(|ctx| async move {
            let db = ctx.storage().sql().unwrap();
            db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, tag TEXT, v BLOB)", &[]).unwrap();
            db.exec("INSERT INTO t(tag) VALUES ('one'), ('two')", &[]).unwrap();
            ctx.storage().put("kv", &1i64);
        })
        .await
        .unwrap();
    // One turn: a small write, then blobs until SQLite refuses.
    let outcome = object
        .call(|ctx| async move {
            let db = ctx.storage().sql().unwrap();
            db.exec("INSERT INTO t(tag) VALUES ('lost')", &[]).unwrap();
            ctx.storage().put("kv", &2i64);
            for i in 0..1000 {
                let blob = SqlValue::Blob(vec![i as u8; 8 * 1024]);
                if let Err(e) = db.exec("INSERT INTO t(tag, v) VALUES ('fill', ?)", &[blob]) {
                    // Every later write, and every KV read, gets the same error.
                    let again = db.exec("INSERT INTO t(tag) VALUES ('after')", &[]).unwrap_err();
                    assert_eq!(again.to_string(), FULL);
                    let read = ctx.storage().get::<i64>("kv").await.unwrap_err();
                    assert_eq!(read.to_string(), FULL);
                    let listed = ctx.storage().list::<i64>(&Default::default()).await.unwrap_err();
                    assert_eq!(listed.to_string(), FULL);
                    return (i, e.to_string(), again.to_string());
                }
            }
            panic!("the database never filled up");
        })
        .await;
    let err = outcome.expect_err("the call fails: the output gate is broken").to_string();
    assert_eq!(err, FULL);
    // The next call runs on a fresh instance, which sees everything committed before and
    // nothing of the failed turn.
    let (tags, kv, written) = object
        .call(|ctx| async move {
            let s = ctx.storage();
            let tags = rows(s);
            let kv = s.get::<i64>("kv").await.unwrap();
            let written = s.sql().unwrap().exec("INSERT INTO t(tag) VALUES ('three')", &[]);
            (tags, kv, written.map(|_| ()).map_err(|e| e.to_string()))
        })
        .await
        .unwrap();
    assert_eq!(tags, ["one", "two"]);
    assert_eq!(kv, Some(1));
    assert_eq!(written, Ok(()), "a small write fits again after the rollback");
    assert_eq!(instances.load(Ordering::SeqCst), 2, "the object was reset once");
    let tags = object.call(|ctx| async move { rows(ctx.storage()) }).await.unwrap();
    assert_eq!(tags, ["one", "two", "three"]);
    drop(object);
    crate::support::eventually("the object closes", || ns.open_names().is_empty()).await;
    assert_eq!(rows(&ns.storage("full").unwrap()), ["one", "two", "three"]);
}

#[test]
fn a_full_database_fails_the_call_resets_the_object_and_keeps_what_was_committed() {
    rt().block_on(database_at_its_size_limit(tiny(Archive::Off)));
}

#[test]
fn a_full_archived_database_fails_the_call_resets_the_object_and_keeps_what_was_committed() {
    rt().block_on(database_at_its_size_limit(tiny(Archive::Local)));
}

/// An archive in `store`, one folder per object.
fn archive_in(store: &Arc<FaultyStore>) -> Archive {
    Archive::Store(
        ArchiveStore::new(store.clone(), "")
            .with_config(|config| config.segment_max_age = Duration::ZERO),
    )
}

async fn add(object: &durable_storage::ObjectHandle<Counted>, n: i64) {
    object
        .call(move |ctx| async move {
            let db = ctx.storage().sql().unwrap();
            db.exec("CREATE TABLE IF NOT EXISTS notes(n INTEGER)", &[]).unwrap();
            db.exec("INSERT INTO notes VALUES (?)", &[n.into()]).unwrap();
        })
        .await
        .unwrap();
}

fn notes(s: &Storage) -> Vec<i64> {
    let db = s.sql().unwrap();
    let cursor = db.exec("SELECT n FROM notes ORDER BY n", &[]).unwrap();
    cursor.map(|r| r.unwrap().get::<i64>("n").unwrap()).collect()
}

#[test]
fn a_full_archive_target_fails_maintenance_but_never_a_commit() {
    rt().block_on(async {
        let store = FaultyStore::new(Arc::new(InMemory::new()));
        let dir = Dir::new();
        let ns = dir.open(NamespaceOptions::new().archive(archive_in(&store)));
        let object = ns.object("doc", counted(&Arc::new(AtomicUsize::new(0)))).unwrap();
        add(&object, 0).await;
        let handle = ns.storage("doc").unwrap();
        let mut bookmarks = vec![handle.current_bookmark().unwrap()];
        store.fill();
        for n in 1..=20 {
            add(&object, n).await;
            bookmarks.push(handle.current_bookmark().unwrap());
        }
        // Maintenance (which seals first: segments are due at once here) reports the full
        // target.
        let err = handle.maintain_archive().unwrap_err();
        assert!(store.injected() > 0);
        assert!(handle.archive_status().unwrap().local_segments >= 1);
        let message = err.to_string();
        assert!(
            message.starts_with("point-in-time recovery: object store: put ")
                && message.contains("No space left on device"),
            "{message}"
        );
        // Every commit is still there, and commits go on.
        add(&object, 21).await;
        assert_eq!(notes(&handle), (0..=21).collect::<Vec<_>>());
        // The store heals: the backlog uploads and every bookmark still restores.
        store.heal();
        handle.maintain_archive().unwrap();
        assert_eq!(handle.archive_status().unwrap().local_segments, 0);
        let target = bookmarks[5].clone();
        handle.on_next_session_restore_bookmark(&target).unwrap();
        drop(handle);
        drop(object);
        crate::support::eventually("the object closes", || ns.open_names().is_empty()).await;
        assert_eq!(notes(&ns.storage("doc").unwrap()), (0..=5).collect::<Vec<_>>());
    });
}

#[test]
fn a_failing_legacy_read_fails_only_that_call_and_does_not_reset_the_object() {
    rt().block_on(async {
        let backend = Arc::new(FaultyBackend::new(MemoryBackend::new()));
        let instances = Arc::new(AtomicUsize::new(0));
        let b = backend.clone();
        let object = Object::spawn(
            move || Ok(Storage::kv_backed(b.clone(), CacheOptions::default())),
            counted(&instances),
        );
        object
            .call(|ctx| async move { ctx.storage().put("a", &1i64).await })
            .await
            .unwrap()
            .unwrap();
        backend.fail_when(|call| matches!(call.op, Call::Get | Call::List));
        let err = object
            .call(|ctx| async move { ctx.storage().get::<i64>("missing").await })
            .await
            .unwrap()
            .unwrap_err();
        assert!(!err.to_string().is_empty());
        let listed = object
            .call(|ctx| async move {
                ctx.storage().list::<i64>(&Default::default()).await.map(|m| m.len())
            })
            .await
            .unwrap();
        assert!(listed.is_err(), "{listed:?}");
        // Writes and cached reads go on; no reset.
        let cached = object
            .call(|ctx| async move {
                ctx.storage().put("b", &2i64);
                ctx.storage().get::<i64>("a").await
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(cached, Some(1));
        backend.heal();
        let got = object
            .call(|ctx| async move { ctx.storage().get::<i64>("b").await })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, Some(2));
        assert_eq!(instances.load(Ordering::SeqCst), 1, "never reset");
    });
}
