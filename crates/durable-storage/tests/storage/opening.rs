//! Opening objects outside the namespace's registry lock: an archived open makes several
//! round trips to the store (and may wait for another node's lease), so opens of different
//! objects run at once, an open object answers while another opens, two callers of one
//! name share one open, and a failed open leaves nothing behind. The store here is slow (a
//! fixed delay per request) and can hold one object's requests until released, so that an
//! open is provably still running while the test looks.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use durable_storage::pitr::object_store::memory::InMemory;
use durable_storage::pitr::object_store::path::Path;
use durable_storage::pitr::object_store::{
    self, CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use durable_storage::sql::Durability;
use durable_storage::{Archive, ArchiveStore, Error, Namespace, NamespaceOptions};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use tokio::sync::watch;

use crate::support::{Dir, now};

/// The most any step of these tests waits for something that should happen.
const PATIENCE: Duration = Duration::from_secs(10);

/// What [`SlowStore`] shares with the streams it returns.
struct Slow {
    delay: Duration,
    /// Requests whose key contains this wait until it is `None`.
    hold: watch::Sender<Option<String>>,
    /// Every request fails while set.
    failing: AtomicBool,
    /// Every request seen: the operation and the key (or list prefix).
    seen: Mutex<Vec<(&'static str, String)>>,
}

impl Slow {
    async fn enter(&self, op: &'static str, key: Option<&Path>) -> object_store::Result<()> {
        let key = key.map(|k| k.to_string()).unwrap_or_default();
        self.seen.lock().unwrap().push((op, key.clone()));
        tokio::time::sleep(self.delay).await;
        let mut hold = self.hold.subscribe();
        let _ = hold.wait_for(|part| !part.as_deref().is_some_and(|p| key.contains(p))).await;
        if self.failing.load(Ordering::SeqCst) {
            let source = std::io::Error::other(format!("injected {op} failure"));
            return Err(object_store::Error::Generic { store: "slow", source: Box::new(source) });
        }
        Ok(())
    }
}

/// An in-memory store that answers every request after `delay` (an object store across a
/// network), can hold one object's requests, can fail every request, and records them.
struct SlowStore {
    inner: Arc<dyn ObjectStore>,
    slow: Arc<Slow>,
}

impl SlowStore {
    fn new(delay: Duration) -> Arc<SlowStore> {
        let slow = Slow {
            delay,
            hold: watch::Sender::new(None),
            failing: AtomicBool::new(false),
            seen: Mutex::new(Vec::new()),
        };
        Arc::new(SlowStore { inner: Arc::new(InMemory::new()), slow: Arc::new(slow) })
    }

    /// Requests for the object `name` wait until [`release`](SlowStore::release).
    fn hold(&self, name: &str) {
        self.slow.hold.send_replace(Some(format!("/{}/", Namespace::file_name(name))));
    }

    fn release(&self) {
        self.slow.hold.send_replace(None);
    }

    fn fail(&self, failing: bool) {
        self.slow.failing.store(failing, Ordering::SeqCst);
    }

    /// How many requests touched object `name`'s keys.
    fn requests_for(&self, name: &str) -> usize {
        let part = format!("/{}/", Namespace::file_name(name));
        self.slow.seen.lock().unwrap().iter().filter(|(_, key)| key.contains(&part)).count()
    }

    /// How many times a lease of object `name` was claimed: puts of `<object>/lease/<term>`.
    fn claims(&self, name: &str) -> usize {
        let part = format!("/{}/lease/", Namespace::file_name(name));
        let seen = self.slow.seen.lock().unwrap();
        let claim = |key: &String| {
            key.split_once(&part).is_some_and(|(_, term)| {
                term.len() == 8 && term.bytes().all(|b| b.is_ascii_hexdigit())
            })
        };
        seen.iter().filter(|(op, key)| *op == "put" && claim(key)).count()
    }

    /// Waits until some request for object `name` reached the store.
    fn wait_for_requests(&self, name: &str) {
        let start = Instant::now();
        while self.requests_for(name) == 0 {
            assert!(start.elapsed() < PATIENCE, "the open of {name:?} never reached the store");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl fmt::Debug for SlowStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SlowStore({:?})", self.slow.delay)
    }
}

impl fmt::Display for SlowStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SlowStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for SlowStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.slow.enter("put", Some(location)).await?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.slow.enter("put", Some(location)).await?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.slow.enter("get", Some(location)).await?;
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let (slow, inner, prefix) = (self.slow.clone(), self.inner.clone(), prefix.cloned());
        futures_util::stream::once(async move {
            match slow.enter("list", prefix.as_ref()).await {
                Ok(()) => inner.list(prefix.as_ref()),
                Err(e) => futures_util::stream::once(async move { Err(e) }).boxed(),
            }
        })
        .flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.slow.enter("list", prefix).await?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.slow.enter("copy", Some(to)).await?;
        self.inner.copy_opts(from, to, options).await
    }
}

/// A namespace archiving (and leasing its objects) in `store`.
fn options(store: &Arc<SlowStore>) -> NamespaceOptions {
    let store: Arc<dyn ObjectStore> = store.clone();
    let mut options = NamespaceOptions::new()
        .archive(Archive::Store(ArchiveStore::new(store, "ns")))
        .node_id("n1");
    options.sql.durability = Durability::Off;
    options
}

/// Runs `f` on a thread of its own; its result, or `None` if it takes longer than
/// [`PATIENCE`] (the thread is left behind: the test fails anyway).
fn within_patience<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(PATIENCE) {
        Ok(out) => Some(out),
        Err(RecvTimeoutError::Timeout) => None,
        Err(RecvTimeoutError::Disconnected) => panic!("the thread panicked"),
    }
}

#[test]
fn different_objects_open_at_once() {
    const N: usize = 4;
    let store = SlowStore::new(Duration::from_millis(100));
    let dir = Dir::new();
    let ns = dir.open(options(&store));
    let start = Instant::now();
    let solo = ns.storage("solo").unwrap();
    let single = start.elapsed();
    // Several round trips of 100 ms each: meta, leases, the claim, the catalog, `from`.
    assert!(single >= Duration::from_millis(300), "one open took only {single:?}");

    let barrier = Barrier::new(N);
    let start = Instant::now();
    let handles: Vec<_> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..N)
            .map(|i| {
                let (ns, barrier) = (&ns, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    ns.storage(&format!("object-{i}")).unwrap()
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let together = start.elapsed();
    eprintln!("one open: {single:?}; {N} opens from {N} threads: {together:?}");
    assert_eq!(handles.len(), N);
    assert_eq!(ns.opened_count(), 1 + N as u64);
    // One after another they would take N times as long.
    assert!(
        together < single * (3 * N as u32) / 4,
        "{N} opens took {together:?}, one took {single:?}: they ran one after another"
    );
    drop((solo, handles));
}

#[test]
fn an_open_object_answers_while_another_opens() {
    let store = SlowStore::new(Duration::from_millis(20));
    let dir = Dir::new();
    let ns = dir.open(options(&store));
    let a = ns.storage("a").unwrap();
    a.put("k", "a's value");

    // The open of "b" starts and stays inside the store until released.
    store.hold("b");
    let opener = ns.clone();
    let b = std::thread::spawn(move || opener.storage("b"));
    store.wait_for_requests("b");

    let ns2 = ns.clone();
    let answered = within_patience(move || {
        let start = Instant::now();
        let again = ns2.storage("a").map(|h| now(h.get::<String>("k")));
        (start.elapsed(), again, ns2.open_names())
    });
    let open_while_b_runs = !b.is_finished();
    store.release();
    let (took, again, names) = answered.expect("storage(\"a\") waited for the open of \"b\"");
    assert_eq!(again.unwrap().as_deref(), Some("a's value"));
    assert!(took < Duration::from_secs(1), "storage(\"a\") took {took:?}");
    // A half-opened object is not listed.
    assert_eq!(names, ["a"]);
    assert!(open_while_b_runs, "the open of \"b\" was over before \"a\" was asked for");

    let b = b.join().unwrap().unwrap();
    assert_eq!(b.name(), "b");
    assert_eq!(ns.open_names(), ["a", "b"]);
}

#[test]
fn one_name_opened_by_two_callers_at_once_opens_once() {
    let store = SlowStore::new(Duration::from_millis(20));
    let dir = Dir::new();
    let ns = dir.open(options(&store));

    store.hold("same");
    let first = {
        let ns = ns.clone();
        std::thread::spawn(move || ns.storage("same"))
    };
    store.wait_for_requests("same");
    // The first open is running (held in the store): the second caller arrives meanwhile.
    let second = {
        let ns = ns.clone();
        std::thread::spawn(move || ns.storage("same"))
    };
    std::thread::sleep(Duration::from_millis(100));
    assert!(!first.is_finished() && !second.is_finished());
    store.release();
    let first = first.join().unwrap().unwrap();
    let second = second.join().unwrap().unwrap();

    assert_eq!(ns.opened_count(), 1, "the object was opened twice");
    assert_eq!(store.claims("same"), 1, "the lease was claimed more than once");
    // One object: a write through one handle (not even committed) shows through the other.
    first.put("k", &1);
    assert_eq!(now(second.get::<i64>("k")), Some(1));
}

#[test]
fn a_failed_open_reports_its_error_and_a_later_call_retries() {
    let store = SlowStore::new(Duration::from_millis(10));
    let dir = Dir::new();
    let ns = dir.open(options(&store));
    store.fail(true);

    // Two callers, the second arriving while the first's open runs: each gets the store's
    // error, neither hangs.
    store.hold("doc");
    let first = {
        let ns = ns.clone();
        std::thread::spawn(move || ns.storage("doc"))
    };
    store.wait_for_requests("doc");
    let second = {
        let ns = ns.clone();
        std::thread::spawn(move || ns.storage("doc"))
    };
    std::thread::sleep(Duration::from_millis(50));
    store.release();
    for caller in [first, second] {
        let err = within_patience(move || caller.join().unwrap())
            .expect("a caller hung")
            .expect_err("the store fails every request");
        assert!(matches!(err, Error::Pitr(_)), "{err:?}");
        assert!(err.to_string().contains("injected"), "{err}");
    }
    assert_eq!(ns.opened_count(), 0);
    assert!(ns.open_names().is_empty());

    // The store is back: the next call opens the object.
    store.fail(false);
    let doc = ns.storage("doc").unwrap();
    doc.put("k", "v");
    doc.sync().wait().unwrap();
    assert_eq!(ns.opened_count(), 1);
    assert_eq!(ns.open_names(), ["doc"]);
}
