//! `ArchiveReader::check`: a healthy archive reports nothing; a segment deleted from the
//! middle of the chain is a gap, and so is history missing between a snapshot and the chain.

use durable_pitr::object_store::ObjectStoreExt;
use durable_pitr::object_store::path::Path as StorePath;
use durable_pitr::{ArchiveCheck, ArchiveReader, Archiver};
use durable_sql::Database;

use super::support::Env;

/// Writes `n` commits, each uploaded as a segment of its own.
async fn commits(db: &Database, archiver: &Archiver, n: usize) {
    db.exec("CREATE TABLE IF NOT EXISTS t(x INTEGER PRIMARY KEY, pad BLOB)", &[]).unwrap();
    for _ in 0..n {
        db.exec("INSERT INTO t(pad) VALUES (randomblob(200))", &[]).unwrap();
        db.commit().unwrap();
        archiver.flush().await.unwrap();
    }
}

/// The names under `objects/one/{dir}`, sorted.
async fn names(env: &Env, dir: &str) -> Vec<String> {
    use futures_util::TryStreamExt;
    let p = StorePath::from(format!("objects/one/{dir}"));
    let metas: Vec<_> = env.store.list(Some(&p)).try_collect().await.unwrap();
    let mut names: Vec<String> =
        metas.iter().map(|m| m.location.filename().unwrap().to_owned()).collect();
    names.sort();
    names
}

/// A segment name's first and last positions.
fn range(name: &str) -> (u64, u64) {
    (
        u64::from_str_radix(&name[9..25], 16).unwrap(),
        u64::from_str_radix(&name[26..42], 16).unwrap(),
    )
}

async fn check(env: &Env) -> ArchiveCheck {
    ArchiveReader::open(&env.config()).await.unwrap().check()
}

#[tokio::test]
async fn a_healthy_archive_reports_nothing() {
    let env = Env::new();
    let (db, archiver) = env.open().await;
    commits(&db, &archiver, 4).await;
    assert!(archiver.compact().await.unwrap(), "a snapshot");
    commits(&db, &archiver, 2).await;
    let found = check(&env).await;
    assert_eq!(found, ArchiveCheck::default());
    assert!(found.is_healthy());
}

#[tokio::test]
async fn a_deleted_middle_segment_is_a_gap() {
    let env = Env::new();
    let (db, archiver) = env.open().await;
    commits(&db, &archiver, 5).await;
    let segments = names(&env, "seg").await;
    assert!(segments.len() >= 4, "{segments:?}");
    let middle = &segments[segments.len() / 2];
    env.store.delete(&StorePath::from(format!("objects/one/seg/{middle}"))).await.unwrap();
    let (first, last) = range(middle);
    let found = check(&env).await;
    assert_eq!(found.gaps, [first..=last], "{segments:?}");
    assert!(found.straddling.is_empty() && found.superseded.is_empty(), "{found:?}");
    assert!(!found.is_healthy());
    // The rebuild past the gap fails, which is what the check foretells.
    let err = ArchiveReader::open(&env.config()).await.unwrap().latest_image().await.unwrap_err();
    assert!(err.to_string().contains(&format!("seq {first}")), "{err}");
}

#[tokio::test]
async fn history_missing_between_the_newest_snapshot_and_the_chain_is_a_gap() {
    let env = Env::new();
    let (db, archiver) = env.open().await;
    commits(&db, &archiver, 3).await;
    assert!(archiver.compact().await.unwrap(), "a snapshot");
    commits(&db, &archiver, 4).await;
    let snapshot = names(&env, "snap").await;
    let snap_seq = u64::from_str_radix(&snapshot[0][9..25], 16).unwrap();
    // Everything up to the snapshot is retention's to delete; the segment after it is not.
    let segments = names(&env, "seg").await;
    let mut removed = Vec::new();
    for name in &segments {
        let (first, last) = range(name);
        if last <= snap_seq + 1 {
            env.store.delete(&StorePath::from(format!("objects/one/seg/{name}"))).await.unwrap();
            removed.push((first, last));
        }
    }
    assert!(removed.iter().any(|r| r.0 > snap_seq), "one past the snapshot: {segments:?}");
    let found = check(&env).await;
    let end = removed.iter().map(|r| r.1).max().unwrap();
    assert_eq!(found.gaps, [snap_seq + 1..=end], "{segments:?} snapshot at {snap_seq}");
}
