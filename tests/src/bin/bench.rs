//! `cargo xtask bench [--quick] [--runs N] [--only a,c,...] [--json PATH]`: the project's
//! workloads next to raw rusqlite doing the same work in the same run; prints a Markdown
//! table and writes the same figures as JSON.
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout)]

#[path = "../bench/mod.rs"]
mod bench;

use std::path::PathBuf;
use std::process::ExitCode;

use bench::{BenchResult, Config};

const USAGE: &str = "usage: bench [--quick] [--runs N] [--only ID,ID...] [--json PATH]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = if args.first().map(String::as_str) == Some("--child-open") {
        child(&args[1..])
    } else {
        run(&args)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn child(args: &[String]) -> BenchResult<()> {
    let [side, dir, n] = args else { return Err("--child-open SIDE DIR N".into()) };
    bench::open::child(side, &PathBuf::from(dir), n.parse()?)
}

fn run(args: &[String]) -> BenchResult<()> {
    let mut config = Config { quick: false, runs: 5, only: Vec::new() };
    let mut json = PathBuf::from("target/bench.json");
    let mut runs = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => config.quick = true,
            "--runs" => runs = Some(it.next().ok_or(USAGE)?.parse()?),
            "--only" => {
                config.only = it.next().ok_or(USAGE)?.split(',').map(str::to_owned).collect()
            }
            "--json" => json = it.next().ok_or(USAGE)?.into(),
            _ => return Err(USAGE.into()),
        }
    }
    config.runs = runs.unwrap_or(if config.quick { 1 } else { 5 }).max(1);
    eprintln!(
        "bench: {} mode, {} runs per workload (fsync-bound ones at most 3)",
        if config.quick { "quick" } else { "full" },
        config.runs
    );
    let mut rows = Vec::new();
    type Workload = fn(&Config, &mut Vec<bench::Row>) -> BenchResult<()>;
    let groups: [(&str, Workload); 5] = [
        ("KV (a, a', b, c, d, j)", bench::kv::run),
        ("SQL (e, f)", bench::sql::run),
        ("open (g)", bench::open::run),
        ("archiver (h, i)", bench::pitr::run),
        ("group commit (b', b'', k)", bench::group::run),
    ];
    for (name, workload) in groups {
        let start = std::time::Instant::now();
        let before = rows.len();
        workload(&config, &mut rows)?;
        if rows.len() > before {
            eprintln!("bench: {name} done in {:.1} s", start.elapsed().as_secs_f64());
        }
    }
    println!("{}", bench::table(&rows));
    if let Some(parent) = json.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&json, serde_json::to_string_pretty(&bench::json(&rows, &config))?)?;
    eprintln!("bench: wrote {}", json.display());
    Ok(())
}
