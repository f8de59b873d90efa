//! The alarm's place in the object's database: `_cf_METADATA`, row 1, nanoseconds since the
//! epoch (NULL once deleted), written inside the implicit transaction like any other write;
//! [`AlarmTime`], what `set_alarm` takes; and [`AlarmCache`], which remembers the committed
//! alarm so that reading it after every commit and every turn costs no SQL.
//!
//! This module is the only writer of `_cf_METADATA`: user SQL cannot reach `_cf_` tables
//! (the authorizer, `durable_sql::auth`), and nothing else in the project writes it. So the
//! stored alarm changes only through [`AlarmCache::write`], or when the whole database is
//! replaced ([`Database::reset`], which the commit pipeline reports). Rollbacks undo only
//! uncommitted writes, and every write of the alarm forgets the cached value until it is
//! read again with no transaction open.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use durable_sql::{Database, Internal};
use rusqlite::OptionalExtension;

use crate::error::Result;
use durable_sql::rusqlite;

const CREATE: &str = "CREATE TABLE IF NOT EXISTS _cf_METADATA (
        key INTEGER PRIMARY KEY,
        value BLOB
      )";
const READ: &str = "SELECT value FROM _cf_METADATA WHERE key = 1";
const WRITE: &str = "INSERT INTO _cf_METADATA (key, value) VALUES (1, ?1) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value";

/// The stored alarm in nanoseconds, if one is set, as the open transaction (if any) sees it.
fn read(i: &Internal<'_>) -> durable_sql::Result<Option<i64>> {
    let conn = i.connection();
    let mut stmt = match conn.prepare_cached(READ) {
        Ok(stmt) => stmt,
        Err(e) if e.to_string().contains("no such table") => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    // A cached statement outlives the table when the transaction that created it rolled
    // back; SQLite reports that at the step.
    match stmt.query_row([], |row| row.get::<_, Option<i64>>(0)).optional() {
        Ok(value) => Ok(value.flatten()),
        Err(e) if e.to_string().contains("no such table") => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Stores the alarm (`None` clears it by writing NULL, as the runtime does).
fn write(db: &Database, ns: Option<i64>) -> Result<()> {
    Ok(db.internal(|i| {
        i.begin_write()?;
        let conn = i.connection();
        conn.prepare_cached(CREATE)?.execute([])?;
        conn.prepare_cached(WRITE)?.execute([ns])?;
        Ok(())
    })?)
}

/// When an alarm should fire, as [`Storage::set_alarm`](crate::Storage::set_alarm) takes it:
/// milliseconds since the Unix epoch (an `i64`, JavaScript's `setAlarm(Date.now() + 1000)`)
/// or a [`SystemTime`] (`setAlarm(new Date(...))`). A `SystemTime` is cut to whole
/// milliseconds, as a JavaScript `Date` is; one before the epoch is a time `<= 0`, which
/// `set_alarm` refuses with the runtime's message.
///
/// ```
/// use std::time::{Duration, SystemTime, UNIX_EPOCH};
/// use durable_txn::AlarmTime;
///
/// let at = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_999);
/// assert_eq!(AlarmTime::from(at), AlarmTime::from(1_700_000_000_123_i64));
/// assert_eq!(AlarmTime::from(at).as_millis(), 1_700_000_000_123);
/// assert!(AlarmTime::from(SystemTime::now()).as_millis() > 1_700_000_000_000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AlarmTime {
    ms: i64,
}

impl AlarmTime {
    /// Milliseconds since the Unix epoch.
    pub const fn from_millis(ms: i64) -> AlarmTime {
        AlarmTime { ms }
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> i64 {
        self.ms
    }
}

impl From<i64> for AlarmTime {
    fn from(ms: i64) -> AlarmTime {
        AlarmTime { ms }
    }
}

impl From<SystemTime> for AlarmTime {
    fn from(time: SystemTime) -> AlarmTime {
        let ms = match time.duration_since(UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
            // Before the epoch: negative, rounded away from zero as `Date` does.
            Err(before) => {
                let d = before.duration();
                let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
                -(ms + i64::from(d.subsec_nanos() % 1_000_000 != 0))
            }
        };
        AlarmTime { ms }
    }
}

/// The committed alarm of a SQLite-backed storage, remembered between reads.
///
/// Reading the alarm is a SQL statement, and on an object that never set one a failing
/// prepare (no `_cf_METADATA`), which SQLite does not cache: a full parse. The turn layer
/// reads the alarm after every commit (for the alarm listener) and after every turn (for the
/// alarm timer), so it keeps the answer here:
///
/// - a value is learned only from a read made with no transaction open, so it is the
///   committed alarm, which no rollback can change;
/// - every alarm write forgets it (after the write, so that a read racing with the write
///   either sees the write's transaction open or is discarded by the epoch);
/// - a [`Database::reset`] (`delete_all`, from any caller) forgets it: the value carries the
///   count of resets it was read under, which the commit pipeline's `Reset` event bumps
///   while the database is locked (`durability.rs`).
pub(crate) struct AlarmCache {
    known: Mutex<Known>,
    /// Resets of the database so far, as the commit pipeline reports them.
    resets: Arc<AtomicU64>,
}

#[derive(Default)]
struct Known {
    /// The committed alarm in nanoseconds, and the reset count it was read under.
    value: Option<(Option<i64>, u64)>,
    /// Bumped by every write: a read started before a write never fills the cache after it.
    epoch: u64,
}

impl AlarmCache {
    /// An empty cache that trusts a value only while `resets` stays where it was.
    pub(crate) fn new(resets: Arc<AtomicU64>) -> AlarmCache {
        AlarmCache { known: Mutex::new(Known::default()), resets }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached committed alarm, if it is still valid.
    fn cached(&self) -> std::result::Result<Option<i64>, u64> {
        let known = self.known();
        match known.value {
            Some((ns, resets)) if resets == self.resets.load(Ordering::Acquire) => Ok(ns),
            _ => Err(known.epoch),
        }
    }

    /// Reads the alarm from the database; remembers it when no transaction is open. Returns
    /// the alarm and whether it is the committed one.
    fn read_through(&self, db: &Database, epoch: u64) -> Result<(Option<i64>, bool)> {
        let (ns, resets, committed) = db.internal(|i| {
            let ns = read(i)?;
            Ok((ns, self.resets.load(Ordering::Acquire), i.autocommit()))
        })?;
        if committed {
            let mut known = self.known();
            if known.epoch == epoch {
                known.value = Some((ns, resets));
            }
        }
        Ok((ns, committed))
    }

    /// The stored alarm in nanoseconds as the open transaction (if any) sees it.
    pub(crate) fn read(&self, db: &Database) -> Result<Option<i64>> {
        match self.cached() {
            Ok(ns) => Ok(ns),
            Err(epoch) => Ok(self.read_through(db, epoch)?.0),
        }
    }

    /// The committed alarm in nanoseconds; `None` when it cannot be told apart from an
    /// uncommitted write (a transaction that wrote the alarm is open).
    pub(crate) fn committed(&self, db: &Database) -> Result<Option<Option<i64>>> {
        match self.cached() {
            Ok(ns) => Ok(Some(ns)),
            Err(epoch) => {
                let (ns, committed) = self.read_through(db, epoch)?;
                Ok(committed.then_some(ns))
            }
        }
    }

    /// Stores the alarm (`None` clears it) and forgets the cached value.
    pub(crate) fn write(&self, db: &Database, ns: Option<i64>) -> Result<()> {
        let result = write(db, ns);
        let mut known = self.known();
        known.value = None;
        known.epoch = known.epoch.wrapping_add(1);
        result
    }
}

/// Milliseconds to the stored nanoseconds.
pub(crate) fn ms_to_ns(ms: i64) -> i64 {
    ms.saturating_mul(1_000_000)
}

/// Stored nanoseconds to milliseconds.
pub(crate) fn ns_to_ms(ns: i64) -> i64 {
    ns.div_euclid(1_000_000)
}
