//! Benchmark (r): `Replication::Replicated` against `Replication::Local`, through the facade,
//! on an S3-compatible server started in this process on 127.0.0.1 (s3s-fs over a temporary
//! folder, signed requests), beside the latency of one plain S3 PUT on the same server.
//!
//! ```sh
//! cargo run --release -p durable-storage --features s3-tests --example replication -- [SECONDS]
//! ```
//!
//! Ids: `r-put` (one 4 KiB PUT at a time; `r-put-again` the same, before each group),
//! `r-local-1` / `r-repl-1` (one object, one event at a time), `r-local-100` /
//! `r-repl-100` (100 objects, an event in flight on each). For each:
//! events per second and the confirm latency (call to released result) p50 / p99. Then
//! opening 100 archived objects: `r-open-seq` one after another from one thread,
//! `r-open-lazy` by the first event of each, all sent at once (the wall time, and the
//! slowest first event).
//!
//! Knobs (environment): `LAG_MS` the namespaces' `archive_lag` (default 1000);
//! `STORE_LATENCY_MS` delays every store request by that much (object_store's
//! `ThrottledStore`: a remote store's round trip); `S3_DIR` the folder the S3 server keeps
//! its objects in (default: a temporary folder under the system's); `OBJECTS=1` or
//! `OBJECTS=100` runs only those rows (after `r-put`) and skips the opens, `OBJECTS=paced`
//! only the paced rows; `PACED_RATE` the offered rate of `r-local-100p` / `r-repl-100p`
//! (default 1000 events/s in all: 100 objects, each event due at a fixed pace, latency from
//! when it was due), which show the confirm latency below saturation (back to back, 100
//! events in flight queue behind each other: by Little's law their latency is 100 divided
//! by the throughput, whatever the store). Each group of rows (one object, 100, 100 paced)
//! gets a PUT baseline of its own, `r-put-again`, taken just before it, for its ratios.
//! `IN_FLIGHT=K` gives the back-to-back rows K callers per object instead of one.
//! `S3_ENDPOINT=http://127.0.0.1:PORT` uses a server already running instead (bucket
//! `archive`, as `durable-s3-server DIR` serves it), for instance pinned to cores of its own
//! (`taskset`); `TIMELINE=1` prints the paced rows' p50 and p99 per tenth of a second.
//!
//! Each row also shows the process's CPU time per event (user and system, on Linux), the S3
//! server's included: a figure that the host's speed, which drifts on a shared machine,
//! moves less than latency.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use durable_s3_server::{ACCESS_KEY, S3Server, SECRET_KEY};
use durable_storage::pitr::object_store::aws::AmazonS3Builder;
use durable_storage::pitr::object_store::path::Path as StorePath;
use durable_storage::pitr::object_store::throttle::{ThrottleConfig, ThrottledStore};
use durable_storage::pitr::object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use durable_storage::{Actor, Archive, ArchiveStore, Namespace, NamespaceOptions, Replication};

struct Counter;
impl Actor for Counter {}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Outcome {
    per_second: f64,
    p50: Duration,
    p99: Duration,
    /// The process's CPU time (user and system, the S3 server's included: it runs in this
    /// process) per event, when measured.
    cpu_per_event: Option<Duration>,
}

/// The CPU time this process has used so far (Linux: `/proc/self/stat`; `None` elsewhere).
fn cpu_used() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces), from field 3 on: utime and
    // stime are fields 14 and 15, in clock ticks (100 per second on Linux).
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// The CPU time used since `before` (from [`cpu_used`]), per one of `events`.
fn cpu_per_event(before: Option<Duration>, events: usize) -> Option<Duration> {
    let spent = cpu_used()?.saturating_sub(before?);
    Some(spent / events.max(1) as u32)
}

fn report(id: &str, o: &Outcome) {
    let cpu = o
        .cpu_per_event
        .map(|c| format!("   cpu {:.2} ms/event", c.as_secs_f64() * 1e3))
        .unwrap_or_default();
    println!(
        "{id:<12} {:>9.0}/s   p50 {:>7.2} ms   p99 {:>7.2} ms{cpu}",
        o.per_second,
        o.p50.as_secs_f64() * 1e3,
        o.p99.as_secs_f64() * 1e3
    );
}

/// `objects` objects, each with one event in flight at a time, for `seconds`: back to back,
/// or with `pace`, each object's events due every `pace` (the objects' schedules spread over
/// it), each latency taken from when the event was due (an event that starts late because
/// the one before it was slow counts its wait).
async fn run(
    store: Arc<dyn ObjectStore>,
    prefix: &str,
    replication: Replication,
    objects: usize,
    seconds: Duration,
    pace: Option<Duration>,
) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let options = NamespaceOptions::new()
        .archive(Archive::Store(ArchiveStore::new(store, prefix)))
        .replication(replication)
        .archive_lag(Duration::from_millis(
            std::env::var("LAG_MS").ok().and_then(|s| s.parse().ok()).unwrap_or(1000),
        ));
    let ns = Namespace::open(dir.path(), options).unwrap();
    // Open every object first (each open takes its lease and lists its archive), off the
    // runtime's workers; the timed part is the events.
    let opening = Instant::now();
    let handles = {
        let ns = ns.clone();
        tokio::task::spawn_blocking(move || {
            (0..objects).map(|i| ns.storage(&format!("o{i}")).unwrap()).collect::<Vec<_>>()
        })
        .await
        .unwrap()
    };
    eprintln!("opened {objects} objects in {:?}", opening.elapsed());
    let cpu_before = cpu_used();
    let mut tasks = Vec::new();
    let start = Instant::now();
    let deadline = start + seconds;
    // Back to back, `IN_FLIGHT` callers per object (default 1) each send the next event as
    // soon as the last is confirmed: an object runs an event while earlier ones wait for
    // their copies (the output gate holds results, not the next event).
    let in_flight = match pace {
        Some(_) => 1,
        None => std::env::var("IN_FLIGHT").ok().and_then(|s| s.parse().ok()).unwrap_or(1),
    };
    for i in (0..objects).flat_map(|i| std::iter::repeat_n(i, in_flight)) {
        let object = ns.object(&format!("o{i}"), |_| Counter).unwrap();
        let first = pace.map(|p| start + p.mul_f64(i as f64 / objects as f64));
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = 0i64;
            while Instant::now() < deadline {
                let started = match (first, pace) {
                    (Some(first), Some(pace)) => {
                        let due = first + pace * n as u32;
                        if due >= deadline {
                            break;
                        }
                        tokio::time::sleep_until(due.into()).await;
                        due
                    }
                    _ => Instant::now(),
                };
                object
                    .call(move |ctx| async move {
                        let db = ctx.storage().sql().unwrap();
                        db.exec("CREATE TABLE IF NOT EXISTS t(n INTEGER)", &[]).unwrap();
                        db.exec("INSERT INTO t VALUES (?)", &[n.into()]).unwrap();
                    })
                    .await
                    .unwrap();
                latencies.push((started - start, started.elapsed()));
                n += 1;
            }
            latencies
        }));
    }
    let mut timed = Vec::new();
    for t in tasks {
        timed.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed();
    if std::env::var_os("TIMELINE").is_some() {
        timeline(prefix, &timed);
    }
    let mut all: Vec<Duration> = timed.into_iter().map(|(_, took)| took).collect();
    let cpu_per_event = cpu_per_event(cpu_before, all.len());
    drop(handles);
    ns.close().await.unwrap();
    all.sort();
    Outcome {
        per_second: all.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&all, 0.5),
        p99: percentile(&all, 0.99),
        cpu_per_event,
    }
}

/// With `TIMELINE` set: the p50 and p99 of the events that started in each tenth of a
/// second, on standard error (where in a run its slowest events fall).
fn timeline(prefix: &str, timed: &[(Duration, Duration)]) {
    let mut slices: std::collections::BTreeMap<u128, Vec<Duration>> = Default::default();
    for (at, took) in timed {
        slices.entry(at.as_millis() / 100).or_default().push(*took);
    }
    for (slice, mut took) in slices {
        took.sort();
        eprintln!(
            "{prefix} {:>5.1} s  {:>5} events  p50 {:>7.2} ms  p99 {:>7.2} ms",
            slice as f64 / 10.0,
            took.len(),
            percentile(&took, 0.5).as_secs_f64() * 1e3,
            percentile(&took, 0.99).as_secs_f64() * 1e3
        );
    }
}

/// Opens `objects` archived objects one after another from one thread, then `objects`
/// others lazily, by a first event to each sent all at once: the two wall times and the
/// slowest first event.
async fn opens(
    store: Arc<dyn ObjectStore>,
    prefix: &str,
    objects: usize,
) -> (Duration, Duration, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let options = NamespaceOptions::new().archive(Archive::Store(ArchiveStore::new(store, prefix)));
    let ns = Namespace::open(dir.path(), options).unwrap();
    let started = Instant::now();
    let handles = {
        let ns = ns.clone();
        tokio::task::spawn_blocking(move || {
            (0..objects).map(|i| ns.storage(&format!("s{i}")).unwrap()).collect::<Vec<_>>()
        })
        .await
        .unwrap()
    };
    let one_by_one = started.elapsed();
    let started = Instant::now();
    let tasks: Vec<_> = (0..objects)
        .map(|i| {
            let object = ns.object(&format!("z{i}"), |_| Counter).unwrap();
            tokio::spawn(async move {
                let sent = Instant::now();
                object
                    .call(|ctx| async move {
                        let db = ctx.storage().sql().unwrap();
                        db.exec("CREATE TABLE IF NOT EXISTS t(n INTEGER)", &[]).unwrap();
                    })
                    .await
                    .unwrap();
                (sent.elapsed(), object)
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    let mut running = Vec::new();
    for task in tasks {
        let (first_event, object) = task.await.unwrap();
        slowest = slowest.max(first_event);
        running.push(object);
    }
    let lazily = started.elapsed();
    drop((handles, running));
    ns.close().await.unwrap();
    (one_by_one, lazily, slowest)
}

/// One PUT of a small segment-sized object at a time, for `seconds`, under `prefix`.
async fn puts(store: &Arc<dyn ObjectStore>, prefix: &str, seconds: Duration) -> Outcome {
    let mut took = Vec::new();
    let payload = vec![7u8; 4096];
    let cpu_before = cpu_used();
    let deadline = Instant::now() + seconds;
    while Instant::now() < deadline {
        let started = Instant::now();
        let key = StorePath::from(format!("{prefix}/{}", took.len()));
        store.put(&key, PutPayload::from(payload.clone())).await.unwrap();
        took.push(started.elapsed());
    }
    let cpu_per_event = cpu_per_event(cpu_before, took.len());
    let per_second = took.len() as f64 / seconds.as_secs_f64();
    took.sort();
    Outcome { per_second, p50: percentile(&took, 0.5), p99: percentile(&took, 0.99), cpu_per_event }
}

fn main() {
    let seconds = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let seconds = Duration::from_secs(seconds);
    let latency = std::env::var("STORE_LATENCY_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_millis);
    // The server on a runtime of its own: opening objects blocks the caller's workers (the
    // namespace's archive I/O runs on its own runtime), and a server among those workers
    // could not answer meanwhile. In production the store is elsewhere.
    let server_rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let folder = match std::env::var("S3_DIR") {
        Ok(d) => tempfile::tempdir_in(d).unwrap(),
        Err(_) => tempfile::tempdir().unwrap(),
    };
    // `S3_ENDPOINT`: a server already running (`durable-s3-server`, say on cores of its
    // own), its bucket `archive`; otherwise one in this process.
    let (_server, endpoint, bucket) = match std::env::var("S3_ENDPOINT") {
        Ok(endpoint) => (None, endpoint, "archive"),
        Err(_) => {
            let server = server_rt.block_on(S3Server::start(folder.path())).unwrap();
            server.create_bucket("bench").unwrap();
            let endpoint = server.endpoint();
            (Some(server), endpoint, "bench")
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let store: Arc<dyn ObjectStore> = Arc::new(
            AmazonS3Builder::new()
                .with_endpoint(endpoint)
                .with_allow_http(true)
                .with_bucket_name(bucket)
                .with_region("us-east-1")
                .with_access_key_id(ACCESS_KEY)
                .with_secret_access_key(SECRET_KEY)
                .build()
                .unwrap(),
        );
        // A remote store's round trip, simulated: every request waits this long first.
        let store: Arc<dyn ObjectStore> = match latency {
            Some(wait) => {
                let config = ThrottleConfig {
                    wait_put_per_call: wait,
                    wait_get_per_call: wait,
                    wait_list_per_call: wait,
                    wait_delete_per_call: wait,
                    ..Default::default()
                };
                Arc::new(ThrottledStore::new(store, config))
            }
            None => store,
        };
        // The first PUTs of a run pay for the previous run's deletions on some file
        // systems (docs/performance.md); each group of rows gets a baseline of its own,
        // `r-put-again`, taken just before it, so that both see the host as it is then (on
        // a shared machine its speed drifts over a run).
        report("r-put", &puts(&store, "put", seconds).await);
        let mut results = Vec::new();
        let only = std::env::var("OBJECTS").ok();
        for (objects, id) in [(1, "1"), (100, "100")] {
            if only.as_deref().is_some_and(|o| o != id) {
                continue;
            }
            let put = puts(&store, &format!("put-{id}"), seconds).await;
            report("r-put-again", &put);
            let local =
                run(store.clone(), &format!("l{id}"), Replication::Local, objects, seconds, None)
                    .await;
            report(&format!("r-local-{id}"), &local);
            let repl =
                run(store.clone(), &format!("r{id}"), Replication::Replicated, objects, seconds, None)
                    .await;
            report(&format!("r-repl-{id}"), &repl);
            results.push((id.to_owned(), put, local, repl));
        }
        // 100 objects again, at an offered rate below what they manage back to back: the
        // confirm latency without the queue that saturation builds.
        if only.as_deref().is_none_or(|o| o == "100" || o == "paced") {
            let rate: f64 =
                std::env::var("PACED_RATE").ok().and_then(|s| s.parse().ok()).unwrap_or(1000.0);
            let pace = Some(Duration::from_secs_f64(100.0 / rate));
            let put = puts(&store, "put-paced", seconds).await;
            report("r-put-again", &put);
            let local =
                run(store.clone(), "lp", Replication::Local, 100, seconds, pace).await;
            report("r-local-100p", &local);
            let repl =
                run(store.clone(), "rp", Replication::Replicated, 100, seconds, pace).await;
            report("r-repl-100p", &repl);
            results.push((format!("100 paced at {rate:.0}/s"), put, local, repl));
        }
        for (id, put, local, repl) in &results {
            println!(
                "{id} object(s): Replicated/Local throughput {:.2}x; Replicated p99 / PUT p99 {:.2}x; Local p99 / PUT p99 {:.2}x",
                repl.per_second / local.per_second,
                repl.p99.as_secs_f64() / put.p99.as_secs_f64(),
                local.p99.as_secs_f64() / put.p99.as_secs_f64()
            );
        }
        if only.is_some() {
            return;
        }
        let (one_by_one, lazily, slowest) = opens(store.clone(), "open", 100).await;
        println!(
            "r-open-seq   100 opens one after another {:>7.0} ms ({:.1} ms each)",
            one_by_one.as_secs_f64() * 1e3,
            one_by_one.as_secs_f64() * 1e3 / 100.0
        );
        println!(
            "r-open-lazy  100 opens by first events   {:>7.0} ms (slowest first event {:.0} ms)",
            lazily.as_secs_f64() * 1e3,
            slowest.as_secs_f64() * 1e3
        );
    });
}
