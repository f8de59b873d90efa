//! `durable`: the command-line tool of durable-storage.
//!
//! It works on the objects stored in a data directory (`--data`, default `./durable-data`):
//! list them, run SQL and KV calls on them through the same API and authorizer as the
//! library, open an interactive shell, and take the tour of every storage API. See
//! `durable --help` and `docs/guide.md`.
//!
//! A failure is one line on standard error and a non-zero exit status (a bad command line
//! gets clap's full message: what is wrong, a suggestion, the usage); results go to standard
//! output, as text or, with `--json`, as one JSON document per result. Warnings of the
//! library (a failing archive upload, say) go to standard error through a tracing subscriber
//! (`-v`, `-q`, `RUST_LOG`).
#![forbid(unsafe_code)]
// The command is the one crate that reports on standard output.
#![allow(clippy::print_stdout)]
#![deny(missing_docs)]

mod error;
mod kv;
mod objects;
mod out;
mod pitr;
mod shell;
mod sql;
mod time;
mod tour;
mod values;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use durable_storage::{Archive, ArchiveStore, Namespace, NamespaceOptions, StorageHandle};

use crate::error::{Error, Result};
use crate::out::Out;
use crate::time::TimeArg;

/// The `durable` command line.
#[derive(Parser, Debug)]
#[command(
    name = "durable",
    version,
    about = "Operate on durable-storage objects: SQL, KV, a shell, and a tour of the storage API"
)]
struct Cli {
    /// The data directory: one database file per object.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        env = "DURABLE_DATA",
        default_value = "durable-data"
    )]
    data: PathBuf,
    /// Where history is archived: a folder path (default: `archive/` in the data directory),
    /// `file:///path`, or an object store URL: `s3://bucket/prefix` (builds with the `s3`
    /// feature; settings from `AWS_*` variables), `gs://` (`gcs`), `az://` (`azure`).
    #[arg(long, global = true, value_name = "URL", env = "DURABLE_ARCHIVE")]
    archive: Option<String>,
    /// Print results as JSON documents, one per line.
    #[arg(long, global = true)]
    json: bool,
    /// Say more on standard error: `-v` the library's info messages, `-vv` debug.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    verbose: u8,
    /// Say less on standard error: errors only, no warnings. (`RUST_LOG` adds directives
    /// such as `durable_pitr=debug` to the level these choose; the default is warnings.)
    #[arg(short, long, global = true)]
    quiet: bool,
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
enum Command {
    /// Every stored object with its database size and last write time.
    Objects,
    /// Run SQL on an object (`ctx.storage.sql.exec`); parameters bind to `?`.
    Sql {
        /// The object's name (created on first use).
        object: String,
        /// The SQL text (several statements separated by `;` run in order).
        query: String,
        /// Bound parameters: JSON (`42`, `1.5`, `null`, `"42"`, `{"$bytes":"00ff"}`) or text.
        #[arg(allow_hyphen_values = true)]
        params: Vec<String>,
    },
    /// The KV API of an object: get, put, delete, list.
    Kv {
        /// The KV call.
        #[command(subcommand)]
        command: kv::KvCommand,
    },
    /// An interactive prompt on one object: SQL lines and `kv ...` commands, with history.
    Shell {
        /// The object's name (created on first use).
        object: String,
    },
    /// The object's current bookmark (`getCurrentBookmark`), or the one for a time
    /// (`getBookmarkForTime`): RFC 3339 or a time ago such as `15m`, `2h`, `1d`.
    Bookmark {
        /// The object's name.
        object: String,
        /// The time: `15m` (15 minutes ago; humantime units such as `2h30m`, `1d`), RFC 3339
        /// (`2025-01-31T12:00:00Z`, any offset), or milliseconds since the epoch.
        #[arg(long, value_name = "TIME")]
        at: Option<TimeArg>,
    },
    /// The object's history: each retained commit with its time, bookmark and database
    /// size, newest first, one page at a time.
    History {
        /// The object's name.
        object: String,
        /// How many commits to show.
        #[arg(long, value_name = "N", default_value_t = 20)]
        limit: usize,
        /// Show only commits older than this bookmark (the last one of the previous page).
        #[arg(long, value_name = "BOOKMARK")]
        before: Option<String>,
    },
    /// Restores an object to a bookmark or a time (`onNextSessionRestoreBookmark`, applied by
    /// reopening the object) and prints the bookmark that undoes it.
    Restore {
        /// The object's name.
        object: String,
        /// The bookmark to restore to.
        bookmark: Option<String>,
        /// Restore to the state at this time instead (`15m` ago, RFC 3339, or milliseconds
        /// since the epoch).
        #[arg(long, value_name = "TIME", conflicts_with = "bookmark")]
        at: Option<TimeArg>,
        /// Write the state at the bookmark (or time) to this file instead, read from the
        /// archive alone: the object is not touched, and it may keep running elsewhere.
        #[arg(long, value_name = "FILE")]
        to: Option<PathBuf>,
    },
    /// Writes an object's state (its newest archived commit, or the one at `--at` or
    /// `--bookmark`) to a SQLite file, from the archive alone: no lock, no lease, so a
    /// running server (here or on another node) need not stop.
    Export {
        /// The object's name.
        object: String,
        /// The state at this time (`15m` ago, RFC 3339, or milliseconds since the epoch).
        #[arg(long, value_name = "TIME", conflicts_with = "bookmark")]
        at: Option<TimeArg>,
        /// The state at this bookmark.
        #[arg(long, value_name = "BOOKMARK")]
        bookmark: Option<String>,
        /// The file to write (replaced atomically).
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
    },
    /// The archive of the objects' history: status, verify, prune.
    Archive {
        /// What to do.
        #[command(subcommand)]
        command: pitr::ArchiveCommand,
    },
    /// A walkthrough that runs every storage API on an object and prints each step.
    Tour {
        /// The object the tour writes (its previous contents are deleted).
        #[arg(long, default_value = "tour")]
        object: String,
    },
}

/// The namespace's archive from `--archive` (default: `DATA/archive`, the namespace's own).
fn archive_option(url: Option<&str>) -> Result<Archive> {
    match url {
        None => Ok(Archive::Local),
        Some(url) => Ok(Archive::Store(ArchiveStore::from_url(url)?)),
    }
}

/// What every command gets: the options and the output.
pub struct Env {
    /// The data directory.
    pub data: PathBuf,
    /// Where the namespace archives.
    pub archive: Archive,
    /// Standard output.
    pub out: Out,
}

impl Env {
    /// Opens the namespace in the data directory (creating the directory).
    pub fn namespace(&self) -> Result<Namespace> {
        let options = NamespaceOptions::new().archive(self.archive.clone());
        Ok(Namespace::open(&self.data, options)?)
    }

    /// Opens a stored object, refusing a name that has no database yet.
    pub fn existing(&self, ns: &Namespace, name: &str) -> Result<StorageHandle> {
        if !ns.exists(name) {
            return Err(Error::msg(format!("no object named {name:?} in {}", self.data.display())));
        }
        Ok(ns.storage(name)?)
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let archive = archive_option(cli.archive.as_deref())?;
    let mut env = Env { data: cli.data, archive, out: Out::new(cli.json) };
    match cli.command {
        Command::Objects => objects::run(&mut env)?,
        Command::Sql { object, query, params } => sql::run(&mut env, &object, &query, &params)?,
        Command::Kv { command } => kv::run(&mut env, command)?,
        Command::Shell { object } => return shell::run(&mut env, &object),
        Command::Tour { object } => tour::run(&mut env, &object)?,
        Command::Bookmark { object, at } => pitr::bookmark(&mut env, &object, at)?,
        Command::History { object, limit, before } => {
            pitr::history(&mut env, &object, limit, before.as_deref())?
        }
        Command::Restore { object, bookmark, at, to: Some(to) } => {
            if bookmark.is_none() && at.is_none() {
                return Err(error::Error::msg("give a BOOKMARK or --at TIME (one of them)"));
            }
            pitr::export(&mut env, &object, bookmark.as_deref(), at, &to)?
        }
        Command::Restore { object, bookmark, at, to: None } => {
            pitr::restore(&mut env, &object, bookmark.as_deref(), at)?
        }
        Command::Export { object, at, bookmark, to } => {
            pitr::export(&mut env, &object, bookmark.as_deref(), at, &to)?
        }
        Command::Archive { command } => pitr::archive(&mut env, command)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Sends the library's `tracing` events to standard error: warnings by default, `-v` info,
/// `-vv` (or more) debug, `-q` errors only; `RUST_LOG` directives refine that level.
fn logging(verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::filter::LevelFilter;
    let level = match (quiet, verbose) {
        (true, _) => LevelFilter::ERROR,
        (false, 0) => LevelFilter::WARN,
        (false, 1) => LevelFilter::INFO,
        (false, _) => LevelFilter::DEBUG,
    };
    // The level first, then RUST_LOG's directives: `durable_pitr=debug` adds to the level,
    // a bare `debug` replaces it.
    let directives = match std::env::var("RUST_LOG") {
        Ok(env) if !env.trim().is_empty() => format!("{level},{env}"),
        _ => level.to_string(),
    };
    let filter = EnvFilter::builder().parse_lossy(directives);
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .try_init();
}

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        eprintln!("durable: internal error: {info}");
    }));
    // A bad command line: clap's whole message (what is wrong, "a similar ... exists",
    // the usage, where to look) on stderr and status 2; help and version on stdout.
    let cli = Cli::parse();
    logging(cli.verbose, cli.quiet);
    match run(cli) {
        Ok(code) => code,
        Err(e) if e.broken_pipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("durable: {e}");
            ExitCode::FAILURE
        }
    }
}
