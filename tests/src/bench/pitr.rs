//! (h) Commit throughput with the point-in-time-recovery archiver on and off, and (i) restore
//! speed in MB/s. Ours opens its objects through a `durable_storage::Namespace` with
//! durable-sql's default options (an fsync inside every `COMMIT`), with the local archive
//! (`Archive::Local`, whose archiver captures each commit by itself) or none.

use std::path::Path;
use std::time::Duration;

use durable_sql::Options;
use durable_storage::{Archive, Namespace};
use rusqlite::params;

use super::{
    BenchResult, Config, RAW_KV_CREATE, RAW_KV_PUT, Row, Stats, V, keep, key, namespace, pair,
    raw_open, row, tempdir, time,
};

const VALUE: V = V { v: 1 };

/// The namespace of (h) and (i): durable-sql's default options, archived or not.
fn archived_namespace(dir: &Path, archive: bool) -> BenchResult<Namespace> {
    namespace(dir, Options::default(), if archive { Archive::Local } else { Archive::Off })
}

/// `n` commits of one KV put each, with the archiver on (it captures every commit as the
/// commit pipeline reports it durable) or off.
fn commits(n: usize, archiver_on: bool) -> BenchResult<Duration> {
    let dir = tempdir()?;
    let storage = archived_namespace(dir.path(), archiver_on)?.storage("ours")?;
    storage.kv()?.put("warm", &VALUE)?;
    storage.end_turn()?;
    time(|| {
        let kv = storage.kv()?;
        for i in 0..n {
            kv.put(&key(i), &VALUE)?;
            storage.end_turn()?;
        }
        Ok(())
    })
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

/// The archived object (i) measures: `commits` commits of 40 kB rows (about `commits` × 40 kB)
/// with a snapshot half way (the object closed, which seals its journal, then reopened and
/// its archive maintained: upload and compaction); returns the newest bookmark and the
/// database size. The object is closed on return.
fn archived(ns: &Namespace, name: &str, commits: usize) -> BenchResult<(String, u64)> {
    let mut storage = ns.storage(name)?;
    storage.sql()?.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)", &[])?;
    for i in 0..commits as i64 {
        storage
            .sql()?
            .exec("INSERT OR REPLACE INTO t VALUES (?, randomblob(40000))", &[i.into()])?;
        storage.end_turn()?;
        if i == commits as i64 / 2 {
            drop(storage);
            storage = ns.storage(name)?;
            storage.maintain_archive()?;
        }
    }
    let bookmark = storage.current_bookmark()?;
    let size = storage.database_size()?;
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
    if config.wants("h") {
        let n = config.size(2_000, 200);
        let runs = config.slow_runs();
        let on = pair(runs, || commits(n, true), || raw_commits(n))?;
        rows.push(row("h-on", "commits (1 put each), archiver on", n, Some(0.9), on));
        let off = pair(runs, || commits(n, false), || raw_commits(n))?;
        rows.push(row("h-off", "commits (1 put each), archiver off", n, Some(0.9), off));
    }
    if config.wants("i") {
        let dir = tempdir()?;
        let ns = archived_namespace(dir.path(), true)?;
        let name = "archived";
        let (bookmark, size) = archived(&ns, name, config.size(200, 40))?;
        let mut rebuild = Vec::new();
        let mut restore = Vec::new();
        for _ in 0..config.slow_runs() {
            let storage = ns.storage(name)?;
            rebuild.push(time(|| {
                keep(storage.image_at(&bookmark)?);
                Ok(())
            })?);
            storage.on_next_session_restore_bookmark(&bookmark)?;
            drop(storage);
            // Reopening the object applies the restore; closing it checkpoints and seals.
            restore.push(time(|| {
                drop(ns.storage(name)?);
                Ok(())
            })?);
        }
        rows.push(mb_row("i-image", "rebuild an image from the archive", size, &rebuild));
        rows.push(mb_row("i-restore", "restore on open (rebuild, swap, open)", size, &restore));
    }
    Ok(())
}
