//! `cargo xtask crash`: kill -9 at random moments, then prove nothing released was lost.
//!
//! The parent runs this binary again as a child. The child runs several objects on the object
//! runtime; each object writes batches, one turn each, every batch mixing SQL rows and KV keys,
//! and the child prints `released OBJECT BATCH` once the batch's result came back. The parent
//! kills the child with SIGKILL after a random number of released batches, reopens every
//! object and checks that every printed batch is fully present, that no batch is partly
//! present, and that SQLite's integrity check passes. With `--pitr` the objects run with the
//! WAL archiver, and the image rebuilt at the current bookmark must equal the database file.
//! Objects are opened as users open them, through a `Namespace` (its default group commit and,
//! with `--pitr`, its local archive); the child runs them with `Namespace::object`. The last line is
//! `N iterations, N batches checked, N lost, N torn`. The kill points come from a seed, printed
//! first (`--seed N` replays them); a child that stops releasing batches for 60 s fails the run.
#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line tool
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use durable_storage::kv::ListOptions;
use durable_storage::sql::SqlValue;
use durable_storage::{Actor, Archive, Namespace, NamespaceOptions};

const OBJECTS: usize = 4;
const KEYS_PER_BATCH: i64 = 8;

struct Plain;
impl Actor for Plain {}

fn object_name(object: usize) -> String {
    format!("object-{object}")
}

/// The namespace in `dir`, as the product opens it: group commit (results wait for a pooled
/// fsync, so a kill between a commit and its fsync must not lose a released batch) and, with
/// `pitr`, each object's history archived locally.
fn namespace(dir: &Path, pitr: bool) -> Result<Namespace, String> {
    let archive = if pitr { Archive::Local } else { Archive::Off };
    Namespace::open(dir, NamespaceOptions::new().archive(archive)).map_err(|e| e.to_string())
}

/// The child: writes batches on every object until it is killed.
fn child(dir: &Path, pitr: bool) -> ExitCode {
    let rt =
        match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("crash child: {e}");
                return ExitCode::FAILURE;
            }
        };
    rt.block_on(async {
        let ns = match namespace(dir, pitr) {
            Ok(ns) => ns,
            Err(e) => {
                eprintln!("crash child: {e}");
                return;
            }
        };
        let mut tasks = Vec::new();
        for o in 0..OBJECTS {
            let start = match next_batch(&ns, &object_name(o)) {
                Ok(n) => n,
                Err(e) => {
                    eprintln!("crash child: {e}");
                    return;
                }
            };
            let object = match ns.object(&object_name(o), |_| Plain) {
                Ok(object) => object,
                Err(e) => {
                    eprintln!("crash child: {e}");
                    return;
                }
            };
            tasks.push(tokio::spawn(async move {
                for batch in start.. {
                    let written = object
                        .call(move |ctx| async move {
                            let db = ctx.storage().sql()?;
                            db.exec(
                                "CREATE TABLE IF NOT EXISTS rows (batch INTEGER, i INTEGER)",
                                &[],
                            )?;
                            for i in 0..KEYS_PER_BATCH {
                                db.exec(
                                    "INSERT INTO rows VALUES (?, ?)",
                                    &[SqlValue::Integer(batch), SqlValue::Integer(i)],
                                )?;
                                ctx.storage().put(&format!("b{batch:08}:{i:02}"), &batch);
                            }
                            Ok::<_, durable_txn::Error>(())
                        })
                        .await;
                    match written {
                        Ok(Ok(())) => {
                            let mut out = std::io::stdout().lock();
                            let _ = writeln!(out, "released {o} {batch}");
                            let _ = out.flush();
                        }
                        other => {
                            eprintln!("crash child: batch {batch} of object {o}: {other:?}");
                            return;
                        }
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    ExitCode::SUCCESS
}

/// The batch after the highest one stored.
fn next_batch(ns: &Namespace, name: &str) -> Result<i64, String> {
    let storage = ns.storage(name).map_err(|e| e.to_string())?;
    let keys: Vec<(String, i64)> =
        storage.list(&ListOptions::default()).wait().map_err(|e| e.to_string())?;
    Ok(keys.iter().map(|(_, b)| *b + 1).max().unwrap_or(0))
}

/// What one object holds, per batch: KV keys and SQL rows.
struct Found {
    kv: BTreeMap<i64, i64>,
    sql: BTreeMap<i64, i64>,
    integrity: String,
    /// With `--pitr`: the image rebuilt at the current bookmark equals the database file.
    restore_matches: Option<bool>,
}

/// With the archiver: the image the archive rebuilds at the current bookmark, compared with
/// the database file once the namespace closed the object (closing checkpoints the WAL into
/// the file).
fn restore_matches(dir: &Path, name: &str) -> Result<bool, String> {
    let ns = namespace(dir, true)?;
    let path = ns.path_of(name);
    let storage = ns.storage(name).map_err(|e| e.to_string())?;
    let bookmark = storage.current_bookmark().map_err(|e| e.to_string())?;
    let image = storage.image_at(&bookmark).map_err(|e| e.to_string())?;
    drop((storage, ns));
    let file = std::fs::read(path).map_err(|e| e.to_string())?;
    Ok(image == file)
}

fn inspect(dir: &Path, name: &str, pitr: bool) -> Result<Found, String> {
    let restore_matches = if pitr { Some(restore_matches(dir, name)?) } else { None };
    let ns = namespace(dir, pitr)?;
    let storage = ns.storage(name).map_err(|e| e.to_string())?;
    let mut kv = BTreeMap::new();
    let keys: Vec<(String, i64)> =
        storage.list(&ListOptions::default()).wait().map_err(|e| e.to_string())?;
    for (key, batch) in keys {
        if !key.starts_with(&format!("b{batch:08}:")) {
            return Err(format!("{key} holds batch {batch}"));
        }
        *kv.entry(batch).or_default() += 1;
    }
    let db = storage.sql().map_err(|e| e.to_string())?;
    let mut sql = BTreeMap::new();
    let has_rows = db
        .exec("SELECT count(*) AS n FROM sqlite_master WHERE name = 'rows'", &[])
        .and_then(|mut c| c.one::<durable_storage::Row>())
        .and_then(|r| r.get::<i64>("n"))
        .map_err(|e| e.to_string())?;
    if has_rows == 1 {
        let rows = db
            .exec("SELECT batch, count(*) AS n FROM rows GROUP BY batch", &[])
            .and_then(|mut c| c.to_raw_array())
            .map_err(|e| e.to_string())?;
        for row in rows {
            if let (Some(SqlValue::Integer(b)), Some(SqlValue::Integer(n))) =
                (row.first(), row.get(1))
            {
                sql.insert(*b, *n);
            }
        }
    }
    let integrity = db
        .internal(|i| {
            Ok(i.connection().query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))?)
        })
        .map_err(|e| e.to_string())?;
    Ok(Found { kv, sql, integrity, restore_matches })
}

/// A small xorshift generator: random kill points without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn parent(iterations: u64, dir: &Path, pitr: bool, seed: Option<u64>) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("crash: {e}");
            return ExitCode::FAILURE;
        }
    };
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    }) | 1;
    // The kill points come from the seed: `--seed` replays a failing run's.
    eprintln!("crash: seed {seed}");
    let mut rng = Rng(seed);
    let mut released: Vec<BTreeSet<i64>> = vec![BTreeSet::new(); OBJECTS];
    let (mut checked, mut lost, mut torn) = (0u64, 0u64, 0u64);
    for iteration in 0..iterations {
        let mut child = match Command::new(&exe)
            .arg("child")
            .arg(dir)
            .args(pitr.then_some("--pitr"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("crash: cannot start the child: {e}");
                return ExitCode::FAILURE;
            }
        };
        let kill_after = 5 + rng.next() % 200;
        let deadline = Instant::now() + Duration::from_secs(60);
        let Some(stdout) = child.stdout.take() else { return ExitCode::FAILURE };
        // Lines are read on a thread so that a child that stops writing (a hang) is caught by
        // the deadline instead of blocking the parent for ever.
        let (lines_tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = 0;
        while seen < kill_after {
            let wait = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(wait) {
                Ok(line) => {
                    let mut parts = line.split_whitespace().skip(1);
                    if let (Some(o), Some(b)) = (parts.next(), parts.next())
                        && let (Ok(o), Ok(b)) = (o.parse::<usize>(), b.parse::<i64>())
                        && o < OBJECTS
                    {
                        released[o].insert(b);
                        seen += 1;
                    }
                }
                // The child exited on its own (its error is on stderr); check what it left.
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    eprintln!(
                        "crash: iteration {iteration}: the child released {seen} of {kill_after} \
                         batches in 60 s (hung)"
                    );
                    return ExitCode::FAILURE;
                }
            }
        }
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        for (o, released) in released.iter().enumerate() {
            let found = match inspect(dir, &object_name(o), pitr) {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("crash: object {o} after iteration {iteration}: {e}");
                    return ExitCode::FAILURE;
                }
            };
            if found.restore_matches == Some(false) {
                eprintln!("crash: object {o}: the image at the current bookmark differs");
                torn += 1;
            }
            if found.integrity != "ok" {
                eprintln!("crash: object {o}: integrity check says {}", found.integrity);
                torn += 1;
            }
            let batches: BTreeSet<i64> = found.kv.keys().chain(found.sql.keys()).copied().collect();
            for b in &batches {
                checked += 1;
                let kv = found.kv.get(b).copied().unwrap_or(0);
                let sql = found.sql.get(b).copied().unwrap_or(0);
                if kv != KEYS_PER_BATCH || sql != KEYS_PER_BATCH {
                    eprintln!("crash: object {o} batch {b} is torn: {kv} keys, {sql} rows");
                    torn += 1;
                }
            }
            for b in released {
                if !batches.contains(b) {
                    eprintln!("crash: object {o} lost released batch {b}");
                    lost += 1;
                }
            }
        }
    }
    println!("{iterations} iterations, {checked} batches checked, {lost} lost, {torn} torn");
    if lost == 0 && torn == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("child") {
        let pitr = args.get(2).map(String::as_str) == Some("--pitr");
        return match args.get(1) {
            Some(dir) => child(Path::new(dir), pitr),
            None => ExitCode::from(2),
        };
    }
    let mut iterations = 10;
    let mut dir: Option<PathBuf> = None;
    let mut pitr = false;
    let mut seed = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--iterations" => match it.next().and_then(|n| n.parse().ok()) {
                Some(n) => iterations = n,
                None => {
                    eprintln!("crash: --iterations takes a number");
                    return ExitCode::from(2);
                }
            },
            "--dir" => dir = it.next().map(PathBuf::from),
            "--pitr" => pitr = true,
            "--seed" => match it.next().and_then(|n| n.parse().ok()) {
                Some(n) => seed = Some(n),
                None => {
                    eprintln!("crash: --seed takes a number");
                    return ExitCode::from(2);
                }
            },
            other => {
                eprintln!("crash: unknown argument {other}");
                eprintln!("usage: crash [--iterations N] [--pitr] [--dir DIR] [--seed N]");
                return ExitCode::from(2);
            }
        }
    }
    let temp;
    let dir = match dir {
        Some(d) => d,
        None => match tempfile::tempdir() {
            Ok(t) => {
                temp = t;
                temp.path().to_path_buf()
            }
            Err(e) => {
                eprintln!("crash: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("crash: {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    parent(iterations, &dir, pitr, seed)
}
