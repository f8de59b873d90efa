//! `cargo xtask load`: many objects receiving concurrent events; no lost write, bounded memory.
//!
//! Every object counts its events in KV and logs them in SQL; clients send events to random
//! objects for the given time. At the end every object's counter and log must equal the events
//! acknowledged to it. Prints throughput and the process's peak resident memory.
//!
//! Objects run as users run them: `Namespace::object` on a namespace with the product's
//! defaults (group commit, each object's history archived locally); `--no-group-commit`
//! fsyncs inside every commit instead, `--no-archive` turns point-in-time recovery off.
#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line tool
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use durable_storage::sql::{Durability, SqlValue};
use durable_storage::{Actor, Archive, Namespace, NamespaceOptions, ObjectHandle};

struct Counter;
impl Actor for Counter {}

/// A field of `/proc/self/status` in kB (Linux), e.g. `VmHWM` (peak RSS).
fn status_kb(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() -> ExitCode {
    let mut objects = 1000usize;
    let mut seconds = 60u64;
    let mut clients = 64usize;
    let mut options = NamespaceOptions::default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "--no-group-commit" {
            options.sql.durability = Durability::Full;
            continue;
        }
        if arg == "--no-archive" {
            options.archive = Archive::Off;
            continue;
        }
        let value = it.next().and_then(|v| v.parse::<u64>().ok());
        match (arg.as_str(), value) {
            ("--objects", Some(v)) => objects = v as usize,
            ("--seconds", Some(v)) => seconds = v,
            ("--clients", Some(v)) => clients = v as usize,
            _ => {
                eprintln!(
                    "usage: load [--objects N] [--seconds S] [--clients C] [--no-group-commit] \
                     [--no-archive]"
                );
                return ExitCode::from(2);
            }
        }
    }
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("load: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("load: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rss_before = status_kb("VmRSS:").unwrap_or(0);
    let ns = match Namespace::open(dir.path(), options) {
        Ok(ns) => ns,
        Err(e) => {
            eprintln!("load: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = rt.block_on(async move {
        let mut handles: Vec<ObjectHandle<Counter>> = Vec::with_capacity(objects);
        for i in 0..objects {
            match ns.object(&format!("object-{i}"), |_| Counter) {
                Ok(handle) => handles.push(handle),
                Err(e) => {
                    eprintln!("load: object-{i}: {e}");
                    return None;
                }
            }
        }
        let handles = Arc::new(handles);
        let acked: Arc<Vec<AtomicU64>> =
            Arc::new((0..objects).map(|_| AtomicU64::new(0)).collect());
        let deadline = Instant::now() + Duration::from_secs(seconds);
        // How far the archive store is behind: every object's upload lag, every 50 ms.
        let sampler = {
            let ns = ns.clone();
            tokio::spawn(async move {
                let mut lags: Vec<u64> = Vec::new();
                while Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    lags.extend(ns.archive_status().iter().map(|(_, s)| s.lag_ms));
                }
                lags
            })
        };
        let mut tasks = Vec::new();
        for c in 0..clients {
            let handles = handles.clone();
            let acked = acked.clone();
            tasks.push(tokio::spawn(async move {
                let mut x = (c as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let mut failures = 0u64;
                while Instant::now() < deadline {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let o = (x % handles.len() as u64) as usize;
                    let r = handles[o]
                        .call(|ctx| async move {
                            let n: i64 = ctx.storage().get("n").await?.unwrap_or(0);
                            ctx.storage().put("n", &(n + 1));
                            let db = ctx.storage().sql()?;
                            db.exec("CREATE TABLE IF NOT EXISTS log (n INTEGER)", &[])?;
                            db.exec("INSERT INTO log VALUES (?)", &[SqlValue::Integer(n + 1)])?;
                            Ok::<_, durable_txn::Error>(())
                        })
                        .await;
                    match r {
                        Ok(Ok(())) => {
                            acked[o].fetch_add(1, Ordering::Relaxed);
                        }
                        _ => failures += 1,
                    }
                }
                failures
            }));
        }
        let mut failures = 0;
        for t in tasks {
            failures += t.await.unwrap_or(1);
        }
        let mut lags = sampler.await.unwrap_or_default();
        lags.sort_unstable();
        let at = |q: f64| lags.get(((lags.len() as f64 - 1.0) * q).round() as usize).copied();
        let rss_loaded = status_kb("VmRSS:").unwrap_or(0);
        let mut lost = 0u64;
        let mut total = 0u64;
        for (o, handle) in handles.iter().enumerate() {
            let want = acked[o].load(Ordering::Relaxed);
            total += want;
            let got = handle
                .call(|ctx| async move {
                    let n: i64 = ctx.storage().get("n").await?.unwrap_or(0);
                    let db = ctx.storage().sql()?;
                    let rows = if n > 0 {
                        db.exec("SELECT count(*) AS c FROM log", &[])?
                            .one::<durable_storage::Row>()?
                            .get::<i64>("c")?
                    } else {
                        0
                    };
                    Ok::<_, durable_txn::Error>((n, rows))
                })
                .await;
            match got {
                Ok(Ok((n, rows))) if n as u64 == want && rows as u64 == want => {}
                other => {
                    eprintln!("load: object {o}: acknowledged {want}, found {other:?}");
                    lost += 1;
                }
            }
        }
        let lag = match (at(0.5), at(0.99), lags.last()) {
            (Some(p50), Some(p99), Some(max)) => {
                format!("; archive lag p50 {p50} ms, p99 {p99} ms, max {max} ms")
            }
            _ => String::new(),
        };
        Some((total, failures, lost, rss_loaded, lag))
    });
    let Some((total, failures, lost, rss_loaded, lag)) = outcome else {
        return ExitCode::FAILURE;
    };
    let peak = status_kb("VmHWM:").unwrap_or(0);
    println!(
        "{objects} objects, {clients} clients, {seconds} s: {total} events ({:.0}/s), \
         {failures} failed, {lost} objects with lost writes; RSS {} MB before, {} MB loaded, \
         peak {} MB ({:.1} kB per object){lag}",
        total as f64 / seconds.max(1) as f64,
        rss_before / 1024,
        rss_loaded / 1024,
        peak / 1024,
        rss_loaded.saturating_sub(rss_before) as f64 / objects.max(1) as f64,
    );
    if lost == 0 && failures == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
