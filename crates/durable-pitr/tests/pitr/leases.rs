//! Single-writer leases across nodes sharing one archive: a live owner refuses a second
//! writer, a released or expired lease is taken over from the archive, a fenced writer's
//! uploads are refused and superseded (which `ArchiveReader::check` counts, and a segment
//! straddling a term's start it reports), and a stale local copy gives way to the archive.

use durable_pitr::object_store::ObjectStoreExt;
use durable_pitr::object_store::path::Path as StorePath;
use durable_pitr::{ArchiveError, ArchiveReader, Error};

use super::cluster::{Cluster, LEASE, rows, rows_of_image, write};

#[tokio::test]
async fn a_live_owner_refuses_a_second_writer_until_it_releases() {
    let c = Cluster::new();
    let (a, b) = (c.node("a").await, c.node("b").await);
    let (db, archiver) = c.try_open(&a, "a", "room").await.unwrap();
    assert_eq!(archiver.status().term, 1);
    write(&db, "from a");
    let err = c.try_open(&b, "b", "room").await.unwrap_err();
    match &err {
        Error::Archive(ArchiveError::LeaseHeld { node, address, term }) => {
            assert_eq!((node.as_str(), address.as_deref(), *term), ("a", Some("a.local:80"), 1));
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("owned by node a at a.local:80"), "{err}");
    let owner = b.owner(&c.config(&b, "room")).await.unwrap().unwrap();
    assert!(owner.live && owner.node == "a" && owner.term == 1, "{owner:?}");
    // A hand-off: closing uploads everything and releases; the next node has it all.
    archiver.close().await.unwrap();
    drop(db);
    let owner = b.owner(&c.config(&b, "room")).await.unwrap().unwrap();
    assert!(!owner.live, "released: {owner:?}");
    let (db, archiver) = c.try_open(&b, "b", "room").await.unwrap();
    assert_eq!(archiver.status().term, 2);
    assert_eq!(rows(&db), ["from a"]);
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_and_the_old_writer_is_fenced() {
    let c = Cluster::new();
    let (a, b) = (c.node("a").await, c.node("b").await);
    let (db_a, archiver_a) = c.try_open(&a, "a", "room").await.unwrap();
    write(&db_a, "one");
    archiver_a.flush().await.unwrap();
    let before = archiver_a.current_bookmark().unwrap();
    // Node a stops renewing (paused, partitioned); node b keeps beating.
    c.clock.advance(LEASE.as_millis() as i64 + 1);
    b.heartbeat().await.unwrap();
    let (db_b, archiver_b) = c.try_open(&b, "b", "room").await.unwrap();
    assert_eq!(rows(&db_b), ["one"], "the taker starts from everything a uploaded");
    // Node a comes back and writes: its upload is refused, and it can confirm nothing more.
    write(&db_a, "lost by a");
    let err = archiver_a.flush().await.unwrap_err();
    assert!(
        matches!(&err, Error::Archive(ArchiveError::Fenced { term: 1, by }) if by == "b"),
        "{err:?}"
    );
    db_a.exec("INSERT INTO t VALUES ('after the fence')", &[]).unwrap();
    db_a.commit().unwrap();
    let sync = db_a.sync().unwrap_err();
    assert!(sync.to_string().contains("fenced"), "{sync}");
    assert!(archiver_a.flush().await.is_err(), "the archiver stays stopped");
    // Node b's history is the object's: a third folder sees b's writes, not a's late one.
    write(&db_b, "two");
    let after = archiver_b.current_bookmark().unwrap();
    archiver_b.close().await.unwrap();
    drop(db_b);
    let c_node = c.node("c").await;
    let (db_c, archiver_c) = c.try_open(&c_node, "c", "room").await.unwrap();
    assert_eq!(rows(&db_c), ["one", "two"]);
    // Every bookmark of both terms rebuilds exactly.
    let scratch = c.dir.path().join("scratch.sqlite");
    let at_before = archiver_c.image_at(&before).await.unwrap();
    assert_eq!(rows_of_image(&at_before, &scratch), ["one"]);
    std::fs::remove_file(&scratch).unwrap();
    let at_after = archiver_c.image_at(&after).await.unwrap();
    assert_eq!(rows_of_image(&at_after, &scratch), ["one", "two"]);
    // Retention deletes what the fenced writer uploaded late.
    assert!(archiver_c.retain().await.unwrap() >= 1);
    drop((db_a, archiver_a));
}

#[tokio::test]
async fn a_stale_local_copy_gives_way_to_the_archive() {
    let c = Cluster::new();
    let (a, b) = (c.node("a").await, c.node("b").await);
    let (db, archiver) = c.try_open(&a, "a", "room").await.unwrap();
    write(&db, "a1");
    archiver.close().await.unwrap();
    drop(db);
    let (db, archiver) = c.try_open(&b, "b", "room").await.unwrap();
    write(&db, "b1");
    archiver.close().await.unwrap();
    drop(db);
    // Node a's folder still holds its old copy: the archive, where b wrote, wins.
    let a2 = c.node("a").await;
    let (db, archiver) = c.try_open(&a2, "a", "room").await.unwrap();
    assert_eq!(rows(&db), ["a1", "b1"]);
    assert_eq!(archiver.status().term, 3);
    write(&db, "a2");
    archiver.close().await.unwrap();
    drop(db);
    // The same node reopening keeps its copy (nobody wrote since) and its history goes on.
    let a3 = c.node("a").await;
    let (db, _archiver) = c.try_open(&a3, "a", "room").await.unwrap();
    assert_eq!(rows(&db), ["a1", "b1", "a2"]);
}

#[tokio::test]
async fn a_restarted_node_takes_its_own_unreleased_lease_back_at_once() {
    let c = Cluster::new();
    let a = c.node("a").await;
    let (db, archiver) = c.try_open(&a, "a", "room").await.unwrap();
    write(&db, "kept");
    // Killed: no close, no release; the heartbeat is still current.
    drop(archiver);
    drop(db);
    let again = c.node("a").await;
    let (db, archiver) = c.try_open(&again, "a", "room").await.unwrap();
    assert_eq!(rows(&db), ["kept"], "the local copy is current: nobody else wrote");
    assert_eq!(archiver.status().term, 2);
}

/// The names under the object's `dir`, sorted.
async fn names(c: &Cluster, dir: &str) -> Vec<String> {
    let keys = c.keys(&format!("ns/room.sqlite/{dir}")).await;
    let mut names: Vec<String> =
        keys.iter().map(|k| k.rsplit_once('/').map_or(k.as_str(), |(_, n)| n).to_owned()).collect();
    names.sort();
    names
}

#[tokio::test]
async fn the_check_counts_superseded_history_and_reports_a_straddling_segment() {
    let c = Cluster::new();
    let (a, b) = (c.node("a").await, c.node("b").await);
    let (db_a, archiver_a) = c.try_open(&a, "a", "room").await.unwrap();
    write(&db_a, "one");
    archiver_a.flush().await.unwrap();
    c.clock.advance(LEASE.as_millis() as i64 + 1);
    b.heartbeat().await.unwrap();
    let (db_b, archiver_b) = c.try_open(&b, "b", "room").await.unwrap();
    // The fenced writer's late upload reaches the store before its fencing check fails.
    write(&db_a, "late");
    archiver_a.flush().await.unwrap_err();
    write(&db_b, "two");
    archiver_b.flush().await.unwrap();
    let found = ArchiveReader::open(&c.config(&b, "room")).await.unwrap().check();
    assert_eq!(found.superseded.len(), 1, "{found:?}");
    assert!(found.superseded[0].ends_with("-00000001.seg"), "{found:?}");
    assert!(found.straddling.is_empty() && found.gaps.is_empty(), "{found:?}");
    assert!(found.is_healthy(), "superseded history is what a takeover leaves");

    // A term-1 segment from just before term 2's start to past it: a broken chain.
    let from = names(&c, "lease").await.into_iter().find_map(|n| {
        n.strip_prefix("00000002.from-").map(|s| u64::from_str_radix(s, 16).unwrap())
    });
    let from = from.expect("term 2 wrote where it starts");
    let source = names(&c, "seg").await.into_iter().next().unwrap();
    let straddler = format!(
        "00000000-{:016x}-{:016x}-{:012x}-{:012x}-00000001.seg",
        from - 1,
        from,
        super::support::T0,
        super::support::T0
    );
    let bytes = c
        .store
        .get(&StorePath::from(format!("ns/room.sqlite/seg/{source}")))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let key = StorePath::from(format!("ns/room.sqlite/seg/{straddler}"));
    c.store.put(&key, bytes.into()).await.unwrap();
    let found = ArchiveReader::open(&c.config(&b, "room")).await.unwrap().check();
    assert_eq!(found.straddling, [format!("seg/{straddler}")], "{found:?}");
    assert_eq!(found.superseded.len(), 1, "the straddler is not counted twice: {found:?}");
    assert!(!found.is_healthy());
    drop((db_a, archiver_a, db_b, archiver_b));
}
