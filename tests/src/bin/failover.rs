//! `cargo xtask failover`: nodes sharing one archive in S3 are killed at random moments and
//! paused past their leases; no acknowledged write may be lost in `Replicated` mode.
//!
//! The harness starts an S3-compatible server in-process (s3s-fs on 127.0.0.1) and node
//! processes (the `node` binary, next to this one or `--node PATH`), each with its own data
//! folder and node id, all archiving to one bucket with 1 s leases. Then, once per durability
//! mode (`Local`, then `Replicated`):
//!
//! - one client task per object (50 objects) writes 1, 2, 3, ... to its object, each number
//!   once, to the node that owns the object (the last to acknowledge it, or the one named by an
//!   `owner` reply), or to any running node when the owner is unknown or down;
//! - meanwhile a node chosen at random is killed with SIGKILL at random moments (at least
//!   `--kills` times, over at least `--seconds`) and restarted after a random delay, with the
//!   same data folder and node id;
//! - the clients stop, the nodes shut down cleanly (their standard input closes), and a
//!   checker reads every object's newest state from the archive store
//!   (`Namespace::archived_image`) and compares it with what was acknowledged, and checks
//!   every object's listing (`Namespace::archive_check`): superseded history (the killed
//!   nodes' late uploads) is counted, a gap in a chain or a segment straddling a later
//!   lease term's start fails the phase.
//!
//! Definitions, per object: a write is *acknowledged* when its node answered `ok` (its result
//! was released); it is *present* when the archived state holds its rows. *Lost*: acknowledged
//! and not present. *Torn*: an acknowledged write missing while a later write (a greater number)
//! is present (a hole, where the lost tail of a failover would be a suffix), or a write of which
//! only one of its two rows is present (a turn applied in part). Rows of a number never sent,
//! or duplicated, are *phantom*. `Replicated` must show 0 lost, 0 torn, 0 phantom; `Local`
//! reports what a failover lost (the writes a killed node had confirmed but not uploaded) and
//! must show no write in part and no phantom. *Failover time*: from a kill to the first
//! acknowledgement by another node of an object the killed node had acknowledged last.
//!
//! A last phase per mode pauses a node (SIGSTOP) past its lease while it owns an object, lets
//! another node take the object over and write, and resumes the first (SIGCONT): it must
//! refuse writes (fenced) and name the new owner, and the archive's history must be the new
//! owner's, holding none of the writes the paused node acknowledged after the takeover. Each
//! owner's writes there ask for the bookmark of the state they made (`write-bookmark`), and
//! each must restore from the archive to exactly the writes acknowledged up to it (under
//! `Local` those of the paused node's lost tail may fail to resolve, never name another
//! state).
//! Under `Replicated` a write queued to it while it was paused, and every write after, must
//! be refused, and the archive must hold exactly the writes the two owners acknowledged.
//! Under `Local` it acknowledges writes (durable locally) until its first upload after
//! resuming is fenced: those writes, and its tail not uploaded before the pause, are lost,
//! which is reported (the lost tail must be a suffix of its writes), not failed.
//!
//! Every loop is bounded in time; every child process is killed when the harness exits,
//! however it exits (and the nodes stop by themselves when their standard input closes). The
//! random choices come from a seed, printed first (`--seed N` replays the choices, not the
//! timing). The last line is the verdict. To look into a failure: `FAILOVER_KEEP=1` keeps
//! the run's folder (the store, each node's data) when it fails, and `NODE_LOG_DIR` and
//! `RUST_LOG` (passed on to the nodes, see `node.rs`) keep each node's log.
#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line tool
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use durable_s3_server::{ACCESS_KEY, S3Server, SECRET_KEY};
use durable_storage::pitr::object_store::ObjectStore;
use durable_storage::pitr::object_store::aws::AmazonS3Builder;
use durable_storage::{Archive, ArchiveStore, Namespace, NamespaceOptions};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

const OBJECTS: usize = 50;
const NODES: usize = 3;
const LEASE_MS: u64 = 1000;
const BUCKET: &str = "archive";
/// The longest a client waits for one reply (the nodes' replication timeout is 5 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(8);
/// The longest a node may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest a node may take to close (final uploads) once its standard input closes.
const STOP_TIMEOUT: Duration = Duration::from_secs(40);

/// xorshift64*: the kill points and the clients' choices, from a printed seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.next() % (high - low + 1))
    }
}

fn object_name(object: usize) -> String {
    format!("obj-{object:02}")
}

fn node_id(node: usize) -> String {
    format!("n{node}")
}

fn node_index(id: &str) -> Option<usize> {
    id.strip_prefix('n')?.parse().ok().filter(|&i| i < NODES)
}

/// A running node process. Dropping it kills it (SIGKILL) and reaps it.
struct NodeProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    addr: Option<SocketAddr>,
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The node processes of one phase, sharing the archive `s3://archive/PREFIX`. Dropping it
/// kills every node still running.
struct Cluster {
    exe: PathBuf,
    base: PathBuf,
    prefix: String,
    env: Vec<(&'static str, String)>,
    replication: &'static str,
    nodes: Mutex<Vec<Option<NodeProcess>>>,
}

impl Cluster {
    fn new(
        exe: &Path,
        base: &Path,
        prefix: &str,
        endpoint: &str,
        replication: &'static str,
    ) -> Cluster {
        Cluster {
            exe: exe.to_owned(),
            base: base.to_owned(),
            prefix: prefix.to_owned(),
            env: durable_s3_server::client_env(endpoint),
            replication,
            nodes: Mutex::new((0..NODES).map(|_| None).collect()),
        }
    }

    fn nodes(&self) -> MutexGuard<'_, Vec<Option<NodeProcess>>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts node `i` (its data folder and id are the same at every start) and waits for
    /// its address.
    fn start(&self, i: usize) -> Result<(), String> {
        let dir = self.base.join(format!("{}-{}", self.prefix, node_id(i)));
        let mut cmd = Command::new(&self.exe);
        cmd.arg("--dir").arg(&dir);
        cmd.args(["--archive", &format!("s3://{BUCKET}/{}", self.prefix)]);
        cmd.args(["--node-id", &node_id(i), "--replication", self.replication]);
        cmd.args(["--lease-ms", &LEASE_MS.to_string()]);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().map_err(|e| format!("{}: {e}", self.exe.display()))?;
        let stdout = child.stdout.take();
        let stdin = child.stdin.take();
        let mut process = NodeProcess { child, stdin, addr: None };
        let (tx, rx) = std::sync::mpsc::channel();
        if let Some(stdout) = stdout {
            std::thread::spawn(move || {
                let mut lines = std::io::BufReader::new(stdout).lines();
                if let Some(Ok(first)) = lines.next() {
                    let _ = tx.send(first);
                }
                // Anything else the node prints, until it exits.
                for line in lines.map_while(Result::ok) {
                    eprintln!("{line}");
                }
            });
        }
        let line = rx
            .recv_timeout(START_TIMEOUT)
            .map_err(|_| format!("node {} printed no address within {START_TIMEOUT:?}", i))?;
        let addr = line.strip_prefix("listening ").and_then(|a| a.parse().ok());
        process.addr = Some(addr.ok_or_else(|| format!("node {i}: unexpected line {line:?}"))?);
        self.nodes()[i] = Some(process);
        Ok(())
    }

    /// Kills node `i` with SIGKILL.
    fn kill(&self, i: usize) {
        let process = self.nodes()[i].take();
        drop(process);
    }

    /// Sends `signal` (`STOP`, `CONT`) to node `i`.
    fn signal(&self, i: usize, signal: &str) -> Result<(), String> {
        let pid = match &self.nodes()[i] {
            Some(p) => p.child.id(),
            None => return Err(format!("node {i} is not running")),
        };
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .map_err(|e| format!("kill -{signal}: {e}"))?;
        if status.success() { Ok(()) } else { Err(format!("kill -{signal} {pid}: {status}")) }
    }

    fn addr(&self, i: usize) -> Option<SocketAddr> {
        self.nodes()[i].as_ref().and_then(|p| p.addr)
    }

    /// The running nodes and their addresses.
    fn up(&self) -> Vec<(usize, SocketAddr)> {
        let nodes = self.nodes();
        nodes.iter().enumerate().filter_map(|(i, p)| Some((i, p.as_ref()?.addr?))).collect()
    }

    /// Stops every node cleanly (closes its standard input: it closes its namespace and
    /// exits), killing those that take longer than [`STOP_TIMEOUT`]. The problems seen.
    fn stop_all(&self) -> Vec<String> {
        let mut nodes: Vec<(usize, NodeProcess)> =
            self.nodes().iter_mut().enumerate().filter_map(|(i, p)| Some((i, p.take()?))).collect();
        for (_, process) in &mut nodes {
            process.stdin = None;
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        let mut problems = Vec::new();
        for (i, mut process) in nodes {
            loop {
                match process.child.try_wait() {
                    Ok(Some(status)) if status.success() => break,
                    Ok(Some(status)) => {
                        problems.push(format!("node {i} exited with {status}"));
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Ok(None) => {
                        problems.push(format!("node {i} did not stop within {STOP_TIMEOUT:?}"));
                        stacks(process.child.id());
                        break;
                    }
                    Err(e) => {
                        problems.push(format!("node {i}: {e}"));
                        break;
                    }
                }
            }
        }
        problems
    }
}

/// With `FAILOVER_STACKS=1` in the environment, prints the threads' stacks of process `pid`
/// (with gdb) to diagnose a node that hangs.
fn stacks(pid: u32) {
    if std::env::var_os("FAILOVER_STACKS").is_none() {
        return;
    }
    let out = Command::new("gdb")
        .args(["-p", &pid.to_string(), "-batch", "-ex", "thread apply all bt"])
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(out) => eprintln!("{}", String::from_utf8_lossy(&out.stdout)),
        Err(e) => eprintln!("failover: gdb: {e}"),
    }
}

/// A client's connection to one node.
struct Conn {
    addr: SocketAddr,
    read: BufReader<OwnedReadHalf>,
    write: OwnedWriteHalf,
}

/// Sends `line` to the node at `addr` over `conn` (connecting, or reconnecting when the node
/// moved) and returns its reply; on any failure the connection is dropped.
async fn request(
    conn: &mut Option<Conn>,
    addr: SocketAddr,
    line: &str,
    timeout: Duration,
) -> Result<String, String> {
    if conn.as_ref().is_none_or(|c| c.addr != addr) {
        let connect = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr));
        let socket = match connect.await {
            Ok(Ok(socket)) => socket,
            Ok(Err(e)) => return Err(format!("connect {addr}: {e}")),
            Err(_) => return Err(format!("connect {addr}: timed out")),
        };
        let (read, write) = socket.into_split();
        *conn = Some(Conn { addr, read: BufReader::new(read), write });
    }
    let Some(c) = conn.as_mut() else { return Err("no connection".into()) };
    let exchange = async {
        c.write.write_all(format!("{line}\n").as_bytes()).await.map_err(|e| e.to_string())?;
        let mut reply = String::new();
        match c.read.read_line(&mut reply).await {
            Ok(0) => Err("connection closed".to_string()),
            Ok(_) => Ok(reply.trim().to_owned()),
            Err(e) => Err(e.to_string()),
        }
    };
    let result = match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(format!("no reply within {timeout:?}")),
    };
    if result.is_err() {
        *conn = None;
    }
    result
}

/// What the clients saw.
struct Record {
    /// Every number sent to each object.
    sent: Vec<BTreeSet<i64>>,
    /// The acknowledged numbers of each object, with the node that acknowledged them.
    acked: Vec<BTreeMap<i64, usize>>,
    /// The node that acknowledged each object's latest write.
    last_node: Vec<Option<usize>>,
    /// Objects whose node was killed, waiting for their next acknowledgement: that node and
    /// when it was killed.
    orphaned: Vec<Option<(usize, Instant)>>,
    /// Kill to the first acknowledgement by another node.
    failovers: Vec<Duration>,
    /// Kill to the first acknowledgement by the restarted node itself.
    returns: Vec<Duration>,
    owner_replies: u64,
    err_replies: u64,
    io_errors: u64,
    /// Replies that do not follow the protocol.
    bad_replies: Vec<String>,
}

impl Record {
    fn new() -> Record {
        Record {
            sent: vec![BTreeSet::new(); OBJECTS],
            acked: vec![BTreeMap::new(); OBJECTS],
            last_node: vec![None; OBJECTS],
            orphaned: vec![None; OBJECTS],
            failovers: Vec::new(),
            returns: Vec::new(),
            owner_replies: 0,
            err_replies: 0,
            io_errors: 0,
            bad_replies: Vec::new(),
        }
    }

    fn ack(&mut self, object: usize, n: i64, node: usize) {
        self.acked[object].insert(n, node);
        self.last_node[object] = Some(node);
        if let Some((killed, at)) = self.orphaned[object].take() {
            if node == killed {
                self.returns.push(at.elapsed());
            } else {
                self.failovers.push(at.elapsed());
            }
        }
    }

    fn killed(&mut self, node: usize) {
        let now = Instant::now();
        for object in 0..OBJECTS {
            if self.last_node[object] == Some(node) {
                self.orphaned[object] = Some((node, now));
            }
        }
    }
}

type Shared = Arc<Mutex<Record>>;

fn lock(record: &Shared) -> MutexGuard<'_, Record> {
    record.lock().unwrap_or_else(|p| p.into_inner())
}

/// One object's client: writes 1, 2, 3, ... (each number once, acknowledged or not) until
/// `stop` is set or `until` passes.
async fn client(
    object: usize,
    cluster: Arc<Cluster>,
    record: Shared,
    stop: Arc<AtomicBool>,
    until: Instant,
    seed: u64,
) {
    let name = object_name(object);
    let mut rng = Rng::new(seed ^ (object as u64 + 1).wrapping_mul(0x1234_5678_9ABC));
    let mut conns: Vec<Option<Conn>> = (0..NODES).map(|_| None).collect();
    let mut preferred: Option<usize> = None;
    let mut n = 0i64;
    while !stop.load(Ordering::SeqCst) && Instant::now() < until {
        let up = cluster.up();
        let target = match preferred.and_then(|p| up.iter().find(|(i, _)| *i == p)) {
            Some(&found) => Some(found),
            None if up.is_empty() => None,
            None => Some(up[rng.below(up.len())]),
        };
        let Some((node, addr)) = target else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        n += 1;
        lock(&record).sent[object].insert(n);
        let line = format!("write {name} {n}");
        let reply = request(&mut conns[node], addr, &line, REQUEST_TIMEOUT).await;
        let pause = match reply {
            Ok(reply) if reply == format!("ok {name} {n}") => {
                lock(&record).ack(object, n, node);
                preferred = Some(node);
                continue;
            }
            Ok(reply) if reply.starts_with(&format!("owner {name} ")) => {
                lock(&record).owner_replies += 1;
                let owner = reply.split_whitespace().nth(2).and_then(node_index);
                preferred = owner.filter(|&o| o != node);
                Duration::from_millis(20)
            }
            Ok(reply) if reply.starts_with(&format!("err {name} ")) => {
                lock(&record).err_replies += 1;
                preferred = None;
                Duration::from_millis(50)
            }
            Ok(reply) => {
                lock(&record).bad_replies.push(format!("{line:?} -> {reply:?}"));
                preferred = None;
                Duration::from_millis(50)
            }
            Err(_) => {
                lock(&record).io_errors += 1;
                preferred = None;
                Duration::from_millis(50)
            }
        };
        tokio::time::sleep(pause).await;
    }
}

/// The S3 store the checker reads, as another machine would.
fn store(endpoint: &str) -> Result<Arc<dyn ObjectStore>, String> {
    let store = AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .with_bucket_name(BUCKET)
        .with_region("us-east-1")
        .with_access_key_id(ACCESS_KEY)
        .with_secret_access_key(SECRET_KEY)
        .build()
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(store))
}

/// What the archive's listings say (`Namespace::archive_check`), summed over objects.
#[derive(Default, Debug)]
struct Health {
    /// Keys a later lease term superseded: the killed or fenced nodes' late uploads.
    superseded: usize,
    /// Gaps in chains and segments straddling a later term's start: never right.
    broken: usize,
    /// The first few problems, for the report.
    examples: Vec<String>,
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "archive check: {} superseded, {} broken", self.superseded, self.broken)
    }
}

/// Each object's rows in the archive's newest state: number → the parts present (sorted);
/// objects the archive has no commit of are empty. And the archive's health.
fn archived(
    endpoint: &str,
    prefix: &str,
    dir: &Path,
    names: &[String],
) -> Result<(Vec<Rows>, Health), String> {
    let archive = Archive::Store(ArchiveStore::new(store(endpoint)?, prefix));
    let ns = Namespace::open(dir, NamespaceOptions::new().archive(archive).node_id("checker"))
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut health = Health::default();
    for name in names {
        match ns.archive_check(name) {
            Ok(check) => {
                health.superseded += check.superseded.len();
                let gaps = check.gaps.iter().map(|g| format!("{name}: gap {g:?}"));
                let straddling = check.straddling.iter().map(|k| format!("{name}: {k} straddles"));
                for problem in gaps.chain(straddling) {
                    health.broken += 1;
                    if health.examples.len() < 8 {
                        health.examples.push(problem);
                    }
                }
            }
            Err(e) => eprintln!("failover: {name}: no archive to check ({e})"),
        }
        let mut rows: Rows = BTreeMap::new();
        let reading = Instant::now();
        let image = ns.archived_image(name, None);
        if reading.elapsed() > Duration::from_secs(1) {
            eprintln!("failover: {name}: reading the archive took {}", secs(reading.elapsed()));
        }
        match image {
            Ok((_, image)) => rows = rows_of_image(dir, name, &image)?,
            // No commit archived: nothing present (counted as lost if any was acknowledged).
            Err(e) => eprintln!("failover: {name}: nothing archived ({e})"),
        }
        out.push(rows);
    }
    Ok((out, health))
}

/// The rows of table `writes` in `image` (a database file's bytes), written to a scratch
/// file in `dir` to be read: each number with its parts.
fn rows_of_image(dir: &Path, name: &str, image: &[u8]) -> Result<Rows, String> {
    let mut rows: Rows = BTreeMap::new();
    let file = dir.join("image.sqlite");
    std::fs::write(&file, image).map_err(|e| e.to_string())?;
    let db = durable_storage::Database::open(&file, Default::default())
        .map_err(|e| format!("{name}: {e}"))?;
    // An object whose archived commits hold no write yet has no table.
    let has_table = db
        .exec("SELECT 1 FROM sqlite_master WHERE name = 'writes'", &[])
        .map_err(|e| format!("{name}: {e}"))?
        .next()
        .is_some();
    let query = match has_table {
        true => "SELECT n, part FROM writes ORDER BY n, part",
        false => "SELECT 0 AS n, 0 AS part WHERE 0",
    };
    let cursor = db.exec(query, &[]).map_err(|e| format!("{name}: {e}"))?;
    for row in cursor {
        let row = row.map_err(|e| format!("{name}: {e}"))?;
        let n: i64 = row.get("n").map_err(|e| format!("{name}: {e}"))?;
        let part: i64 = row.get("part").map_err(|e| format!("{name}: {e}"))?;
        rows.entry(n).or_default().push(part);
    }
    drop(db);
    std::fs::remove_file(&file).map_err(|e| e.to_string())?;
    Ok(rows)
}

/// The writes present at each of `bookmarks` of object `name`, rebuilt from the archive
/// (`Namespace::archived_image`), or why that failed.
fn rows_at_bookmarks(
    endpoint: &str,
    prefix: &str,
    dir: &Path,
    name: &str,
    bookmarks: &[String],
) -> Result<Vec<Result<BTreeSet<i64>, String>>, String> {
    let archive = Archive::Store(ArchiveStore::new(store(endpoint)?, prefix));
    let options = NamespaceOptions::new().archive(archive).node_id("bookmark-checker");
    let ns = Namespace::open(dir, options).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for bookmark in bookmarks {
        out.push(match ns.archived_image(name, Some(bookmark)) {
            Ok((_, image)) => {
                let rows = rows_of_image(dir, name, &image)?;
                if rows.values().any(|parts| parts.as_slice() != [0, 1]) {
                    Err(format!("a write in part at {bookmark}"))
                } else {
                    Ok(rows.keys().copied().collect())
                }
            }
            Err(e) => Err(e.to_string()),
        });
    }
    Ok(out)
}

/// The checker's verdict on one object: acknowledged writes lost, torn, phantom rows.
#[derive(Default, Debug)]
struct Check {
    acked: usize,
    lost: usize,
    torn: usize,
    phantom: usize,
    /// The first few problems, for the report.
    examples: Vec<String>,
}

impl Check {
    fn add(&mut self, name: &str, acked: &BTreeSet<i64>, sent: &BTreeSet<i64>, rows: &Rows) {
        self.acked += acked.len();
        let newest = rows.keys().next_back().copied().unwrap_or(0);
        let mut note = |what: String| {
            if self.examples.len() < 8 {
                self.examples.push(format!("{name}: {what}"));
            }
        };
        for &n in acked {
            if !rows.contains_key(&n) {
                self.lost += 1;
                if n < newest {
                    self.torn += 1;
                    note(format!("acknowledged write {n} missing, {newest} present"));
                } else {
                    note(format!("acknowledged write {n} missing (newest present {newest})"));
                }
            }
        }
        for (n, parts) in rows {
            if !sent.contains(n) {
                self.phantom += 1;
                note(format!("write {n} present, never sent"));
            } else if parts.as_slice() != [0, 1] {
                self.torn += 1;
                note(format!("write {n} present with parts {parts:?}"));
            }
        }
    }
}

type Rows = BTreeMap<i64, Vec<i64>>;

/// How many files are under `dir` (the S3 server's folder: one per stored key).
fn count_files(dir: &Path) -> usize {
    let mut count = 0;
    let mut queue = vec![dir.to_owned()];
    while let Some(dir) = queue.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => queue.push(entry.path()),
                Ok(_) => count += 1,
                Err(_) => {}
            }
        }
    }
    count
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

struct Settings {
    exe: PathBuf,
    base: PathBuf,
    endpoint: String,
    seconds: u64,
    kills: usize,
}

/// One load phase under `replication`: clients, kills and restarts, clean stop, check.
/// `Ok(true)` when it passed.
fn load_phase(
    rt: &tokio::runtime::Runtime,
    settings: &Settings,
    replication: &'static str,
    seed: u64,
) -> Result<bool, String> {
    let cluster = Arc::new(Cluster::new(
        &settings.exe,
        &settings.base,
        replication,
        &settings.endpoint,
        replication,
    ));
    for i in 0..NODES {
        cluster.start(i)?;
    }
    let record: Shared = Arc::new(Mutex::new(Record::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let seconds = Duration::from_secs(settings.seconds);
    // The kill loop's hard bound: three times the time asked for, or enough for the kills
    // asked for at their slowest (2.5 s up, 2 s down, a restart), whichever is longer.
    let bound = (seconds * 3).max(Duration::from_secs(6) * settings.kills as u32);
    // The clients stop by then whatever happens to the kill loop.
    let client_bound = Instant::now() + bound + Duration::from_secs(30);
    let mut rng = Rng::new(seed);
    let clients: Vec<_> = (0..OBJECTS)
        .map(|object| {
            let task =
                client(object, cluster.clone(), record.clone(), stop.clone(), client_bound, seed);
            rt.spawn(task)
        })
        .collect();
    // The kills: on this thread, while the clients run on the runtime.
    let started = Instant::now();
    let mut kills = 0;
    let mut outcome = Ok(());
    while (started.elapsed() < seconds || kills < settings.kills) && started.elapsed() < bound {
        std::thread::sleep(rng.millis(800, 2500));
        let victim = rng.below(NODES);
        cluster.kill(victim);
        lock(&record).killed(victim);
        kills += 1;
        std::thread::sleep(rng.millis(200, 2000));
        if let Err(e) = cluster.start(victim) {
            outcome = Err(format!("restarting node {victim}: {e}"));
            break;
        }
    }
    // A moment without kills, then stop.
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    rt.block_on(async {
        for task in clients {
            let _ = task.await;
        }
    });
    let load_time = started.elapsed();
    eprintln!("failover {replication}: load stopped after {}", secs(load_time));
    let problems = cluster.stop_all();
    eprintln!("failover {replication}: nodes stopped after {}", secs(started.elapsed()));
    outcome?;
    drop(cluster);
    let record = Arc::try_unwrap(record)
        .map_err(|_| "a client is still running".to_string())?
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    let names: Vec<String> = (0..OBJECTS).map(object_name).collect();
    let checker = settings.base.join(format!("checker-{replication}"));
    let (rows, health) = archived(&settings.endpoint, replication, &checker, &names)?;
    let mut check = Check::default();
    for (object, rows) in rows.iter().enumerate() {
        let acked: BTreeSet<i64> = record.acked[object].keys().copied().collect();
        check.add(&names[object], &acked, &record.sent[object], rows);
    }
    eprintln!(
        "failover {replication}: checked after {} ({} files in the archive)",
        secs(started.elapsed()),
        count_files(&settings.base.join("s3").join(BUCKET))
    );
    let sent: usize = record.sent.iter().map(BTreeSet::len).sum();
    let mut failovers = record.failovers.clone();
    failovers.sort();
    let mut returns = record.returns.clone();
    returns.sort();
    println!(
        "failover {replication}: {kills} kills in {}, {} writes acked of {sent} sent, {} lost, \
         {} torn, {} phantom; failover p50 {} max {} ({} objects), back on the restarted node \
         p50 {} max {} ({} objects); replies: {} owner, {} err, {} no answer; {health}",
        secs(load_time),
        check.acked,
        check.lost,
        check.torn,
        check.phantom,
        secs(percentile(&failovers, 0.5)),
        secs(percentile(&failovers, 1.0)),
        failovers.len(),
        secs(percentile(&returns, 0.5)),
        secs(percentile(&returns, 1.0)),
        returns.len(),
        record.owner_replies,
        record.err_replies,
        record.io_errors,
    );
    for example in &check.examples {
        println!("  {example}");
    }
    for problem in problems.iter().chain(&record.bad_replies).chain(&health.examples) {
        println!("  {problem}");
    }
    let mut passed = check.phantom == 0 && record.bad_replies.is_empty() && problems.is_empty();
    passed &= health.broken == 0;
    passed &= check.acked >= OBJECTS && kills >= settings.kills;
    if replication == "replicated" {
        passed &= check.lost == 0 && check.torn == 0;
    } else {
        // A failover in Local mode may lose the killed node's unuploaded tail, which leaves
        // a hole once the new owner writes on; a write in part is never right.
        let in_part = check.examples.iter().any(|e| e.contains("with parts"));
        passed &= !in_part;
    }
    Ok(passed)
}

/// The zombie under `replication`: node 0 owns an object, is paused past its lease, node 1
/// takes the object over and writes, node 0 resumes: its writes are refused (fenced, then
/// node 1 named), and the archive's history is the new owner's (see the file's overview for
/// what each mode may lose). `Ok(true)` when it passed.
fn zombie_phase(
    rt: &tokio::runtime::Runtime,
    settings: &Settings,
    replication: &'static str,
) -> Result<bool, String> {
    let prefix = format!("zombie-{replication}");
    let cluster =
        Cluster::new(&settings.exe, &settings.base, &prefix, &settings.endpoint, replication);
    cluster.start(0)?;
    cluster.start(1)?;
    let (a, b) = match (cluster.addr(0), cluster.addr(1)) {
        (Some(a), Some(b)) => (a, b),
        _ => return Err("the zombie phase's nodes have no address".into()),
    };
    let name = "zombie";
    // Acknowledged by node 0 before the pause, by node 1 (the new owner), and by node 0
    // after it resumed.
    let mut before: BTreeSet<i64> = BTreeSet::new();
    let mut owner_acked: BTreeSet<i64> = BTreeSet::new();
    let mut zombie_acked: Vec<i64> = Vec::new();
    let mut refused: Vec<String> = Vec::new();
    // The bookmark each owner's acknowledged write made: (number, bookmark), in order.
    let mut before_marks: Vec<(i64, String)> = Vec::new();
    let mut owner_marks: Vec<(i64, String)> = Vec::new();
    let result = rt.block_on(async {
        let (mut to_a, mut to_b) = (None, None);
        for n in 1..=5 {
            let line = format!("write-bookmark {name} {n}");
            let reply = request(&mut to_a, a, &line, REQUEST_TIMEOUT).await?;
            let Some(mark) = reply.strip_prefix(&format!("ok {name} {n} ")) else {
                return Err(format!("node 0, write {n}: {reply}"));
            };
            before.insert(n);
            before_marks.push((n, mark.to_owned()));
        }
        cluster.signal(0, "STOP")?;
        let paused = Instant::now();
        // A write sent to the paused node waits in its socket until it resumes.
        let mut queued_conn = None;
        let queued = tokio::spawn(async move {
            let line = format!("write {name} 6");
            request(&mut queued_conn, a, &line, Duration::from_secs(30)).await
        });
        // Node 1 takes the object over once node 0's lease expires.
        let mut takeover = None;
        let mut n = 100;
        while owner_acked.len() < 5 && paused.elapsed() < Duration::from_secs(20) {
            n += 1;
            let line = format!("write-bookmark {name} {n}");
            match request(&mut to_b, b, &line, REQUEST_TIMEOUT).await {
                Ok(reply) if reply.starts_with(&format!("ok {name} {n} ")) => {
                    takeover.get_or_insert(paused.elapsed());
                    owner_acked.insert(n);
                    owner_marks.push((n, reply[format!("ok {name} {n} ").len()..].to_owned()));
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let Some(takeover) = takeover else {
            return Err("node 1 never took the object over".into());
        };
        cluster.signal(0, "CONT")?;
        match queued.await.map_err(|e| e.to_string())? {
            Ok(reply) if reply.starts_with("ok ") => zombie_acked.push(6),
            Ok(reply) => refused.push(reply),
            Err(e) => refused.push(e),
        }
        // Node 0 goes on being asked: it must refuse writes, and name node 1 at last.
        let resumed = Instant::now();
        let mut n = 6;
        while resumed.elapsed() < Duration::from_secs(10) && n < 40 {
            n += 1;
            match request(&mut to_a, a, &format!("write {name} {n}"), REQUEST_TIMEOUT).await {
                Ok(reply) if reply.starts_with("ok ") => zombie_acked.push(n),
                Ok(reply) => {
                    let named = reply.starts_with(&format!("owner {name} n1 "));
                    refused.push(reply);
                    if named {
                        break;
                    }
                }
                Err(e) => refused.push(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The new owner writes on.
        for n in 200..=204 {
            let line = format!("write-bookmark {name} {n}");
            let reply = request(&mut to_b, b, &line, REQUEST_TIMEOUT).await?;
            let Some(mark) = reply.strip_prefix(&format!("ok {name} {n} ")) else {
                return Err(format!("node 1, write {n}: {reply}"));
            };
            owner_acked.insert(n);
            owner_marks.push((n, mark.to_owned()));
        }
        Ok(takeover)
    });
    let problems = cluster.stop_all();
    drop(cluster);
    let takeover = result?;
    let (rows, health) = archived(
        &settings.endpoint,
        &prefix,
        &settings.base.join(format!("checker-{prefix}")),
        &[name.to_owned()],
    )?;
    let present: BTreeSet<i64> = rows[0].keys().copied().collect();
    let whole = rows[0].values().all(|parts| parts.as_slice() == [0, 1]);
    let fenced = refused.iter().any(|r| r.contains("fenced"));
    let named = refused.iter().any(|r| r.starts_with(&format!("owner {name} n1 ")));
    let acked: BTreeSet<i64> = before.union(&owner_acked).copied().collect();
    let zombie: BTreeSet<i64> = zombie_acked.iter().copied().collect();
    // Node 0's writes after the takeover are never history: that would be two writers.
    let split: Vec<i64> = present.intersection(&zombie).copied().collect();
    // The new owner's history: every write it acknowledged, on what node 0 had uploaded
    // (all of it, or under Local a prefix: the unuploaded tail is lost, never a hole).
    let kept: BTreeSet<i64> = present.intersection(&before).copied().collect();
    let prefix_kept = kept.iter().eq(before.iter().take(kept.len()));
    let owners = present.difference(&before).copied().collect::<BTreeSet<i64>>() == owner_acked;
    let tail_lost = before.len() - kept.len();
    // Every bookmark an owner handed out names exactly the writes acknowledged up to it: node
    // 0's (those of its lost tail under `Local` may fail to resolve, never name another
    // state), then node 1's on top of what it took over.
    let mut expected: Vec<(String, BTreeSet<i64>, bool)> = Vec::new();
    for (n, mark) in &before_marks {
        let upto: BTreeSet<i64> = before.range(..=n).copied().collect();
        expected.push((mark.clone(), upto, replication == "replicated" || kept.contains(n)));
    }
    for (n, mark) in &owner_marks {
        let upto: BTreeSet<i64> = kept.iter().chain(owner_acked.range(..=n)).copied().collect();
        expected.push((mark.clone(), upto, true));
    }
    let marks: Vec<String> = expected.iter().map(|(m, _, _)| m.clone()).collect();
    let at_marks = rows_at_bookmarks(
        &settings.endpoint,
        &prefix,
        &settings.base.join(format!("bookmarks-{prefix}")),
        name,
        &marks,
    )?;
    let mut bookmark_problems = Vec::new();
    for ((mark, want, must), got) in expected.iter().zip(&at_marks) {
        match got {
            Ok(rows) if rows == want => {}
            Ok(rows) => bookmark_problems.push(format!("{mark}: {rows:?}, acknowledged {want:?}")),
            Err(e) if *must => bookmark_problems.push(format!("{mark} ({want:?}): {e}")),
            Err(_) => {}
        }
    }
    let restored = expected
        .iter()
        .zip(&at_marks)
        .filter(|((_, want, _), got)| got.as_ref().is_ok_and(|rows| rows == want))
        .count();
    let history_ok = match replication {
        "replicated" => zombie.is_empty() && present == acked,
        _ => split.is_empty() && prefix_kept && owners,
    } && whole;
    let verdict = if replication == "replicated" {
        format!(
            "archive {} the 2 owners' {} acknowledged writes",
            if history_ok { "holds exactly" } else { "DIFFERS from" },
            acked.len()
        )
    } else {
        format!(
            "archive {} the new owner's history: {} of the 2 owners' {} acknowledged writes, \
             {} lost ({tail_lost} of node 0's tail not uploaded before the pause, {} node 0 \
             acknowledged after resuming)",
            if history_ok { "holds" } else { "DIFFERS from" },
            present.intersection(&acked).count(),
            acked.len(),
            tail_lost + zombie.len(),
            zombie.len(),
        )
    };
    println!(
        "failover zombie {replication}: node 1 took over {} after node 0 was paused; node 0 \
         resumed: {} writes acknowledged, {} refused ({}fenced, {}named node 1); {verdict}; \
         {restored} of the owners' {} bookmarks restore exactly, {} wrong; {health}",
        secs(takeover),
        zombie_acked.len(),
        refused.len(),
        if fenced { "" } else { "none " },
        if named { "" } else { "never " },
        expected.len(),
        bookmark_problems.len(),
    );
    for problem in &bookmark_problems {
        println!("  bookmark {problem}");
    }
    for reply in &refused {
        println!("  refused: {reply}");
    }
    if !history_ok {
        println!("  archived {present:?}");
        println!("  acked    {acked:?} by the owners, {zombie:?} by node 0 after resuming");
    }
    for problem in problems.iter().chain(&health.examples) {
        println!("  {problem}");
    }
    Ok(history_ok
        && fenced
        && named
        && bookmark_problems.is_empty()
        && problems.is_empty()
        && health.broken == 0)
}

fn main() -> ExitCode {
    let mut seconds = 45u64;
    let mut kills = 20usize;
    let mut seed = None;
    let mut modes = vec!["local", "replicated"];
    let mut zombie = true;
    let mut exe = None;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    let usage = "usage: failover [--seconds S] [--kills K] [--seed N] \
                 [--mode local|replicated|both|none] [--no-zombie] [--node PATH]";
    while let Some(arg) = it.next() {
        if arg == "--no-zombie" {
            zombie = false;
            continue;
        }
        let Some(value) = it.next() else {
            eprintln!("{usage}");
            return ExitCode::from(2);
        };
        match arg.as_str() {
            "--seconds" if value.parse::<u64>().is_ok_and(|s| s > 0) => {
                seconds = value.parse().unwrap_or(45)
            }
            "--kills" if value.parse::<usize>().is_ok() => kills = value.parse().unwrap_or(20),
            "--seed" if value.parse::<u64>().is_ok() => seed = value.parse().ok(),
            "--mode" => {
                modes = match value.as_str() {
                    "local" => vec!["local"],
                    "replicated" => vec!["replicated"],
                    "both" => vec!["local", "replicated"],
                    "none" => vec![],
                    _ => {
                        eprintln!("{usage}");
                        return ExitCode::from(2);
                    }
                }
            }
            "--node" => exe = Some(PathBuf::from(value)),
            _ => {
                eprintln!("{usage}");
                return ExitCode::from(2);
            }
        }
    }
    let seed = seed.unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        nanos ^ u64::from(std::process::id())
    });
    println!("failover: seed {seed}");
    let exe = match exe {
        Some(exe) => exe,
        None => match std::env::current_exe() {
            Ok(me) => me.with_file_name(format!("node{}", std::env::consts::EXE_SUFFIX)),
            Err(e) => {
                eprintln!("failover: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    if !exe.exists() {
        eprintln!(
            "failover: no node binary at {} (build it: cargo build -p durable-conformance \
             --features s3 --bin node, or give --node PATH)",
            exe.display()
        );
        return ExitCode::FAILURE;
    }
    match run(&exe, seconds, kills, seed, &modes, zombie) {
        Ok(true) => {
            println!("failover: passed");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            println!("failover: FAILED (seed {seed})");
            ExitCode::FAILURE
        }
        Err(e) => {
            println!("failover: FAILED (seed {seed}): {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(
    exe: &Path,
    seconds: u64,
    kills: usize,
    seed: u64,
    modes: &[&'static str],
    zombie: bool,
) -> Result<bool, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let server = rt.block_on(S3Server::start(&dir.path().join("s3"))).map_err(|e| e.to_string())?;
    server.create_bucket(BUCKET).map_err(|e| e.to_string())?;
    let settings = Settings {
        exe: exe.to_owned(),
        base: dir.path().to_owned(),
        endpoint: server.endpoint(),
        seconds,
        kills,
    };
    let mut passed = true;
    for (i, mode) in modes.iter().enumerate() {
        passed &= load_phase(&rt, &settings, mode, seed.wrapping_add(i as u64))?;
    }
    if zombie {
        for mode in ["local", "replicated"] {
            passed &= zombie_phase(&rt, &settings, mode)?;
        }
    }
    drop(server);
    rt.shutdown_timeout(Duration::from_secs(5));
    if !passed && std::env::var_os("FAILOVER_KEEP").is_some() {
        eprintln!(
            "failover: kept the run's folder (the store, the nodes' data) at {}",
            dir.keep().display()
        );
    }
    Ok(passed)
}
