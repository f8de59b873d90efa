//! `WriteBehindCache`: the runtime's write-behind, read-through cache in front of a backend.
//!
//! The cache is a pure data structure with async reads and flushes over a `&dyn KvBackend`; it
//! knows nothing of turns or gates. The turn layer decides when to flush and what a failure
//! does to the object. How the turn layer drives it:
//!
//! - **Reads.** Call [`WriteBehindCache::lookup`] (or [`lookup_list`](WriteBehindCache::lookup_list))
//!   at the moment the program calls `get` (or `list`). [`Lookup::Ready`] is the answer,
//!   found without I/O: return it without yielding. [`Lookup::Pending`] names the keys that
//!   must be read; hold the input gate and await [`PendingGet::fetch`]. Either way the answer
//!   is the state at the moment of the lookup: writes made later do not change it.
//! - **Writes.** [`put`](WriteBehindCache::put), [`put_multiple`](WriteBehindCache::put_multiple),
//!   [`delete`](WriteBehindCache::delete) and [`delete_all`](WriteBehindCache::delete_all)
//!   change the cache at once and mark the entries dirty. A delete of keys whose existence the
//!   cache does not know answers [`Deleted::Pending`]; awaiting its count reads those keys'
//!   state as it was at the call.
//! - **Flushes.** When a turn ends and [`has_pending`](WriteBehindCache::has_pending) is true,
//!   take the batch with [`take_flush`](WriteBehindCache::take_flush) and run it with
//!   [`Flush::run`]; hold the output gate while it runs when [`Flush::confirmed`] is true.
//!   One flush runs at a time: `take_flush` answers `None` while one is in flight, so start
//!   the next when it completes. Everything pending goes out as one atomic
//!   [`KvBackend::write`]; a backend whose calls carry a key limit splits it inside one
//!   transaction (see [`WriteBatch::split`]), so the batch stays atomic at any size.
//! - **Failures.** A failed flush returns [`Error::FlushFailed`] (or
//!   [`Error::DeleteAllFailed`]) with the runtime's message and leaves the cache broken: every
//!   operation answers [`Error::Broken`] until [`reset`](WriteBehindCache::reset). The turn
//!   layer breaks the output gate, resets the object and calls `reset`, which drops every
//!   cached entry and pending write.
//!
//! A flush waits for every read that was pending when it was taken (a read started before a
//! write must not see it, even from the backend), so a task must not await a flush while it
//! holds a [`PendingGet`] it has not fetched. Dropping a `PendingGet` or a [`Flush`] is safe:
//! the read stops counting, and the flush's writes return to the pending set (if the backend
//! had already applied them, sending them again is harmless: batches are idempotent).
//!
//! Where this differs from the runtime's cache (spec section 2.7 and after), by choice:
//!
//! - a delete of keys the cache does not know reads their existence (a `get` registered at the
//!   call) instead of sending a counted delete in the batch; the count is the same;
//! - a `delete_all` and the writes after it go out as one atomic batch (the runtime sends the
//!   earlier writes, the `deleteAll` and the later writes separately, and the `deleteAll` is
//!   not atomic on the legacy backend);
//! - `put_multiple` and `delete` refuse more than 128 keys, as `get` does (the runtime's cache
//!   accepts them; the documentation says 128); configurable through [`CacheOptions::limits`].
//!
//! Not modelled here (the runtime does them, the turn layer may): retries of transient
//! backend errors, dirty-bytes backpressure, the hard memory limit, stale-entry eviction by
//! time, alarms.

mod ranges;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use durable_kv::{KeyRange, KvLimits, ListOptions};

use crate::backend::{KvBackend, WriteBatch, key_string, list_map};
use crate::error::{Error, Result};
use ranges::{RangeSet, successor};

/// A cached state: the value, or `None` for a key known to be absent.
type Cached = Option<Arc<[u8]>>;

/// Bytes an entry costs beyond its key and value, in the memory accounting.
pub const ENTRY_OVERHEAD: usize = 64;

/// How a [`WriteBehindCache`] behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheOptions {
    /// Bytes of cached entries (key + value + [`ENTRY_OVERHEAD`] each) above which clean
    /// entries are evicted, least recently used first. Dirty entries are never evicted, so
    /// pending writes may hold more. The runtime's default soft limit is 16 MiB.
    pub memory_limit: usize,
    /// The limits checked on every call before anything changes: by default the legacy
    /// backend's 2048-byte keys, 131072-byte values and 128 keys per call.
    pub limits: KvLimits,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions { memory_limit: 16 << 20, limits: KvLimits::legacy() }
    }
}

/// Options of a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadOptions {
    /// Do not keep what is read from the backend, and do not refresh the recency of cached
    /// entries (the answer is the same either way).
    pub no_cache: bool,
}

/// Options of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteOptions {
    /// The write need not hold the output gate ([`Flush::confirmed`] stays false unless
    /// another write of the batch is confirmed).
    pub allow_unconfirmed: bool,
    /// Drop the entry from the cache once its flush succeeds.
    pub no_cache: bool,
}

/// Counters for tests and monitoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Entries held (values and known-absent keys, dirty or clean).
    pub entries: usize,
    /// Entries whose write is pending (not yet in a flush).
    pub dirty: usize,
    /// Bytes held, as the memory limit counts them.
    pub bytes: usize,
    /// A flush is in flight.
    pub flushing: bool,
    /// A `delete_all` waits for the next flush.
    pub pending_delete_all: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sync {
    Clean,
    Dirty,
    Flushing,
}

#[derive(Debug)]
struct Entry {
    /// The value, or `None` for a key known to be absent.
    value: Cached,
    sync: Sync,
    no_cache: bool,
    /// Unique per written entry; a flush finishes only the entries it took.
    stamp: u64,
    /// Position in the LRU list while clean.
    tick: Option<u64>,
}

fn entry_size(key: &[u8], value: &Cached) -> usize {
    key.len() + value.as_ref().map_or(0, |v| v.len()) + ENTRY_OVERHEAD
}

#[derive(Debug, Default)]
struct State {
    map: BTreeMap<Box<[u8]>, Entry>,
    /// Ranges in which every key not in `map` is known to be absent.
    complete: RangeSet,
    /// Clean entries by last use, oldest first.
    lru: BTreeMap<u64, Box<[u8]>>,
    /// Keys whose entry is dirty and not in a flush.
    dirty: BTreeSet<Box<[u8]>>,
    pending_delete_all: bool,
    pending_confirmed: bool,
    flushing: bool,
    next_stamp: u64,
    next_tick: u64,
    /// Entries removed from `map` so far; a read result is kept only if none was removed
    /// while it was in flight (a removed entry might be newer than the backend's answer).
    removals: u64,
    /// Bumped by `delete_all` and `reset`: read results from before are not kept.
    epoch: u64,
    /// Bumped by `reset` only: an old flush's outcome does not touch the new state.
    generation: u64,
    bytes: usize,
    reads: BTreeSet<u64>,
    next_read: u64,
    read_waiters: Vec<Waker>,
    broken: Option<Error>,
}

impl State {
    fn check(&self) -> Result<()> {
        match self.broken {
            Some(_) => Err(Error::Broken),
            None => Ok(()),
        }
    }

    /// The cached state of `key`: `Some(value)` when known, `None` when the backend must say.
    fn known(&mut self, key: &[u8], touch: bool) -> Option<Cached> {
        let tick = self.next_tick;
        if let Some(entry) = self.map.get_mut(key) {
            if touch {
                if let Some(old) = entry.tick {
                    self.lru.remove(&old);
                    self.lru.insert(tick, key.into());
                    entry.tick = Some(tick);
                    self.next_tick += 1;
                } else if entry.no_cache {
                    // A normal read of a pending no-cache write keeps the entry after all.
                    entry.no_cache = false;
                }
            }
            return Some(entry.value.clone());
        }
        self.complete.contains(key).then_some(None)
    }

    fn register_read(&mut self) -> u64 {
        let id = self.next_read;
        self.next_read += 1;
        self.reads.insert(id);
        id
    }

    fn remove_entry(&mut self, key: &[u8]) {
        if let Some(entry) = self.map.remove(key) {
            self.bytes = self.bytes.saturating_sub(entry_size(key, &entry.value));
            if let Some(tick) = entry.tick {
                self.lru.remove(&tick);
            }
            self.dirty.remove(key);
            self.complete.remove_point(key);
            self.removals += 1;
        }
    }

    /// Makes the entry of `key` clean (in the LRU list), or drops it when it is redundant.
    fn make_clean(&mut self, key: &[u8]) {
        let Some(entry) = self.map.get(key) else { return };
        if entry.no_cache {
            self.remove_entry(key);
            return;
        }
        if entry.value.is_none() && self.complete.contains(key) {
            // A known-absent key inside a known-complete range says nothing new. It still
            // counts as a removal: a read in flight may hold the backend's older answer.
            if let Some(entry) = self.map.remove(key) {
                self.bytes = self.bytes.saturating_sub(entry_size(key, &entry.value));
                self.removals += 1;
            }
            return;
        }
        let tick = self.next_tick;
        self.next_tick += 1;
        if let Some(entry) = self.map.get_mut(key) {
            entry.sync = Sync::Clean;
            entry.tick = Some(tick);
            self.lru.insert(tick, key.into());
        }
    }

    /// Writes `value` (or absence) for `key` as a dirty entry; false when it changes nothing.
    fn write(&mut self, key: &[u8], value: Cached, no_cache: bool) -> bool {
        match self.map.get(key) {
            Some(entry) if entry.value == value => return false,
            None if value.is_none() && self.complete.contains(key) => return false,
            _ => {}
        }
        if let Some(old) = self.map.remove(key) {
            self.bytes = self.bytes.saturating_sub(entry_size(key, &old.value));
            if let Some(tick) = old.tick {
                self.lru.remove(&tick);
            }
        }
        self.bytes += entry_size(key, &value);
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        self.map
            .insert(key.into(), Entry { value, sync: Sync::Dirty, no_cache, stamp, tick: None });
        self.dirty.insert(key.into());
        true
    }

    /// Keeps a value read from the backend, unless the cache already holds something newer.
    fn fill(&mut self, key: &[u8], value: Option<Vec<u8>>) {
        if self.map.contains_key(key) || (value.is_none() && self.complete.contains(key)) {
            return;
        }
        let value: Cached = value.map(Arc::from);
        self.bytes += entry_size(key, &value);
        let tick = self.next_tick;
        self.next_tick += 1;
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        self.lru.insert(tick, key.into());
        self.map.insert(
            key.into(),
            Entry { value, sync: Sync::Clean, no_cache: false, stamp, tick: Some(tick) },
        );
    }

    fn evict_to(&mut self, limit: usize) {
        while self.bytes > limit {
            let Some((_, key)) = self.lru.pop_first() else { break };
            if let Some(entry) = self.map.get_mut(&key) {
                entry.tick = None;
            }
            self.remove_entry(&key);
        }
    }

    fn wake_readers(&mut self) -> Vec<Waker> {
        std::mem::take(&mut self.read_waiters)
    }
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    options: CacheOptions,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The write-behind, read-through cache of a legacy object (spec: legacy-kv-and-gates.md,
/// sections 2.6 to 2.11). A cheap handle: clones share one cache.
///
/// See the [module documentation](self) for how the turn layer drives it.
#[derive(Debug, Clone)]
pub struct WriteBehindCache {
    shared: Arc<Shared>,
}

impl Default for WriteBehindCache {
    fn default() -> Self {
        WriteBehindCache::new(CacheOptions::default())
    }
}

/// A read registered at its call; dropping it lets flushes waiting on it go.
#[derive(Debug)]
struct ReadGuard {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for ReadGuard {
    fn drop(&mut self) {
        let waiters = {
            let mut state = self.shared.lock();
            state.reads.remove(&self.id);
            state.wake_readers()
        };
        for waker in waiters {
            waker.wake();
        }
    }
}

/// The answer of [`WriteBehindCache::lookup`].
#[derive(Debug)]
#[must_use]
pub enum Lookup {
    /// Every key was answered from the cache: values in request order (`None`: absent).
    Ready(Vec<Option<Vec<u8>>>),
    /// Some keys must be read from the backend.
    Pending(PendingGet),
}

/// A read that needs the backend: await [`fetch`](PendingGet::fetch).
#[derive(Debug)]
#[must_use = "a pending read does nothing until it is fetched"]
pub struct PendingGet {
    guard: ReadGuard,
    /// Per requested key: the cached answer, or `None` to take it from the backend.
    known: Vec<Option<Cached>>,
    /// The keys to read (each once), in request order.
    missing: Vec<String>,
    keys: Vec<String>,
    epoch: u64,
    removals: u64,
    no_cache: bool,
}

impl PendingGet {
    /// The keys the backend must answer (each once).
    pub fn missing(&self) -> &[String] {
        &self.missing
    }

    /// Reads the missing keys (in calls of at most the backend's
    /// [`max_keys_per_call`](KvBackend::max_keys_per_call)), keeps them in the cache unless
    /// the read was `no_cache` or the cache changed underneath, and answers every requested key
    /// in request order. A failed read changes nothing and does not break the cache.
    pub async fn fetch(self, backend: &dyn KvBackend) -> Result<Vec<Option<Vec<u8>>>> {
        let chunk = backend.max_keys_per_call().unwrap_or(usize::MAX).max(1);
        let mut read: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
        for keys in self.missing.chunks(chunk) {
            let values = backend.get(keys).await?;
            if values.len() != keys.len() {
                return Err(Error::Backend {
                    message: format!(
                        "backend answered {} values for {} keys",
                        values.len(),
                        keys.len()
                    ),
                });
            }
            read.extend(keys.iter().cloned().zip(values));
        }
        if !self.no_cache {
            let shared = &self.guard.shared;
            let mut state = shared.lock();
            if state.epoch == self.epoch && state.removals == self.removals {
                for (key, value) in &read {
                    state.fill(key.as_bytes(), value.clone());
                }
                state.evict_to(shared.options.memory_limit);
            }
        }
        let out = self
            .keys
            .iter()
            .zip(self.known)
            .map(|(key, known)| match known {
                Some(value) => value.map(|v| v.to_vec()),
                None => read.get(key).cloned().flatten(),
            })
            .collect();
        drop(self.guard);
        Ok(out)
    }
}

/// The answer of [`WriteBehindCache::delete`].
#[derive(Debug)]
#[must_use]
pub enum Deleted {
    /// The count of deleted keys that existed, known from the cache.
    Known(usize),
    /// The existence of some keys must be read from the backend: await
    /// [`PendingCount::fetch`]. The delete itself has already happened.
    Pending(PendingCount),
}

/// The count of a delete that needs the backend.
#[derive(Debug)]
#[must_use = "the count is only known once fetched (the delete has happened either way)"]
pub struct PendingCount {
    known: usize,
    read: PendingGet,
}

impl PendingCount {
    /// Reads whether the unknown keys existed when the delete was called, and returns the
    /// whole count.
    pub async fn fetch(self, backend: &dyn KvBackend) -> Result<usize> {
        let found = self.read.fetch(backend).await?;
        Ok(self.known + found.iter().filter(|v| v.is_some()).count())
    }
}

/// The answer of [`WriteBehindCache::lookup_list`].
#[derive(Debug)]
#[must_use]
pub enum ListLookup {
    /// The cache knows the whole answer.
    Ready(Vec<(String, Vec<u8>)>),
    /// Part of the range must be listed from the backend.
    Pending(PendingList),
}

/// A list that needs the backend: await [`fetch`](PendingList::fetch).
#[derive(Debug)]
#[must_use = "a pending list does nothing until it is fetched"]
pub struct PendingList {
    guard: ReadGuard,
    /// Entries answered from the known part of the range, in list order.
    head: Vec<(String, Vec<u8>)>,
    /// The part of the range to list from the backend (its limit raised by the cached
    /// negatives that may hide stored keys).
    storage: KeyRange,
    /// Cached entries inside `storage`, in list order, as they were at the call.
    overlay: Vec<(Box<[u8]>, Cached)>,
    /// Entries still wanted after `head`.
    want: Option<usize>,
    limit: Option<usize>,
    epoch: u64,
    removals: u64,
    no_cache: bool,
}

impl PendingList {
    /// The range the backend will be asked for.
    pub fn storage_range(&self) -> &KeyRange {
        &self.storage
    }

    /// Lists the unknown part of the range from the backend, merges it with the writes and
    /// deletes that were pending at the call (the cache wins), remembers the listed range as
    /// known (unless `no_cache`), and returns the answer in list order.
    pub async fn fetch(self, backend: &dyn KvBackend) -> Result<Vec<(String, Vec<u8>)>> {
        let rows = backend.list(&self.storage).await?;
        let storage_limit = self.storage.limit.map(|l| usize::try_from(l).unwrap_or(usize::MAX));
        let exhausted = storage_limit.is_none_or(|l| rows.len() < l);
        let reverse = self.storage.reverse;
        // Past the last listed key the backend said nothing, unless it ran out of keys.
        let last: Option<Vec<u8>> =
            if exhausted { None } else { rows.last().map(|(k, _)| k.as_bytes().to_vec()) };
        let before_last = |key: &[u8]| match &last {
            None => true,
            Some(last) if reverse => key >= last.as_slice(),
            Some(last) => key <= last.as_slice(),
        };

        let mut merged: Vec<(String, Vec<u8>)> = Vec::new();
        let mut overlay = self.overlay.iter().filter(|(k, _)| before_last(k)).peekable();
        let mut listed = rows.iter().peekable();
        let first = |a: &[u8], b: &[u8]| if reverse { a > b } else { a < b };
        loop {
            let take_overlay = match (overlay.peek(), listed.peek()) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((ok, _)), Some((lk, _))) => {
                    if ok.as_ref() == lk.as_bytes() {
                        listed.next(); // the cache wins
                        true
                    } else {
                        first(ok, lk.as_bytes())
                    }
                }
            };
            if take_overlay {
                if let Some((k, Some(v))) = overlay.next() {
                    merged.push((key_string(k), v.to_vec()));
                }
            } else if let Some((k, v)) = listed.next() {
                merged.push((k.clone(), v.clone()));
            }
            if self.want.is_some_and(|w| merged.len() >= w) {
                break;
            }
        }

        if !self.no_cache {
            let shared = &self.guard.shared;
            let mut state = shared.lock();
            if state.epoch == self.epoch && state.removals == self.removals {
                let (start, end) = match (&last, reverse) {
                    (None, _) => (self.storage.start.clone(), self.storage.end.clone()),
                    (Some(last), false) => (self.storage.start.clone(), Some(successor(last))),
                    (Some(last), true) => (last.clone(), self.storage.end.clone()),
                };
                state.complete.insert(start, end);
                for (key, value) in &rows {
                    state.fill(key.as_bytes(), Some(value.clone()));
                }
                state.evict_to(shared.options.memory_limit);
            }
        }
        drop(self.guard);
        let mut out = self.head;
        out.extend(merged);
        if let Some(limit) = self.limit {
            out.truncate(limit);
        }
        Ok(out)
    }
}

/// A batch of pending writes taken by [`WriteBehindCache::take_flush`]: run it once.
///
/// Dropping it without running it to the end returns its writes to the pending set.
#[derive(Debug)]
#[must_use = "a flush does nothing until it runs; dropping it returns the writes to the cache"]
pub struct Flush {
    shared: Arc<Shared>,
    batch: WriteBatch,
    /// The entries taken, by key and stamp.
    taken: Vec<(Box<[u8]>, u64)>,
    delete_all: bool,
    confirmed: bool,
    read_barrier: u64,
    generation: u64,
    done: bool,
}

/// What a successful flush wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlushReport {
    /// Keys stored.
    pub puts: usize,
    /// Keys deleted.
    pub deletes: usize,
    /// The batch started with a `delete_all`.
    pub delete_all: bool,
}

/// Waits until no read registered before `barrier` is still pending.
struct PastReads<'a> {
    shared: &'a Shared,
    barrier: u64,
}

impl Future for PastReads<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.shared.lock();
        if state.reads.range(..self.barrier).next().is_none() {
            Poll::Ready(())
        } else {
            state.read_waiters.push(cx.waker().clone());
            Poll::Pending
        }
    }
}

/// A reference for a logged failure, unique within the process.
fn error_reference() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!("{:016x}", nanos.rotate_left(17) ^ NEXT.fetch_add(1, Ordering::Relaxed))
}

impl Flush {
    /// The batch this flush will write.
    pub fn batch(&self) -> &WriteBatch {
        &self.batch
    }

    /// True when some write of the batch was made without `allow_unconfirmed`: the turn layer
    /// holds the output gate until the flush completes.
    pub fn confirmed(&self) -> bool {
        self.confirmed
    }

    /// Waits for the reads that were pending when the flush was taken, writes the batch as one
    /// atomic [`KvBackend::write`], and marks its entries clean (dropping `no_cache` ones and
    /// evicting down to the memory limit).
    ///
    /// On failure the cache is broken (every operation answers [`Error::Broken`] until
    /// [`WriteBehindCache::reset`]) and the error is [`Error::FlushFailed`], or
    /// [`Error::DeleteAllFailed`] for a batch with a `delete_all`, with the backend's error as
    /// its source; the backend's error is logged through `tracing` with the same reference.
    pub async fn run(mut self, backend: &dyn KvBackend) -> Result<FlushReport> {
        PastReads { shared: &self.shared, barrier: self.read_barrier }.await;
        let batch = std::mem::take(&mut self.batch);
        let report = FlushReport {
            puts: batch.puts.len(),
            deletes: batch.deletes.len(),
            delete_all: batch.delete_all,
        };
        let result = backend.write(batch).await;
        let shared = self.shared.clone();
        let mut state = shared.lock();
        self.done = true;
        state.flushing = false;
        let current = state.generation == self.generation;
        match result {
            Ok(()) => {
                if current {
                    for (key, stamp) in &self.taken {
                        if state.map.get(key).is_some_and(|e| e.stamp == *stamp) {
                            state.make_clean(key);
                        }
                    }
                    state.evict_to(shared.options.memory_limit);
                }
                Ok(report)
            }
            Err(source) => {
                let reference = error_reference();
                tracing::error!(%reference, error = %source, "durable storage flush failed");
                let source = Box::new(source);
                let error = if self.delete_all {
                    Error::DeleteAllFailed { reference, source }
                } else {
                    Error::FlushFailed { reference, source }
                };
                if current {
                    state.broken = Some(error.clone());
                }
                Err(error)
            }
        }
    }
}

impl Drop for Flush {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut state = self.shared.lock();
        state.flushing = false;
        if state.generation != self.generation {
            return;
        }
        for (key, stamp) in &self.taken {
            if let Some(entry) = state.map.get_mut(key)
                && entry.stamp == *stamp
                && entry.sync == Sync::Flushing
            {
                entry.sync = Sync::Dirty;
                state.dirty.insert(key.clone());
            }
        }
        state.pending_delete_all |= self.delete_all;
        state.pending_confirmed |= self.confirmed;
    }
}

impl WriteBehindCache {
    /// An empty cache with `options`.
    pub fn new(options: CacheOptions) -> WriteBehindCache {
        WriteBehindCache {
            shared: Arc::new(Shared { state: Mutex::new(State::default()), options }),
        }
    }

    /// The options in force.
    pub fn options(&self) -> &CacheOptions {
        &self.shared.options
    }

    /// Answers `keys` (in request order, `None` for absent) from the cache, or says which keys
    /// the backend must answer. The answer is the state at this call.
    ///
    /// Refuses more keys than `limits.max_keys_per_call` and keys over `limits.max_key_size`
    /// with the runtime's `RangeError` messages.
    pub fn lookup(&self, keys: &[String], options: ReadOptions) -> Result<Lookup> {
        let limits = &self.shared.options.limits;
        limits.check_count(keys.len())?;
        for key in keys {
            limits.check_key(key)?;
        }
        let mut state = self.shared.lock();
        state.check()?;
        let known: Vec<Option<Cached>> =
            keys.iter().map(|k| state.known(k.as_bytes(), !options.no_cache)).collect();
        if known.iter().all(Option::is_some) {
            let values = known.into_iter().map(|v| v.flatten().map(|v| v.to_vec())).collect();
            return Ok(Lookup::Ready(values));
        }
        let mut seen = BTreeSet::new();
        let missing = keys
            .iter()
            .zip(&known)
            .filter(|(k, v)| v.is_none() && seen.insert(k.as_str()))
            .map(|(k, _)| k.clone())
            .collect();
        let id = state.register_read();
        let (epoch, removals) = (state.epoch, state.removals);
        drop(state);
        Ok(Lookup::Pending(PendingGet {
            guard: ReadGuard { shared: self.shared.clone(), id },
            known,
            missing,
            keys: keys.to_vec(),
            epoch,
            removals,
            no_cache: options.no_cache,
        }))
    }

    /// [`lookup`](Self::lookup) and, when needed, [`PendingGet::fetch`]. The lookup happens at
    /// the first poll of the returned future; use `lookup` to fix the moment of the read.
    pub async fn get(
        &self,
        backend: &dyn KvBackend,
        keys: &[String],
        options: ReadOptions,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        match self.lookup(keys, options)? {
            Lookup::Ready(values) => Ok(values),
            Lookup::Pending(pending) => pending.fetch(backend).await,
        }
    }

    /// Answers a `list` from the cache when it knows the whole range (or the first `limit`
    /// entries of it), or says which part the backend must list. The answer is the state at
    /// this call: pending writes and deletes are merged in.
    ///
    /// The options are checked as the runtime's `list()` checks them (`start` with
    /// `start_after`, a limit that is not positive).
    pub fn lookup_list(&self, list: &ListOptions, options: ReadOptions) -> Result<ListLookup> {
        let Some(range) = list.compile()? else { return Ok(ListLookup::Ready(Vec::new())) };
        let limit = range.limit.map(|l| usize::try_from(l).unwrap_or(usize::MAX));
        let mut state = self.shared.lock();
        state.check()?;
        let touch = !options.no_cache;
        // The known part of the range (from its start, or down from its end in reverse) and
        // the part the backend must list.
        let (known, storage): (Option<KeyRange>, Option<KeyRange>) = if range.reverse {
            match state.complete.reaching(range.end.as_deref()).map(<[u8]>::to_vec) {
                Some(from) if from.as_slice() <= range.start.as_slice() => {
                    (Some(range.clone()), None)
                }
                Some(from) => (
                    Some(KeyRange { start: from.clone(), ..range.clone() }),
                    Some(KeyRange { end: Some(from), ..range.clone() }),
                ),
                None => (None, Some(range.clone())),
            }
        } else {
            let upto = state.complete.containing(&range.start).map(|(_, e)| e.map(<[u8]>::to_vec));
            match upto {
                None => (None, Some(range.clone())),
                Some(None) => (Some(range.clone()), None),
                Some(Some(upto)) if range.end.as_ref().is_some_and(|end| *end <= upto) => {
                    (Some(range.clone()), None)
                }
                Some(Some(upto)) => (
                    Some(KeyRange { end: Some(upto.clone()), ..range.clone() }),
                    Some(KeyRange { start: upto, ..range.clone() }),
                ),
            }
        };
        let mut touched = Vec::new();
        let mut head: Vec<(String, Vec<u8>)> = match &known {
            None => Vec::new(),
            Some(known) => {
                // The limit counts entries with a value, so the walk stops once it is met.
                list_map(&state.map, known, |k, e| {
                    if touch {
                        touched.push(Box::<[u8]>::from(k));
                    }
                    e.value.as_ref().map(|v| (key_string(k), v.to_vec()))
                })
            }
        };
        for key in touched {
            let _ = state.known(&key, true);
        }
        let full = limit.is_some_and(|l| head.len() >= l);
        let Some(mut storage) = storage.filter(|_| !full) else {
            if let Some(l) = limit {
                head.truncate(l);
            }
            return Ok(ListLookup::Ready(head));
        };
        let overlay_range = KeyRange { limit: None, ..storage.clone() };
        let overlay: Vec<(Box<[u8]>, Cached)> =
            list_map(&state.map, &overlay_range, |k, e| Some((Box::from(k), e.value.clone())));
        let want = limit.map(|l| l - head.len());
        let negatives = overlay.iter().filter(|(_, v)| v.is_none()).count();
        storage.limit = want.map(|w| (w + negatives) as u64);
        let id = state.register_read();
        let (epoch, removals) = (state.epoch, state.removals);
        drop(state);
        Ok(ListLookup::Pending(PendingList {
            guard: ReadGuard { shared: self.shared.clone(), id },
            head,
            storage,
            overlay,
            want,
            limit,
            epoch,
            removals,
            no_cache: options.no_cache,
        }))
    }

    /// [`lookup_list`](Self::lookup_list) and, when needed, [`PendingList::fetch`], the lookup
    /// happening at the first poll.
    pub async fn list(
        &self,
        backend: &dyn KvBackend,
        list: &ListOptions,
        options: ReadOptions,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        match self.lookup_list(list, options)? {
            ListLookup::Ready(entries) => Ok(entries),
            ListLookup::Pending(pending) => pending.fetch(backend).await,
        }
    }

    /// Stores `value` (already encoded) under `key`, in the cache at once; it reaches the
    /// backend with the next flush. A value byte-identical to the cached one changes nothing.
    ///
    /// Refuses keys over `limits.max_key_size` and values over `limits.max_value_size` with
    /// the runtime's `RangeError` messages, before anything changes.
    pub fn put(&self, key: &str, value: Vec<u8>, options: WriteOptions) -> Result<()> {
        self.put_multiple(vec![(key.to_owned(), value)], options)
    }

    /// Stores every entry (validated all before any is written); they go out in the same
    /// flush as every other write made before it.
    pub fn put_multiple(
        &self,
        entries: Vec<(String, Vec<u8>)>,
        options: WriteOptions,
    ) -> Result<()> {
        let limits = &self.shared.options.limits;
        limits.check_count(entries.len())?;
        for (key, value) in &entries {
            limits.check_key(key)?;
            limits.check_value(value)?;
        }
        let mut state = self.shared.lock();
        state.check()?;
        let mut changed = false;
        for (key, value) in entries {
            changed |= state.write(key.as_bytes(), Some(Arc::from(value)), options.no_cache);
        }
        if changed {
            state.pending_confirmed |= !options.allow_unconfirmed;
        }
        state.evict_to(self.shared.options.memory_limit);
        Ok(())
    }

    /// Deletes `keys` in the cache at once (the deletes reach the backend with the next
    /// flush) and counts those that existed (a repeated key counts once): at once when the
    /// cache knows every key, otherwise through [`Deleted::Pending`]. Deleting a key known to
    /// be absent changes nothing.
    pub fn delete(&self, keys: &[String], options: WriteOptions) -> Result<Deleted> {
        let limits = &self.shared.options.limits;
        limits.check_count(keys.len())?;
        for key in keys {
            limits.check_key(key)?;
        }
        let unique: BTreeSet<&str> = keys.iter().map(String::as_str).collect();
        let mut state = self.shared.lock();
        state.check()?;
        let mut count = 0;
        let mut unknown = Vec::new();
        for key in &unique {
            match state.known(key.as_bytes(), false) {
                Some(Some(_)) => count += 1,
                Some(None) => {}
                None => unknown.push((*key).to_owned()),
            }
        }
        let mut changed = false;
        for key in &unique {
            changed |= state.write(key.as_bytes(), None, options.no_cache);
        }
        if changed {
            state.pending_confirmed |= !options.allow_unconfirmed;
        }
        if unknown.is_empty() {
            return Ok(Deleted::Known(count));
        }
        let id = state.register_read();
        let (epoch, removals) = (state.epoch, state.removals);
        drop(state);
        let known = vec![None; unknown.len()];
        Ok(Deleted::Pending(PendingCount {
            known: count,
            read: PendingGet {
                guard: ReadGuard { shared: self.shared.clone(), id },
                known,
                missing: unknown.clone(),
                keys: unknown,
                epoch,
                removals,
                no_cache: true,
            },
        }))
    }

    /// Deletes every key: at once in the cache (every read now answers "absent" without
    /// I/O), and in the backend with the next flush, which starts with the `delete_all`.
    /// Writes made before it and not yet flushing are dropped (the `delete_all` erases them
    /// anyway); writes made after it go out in the same batch, after the `delete_all`, and
    /// survive. A flush already in flight completes first.
    pub fn delete_all(&self, options: WriteOptions) -> Result<()> {
        let mut state = self.shared.lock();
        state.check()?;
        state.map.clear();
        state.lru.clear();
        state.dirty.clear();
        state.bytes = 0;
        state.complete.clear();
        state.complete.insert(Vec::new(), None);
        state.pending_delete_all = true;
        state.pending_confirmed |= !options.allow_unconfirmed;
        state.epoch += 1;
        Ok(())
    }

    /// True when writes wait for a flush.
    pub fn has_pending(&self) -> bool {
        let state = self.shared.lock();
        !state.dirty.is_empty() || state.pending_delete_all
    }

    /// True while a flush is in flight.
    pub fn is_flushing(&self) -> bool {
        self.shared.lock().flushing
    }

    /// Takes every pending write as one batch, or `None` when nothing is pending or a flush is
    /// already in flight (one flush at a time keeps batches in order). Fails with
    /// [`Error::Broken`] after a failed flush.
    pub fn take_flush(&self) -> Result<Option<Flush>> {
        let mut state = self.shared.lock();
        state.check()?;
        if state.flushing || (state.dirty.is_empty() && !state.pending_delete_all) {
            return Ok(None);
        }
        let mut batch =
            WriteBatch { delete_all: state.pending_delete_all, ..WriteBatch::default() };
        let mut taken = Vec::with_capacity(state.dirty.len());
        let dirty = std::mem::take(&mut state.dirty);
        for key in dirty {
            let Some(entry) = state.map.get_mut(&key) else { continue };
            entry.sync = Sync::Flushing;
            match &entry.value {
                Some(v) => batch.puts.push((key_string(&key), v.to_vec())),
                None => batch.deletes.push(key_string(&key)),
            }
            taken.push((key, entry.stamp));
        }
        let flush = Flush {
            shared: self.shared.clone(),
            batch,
            taken,
            delete_all: state.pending_delete_all,
            confirmed: state.pending_confirmed,
            read_barrier: state.next_read,
            generation: state.generation,
            done: false,
        };
        state.pending_delete_all = false;
        state.pending_confirmed = false;
        state.flushing = true;
        Ok(Some(flush))
    }

    /// Takes and runs a flush ([`take_flush`](Self::take_flush) then [`Flush::run`]); an empty
    /// report when nothing was pending or a flush was already in flight.
    pub async fn flush(&self, backend: &dyn KvBackend) -> Result<FlushReport> {
        match self.take_flush()? {
            Some(flush) => flush.run(backend).await,
            None => Ok(FlushReport::default()),
        }
    }

    /// The error of the failed flush that broke the cache, if one did.
    pub fn broken(&self) -> Option<Error> {
        self.shared.lock().broken.clone()
    }

    /// Drops every cached entry and pending write and clears the broken state: the cache
    /// starts over knowing nothing (the object was reset). Reads in flight keep their answers
    /// but no longer fill the cache; a flush in flight completes without touching it.
    pub fn reset(&self) {
        let mut state = self.shared.lock();
        state.map.clear();
        state.lru.clear();
        state.dirty.clear();
        state.complete.clear();
        state.bytes = 0;
        state.pending_delete_all = false;
        state.pending_confirmed = false;
        state.broken = None;
        state.epoch += 1;
        state.generation += 1;
    }

    /// Counters: entries, dirty entries, bytes, flush state.
    pub fn stats(&self) -> CacheStats {
        let state = self.shared.lock();
        CacheStats {
            entries: state.map.len(),
            dirty: state.dirty.len(),
            bytes: state.bytes,
            flushing: state.flushing,
            pending_delete_all: state.pending_delete_all,
        }
    }
}
