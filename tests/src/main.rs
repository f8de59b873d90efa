//! `durable-conformance`: runs op scripts on durable-storage.
//!
//! `durable-conformance [--cases DIR] [--skips FILE]` checks every case of DIR and prints a
//! diff per failing case, then `N passed, N failed, N skipped`; `--stdio` reads one script per
//! line and writes one result line, like the oracle's `run.mjs --stdio`.
#![forbid(unsafe_code)]

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use durable_conformance::{check_dir, load_skips, run_script, skip_file, vendored_cases};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut cases = vendored_cases();
    let mut skips = Some(skip_file());
    let mut stdio = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--cases" => cases = PathBuf::from(args.next().unwrap_or_default()),
            "--skips" => skips = args.next().map(PathBuf::from),
            "--no-skips" => skips = None,
            "--stdio" => stdio = true,
            other => {
                eprintln!("durable-conformance: unknown argument {other:?}");
                return ExitCode::from(2);
            }
        }
    }
    if stdio {
        return run_stdio();
    }
    let skips = match skips.map(|p| load_skips(&p)).transpose() {
        Ok(s) => s.unwrap_or_default(),
        Err(e) => {
            eprintln!("durable-conformance: {e}");
            return ExitCode::from(2);
        }
    };
    let summary = match check_dir(&cases, &skips) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("durable-conformance: {e}");
            return ExitCode::from(2);
        }
    };
    let mut out = std::io::stdout().lock();
    for (name, diff) in &summary.failed {
        let _ = writeln!(out, "FAIL {name}");
        for line in diff.lines() {
            let _ = writeln!(out, "    {line}");
        }
    }
    for (name, reason) in &summary.skipped {
        let _ = writeln!(out, "skip {name}: {reason}");
    }
    if summary.skipped_ops > 0 {
        let _ = writeln!(out, "({} skip entries for single ops or classes)", summary.skipped_ops);
    }
    let _ = writeln!(out, "{}", summary.line());
    if summary.failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn run_stdio() -> ExitCode {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let answer = match serde_json::from_str(&line) {
            Ok(script) => match tempfile::tempdir() {
                Ok(dir) => run_script(&script, dir.path()),
                Err(e) => serde_json::json!({"error": e.to_string()}),
            },
            Err(e) => serde_json::json!({"error": format!("bad script: {e}")}),
        };
        let _ = writeln!(out, "{answer}");
        let _ = out.flush();
    }
    ExitCode::SUCCESS
}
