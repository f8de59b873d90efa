//! `FaultyStore`, a fault-injecting [`ObjectStore`] wrapper for tests: a full target (every
//! put fails as with ENOSPC), transient put failures (the next N puts fail), a put that
//! lands but answers with an error, and failing reads (get and list). Shared by durable-pitr's and durable-storage's tests (the latter
//! includes this file with a `#[path]` attribute).

use std::fmt;
use std::sync::Arc;
use std::sync::Mutex;

use async_trait::async_trait;
use durable_pitr::object_store::path::Path;
use durable_pitr::object_store::{
    self, CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

#[derive(Debug, Default)]
struct Faults {
    /// Every put fails (the target is full) until healed.
    full: bool,
    /// The next N puts fail, then puts work again.
    fail_next_puts: usize,
    /// Every get and list fails until healed.
    fail_reads: bool,
    /// The next put lands but answers with an error (a timeout after the store kept it),
    /// and this many puts after it fail.
    land_then_fail: Option<usize>,
    /// Put attempts seen, failed or not.
    put_attempts: usize,
    /// Calls failed by this wrapper.
    injected: usize,
    /// Puts to keys containing this fail (a partition that hits some writes only, such as
    /// a node's heartbeats).
    failing_keys: Option<String>,
    /// Gets seen, per key.
    gets: std::collections::HashMap<String, usize>,
    /// Delete requests (`delete_stream` calls: a bulk delete is one).
    delete_calls: usize,
}

/// Wraps a store and fails the calls its switches select.
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    faults: Mutex<Faults>,
}

#[allow(dead_code)]
impl FaultyStore {
    /// Wraps `inner`; no fault is on.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Arc<FaultyStore> {
        Arc::new(FaultyStore { inner, faults: Mutex::new(Faults::default()) })
    }

    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every put fails with "No space left on device" until [`heal`](FaultyStore::heal).
    pub fn fill(&self) {
        self.faults().full = true;
    }

    /// The next `n` puts fail, then puts work again.
    pub fn fail_next_puts(&self, n: usize) {
        self.faults().fail_next_puts = n;
    }

    /// The next put lands but its caller gets an error (as when the answer is lost), and
    /// the `then` puts after it fail without landing.
    pub fn land_next_put_then_fail(&self, then: usize) {
        self.faults().land_then_fail = Some(then);
    }

    /// Every put to a key containing `part` fails until [`heal`](FaultyStore::heal).
    pub fn fail_puts_to(&self, part: &str) {
        self.faults().failing_keys = Some(part.to_owned());
    }

    /// Every get and list fails until [`heal`](FaultyStore::heal).
    pub fn fail_reads(&self) {
        self.faults().fail_reads = true;
    }

    /// Turns every fault off.
    pub fn heal(&self) {
        let mut f = self.faults();
        f.full = false;
        f.fail_next_puts = 0;
        f.fail_reads = false;
        f.land_then_fail = None;
        f.failing_keys = None;
    }

    /// Delete requests seen so far (`delete_stream` calls; a single delete is one too).
    pub fn delete_calls(&self) -> usize {
        self.faults().delete_calls
    }

    /// Put attempts seen so far, failed or not.
    pub fn put_attempts(&self) -> usize {
        self.faults().put_attempts
    }

    /// Gets of keys containing `part` so far: (all of them, the most of any one key).
    pub fn gets_of(&self, part: &str) -> (usize, usize) {
        let f = self.faults();
        let counts = f.gets.iter().filter(|(key, _)| key.contains(part)).map(|(_, n)| *n);
        counts.fold((0, 0), |(all, most), n| (all + n, most.max(n)))
    }

    /// Forgets the gets seen so far.
    pub fn forget_gets(&self) {
        self.faults().gets.clear();
    }

    /// Calls this wrapper failed so far.
    pub fn injected(&self) -> usize {
        self.faults().injected
    }

    fn check_put(&self, location: &Path) -> object_store::Result<()> {
        let mut f = self.faults();
        f.put_attempts += 1;
        if f.failing_keys.as_deref().is_some_and(|part| location.as_ref().contains(part)) {
            f.injected += 1;
            return Err(transient("put"));
        }
        if f.full {
            f.injected += 1;
            return Err(enospc());
        }
        if f.fail_next_puts > 0 {
            f.fail_next_puts -= 1;
            f.injected += 1;
            return Err(transient("put"));
        }
        Ok(())
    }

    fn check_read(&self, what: &'static str) -> object_store::Result<()> {
        let mut f = self.faults();
        if f.fail_reads {
            f.injected += 1;
            return Err(transient(what));
        }
        Ok(())
    }
}

fn enospc() -> object_store::Error {
    let source = std::io::Error::new(std::io::ErrorKind::StorageFull, "No space left on device");
    object_store::Error::Generic { store: "faulty", source: Box::new(source) }
}

fn transient(what: &'static str) -> object_store::Error {
    let source = std::io::Error::other(format!("injected {what} failure"));
    object_store::Error::Generic { store: "faulty", source: Box::new(source) }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.check_put(location)?;
        let put = self.inner.put_opts(location, payload, opts).await?;
        let mut f = self.faults();
        if let Some(then) = f.land_then_fail.take() {
            f.fail_next_puts = then;
            f.injected += 1;
            return Err(transient("put answer"));
        }
        Ok(put)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.check_put(location)?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.check_read("get")?;
        *self.faults().gets.entry(location.to_string()).or_default() += 1;
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.faults().delete_calls += 1;
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        match self.check_read("list") {
            Ok(()) => self.inner.list(prefix),
            Err(e) => futures_util::stream::once(async move { Err(e) }).boxed(),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.check_read("list")?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.check_put(to)?;
        self.inner.copy_opts(from, to, options).await
    }
}
