//! The `_cf_KV` table's layout and statements, shared by every writer of the table (this
//! crate's `Kv` and the legacy backend's SQLite file), so there is one definition of it.

use durable_sql::rusqlite::types::{ToSqlOutput, ValueRef};
use durable_sql::rusqlite::{self, ToSql};

/// Creates the table (the runtime's layout: BINARY-collated TEXT keys, BLOB values), with
/// the runtime's text byte for byte, as `sqlite_master` shows it to user SQL.
pub const CREATE: &str = "CREATE TABLE IF NOT EXISTS _cf_KV (
        key TEXT PRIMARY KEY,
        value BLOB
      ) WITHOUT ROWID";
/// Reads one value.
pub const GET: &str = "SELECT value FROM _cf_KV WHERE key = ?";
/// Stores one value (insert or replace).
pub const PUT: &str = "INSERT INTO _cf_KV (key, value) VALUES (?, ?) \
                       ON CONFLICT DO UPDATE SET value = excluded.value";
/// Deletes one key.
pub const DELETE: &str = "DELETE FROM _cf_KV WHERE key = ?";

/// The keys and values of one slice of the table, in key order (descending with `reverse`):
/// keys from `low` (included or not), below `high` when given, at most `limit` of them. The
/// one range query of the table, for the sync KV API's lists and the legacy backend's.
pub fn read_range(
    conn: &rusqlite::Connection,
    low: &[u8],
    low_inclusive: bool,
    high: Option<&[u8]>,
    reverse: bool,
    limit: Option<u64>,
) -> rusqlite::Result<Vec<(String, Vec<u8>)>> {
    // The limit is a parameter (-1: none), so the shapes of this query are few and stay in
    // the connection's statement cache beside the point queries.
    let sql = format!(
        "SELECT key, value FROM _cf_KV WHERE key {} ?1{} ORDER BY key{} LIMIT ?3",
        if low_inclusive { ">=" } else { ">" },
        if high.is_some() { " AND key < ?2" } else { "" },
        if reverse { " DESC" } else { "" },
    );
    let limit = limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
    // Keys are only ever written from Rust strings, so they read back as valid UTF-8.
    let map = |row: &rusqlite::Row<'_>| Ok((row.get::<_, String>(0)?, row.get::<_, Vec<u8>>(1)?));
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = match high {
        Some(h) => stmt.query_map((TextBytes(low), TextBytes(h), limit), map)?,
        None => stmt.query_map((TextBytes(low), rusqlite::types::Null, limit), map)?,
    };
    rows.collect()
}

/// Binds raw key bytes as TEXT, so range bounds compare by bytes (BINARY collation) even when
/// they are not valid UTF-8 (a prefix's successor may not be).
pub struct TextBytes<'a>(pub &'a [u8]);

impl ToSql for TextBytes<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(ValueRef::Text(self.0)))
    }
}
