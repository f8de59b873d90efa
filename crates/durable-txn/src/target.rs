//! Where a KV or alarm call of [`Storage`](crate::Storage) goes: the object's SQLite
//! database, the KV-backed engine, or, while an async `transaction()` runs on KV-backed
//! storage, that transaction's overlay. `Storage` resolves the target once per call; each
//! operation is written here once, one arm per engine.

use durable_kv::{Kv, ListOptions, codec};
use durable_sql::Database;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::alarm::{self, AlarmCache};
use crate::error::{Error, Result};
use crate::legacy::{KvEngine, map_op};
use crate::op::Op;
use crate::storage::{GetOptions, PutOptions};
use crate::transaction::Transaction;

/// The engine a call runs on.
pub(crate) enum Target<'a> {
    /// SQLite-backed storage: calls complete at once.
    Sqlite { db: &'a Database, kv: &'a Kv, alarm: &'a AlarmCache },
    /// KV-backed storage, through the write-behind cache.
    Kv(&'a KvEngine),
    /// KV-backed storage inside an async transaction: its private overlay.
    KvTransaction(Transaction),
}

/// Runs a write on SQLite-backed storage, counted as unconfirmed (it does not hold the
/// output gate) when `options.allow_unconfirmed` says so.
fn write_as<T>(db: &Database, options: PutOptions, f: impl FnOnce() -> T) -> T {
    if options.allow_unconfirmed { db.unconfirmed(f) } else { f() }
}

impl Target<'_> {
    pub(crate) fn get<T: DeserializeOwned + Send + 'static>(
        &self,
        key: &str,
        options: GetOptions,
    ) -> Op<Option<T>> {
        match self {
            Target::Sqlite { kv, .. } => Op::ready(kv.get(key).map_err(Error::from)),
            Target::Kv(engine) => engine.get(key, options),
            Target::KvTransaction(txn) => txn.get_with(key, options),
        }
    }

    pub(crate) fn get_multiple<T: DeserializeOwned + Send + 'static>(
        &self,
        keys: &[&str],
        options: GetOptions,
    ) -> Op<Vec<(String, T)>> {
        match self {
            Target::Sqlite { kv, .. } => Op::ready(kv.get_multiple(keys).map_err(Error::from)),
            Target::Kv(engine) => engine.get_multiple(keys, options),
            Target::KvTransaction(txn) => txn.get_multiple(keys),
        }
    }

    pub(crate) fn put<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        options: PutOptions,
    ) -> Result<()> {
        match self {
            Target::Sqlite { db, kv, .. } => {
                kv.limits().check_key(key)?;
                let bytes = codec::encode(value)?;
                if codec::is_undefined(&bytes) {
                    return Err(Error::PutUndefined);
                }
                Ok(write_as(db, options, || kv.put_raw(key, &bytes))?)
            }
            Target::Kv(engine) => engine.put(key, value, options),
            Target::KvTransaction(txn) => txn.put_with(key, value, options).wait(),
        }
    }

    pub(crate) fn put_multiple<T: Serialize>(
        &self,
        entries: &[(&str, T)],
        options: PutOptions,
    ) -> Result<()> {
        match self {
            Target::Sqlite { db, kv, .. } => {
                kv.limits().check_count(entries.len())?;
                let mut encoded = Vec::with_capacity(entries.len());
                for (key, value) in entries {
                    kv.limits().check_key(key)?;
                    let bytes = codec::encode(value)?;
                    // `undefined` values are skipped, as the runtime skips them.
                    if !codec::is_undefined(&bytes) {
                        encoded.push((*key, bytes));
                    }
                }
                Ok(write_as(db, options, || kv.put_multiple_raw(&encoded))?)
            }
            Target::Kv(engine) => engine.put_multiple(entries, options),
            Target::KvTransaction(txn) => txn.put_multiple(entries).wait(),
        }
    }

    pub(crate) fn delete(&self, key: &str, options: PutOptions) -> Op<bool> {
        match self {
            Target::Sqlite { db, kv, .. } => {
                Op::ready(write_as(db, options, || kv.delete(key)).map_err(Error::from))
            }
            Target::Kv(engine) => map_op(engine.delete(&[key], options), |n| Ok(n > 0)),
            Target::KvTransaction(txn) => txn.delete(key),
        }
    }

    pub(crate) fn delete_multiple(&self, keys: &[&str], options: PutOptions) -> Op<usize> {
        match self {
            Target::Sqlite { db, kv, .. } => {
                Op::ready(write_as(db, options, || kv.delete_multiple(keys)).map_err(Error::from))
            }
            Target::Kv(engine) => engine.delete(keys, options),
            Target::KvTransaction(txn) => txn.delete_multiple(keys),
        }
    }

    pub(crate) fn list<T: DeserializeOwned + Send + 'static>(
        &self,
        options: &ListOptions,
        get: GetOptions,
    ) -> Op<Vec<(String, T)>> {
        if let Target::Sqlite { kv, .. } = self {
            return Op::ready(kv.list(options).map_err(Error::from));
        }
        // The KV-backed engine checks the options before any I/O, as the runtime does.
        if let Err(e) = options.compile() {
            return Op::ready(Err(e.into()));
        }
        match self {
            Target::Kv(engine) => engine.list(options, get),
            Target::KvTransaction(txn) => txn.list(options),
            Target::Sqlite { .. } => unreachable!("answered above"),
        }
    }

    /// The stored alarm in milliseconds (ignoring a running handler).
    pub(crate) fn alarm(&self) -> Op<Option<i64>> {
        match self {
            Target::Sqlite { db, alarm, .. } => {
                Op::ready(alarm.read(db).map(|ns| ns.map(alarm::ns_to_ms)))
            }
            Target::Kv(engine) => engine.alarm(),
            Target::KvTransaction(txn) => txn.get_alarm(),
        }
    }

    /// Sets (`Some`, milliseconds, already clamped to now) or deletes (`None`) the alarm. On
    /// SQLite an unchanged alarm writes nothing.
    pub(crate) fn set_alarm(&self, time_ms: Option<i64>, options: PutOptions) -> Result<()> {
        match self {
            Target::Sqlite { db, alarm, .. } => {
                let ns = time_ms.map(alarm::ms_to_ns);
                if alarm.read(db)? == ns {
                    return Ok(());
                }
                write_as(db, options, || alarm.write(db, ns))
            }
            Target::Kv(engine) => engine.set_alarm(time_ms, options),
            Target::KvTransaction(txn) => match time_ms {
                Some(t) => txn.set_alarm(t).wait(),
                None => txn.delete_alarm().wait(),
            },
        }
    }
}
