//! Benchmarks of the archiver: commit throughput with the archiver on and off (coalesced
//! writes and one write per commit), and restore speed in MB/s (a rebuild from the archive,
//! and a whole restore on open).

use std::sync::Arc;

use divan::Bencher;
use divan::counter::{BytesCount, ItemsCount};
use durable_pitr::{ArchiveConfig, Archiver};
use durable_sql::testing::ManualClock;
use durable_sql::{Database, Options};

fn main() {
    divan::main();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap()
}

fn config(path: &std::path::Path) -> ArchiveConfig {
    ArchiveConfig::local_for(path)
        .unwrap()
        .with_clock(Arc::new(ManualClock::new(1_700_000_000_000)))
}

/// Commits of `rows` 100-byte inserts each, with or without the archiver.
fn commits(bencher: Bencher<'_, '_>, rows: usize, archiver_on: bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.sqlite");
    let rt = runtime();
    let (db, archiver) = if archiver_on {
        let (db, a) =
            rt.block_on(Archiver::open(&path, Options::default(), config(&path))).unwrap();
        (db, Some(a))
    } else {
        (Database::open(&path, Options::default()).unwrap(), None)
    };
    db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)", &[]).unwrap();
    db.commit().unwrap();
    bencher.counter(ItemsCount::new(rows)).bench_local(|| {
        for _ in 0..rows {
            db.exec("INSERT INTO t(v) VALUES (randomblob(100))", &[]).unwrap();
        }
        db.commit().unwrap();
        if let Some(a) = &archiver {
            // What the host does after each turn: capture (and checkpoint when due).
            a.capture().unwrap();
        }
    });
}

/// 100 writes coalesced into one commit.
#[divan::bench(args = [false, true])]
fn coalesced_commit(bencher: Bencher<'_, '_>, archiver_on: bool) {
    commits(bencher, 100, archiver_on);
}

/// One write per commit.
#[divan::bench(args = [false, true])]
fn single_write_commit(bencher: Bencher<'_, '_>, archiver_on: bool) {
    commits(bencher, 1, archiver_on);
}

/// An object of about 8 MB with 200 commits of history, archived with a snapshot.
fn archived_object(rt: &tokio::runtime::Runtime) -> (tempfile::TempDir, String, u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.sqlite");
    let (db, archiver) =
        rt.block_on(Archiver::open(&path, Options::default(), config(&path))).unwrap();
    db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)", &[]).unwrap();
    for i in 0..200i64 {
        db.exec("INSERT OR REPLACE INTO t VALUES (?, randomblob(40000))", &[(i % 200).into()])
            .unwrap();
        db.commit().unwrap();
        archiver.capture().unwrap();
        if i == 100 {
            rt.block_on(async {
                archiver.seal().unwrap();
                archiver.upload().await.unwrap();
                archiver.compact().await.unwrap();
            });
        }
    }
    let bookmark = archiver.current_bookmark().unwrap();
    let size = db.database_size().unwrap();
    rt.block_on(archiver.close()).unwrap();
    drop(db);
    (dir, bookmark, size)
}

/// Rebuilding the newest state from the archive (snapshot plus segments), in memory.
#[divan::bench(sample_count = 10)]
fn rebuild_from_archive(bencher: Bencher<'_, '_>) {
    let rt = runtime();
    let (dir, bookmark, size) = archived_object(&rt);
    let path = dir.path().join("bench.sqlite");
    let (_db, archiver) =
        rt.block_on(Archiver::open(&path, Options::default(), config(&path))).unwrap();
    bencher.counter(BytesCount::new(size)).bench_local(|| {
        rt.block_on(archiver.image_at(&bookmark)).unwrap();
    });
}

/// A whole restore on open: request, rebuild, EPOCH_START, file swap, open.
#[divan::bench(sample_count = 10)]
fn restore_on_open(bencher: Bencher<'_, '_>) {
    let rt = runtime();
    let (dir, bookmark, size) = archived_object(&rt);
    let path = dir.path().join("bench.sqlite");
    bencher.counter(BytesCount::new(size)).bench_local(|| {
        rt.block_on(async {
            let (db, archiver) =
                Archiver::open(&path, Options::default(), config(&path)).await.unwrap();
            archiver.on_next_session_restore_bookmark(&bookmark).unwrap();
            drop((archiver, db));
            let (db, archiver) =
                Archiver::open(&path, Options::default(), config(&path)).await.unwrap();
            drop((archiver, db));
        });
    });
}
