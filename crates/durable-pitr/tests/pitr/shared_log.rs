//! The shared log of `Replicated` uploads: the new commits of every object of a node go up
//! in one batch per round; a writer that dies before uploading its own segments loses
//! nothing it confirmed (the taker and read-only readers find it in the log); a round
//! refuses the commits of an object taken over (its fence takes the slot the owner writes
//! next); covered batches are deleted, except the newest.

use std::sync::Arc;
use std::time::Duration;

use durable_pitr::object_store::memory::InMemory;
use durable_pitr::object_store::path::Path as StorePath;
use durable_pitr::object_store::throttle::{ThrottleConfig, ThrottledStore};
use durable_pitr::object_store::{ObjectStoreExt, PutPayload};
use durable_pitr::{ArchiveError, ArchiveReader, Archiver, Error, Node};
use durable_sql::{Database, Options};

use super::cluster::{Cluster, LEASE, rows, rows_of_image, write};
use super::faulty_store::FaultyStore;
use super::support::copy_folder;

/// The lanes of a node's shared log (`log.rs`): a takeover fences each.
const LANES: usize = 4;

#[tokio::test]
async fn every_objects_new_commits_go_up_in_one_batch_and_outlive_their_writer() {
    let c = Cluster::new().with_long_segments();
    let a = c.node("a").await;
    let mut objects = Vec::new();
    for name in ["r1", "r2", "r3"] {
        objects.push(c.open(&a, "a", name).await);
    }
    for (i, (db, _)) in objects.iter().enumerate() {
        write(db, &format!("first {i}"));
        write(db, &format!("second {i}"));
    }
    let (x, y, z) =
        tokio::join!(objects[0].1.replicate(), objects[1].1.replicate(), objects[2].1.replicate());
    assert!(x.unwrap() && y.unwrap() && z.unwrap(), "each had new commits");
    assert_eq!(c.batches(&a).await.len(), 1, "one upload for the three objects");
    assert_eq!(a.log_batches(), 1);
    let mut bookmarks = Vec::new();
    for (_, archiver) in &objects {
        let status = archiver.status();
        assert_eq!(status.replicated_seq, status.seq, "{status:?}");
        assert!(status.uploaded_seq < status.seq, "not in the object's segments yet");
        assert_eq!(status.replica_lag_ms, 0);
        bookmarks.push(archiver.current_bookmark().unwrap());
    }
    // Nothing new: no round at all.
    assert!(!objects[0].1.replicate().await.unwrap());
    assert_eq!(c.batches(&a).await.len(), 1);

    c.kill(objects);
    // A read-only reader sees the confirmed commits while nobody owns the object.
    let scratch = c.dir.path().join("scratch.sqlite");
    let reader = ArchiveReader::open(&c.config(&a, "r2")).await.unwrap();
    assert_eq!(reader.latest_bookmark().as_deref(), Some(bookmarks[1].as_str()));
    assert_eq!(
        rows_of_image(&reader.latest_image().await.unwrap(), &scratch),
        ["first 1", "second 1"]
    );
    std::fs::remove_file(&scratch).unwrap();

    // Node a is gone; node b takes r1 over after the lease and has every confirmed commit.
    c.clock.advance(LEASE.as_millis() as i64 + 1);
    let b = c.node("b").await;
    let (db, archiver) = c.open(&b, "b", "r1").await;
    assert_eq!(rows(&db), ["first 0", "second 0"]);
    assert_eq!(archiver.status().term, 2);
    assert_eq!(archiver.status().uploaded_seq, archiver.status().seq, "moved into segments");
    let image = archiver.image_at(&bookmarks[0]).await.unwrap();
    assert_eq!(rows_of_image(&image, &scratch), ["first 0", "second 0"]);
    write(&db, "third 0");
    archiver.close().await.unwrap();
    drop(db);
    // A third node sees the history of both terms.
    let c3 = c.node("c").await;
    let (db, _archiver) = c.open(&c3, "c", "r1").await;
    assert_eq!(rows(&db), ["first 0", "second 0", "third 0"]);
}

#[tokio::test]
async fn a_round_refuses_the_commits_of_an_object_taken_over() {
    let c = Cluster::new().with_long_segments();
    let a = c.node("a").await;
    let (db1, a1) = c.open(&a, "a", "r1").await;
    let (db2, a2) = c.open(&a, "a", "r2").await;
    write(&db1, "one");
    write(&db2, "one");
    assert!(a1.replicate().await.unwrap() && a2.replicate().await.unwrap());
    // Node a pauses past its lease; node b takes r1 over (not r2).
    c.clock.advance(LEASE.as_millis() as i64 + 1);
    let b = c.node("b").await;
    let (db_b, archiver_b) = c.open(&b, "b", "r1").await;
    assert_eq!(rows(&db_b), ["one"]);
    // Node a resumes: r1's next commit is refused, r2's goes on.
    a.heartbeat().await.unwrap();
    write(&db1, "lost by a");
    write(&db2, "two");
    let err = a1.replicate().await.unwrap_err();
    assert!(
        matches!(&err, Error::Archive(ArchiveError::Fenced { term: 1, by }) if by == "b"),
        "{err:?}"
    );
    assert!(a1.is_fenced());
    assert_eq!(a1.status().local_segments, 0, "refused by the log's round, not a segment upload");
    db1.exec("INSERT INTO t VALUES ('after the fence')", &[]).unwrap();
    db1.commit().unwrap();
    assert!(db1.sync().unwrap_err().to_string().contains("fenced"));
    assert!(a2.replicate().await.unwrap(), "the other object is still a's");
    assert_eq!(a2.status().replicated_seq, a2.status().seq);
    // r1's history is b's.
    write(&db_b, "two");
    archiver_b.close().await.unwrap();
    drop((db_b, db1, a1));
    let c3 = c.node("c").await;
    let (db, _archiver) = c.open(&c3, "c", "r1").await;
    assert_eq!(rows(&db), ["one", "two"]);
}

/// Objects r1 and r2 on node `a`, logged in two batches: "one" of both in the first, "two"
/// of r1 alone in the second.
async fn two_batches(c: &Cluster, a: &Arc<Node>) -> ((Database, Archiver), (Database, Archiver)) {
    let (db1, a1) = c.open(a, "a", "r1").await;
    let (db2, a2) = c.open(a, "a", "r2").await;
    write(&db1, "one");
    write(&db2, "one");
    let (x, y) = tokio::join!(a1.replicate(), a2.replicate());
    assert!(x.unwrap() && y.unwrap());
    write(&db1, "two");
    assert!(a1.replicate().await.unwrap());
    assert_eq!(c.batches(a).await.len(), 2, "r1 and r2 in one, r1 alone in the other");
    ((db1, a1), (db2, a2))
}

#[tokio::test]
async fn batches_go_once_their_objects_upload_their_own_segments() {
    let c = Cluster::new().with_long_segments();
    let a = c.node("a").await;
    let ((db1, a1), (db2, a2)) = two_batches(&c, &a).await;
    let first = c.batches(&a).await;
    // r1's segments cover both of its deltas; the second batch (r1 only) has nothing left
    // but stays, being the newest (a taker fences the slot after the newest); the first
    // still holds r2's.
    a1.flush().await.unwrap();
    assert_eq!(a.log_batches(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(c.batches(&a).await, first);
    // r2's too: the first goes, the newest stays.
    a2.flush().await.unwrap();
    assert_eq!(c.batches_once(&a, |b| b.len() == 1).await, first[1..]);
    assert_eq!(a.log_batches(), 0);
    // A newer batch lets it go.
    write(&db2, "two");
    assert!(a2.replicate().await.unwrap());
    let now = c.batches_once(&a, |b| !b.contains(&first[1])).await;
    assert_eq!(now.len(), 1, "{now:?}");
    assert!(now[0] > first[1], "{now:?}");
    assert_eq!(a.log_batches(), 1);
    drop((db1, db2));
}

#[tokio::test]
async fn a_fence_takes_the_slot_the_owner_writes_next() {
    let c = Cluster::new().with_long_segments();
    let a = c.node("a").await;
    let (db1, a1) = c.open(&a, "a", "r1").await;
    let (db2, a2) = c.open(&a, "a", "r2").await;
    write(&db1, "one");
    assert!(a1.replicate().await.unwrap());
    a1.flush().await.unwrap();
    // Deletions run in a task of their own, gathered for 100 ms: give them time to
    // (wrongly) run.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(c.batches(&a).await.len(), 1, "covered, but the newest");
    // Node a pauses past its lease; b takes r1 over and fences it in a's log.
    c.clock.advance(LEASE.as_millis() as i64 + 1);
    let b = c.node("b").await;
    let (db_b, _archiver_b) = c.open(&b, "b", "r1").await;
    assert_eq!(rows(&db_b), ["one"]);
    let fences = c.fences(&a).await;
    assert_eq!(fences.len(), LANES, "one in each lane of a's log");
    let batch = c.batches(&a).await.pop().unwrap();
    let lane = |key: &str| key.rsplit_once('/').unwrap().0.to_owned();
    let fence = fences.iter().find(|f| lane(f) == lane(&batch)).unwrap().clone();
    assert!(fence > batch, "the slot after the newest batch of its lane");
    // a resumes: one round holds r1's and r2's commits; it meets the fence, refuses r1's
    // and writes r2's into the slot after it.
    a.heartbeat().await.unwrap();
    write(&db1, "lost by a");
    write(&db2, "one");
    let (x, y) = tokio::join!(a1.replicate(), a2.replicate());
    let err = x.unwrap_err();
    assert!(
        matches!(&err, Error::Archive(ArchiveError::Fenced { term: 1, by }) if by == "b"),
        "{err:?}"
    );
    assert!(y.unwrap());
    let batches = c.batches_once(&a, |b| b.len() == 1).await;
    assert_eq!(batches.len(), 1, "the covered batch went once a newer one was in: {batches:?}");
    assert!(batches[0] > fence);
    assert_eq!(a.log_batches(), 1);
    // A later round refuses r1 at once (no write), and r2's history is confirmed.
    db1.exec("INSERT INTO t VALUES ('after')", &[]).unwrap();
    db1.commit().unwrap();
    assert!(a1.replicate().await.is_err());
    assert_eq!(c.batches(&a).await, batches);
    let reader = ArchiveReader::open(&c.config(&a, "r2")).await.unwrap();
    let scratch = c.dir.path().join("scratch.sqlite");
    assert_eq!(rows_of_image(&reader.latest_image().await.unwrap(), &scratch), ["one"]);
    drop((db1, db2, a2));
}

#[tokio::test]
async fn a_delta_handed_over_during_a_round_goes_up_in_another_lane() {
    // Every store request takes 50 ms: a round is in flight long enough to overlap.
    let slow = ThrottleConfig {
        wait_put_per_call: Duration::from_millis(50),
        ..ThrottleConfig::default()
    };
    let c = Cluster::on(Arc::new(ThrottledStore::new(InMemory::new(), slow)));
    let a = c.node("a").await;
    let (db1, a1) = c.open(&a, "a", "r1").await;
    let (db2, a2) = c.open(&a, "a", "r2").await;
    // A first round: the log learns that the store is slow (one lane until then).
    write(&db1, "zero");
    assert!(a1.replicate().await.unwrap());
    write(&db1, "one");
    let started = std::time::Instant::now();
    let (x, y) = tokio::join!(a1.replicate(), async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        write(&db2, "one");
        a2.replicate().await
    });
    assert!(x.unwrap() && y.unwrap());
    let took = started.elapsed();
    let batches = c.batches(&a).await;
    let lanes: Vec<&str> = batches.iter().map(|k| k.rsplit('/').nth(1).unwrap()).collect();
    assert_eq!(lanes, ["00", "00", "01"], "the third did not wait for the second: {took:?}");
    // The node dies; a taker of each object finds its commit, whatever its lane.
    c.kill(vec![(db1, a1), (db2, a2)]);
    c.clock.advance(LEASE.as_millis() as i64 + 1);
    let b = c.node("b").await;
    let (db, _archiver) = c.open(&b, "b", "r1").await;
    assert_eq!(rows(&db), ["zero", "one"]);
    let (db, _archiver) = c.open(&b, "b2", "r2").await;
    assert_eq!(rows(&db), ["one"]);
}

#[tokio::test]
async fn a_node_taking_over_many_objects_of_one_log_reads_each_batch_once() {
    let faulty = FaultyStore::new(Arc::new(InMemory::new()));
    let c = Cluster::on(faulty.clone()).with_long_segments();
    let a = c.node("a").await;
    let names: Vec<String> = (0..6).map(|i| format!("r{i}")).collect();
    let mut objects = Vec::new();
    for name in &names {
        objects.push(c.open(&a, "a", name).await);
    }
    for round in 0..3 {
        for (db, _) in &objects {
            write(db, &format!("{round}"));
        }
        let confirmed =
            futures_util::future::join_all(objects.iter().map(|(_, a)| a.replicate())).await;
        assert!(confirmed.into_iter().all(|c| c.unwrap()));
    }
    let batches = c.batches(&a).await.len();
    assert!(batches >= 3, "{batches}");
    c.kill(objects);
    c.clock.advance(LEASE.as_millis() as i64 + 1);
    // b takes the six over at once: each opening reads a's whole log, but fetches only
    // what no other opening fetched (the fences each writes into it are new).
    let b = c.node("b").await;
    faulty.forget_gets();
    let opened = futures_util::future::join_all(names.iter().map(|n| c.open(&b, "b", n))).await;
    for (db, _) in &opened {
        assert_eq!(rows(db), ["0", "1", "2"]);
    }
    let (gets, most) = faulty.gets_of("/_log/");
    assert_eq!(most, 1, "no slot fetched twice");
    assert!(gets >= batches, "{gets} {batches}");
    // A reader on b (the checker's view) fetches nothing it has.
    let reader = ArchiveReader::open(&c.config(&b, "r0")).await.unwrap();
    assert!(reader.latest_bookmark().is_some());
    assert_eq!(faulty.gets_of("/_log/").1, 1);
}

#[tokio::test]
async fn a_batch_that_landed_though_its_write_failed_is_passed_over() {
    let faulty = FaultyStore::new(Arc::new(InMemory::new()));
    let c = Cluster::on(faulty.clone()).with_long_segments();
    let a = c.node("a").await;
    let (db, archiver) = c.open(&a, "a", "r1").await;
    // The first attempt lands but its answer is lost; both retries fail.
    write(&db, "one");
    faulty.land_next_put_then_fail(2);
    let err = archiver.replicate().await.unwrap_err();
    assert!(err.to_string().contains("injected put"), "{err}");
    let landed = c.batches(&a).await;
    assert_eq!(landed.len(), 1);
    // The next round finds that batch in its slot, takes the next one and confirms; the
    // earlier batch goes.
    write(&db, "two");
    assert!(archiver.replicate().await.unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while c.batches(&a).await.contains(&landed[0]) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let now = c.batches(&a).await;
    assert_eq!(now.len(), 1, "{now:?}");
    assert!(now[0] > landed[0]);
    assert_eq!(archiver.status().replicated_seq, archiver.status().seq);
    // Killed: the taker has both commits.
    c.kill(vec![(db, archiver)]);
    c.clock.advance(LEASE.as_millis() as i64 + 1);
    let b = c.node("b").await;
    let (db, _archiver) = c.open(&b, "b", "r1").await;
    assert_eq!(rows(&db), ["one", "two"]);
}

#[tokio::test]
async fn a_paused_node_finds_its_fences_even_after_its_log_was_swept() {
    let c = Cluster::new().with_long_segments();
    let a = c.node("a").await;
    let (db1, a1) = c.open(&a, "a", "r1").await;
    write(&db1, "one");
    assert!(a1.replicate().await.unwrap());
    a1.flush().await.unwrap();
    // Node a pauses past its lease; b takes r1 over (fencing it in a's log), and a sweep,
    // seeing a dead and r1 moved on, deletes a's batches, but not the fences: a is not
    // known to be gone for good.
    c.clock.advance(LEASE.as_millis() as i64 + 1);
    let b = c.node("b").await;
    let (db_b, _archiver_b) = c.open(&b, "b", "r1").await;
    assert!(b.sweep_logs().await.unwrap() > 0);
    assert!(c.batches(&a).await.is_empty());
    assert_eq!(c.fences(&a).await.len(), LANES);
    // a resumes and beats again: its next commit of r1 is refused.
    a.heartbeat().await.unwrap();
    write(&db1, "lost by a");
    let err = a1.replicate().await.unwrap_err();
    assert!(
        matches!(&err, Error::Archive(ArchiveError::Fenced { term: 1, by }) if by == "b"),
        "{err:?}"
    );
    drop((db_b, db1, a1));
}

#[tokio::test]
async fn a_corrupt_batch_stops_the_takeover_with_a_clear_error() {
    let c = Cluster::new().with_long_segments();
    let a = c.node("a").await;
    let (db, archiver) = c.open(&a, "a", "r1").await;
    write(&db, "one");
    assert!(archiver.replicate().await.unwrap());
    let batch = c.batches(&a).await.pop().unwrap();
    let mut bytes = c
        .store
        .get(&StorePath::from(batch.as_str()))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    c.store.put(&StorePath::from(batch.as_str()), PutPayload::from(bytes)).await.unwrap();
    c.kill(vec![(db, archiver)]);
    c.clock.advance(LEASE.as_millis() as i64 + 1);
    let b = c.node("b").await;
    let dir = c.dir.path().join("b");
    std::fs::create_dir_all(&dir).unwrap();
    let err = Archiver::open(dir.join("r1.sqlite"), Options::default(), c.config(&b, "r1"))
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::Archive(ArchiveError::Corrupt { .. })), "{err:?}");
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
}

#[tokio::test]
async fn a_sweep_deletes_what_stopped_nodes_logs_no_longer_need() {
    let faulty = FaultyStore::new(Arc::new(InMemory::new()));
    let c = Cluster::on(faulty.clone()).with_long_segments();
    let a = c.node("a").await;
    let ((db1, a1), (db2, a2)) = two_batches(&c, &a).await;
    c.kill(vec![(db1, a1), (db2, a2)]);
    c.clock.advance(LEASE.as_millis() as i64 + 1);
    let b = c.node("b").await;
    let log = format!("ns/_log/a/{}", a.instance());
    // b takes r1 over: the batch of r1 alone is not needed any more; the other still holds
    // r2's only copy.
    let (db, archiver) = c.open(&b, "b", "r1").await;
    assert_eq!(rows(&db), ["one", "two"]);
    assert_eq!(c.fences(&a).await.len(), LANES, "b fenced r1 in each lane of a's log");
    assert!(b.sweep_logs().await.unwrap() >= 1);
    assert_eq!(c.batches(&a).await.len(), 1);
    let (db2, _a2) = c.open(&b, "b2", "r2").await;
    assert_eq!(rows(&db2), ["one"]);
    assert!(b.sweep_logs().await.unwrap() >= 1);
    assert!(c.batches(&a).await.is_empty());
    // The fences stay while a's instance may only be paused (see the next test); once node
    // a starts again (a later instance), they go.
    assert_eq!(c.fences(&a).await.len(), 2 * LANES);
    let _a_again = c.node("a").await;
    // A stopped node's log holding a slot nobody can read does not stop the sweep of the
    // others' (that instance keeps everything).
    let unreadable = StorePath::from("ns/_log/zz/0123456789abcdef/00/0000000000000000");
    c.store.put(&unreadable, PutPayload::from(b"not a slot".to_vec())).await.unwrap();
    let requests = faulty.delete_calls();
    assert_eq!(b.sweep_logs().await.unwrap(), 2 * LANES);
    assert_eq!(faulty.delete_calls() - requests, 1, "one bulk delete for the sweep");
    assert!(c.keys(&log).await.is_empty(), "batches and fences gone: {:?}", c.keys(&log).await);
    assert_eq!(c.keys("ns/_log/zz").await, [unreadable.to_string()]);
    // A running node's log is never swept, even where its objects moved on: b releases r1
    // with a delta still in its log.
    write(&db, "three");
    assert!(archiver.replicate().await.unwrap());
    archiver.release().await.unwrap();
    let other = c.node("other").await;
    assert_eq!(other.sweep_logs().await.unwrap(), 0, "b is alive");
    assert_eq!(c.batches(&b).await.len(), 1);
    // Once b has stopped, the released object's batch goes.
    c.clock.advance(LEASE.as_millis() as i64 + 1);
    other.heartbeat().await.unwrap();
    assert_eq!(other.sweep_logs().await.unwrap(), 1);
    assert!(c.batches(&b).await.is_empty());
}

/// A node restarted after a power loss on the same machine: the WAL kept every commit, the
/// journal lost what nothing had synced, and the log has a confirmed delta the journal no
/// longer holds. The object goes on from that logged history (moved into its segments),
/// so the bookmarks confirmed before the power loss still resolve to the same states.
#[tokio::test]
async fn a_restart_after_a_power_loss_keeps_the_logged_positions() {
    let c = Cluster::new().with_long_segments();
    let a = c.node("a").await;
    let (db, archiver) = c.open(&a, "a", "r1").await;
    write(&db, "first");
    assert!(archiver.replicate().await.unwrap());
    let journal = c.dir.path().join("a/r1.sqlite-pitr/journal");
    let saved = c.dir.path().join("saved-journal");
    copy_folder(&journal, &saved);
    c.clock.advance(1_000);
    write(&db, "second");
    assert!(archiver.replicate().await.unwrap());
    let confirmed = archiver.current_bookmark().unwrap();
    c.kill(vec![(db, archiver)]);
    // The power loss: the journal as it was synced.
    std::fs::remove_dir_all(&journal).unwrap();
    copy_folder(&saved, &journal);

    c.clock.advance(LEASE.as_millis() as i64 + 1);
    let a = c.node("a").await;
    let (db, archiver) = c.open(&a, "a", "r1").await;
    assert_eq!(rows(&db), ["first", "second"]);
    assert_eq!(archiver.current_bookmark().unwrap(), confirmed, "the logged stamp, not a new one");
    let scratch = c.dir.path().join("scratch.sqlite");
    let image = archiver.image_at(&confirmed).await.unwrap();
    assert_eq!(rows_of_image(&image, &scratch), ["first", "second"]);
    write(&db, "third");
    archiver.close().await.unwrap();
    drop(db);
    let b = c.node("b").await;
    let (db, _archiver) = c.open(&b, "b", "r1").await;
    assert_eq!(rows(&db), ["first", "second", "third"]);
}
