//! KV workloads: (a) sync puts in one turn, (a') async puts in one turn, (b) one commit per
//! put, (c) gets, (d) list, and (j) the KV-backed path over the write-behind cache.

use std::sync::Arc;

use durable_backend::cache::CacheOptions;
use durable_backend::{KvBackend, MemoryBackend, SqliteBackend};
use durable_kv::ListOptions;
use durable_sql::Options;
use durable_txn::{Op, Storage, TurnEnd};
use rusqlite::params;

use super::{
    BenchResult, Config, RAW_KV_CREATE, RAW_KV_PUT, Row, V, fill_kv, keep, key, pair, raw_open,
    row, tempdir, time,
};

const VALUE: V = V { v: 1 };

/// Waits for an `Op` (ready at once on SQLite; a flush or a miss on the KV-backed path).
/// Reads keys `0..n` through the async API, each one present.
fn get_all(rt: &tokio::runtime::Runtime, storage: &Storage, n: usize) -> BenchResult<()> {
    for i in 0..n {
        let v: Option<V> = wait(rt, storage.get(&key(i)))?;
        keep(v.ok_or("missing key")?);
    }
    Ok(())
}

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

/// A fresh SQLite-backed storage whose `_cf_KV` table exists (one warm-up key committed).
fn fresh_storage(dir: &std::path::Path, options: Options) -> BenchResult<Storage> {
    let storage = Storage::open(dir.join("ours.sqlite"), options)?;
    storage.kv()?.put("warm", &VALUE)?;
    storage.end_turn()?;
    Ok(storage)
}

/// A fresh raw database with the same table and warm-up key.
fn fresh_raw(dir: &std::path::Path) -> BenchResult<rusqlite::Connection> {
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
fn raw_gets(path: &std::path::Path, n: usize, exclusive: bool) -> BenchResult<std::time::Duration> {
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
                let options = Options { exclusive_locking: exclusive, ..Options::default() };
                let c = pair(
                    runs,
                    || {
                        let storage = Storage::open(&path, options.clone())?;
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
                        "kv().get hits (normal locking, Storage::open's default)",
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
                    let storage = Storage::open(&path, Options::default())?;
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
                    let storage = Storage::open(&dpath, Options::default())?;
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

/// (j): the KV-backed path (write-behind cache over a backend) against raw rusqlite.
fn kv_backed(
    config: &Config,
    rt: &tokio::runtime::Runtime,
    filled: &std::path::Path,
    n: usize,
    rows: &mut Vec<Row>,
) -> BenchResult<()> {
    let runs = config.runs;
    type MakeBackend = fn(&std::path::Path) -> BenchResult<Arc<dyn KvBackend>>;
    let backends: [(&str, MakeBackend); 2] = [
        ("sqlite", |dir| Ok(Arc::new(SqliteBackend::open(dir.join("kv.sqlite"))?))),
        ("memory", |_| Ok(Arc::new(MemoryBackend::new()))),
    ];
    for (name, make) in backends {
        // Flush throughput: n puts, end of turn, wait until durable.
        let flush = pair(
            runs,
            || {
                let dir = tempdir()?;
                let storage = Storage::kv_backed(make(dir.path())?, CacheOptions::default());
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
            &format!("j-flush-{name}"),
            &format!("KV-backed ({name}): put not awaited, one turn, flushed"),
            n,
            None,
            flush,
        ));
        // Prefill a backend once for the get workloads.
        let dir = tempdir()?;
        let backend = make(dir.path())?;
        {
            let storage = Storage::kv_backed(backend.clone(), CacheOptions::default());
            for i in 0..n {
                drop(storage.put(&key(i), &VALUE));
            }
            end_turn(rt, &storage)?;
        }
        // Misses: a fresh cache over the filled backend reads every key once.
        let miss = pair(
            runs,
            || {
                let storage = Storage::kv_backed(backend.clone(), CacheOptions::default());
                time(|| get_all(rt, &storage, n))
            },
            || raw_gets(filled, n, false),
        )?;
        rows.push(row(
            &format!("j-miss-{name}"),
            &format!("KV-backed ({name}): get, cache miss"),
            n,
            None,
            miss,
        ));
        // Hits: the same reads again, all answered by the cache.
        let hit = pair(
            runs,
            || {
                let storage = Storage::kv_backed(backend.clone(), CacheOptions::default());
                get_all(rt, &storage, n)?;
                time(|| get_all(rt, &storage, n))
            },
            || raw_gets(filled, n, false),
        )?;
        rows.push(row(
            &format!("j-hit-{name}"),
            &format!("KV-backed ({name}): get, cache hit"),
            n,
            None,
            hit,
        ));
    }
    Ok(())
}
