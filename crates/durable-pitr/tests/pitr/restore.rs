//! Restore equivalence: every position rebuilds byte-identical to what SQLite had then, both
//! rebuilt in memory from the archive and restored on the next open; undo chains.

use std::time::Duration;

use super::support::{Env, Rng, file_bytes, image, step};

/// Runs `commits` random steps, recording (bookmark, oracle image) after each.
async fn history(env: &Env, seed: u64, commits: usize) -> Vec<(String, Vec<u8>)> {
    let mut config = env.config();
    config.merge_after = Duration::from_secs(120);
    config.merge_max_bytes = 256 * 1024;
    let (db, archiver) = env.open_with(config).await.unwrap();
    let mut rng = Rng::new(seed);
    let mut states = vec![(archiver.current_bookmark().unwrap(), image(&env.path))];
    for i in 0..commits {
        env.clock.advance(rng.below(3000) as i64);
        step(&db, &mut rng);
        archiver.capture().unwrap();
        let b = archiver.current_bookmark().unwrap();
        let img = image(&env.path);
        let last = states.last().unwrap();
        if last.0 == b {
            assert_eq!(last.1, img, "no new position, so no new state (step {i})");
        } else {
            assert!(b > last.0, "bookmarks grow: {b} after {}", last.0);
            states.push((b, img));
        }
        if i % 97 == 0 {
            archiver.upload().await.unwrap();
            archiver.compact().await.unwrap();
        }
    }
    archiver.close().await.unwrap();
    drop(db);
    states
}

#[tokio::test]
async fn a_thousand_random_bookmarks_rebuild_byte_identical() {
    let env = Env::new();
    let states = history(&env, 7, 700).await;
    assert!(states.len() > 500, "{} positions", states.len());
    let (_db, archiver) = env.open().await;
    let status = archiver.status();
    assert!(status.snapshots > 0 && status.archived_segments > 1, "{status:?}");
    let mut rng = Rng::new(99);
    for i in 0..1000 {
        let (b, expected) = &states[rng.below(states.len() as u64) as usize];
        let got = archiver.image_at(b).await.unwrap();
        assert!(got == *expected, "bookmark {b} (draw {i}) rebuilds another state");
    }
}

#[tokio::test]
async fn restore_on_next_open_and_undo_chains() {
    let env = Env::new();
    let states = history(&env, 11, 120).await;
    let mut rng = Rng::new(5);
    for round in 0..6 {
        let (target, expected) = &states[rng.below(states.len() as u64) as usize];
        let (db, archiver) = env.open().await;
        let before = image(&env.path);
        let epoch = archiver.status().epoch;
        let undo = archiver.on_next_session_restore_bookmark(target).unwrap();
        // Writes after the request belong to the old epoch, and the undo bookmark covers them.
        db.exec("CREATE TABLE IF NOT EXISTS late(x)", &[]).unwrap();
        db.exec("INSERT INTO late VALUES (?)", &[(round as i64).into()]).unwrap();
        db.commit().unwrap();
        let before_restore = image(&env.path);
        assert_ne!(before, before_restore);
        archiver.close().await.unwrap();
        drop(db);

        let (db, archiver) = env.open().await;
        assert_eq!(file_bytes(&env.path), *expected, "round {round}: restored to {target}");
        assert_eq!(archiver.status().epoch, epoch + 1);
        let after_restore = archiver.current_bookmark().unwrap();
        assert!(after_restore > undo, "the restore is a later position than its undo point");
        // Undo: back to the state just before the restore (late writes included).
        let undo_undo = archiver.on_next_session_restore_bookmark(&undo).unwrap();
        archiver.close().await.unwrap();
        drop(db);

        let (db, archiver) = env.open().await;
        assert_eq!(file_bytes(&env.path), before_restore, "round {round}: undo");
        assert_eq!(archiver.status().epoch, epoch + 2);
        // And the undo of the undo is the restored state again.
        assert_eq!(archiver.image_at(&undo_undo).await.unwrap(), *expected);
        // Every earlier bookmark still rebuilds: no restore deleted history.
        for (b, img) in states.iter().step_by(17) {
            assert_eq!(archiver.image_at(b).await.unwrap(), *img);
        }
        archiver.close().await.unwrap();
        drop(db);
    }
}

#[tokio::test]
async fn an_empty_data_directory_opens_from_the_archive_alone() {
    let env = Env::new();
    let states = history(&env, 3, 80).await;
    // Another machine: same archive, nothing local.
    let other = super::support::Env::with_store(env.store.clone());
    other.clock.set(super::support::T0 + 10 * 60_000 * 1000);
    let (db, archiver) = other.open().await;
    assert_eq!(image(&other.path), states.last().unwrap().1);
    assert_eq!(archiver.current_bookmark().unwrap(), states.last().unwrap().0);
    // It goes on from there, and its history continues the same sequence.
    db.exec("INSERT INTO t(k) VALUES ('moved')", &[]).unwrap();
    db.commit().unwrap();
    assert!(archiver.current_bookmark().unwrap() > states.last().unwrap().0);
    let (b, img) = &states[states.len() / 2];
    assert_eq!(archiver.image_at(b).await.unwrap(), *img);
}

#[tokio::test]
async fn a_journal_pointed_at_another_archive_records_a_base_there() {
    let env = Env::new();
    let states = history(&env, 13, 40).await;
    // The same data folder, its archive location changed: the new store holds none of the
    // history, so the first open records a full image there.
    let mut moved = env.config();
    moved.store = std::sync::Arc::new(durable_pitr::object_store::memory::InMemory::new());
    let store = moved.store.clone();
    let (db, archiver) = env.open_with(moved).await.unwrap();
    assert_eq!(image(&env.path), states.last().unwrap().1);
    db.exec("INSERT INTO t(k) VALUES ('after the move')", &[]).unwrap();
    db.commit().unwrap();
    let after = archiver.current_bookmark().unwrap();
    let expected = image(&env.path);
    archiver.close().await.unwrap();
    drop(db);
    // A new machine on the new store alone has the state, and the bookmark rebuilds there.
    let other = Env::with_store(store);
    other.clock.set(env.clock_now());
    let (_db, archiver) = other.open().await;
    assert_eq!(image(&other.path), expected);
    assert_eq!(archiver.image_at(&after).await.unwrap(), expected);
}
