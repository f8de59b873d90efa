//! The alarm's place in the object's database: `_cf_METADATA`, row 1, nanoseconds since the
//! epoch (NULL once deleted), written inside the implicit transaction like any other write.

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

/// Milliseconds to the stored nanoseconds.
pub(crate) fn ms_to_ns(ms: i64) -> i64 {
    ms.saturating_mul(1_000_000)
}

/// Stored nanoseconds to milliseconds.
pub(crate) fn ns_to_ms(ns: i64) -> i64 {
    ns.div_euclid(1_000_000)
}
