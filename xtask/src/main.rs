//! `cargo xtask`: the project's checks and chores in one entry point.
//!
//! - `cargo xtask ci`: formatting, clippy with `-D warnings`, every test (doc tests
//!   included), the S3 tests (the `s3-tests` features of durable-pitr, durable-storage and
//!   durable-cli), the layering and tidy checks, the conformance suite (with the slow cases of
//!   `tests/cases-slow`), a crash run, a load run, the failover run, the examples, `cargo doc` without warnings,
//!   and the benchmarks with `--quick`.
//! - `cargo xtask conformance [--cases DIR]`: runs the op-script cases (default: the
//!   vendored copy in `tests/cases`) and prints `N passed, N failed, N skipped` last.
//! - `cargo xtask crash [--iterations N] [--pitr] [--seed N]`: kills a writing child process with
//!   SIGKILL at random moments and checks that no released batch was lost and none is torn; it
//!   prints its seed, and `--seed` replays those kill points.
//! - `cargo xtask load [--objects N] [--seconds S] [--clients C] [--no-group-commit]`: many objects under
//!   concurrent events; checks that no acknowledged write was lost and reports memory.
//! - `cargo xtask failover [--seconds S] [--kills K] [--seed N] [--mode local|replicated|both]`:
//!   three node processes sharing an archive in S3 (a server on 127.0.0.1), killed with
//!   SIGKILL at random moments and restarted, then a node paused past its lease; checks that
//!   no acknowledged write was lost under `Replicated` and reports what `Local` lost
//!   (docs/operations.md, "Several nodes").
//! - `cargo xtask refresh-cases`: copies the public cases from `../shared/oracle/cases`.
//! - `cargo xtask bench [--quick] [--runs N] [--only a,c] [--json PATH]`: the workloads of
//!   `docs/performance.md` on the project and on raw rusqlite; a table on stdout, JSON in
//!   `target/bench.json`.
//! - `cargo xtask tidy`: only the layering and tidy checks.
#![forbid(unsafe_code)]

mod tidy;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").into()
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

fn run(step: &str, mut cmd: Command) -> Result<(), String> {
    eprintln!("xtask: {step}");
    let status = cmd.status().map_err(|e| format!("{step}: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("{step} failed ({status})")) }
}

fn ci() -> Result<(), String> {
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--check"]);
    run("cargo fmt --check", fmt)?;
    tidy_step()?;
    let mut clippy = cargo();
    clippy.args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]);
    run("cargo clippy", clippy)?;
    let mut test = cargo();
    test.args(["test", "--workspace"]);
    run("cargo test", test)?;
    // The archive over real HTTP with signed requests, against an S3-compatible server the
    // tests start on 127.0.0.1 (s3s-fs): behind a feature because the AWS client takes
    // minutes to build, so CI builds it here, once.
    for (package, test) in
        [("durable-pitr", "pitr"), ("durable-storage", "storage"), ("durable-cli", "cli")]
    {
        let mut s3 = cargo();
        s3.args(["test", "--package", package, "--features", "s3-tests", "--test", test, "s3"]);
        run(&format!("S3 tests of {package}"), s3)?;
    }
    conformance(&[])?;
    // Cases that wait out the runtime's real 30-second limits (about two minutes).
    conformance(&["--cases".into(), root().join("tests/cases-slow").display().to_string()])?;
    crash(&["--iterations".into(), "3".into()])?;
    crash(&["--iterations".into(), "2".into(), "--pitr".into()])?;
    load(&["--objects".into(), "200".into(), "--seconds".into(), "3".into()])?;
    // After the S3 tests, which built the AWS client with the same features.
    failover(&[])?;
    // The examples run, and the API docs build without warnings.
    // Each in a fresh folder of its own under target/, not the shared temp folder, so that an
    // earlier run's data or another checkout's run cannot meet it.
    // The HTTP chat server (a crate of its own: axum stays out of durable-storage's
    // dev-dependencies) serves on 127.0.0.1:0, talks to itself for a few seconds and exits.
    for example in ["counter", "chat_room", "restore", "chat-server"] {
        let data = root().join("target/examples-ci").join(example);
        match std::fs::remove_dir_all(&data) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("example {example}: {}: {e}", data.display())),
        }
        let mut run_example = cargo();
        run_example.args(["run", "--quiet"]);
        match example {
            "chat-server" => run_example.args(["--package", "durable-chat-server"]),
            _ => run_example.args(["--package", "durable-storage", "--example", example]),
        };
        run_example.arg("--").arg(&data);
        run(&format!("example {example}"), run_example)?;
    }
    let mut doc = cargo();
    doc.args(["doc", "--no-deps", "--workspace"]).env("RUSTDOCFLAGS", "-D warnings");
    run("cargo doc", doc)?;
    // The benchmarks run small so that they never rot; in the test profile, so CI builds
    // nothing twice, and nothing is asserted about time.
    let mut quick = cargo();
    quick.args(["run", "--quiet", "--package", "durable-conformance", "--bin", "bench", "--"]);
    quick.args(["--quick", "--runs", "1", "--json"]).arg(root().join("target/bench-ci.json"));
    run("bench --quick", quick)
}

fn tidy_step() -> Result<(), String> {
    eprintln!("xtask: layering and tidy checks");
    let problems = tidy::check(&root());
    if problems.is_empty() {
        Ok(())
    } else {
        for p in &problems {
            eprintln!("  {p}");
        }
        Err(format!("{} layering/tidy problems", problems.len()))
    }
}

fn conformance(args: &[String]) -> Result<(), String> {
    let mut cmd = cargo();
    cmd.args(["run", "--quiet", "--package", "durable-conformance", "--"]);
    cmd.args(args);
    run("conformance", cmd)
}

fn crash(args: &[String]) -> Result<(), String> {
    let mut cmd = cargo();
    cmd.args(["run", "--quiet", "--package", "durable-conformance", "--bin", "crash", "--"]);
    cmd.args(args);
    run("crash", cmd)
}

fn load(args: &[String]) -> Result<(), String> {
    let mut cmd = cargo();
    cmd.args(["run", "--quiet", "--package", "durable-conformance", "--bin", "load", "--"]);
    cmd.args(args);
    run("load", cmd)
}

/// Builds the `node` and `failover` binaries (the tests crate's `s3` feature: durable-storage
/// with `s3`, the same AWS client build as durable-cli's S3 tests) and runs the failover test.
fn failover(args: &[String]) -> Result<(), String> {
    let mut build = cargo();
    build.args(["build", "--quiet", "--package", "durable-conformance", "--features", "s3"]);
    build.args(["--bin", "node", "--bin", "failover"]);
    run("build the failover test", build)?;
    let mut cmd = cargo();
    cmd.args(["run", "--quiet", "--package", "durable-conformance", "--features", "s3"]);
    cmd.args(["--bin", "failover", "--"]);
    cmd.args(args);
    run("failover", cmd)
}

fn refresh_cases() -> Result<(), String> {
    let from = root().join("../shared/oracle/cases");
    let to = root().join("tests/cases");
    let entries = std::fs::read_dir(&from).map_err(|e| format!("{}: {e}", from.display()))?;
    std::fs::create_dir_all(&to).map_err(|e| e.to_string())?;
    let mut n = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|x| x == "json") {
            std::fs::copy(&path, to.join(entry.file_name())).map_err(|e| e.to_string())?;
            n += 1;
        }
    }
    eprintln!("xtask: copied {n} files from {} to {}", from.display(), to.display());
    Ok(())
}

fn bench(args: &[String]) -> Result<(), String> {
    let mut cmd = cargo();
    cmd.args(["run", "--release", "--quiet", "--package", "durable-conformance"]);
    cmd.args(["--bin", "bench", "--"]);
    if !args.iter().any(|a| a == "--json") {
        cmd.arg("--json").arg(root().join("target/bench.json"));
    }
    cmd.args(args);
    run("bench", cmd)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("conformance") => conformance(&args[1..]),
        Some("crash") => crash(&args[1..]),
        Some("load") => load(&args[1..]),
        Some("failover") => failover(&args[1..]),
        Some("refresh-cases") => refresh_cases(),
        Some("tidy") => tidy_step(),
        Some("bench") => bench(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask (ci | conformance [--cases DIR] | crash [--iterations N] [--pitr] [--seed N] | load [--objects N] [--seconds S] | failover [--seconds S] [--kills K] [--seed N] | bench [--quick] | refresh-cases | tidy)"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
