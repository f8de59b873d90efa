//! (b'), (b'') and (k) Group commit: commits through the object runtime with every event in flight at once,
//! against raw rusqlite making the same commits one fsync each.
//!
//! `k-one`: one object receives `n` events at once, each one `put` (one turn, one commit).
//! With group commit the object runs its next turns while a sync is in flight, and one sync
//! covers them all. `k-many`: 100 objects receive `n / 100` such events each, all at once:
//! many objects' syncs are in flight together, and the filesystem folds them into shared
//! journal commits. The `-fsync` rows are the same through storage opened without group
//! commit (each turn's `COMMIT` fsyncs before the turn ends). Raw: the same commits as
//! autocommit upserts under `synchronous=FULL`, on as many threads as the runtime has
//! workers (2), each working through its share of the connections in turn.
//!
//! Ours runs every object through a `durable_storage::Namespace` (`Namespace::object`), with
//! the options each mode names.

use std::sync::Arc;
use std::time::{Duration, Instant};

use durable_sql::{Durability, Options};
use durable_storage::{Archive, Namespace, NamespaceOptions, ObjectHandle};
use durable_txn::Actor;
use rusqlite::params;

use super::{
    BenchResult, Config, RAW_KV_CREATE, RAW_KV_PUT, Row, V, key, namespace, pair, raw_open, row,
    tempdir,
};

const VALUE: V = V { v: 1 };
const WORKERS: usize = 2;

struct Plain;
impl Actor for Plain {}

/// How the namespace of (k) opens its objects.
#[derive(Clone, Copy)]
enum Mode {
    /// `Durability::Full`: an fsync inside every `COMMIT`; no archive.
    Fsync,
    /// `Durability::Group` (group commit); no archive.
    Group,
    /// The namespace's defaults, with the local archive: exclusive locking, group commit and
    /// the WAL archiver, whose captures run on the sync threads after each fsync.
    GroupArchived,
}

/// Group commit, normal locking, no archive.
fn group_namespace(dir: &std::path::Path) -> BenchResult<Namespace> {
    namespace(dir, Options::new().durability(Durability::Group), Archive::Off)
}

fn open_namespace(dir: &std::path::Path, mode: Mode) -> BenchResult<Namespace> {
    match mode {
        Mode::Fsync => namespace(dir, Options::default(), Archive::Off),
        Mode::Group => group_namespace(dir),
        Mode::GroupArchived => {
            Ok(Namespace::open(dir, NamespaceOptions::new().archive(Archive::Local))?)
        }
    }
}

/// `objects` objects on the runtime, `per_object` events each, all sent at once; the time
/// until every result came back.
fn ours(
    rt: &tokio::runtime::Runtime,
    objects: usize,
    per_object: usize,
    mode: Mode,
) -> BenchResult<Duration> {
    let dir = tempdir()?;
    let ns = open_namespace(dir.path(), mode)?;
    rt.block_on(async move {
        let handles: Vec<ObjectHandle<Plain>> = (0..objects)
            .map(|o| ns.object(&format!("o{o}"), |_| Plain))
            .collect::<Result<_, _>>()?;
        // Open every object and create its table before the clock starts.
        for h in &handles {
            h.call(|ctx| async move { ctx.storage().put("warm", &VALUE).await }).await??;
        }
        let start = Instant::now();
        let mut calls = Vec::with_capacity(objects * per_object);
        for h in &handles {
            for i in 0..per_object {
                let h = h.clone();
                calls.push(tokio::spawn(async move {
                    h.call(move |ctx| async move { ctx.storage().put(&key(i), &VALUE).await }).await
                }));
            }
        }
        for call in calls {
            call.await???;
        }
        Ok(start.elapsed())
    })
}

fn raw(objects: usize, per_object: usize) -> BenchResult<Duration> {
    let dir = tempdir()?;
    let value = durable_kv::codec::encode(&VALUE)?;
    let conns: Vec<rusqlite::Connection> = (0..objects)
        .map(|o| {
            let conn = raw_open(&dir.path().join(format!("o{o}.sqlite")), false)?;
            conn.execute(RAW_KV_CREATE, [])?;
            conn.execute(RAW_KV_PUT, params!["warm", value])?;
            Ok(conn)
        })
        .collect::<BenchResult<_>>()?;
    let mut shares: Vec<Vec<rusqlite::Connection>> = (0..WORKERS).map(|_| Vec::new()).collect();
    for (o, conn) in conns.into_iter().enumerate() {
        shares[o % WORKERS].push(conn);
    }
    let value = Arc::new(value);
    let start = Instant::now();
    let threads: Vec<_> = shares
        .into_iter()
        .map(|share| {
            let value = value.clone();
            std::thread::spawn(move || -> Result<(), String> {
                for conn in &share {
                    let mut put = conn.prepare_cached(RAW_KV_PUT).map_err(|e| e.to_string())?;
                    for i in 0..per_object {
                        put.execute(params![key(i), *value]).map_err(|e| e.to_string())?;
                    }
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| "raw thread panicked")??;
    }
    Ok(start.elapsed())
}

/// (b') and (b'') One event on the runtime doing `n` × (`put`; then a yield, or
/// `sync().await`). A yield ends the turn, so `n` commits, as the runtime benchmark's
/// `await put; await setTimeout(0)` loop; the event's result waits for the last commit's sync,
/// the ones before it are synced meanwhile. `sync().await` commits and waits for that commit's
/// fsync every time, as its `await storage.sync()` loop.
fn ours_one_event(
    rt: &tokio::runtime::Runtime,
    n: usize,
    sync_each: bool,
) -> BenchResult<Duration> {
    let dir = tempdir()?;
    let ns = group_namespace(dir.path())?;
    rt.block_on(async move {
        let object = ns.object("o", |_| Plain)?;
        object.call(|ctx| async move { ctx.storage().put("warm", &VALUE).await }).await??;
        let start = Instant::now();
        object
            .call(move |ctx| async move {
                for i in 0..n {
                    ctx.storage().put(&key(i), &VALUE).await?;
                    if sync_each {
                        ctx.storage().sync().await?;
                    } else {
                        tokio::task::yield_now().await;
                    }
                }
                Ok::<_, durable_txn::Error>(())
            })
            .await??;
        Ok(start.elapsed())
    })
}

/// Runs (b'), (b'') and (k).
pub fn run(config: &Config, rows: &mut Vec<Row>) -> BenchResult<()> {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(WORKERS).enable_all().build()?;
    let runs = config.slow_runs();
    if config.wants("b'") {
        let n = config.size(10_000, 500);
        let timed = pair(runs, || ours_one_event(&rt, n, false), || raw(1, n))?;
        rows.push(row("b'", "runtime: 1 event, n × (put; yield) = n commits", n, None, timed));
        let timed = pair(runs, || ours_one_event(&rt, n, true), || raw(1, n))?;
        rows.push(row("b''", "runtime: 1 event, n × (put; sync().await)", n, None, timed));
    }
    if !config.wants("k") {
        return Ok(());
    }
    let n = config.size(2_000, 200);
    let cases: [(&str, &str, usize, Mode); 5] = [
        ("k-one", "1 object, all events in flight, group commit", 1, Mode::Group),
        ("k-one-fsync", "1 object, all events in flight, fsync per commit", 1, Mode::Fsync),
        ("k-many", "100 objects, all events in flight, group commit", 100, Mode::Group),
        ("k-many-fsync", "100 objects, all events in flight, fsync per commit", 100, Mode::Fsync),
        (
            "k-one-archived",
            "1 object, all events in flight, group commit, archiver on",
            1,
            Mode::GroupArchived,
        ),
    ];
    for (id, name, objects, mode) in cases {
        let per_object = n / objects;
        let timed =
            pair(runs, || ours(&rt, objects, per_object, mode), || raw(objects, per_object))?;
        rows.push(row(id, name, objects * per_object, None, timed));
    }
    Ok(())
}
