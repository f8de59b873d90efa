//! KV workloads: (a) sync puts in one turn, (a') async puts in one turn, (b) one commit per
//! put, (c) gets, (d) list, and (j) the KV-backed path over the write-behind cache.
//!
//! Ours opens every object through a `durable_storage::Namespace` (no archive, the options
//! each workload names); (j-*-memory-txn) measures durable-txn's KV-backed `Storage` over a
//! `MemoryBackend` alone, a backend no namespace offers.

use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

use durable_backend::cache::CacheOptions;
use durable_backend::{KvBackend, MemoryBackend};
use durable_kv::ListOptions;
use durable_sql::Options;
use durable_storage::{Archive, Backend, Namespace, NamespaceOptions, StorageHandle};
use durable_txn::{Op, Storage, TurnEnd};
use rusqlite::params;

use super::{
    BenchResult, Config, RAW_KV_CREATE, RAW_KV_PUT, Row, V, fill_kv, keep, key, open_object, pair,
    raw_open, row, tempdir, time,
};

const VALUE: V = V { v: 1 };

/// Reads keys `0..n` through the async API, each one present.
fn get_all(rt: &tokio::runtime::Runtime, storage: &Storage, n: usize) -> BenchResult<()> {
    for i in 0..n {
        let v: Option<V> = wait(rt, storage.get(&key(i)))?;
        keep(v.ok_or("missing key")?);
    }
    Ok(())
}

/// Waits for an `Op` (ready at once on SQLite; a flush or a miss on the KV-backed path).
fn wait<T>(rt: &tokio::runtime::Runtime, op: Op<T>) -> BenchResult<T> {
    match op.now() {
        Ok(result) => Ok(result?),
        Err(op) => Ok(rt.block_on(op)?),
    }
}

/// Ends the turn and waits until its writes are durable.
fn end_turn(rt: &tokio::runtime::Runtime, storage: &Storage) -> BenchResult<()> {
    if let TurnEnd::Flushing { durable, .. } = storage.end_turn()? {
        wait(rt, durable)?;
    }
    Ok(())
}

/// A fresh SQLite-backed object of a namespace over `dir`, opened with `sql`, whose `_cf_KV`
/// table exists (one warm-up key committed).
fn fresh_storage(dir: &Path, sql: Options) -> BenchResult<StorageHandle> {
    let storage = open_object(dir, "ours", sql)?;
    storage.kv()?.put("warm", &VALUE)?;
    storage.end_turn()?;
    Ok(storage)
}

/// A fresh raw database with the same table and warm-up key.
fn fresh_raw(dir: &Path) -> BenchResult<rusqlite::Connection> {
    let conn = raw_open(&dir.join("raw.sqlite"), false)?;
    conn.execute(RAW_KV_CREATE, [])?;
    conn.execute(RAW_KV_PUT, params!["warm", durable_kv::codec::encode(&VALUE)?])?;
    Ok(conn)
}

/// Raw: `n` upserts in one transaction, statement held, commit included.
fn raw_puts(n: usize) -> BenchResult<std::time::Duration> {
    let dir = tempdir()?;
    let mut conn = fresh_raw(dir.path())?;
    let value = durable_kv::codec::encode(&VALUE)?;
    time(|| {
        let tx = conn.transaction()?;
        {
            let mut put = tx.prepare(RAW_KV_PUT)?;
            for i in 0..n {
                put.execute(params![key(i), value])?;
            }
        }
        tx.commit()?;
        Ok(())
    })
}

/// Raw: `n` point reads of `key(i)`, statement held, the bytes copied out.
fn raw_gets(path: &Path, n: usize, exclusive: bool) -> BenchResult<std::time::Duration> {
    let conn = raw_open(path, exclusive)?;
    let mut get = conn.prepare("SELECT value FROM _cf_KV WHERE key = ?")?;
    time(|| {
        for i in 0..n {
            let v: Vec<u8> = get.query_row(params![key(i)], |r| r.get(0))?;
            keep(v);
        }
        Ok(())
    })
}

/// Runs the KV workloads.
pub fn run(config: &Config, rows: &mut Vec<Row>) -> BenchResult<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
    let n = config.size(100_000, 10_000);
    let runs = config.runs;

    if config.wants("a") {
        let a = pair(
            runs,
            || {
                let dir = tempdir()?;
                let storage = fresh_storage(dir.path(), Options::default())?;
                time(|| {
                    let kv = storage.kv()?;
                    for i in 0..n {
                        kv.put(&key(i), &VALUE)?;
                    }
                    storage.end_turn()?;
                    Ok(())
                })
            },
            || raw_puts(n),
        )?;
        rows.push(row("a", "sync kv().put, one turn, commit included", n, Some(0.7), a));
        let a2 = pair(
            runs,
            || {
                let dir = tempdir()?;
                let storage = fresh_storage(dir.path(), Options::default())?;
                time(|| {
                    for i in 0..n {
                        drop(storage.put(&key(i), &VALUE));
                    }
                    storage.end_turn()?;
                    Ok(())
                })
            },
            || raw_puts(n),
        )?;
        rows.push(row("a'", "async put not awaited, one turn, commit included", n, None, a2));
    }

    if config.wants("b") {
        let nb = config.size(10_000, 500);
        let b = pair(
            config.slow_runs(),
            || {
                let dir = tempdir()?;
                let storage = fresh_storage(dir.path(), Options::default())?;
                time(|| {
                    let kv = storage.kv()?;
                    for i in 0..nb {
                        kv.put(&key(i), &VALUE)?;
                        storage.end_turn()?;
                    }
                    Ok(())
                })
            },
            || {
                let dir = tempdir()?;
                let conn = fresh_raw(dir.path())?;
                let value = durable_kv::codec::encode(&VALUE)?;
                let mut put = conn.prepare(RAW_KV_PUT)?;
                time(|| {
                    for i in 0..nb {
                        put.execute(params![key(i), value])?;
                    }
                    Ok(())
                })
            },
        )?;
        rows.push(row("b", "kv().put + end_turn (one commit each)", nb, Some(0.9), b));
    }

    if config.wants("c") || config.wants("d") || config.wants("j") {
        let dir = tempdir()?;
        let path = dir.path().join("filled.sqlite");
        fill_kv(&path, n)?;
        if config.wants("c") {
            for exclusive in [false, true] {
                // Exclusive: what `durable_storage::Namespace` opens its objects with.
                let options = Options::new().exclusive_locking(exclusive);
                let c = pair(
                    runs,
                    || {
                        let storage = open_object(dir.path(), "filled", options.clone())?;
                        time(|| {
                            let kv = storage.kv()?;
                            for i in 0..n {
                                let v: Option<V> = kv.get(&key(i))?;
                                keep(v.ok_or("missing key")?);
                            }
                            Ok(())
                        })
                    },
                    || raw_gets(&path, n, exclusive),
                )?;
                let c = if exclusive {
                    // A Namespace's objects: issue 9 also wants 1.5 M gets/s here.
                    let name =
                        "kv().get hits, exclusive locking (a Namespace's objects) both sides";
                    let mut c = row("c-excl", name, n, Some(0.6), c);
                    c.min_ours = Some(1.5e6);
                    c
                } else {
                    row(
                        "c",
                        "kv().get hits (normal locking, durable-sql's default)",
                        n,
                        Some(0.6),
                        c,
                    )
                };
                rows.push(c);
            }
            let c2 = pair(
                runs,
                || {
                    let storage = open_object(dir.path(), "filled", Options::default())?;
                    time(|| {
                        for i in 0..n {
                            let v: Option<V> = wait(&rt, storage.get(&key(i)))?;
                            keep(v.ok_or("missing key")?);
                        }
                        Ok(())
                    })
                },
                || raw_gets(&path, n, false),
            )?;
            rows.push(row("c'", "async storage.get hits (normal locking)", n, None, c2));
        }
        if config.wants("d") {
            let nd = config.size(10_000, 10_000).min(n);
            let reps = config.size(20, 5);
            let dpath = dir.path().join("list.sqlite");
            fill_kv(&dpath, nd)?;
            let d = pair(
                runs,
                || {
                    let storage = open_object(dir.path(), "list", Options::default())?;
                    time(|| {
                        for _ in 0..reps {
                            let all: Vec<(String, V)> =
                                storage.kv()?.list(&ListOptions::default())?;
                            assert_eq!(all.len(), nd);
                            keep(all);
                        }
                        Ok(())
                    })
                },
                || {
                    let conn = raw_open(&dpath, false)?;
                    let mut list = conn.prepare("SELECT key, value FROM _cf_KV ORDER BY key")?;
                    time(|| {
                        for _ in 0..reps {
                            let all = list
                                .query_map([], |r| {
                                    Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
                                })?
                                .collect::<Result<Vec<_>, _>>()?;
                            assert_eq!(all.len(), nd);
                            keep(all);
                        }
                        Ok(())
                    })
                },
            )?;
            rows.push(row("d", "kv().list of 10k keys (keys/s)", nd * reps, Some(0.7), d));
        }
        if config.wants("j") {
            kv_backed(config, &rt, &path, n, rows)?;
        }
    }
    Ok(())
}

/// A KV-backed object, opened through a namespace (the product) or as durable-txn's
/// `Storage` alone (a lower layer, named in the row's id).
enum KvObject {
    Product(StorageHandle),
    Layer(Storage),
}

impl Deref for KvObject {
    type Target = Storage;

    fn deref(&self) -> &Storage {
        match self {
            KvObject::Product(handle) => handle,
            KvObject::Layer(storage) => storage,
        }
    }
}

/// Opens a new instance of one KV-backed object (an empty write-behind cache) over the same
/// stored data every time it is called.
type Opener = Box<dyn Fn() -> BenchResult<KvObject>>;

/// The KV-backed object of a namespace over `dir` (`Backend::Kv`: a `SqliteBackend` file
/// per object, durable-sql's default options, the default cache).
fn kv_namespace(dir: &Path) -> BenchResult<Opener> {
    let ns = Namespace::open(
        dir,
        NamespaceOptions::new().backend(Backend::Kv).sql(Options::default()).archive(Archive::Off),
    )?;
    Ok(Box::new(move || Ok(KvObject::Product(ns.storage("kv")?))))
}

/// durable-txn's KV-backed `Storage` over one `MemoryBackend`, with the default cache.
fn kv_memory(_dir: &Path) -> BenchResult<Opener> {
    let backend: Arc<dyn KvBackend> = Arc::new(MemoryBackend::new());
    Ok(Box::new(move || {
        Ok(KvObject::Layer(Storage::kv_backed(backend.clone(), CacheOptions::default())))
    }))
}

/// (j): the KV-backed path (write-behind cache over a backend) against raw rusqlite.
fn kv_backed(
    config: &Config,
    rt: &tokio::runtime::Runtime,
    filled: &Path,
    n: usize,
    rows: &mut Vec<Row>,
) -> BenchResult<()> {
    let runs = config.runs;
    type Store = fn(&Path) -> BenchResult<Opener>;
    let stores: [(&str, &str, Store); 2] = [
        ("sqlite", "KV-backed (sqlite)", kv_namespace),
        ("memory-txn", "KV-backed (memory), durable-txn alone", kv_memory),
    ];
    for (id, name, store) in stores {
        // Flush throughput: n puts, end of turn, wait until durable.
        let flush = pair(
            runs,
            || {
                let dir = tempdir()?;
                let open = store(dir.path())?;
                let storage = open()?;
                time(|| {
                    for i in 0..n {
                        drop(storage.put(&key(i), &VALUE));
                    }
                    end_turn(rt, &storage)
                })
            },
            || raw_puts(n),
        )?;
        rows.push(row(
            &format!("j-flush-{id}"),
            &format!("{name}: put not awaited, one turn, flushed"),
            n,
            None,
            flush,
        ));
        // Fill one object once for the get workloads.
        let dir = tempdir()?;
        let open = store(dir.path())?;
        {
            let storage = open()?;
            for i in 0..n {
                drop(storage.put(&key(i), &VALUE));
            }
            end_turn(rt, &storage)?;
        }
        // Misses: a fresh instance of the filled object reads every key once.
        let miss = pair(
            runs,
            || {
                let storage = open()?;
                time(|| get_all(rt, &storage, n))
            },
            || raw_gets(filled, n, false),
        )?;
        rows.push(row(&format!("j-miss-{id}"), &format!("{name}: get, cache miss"), n, None, miss));
        // Hits: the same reads again, all answered by the cache.
        let hit = pair(
            runs,
            || {
                let storage = open()?;
                get_all(rt, &storage, n)?;
                time(|| get_all(rt, &storage, n))
            },
            || raw_gets(filled, n, false),
        )?;
        rows.push(row(&format!("j-hit-{id}"), &format!("{name}: get, cache hit"), n, None, hit));
    }
    Ok(())
}
