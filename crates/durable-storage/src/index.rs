//! The namespace's index, `_index.sqlite`: the pending alarm of every object (so a host
//! wakes only the objects whose alarm is due) and the names of objects stored under a
//! digest (see `names`).
//!
//! ```text
//! CREATE TABLE alarms (name TEXT PRIMARY KEY, at_ms INTEGER NOT NULL) WITHOUT ROWID
//! CREATE INDEX alarms_at ON alarms (at_ms)
//! CREATE TABLE long_names (stem TEXT PRIMARY KEY, name TEXT NOT NULL) WITHOUT ROWID
//! ```
//!
//! The index follows the objects, never the other way round: each open object's
//! [`AlarmListener`](durable_txn::AlarmListener) writes its committed alarm here after every
//! commit that changes it, and again whenever the object is opened. A crash between an
//! object's commit and the index's write can leave the index stale for that object until it
//! is next opened; [`Namespace::rebuild_index`](crate::Namespace::rebuild_index) opens every
//! object to repair that.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use durable_sql::Durability;
use durable_sql::rusqlite::{self, Connection, OptionalExtension, params};

use crate::error::{Error, Result};

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS alarms (name TEXT PRIMARY KEY, at_ms INTEGER NOT NULL) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS alarms_at ON alarms (at_ms);
    CREATE TABLE IF NOT EXISTS long_names (stem TEXT PRIMARY KEY, name TEXT NOT NULL) WITHOUT ROWID;
";

/// The index file's name inside the namespace's folder.
pub const INDEX_FILE: &str = "_index.sqlite";

pub(crate) struct Index {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl Index {
    /// Opens the index in `dir`. Its writes fsync (`FULL`) unless the namespace's objects
    /// never sync (`Durability::Off`): an alarm the index lost would not fire until
    /// `rebuild_index`, and its writes are rare.
    pub(crate) fn open(dir: &Path, durability: Durability) -> Result<Index> {
        let path = dir.join(INDEX_FILE);
        let err = |source| Error::Index { path: path.clone(), source };
        let conn = Connection::open(&path).map_err(err)?;
        let sync = if durability == Durability::Off { "OFF" } else { "FULL" };
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; \
             PRAGMA locking_mode = EXCLUSIVE; {SCHEMA}"
        ))
        .map_err(err)?;
        Ok(Index { path, conn: Mutex::new(conn) })
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn).map_err(|source| Error::Index { path: self.path.clone(), source })
    }

    /// Records `name`'s committed alarm; writes only when it differs from the indexed one.
    /// True when the index changed.
    pub(crate) fn set(&self, name: &str, alarm: Option<i64>) -> Result<bool> {
        self.with(|c| {
            let current: Option<i64> = c
                .prepare_cached("SELECT at_ms FROM alarms WHERE name = ?1")?
                .query_row([name], |r| r.get(0))
                .optional()?;
            if current == alarm {
                return Ok(false);
            }
            match alarm {
                Some(at) => c
                    .prepare_cached(
                        "INSERT INTO alarms (name, at_ms) VALUES (?1, ?2) \
                         ON CONFLICT (name) DO UPDATE SET at_ms = excluded.at_ms",
                    )?
                    .execute(params![name, at])?,
                None => c.prepare_cached("DELETE FROM alarms WHERE name = ?1")?.execute([name])?,
            };
            Ok(true)
        })
    }

    /// The indexed alarm of `name`.
    pub(crate) fn get(&self, name: &str) -> Result<Option<i64>> {
        self.with(|c| {
            c.prepare_cached("SELECT at_ms FROM alarms WHERE name = ?1")?
                .query_row([name], |r| r.get(0))
                .optional()
        })
    }

    /// Every object whose alarm is at or before `now_ms`, earliest first.
    pub(crate) fn due(&self, now_ms: i64) -> Result<Vec<(String, i64)>> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT name, at_ms FROM alarms WHERE at_ms <= ?1 ORDER BY at_ms, name",
            )?;
            let rows = stmt.query_map([now_ms], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
    }

    /// The earliest alarm after `now_ms`.
    pub(crate) fn next_after(&self, now_ms: i64) -> Result<Option<i64>> {
        self.with(|c| {
            c.prepare_cached("SELECT min(at_ms) FROM alarms WHERE at_ms > ?1")?
                .query_row([now_ms], |r| r.get(0))
        })
    }

    /// Every indexed alarm, by name.
    pub(crate) fn all(&self) -> Result<Vec<(String, i64)>> {
        self.with(|c| {
            let mut stmt = c.prepare_cached("SELECT name, at_ms FROM alarms ORDER BY name")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
    }

    /// Remembers the name stored under a digest stem.
    pub(crate) fn remember_long_name(&self, stem: &str, name: &str) -> Result<()> {
        self.with(|c| {
            c.prepare_cached("INSERT OR IGNORE INTO long_names (stem, name) VALUES (?1, ?2)")?
                .execute([stem, name])
                .map(drop)
        })
    }

    /// The name stored under a digest stem.
    pub(crate) fn long_name(&self, stem: &str) -> Result<Option<String>> {
        self.with(|c| {
            c.prepare_cached("SELECT name FROM long_names WHERE stem = ?1")?
                .query_row([stem], |r| r.get(0))
                .optional()
        })
    }
}
