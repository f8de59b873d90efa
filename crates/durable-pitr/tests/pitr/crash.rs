//! Crash injection: a failpoint at every step of capture, journal, checkpoint, upload,
//! compaction, retention and restore makes the step fail as if the process died there; the
//! object is then dropped without closing and reopened. Nothing committed is lost, history
//! still rebuilds, and a pending restore completes exactly once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use durable_pitr::{ArchiveConfig, Failpoint};
use durable_sql::Database;

use super::support::{Env, copy_folder, file_bytes, image};

/// A failpoint that fires at the `nth` hit of `point` once armed.
struct Trap {
    armed: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
}

fn trap(point: &'static str, nth: usize) -> (Failpoint, Trap) {
    let armed = Arc::new(AtomicBool::new(false));
    let hits = Arc::new(AtomicUsize::new(0));
    let (a, h) = (armed.clone(), hits.clone());
    let f: Failpoint = Arc::new(move |p| {
        p == point && a.load(Ordering::SeqCst) && h.fetch_add(1, Ordering::SeqCst) + 1 == nth
    });
    (f, Trap { armed, hits })
}

fn rows(db: &Database) -> Vec<i64> {
    let mut c = db.exec("SELECT x FROM t ORDER BY x", &[]).unwrap();
    c.raw().map(|r| r.unwrap()[0].get::<i64>().unwrap()).collect()
}

fn small_config(env: &Env) -> ArchiveConfig {
    let mut c = env.config();
    c.merge_after = Duration::from_secs(60);
    c.merge_span = Duration::from_secs(600);
    c.window = Duration::from_secs(3600);
    c.grace = Duration::ZERO;
    c.snapshot_interval = Duration::from_secs(600);
    c
}

const RUNNING_POINTS: &[&str] = &[
    "journal.before_write",
    "journal.torn_write",
    "journal.after_write",
    "journal.before_sync",
    "capture.before_append",
    "capture.after_append",
    "seal.before_rename",
    "checkpoint.before",
    "checkpoint.after",
    "upload.before_put",
    "upload.after_put",
    "upload.before_local_delete",
    "compact.before_snapshot",
    "compact.after_merge_put",
    "retain.before_delete",
];

#[tokio::test]
async fn every_running_step_survives_a_crash() {
    for (n, point) in RUNNING_POINTS.iter().enumerate() {
        for nth in [1, 3] {
            let env = Env::new();
            let (fp, trap) = trap(point, nth);
            let (db, archiver) =
                env.open_with(small_config(&env).with_failpoint(fp)).await.unwrap();
            db.exec("CREATE TABLE t(x INTEGER PRIMARY KEY, pad BLOB)", &[]).unwrap();
            db.commit().unwrap();
            trap.armed.store(true, Ordering::SeqCst);
            let mut committed = Vec::new();
            let mut issued: Vec<(String, Vec<u8>)> = Vec::new();
            'work: for i in 0..120i64 {
                env.clock.advance(90_000);
                db.exec(
                    "INSERT INTO t VALUES (?, randomblob(?))",
                    &[i.into(), (100 + i * 37 % 3000).into()],
                )
                .unwrap();
                db.commit().unwrap();
                committed.push(i);
                if archiver.capture().is_err() {
                    break 'work;
                }
                if i % 4 == 0 {
                    match archiver.current_bookmark() {
                        Ok(b) => issued.push((b, image(&env.path))),
                        Err(_) => break 'work,
                    }
                }
                if i % 6 == 0 && archiver.checkpoint().is_err() {
                    break 'work;
                }
                // Continuous archiving's flush (the open segment rotated out and uploaded)
                // every third commit, the periodic upload of sealed segments and the
                // maintenance every ninth.
                if i % 3 == 1 && archiver.flush().await.is_err() {
                    break 'work;
                }
                if i % 9 == 0
                    && (archiver.upload().await.is_err()
                        || archiver.compact().await.is_err()
                        || archiver.retain().await.is_err())
                {
                    break 'work;
                }
            }
            assert!(trap.hits.load(Ordering::SeqCst) >= nth, "{point} #{nth} never reached");
            // The process dies: no close.
            drop(archiver);
            drop(db);

            let (db, archiver) = env.open_with(small_config(&env)).await.unwrap();
            assert_eq!(rows(&db), committed, "{point} #{nth} ({n}): committed rows");
            let check: String = db
                .internal(|i| {
                    Ok(i.connection()
                        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                        .unwrap())
                })
                .unwrap();
            assert_eq!(check, "ok");
            let now = archiver.current_bookmark().unwrap();
            assert_eq!(
                archiver.image_at(&now).await.unwrap(),
                image(&env.path),
                "{point}: current"
            );
            let window_start = env.clock_now() - 3_600_000;
            for (b, img) in &issued {
                let ts = i64::from_str_radix(&b[26..38], 16).unwrap();
                if ts >= window_start {
                    assert_eq!(archiver.image_at(b).await.unwrap(), *img, "{point}: issued {b}");
                }
            }
            // It goes on normally.
            db.exec("INSERT INTO t VALUES (1000, NULL)", &[]).unwrap();
            db.commit().unwrap();
            archiver.upload().await.unwrap();
            archiver.compact().await.unwrap();
            archiver.retain().await.unwrap();
            archiver.close().await.unwrap();
        }
    }
}

const RESTORE_POINTS: &[&str] = &[
    "restore.before_request",
    "restore.before_image",
    "restore.after_image",
    "restore.after_epoch_start",
    "restore.after_remove_wal",
    "restore.after_swap",
];

#[tokio::test]
async fn every_restore_step_survives_a_crash_and_restores_once() {
    for point in RESTORE_POINTS {
        let env = Env::new();
        let (fp, trap) = trap(point, 1);
        let config = || env.config().with_failpoint(fp.clone());
        let (db, archiver) = env.open_with(config()).await.unwrap();
        db.exec("CREATE TABLE t(x INTEGER PRIMARY KEY, pad BLOB)", &[]).unwrap();
        let mut states = Vec::new();
        for i in 0..30i64 {
            env.clock.advance(1_000);
            db.exec("INSERT INTO t VALUES (?, randomblob(2000))", &[i.into()]).unwrap();
            db.commit().unwrap();
            states.push((archiver.current_bookmark().unwrap(), image(&env.path)));
            if i % 10 == 0 {
                archiver.upload().await.unwrap();
            }
        }
        let (target, expected) = states[12].clone();
        let before = image(&env.path);
        trap.armed.store(true, Ordering::SeqCst);
        let requested = archiver.on_next_session_restore_bookmark(&target);
        if *point == "restore.before_request" {
            assert!(requested.is_err());
            drop((archiver, db));
            let (db, archiver) = env.open_with(env.config()).await.unwrap();
            assert_eq!(archiver.status().epoch, 0, "no request, no restore");
            assert_eq!(rows(&db).len(), 30);
            continue;
        }
        let undo = requested.unwrap();
        drop((archiver, db));
        // The restore crashes at `point` ...
        let failed = env.open_with(config()).await;
        assert!(failed.is_err(), "{point} did not fire");
        assert_eq!(trap.hits.load(Ordering::SeqCst), 1);
        // ... and the next open completes it.
        let (db, archiver) = env.open_with(env.config()).await.unwrap();
        assert_eq!(file_bytes(&env.path), expected, "{point}: restored state");
        assert_eq!(archiver.status().epoch, 1, "{point}: one restore");
        assert_eq!(archiver.image_at(&undo).await.unwrap(), before, "{point}: undo");
        drop((archiver, db));
        let (_db, archiver) = env.open_with(env.config()).await.unwrap();
        assert_eq!(archiver.status().epoch, 1, "{point}: exactly once");
        assert_eq!(file_bytes(&env.path), expected);
    }
}

/// A power loss: the WAL (synced by every commit) keeps every commit, but the journal's
/// later writes, which nothing had synced, are gone, and a journal file deleted after its
/// upload is back with what it held then. The archive has commits the journal lacks; the
/// object must take them from the archive, not capture them from the WAL again (with new
/// times, under positions the archive already holds).
#[tokio::test]
async fn a_journal_that_lost_its_unsynced_tail_follows_the_archive() {
    let env = Env::new();
    let journal = std::path::PathBuf::from(format!("{}-pitr", env.path.display())).join("journal");
    let saved = env.dir.path().join("saved-journal");
    let (db, archiver) = env.open().await;
    db.exec("CREATE TABLE t(x INTEGER PRIMARY KEY, pad BLOB)", &[]).unwrap();
    db.exec("INSERT INTO t VALUES (0, NULL)", &[]).unwrap();
    db.commit().unwrap();
    archiver.capture().unwrap();
    // What the disk will have of the journal after the power loss.
    copy_folder(&journal, &saved);
    archiver.flush().await.unwrap();
    let mut issued = Vec::new();
    for i in 1..4i64 {
        env.clock.advance(1_000);
        db.exec("INSERT INTO t VALUES (?, randomblob(300))", &[i.into()]).unwrap();
        db.commit().unwrap();
        archiver.flush().await.unwrap();
        issued.push((archiver.current_bookmark().unwrap(), image(&env.path)));
    }
    drop((archiver, db));
    std::fs::remove_dir_all(&journal).unwrap();
    copy_folder(&saved, &journal);

    env.clock.advance(60_000);
    let (db, archiver) = env.open().await;
    assert_eq!(rows(&db), vec![0, 1, 2, 3]);
    for (b, img) in &issued {
        assert_eq!(archiver.image_at(b).await.unwrap(), *img, "issued {b}");
    }
    assert_eq!(archiver.current_bookmark().unwrap(), issued[2].0, "no position stamped twice");
    // It goes on normally, and every point of its history rebuilds.
    db.exec("INSERT INTO t VALUES (4, NULL)", &[]).unwrap();
    db.commit().unwrap();
    let last = archiver.current_bookmark().unwrap();
    archiver.flush().await.unwrap();
    archiver.close().await.unwrap();
    let (db, archiver) = env.open().await;
    assert_eq!(rows(&db), vec![0, 1, 2, 3, 4]);
    assert_eq!(archiver.image_at(&last).await.unwrap(), image(&env.path));
    for (b, img) in &issued {
        assert_eq!(archiver.image_at(b).await.unwrap(), *img, "issued {b} after more history");
    }
}
