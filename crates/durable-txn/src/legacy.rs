//! The KV-backed engine: the async KV API over any [`KvBackend`] through the runtime's
//! write-behind cache, with flushes at the ends of turns.
//!
//! Reads the cache answers complete at once; misses wait for the backend while holding the
//! input gate (unless `allow_concurrency`). Writes land in the cache when called. At the end
//! of a turn everything pending goes out as one atomic batch; one flush runs at a time, and a
//! turn whose writes wait behind a flush in flight goes out in the next one.
//!
//! The alarm is kept beside the data, in the same batches, under a reserved key longer than
//! any key a user may write (2,048 bytes), so it is transactional with every other write and
//! never shows in a list.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use durable_backend::KvBackend;
use durable_backend::cache::{
    CacheOptions, Deleted, ListLookup, Lookup, ReadOptions, WriteBehindCache, WriteOptions,
};
use durable_kv::{KvLimits, ListOptions, codec};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use crate::error::{Error, Result};
use crate::op::Op;
use crate::storage::{GetOptions, PutOptions};
use crate::turn;

/// Bytes of the longest key a user may write on the KV backend.
const USER_KEY_LIMIT: usize = 2048;

/// The reserved key of the alarm: NUL-led and longer than any user key.
fn alarm_key() -> String {
    let mut key = String::from("\u{0}durable-storage:alarm:");
    while key.len() <= USER_KEY_LIMIT {
        key.push('~');
    }
    key
}

fn is_reserved(key: &str) -> bool {
    key.len() > USER_KEY_LIMIT
}

/// Starts backend I/O now rather than when its `Op` is first polled: calls do their work when
/// they are made, so a read nobody awaits yet is neither lost nor holding back the flushes
/// that wait for earlier reads. `lock` (the input gate) is held until the caller has the
/// result, or drops the `Op`. Outside a tokio runtime the I/O runs when the `Op` is awaited.
fn start_io<T: Send + 'static>(
    io: impl Future<Output = Result<T>> + Send + 'static,
    lock: Option<turn::InputLock>,
) -> Op<T> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            let task = handle.spawn(io);
            Op::io(async move {
                let result = task.await.unwrap_or(Err(Error::NoLongerAccessible));
                drop(lock);
                result
            })
        }
        Err(_) => Op::io(async move {
            let result = io.await;
            drop(lock);
            result
        }),
    }
}

/// Flush bookkeeping: flushes are numbered in the order they are taken.
#[derive(Default)]
struct Flushes {
    started: u64,
    done: u64,
    error: Option<Error>,
}

pub(crate) struct KvEngine {
    cache: WriteBehindCache,
    backend: Arc<dyn KvBackend>,
    user_limits: KvLimits,
    flushes: Mutex<Flushes>,
    changed: Notify,
}

fn read_opts(o: GetOptions) -> ReadOptions {
    ReadOptions { no_cache: o.no_cache }
}

fn write_opts(o: PutOptions) -> WriteOptions {
    WriteOptions { allow_unconfirmed: o.allow_unconfirmed, no_cache: o.no_cache }
}

/// A stored value, decoded (the KV-backed engine and its transactions).
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    Ok(codec::decode(bytes)?)
}

/// A key-ordered entry of the backend or an overlay: its key (always written from a Rust
/// string) and its decoded value.
pub(crate) fn decode_entry<T: DeserializeOwned>(
    (key, value): (Vec<u8>, Vec<u8>),
) -> Result<(String, T)> {
    Ok((String::from_utf8(key).unwrap_or_default(), decode(&value)?))
}

impl KvEngine {
    pub(crate) fn new(backend: Arc<dyn KvBackend>, mut options: CacheOptions) -> KvEngine {
        let user_limits = options.limits;
        // The cache must accept the reserved alarm key; user keys are checked here.
        options.limits.max_key_size = user_limits.max_key_size.map(|_| alarm_key().len()).or(None);
        KvEngine {
            cache: WriteBehindCache::new(options),
            backend,
            user_limits,
            flushes: Mutex::new(Flushes::default()),
            changed: Notify::new(),
        }
    }

    fn flushes(&self) -> MutexGuard<'_, Flushes> {
        self.flushes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_keys<'a>(&self, keys: impl IntoIterator<Item = &'a str>) -> Result<()> {
        for key in keys {
            self.user_limits.check_key(key)?;
            if is_reserved(key) {
                // Only reachable when the configured limits allow longer keys.
                return Err(durable_kv::Error::KeyTooLarge {
                    size: key.len(),
                    limit: USER_KEY_LIMIT,
                }
                .into());
            }
        }
        Ok(())
    }

    /// Checks a multi-key call: how many keys, and each key.
    fn check_batch(&self, keys: &[&str]) -> Result<()> {
        self.user_limits.check_count(keys.len())?;
        self.check_keys(keys.iter().copied())
    }

    /// Reads `keys`: values in request order.
    fn read(&self, keys: Vec<String>, options: GetOptions) -> Op<Vec<Option<Vec<u8>>>> {
        match self.cache.lookup(&keys, read_opts(options)) {
            Err(e) => Op::ready(Err(e.into())),
            Ok(Lookup::Ready(values)) => Op::ready(Ok(values)),
            Ok(Lookup::Pending(pending)) => {
                let lock = if options.allow_concurrency { None } else { turn::input_lock() };
                let backend = self.backend.clone();
                start_io(async move { Ok(pending.fetch(&*backend).await?) }, lock)
            }
        }
    }

    pub(crate) fn get<T: DeserializeOwned + Send + 'static>(
        &self,
        key: &str,
        options: GetOptions,
    ) -> Op<Option<T>> {
        if let Err(e) = self.check_keys([key]) {
            return Op::ready(Err(e));
        }
        map_op(self.read(vec![key.to_string()], options), |mut values| {
            values.pop().flatten().map(|b| decode(&b)).transpose()
        })
    }

    pub(crate) fn get_multiple<T: DeserializeOwned + Send + 'static>(
        &self,
        keys: &[&str],
        options: GetOptions,
    ) -> Op<Vec<(String, T)>> {
        if let Err(e) = self.check_batch(keys) {
            return Op::ready(Err(e));
        }
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        let requested = keys.clone();
        map_op(self.read(keys, options), move |values| {
            let mut found = BTreeMap::new();
            for (key, value) in requested.into_iter().zip(values) {
                if let Some(bytes) = value {
                    found.insert(key.into_bytes(), bytes);
                }
            }
            found.into_iter().map(decode_entry).collect()
        })
    }

    pub(crate) fn put<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        options: PutOptions,
    ) -> Result<()> {
        self.check_keys([key])?;
        let bytes = codec::encode(value)?;
        if codec::is_undefined(&bytes) {
            return Err(Error::PutUndefined);
        }
        self.cache.put(key, bytes, write_opts(options))?;
        Ok(())
    }

    pub(crate) fn put_multiple<T: Serialize>(
        &self,
        entries: &[(&str, T)],
        options: PutOptions,
    ) -> Result<()> {
        self.check_keys(entries.iter().map(|(k, _)| *k))?;
        let mut encoded = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            let bytes = codec::encode(value)?;
            // `undefined` values are skipped, as the runtime skips them.
            if !codec::is_undefined(&bytes) {
                encoded.push((key.to_string(), bytes));
            }
        }
        self.cache.put_multiple(encoded, write_opts(options))?;
        Ok(())
    }

    pub(crate) fn delete(&self, keys: &[&str], options: PutOptions) -> Op<usize> {
        if let Err(e) = self.check_batch(keys) {
            return Op::ready(Err(e));
        }
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        match self.cache.delete(&keys, write_opts(options)) {
            Err(e) => Op::ready(Err(e.into())),
            Ok(Deleted::Known(n)) => Op::ready(Ok(n)),
            Ok(Deleted::Pending(pending)) => {
                let backend = self.backend.clone();
                start_io(async move { Ok(pending.fetch(&*backend).await?) }, turn::input_lock())
            }
        }
    }

    pub(crate) fn list<T: DeserializeOwned + Send + 'static>(
        &self,
        list: &ListOptions,
        options: GetOptions,
    ) -> Op<Vec<(String, T)>> {
        map_op(self.list_raw(list, options), |rows| {
            rows.into_iter().map(|(k, v)| Ok((k, decode(&v)?))).collect()
        })
    }

    /// Checks `key` against the user's limits and encodes `value`; `None` for `undefined`
    /// (refused by a single put, skipped by a multi-key one).
    pub(crate) fn encode_entry<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<Option<Vec<u8>>> {
        self.check_keys([key])?;
        let bytes = codec::encode(value)?;
        if codec::is_undefined(&bytes) {
            return Ok(None);
        }
        self.user_limits.check_value(&bytes)?;
        Ok(Some(bytes))
    }

    /// Checks `key` against the user's limits and encodes `value` (not `undefined`).
    pub(crate) fn encode_checked<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<Vec<u8>> {
        self.encode_entry(key, value)?.ok_or(Error::PutUndefined)
    }

    /// The stored bytes of `keys`, in request order (checked against the user's limits).
    pub(crate) fn read_raw(&self, keys: &[&str]) -> Op<Vec<Option<Vec<u8>>>> {
        if let Err(e) = self.check_batch(keys) {
            return Op::ready(Err(e));
        }
        self.read(keys.iter().map(|k| k.to_string()).collect(), GetOptions::default())
    }

    /// Whether each of `keys` exists (checked against the user's limits first).
    pub(crate) fn exists(&self, keys: &[&str]) -> Op<Vec<bool>> {
        if let Err(e) = self.check_keys(keys.iter().copied()) {
            return Op::ready(Err(e));
        }
        let keys = keys.iter().map(|k| k.to_string()).collect();
        map_op(self.read(keys, GetOptions::default()), |v| {
            Ok(v.iter().map(Option::is_some).collect())
        })
    }

    /// The raw stored alarm entry's key, for transaction overlays.
    pub(crate) fn alarm_key(&self) -> String {
        alarm_key()
    }

    /// Applies a committed transaction's writes to the cache, as one turn's writes.
    pub(crate) fn apply(&self, writes: Vec<(String, Option<Vec<u8>>)>) -> Result<()> {
        for (key, value) in writes {
            match value {
                Some(bytes) => self.cache.put(&key, bytes, WriteOptions::default())?,
                None => {
                    let _ = self.cache.delete(&[key], WriteOptions::default())?;
                }
            }
        }
        Ok(())
    }

    /// The entries `list` selects, as stored bytes, without the reserved alarm entry.
    pub(crate) fn list_raw(
        &self,
        list: &ListOptions,
        options: GetOptions,
    ) -> Op<Vec<(String, Vec<u8>)>> {
        // The reserved alarm key sorts first ("\0..."); ask for one more entry when the range
        // may hold it, and drop it from the answer.
        let mut asked = list.clone();
        let limit = list.limit;
        if let Some(l) = limit
            && l > 0
        {
            asked.limit = Some(l.saturating_add(1));
        }
        let finish = move |rows: Vec<(String, Vec<u8>)>| -> Result<Vec<(String, Vec<u8>)>> {
            let mut out = Vec::new();
            for (key, bytes) in rows {
                if is_reserved(&key) {
                    continue;
                }
                if limit.is_some_and(|l| out.len() as i64 >= l) {
                    break;
                }
                out.push((key, bytes));
            }
            Ok(out)
        };
        match self.cache.lookup_list(&asked, read_opts(options)) {
            Err(e) => Op::ready(Err(e.into())),
            Ok(ListLookup::Ready(rows)) => Op::ready(finish(rows)),
            Ok(ListLookup::Pending(pending)) => {
                let lock = if options.allow_concurrency { None } else { turn::input_lock() };
                let backend = self.backend.clone();
                map_op(start_io(async move { Ok(pending.fetch(&*backend).await?) }, lock), finish)
            }
        }
    }

    /// Deletes everything, at once: the cache answers "absent" from now on, and the
    /// `deleteAll` goes to the backend in a flush started now, ordered after the writes made
    /// before it and before those made after it. Being in flight, it is kept even if the
    /// object is aborted later in the turn. With `keep_alarm` the alarm survives as a write
    /// made right after the `deleteAll` (an abort in the same turn loses it, as in the
    /// runtime); without, it is deleted too (the `delete_all_deletes_alarm` behaviour).
    ///
    /// The returned `Op` is ready at once, as the runtime's promise resolves at once (so
    /// awaiting it does not end the turn); a failure of the flush breaks the output gate
    /// and resets the object, as any failed flush does.
    pub(crate) fn delete_all(self: &Arc<Self>, keep_alarm: bool) -> Op<()> {
        let alarm = if keep_alarm {
            match self.cache.lookup(&[alarm_key()], ReadOptions::default()) {
                Ok(Lookup::Ready(mut v)) => Some(v.pop().flatten()),
                // Not known yet: read from the backend before the deleteAll goes out.
                Ok(Lookup::Pending(_)) => None,
                Err(e) => return Op::ready(Err(e.into())),
            }
        } else {
            Some(None)
        };
        if let Err(e) = self.cache.delete_all(WriteOptions::default()) {
            return Op::ready(Err(e.into()));
        }
        match alarm {
            Some(known) => {
                drop(self.flush_now());
                if let Some(bytes) = known
                    && let Err(e) = self.cache.put(&alarm_key(), bytes, WriteOptions::default())
                {
                    return Op::ready(Err(e.into()));
                }
            }
            None => {
                // The stored alarm, read before the deleteAll's flush runs, then kept.
                let engine = self.clone();
                drop(start_io(
                    async move {
                        let stored = engine.backend.get(&[alarm_key()]).await?.pop().flatten();
                        let flushed = engine.flush_now();
                        if let Some(bytes) = stored {
                            engine.cache.put(&alarm_key(), bytes, WriteOptions::default())?;
                        }
                        flushed.await
                    },
                    None,
                ));
            }
        }
        Op::ready(Ok(()))
    }

    /// Sends what is pending to the backend now, in a flush that runs whether or not anyone
    /// awaits the returned `Op` (a completed `transaction()` and a `deleteAll()` are kept
    /// even if the object is aborted later in the turn). Later writes go in a later flush.
    pub(crate) fn flush_now(self: &Arc<Self>) -> Op<()> {
        let taken = {
            let mut flushes = self.flushes();
            if let Some(e) = &flushes.error {
                return Op::ready(Err(e.clone()));
            }
            match self.cache.take_flush() {
                Err(e) => return Op::ready(Err(e.into())),
                Ok(Some(flush)) => {
                    flushes.started += 1;
                    Some((flush, flushes.started))
                }
                // Nothing pending, or a flush in flight: the pending writes go in the next.
                Ok(None) => None,
            }
        };
        let engine = self.clone();
        match taken {
            Some((flush, seq)) => start_io(
                async move {
                    let result = flush.run(&*engine.backend).await;
                    engine.finish(seq, result.map(|_| ()).map_err(Error::from));
                    engine.wait(seq).await
                },
                None,
            ),
            None => {
                let sync = engine.sync();
                start_io(sync, None)
            }
        }
    }

    /// The stored alarm in milliseconds.
    pub(crate) fn alarm(&self) -> Op<Option<i64>> {
        map_op(self.read(vec![alarm_key()], GetOptions::default()), |mut v| {
            v.pop().flatten().map(|b| decode::<Option<i64>>(&b)).transpose().map(Option::flatten)
        })
    }

    /// Stores the alarm (`None` deletes it).
    pub(crate) fn set_alarm(&self, ms: Option<i64>, options: PutOptions) -> Result<()> {
        let key = alarm_key();
        match ms {
            Some(ms) => self.cache.put(&key, codec::encode(&Some(ms))?, write_opts(options))?,
            None => {
                let _ = self.cache.delete(&[key], write_opts(options))?;
            }
        }
        Ok(())
    }

    /// True while writes wait to be flushed or a flush is in flight.
    pub(crate) fn busy(&self) -> bool {
        self.cache.has_pending() || self.cache.is_flushing()
    }

    /// Ends a turn: returns the future that makes this turn's writes durable and whether any
    /// of them was confirmed, or `None` when the turn wrote nothing.
    pub(crate) fn end_turn(self: &Arc<Self>) -> Result<Option<(Op<()>, bool)>> {
        if !self.cache.has_pending() {
            return Ok(None);
        }
        let mut flushes = self.flushes();
        if let Some(e) = &flushes.error {
            return Err(e.clone());
        }
        match self.cache.take_flush()? {
            Some(flush) => {
                flushes.started += 1;
                let seq = flushes.started;
                let confirmed = flush.confirmed();
                drop(flushes);
                let engine = self.clone();
                Ok(Some((
                    Op::io(async move {
                        let result = flush.run(&*engine.backend).await;
                        engine.finish(seq, result.map(|_| ()).map_err(Error::from));
                        engine.wait(seq).await
                    }),
                    confirmed,
                )))
            }
            None => {
                // A flush is in flight: these writes go out in the next one.
                let target = flushes.started + 1;
                drop(flushes);
                Ok(Some((self.clone().drive(target), true)))
            }
        }
    }

    /// Resolves once everything written before the call is durable.
    pub(crate) fn sync(self: &Arc<Self>) -> Op<()> {
        let flushes = self.flushes();
        if let Some(e) = &flushes.error {
            return Op::ready(Err(e.clone()));
        }
        let target = if self.cache.has_pending() {
            flushes.started + 1
        } else if self.cache.is_flushing() {
            flushes.started
        } else {
            return Op::ready(Ok(()));
        };
        drop(flushes);
        self.clone().drive(target)
    }

    fn finish(&self, seq: u64, result: Result<()>) {
        {
            let mut flushes = self.flushes();
            match result {
                Ok(()) => flushes.done = flushes.done.max(seq),
                Err(e) => {
                    if flushes.error.is_none() {
                        flushes.error = Some(e);
                    }
                }
            }
        }
        self.changed.notify_waiters();
    }

    async fn wait(&self, target: u64) -> Result<()> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let flushes = self.flushes();
                if flushes.done >= target {
                    return Ok(());
                }
                if let Some(e) = &flushes.error {
                    return Err(e.clone());
                }
            }
            changed.await;
        }
    }

    /// Waits for flush `target`, taking and running flushes itself when none is in flight.
    fn drive(self: Arc<Self>, target: u64) -> Op<()> {
        Op::io(async move {
            loop {
                {
                    let flushes = self.flushes();
                    if flushes.done >= target {
                        return Ok(());
                    }
                    if let Some(e) = &flushes.error {
                        return Err(e.clone());
                    }
                }
                let taken = {
                    let mut flushes = self.flushes();
                    match self.cache.take_flush()? {
                        Some(flush) => {
                            flushes.started += 1;
                            Some((flush, flushes.started))
                        }
                        None => None,
                    }
                };
                match taken {
                    Some((flush, seq)) => {
                        let result = flush.run(&*self.backend).await;
                        self.finish(seq, result.map(|_| ()).map_err(Error::from));
                    }
                    None => {
                        let changed = self.changed.notified();
                        tokio::pin!(changed);
                        changed.as_mut().enable();
                        if self.cache.is_flushing() {
                            changed.await;
                        } else if !self.cache.has_pending() {
                            // Nothing in flight and nothing pending: the target's writes
                            // went out with an earlier flush.
                            let mut flushes = self.flushes();
                            flushes.done = flushes.done.max(target);
                        }
                    }
                }
            }
        })
    }

    /// Drops everything cached and pending (the object is being reset).
    pub(crate) fn reset(&self) {
        self.cache.reset();
    }

    /// Writes everything pending now, blocking the thread (used when the storage is dropped).
    pub(crate) fn flush_blocking(self: &Arc<Self>) {
        if !self.busy() {
            return;
        }
        let op = self.sync();
        let engine = self.clone();
        let run = move || {
            let _keep = engine;
            crate::block::block_on(op)
        };
        let result = match tokio::runtime::Handle::try_current() {
            // Blocking inside a runtime's worker is not allowed; use a plain thread.
            Ok(_) => std::thread::spawn(run).join().unwrap_or(Ok(())),
            Err(_) => run(),
        };
        if let Err(error) = result {
            tracing::warn!(%error, "flush at close failed");
        }
    }
}

/// Applies `f` to an `Op`'s value, keeping a ready `Op` ready.
pub(crate) fn map_op<A: Send + 'static, B: Send + 'static>(
    op: Op<A>,
    f: impl FnOnce(A) -> Result<B> + Send + 'static,
) -> Op<B> {
    match op.now() {
        Ok(result) => Op::ready(result.and_then(f)),
        Err(pending) => Op::io(async move { f(pending.await?) }),
    }
}
