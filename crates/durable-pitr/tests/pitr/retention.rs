//! Retention over 31 fake days: exactly what restoring any point of the window needs is kept,
//! older points are refused, merged segments keep every commit, and a pending restore's
//! target is never deleted.

use std::time::Duration;

use durable_pitr::{BookmarkError, Error};

use super::support::{DAY, Env, file_bytes, image};

#[tokio::test]
async fn thirty_one_days() {
    let env = Env::new();
    let mut config = env.config();
    config.grace = Duration::ZERO;
    config.segment_max_bytes = 1 << 20;
    let (db, archiver) = env.open_with(config.clone()).await.unwrap();
    db.exec("CREATE TABLE t(x INTEGER PRIMARY KEY, pad BLOB)", &[]).unwrap();
    db.commit().unwrap();
    let mut states: Vec<(i64, String, Vec<u8>)> = Vec::new();
    // Every 2 fake hours: a few commits, then the maintenance steps.
    for hour in (0..31 * 24).step_by(2) {
        for k in 0..3i64 {
            env.clock.advance(40 * 60_000);
            db.exec(
                "INSERT OR REPLACE INTO t VALUES (?, randomblob(1500))",
                &[((hour * 3 + k) % 200).into()],
            )
            .unwrap();
            db.commit().unwrap();
            archiver.capture().unwrap();
        }
        if hour % 5 == 0 {
            states.push((env.clock_now(), archiver.current_bookmark().unwrap(), image(&env.path)));
        }
        archiver.upload().await.unwrap();
        archiver.compact().await.unwrap();
        archiver.retain().await.unwrap();
    }
    let now = env.clock_now();
    let window_start = now - 30 * DAY;
    // Merging: far fewer segments than the 372 sealed ones (and every commit still a
    // position, as the rebuilds below show).
    let status = archiver.status();
    assert!(status.archived_segments < 100, "{status:?}");
    let mut kept = 0;
    for (t, b, img) in &states {
        let ts = i64::from_str_radix(&b[26..38], 16).unwrap();
        if ts >= window_start {
            assert_eq!(archiver.image_at(b).await.unwrap(), *img, "in the window: {b} at {t}");
            kept += 1;
        } else {
            let err = archiver.on_next_session_restore_bookmark(b).unwrap_err();
            assert!(matches!(err, Error::Bookmark(BookmarkError::OutOfWindow { .. })), "{err}");
        }
    }
    assert!(kept > 50 && kept < states.len(), "{kept} of {}", states.len());
    // The time at the window's start restores (the state then).
    let at_start = archiver.bookmark_for_time(window_start).await.unwrap();
    archiver.image_at(&at_start).await.unwrap();
    // Exactly what is needed: one snapshot at or before the window's start, nothing older.
    let names = list(&env, "objects/one/snap").await;
    let snaps: Vec<(u64, i64)> = names
        .iter()
        .map(|n| {
            (
                u64::from_str_radix(&n[9..25], 16).unwrap(),
                i64::from_str_radix(&n[26..38], 16).unwrap(),
            )
        })
        .collect();
    let before: Vec<_> = snaps.iter().filter(|(_, ts)| *ts <= window_start).collect();
    assert_eq!(before.len(), 1, "one anchor snapshot: {snaps:?}");
    let anchor = before[0].0;
    let segs = list(&env, "objects/one/seg").await;
    let first_seqs: Vec<u64> =
        segs.iter().map(|n| u64::from_str_radix(&n[9..25], 16).unwrap()).collect();
    let last_seqs: Vec<u64> =
        segs.iter().map(|n| u64::from_str_radix(&n[26..42], 16).unwrap()).collect();
    assert!(last_seqs.iter().all(|l| *l >= anchor), "no segment ends before the anchor");
    assert!(first_seqs.iter().any(|f| *f <= anchor + 1), "the anchor's successors are kept");
    assert!(!first_seqs.contains(&0), "day one's history is gone");
    // What retention and merges leave is whole: no gap before the anchor counts.
    let found = durable_pitr::ArchiveReader::open(&config).await.unwrap().check();
    assert_eq!(found, durable_pitr::ArchiveCheck::default());
}

async fn list(env: &Env, prefix: &str) -> Vec<String> {
    use futures_util::TryStreamExt;
    let p = durable_pitr::object_store::path::Path::from(prefix);
    let metas: Vec<_> = env.store.list(Some(&p)).try_collect().await.unwrap();
    let mut names: Vec<String> =
        metas.iter().map(|m| m.location.filename().unwrap().to_owned()).collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_pending_restore_pins_its_target() {
    let env = Env::new();
    let mut config = env.config();
    config.grace = Duration::ZERO;
    let (db, archiver) = env.open_with(config.clone()).await.unwrap();
    db.exec("CREATE TABLE t(x INTEGER PRIMARY KEY, pad BLOB)", &[]).unwrap();
    db.commit().unwrap();
    let mut target = None;
    for day in 0..34 {
        env.clock.advance(DAY);
        db.exec("INSERT INTO t VALUES (?, randomblob(3000))", &[(day as i64).into()]).unwrap();
        db.commit().unwrap();
        if day == 5 {
            target = Some((archiver.current_bookmark().unwrap(), image(&env.path)));
        }
        if day == 34 - 1 - 30 + 5 {
            // 29 days after the target: still inside the window.
            let undo =
                archiver.on_next_session_restore_bookmark(&target.as_ref().unwrap().0).unwrap();
            assert!(undo > target.as_ref().unwrap().0);
        }
        archiver.upload().await.unwrap();
        archiver.compact().await.unwrap();
        archiver.retain().await.unwrap();
    }
    // The target is now past the window, but it was requested in time: kept and restored.
    archiver.close().await.unwrap();
    drop(db);
    let (_db, archiver) = env.open_with(config).await.unwrap();
    assert_eq!(file_bytes(&env.path), target.unwrap().1);
    assert_eq!(archiver.status().epoch, 1);
}
