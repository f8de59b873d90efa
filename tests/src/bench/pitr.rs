//! (h) Commit throughput with the point-in-time-recovery archiver on and off, and (i) restore
//! speed in MB/s.

use std::path::Path;
use std::time::Duration;

use durable_pitr::{ArchiveConfig, Archiver};
use durable_sql::Options;
use durable_txn::Storage;
use rusqlite::params;

use super::{
    BenchResult, Config, RAW_KV_CREATE, RAW_KV_PUT, Row, Stats, V, key, pair, raw_open, row,
    tempdir, time,
};

const VALUE: V = V { v: 1 };

/// `n` commits of one KV put each, with the archiver capturing after each (as a host does
/// after every turn) or without it.
fn commits(rt: &tokio::runtime::Runtime, n: usize, archiver_on: bool) -> BenchResult<Duration> {
    let dir = tempdir()?;
    let path = dir.path().join("ours.sqlite");
    let (storage, archiver) = if archiver_on {
        let config = ArchiveConfig::local_for(&path)?;
        let (db, archiver) = rt.block_on(Archiver::open(&path, Options::default(), config))?;
        (Storage::new(db), Some(archiver))
    } else {
        (Storage::open(&path, Options::default())?, None)
    };
    storage.kv()?.put("warm", &VALUE)?;
    storage.end_turn()?;
    if let Some(a) = &archiver {
        a.capture()?;
    }
    let took = time(|| {
        let kv = storage.kv()?;
        for i in 0..n {
            kv.put(&key(i), &VALUE)?;
            storage.end_turn()?;
            if let Some(a) = &archiver {
                a.capture()?;
            }
        }
        Ok(())
    })?;
    if let Some(a) = archiver {
        rt.block_on(a.close())?;
    }
    Ok(took)
}

fn raw_commits(n: usize) -> BenchResult<Duration> {
    let dir = tempdir()?;
    let conn = raw_open(&dir.path().join("raw.sqlite"), false)?;
    conn.execute(RAW_KV_CREATE, [])?;
    let value = durable_kv::codec::encode(&VALUE)?;
    let mut put = conn.prepare(RAW_KV_PUT)?;
    put.execute(params!["warm", value])?;
    time(|| {
        for i in 0..n {
            put.execute(params![key(i), value])?;
        }
        Ok(())
    })
}

/// An archived object of `commits` commits of 40 kB rows (about `commits` × 40 kB), with a
/// snapshot half way; returns the newest bookmark and the database size.
fn archived(
    rt: &tokio::runtime::Runtime,
    path: &Path,
    commits: usize,
) -> BenchResult<(String, u64)> {
    let (db, archiver) =
        rt.block_on(Archiver::open(path, Options::default(), ArchiveConfig::local_for(path)?))?;
    db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)", &[])?;
    for i in 0..commits as i64 {
        db.exec("INSERT OR REPLACE INTO t VALUES (?, randomblob(40000))", &[i.into()])?;
        db.commit()?;
        archiver.capture()?;
        if i == commits as i64 / 2 {
            rt.block_on(async {
                archiver.seal()?;
                archiver.upload().await?;
                archiver.compact().await?;
                Ok::<(), durable_pitr::Error>(())
            })?;
        }
    }
    let bookmark = archiver.current_bookmark()?;
    let size = db.database_size()?;
    rt.block_on(archiver.close())?;
    drop(db);
    Ok((bookmark, size))
}

fn mb_row(id: &str, name: &str, bytes: u64, took: &[Duration]) -> Row {
    let rates: Vec<f64> = took.iter().map(|d| bytes as f64 / 1e6 / d.as_secs_f64()).collect();
    Row {
        id: id.into(),
        name: name.into(),
        unit: "MB/s",
        n: bytes as usize,
        ours: Stats::of(&rates),
        raw: None,
        target: None,
        higher_is_better: true,
        absolute_target: false,
        min_ours: None,
    }
}

/// Runs (h) and (i).
pub fn run(config: &Config, rows: &mut Vec<Row>) -> BenchResult<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
    if config.wants("h") {
        let n = config.size(2_000, 200);
        let runs = config.slow_runs();
        let on = pair(runs, || commits(&rt, n, true), || raw_commits(n))?;
        rows.push(row("h-on", "commits (1 put each), archiver on", n, Some(0.9), on));
        let off = pair(runs, || commits(&rt, n, false), || raw_commits(n))?;
        rows.push(row("h-off", "commits (1 put each), archiver off", n, Some(0.9), off));
    }
    if config.wants("i") {
        let dir = tempdir()?;
        let path = dir.path().join("archived.sqlite");
        let (bookmark, size) = archived(&rt, &path, config.size(200, 40))?;
        let mut rebuild = Vec::new();
        let mut restore = Vec::new();
        for _ in 0..config.slow_runs() {
            let (db, archiver) = rt.block_on(Archiver::open(
                &path,
                Options::default(),
                ArchiveConfig::local_for(&path)?,
            ))?;
            rebuild.push(time(|| {
                rt.block_on(archiver.image_at(&bookmark))?;
                Ok(())
            })?);
            archiver.on_next_session_restore_bookmark(&bookmark)?;
            rt.block_on(archiver.close())?;
            drop(db);
            restore.push(time(|| {
                let (db, archiver) = rt.block_on(Archiver::open(
                    &path,
                    Options::default(),
                    ArchiveConfig::local_for(&path)?,
                ))?;
                rt.block_on(archiver.close())?;
                drop(db);
                Ok(())
            })?);
        }
        rows.push(mb_row("i-image", "rebuild an image from the archive", size, &rebuild));
        rows.push(mb_row("i-restore", "restore on open (rebuild, swap, open)", size, &restore));
    }
    Ok(())
}
