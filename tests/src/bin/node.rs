//! `node`: one node of the failover test (`cargo xtask failover`, the `failover` binary).
//!
//! `node --dir DIR --archive URL --node-id ID [--replication local|replicated] [--lease-ms N]
//! [--archive-lag-ms N]` opens a `Namespace` in DIR whose objects archive to URL (with
//! `s3://...`, the `AWS_*` variables name the server), leased under node id ID, listens on a
//! free port of 127.0.0.1, prints `listening 127.0.0.1:PORT` and serves one request per line:
//!
//! - `write OBJ N`: one event of object OBJ inserts the rows `(N, 0)` and `(N, 1)` into its
//!   table `writes` (two statements of one turn, so both or neither). The answer is
//!   `ok OBJ N` once the event's result was released (durable locally, or in the archive store
//!   under `--replication replicated`), `owner OBJ NODE ADDRESS` when another live node holds
//!   the object's lease (the client goes there), `err OBJ MESSAGE` otherwise.
//! - `write-bookmark OBJ N`: the same write; the answer is `ok OBJ N BOOKMARK`, the bookmark
//!   of the state the write made (`current_bookmark` in the same event).
//!
//! Objects stay open between requests; one whose event failed (fenced, reset, the store not
//! answering) is dropped, so the next request opens it again (or names its new owner).
//! The node closes its namespace (final uploads, leases released) and exits when its standard
//! input closes, so a test harness that dies takes its nodes with it.
//!
//! The library's events go to standard error (warnings, or what `RUST_LOG` selects), or with
//! `NODE_LOG_DIR` set to the end of `{NODE_LOG_DIR}/{ID}.log` (kept over restarts). At
//! `RUST_LOG=node=debug` the node logs every acknowledged write.
#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line tool
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use durable_storage::pitr::{ArchiveError, Error as PitrError};
use durable_storage::{
    Actor, Archive, ArchiveStore, Error, Namespace, NamespaceOptions, ObjectHandle, Replication,
    StorageHandle,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt as _, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// How long closing the namespace may take before the node exits anyway.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest request line read; a longer one ends the connection.
const MAX_LINE: usize = 4096;

struct Doc;
impl Actor for Doc {}

struct Config {
    dir: PathBuf,
    archive: String,
    node_id: String,
    replication: Replication,
    lease: Duration,
    archive_lag: Duration,
}

fn parse_args() -> Result<Config, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut dir, mut archive, mut node_id) = (None, None, None);
    let mut replication = Replication::Local;
    let mut lease = Duration::from_secs(1);
    let mut archive_lag = Duration::from_millis(500);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let value = it.next().ok_or_else(|| format!("{arg} needs a value"))?;
        let ms = || value.parse::<u64>().map(Duration::from_millis).map_err(|e| e.to_string());
        match arg.as_str() {
            "--dir" => dir = Some(PathBuf::from(value)),
            "--archive" => archive = Some(value.clone()),
            "--node-id" => node_id = Some(value.clone()),
            "--replication" => {
                replication = match value.as_str() {
                    "local" => Replication::Local,
                    "replicated" => Replication::Replicated,
                    other => return Err(format!("unknown replication mode {other:?}")),
                }
            }
            "--lease-ms" => lease = ms()?,
            "--archive-lag-ms" => archive_lag = ms()?,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    match (dir, archive, node_id) {
        (Some(dir), Some(archive), Some(node_id)) => {
            Ok(Config { dir, archive, node_id, replication, lease, archive_lag })
        }
        _ => Err("--dir, --archive and --node-id are required".into()),
    }
}

/// An object this node has open: its runtime, and its storage handle, which keeps it (and
/// its lease) open between events.
struct Open {
    object: ObjectHandle<Doc>,
    _storage: StorageHandle,
}

struct Node {
    ns: Namespace,
    objects: Mutex<HashMap<String, Open>>,
}

/// `message` on one line.
fn one_line(message: impl std::fmt::Display) -> String {
    message.to_string().replace(['\n', '\r'], " ")
}

impl Node {
    fn objects(&self) -> std::sync::MutexGuard<'_, HashMap<String, Open>> {
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The running object `name`, opened here if it is not: `Err` is the reply (the owner
    /// elsewhere, or why it could not be opened).
    async fn open(&self, name: &str) -> Result<ObjectHandle<Doc>, String> {
        if let Some(open) = self.objects().get(name) {
            return Ok(open.object.clone());
        }
        // Opening claims the lease (or names the owner) and may restore from the store:
        // blocking I/O, off the async workers.
        let ns = self.ns.clone();
        let object = name.to_owned();
        let opened = tokio::task::spawn_blocking(move || ns.storage(&object))
            .await
            .map_err(|e| format!("err {name} {}", one_line(e)))?;
        let storage = match opened {
            Ok(storage) => storage,
            Err(Error::Pitr(PitrError::Archive(ArchiveError::LeaseHeld {
                node, address, ..
            }))) => {
                return Err(format!("owner {name} {node} {}", address.unwrap_or_default()));
            }
            Err(e) => return Err(format!("err {name} {}", one_line(e))),
        };
        let object = self.ns.object(name, |_| Doc).map_err(|e| format!("err {name} {e}"))?;
        self.objects().insert(name.to_owned(), Open { object: object.clone(), _storage: storage });
        Ok(object)
    }

    /// Writes `n` to `name`: `ok NAME N`, followed by the bookmark of the state the write
    /// made when `bookmark` is set (taken in the same event, so confirmed with it).
    async fn write(&self, name: &str, n: i64, bookmark: bool) -> String {
        let object = match self.open(name).await {
            Ok(object) => object,
            Err(reply) => return reply,
        };
        let result = object
            .call(move |ctx| async move {
                let db = ctx.storage().sql()?;
                db.exec("CREATE TABLE IF NOT EXISTS writes(n INTEGER, part INTEGER)", &[])?;
                db.exec("INSERT INTO writes VALUES (?, 0)", &[n.into()])?;
                db.exec("INSERT INTO writes VALUES (?, 1)", &[n.into()])?;
                match bookmark {
                    true => ctx.storage().current_bookmark().await.map(Some),
                    false => Ok::<_, durable_storage::txn::Error>(None),
                }
            })
            .await;
        let error = match result {
            Ok(Ok(bookmark)) => {
                tracing::debug!(target: "node", "ok {name} {n}");
                return match bookmark {
                    Some(b) => format!("ok {name} {n} {b}"),
                    None => format!("ok {name} {n}"),
                };
            }
            Ok(Err(e)) | Err(e) => e,
        };
        // The object failed (fenced, reset, the store not confirming): drop it, so that the
        // next request opens it again, or finds its new owner.
        drop(object);
        self.objects().remove(name);
        format!("err {name} {}", one_line(error))
    }

    async fn reply(&self, line: &str) -> String {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [verb @ ("write" | "write-bookmark"), name, n] => match n.parse::<i64>() {
                Ok(n) => self.write(name, n, *verb == "write-bookmark").await,
                Err(e) => format!("err {name} bad number: {e}"),
            },
            _ => format!("err - unknown request {:?}", line.trim()),
        }
    }
}

async fn connection(node: Arc<Node>, socket: TcpStream) {
    let (read, mut write) = socket.into_split();
    let mut read = BufReader::new(read);
    let mut line = String::new();
    loop {
        line.clear();
        match (&mut read).take(MAX_LINE as u64).read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) if !line.ends_with('\n') => return,
            Ok(_) => {}
        }
        let mut reply = node.reply(&line).await;
        reply.push('\n');
        if write.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

async fn serve(config: Config) -> Result<(), String> {
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let addr: SocketAddr = listener.local_addr().map_err(|e| e.to_string())?;
    let store = ArchiveStore::from_url(&config.archive).map_err(|e| e.to_string())?;
    let options = NamespaceOptions::new()
        .archive(Archive::Store(store))
        .node_id(config.node_id.clone())
        .advertise(addr.to_string())
        .lease(config.lease)
        .archive_lag(config.archive_lag)
        .replication(config.replication)
        .replication_timeout(Duration::from_secs(5));
    let dir = config.dir.clone();
    let ns = tokio::task::spawn_blocking(move || Namespace::open(&dir, options))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("{}: {e}", config.dir.display()))?;
    println!("listening {addr}");
    std::io::stdout().flush().map_err(|e| e.to_string())?;

    // Standard input closing (the harness closed it, or died) stops the node.
    let (closed_tx, mut closed) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = [0u8; 256];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        let _ = closed_tx.send(());
    });
    let node = Arc::new(Node { ns, objects: Mutex::new(HashMap::new()) });
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((socket, _)) = accepted {
                    connections.spawn(connection(node.clone(), socket));
                }
            }
            _ = &mut closed => break,
        }
        // Reap finished connections so the set stays small.
        while connections.try_join_next().is_some() {}
    }
    connections.shutdown().await;
    node.objects().clear();
    let ns = node.ns.clone();
    drop(node);
    match tokio::time::timeout(CLOSE_TIMEOUT, ns.close()).await {
        // A fenced object counts as closed (its history is its new owner's), so any
        // `NotArchived` here is history this node failed to upload.
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("close: {e}")),
        Err(_) => Err(format!("close took more than {CLOSE_TIMEOUT:?}")),
    }
}

/// Sends the library's events to standard error, or to `{NODE_LOG_DIR}/{id}.log`.
fn log_to(id: &str) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false);
    match std::env::var_os("NODE_LOG_DIR") {
        None => builder.with_writer(std::io::stderr).init(),
        Some(dir) => {
            let path = PathBuf::from(dir).join(format!("{id}.log"));
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            builder.with_writer(Mutex::new(file)).init();
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let config = match parse_args() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("node: {e}");
            eprintln!(
                "usage: node --dir DIR --archive URL --node-id ID [--replication local|replicated] \
                 [--lease-ms N] [--archive-lag-ms N]"
            );
            return ExitCode::from(2);
        }
    };
    let id = config.node_id.clone();
    if let Err(e) = log_to(&id) {
        eprintln!("node {id}: {e}");
        return ExitCode::FAILURE;
    }
    let rt =
        match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("node {id}: {e}");
                return ExitCode::FAILURE;
            }
        };
    match rt.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("node {id}: {e}");
            ExitCode::FAILURE
        }
    }
}
