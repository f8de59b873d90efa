//! The harness of `cargo xtask bench`: sizes, interleaved timing, statistics, the table and
//! the JSON report. The workloads live in the sibling modules.

pub mod group;
pub mod kv;
pub mod open;
pub mod pitr;
pub mod sql;

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use durable_sql::Options;
use durable_storage::{Archive, Namespace, NamespaceOptions, StorageHandle};
use serde::{Deserialize, Serialize};

/// Errors of the bench: any failure stops it with a message.
pub type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

/// The stored test value of every KV workload, the runtime benchmark's `{v: 1}`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct V {
    /// Always 1.
    pub v: i64,
}

/// The key of the `i`th entry, as the runtime benchmark spells it.
pub fn key(i: usize) -> String {
    format!("k{i:08}")
}

/// How big and how often.
#[derive(Debug, Clone)]
pub struct Config {
    /// Small sizes, so that everything finishes in well under a minute.
    pub quick: bool,
    /// Measured runs per workload (the median is reported).
    pub runs: usize,
    /// Only the workloads whose id starts with one of these (all when empty).
    pub only: Vec<String>,
}

impl Config {
    /// `full` normally, `quick` with `--quick`.
    pub fn size(&self, full: usize, quick: usize) -> usize {
        if self.quick { quick } else { full }
    }

    /// Runs for a slow (fsync-bound) workload: fewer than the default.
    pub fn slow_runs(&self) -> usize {
        self.runs.clamp(1, 3)
    }

    /// True if workload `id` was asked for.
    ///
    /// `id` is the id of a workload or of a group of them (`c` runs c, c-excl and c'): a
    /// group is wanted when one of the ids asked for starts with it, so `--only c-excl` runs
    /// the (c) group rather than nothing.
    pub fn wants(&self, id: &str) -> bool {
        self.only.is_empty()
            || self.only.iter().any(|o| id.starts_with(o.as_str()) || o.starts_with(id))
    }
}

/// Median, min and max of a rate over several runs.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    /// The median (the mean of the middle two for an even count).
    pub median: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
}

impl Stats {
    /// Statistics of `values` (at least one).
    pub fn of(values: &[f64]) -> Stats {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Stats { median, min: v[0], max: v[n - 1] }
    }
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    /// Short id: `a`, `a'`, `c-excl`, ...
    pub id: String,
    /// What the line measures.
    pub name: String,
    /// The unit of the numbers (`ops/s` unless said otherwise).
    pub unit: &'static str,
    /// Operations per run.
    pub n: usize,
    /// The project's figures.
    pub ours: Stats,
    /// Raw rusqlite doing the same work, when there is an equivalent.
    pub raw: Option<Stats>,
    /// The target for ours / raw, when it sets one.
    pub target: Option<f64>,
    /// True when a larger number is better (rates); false for costs (memory).
    pub higher_is_better: bool,
    /// The target bounds ours itself (in `unit`), not ours / raw.
    pub absolute_target: bool,
    /// A floor for ours itself (in `unit`) on top of a ratio target: both must hold.
    pub min_ours: Option<f64>,
}

impl Row {
    /// Ours divided by raw (medians).
    pub fn ratio(&self) -> Option<f64> {
        self.raw.map(|r| self.ours.median / r.median)
    }

    /// Whether the target is met (`None` without a target).
    pub fn meets(&self) -> Option<bool> {
        let target = self.target?;
        let x = if self.absolute_target { self.ours.median } else { self.ratio()? };
        let floor = self.min_ours.is_none_or(|min| self.ours.median >= min);
        Some(floor && if self.higher_is_better { x >= target } else { x <= target })
    }
}

/// Times `f`.
pub fn time(f: impl FnOnce() -> BenchResult<()>) -> BenchResult<Duration> {
    let start = Instant::now();
    f()?;
    Ok(start.elapsed())
}

/// Rate of `n` operations in `d`.
pub fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

/// Runs `ours` and `raw` alternately `runs` times each (so that drift in the machine's load
/// hits both alike); each returns the duration of its timed part.
pub fn pair(
    runs: usize,
    mut ours: impl FnMut() -> BenchResult<Duration>,
    mut raw: impl FnMut() -> BenchResult<Duration>,
) -> BenchResult<(Vec<Duration>, Vec<Duration>)> {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        a.push(ours()?);
        b.push(raw()?);
    }
    Ok((a, b))
}

/// A row from paired durations of `n` operations each.
pub fn row(
    id: &str,
    name: &str,
    n: usize,
    target: Option<f64>,
    (ours, raw): (Vec<Duration>, Vec<Duration>),
) -> Row {
    let rates = |d: &[Duration]| d.iter().map(|d| rate(n, *d)).collect::<Vec<_>>();
    Row {
        id: id.into(),
        name: name.into(),
        unit: "ops/s",
        n,
        ours: Stats::of(&rates(&ours)),
        raw: if raw.is_empty() { None } else { Some(Stats::of(&rates(&raw))) },
        target,
        higher_is_better: true,
        absolute_target: false,
        min_ours: None,
    }
}

/// A fresh temporary folder on the same disk as the data of a real deployment.
pub fn tempdir() -> BenchResult<tempfile::TempDir> {
    Ok(tempfile::Builder::new().prefix("durable-bench").tempdir()?)
}

/// A namespace over `dir` (created if missing) whose SQLite-backed objects open with `sql`
/// and archive as `archive` says; the rest is the namespace's default. Workloads that measure
/// the product open their objects through one, as a program does.
pub fn namespace(dir: &Path, sql: Options, archive: Archive) -> BenchResult<Namespace> {
    Ok(Namespace::open(dir, NamespaceOptions::new().sql(sql).archive(archive))?)
}

/// The object `name` (the file `dir/<name>.sqlite`, `name` being lowercase letters, digits
/// and `-`) of a namespace over `dir` opened with `sql` and no archive. The handle keeps the
/// namespace's lock; dropping it closes the object and releases the folder.
pub fn open_object(dir: &Path, name: &str, sql: Options) -> BenchResult<StorageHandle> {
    Ok(namespace(dir, sql, Archive::Off)?.storage(name)?)
}

/// Opens a raw rusqlite connection with the project's SQLite settings: page size 4096, WAL,
/// `synchronous=FULL`, foreign keys on, optionally `locking_mode=EXCLUSIVE`.
pub fn raw_open(path: &Path, exclusive: bool) -> BenchResult<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path)?;
    conn.pragma_update(None, "page_size", 4096)?;
    if exclusive {
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
    }
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if mode != "wal" {
        return Err(format!("journal_mode is {mode}, not wal").into());
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

/// The `_cf_KV` table and the project's upsert, for the raw side of KV workloads.
pub const RAW_KV_CREATE: &str =
    "CREATE TABLE IF NOT EXISTS _cf_KV (key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID";
/// The project's KV write statement.
pub const RAW_KV_PUT: &str = "INSERT INTO _cf_KV (key, value) VALUES (?, ?) \
                              ON CONFLICT DO UPDATE SET value = excluded.value";

/// Writes `n` entries (`key(i)` → `{v: 1}`) into a new database at `path` with raw rusqlite.
pub fn fill_kv(path: &Path, n: usize) -> BenchResult<()> {
    let mut conn = raw_open(path, false)?;
    let value = durable_kv::codec::encode(&V { v: 1 })?;
    let tx = conn.transaction()?;
    tx.execute(RAW_KV_CREATE, [])?;
    {
        let mut put = tx.prepare(RAW_KV_PUT)?;
        for i in 0..n {
            put.execute(rusqlite::params![key(i), value])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Keeps `x` alive and opaque to the optimiser.
pub fn keep<T>(x: T) {
    black_box(x);
}

fn fmt_rate(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1} k", x / 1e3)
    } else {
        format!("{x:.1}")
    }
}

/// The table, as Markdown.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| id | workload | n | unit | ours median (min–max) | raw median (min–max) | ours/raw | target |\n\
         |---|---|---:|---|---:|---:|---:|---|\n",
    );
    for r in rows {
        let stats =
            |s: &Stats| format!("{} ({}–{})", fmt_rate(s.median), fmt_rate(s.min), fmt_rate(s.max));
        let raw = r.raw.as_ref().map(stats).unwrap_or_else(|| "–".into());
        let ratio = r.ratio().map(|x| format!("{x:.2}x")).unwrap_or_else(|| "–".into());
        let target = match (r.target, r.meets()) {
            (Some(t), met) => format!(
                "{}{t}{}{} {}",
                if r.higher_is_better { "≥" } else { "≤" },
                if r.absolute_target { format!(" {}", r.unit) } else { "x".into() },
                r.min_ours.map(|m| format!(" and ≥{} {}", fmt_rate(m), r.unit)).unwrap_or_default(),
                if met == Some(true) { "met" } else { "MISSED" }
            ),
            (None, _) => String::new(),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.id,
            r.name,
            r.n,
            r.unit,
            stats(&r.ours),
            raw,
            ratio,
            target
        ));
    }
    out
}

/// The report as JSON.
pub fn json(rows: &[Row], config: &Config) -> serde_json::Value {
    let stats = |s: &Stats| serde_json::json!({"median": s.median, "min": s.min, "max": s.max});
    serde_json::json!({
        "quick": config.quick,
        "runs": config.runs,
        "rows": rows.iter().map(|r| serde_json::json!({
            "id": r.id,
            "name": r.name,
            "unit": r.unit,
            "n": r.n,
            "ours": stats(&r.ours),
            "raw": r.raw.as_ref().map(stats),
            "ratio": r.ratio(),
            "target": r.target,
            "min_ours": r.min_ours,
            "meets_target": r.meets(),
        })).collect::<Vec<_>>(),
    })
}
