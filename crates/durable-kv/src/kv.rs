//! `Kv`: the KV APIs over the `_cf_KV` table of an object's database.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use durable_sql::{Database, Internal};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec;
use crate::error::{Error, Result};
use crate::list::{KeyRange, ListOptions};
use crate::table::{self, CREATE, DELETE, GET, PUT};

/// Limits a KV API enforces on its own, above what SQLite bounds.
///
/// On the SQLite backend the runtime applies none of these (SQLite's 2 MB string/BLOB and
/// row limit bounds a key or value); the legacy KV-backed backend applies
/// [`KvLimits::legacy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KvLimits {
    /// Largest key in bytes.
    pub max_key_size: Option<usize>,
    /// Largest serialized value in bytes.
    pub max_value_size: Option<usize>,
    /// Most keys in one multi-key call.
    pub max_keys_per_call: Option<usize>,
}

impl KvLimits {
    /// No limits beyond SQLite's (the SQLite backend's behaviour).
    pub const SQLITE: KvLimits =
        KvLimits { max_key_size: None, max_value_size: None, max_keys_per_call: None };

    /// The legacy KV backend's limits: 2 KiB keys, 128 KiB values, 128 keys per call.
    pub fn legacy() -> KvLimits {
        KvLimits {
            max_key_size: Some(2048),
            max_value_size: Some(128 * 1024),
            max_keys_per_call: Some(128),
        }
    }

    /// Checks one key.
    pub fn check_key(&self, key: &str) -> Result<()> {
        match self.max_key_size {
            Some(limit) if key.len() > limit => Err(Error::KeyTooLarge { size: key.len(), limit }),
            _ => Ok(()),
        }
    }

    /// Checks one stored value, measured as the runtime measures it: the length of its V8
    /// structured-clone serialization ([`crate::Value::structured_clone_size`]), with the
    /// runtime's 34 bytes of slack over the limit (so a 131,072-byte ASCII string, 131,078
    /// bytes serialized, is accepted).
    pub fn check_value(&self, encoded: &[u8]) -> Result<()> {
        let Some(limit) = self.max_value_size else { return Ok(()) };
        let allowed = limit + VALUE_SLACK;
        // A value's serialized size is at most about twice its stored size: small ones need
        // no measuring.
        if encoded.len().saturating_mul(2).saturating_add(16) <= allowed {
            return Ok(());
        }
        let size = match codec::decode::<crate::Value>(encoded) {
            Ok(value) => value.structured_clone_size(),
            Err(_) => encoded.len(),
        };
        if size > allowed { Err(Error::ValueTooLarge { size, limit }) } else { Ok(()) }
    }

    /// Checks the number of keys in one call.
    pub fn check_count(&self, count: usize) -> Result<()> {
        match self.max_keys_per_call {
            Some(limit) if count > limit => Err(Error::TooManyKeys { count, limit }),
            _ => Ok(()),
        }
    }
}

/// Bytes a value's serialization may pass the value limit by: the runtime's slack for its
/// serializer's framing.
const VALUE_SLACK: usize = 34;

const PUT_MULTIPLE_SAVEPOINT: &str = "_cf_put_multiple_savepoint";
/// Rows a sync list iterator fetches at a time.
const LIST_BATCH: u64 = 256;

/// The KV APIs of one object, stored in its database's `_cf_KV` table.
///
/// Keys are strings ordered by their UTF-8 bytes. Values are any `Serialize` type (or
/// [`Value`](crate::Value) for untyped data), stored through [`codec`]. Writes join the
/// database's implicit transaction; reads see uncommitted writes. Clones share one list slot:
/// starting a `list` invalidates the previous sync list iterator, as in the runtime.
#[derive(Clone, Debug)]
pub struct Kv {
    db: Database,
    limits: KvLimits,
    shared: Arc<Shared>,
}

/// What the clones of a `Kv` share: the live iterator's slot, and counters that tell an
/// iterator the table changed under it.
#[derive(Debug, Default)]
struct Shared {
    /// Bumped by every `list`: only the newest sync iterator may go on.
    list_epoch: AtomicU64,
    /// Bumped by every write: a sync iterator reads again past its last key.
    writes: AtomicU64,
    /// Bumped by every `delete_all`: a sync iterator is canceled.
    resets: AtomicU64,
}

impl Kv {
    fn wrote(&self) {
        self.shared.writes.fetch_add(1, Ordering::Relaxed);
    }
}

impl Kv {
    /// KV over `db` with the SQLite backend's limits (none beyond SQLite's).
    pub fn new(db: Database) -> Kv {
        Kv::with_limits(db, KvLimits::SQLITE)
    }

    /// KV over `db` enforcing `limits`.
    pub fn with_limits(db: Database, limits: KvLimits) -> Kv {
        Kv { db, limits, shared: Arc::default() }
    }

    /// The database underneath.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The limits in force.
    pub fn limits(&self) -> KvLimits {
        self.limits
    }

    /// The stored bytes of `key`, if present.
    pub fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.limits.check_key(key)?;
        Ok(self.db.internal(|i| read_one(i, key.as_bytes(), <[u8]>::to_vec))?)
    }

    /// The value of `key`, if present.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.limits.check_key(key)?;
        // Decoded under the database lock, straight from SQLite's copy of the bytes.
        self.db.internal(|i| read_one(i, key.as_bytes(), codec::decode::<T>))?.transpose()
    }

    /// Stores `value` under `key`, replacing any earlier value.
    pub fn put<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<()> {
        let encoded = self.encode_checked(key, value)?;
        self.put_raw(key, &encoded)
    }

    /// Stores already-encoded bytes under `key`.
    pub fn put_raw(&self, key: &str, encoded: &[u8]) -> Result<()> {
        self.wrote();
        self.db.internal(|i| {
            i.begin_write()?;
            write_one(i, key.as_bytes(), encoded)
        })?;
        Ok(())
    }

    fn encode_checked<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<Vec<u8>> {
        self.limits.check_key(key)?;
        let encoded = codec::encode(value)?;
        self.limits.check_value(&encoded)?;
        Ok(encoded)
    }

    /// Deletes `key`; true if it existed.
    pub fn delete(&self, key: &str) -> Result<bool> {
        self.limits.check_key(key)?;
        self.wrote();
        Ok(self.db.internal(|i| {
            i.begin_write()?;
            delete_one(i, key.as_bytes())
        })?)
    }

    /// The values of `keys` that exist, ordered by key (UTF-8 bytes), duplicates once.
    pub fn get_multiple<T: DeserializeOwned>(&self, keys: &[&str]) -> Result<Vec<(String, T)>> {
        self.limits.check_count(keys.len())?;
        for key in keys {
            self.limits.check_key(key)?;
        }
        let mut sorted: Vec<&str> = keys.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let found = self.db.internal(|i| {
            let mut out = Vec::with_capacity(sorted.len());
            for key in &sorted {
                if let Some(bytes) = read_one(i, key.as_bytes(), <[u8]>::to_vec)? {
                    out.push(((*key).to_owned(), bytes));
                }
            }
            Ok(out)
        })?;
        found.into_iter().map(|(k, bytes)| Ok((k, codec::decode(&bytes)?))).collect()
    }

    /// Stores every entry atomically: all or none (a savepoint inside the implicit
    /// transaction, so other writes of the same transaction are untouched by a failure).
    pub fn put_multiple<T: Serialize>(&self, entries: &[(&str, T)]) -> Result<()> {
        self.limits.check_count(entries.len())?;
        let encoded: Vec<(&str, Vec<u8>)> = entries
            .iter()
            .map(|(k, v)| Ok((*k, self.encode_checked(k, v)?)))
            .collect::<Result<_>>()?;
        self.put_multiple_raw(&encoded)
    }

    /// Stores already-encoded entries atomically.
    pub fn put_multiple_raw(&self, entries: &[(&str, Vec<u8>)]) -> Result<()> {
        self.wrote();
        self.db.internal(|i| {
            i.begin_write()?;
            i.savepoint(PUT_MULTIPLE_SAVEPOINT)?;
            let written = entries.iter().try_for_each(|(k, v)| write_one(i, k.as_bytes(), v));
            match written {
                Ok(()) => i.release(PUT_MULTIPLE_SAVEPOINT),
                Err(e) => {
                    if !i.autocommit() {
                        i.rollback_to(PUT_MULTIPLE_SAVEPOINT)?;
                    }
                    Err(e)
                }
            }
        })?;
        Ok(())
    }

    /// Deletes `keys`; returns how many existed (a repeated key counts once).
    pub fn delete_multiple(&self, keys: &[&str]) -> Result<usize> {
        self.limits.check_count(keys.len())?;
        for key in keys {
            self.limits.check_key(key)?;
        }
        self.wrote();
        Ok(self.db.internal(|i| {
            i.begin_write()?;
            let mut count = 0;
            for key in keys {
                if delete_one(i, key.as_bytes())? {
                    count += 1;
                }
            }
            Ok(count)
        })?)
    }

    /// Every entry the options select, read at once, in the requested order.
    pub fn list<T: DeserializeOwned>(&self, options: &ListOptions) -> Result<Vec<(String, T)>> {
        let Some(range) = options.compile()? else { return Ok(Vec::new()) };
        self.shared.list_epoch.fetch_add(1, Ordering::Relaxed);
        let rows = self.db.internal(|i| read_range(i, &range, None, range.limit))?;
        rows.into_iter().map(|(k, bytes)| Ok((k, codec::decode(&bytes)?))).collect()
    }

    /// The entries the options select, as a lazy iterator (the sync API's `kv.list()`).
    ///
    /// The iteration is live, as the runtime's (a SQLite statement): writes and deletes made
    /// during it, ahead of the last key delivered, show in the rows that follow; a
    /// `delete_all()` ends it with the runtime's internal error ([`Error::ListCanceled`]).
    /// Only one such iterator is live per object: starting another `list` makes this one
    /// fail with [`Error::ListInvalidated`]. An iterator over a provably empty range does not
    /// take the slot.
    pub fn list_iter<T: DeserializeOwned>(&self, options: &ListOptions) -> Result<ListIter<T>> {
        let range = options.compile()?;
        let epoch = match &range {
            Some(_) => self.shared.list_epoch.fetch_add(1, Ordering::Relaxed) + 1,
            None => 0,
        };
        Ok(ListIter {
            kv: self.clone(),
            range,
            epoch,
            writes: self.shared.writes.load(Ordering::Relaxed),
            resets: self.shared.resets.load(Ordering::Relaxed),
            finished: false,
            buffer: std::collections::VecDeque::new(),
            after: None,
            delivered: 0,
            exhausted: false,
            _t: std::marker::PhantomData,
        })
    }

    /// Deletes the whole database: every key, every SQL table, everything; uncommitted
    /// writes are discarded. The object starts over empty.
    pub fn delete_all(&self) -> Result<()> {
        self.shared.resets.fetch_add(1, Ordering::Relaxed);
        self.wrote();
        Ok(self.db.reset()?)
    }
}

/// True when `e` says `_cf_KV` does not exist (yet, or any more).
fn missing_table(e: &durable_sql::Error) -> bool {
    matches!(e, durable_sql::Error::Sqlite(f) if f.message.starts_with("no such table: _cf_KV"))
}

/// `result`, or `absent` when it failed because `_cf_KV` does not exist: before the first
/// write, or after the transaction that created the table rolled back (a prepared statement
/// outlives the table; SQLite fails it at its next step, not at prepare time).
fn unless_table_missing<T>(result: durable_sql::Result<T>, absent: T) -> durable_sql::Result<T> {
    match result {
        Err(e) if missing_table(&e) => Ok(absent),
        other => other,
    }
}

/// Reads `key` and hands its stored bytes to `read` while they are still SQLite's (so a
/// typed get decodes without copying them out first). After a critical error, reads fail
/// with it, as the runtime's KV reads do (spec sqlite-storage 5.2).
fn read_one<R>(
    i: &mut Internal<'_>,
    key: &[u8],
    read: impl FnOnce(&[u8]) -> R,
) -> durable_sql::Result<Option<R>> {
    i.check_broken()?;
    let found = i.held(GET).and_then(|mut stmt| {
        stmt.bind_text(1, key)?;
        // A NULL value cannot be written through this API; it reads as empty bytes.
        Ok(stmt.step()?.then(|| read(stmt.column(0).unwrap_or_default())))
    });
    unless_table_missing(found, None)
}

fn write_one(i: &mut Internal<'_>, key: &[u8], value: &[u8]) -> durable_sql::Result<()> {
    let put = |i: &mut Internal<'_>| {
        let mut stmt = i.held(PUT)?;
        stmt.bind_text(1, key)?;
        stmt.bind_blob(2, value)?;
        stmt.step().map(drop)
    };
    match put(i) {
        Err(e) if missing_table(&e) => {
            i.connection().execute_batch(CREATE)?;
            put(i)
        }
        other => other,
    }
}

fn delete_one(i: &mut Internal<'_>, key: &[u8]) -> durable_sql::Result<bool> {
    let deleted = i.held(DELETE).and_then(|mut stmt| {
        stmt.bind_text(1, key)?;
        stmt.step()?;
        Ok(stmt.changes() > 0)
    });
    unless_table_missing(deleted, false)
}

/// Reads up to `limit` entries of `range`, continuing after `after` when given (failing, as
/// [`read_one`] does, after a critical error).
fn read_range(
    i: &mut Internal<'_>,
    range: &KeyRange,
    after: Option<&[u8]>,
    limit: Option<u64>,
) -> durable_sql::Result<Vec<(String, Vec<u8>)>> {
    i.check_broken()?;
    // In reverse order, continuing means going below the last key delivered.
    let (low, high, low_inclusive): (&[u8], Option<&[u8]>, bool) = match (after, range.reverse) {
        (Some(a), false) => (a, range.end.as_deref(), false),
        (Some(a), true) => (&range.start, Some(a), true),
        (None, _) => (&range.start, range.end.as_deref(), true),
    };
    let rows = table::read_range(i.connection(), low, low_inclusive, high, range.reverse, limit);
    unless_table_missing(rows.map_err(durable_sql::Error::from), Vec::new())
}

/// The lazy iterator of [`Kv::list_iter`]; yields `(key, value)` pairs.
pub struct ListIter<T> {
    kv: Kv,
    range: Option<KeyRange>,
    epoch: u64,
    buffer: std::collections::VecDeque<(String, Vec<u8>)>,
    after: Option<Vec<u8>>,
    delivered: u64,
    exhausted: bool,
    /// The write count the buffer was read at: any write since invalidates it.
    writes: u64,
    /// The `delete_all` count at the start: a wipe since ends the iteration.
    resets: u64,
    /// `None` was returned (or an error that ends it): nothing more, whatever is written.
    finished: bool,
    _t: std::marker::PhantomData<fn() -> T>,
}

/// A reference for an internal error's log line: the runtime's form, a short random-looking
/// lowercase id.
fn error_reference() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:016x}", h.finish())
}

impl<T: DeserializeOwned> Iterator for ListIter<T> {
    type Item = Result<(String, T)>;

    fn next(&mut self) -> Option<Self::Item> {
        let range = self.range.as_ref()?;
        if self.finished {
            return None;
        }
        // A canceled iteration fails every step from then on, as the runtime's does.
        if self.kv.shared.resets.load(Ordering::Relaxed) != self.resets {
            let reference = error_reference();
            // The runtime logs the cause under the reference it shows.
            tracing::warn!(
                %reference,
                "kv.list() iterator canceled: reset() (delete_all) was called on the database"
            );
            return Some(Err(Error::ListCanceled { reference }));
        }
        if self.kv.shared.list_epoch.load(Ordering::Relaxed) != self.epoch {
            return Some(Err(Error::ListInvalidated));
        }
        // Written since the buffer was read: read again past the last key delivered, so
        // writes ahead show and deletes ahead vanish.
        let writes = self.kv.shared.writes.load(Ordering::Relaxed);
        if writes != self.writes {
            self.writes = writes;
            self.buffer.clear();
            self.exhausted = false;
        }
        if self.exhausted && self.buffer.is_empty() {
            self.finished = true;
            return None;
        }
        if self.buffer.is_empty() {
            let remaining = range.limit.map(|l| l - self.delivered);
            let want = remaining.map_or(LIST_BATCH, |r| r.min(LIST_BATCH));
            if want == 0 {
                self.exhausted = true;
                self.finished = true;
                return None;
            }
            let batch =
                self.kv.db.internal(|i| read_range(i, range, self.after.as_deref(), Some(want)));
            match batch {
                Ok(rows) => {
                    if (rows.len() as u64) < want {
                        self.exhausted = true;
                    }
                    self.buffer.extend(rows);
                }
                Err(e) => return Some(Err(e.into())),
            }
        }
        let (key, bytes) = self.buffer.pop_front()?;
        self.after = Some(key.as_bytes().to_vec());
        self.delivered += 1;
        Some(codec::decode(&bytes).map(|v| (key, v)))
    }
}
