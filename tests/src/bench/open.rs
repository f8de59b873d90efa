//! (g) Opening many objects: time to the first read and memory per open object. Each run is a
//! child process (the bench binary again, with `--child-open`), so that memory freed by one
//! run cannot be reused by the next and flatter its figure.
//!
//! Ours opens each object through a `durable_storage::Namespace` with the namespace's own
//! SQLite options (`NamespaceOptions::default().sql`: exclusive locking, group commit) and no
//! archive; the namespace is opened before the clock and the memory count start. Raw opens
//! with `locking_mode=EXCLUSIVE` too, so the comparison stays like for like; everything else
//! on the raw side is SQLite's default (lookaside included).

use std::path::{Path, PathBuf};
use std::time::Duration;

use durable_storage::{Archive, Namespace, NamespaceOptions};

use super::{BenchResult, Config, Row, Stats, V, fill_kv, keep, raw_open, row, tempdir, time};

/// Resident memory of this process in bytes.
fn rss() -> BenchResult<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm.split_whitespace().nth(1).ok_or("statm")?.parse()?;
    Ok(pages * 4096)
}

fn object_name(i: usize) -> String {
    format!("object-{i:05}")
}

fn object_path(dir: &Path, i: usize) -> PathBuf {
    dir.join(Namespace::file_name(&object_name(i)))
}

/// The child's work: open `n` objects of `dir` one after another, read one key from each,
/// keep them all open; print the seconds taken and the growth of resident memory.
pub fn child(side: &str, dir: &Path, n: usize) -> BenchResult<()> {
    let ns = match side {
        "ours" => Some(Namespace::open(dir, NamespaceOptions::new().archive(Archive::Off))?),
        _ => None,
    };
    let before = rss()?;
    let mut keep_open_ours = Vec::new();
    let mut keep_open_raw = Vec::new();
    let took = time(|| {
        for i in 0..n {
            if let Some(ns) = &ns {
                let storage = ns.storage(&object_name(i))?;
                let v: Option<V> = storage.kv()?.get("k00000000")?;
                keep(v.ok_or("missing key")?);
                keep_open_ours.push(storage);
            } else {
                let conn = raw_open(&object_path(dir, i), true)?;
                let v: Vec<u8> =
                    conn.query_row("SELECT value FROM _cf_KV WHERE key = ?", ["k00000000"], |r| {
                        r.get(0)
                    })?;
                keep(v);
                keep_open_raw.push(conn);
            }
        }
        Ok(())
    })?;
    let after = rss()?;
    let mut out = std::io::stdout().lock();
    use std::io::Write;
    writeln!(out, "{} {}", took.as_secs_f64(), after.saturating_sub(before))?;
    Ok(())
}

fn spawn(side: &str, dir: &Path, n: usize) -> BenchResult<(Duration, f64)> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .arg("--child-open")
        .arg(side)
        .arg(dir)
        .arg(n.to_string())
        .output()?;
    if !out.status.success() {
        return Err(format!("child failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let text = String::from_utf8(out.stdout)?;
    let mut parts = text.split_whitespace();
    let secs: f64 = parts.next().ok_or("child output")?.parse()?;
    let bytes: f64 = parts.next().ok_or("child output")?.parse()?;
    Ok((Duration::from_secs_f64(secs), bytes / n as f64))
}

/// Runs (g).
pub fn run(config: &Config, rows: &mut Vec<Row>) -> BenchResult<()> {
    if !config.wants("g") {
        return Ok(());
    }
    let n = config.size(1_000, 200);
    let dir = tempdir()?;
    for i in 0..n {
        fill_kv(&object_path(dir.path(), i), 1)?;
    }
    let (mut t_ours, mut t_raw, mut m_ours, mut m_raw) = (vec![], vec![], vec![], vec![]);
    for _ in 0..config.slow_runs() {
        let (t, m) = spawn("ours", dir.path(), n)?;
        t_ours.push(t);
        m_ours.push(m / 1000.0);
        let (t, m) = spawn("raw", dir.path(), n)?;
        t_raw.push(t);
        m_raw.push(m / 1000.0);
    }
    let mut open =
        row("g", "open an object + first read, all kept open (opens/s)", n, None, (t_ours, t_raw));
    // The target is "within 1.3x of raw" in time: ours/raw rate at least 1/1.3.
    open.target = Some(0.77);
    rows.push(open);
    rows.push(Row {
        id: "g-mem".into(),
        name: "memory per open object (RSS growth / n)".into(),
        unit: "kB/object",
        n,
        ours: Stats::of(&m_ours),
        raw: Some(Stats::of(&m_raw)),
        target: Some(100.0),
        higher_is_better: false,
        absolute_target: true,
        min_ours: None,
    });
    Ok(())
}
