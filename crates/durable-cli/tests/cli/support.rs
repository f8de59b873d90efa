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

    /// The home directory the runs see (`HOME`): the shell's history goes there.
    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// `durable` with this data directory's environment: `HOME` in the temporary folder,
    /// none of the user's `DURABLE_*` or `RUST_LOG` variables, then the extra ones.
    pub fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_durable"));
        std::fs::create_dir_all(self.home()).expect("the home folder");
        for var in ["DURABLE_DATA", "DURABLE_ARCHIVE", "DURABLE_HISTORY", "RUST_LOG"] {
            command.env_remove(var);
        }
        command
            .env("HOME", self.home())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.root());
        command
    }

    /// Runs `durable --data DIR ARGS...` with `input` on stdin.
    pub fn run_with_input(&self, args: &[&str], input: &str) -> Run {
        let mut command = self.command();
        command.arg("--data").arg(self.path()).args(args);
        run_command(command, input)
    }

    /// Runs `durable ARGS...` (no `--data`) with `vars` added to the environment.
    pub fn run_env(&self, args: &[&str], vars: &[(&str, &str)]) -> Run {
        let mut command = self.command();
        command.args(args).envs(vars.iter().copied());
        run_command(command, "")
    }

    /// Runs a command line that clap refuses: status 2 and clap's whole message on stderr
    /// (what is wrong, then the usage or a pointer to `--help`); that message.
    pub fn usage_error(&self, args: &[&str]) -> String {
        let run = self.run(args);
        assert_eq!(run.code, 2, "durable {args:?}: {run:?}");
        assert!(run.stderr.starts_with("error: "), "{run:?}");
        assert!(run.stderr.lines().count() > 1, "not clap's whole message: {run:?}");
        assert!(run.stderr.contains("try '--help'"), "no pointer to --help: {run:?}");
        run.stderr
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

    /// Runs a command that must fail with one line on stderr (a failure after the command
    /// line was read); that line.
    pub fn fails(&self, args: &[&str]) -> String {
        let run = self.run(args);
        assert_ne!(run.code, 0, "durable {args:?} succeeded: {run:?}");
        assert_eq!(run.stderr.lines().count(), 1, "not one line: {run:?}");
        assert!(run.stderr.starts_with("durable: "), "{run:?}");
        run.stderr.trim_end().to_owned()
    }
}

/// Runs `command` with `input` on stdin.
fn run_command(mut command: Command, input: &str) -> Run {
    let mut child = command
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
