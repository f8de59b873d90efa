//! Runs the built `durable` binary on a temporary data directory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What one run printed and how it exited.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// A temporary data directory and the binary to run on it.
pub struct Data {
    dir: tempfile::TempDir,
    /// Environment variables every run gets.
    env: Vec<(String, String)>,
}

impl Data {
    pub fn new() -> Data {
        Data { dir: tempfile::tempdir().expect("temporary directory"), env: Vec::new() }
    }

    /// Every run of this data directory gets `vars` in its environment.
    #[cfg_attr(not(feature = "s3-tests"), allow(dead_code))]
    pub fn with_env(mut self, vars: impl IntoIterator<Item = (impl Into<String>, String)>) -> Data {
        self.env.extend(vars.into_iter().map(|(k, v)| (k.into(), v)));
        self
    }

    /// The data directory (`--data`).
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `durable --data DIR ARGS...` with `input` on stdin.
    pub fn run_with_input(&self, args: &[&str], input: &str) -> Run {
        let mut child = Command::new(env!("CARGO_BIN_EXE_durable"))
            .arg("--data")
            .arg(self.path())
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.root())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the durable binary starts");
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let output = child.wait_with_output().unwrap();
        let run = Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        };
        assert!(!run.stderr.contains("internal error"), "the command panicked: {run:?}");
        run
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with_input(args, "")
    }

    /// Runs a command that must succeed; its standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args);
        assert_eq!(run.code, 0, "durable {args:?} failed: {run:?}");
        assert_eq!(run.stderr, "", "durable {args:?} wrote to stderr");
        run.stdout
    }

    /// Runs a command with `--json` that must succeed; its one JSON document.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.ok(&all);
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    /// Runs a command that must fail with one line on stderr; that line.
    pub fn fails(&self, args: &[&str]) -> String {
        let run = self.run(args);
        assert_ne!(run.code, 0, "durable {args:?} succeeded: {run:?}");
        assert_eq!(run.stderr.lines().count(), 1, "not one line: {run:?}");
        assert!(run.stderr.starts_with("durable: "), "{run:?}");
        run.stderr.trim_end().to_owned()
    }
}
