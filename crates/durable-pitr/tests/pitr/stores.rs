//! The same archive suite on every store: in-memory, the local file system, and (with the
//! `s3-tests` feature) S3 over real HTTP with signed requests, against an S3-compatible server
//! (s3s-fs) that the test starts on 127.0.0.1.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use durable_pitr::object_store::ObjectStore;
use durable_pitr::object_store::memory::InMemory;
use durable_pitr::{ArchiveError, Error, Failpoint};

use super::support::{Env, Rng, file_bytes, image, step};

/// Commits, uploads, compaction, rebuilds, a restore on open, the object moved to an empty
/// data directory, a re-upload after a crash between upload and local delete, and a refused
/// overwrite.
async fn suite(store: Arc<dyn ObjectStore>) {
    let env = Env::with_store(store.clone());
    let crash = Arc::new(AtomicBool::new(false));
    let c = crash.clone();
    let fp: Failpoint =
        Arc::new(move |p| p == "upload.before_local_delete" && c.swap(false, Ordering::SeqCst));
    let (db, archiver) = env.open_with(env.config().with_failpoint(fp.clone())).await.unwrap();
    let mut rng = Rng::new(21);
    let mut states = Vec::new();
    for i in 0..60 {
        env.clock.advance(1_500);
        step(&db, &mut rng);
        archiver.capture().unwrap();
        states.push((archiver.current_bookmark().unwrap(), image(&env.path)));
        if i % 20 == 19 {
            archiver.upload().await.unwrap();
            archiver.compact().await.unwrap();
        }
    }
    // A crash after an upload, before the local copy is deleted: the next upload finds the
    // same bytes already archived and counts it as done.
    archiver.seal().unwrap();
    crash.store(true, Ordering::SeqCst);
    let err = archiver.upload().await.unwrap_err();
    assert!(matches!(err, Error::Archive(ArchiveError::Injected(_))), "{err}");
    drop((archiver, db));
    let (db, archiver) = env.open_with(env.config()).await.unwrap();
    assert!(archiver.status().local_segments >= 1);
    archiver.upload().await.unwrap();
    assert_eq!(archiver.status().local_segments, 0);
    for (b, img) in states.iter().step_by(7) {
        assert_eq!(archiver.image_at(b).await.unwrap(), *img);
    }
    // Restore on open.
    let (target, expected) = states[25].clone();
    archiver.on_next_session_restore_bookmark(&target).unwrap();
    archiver.close().await.unwrap();
    drop(db);
    let (db, archiver) = env.open_with(env.config()).await.unwrap();
    assert_eq!(file_bytes(&env.path), expected);
    let latest = (archiver.current_bookmark().unwrap(), image(&env.path));
    archiver.close().await.unwrap();
    drop(db);
    // Another machine with an empty data directory opens it from the archive alone.
    let moved = Env::with_store(store);
    moved.clock.set(env.clock_now());
    let (_db, archiver) = moved.open().await;
    assert_eq!(image(&moved.path), latest.1);
    assert_eq!(archiver.current_bookmark().unwrap(), latest.0);
    assert_eq!(archiver.image_at(&states[40].0).await.unwrap(), states[40].1);
}

/// Leases and the shared log's fences rely on a create-only write being atomic: of several
/// racing creates of one key exactly one succeeds, and the key holds its bytes. (The local
/// S3 server's s3s-fs alone checks for the key, then writes and renames: seven of eight racing
/// creates succeeded and the last rename won, which let a fence overwrite a confirmed batch
/// of the shared log in the failover test.)
async fn racing_creates(store: Arc<dyn ObjectStore>) {
    use durable_pitr::object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
    for round in 0..24 {
        let key = durable_pitr::object_store::path::Path::from(format!("race/{round}"));
        let puts = (0..8u8).map(|writer| {
            let (store, key) = (store.clone(), key.clone());
            tokio::spawn(async move {
                let bytes = vec![writer; 256 * 1024];
                let mode = PutOptions::from(PutMode::Create);
                store.put_opts(&key, PutPayload::from(bytes), mode).await.map(|_| writer)
            })
        });
        let mut winners = Vec::new();
        for outcome in futures_util::future::join_all(puts).await {
            match outcome.unwrap() {
                Ok(writer) => winners.push(writer),
                Err(durable_pitr::object_store::Error::AlreadyExists { .. }) => {}
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: creates that succeeded: {winners:?}");
        let stored = store.get(&key).await.unwrap().bytes().await.unwrap();
        assert!(stored.iter().all(|&b| b == winners[0]), "round {round}: not the winner's bytes");
    }
}

/// The shared log deletes the batches it no longer needs several per request
/// (`delete_stream`, S3's `DeleteObjects`): the keys named go, a key already gone is no
/// error, the others stay.
async fn bulk_deletes(store: Arc<dyn ObjectStore>) {
    use durable_pitr::object_store::path::Path as StorePath;
    use durable_pitr::object_store::{ObjectStoreExt, PutPayload};
    use futures_util::{StreamExt, TryStreamExt};
    for i in 0..12 {
        let key = StorePath::from(format!("_log/n/i/00/{i:016x}"));
        store.put(&key, PutPayload::from(vec![i as u8; 64])).await.unwrap();
    }
    let doomed: Vec<StorePath> = (0..9)
        .map(|i| StorePath::from(format!("_log/n/i/00/{i:016x}")))
        .chain([StorePath::from("_log/n/i/00/never-written")])
        .collect();
    let deleted: Vec<_> = store
        .delete_stream(futures_util::stream::iter(doomed.into_iter().map(Ok)).boxed())
        .collect()
        .await;
    for outcome in &deleted {
        assert!(
            matches!(outcome, Ok(_) | Err(durable_pitr::object_store::Error::NotFound { .. })),
            "{outcome:?}"
        );
    }
    let left: Vec<String> = store
        .list(Some(&StorePath::from("_log")))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    let mut left = left;
    left.sort();
    let expected: Vec<String> = (9..12).map(|i| format!("_log/n/i/00/{i:016x}")).collect();
    assert_eq!(left, expected);
}

#[tokio::test]
async fn bulk_deletes_in_memory_and_on_the_local_file_system() {
    bulk_deletes(Arc::new(InMemory::new())).await;
    let dir = tempfile::tempdir().unwrap();
    bulk_deletes(durable_pitr::local_store(dir.path()).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_creates_on_the_local_file_system_let_exactly_one_through() {
    let dir = tempfile::tempdir().unwrap();
    racing_creates(durable_pitr::local_store(dir.path()).unwrap()).await;
}

#[tokio::test]
async fn in_memory_store() {
    suite(Arc::new(InMemory::new())).await;
}

#[tokio::test]
async fn local_file_system_store() {
    let dir = tempfile::tempdir().unwrap();
    suite(durable_pitr::local_store(dir.path()).unwrap()).await;
}

#[tokio::test]
async fn the_default_archive_is_a_folder_next_to_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("room.sqlite");
    let config = durable_pitr::ArchiveConfig::local_for(&path).unwrap();
    let (db, archiver) =
        durable_pitr::Archiver::open(&path, durable_sql::Options::default(), config).await.unwrap();
    db.exec("CREATE TABLE t(x)", &[]).unwrap();
    db.commit().unwrap();
    archiver.close().await.unwrap();
    let segs = std::fs::read_dir(dir.path().join("archive/room.sqlite/seg")).unwrap().count();
    assert_eq!(segs, 1);
    assert!(dir.path().join("archive/room.sqlite/meta").exists());
}

#[tokio::test]
async fn an_archive_of_another_history_is_refused() {
    let shared: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let a = Env::with_store(shared.clone());
    drop(a.open().await);
    // B has a history of its own, then is pointed at A's archive folder by mistake.
    let b = Env::new();
    drop(b.open().await);
    let mut wrong = b.config();
    wrong.store = shared;
    let err = b.open_with(wrong).await.unwrap_err();
    assert!(matches!(err, Error::Archive(ArchiveError::OtherHistory { .. })), "{err}");
    // B's own archive still opens.
    drop(b.open().await);
}

#[cfg(feature = "s3-tests")]
mod s3 {
    use std::sync::Arc;

    use durable_pitr::object_store::ObjectStore;
    use durable_pitr::object_store::aws::AmazonS3Builder;

    thread_local! {
        /// The port of the last server this thread started.
        static PORT: std::cell::Cell<u16> = const { std::cell::Cell::new(0) };
    }

    /// Starts s3s-fs on 127.0.0.1 (a random port) over a temporary folder with one bucket,
    /// with signed requests required; returns a client for it.
    async fn server() -> (Arc<dyn ObjectStore>, durable_s3_server::S3Server, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let server = durable_s3_server::S3Server::start(dir.path()).await.unwrap();
        server.create_bucket("archive").unwrap();
        PORT.with(|p| p.set(server.addr().port()));
        let store = AmazonS3Builder::new()
            .with_endpoint(server.endpoint())
            .with_allow_http(true)
            .with_bucket_name("archive")
            .with_region("us-east-1")
            .with_access_key_id(durable_s3_server::ACCESS_KEY)
            .with_secret_access_key(durable_s3_server::SECRET_KEY)
            .build()
            .unwrap();
        (Arc::new(store), server, dir)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn s3_store() {
        let (store, _server, _dir) = server().await;
        super::suite(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bulk_deletes() {
        let (store, _server, _dir) = server().await;
        super::bulk_deletes(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_creates_of_one_key_let_exactly_one_through() {
        let (store, _server, _dir) = server().await;
        super::racing_creates(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wrongly_signed_requests_are_refused() {
        use durable_pitr::object_store::ObjectStoreExt;
        let (store, _server, _dir) = server().await;
        let key = durable_pitr::object_store::path::Path::from("probe");
        store.put(&key, b"x".to_vec().into()).await.unwrap();
        let port = PORT.with(|p| p.get());
        let wrong = AmazonS3Builder::new()
            .with_endpoint(format!("http://127.0.0.1:{port}"))
            .with_allow_http(true)
            .with_bucket_name("archive")
            .with_region("us-east-1")
            .with_access_key_id(durable_s3_server::ACCESS_KEY)
            .with_secret_access_key("not-the-secret")
            .build()
            .unwrap();
        assert!(wrong.get(&key).await.is_err());
        assert!(wrong.put(&key, b"y".to_vec().into()).await.is_err());
    }
}
