//! Archives in S3 through the facade, the way users run them: a `Namespace` over an S3 store
//! (s3s-fs on 127.0.0.1, signed requests), used from plain threads, from a current-thread
//! runtime and from object events on a multi-threaded one. The S3 client needs a tokio
//! reactor; the namespace's archive runtime provides it wherever the caller is.

use std::sync::Arc;

use durable_s3_server::{ACCESS_KEY, S3Server, SECRET_KEY};
use durable_storage::pitr::object_store::ObjectStore;
use durable_storage::pitr::object_store::aws::AmazonS3Builder;
use durable_storage::{Actor, Archive, ArchiveStore, NamespaceOptions};

use crate::support::Dir;

struct Server {
    server: S3Server,
    runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

/// A server on a runtime of its own, so the code under test may run with or without one.
fn server() -> Server {
    let runtime = crate::support::rt();
    let dir = tempfile::tempdir().unwrap();
    let server = runtime.block_on(S3Server::start(dir.path())).unwrap();
    server.create_bucket("archive").unwrap();
    Server { server, runtime, _dir: dir }
}

impl Server {
    fn store(&self) -> Arc<dyn ObjectStore> {
        let store = AmazonS3Builder::new()
            .with_endpoint(self.server.endpoint())
            .with_allow_http(true)
            .with_bucket_name("archive")
            .with_region("us-east-1")
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .build()
            .unwrap();
        Arc::new(store)
    }

    fn options(&self, prefix: &str) -> NamespaceOptions {
        let archive = Archive::Store(ArchiveStore::new(self.store(), prefix));
        NamespaceOptions::new().archive(archive)
    }
}

fn count(s: &durable_storage::Storage) -> i64 {
    let db = s.sql().unwrap();
    db.exec("SELECT count(*) AS n FROM t", &[])
        .unwrap()
        .one::<durable_storage::Row>()
        .unwrap()
        .get("n")
        .unwrap()
}

#[test]
fn a_namespace_archives_to_s3_from_plain_threads_and_a_new_machine_reads_it() {
    let s3 = server();
    let first = Dir::new();
    {
        let ns = first.open(s3.options("ns"));
        let room = ns.storage("room").unwrap();
        room.sql().unwrap().exec("CREATE TABLE t(x)", &[]).unwrap();
        room.sql().unwrap().exec("INSERT INTO t VALUES (1), (2)", &[]).unwrap();
        room.sync().wait().unwrap();
        let bookmark = room.current_bookmark().unwrap();
        assert_eq!(bookmark.len(), 55);
        // Closing seals the history; the next maintenance uploads it.
        drop(room);
        let room = ns.storage("room").unwrap();
        room.maintain_archive().unwrap();
        assert!(room.archive_status().unwrap().archived_segments >= 1);
    }
    // Nothing of the first folder: the archive alone.
    let second = Dir::new();
    let ns = second.open(s3.options("ns"));
    assert_eq!(count(&ns.storage("room").unwrap()), 2);
    drop(s3.runtime);
}

struct Notes;
impl Actor for Notes {}

#[test]
fn object_events_read_bookmarks_from_s3_on_any_runtime() {
    let s3 = server();
    for flavor in ["current_thread", "multi_thread"] {
        let dir = Dir::new();
        let runtime = match flavor {
            "current_thread" => tokio::runtime::Builder::new_current_thread().enable_all().build(),
            _ => tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build(),
        }
        .unwrap();
        runtime.block_on(async {
            let ns = dir.open(s3.options(flavor));
            let object = ns.object("notes", |_| Notes).unwrap();
            let (before, at_time) = object
                .call(|ctx| async move {
                    let s = ctx.storage();
                    s.sql()?.exec("CREATE TABLE IF NOT EXISTS t(x)", &[])?;
                    s.sql()?.exec("INSERT INTO t VALUES (1)", &[])?;
                    let before = s.current_bookmark().await?;
                    s.sql()?.exec("INSERT INTO t VALUES (2)", &[])?;
                    s.sync().await?;
                    let now = s.clock().now_ms();
                    let at_time = s.bookmark_for_time(now).await?;
                    Ok::<_, durable_storage::txn::Error>((before, at_time))
                })
                .await
                .unwrap()
                .unwrap();
            assert!(at_time > before, "{flavor}: {at_time} after {before}");
            let handle = ns.storage("notes").unwrap();
            handle.maintain_archive().unwrap();
            let image = handle.image_at(&before).unwrap();
            assert!(!image.is_empty(), "{flavor}: the image at a bookmark rebuilds from S3");
            drop((handle, object));
            ns.close().await.unwrap();
        });
    }
}
