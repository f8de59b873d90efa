//! The alarm's place in the object's database: `_cf_METADATA`, row 1, nanoseconds since the
//! epoch (NULL once deleted), written inside the implicit transaction like any other write;
//! and [`AlarmTime`], what `set_alarm` takes.

use std::time::{SystemTime, UNIX_EPOCH};

use durable_sql::Database;
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

/// The stored alarm in nanoseconds, if one is set.
pub(crate) fn read(db: &Database) -> Result<Option<i64>> {
    Ok(db.internal(|i| {
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
    })?)
}

/// Stores the alarm (`None` clears it by writing NULL, as the runtime does).
pub(crate) fn write(db: &Database, ns: Option<i64>) -> Result<()> {
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

/// Milliseconds to the stored nanoseconds.
pub(crate) fn ms_to_ns(ms: i64) -> i64 {
    ms.saturating_mul(1_000_000)
}

/// Stored nanoseconds to milliseconds.
pub(crate) fn ns_to_ms(ns: i64) -> i64 {
    ns.div_euclid(1_000_000)
}
