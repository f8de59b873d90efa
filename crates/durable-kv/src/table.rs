//! The `_cf_KV` table's layout and statements, shared by every writer of the table (this
//! crate's `Kv` and the legacy backend's SQLite file), so there is one definition of it.

use durable_sql::rusqlite::types::{ToSqlOutput, ValueRef};
use durable_sql::rusqlite::{self, ToSql};

/// Creates the table (the runtime's layout: BINARY-collated TEXT keys, BLOB values).
pub const CREATE: &str =
    "CREATE TABLE IF NOT EXISTS _cf_KV (key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID";
/// Reads one value.
pub const GET: &str = "SELECT value FROM _cf_KV WHERE key = ?";
/// Stores one value (insert or replace).
pub const PUT: &str = "INSERT INTO _cf_KV (key, value) VALUES (?, ?) \
                       ON CONFLICT DO UPDATE SET value = excluded.value";
/// Deletes one key.
pub const DELETE: &str = "DELETE FROM _cf_KV WHERE key = ?";

/// Binds raw key bytes as TEXT, so range bounds compare by bytes (BINARY collation) even when
/// they are not valid UTF-8 (a prefix's successor may not be).
pub struct TextBytes<'a>(pub &'a [u8]);

impl ToSql for TextBytes<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(ValueRef::Text(self.0)))
    }
}
