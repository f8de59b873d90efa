//! A group-committing database (`Durability::Group`): commits reach the WAL before the disk,
//! the commit pipeline's sync threads fsync them, and the archiver captures what each sync
//! made durable, several commits at a time. Every commit must still be its own point of
//! history, nothing is captured before it is durable, and every bookmark must rebuild exactly.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use durable_pitr::Archiver;
use durable_sql::{Durability, Options, SqlValue};

use super::support::{Env, image};

/// Holds the pipeline's sync threads until `open` is called.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    fn hook(&self) -> durable_sql::pipeline::SyncHook {
        let gate = self.clone();
        Arc::new(move || {
            let (shut, cv) = &*gate.0;
            let mut shut = shut.lock().unwrap();
            while *shut {
                shut = cv.wait(shut).unwrap();
            }
            Ok(())
        })
    }

    fn set(&self, shut: bool) {
        *self.0.0.lock().unwrap() = shut;
        self.0.1.notify_all();
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[tokio::test]
async fn captures_follow_syncs_and_keep_every_commit_a_point_of_history() {
    let env = Env::new();
    let options = Options::new().durability(Durability::Group);
    let (db, archiver) = Archiver::open(&env.path, options, env.config()).await.unwrap();
    let start = archiver.status().seq;

    // While the sync threads are held, commits are made but not durable: not captured.
    let gate = Gate::default();
    gate.set(true);
    db.set_sync_hook(Some(gate.hook()));
    db.exec("CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)", &[]).unwrap();
    db.commit().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(archiver.status().seq, start, "captured before it was durable");
    gate.set(false);
    wait_for("the capture after the sync", || archiver.status().seq == start + 1);
    db.set_sync_hook(None);

    // 120 commits with a sync every 10 (a sync covers several commits), with enough pages
    // for the archiver to checkpoint (every 40 frames here) along the way.
    let mut points = Vec::new();
    for i in 0..120_i64 {
        let params = [SqlValue::Integer(i), SqlValue::Blob(vec![i as u8; 1500])];
        db.exec("INSERT INTO t VALUES (?, ?)", &params).unwrap();
        db.commit().unwrap();
        if i % 10 == 9 {
            db.sync().unwrap();
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
