//! Single-writer leases through the facade: two namespaces (nodes) with their own data
//! folders share one archive. A live owner's objects are refused elsewhere with the owner's
//! name and address; a hand-off (close here, open there) loses nothing; when a node stops
//! renewing its lease another takes its objects over, and the old node's late writes are
//! fenced: refused, never in the archive's history (superseded, which
//! `Namespace::archive_check` counts).

use std::sync::Arc;
use std::time::{Duration, Instant};

use durable_storage::pitr::object_store::ObjectStore;
use durable_storage::pitr::object_store::memory::InMemory;
use durable_storage::pitr::{ArchiveError, Error as PitrError};
use durable_storage::{Actor, Archive, ArchiveStore, Error, NamespaceOptions, ObjectHandle};

use crate::faulty_store::FaultyStore;
use crate::support::Dir;

struct Doc;
impl Actor for Doc {}

fn node(store: ArchiveStore, id: &str, lease: Duration) -> NamespaceOptions {
    NamespaceOptions::new()
        .archive(Archive::Store(store))
        .archive_lag(Duration::from_millis(100))
        .lease(lease)
        .node_id(id)
        .advertise(format!("{id}.internal:8080"))
}

async fn add(object: &ObjectHandle<Doc>, n: i64) -> Result<(), String> {
    crate::support::add_note(object, n).await
}

fn notes(image: &[u8], dir: &Dir) -> Vec<i64> {
    let file = dir.path().join(format!("copy-{}.sqlite", image.len()));
    std::fs::write(&file, image).unwrap();
    let db = durable_storage::Database::open(&file, Default::default()).unwrap();
    let cursor = db.exec("SELECT n FROM notes ORDER BY n", &[]).unwrap();
    let out = cursor.map(|r| r.unwrap().get::<i64>("n").unwrap()).collect();
    drop(db);
    std::fs::remove_file(&file).unwrap();
    out
}

fn lease_held(e: &Error) -> Option<(&str, Option<&str>)> {
    match e {
        Error::Pitr(PitrError::Archive(ArchiveError::LeaseHeld { node, address, .. })) => {
            Some((node.as_str(), address.as_deref()))
        }
        _ => None,
    }
}

#[test]
fn a_live_owner_is_named_and_a_hand_off_loses_nothing() {
    crate::support::rt().block_on(async {
        // A local folder shared by both nodes: create-only writes are all it needs.
        let shared = tempfile::tempdir().unwrap();
        let store = ArchiveStore::folder(shared.path()).unwrap();
        let (dir_a, dir_b) = (Dir::new(), Dir::new());
        let a = dir_a.open(node(store.clone(), "a", Duration::from_secs(10)));
        let b = dir_b.open(node(store.clone(), "b", Duration::from_secs(10)));
        assert_eq!(a.node_id().as_deref(), Some("a"));
        let room = a.object("room", |_| Doc).unwrap();
        add(&room, 1).await.unwrap();
        let err = b.storage("room").unwrap_err();
        assert_eq!(lease_held(&err), Some(("a", Some("a.internal:8080"))), "{err:?}");
        assert!(err.to_string().contains("owned by node a at a.internal:8080"), "{err}");
        let owner = b.owner("room").unwrap().unwrap();
        assert!(owner.live && owner.node == "a", "{owner:?}");
        // Hand-off: the object closes on a (its history uploads, its lease is released)
        // and opens on b with everything.
        drop(room);
        let mut waiting = node(store.clone(), "b", Duration::from_secs(10));
        waiting.lease_wait = Duration::from_secs(10);
        drop(b);
        let b = dir_b.open(waiting);
        let room_b = b.object("room", |_| Doc).unwrap();
        add(&room_b, 2).await.unwrap();
        let (_, image) = a.archived_image("room", None).unwrap();
        assert_eq!(notes(&image, &dir_a), [1]);
        let err = a.storage("room").unwrap_err();
        assert_eq!(lease_held(&err).map(|o| o.0), Some("b"), "{err:?}");
        drop(room_b);
        b.close().await.unwrap();
        let (_, image) = a.archived_image("room", None).unwrap();
        assert_eq!(notes(&image, &dir_a), [1, 2]);
        a.close().await.unwrap();
    });
}

#[test]
fn an_expired_lease_fails_over_and_the_old_node_is_fenced() {
    crate::support::rt().block_on(async {
        let memory: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        // Node a reaches the store through a wrapper that can cut its heartbeats off.
        let faulty = FaultyStore::new(memory.clone());
        let lease = Duration::from_millis(600);
        let (dir_a, dir_b) = (Dir::new(), Dir::new());
        let a = dir_a.open(node(ArchiveStore::new(faulty.clone(), "ns"), "a", lease));
        let mut b_options = node(ArchiveStore::new(memory.clone(), "ns"), "b", lease);
        b_options.lease_wait = Duration::from_secs(10);
        let b = dir_b.open(b_options);
        let doc_a = a.object("doc", |_| Doc).unwrap();
        add(&doc_a, 1).await.unwrap();
        let uploaded = Instant::now();
        while a.archive_status()[0].1.pending > 0 {
            assert!(uploaded.elapsed() < Duration::from_secs(5), "never uploaded");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Node a is cut off from renewing its lease; node b takes the object over once it
        // expires, from the archive.
        faulty.fail_puts_to("_nodes/");
        let cut = Instant::now();
        let doc_b = b.object("doc", |_| Doc).unwrap();
        add(&doc_b, 2).await.unwrap();
        let failover = cut.elapsed();
        assert!(failover < lease * 4, "failover took {failover:?}");
        eprintln!("failover: {failover:?} after the last heartbeat was cut ({lease:?} lease)");
        // Node a goes on writing: its next upload is fenced, its object fails and resets.
        let deadline = Instant::now() + Duration::from_secs(10);
        let refused = loop {
            match add(&doc_a, 3).await {
                Err(e) => break e,
                Ok(()) => {
                    assert!(Instant::now() < deadline, "node a was never fenced");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        assert!(refused.contains("fenced"), "{refused}");
        drop(doc_a);
        // Once the fenced instance has closed, reopening on a names the new owner.
        faulty.heal();
        let deadline = Instant::now() + Duration::from_secs(5);
        let err = loop {
            match a.storage("doc") {
                // The fenced instance is still closing (its reset object's last handle is
                // going away): not yet.
                Err(Error::StillOpen { .. }) => {
                    assert!(Instant::now() < deadline, "the fenced instance never closed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => break e,
                Ok(stale) => {
                    drop(stale);
                    assert!(Instant::now() < deadline, "the fenced instance never closed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        assert_eq!(lease_held(&err).map(|o| o.0), Some("b"), "{err:?}");
        // The archive's history is b's: a's late writes are not in it.
        drop(doc_b);
        b.close().await.unwrap();
        let (_, image) = a.archived_image("doc", None).unwrap();
        assert_eq!(notes(&image, &dir_a), [1, 2]);
        // What a uploaded after the takeover is superseded: counted, and no damage.
        let check = a.archive_check("doc").unwrap();
        assert!(check.is_healthy(), "{check:?}");
        assert!(!check.superseded.is_empty(), "a's fenced upload: {check:?}");
        // Closing the fenced node reports nothing as left to upload: there is nothing it
        // could still add to the object's history.
        a.close().await.unwrap();
    });
}
