//! The async `transaction(|txn| async { ... })` and its `Transaction` handle.

use std::sync::{Arc, Mutex};

use durable_kv::ListOptions;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::op::Op;
use crate::storage::{GetOptions, PutOptions, Storage};
use crate::turn;

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

    /// The value of `key`, if present.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Op<Option<T>> {
        self.get_with(key, GetOptions::default())
    }

    /// [`get`](Transaction::get) with options.
    pub fn get_with<T: DeserializeOwned>(&self, key: &str, options: GetOptions) -> Op<Option<T>> {
        self.guarded("get()", |s| s.get_with(key, options))
    }

    /// The present keys among `keys` with their values, sorted by key.
    pub fn get_multiple<T: DeserializeOwned>(&self, keys: &[&str]) -> Op<Vec<(String, T)>> {
        self.guarded("get()", |s| s.get_multiple(keys))
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
        self.guarded("put()", |s| s.put_with(key, value, options))
    }

    /// Stores every pair atomically.
    pub fn put_multiple<T: Serialize>(&self, entries: &[(&str, T)]) -> Op<()> {
        self.guarded("put()", |s| s.put_multiple(entries))
    }

    /// Deletes `key`; true if it existed.
    pub fn delete(&self, key: &str) -> Op<bool> {
        self.guarded("delete()", |s| s.delete(key))
    }

    /// Deletes every key of `keys`; the number that existed.
    pub fn delete_multiple(&self, keys: &[&str]) -> Op<usize> {
        self.guarded("delete()", |s| s.delete_multiple(keys))
    }

    /// The entries `options` selects.
    pub fn list<T: DeserializeOwned>(&self, options: &ListOptions) -> Op<Vec<(String, T)>> {
        self.guarded("list()", |s| s.list(options))
    }

    /// Refused, as in the runtime: `deleteAll()` cannot run inside a transaction.
    pub fn delete_all(&self) -> Op<()> {
        Op::ready(Err(Error::DeleteAllInTransaction))
    }

    /// The alarm's time in milliseconds, if one is set.
    pub fn get_alarm(&self) -> Op<Option<i64>> {
        self.guarded("getAlarm()", Storage::get_alarm)
    }

    /// Sets the alarm.
    pub fn set_alarm(&self, time_ms: i64) -> Op<()> {
        self.guarded("setAlarm()", |s| s.set_alarm(time_ms))
    }

    /// Deletes the alarm.
    pub fn delete_alarm(&self) -> Op<()> {
        self.guarded("deleteAlarm()", Storage::delete_alarm)
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
    let db = storage.sql();
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
            if self.shared.depth == 0 {
                let _ = self.storage.sql().rollback();
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
    let depth = storage.state().txns.len();
    let db = storage.sql().clone();
    if depth == 0 {
        // Writes made earlier in this turn commit on their own, before the transaction.
        db.commit().map_err(Error::from)?;
    }
    let shared = Arc::new(TxnShared { depth, phase: Mutex::new(Phase::Active) });
    db.internal(|i| {
        i.begin_write()?;
        i.savepoint(&shared.savepoint())
    })
    .map_err(Error::from)?;
    storage.state().txns.push(shared.clone());
    let level = Level { storage: storage.clone(), shared: shared.clone() };
    let outcome = f(Transaction { storage: storage.clone(), shared: shared.clone() }).await;
    let phase = shared.phase();
    shared.set(Phase::Finished);
    let result = match (outcome, phase) {
        (outcome, Phase::RolledBack) => outcome,
        (Ok(value), _) => match db.internal(|i| i.release(&shared.savepoint())) {
            Ok(()) => Ok(value),
            Err(e) => {
                rollback_savepoint(storage, &shared);
                Err(E::from(Error::Sql(e)))
            }
        },
        (Err(e), _) => {
            rollback_savepoint(storage, &shared);
            Err(e)
        }
    };
    drop(level);
    if depth == 0
        && let Err(e) = db.commit()
    {
        let error = Error::from(e);
        turn::request_reset(error.clone());
        return Err(E::from(error));
    }
    result
}
