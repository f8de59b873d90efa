//! A group-committing host: the database runs under `synchronous=NORMAL`, the host syncs the
//! WAL and captures on its sync threads (`capture_on_commit: false`, `sync_then_capture`),
//! several commits per capture. Every commit must still be its own point of history, and
//! every bookmark must rebuild exactly.

use durable_pitr::Archiver;
use durable_sql::{Options, SqlValue, Synchronous};

use super::support::{Env, image};

#[tokio::test]
async fn captures_after_syncs_keep_every_commit_a_point_of_history() {
    let env = Env::new();
    let mut config = env.config();
    config.capture_on_commit = false;
    let options = Options { synchronous: Synchronous::Normal, ..Options::default() };
    let (db, archiver) = Archiver::open(&env.path, options, config).await.unwrap();
    let wal = db.wal_sync();
    let start = archiver.status().seq;

    db.exec("CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)", &[]).unwrap();
    db.commit().unwrap();
    assert_eq!(archiver.status().seq, start, "captured inside the commit");
    archiver.sync_then_capture(&wal).unwrap();
    assert_eq!(archiver.status().seq, start + 1);

    // 120 commits, one sync and capture per 10 (a pool sync covers several commits), with
    // enough pages for the archiver to checkpoint (every 40 frames here) along the way.
    let mut points = Vec::new();
    for i in 0..120_i64 {
        let params = [SqlValue::Integer(i), SqlValue::Blob(vec![i as u8; 1500])];
        db.exec("INSERT INTO t VALUES (?, ?)", &params).unwrap();
        db.commit().unwrap();
        if i % 10 == 9 {
            archiver.sync_then_capture(&wal).unwrap();
            let bookmark = archiver.current_bookmark().unwrap();
            points.push((bookmark, image(&env.path)));
        }
    }
    assert_eq!(archiver.status().seq, start + 121, "one point per commit");
    for (bookmark, expected) in &points {
        assert_eq!(&archiver.image_at(bookmark).await.unwrap(), expected, "{bookmark}");
    }

    // Commits not captured yet are captured by the calls that need them.
    db.exec("DELETE FROM t WHERE k < 50", &[]).unwrap();
    db.commit().unwrap();
    let now = archiver.current_bookmark().unwrap();
    assert_eq!(archiver.status().seq, start + 122);
    assert_eq!(archiver.image_at(&now).await.unwrap(), image(&env.path));
}
