//! `FaultyBackend`: a wrapper that injects errors, latency and crashes, and records calls.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use crate::backend::{KeyRange, KvBackend, WriteBatch};
use crate::error::{Error, Result};

/// Which [`KvBackend`] method a call was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Op {
    /// [`KvBackend::get`].
    Get,
    /// [`KvBackend::list`].
    List,
    /// [`KvBackend::put`].
    Put,
    /// [`KvBackend::delete`].
    Delete,
    /// [`KvBackend::write`].
    Write,
    /// [`KvBackend::delete_all`].
    DeleteAll,
}

impl Op {
    /// True for the methods that write a batch.
    pub fn is_write(self) -> bool {
        matches!(self, Op::Put | Op::Delete | Op::Write | Op::DeleteAll)
    }
}

/// One call that reached a [`FaultyBackend`], as its hooks and its log see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The method.
    pub op: Op,
    /// The keys named: requested keys for `get`; written keys for `put`; deleted keys for
    /// `delete`; deletes then puts for `write`; the range's bounds are not keys, so `list`
    /// and `delete_all` name none.
    pub keys: Vec<String>,
    /// The call deletes every key (`delete_all`, or a `write` batch with `delete_all`).
    pub delete_all: bool,
    /// For `list`: the range asked for.
    pub range: Option<KeyRange>,
}

/// The future a latency hook returns; the call waits for it before anything else.
pub type Delay = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

type DelayHook = Arc<dyn Fn(&Call) -> Delay + Send + Sync>;
type Predicate = Arc<dyn Fn(&Call) -> bool + Send + Sync>;

#[derive(Default)]
struct Faults {
    fail_next: usize,
    fail_when: Option<Predicate>,
    crash_after: Option<usize>,
    /// Write batches admitted to the inner backend (and not failed there).
    batches: usize,
    crashed: bool,
    delay: Option<DelayHook>,
    max_keys: Option<usize>,
    calls: Vec<Call>,
}

/// A [`KvBackend`] wrapper for testing the layers above against a misbehaving store.
///
/// Each call is first recorded in a log ([`calls`](FaultyBackend::calls)), then waits for the
/// latency hook if one is set ([`set_delay`](FaultyBackend::set_delay)), then is checked
/// against the faults, in this order:
///
/// 1. after a crash every call fails with [`Error::Crashed`];
/// 2. with [`with_max_keys_per_call`](FaultyBackend::with_max_keys_per_call), a `get`, `put`
///    or `delete` naming more keys fails with [`Error::CallTooLarge`];
/// 3. [`fail_next`](FaultyBackend::fail_next) and [`fail_when`](FaultyBackend::fail_when) fail
///    the call with [`Error::Injected`];
/// 4. with [`crash_after_batches`](FaultyBackend::crash_after_batches)`(n)`, once `n` write
///    batches have succeeded the backend crashes: this and every later call fails and nothing
///    more reaches the inner backend.
///
/// A call that fails here never reaches the inner backend, so an injected failure of a write
/// applies none of its batch, as the trait's contract requires.
pub struct FaultyBackend<B> {
    inner: B,
    faults: Mutex<Faults>,
}

impl<B> FaultyBackend<B> {
    fn lock(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<B> std::fmt::Debug for FaultyBackend<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let faults = self.lock();
        f.debug_struct("FaultyBackend")
            .field("fail_next", &faults.fail_next)
            .field("crashed", &faults.crashed)
            .field("batches", &faults.batches)
            .finish_non_exhaustive()
    }
}

impl<B: KvBackend> FaultyBackend<B> {
    /// Wraps `inner` with no faults set.
    pub fn new(inner: B) -> FaultyBackend<B> {
        FaultyBackend { inner, faults: Mutex::new(Faults::default()) }
    }

    /// Reports `limit` as [`KvBackend::max_keys_per_call`] and refuses `get`, `put` and
    /// `delete` calls naming more keys (`write` batches still pass whole, as the contract
    /// says).
    pub fn with_max_keys_per_call(self, limit: usize) -> FaultyBackend<B> {
        self.lock().max_keys = Some(limit);
        self
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// Makes the next `n` calls (of any kind) fail.
    pub fn fail_next(&self, n: usize) {
        self.lock().fail_next = n;
    }

    /// Makes every call for which `predicate` is true fail, until [`heal`](Self::heal).
    pub fn fail_when(&self, predicate: impl Fn(&Call) -> bool + Send + Sync + 'static) {
        self.lock().fail_when = Some(Arc::new(predicate));
    }

    /// Crashes the backend once `n` more write batches have succeeded (counting from now).
    pub fn crash_after_batches(&self, n: usize) {
        let mut faults = self.lock();
        faults.crash_after = Some(faults.batches + n);
        faults.crashed = faults.crash_after == Some(faults.batches);
    }

    /// Waits for `hook(call)` before each call: a timer for latency, or a future the test
    /// completes by hand to hold a call in flight.
    pub fn set_delay(&self, hook: impl Fn(&Call) -> Delay + Send + Sync + 'static) {
        self.lock().delay = Some(Arc::new(hook));
    }

    /// Removes the latency hook.
    pub fn clear_delay(&self) {
        self.lock().delay = None;
    }

    /// Clears every fault, the crash included (the inner backend keeps what it holds, like a
    /// store that restarted). The latency hook and the call log stay.
    pub fn heal(&self) {
        let mut faults = self.lock();
        faults.fail_next = 0;
        faults.fail_when = None;
        faults.crash_after = None;
        faults.crashed = false;
    }

    /// True once the injected crash happened.
    pub fn is_crashed(&self) -> bool {
        self.lock().crashed
    }

    /// Write batches that succeeded through this wrapper.
    pub fn write_batches(&self) -> usize {
        self.lock().batches
    }

    /// Every call so far, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Every call so far, emptying the log.
    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.lock().calls)
    }

    /// Records `call`, waits for the delay, checks the faults and admits the call.
    async fn enter(&self, call: Call) -> Result<()> {
        let delay = {
            let mut faults = self.lock();
            let delay = faults.delay.clone();
            faults.calls.push(call.clone());
            delay
        };
        if let Some(hook) = delay {
            hook(&call).await;
        }
        let mut faults = self.lock();
        if faults.crashed {
            return Err(Error::Crashed { batches: faults.batches });
        }
        let counted = matches!(call.op, Op::Get | Op::Put | Op::Delete);
        if let Some(limit) = faults.max_keys
            && counted
            && call.keys.len() > limit
        {
            return Err(Error::CallTooLarge { count: call.keys.len(), limit });
        }
        if faults.fail_next > 0 {
            faults.fail_next -= 1;
            return Err(Error::Injected { message: format!("{:?} call failed", call.op) });
        }
        if faults.fail_when.as_ref().is_some_and(|p| p(&call)) {
            return Err(Error::Injected { message: format!("{:?} call refused", call.op) });
        }
        if faults.crash_after.is_some_and(|n| faults.batches >= n) {
            faults.crashed = true;
            return Err(Error::Crashed { batches: faults.batches });
        }
        if call.op.is_write() {
            // Admitted now, so concurrent writes cannot overshoot the crash point.
            faults.batches += 1;
        }
        Ok(())
    }

    /// Undoes the admission of a write batch that the inner backend failed.
    fn write_failed(&self) {
        let mut faults = self.lock();
        faults.batches = faults.batches.saturating_sub(1);
    }

    fn finish_write<T>(&self, result: Result<T>) -> Result<T> {
        if result.is_err() {
            self.write_failed();
        }
        result
    }
}

#[async_trait]
impl<B: KvBackend> KvBackend for FaultyBackend<B> {
    async fn get(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        self.enter(Call { op: Op::Get, keys: keys.to_vec(), delete_all: false, range: None })
            .await?;
        self.inner.get(keys).await
    }

    async fn list(&self, range: &KeyRange) -> Result<Vec<(String, Vec<u8>)>> {
        let call =
            Call { op: Op::List, keys: Vec::new(), delete_all: false, range: Some(range.clone()) };
        self.enter(call).await?;
        self.inner.list(range).await
    }

    async fn put(&self, entries: Vec<(String, Vec<u8>)>) -> Result<()> {
        let keys = entries.iter().map(|(k, _)| k.clone()).collect();
        self.enter(Call { op: Op::Put, keys, delete_all: false, range: None }).await?;
        let result = self.inner.put(entries).await;
        self.finish_write(result)
    }

    async fn delete(&self, keys: Vec<String>) -> Result<usize> {
        self.enter(Call { op: Op::Delete, keys: keys.clone(), delete_all: false, range: None })
            .await?;
        let result = self.inner.delete(keys).await;
        self.finish_write(result)
    }

    async fn write(&self, batch: WriteBatch) -> Result<()> {
        let keys = batch
            .deletes
            .iter()
            .cloned()
            .chain(batch.puts.iter().map(|(k, _)| k.clone()))
            .collect();
        let call = Call { op: Op::Write, keys, delete_all: batch.delete_all, range: None };
        self.enter(call).await?;
        let result = self.inner.write(batch).await;
        self.finish_write(result)
    }

    async fn delete_all(&self) -> Result<()> {
        let call = Call { op: Op::DeleteAll, keys: Vec::new(), delete_all: true, range: None };
        self.enter(call).await?;
        let result = self.inner.delete_all().await;
        self.finish_write(result)
    }

    fn max_keys_per_call(&self) -> Option<usize> {
        self.lock().max_keys.or_else(|| self.inner.max_keys_per_call())
    }
}
