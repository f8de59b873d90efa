//! The async `transaction(|txn| async { ... })` and its `Transaction` handle.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use durable_kv::ListOptions;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::alarm::AlarmTime;
use crate::error::{Error, Result};
use crate::legacy::{KvEngine, decode, decode_entry, map_op};
use crate::op::Op;
use crate::storage::{Engine, GetOptions, PutOptions, Storage};
use crate::turn;

/// A KV-backed transaction's private writes (`None`: deleted), over its parent's.
type Overlay = BTreeMap<String, Option<Vec<u8>>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Active,
    RolledBack,
    Finished,
}

/// One level of a running explicit transaction.
pub(crate) struct TxnShared {
    depth: usize,
    phase: Mutex<Phase>,
    /// KV-backed storage only: this level's writes, and the level it nests in.
    overlay: Mutex<Overlay>,
    parent: Option<Arc<TxnShared>>,
}

impl TxnShared {
    fn phase(&self) -> Phase {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, phase: Phase) {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = phase;
    }

    fn savepoint(&self) -> String {
        format!("_cf_savepoint_{}", self.depth)
    }

    fn overlay(&self) -> std::sync::MutexGuard<'_, Overlay> {
        self.overlay.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The write this level (or a level it nests in) made to `key`, if any.
    fn lookup(&self, key: &str) -> Option<Option<Vec<u8>>> {
        if let Some(v) = self.overlay().get(key) {
            return Some(v.clone());
        }
        self.parent.as_ref().and_then(|p| p.lookup(key))
    }

    /// Every write visible at this level, innermost winning.
    fn visible(&self) -> Overlay {
        let mut all = self.parent.as_ref().map(|p| p.visible()).unwrap_or_default();
        all.extend(self.overlay().iter().map(|(k, v)| (k.clone(), v.clone())));
        all
    }
}

/// The handle an async [`transaction`](Storage::transaction) closure receives.
///
/// On the SQLite backend every call on the object's storage made while the closure runs is
/// part of the transaction; the handle adds [`rollback`](Transaction::rollback) and the
/// runtime's checks (a rolled-back or finished transaction refuses further calls).
#[derive(Clone)]
pub struct Transaction {
    storage: Storage,
    shared: Arc<TxnShared>,
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("depth", &self.shared.depth)
            .field("phase", &self.shared.phase())
            .finish()
    }
}

impl Transaction {
    /// The innermost running transaction of KV-backed `storage`, if one is active: on the
    /// KV backend, storage calls made while a transaction runs belong to it, as they do on
    /// SQLite.
    pub(crate) fn active_kv(storage: &Storage) -> Option<Transaction> {
        if !matches!(storage.engine(), Engine::Kv(_)) {
            return None;
        }
        let shared = storage.state().txns.last().cloned()?;
        (shared.phase() == Phase::Active).then(|| Transaction { storage: storage.clone(), shared })
    }

    fn usable(&self, op: &'static str) -> Result<()> {
        match self.shared.phase() {
            Phase::Active => Ok(()),
            Phase::RolledBack => Err(Error::RolledBack { op }),
            Phase::Finished => Err(Error::AlreadyCommitted { op }),
        }
    }

    fn guarded<T>(&self, op: &'static str, call: impl FnOnce(&Storage) -> Op<T>) -> Op<T> {
        match self.usable(op) {
            Ok(()) => call(&self.storage),
            Err(e) => Op::ready(Err(e)),
        }
    }

    /// The KV-backed engine, when the storage is KV-backed.
    fn kv_engine(&self) -> Option<&Arc<KvEngine>> {
        match self.storage.engine() {
            Engine::Kv(engine) => Some(engine),
            Engine::Sqlite { .. } => None,
        }
    }

    fn overlay_write(&self, op: &'static str, key: &str, value: Option<Vec<u8>>) -> Op<()> {
        Op::ready(self.usable(op).map(|()| {
            self.shared.overlay().insert(key.to_string(), value);
        }))
    }

    /// The value of `key`, if present.
    pub fn get<T: DeserializeOwned + Send + 'static>(&self, key: &str) -> Op<Option<T>> {
        self.get_with(key, GetOptions::default())
    }

    /// [`get`](Transaction::get) with options.
    pub fn get_with<T: DeserializeOwned + Send + 'static>(
        &self,
        key: &str,
        options: GetOptions,
    ) -> Op<Option<T>> {
        let Some(engine) = self.kv_engine() else {
            return self.guarded("get()", |s| s.get_with(key, options));
        };
        if let Err(e) = self.usable("get()") {
            return Op::ready(Err(e));
        }
        match self.shared.lookup(key) {
            Some(written) => Op::ready(written.map(|b| decode(&b)).transpose()),
            None => engine.get(key, options),
        }
    }

    /// The present keys among `keys` with their values, sorted by key.
    pub fn get_multiple<T: DeserializeOwned + Send + 'static>(
        &self,
        keys: &[&str],
    ) -> Op<Vec<(String, T)>> {
        let Some(engine) = self.kv_engine() else {
            return self.guarded("get()", |s| s.get_multiple(keys));
        };
        if let Err(e) = self.usable("get()") {
            return Op::ready(Err(e));
        }
        let mut known = BTreeMap::new();
        let mut rest = Vec::new();
        for key in keys {
            match self.shared.lookup(key) {
                Some(v) => {
                    known.insert(key.to_string(), v);
                }
                None => rest.push(*key),
            }
        }
        let asked: Vec<String> = rest.iter().map(|k| k.to_string()).collect();
        map_op(engine.read_raw(&rest), move |stored| {
            let mut all: BTreeMap<Vec<u8>, Vec<u8>> = asked
                .into_iter()
                .zip(stored)
                .filter_map(|(k, v)| v.map(|v| (k.into_bytes(), v)))
                .collect();
            for (k, v) in known {
                if let Some(v) = v {
                    all.insert(k.into_bytes(), v);
                }
            }
            all.into_iter().map(decode_entry).collect()
        })
    }

    /// Stores `value` under `key`.
    pub fn put<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Op<()> {
        self.put_with(key, value, PutOptions::default())
    }

    /// [`put`](Transaction::put) with options.
    pub fn put_with<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        options: PutOptions,
    ) -> Op<()> {
        match self.kv_engine() {
            Some(engine) => match engine.encode_checked(key, value) {
                Ok(bytes) => self.overlay_write("put()", key, Some(bytes)),
                Err(e) => Op::ready(self.usable("put()").and(Err(e))),
            },
            None => self.guarded("put()", |s| s.put_with(key, value, options)),
        }
    }

    /// Stores every pair atomically.
    pub fn put_multiple<T: Serialize>(&self, entries: &[(&str, T)]) -> Op<()> {
        let Some(engine) = self.kv_engine() else {
            return self.guarded("put()", |s| s.put_multiple(entries));
        };
        // `undefined` values are skipped, as the runtime skips them.
        let encoded: Result<Vec<(String, Vec<u8>)>> = entries
            .iter()
            .filter_map(|(k, v)| {
                engine.encode_entry(k, v).map(|e| e.map(|bytes| (k.to_string(), bytes))).transpose()
            })
            .collect();
        Op::ready(self.usable("put()").and(encoded).map(|encoded| {
            let mut overlay = self.shared.overlay();
            for (k, v) in encoded {
                overlay.insert(k, Some(v));
            }
        }))
    }

    /// Deletes `key`; true if it existed.
    pub fn delete(&self, key: &str) -> Op<bool> {
        if self.kv_engine().is_none() {
            return self.guarded("delete()", |s| s.delete(key));
        }
        map_op(self.delete_multiple(&[key]), |n| Ok(n > 0))
    }

    /// Deletes every key of `keys`; the number that existed.
    pub fn delete_multiple(&self, keys: &[&str]) -> Op<usize> {
        let Some(engine) = self.kv_engine() else {
            return self.guarded("delete()", |s| s.delete_multiple(keys));
        };
        if let Err(e) = self.usable("delete()") {
            return Op::ready(Err(e));
        }
        let mut unique: Vec<&str> = keys.to_vec();
        unique.sort_unstable();
        unique.dedup();
        let mut count = 0;
        let mut unknown = Vec::new();
        for key in &unique {
            match self.shared.lookup(key) {
                Some(Some(_)) => count += 1,
                Some(None) => {}
                None => unknown.push(*key),
            }
        }
        let exists = engine.exists(&unknown);
        // The delete takes effect now; only the count may wait for the backend.
        let mut overlay = self.shared.overlay();
        for key in &unique {
            overlay.insert(key.to_string(), None);
        }
        drop(overlay);
        map_op(exists, move |found| Ok(count + found.iter().filter(|e| **e).count()))
    }

    /// The entries `options` selects.
    pub fn list<T: DeserializeOwned + Send + 'static>(
        &self,
        options: &ListOptions,
    ) -> Op<Vec<(String, T)>> {
        let Some(engine) = self.kv_engine() else {
            return self.guarded("list()", |s| s.list(options));
        };
        if let Err(e) = self.usable("list()") {
            return Op::ready(Err(e));
        }
        let range = match options.compile() {
            Ok(Some(range)) => range,
            Ok(None) => return Op::ready(Ok(Vec::new())),
            Err(e) => return Op::ready(Err(e.into())),
        };
        let written = self.shared.visible();
        let mut unlimited = options.clone();
        unlimited.limit = None;
        let alarm_key = engine.alarm_key();
        map_op(engine.list_raw(&unlimited, GetOptions::default()), move |stored| {
            let mut all: BTreeMap<Vec<u8>, Vec<u8>> =
                stored.into_iter().map(|(k, v)| (k.into_bytes(), v)).collect();
            for (k, v) in written {
                if k == alarm_key || !durable_backend::range_contains(&range, k.as_bytes()) {
                    continue;
                }
                match v {
                    Some(v) => all.insert(k.into_bytes(), v),
                    None => all.remove(k.as_bytes()),
                };
            }
            let limit = range.limit.map_or(usize::MAX, |l| l as usize);
            let rows: Box<dyn Iterator<Item = (Vec<u8>, Vec<u8>)>> = if range.reverse {
                Box::new(all.into_iter().rev())
            } else {
                Box::new(all.into_iter())
            };
            rows.take(limit).map(decode_entry).collect()
        })
    }

    /// Refused, as in the runtime: `deleteAll()` cannot run inside a transaction.
    pub fn delete_all(&self) -> Op<()> {
        Op::ready(Err(Error::DeleteAllInTransaction))
    }

    /// The alarm's time in milliseconds, if one is set.
    pub fn get_alarm(&self) -> Op<Option<i64>> {
        let Some(engine) = self.kv_engine() else {
            return self.guarded("getAlarm()", Storage::get_alarm);
        };
        if let Err(e) = self.usable("getAlarm()") {
            return Op::ready(Err(e));
        }
        match self.shared.lookup(&engine.alarm_key()) {
            Some(written) => Op::ready(
                written.map(|b| decode::<Option<i64>>(&b)).transpose().map(Option::flatten),
            ),
            None => engine.alarm(),
        }
    }

    /// Sets the alarm, as [`Storage::set_alarm`]: milliseconds since the epoch or a
    /// [`SystemTime`](std::time::SystemTime).
    pub fn set_alarm(&self, time: impl Into<AlarmTime>) -> Op<()> {
        let time_ms = time.into().as_millis();
        let Some(engine) = self.kv_engine() else {
            return self.guarded("setAlarm()", |s| s.set_alarm(time_ms));
        };
        if let Err(e) = self.usable("setAlarm()") {
            return Op::ready(Err(e));
        }
        if time_ms <= 0 {
            return Op::ready(Err(Error::AlarmTimeNotPositive));
        }
        let time_ms = time_ms.max(self.storage.clock().now_ms());
        match durable_kv::codec::encode(&Some(time_ms)) {
            Ok(bytes) => self.overlay_write("setAlarm()", &engine.alarm_key(), Some(bytes)),
            Err(e) => Op::ready(Err(e.into())),
        }
    }

    /// Deletes the alarm.
    pub fn delete_alarm(&self) -> Op<()> {
        match self.kv_engine() {
            Some(engine) => self.overlay_write("deleteAlarm()", &engine.alarm_key(), None),
            None => self.guarded("deleteAlarm()", Storage::delete_alarm),
        }
    }

    /// Discards everything this transaction wrote, at once, without failing it. Calling it
    /// again does nothing; afterwards every other method fails.
    pub fn rollback(&self) -> Result<()> {
        match self.shared.phase() {
            Phase::RolledBack => return Ok(()),
            Phase::Finished => return Err(Error::AlreadyCommitted { op: "rollback()" }),
            Phase::Active => {}
        }
        let innermost = self.storage.state().txns.last().map(|t| t.depth);
        if innermost != Some(self.shared.depth) {
            return Err(Error::NestedTransactionRunning);
        }
        self.shared.set(Phase::RolledBack);
        rollback_savepoint(&self.storage, &self.shared);
        Ok(())
    }

    /// Runs a nested transaction (a savepoint inside this one).
    pub async fn transaction<F, Fut, T, E>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(Transaction) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<Error>,
    {
        self.usable("transaction()")?;
        run(&self.storage, f).await
    }
}

fn rollback_savepoint(storage: &Storage, shared: &TxnShared) {
    shared.overlay().clear();
    let Ok(db) = storage.sql() else { return };
    let name = shared.savepoint();
    // After a critical error SQLite has rolled everything back already; the savepoint is
    // gone and there is nothing left to undo.
    let _ = db.internal(|i| i.rollback_to(&name));
}

/// Pops the transaction level and undoes it if its closure never finished (a panic or a
/// dropped future).
struct Level {
    storage: Storage,
    shared: Arc<TxnShared>,
}

impl Drop for Level {
    fn drop(&mut self) {
        if self.shared.phase() == Phase::Active {
            self.shared.set(Phase::Finished);
            rollback_savepoint(&self.storage, &self.shared);
            if self.shared.depth == 0
                && let Ok(db) = self.storage.sql()
            {
                let _ = db.rollback();
            }
        }
        let mut state = self.storage.state();
        if let Some(pos) = state.txns.iter().position(|t| Arc::ptr_eq(t, &self.shared)) {
            state.txns.truncate(pos);
        }
    }
}

pub(crate) async fn run<F, Fut, T, E>(storage: &Storage, f: F) -> Result<T, E>
where
    F: FnOnce(Transaction) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: From<Error>,
{
    storage.check_usable()?;
    let _gate = turn::critical_section()?;
    let (depth, parent) = {
        let state = storage.state();
        (state.txns.len(), state.txns.last().cloned())
    };
    let kv = match storage.engine() {
        Engine::Kv(engine) => Some(engine.clone()),
        Engine::Sqlite { .. } => None,
    };
    if kv.is_none() {
        if depth == 0 {
            // Writes made earlier in this turn commit on their own, before the transaction;
            // a failed commit resets the object, as at the end of a turn.
            if let Err(e) = storage.commit_now() {
                return Err(E::from(storage.commit_failed(e.into()).await));
            }
        }
        let db = storage.sql()?.clone();
        db.internal(|i| {
            i.begin_write()?;
            i.savepoint(&format!("_cf_savepoint_{depth}"))
        })
        .map_err(Error::from)?;
    }
    let shared = Arc::new(TxnShared {
        depth,
        phase: Mutex::new(Phase::Active),
        overlay: Mutex::new(Overlay::new()),
        parent,
    });
    storage.state().txns.push(shared.clone());
    let level = Level { storage: storage.clone(), shared: shared.clone() };
    // The closure holds the input gate: it gets the critical section's time limit.
    let closure = f(Transaction { storage: storage.clone(), shared: shared.clone() });
    let outcome = match crate::runtime::within_critical_timeout::<_, Error>(closure).await {
        Ok(outcome) => outcome,
        // The object is being reset: nothing after the call runs.
        Err(_timed_out) => return crate::runtime::reset_pending().await,
    };
    let phase = shared.phase();
    shared.set(Phase::Finished);
    let result = match (outcome, phase) {
        (outcome, Phase::RolledBack) => outcome,
        (Ok(value), _) => match commit_level(storage, &shared, kv.as_ref()) {
            Ok(()) => Ok(value),
            Err(e) => {
                rollback_savepoint(storage, &shared);
                Err(E::from(e))
            }
        },
        (Err(e), _) => {
            rollback_savepoint(storage, &shared);
            Err(e)
        }
    };
    drop(level);
    if depth == 0
        && kv.is_none()
        && let Err(e) = storage.commit_now()
    {
        return Err(E::from(storage.commit_failed(Error::from(e)).await));
    }
    result
}

/// Keeps a finished level's writes: releases its savepoint (SQLite), or hands its overlay
/// to its parent or, at the root, to the cache as one turn's writes (KV-backed).
fn commit_level(storage: &Storage, shared: &TxnShared, kv: Option<&Arc<KvEngine>>) -> Result<()> {
    match kv {
        None => Ok(storage.sql()?.internal(|i| i.release(&shared.savepoint()))?),
        Some(engine) => {
            let writes: Vec<_> = std::mem::take(&mut *shared.overlay()).into_iter().collect();
            match &shared.parent {
                Some(parent) => {
                    parent.overlay().extend(writes);
                    Ok(())
                }
                // The root's writes go to the backend now: a completed transaction is kept
                // even if the object is aborted later in the turn.
                None => engine.apply(writes).map(|()| drop(engine.flush_now())),
            }
        }
    }
}
