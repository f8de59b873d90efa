//! Archive store faults (issue 10, "Faults"): a full target, transient put failures, failing
//! reads. Commits never depend on the archive: they stay durable in the local journal, the
//! archiver's calls report a clear `point-in-time recovery: object store: ...` error, and once
//! the store heals the backlog uploads and every bookmark still rebuilds.

use std::sync::Arc;

use durable_pitr::object_store::memory::InMemory;
use durable_pitr::{ArchiveError, Error};

use super::faulty_store::FaultyStore;
use super::support::{Env, Rng, image, step};

/// Runs `n` random committed steps, capturing each; returns (bookmark, image) per step.
fn commits(
    env: &Env,
    db: &durable_sql::Database,
    archiver: &durable_pitr::Archiver,
    rng: &mut Rng,
    n: usize,
) -> Vec<(String, Vec<u8>)> {
    let mut states = Vec::new();
    for _ in 0..n {
        env.clock.advance(1_500);
        step(db, rng);
        archiver.capture().unwrap();
        states.push((archiver.current_bookmark().unwrap(), image(&env.path)));
    }
    states
}

fn is_store_error(err: &Error, action: &str) -> bool {
    matches!(err, Error::Archive(ArchiveError::Store { action: a, .. }) if *a == action)
}

#[tokio::test]
async fn a_full_archive_fails_uploads_but_commits_stay_local_until_it_heals() {
    let store = FaultyStore::new(Arc::new(InMemory::new()));
    let env = Env::with_store(store.clone());
    let (db, archiver) = env.open().await;
    let mut rng = Rng::new(7);
    let mut states = commits(&env, &db, &archiver, &mut rng, 15);
    archiver.upload().await.unwrap();

    store.fill();
    states.extend(commits(&env, &db, &archiver, &mut rng, 25));
    archiver.seal().unwrap();
    let err = archiver.upload().await.unwrap_err();
    assert!(is_store_error(&err, "put"), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with("point-in-time recovery: object store: put ")
            && message.contains("No space left on device"),
        "{message}"
    );
    // Commits go on while the archive is full; the backlog waits in the local journal.
    states.extend(commits(&env, &db, &archiver, &mut rng, 10));
    assert!(archiver.status().local_segments >= 1, "{:?}", archiver.status());
    assert!(archiver.upload().await.is_err());
    for (b, img) in states.iter().step_by(5) {
        assert_eq!(archiver.image_at(b).await.unwrap(), *img, "rebuilt from the local journal");
    }
    // The store heals: the backlog goes out and every bookmark still rebuilds.
    store.heal();
    archiver.seal().unwrap();
    assert!(archiver.upload().await.unwrap() >= 1);
    assert_eq!(archiver.status().local_segments, 0);
    archiver.compact().await.unwrap();
    for (b, img) in &states {
        assert_eq!(archiver.image_at(b).await.unwrap(), *img);
    }
    let last = states.last().unwrap().clone();
    archiver.close().await.unwrap();
    drop(db);
    // From the archive alone, on another machine.
    let moved = Env::with_store(store.clone());
    moved.clock.set(env.clock_now());
    let (_db, archiver) = moved.open().await;
    assert_eq!(image(&moved.path), last.1);
    assert_eq!(archiver.current_bookmark().unwrap(), last.0);
}

#[tokio::test]
async fn closing_and_reopening_while_the_archive_is_full_loses_nothing() {
    let store = FaultyStore::new(Arc::new(InMemory::new()));
    let env = Env::with_store(store.clone());
    let (db, archiver) = env.open().await;
    let mut rng = Rng::new(8);
    let mut states = commits(&env, &db, &archiver, &mut rng, 5);
    store.fill();
    states.extend(commits(&env, &db, &archiver, &mut rng, 10));
    let err = archiver.close().await.unwrap_err();
    assert!(is_store_error(&err, "put"), "{err:?}");
    drop(db);
    // Reopening with the archive still full: the local journal is all that is needed.
    let (db, archiver) = env.open().await;
    let last = states.last().unwrap();
    assert_eq!(image(&env.path), last.1);
    assert_eq!(archiver.current_bookmark().unwrap(), last.0);
    states.extend(commits(&env, &db, &archiver, &mut rng, 5));
    store.heal();
    archiver.seal().unwrap();
    archiver.upload().await.unwrap();
    assert_eq!(archiver.status().local_segments, 0);
    for (b, img) in &states {
        assert_eq!(archiver.image_at(b).await.unwrap(), *img);
    }
}

#[tokio::test]
async fn transient_put_failures_are_retried_up_to_the_configured_attempts() {
    let store = FaultyStore::new(Arc::new(InMemory::new()));
    let env = Env::with_store(store.clone());
    let attempts = env.config().attempts as usize;
    assert_eq!(attempts, 5);
    let (db, archiver) = env.open().await;
    let mut rng = Rng::new(9);
    let mut states = commits(&env, &db, &archiver, &mut rng, 10);
    archiver.seal().unwrap();
    // One put short of the limit: the retries absorb it.
    store.fail_next_puts(attempts - 1);
    let before = store.put_attempts();
    let uploaded = archiver.upload().await.unwrap();
    assert!(uploaded >= 1);
    assert_eq!(store.put_attempts() - before, attempts - 1 + uploaded);
    // As many failures as attempts: the upload gives up with the store's error, and the
    // next upload sends the segment.
    states.extend(commits(&env, &db, &archiver, &mut rng, 10));
    archiver.seal().unwrap();
    store.fail_next_puts(attempts);
    let err = archiver.upload().await.unwrap_err();
    assert!(is_store_error(&err, "put"), "{err:?}");
    assert!(err.to_string().contains("injected put failure"), "{err}");
    let waiting = archiver.status().local_segments;
    assert!(waiting >= 1);
    assert_eq!(archiver.upload().await.unwrap(), waiting);
    for (b, img) in &states {
        assert_eq!(archiver.image_at(b).await.unwrap(), *img);
    }
}

#[tokio::test]
async fn failing_reads_fail_rebuilds_and_opens_with_a_clear_error_and_lose_nothing() {
    let store = FaultyStore::new(Arc::new(InMemory::new()));
    let env = Env::with_store(store.clone());
    let (db, archiver) = env.open().await;
    let mut rng = Rng::new(10);
    let states = commits(&env, &db, &archiver, &mut rng, 20);
    archiver.seal().unwrap();
    archiver.upload().await.unwrap();
    assert_eq!(archiver.status().local_segments, 0);
    store.fail_reads();
    // An old bookmark lives only in the archive: rebuilding it fails after the retries.
    let err = archiver.image_at(&states[3].0).await.unwrap_err();
    assert!(err.to_string().starts_with("point-in-time recovery: object store: "), "{err}");
    // Commits still work while reads fail.
    db.exec("CREATE TABLE IF NOT EXISTS during(x)", &[]).unwrap();
    db.commit().unwrap();
    archiver.capture().unwrap();
    let during = (archiver.current_bookmark().unwrap(), image(&env.path));
    store.heal();
    assert_eq!(archiver.image_at(&states[3].0).await.unwrap(), states[3].1);
    archiver.close().await.unwrap();
    drop(db);
    // Opening reads the archive's catalog: with reads failing it fails, and opens once healed.
    store.fail_reads();
    let err = env.open_with(env.config()).await.unwrap_err();
    assert!(err.to_string().starts_with("point-in-time recovery: "), "{err}");
    store.heal();
    let (_db, archiver) = env.open().await;
    assert_eq!(image(&env.path), during.1);
    assert_eq!(archiver.current_bookmark().unwrap(), during.0);
    for (b, img) in states.iter().step_by(4) {
        assert_eq!(archiver.image_at(b).await.unwrap(), *img);
    }
}
