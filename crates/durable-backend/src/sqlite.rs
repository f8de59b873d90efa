//! `SqliteBackend`: a durable SQLite file per object, holding the keys in `_cf_KV`.

use std::path::Path;

use async_trait::async_trait;
use durable_kv::table::{self, CREATE, DELETE, GET, PUT};
use durable_sql::rusqlite;
use durable_sql::{Database, Internal, Options};

use crate::backend::{KeyRange, KvBackend, WriteBatch};
use crate::error::Result;

const DELETE_ALL: &str = "DELETE FROM _cf_KV";

/// A [`KvBackend`] over one object's SQLite database (WAL mode), in the `_cf_KV` table that the
/// SQLite-backed KV API uses too (`docs/storage-format.md`).
///
/// Every writing call runs in its own transaction and commits before it returns, so a batch
/// is atomic and, with the default `synchronous = FULL`, durable when the call returns; a
/// failed batch is rolled back. The backend owns the database: nothing else may write to it
/// (another writer's open transaction would be committed with the next batch).
///
/// The calls are `async` for the trait, but do their SQLite work on the calling thread before
/// returning (one short transaction per call); under a multi-threaded runtime that blocks one
/// worker for the duration of the call, as any local disk write would.
#[derive(Debug, Clone)]
pub struct SqliteBackend {
    db: Database,
}

impl SqliteBackend {
    /// Opens (creating if needed) the database file at `path`, with the default options.
    /// The folder must exist.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteBackend> {
        SqliteBackend::new(Database::open(path, Options::default())?)
    }

    /// A private in-memory database (not durable; for tests).
    pub fn in_memory() -> Result<SqliteBackend> {
        SqliteBackend::new(Database::open_in_memory(Options::default())?)
    }

    /// A backend over `db`, creating the `_cf_KV` table if it is missing (committed at once).
    pub fn new(db: Database) -> Result<SqliteBackend> {
        db.internal(|i| {
            i.begin_write()?;
            i.connection().execute_batch(CREATE)?;
            Ok(())
        })?;
        db.commit()?;
        Ok(SqliteBackend { db })
    }

    /// The database underneath.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Runs `f` as one write transaction: committed when it succeeds, rolled back otherwise.
    fn transaction<T>(
        &self,
        f: impl FnOnce(&mut Internal<'_>) -> durable_sql::Result<T>,
    ) -> Result<T> {
        let done = self.db.internal(|i| {
            i.begin_write()?;
            f(i)
        });
        let value = match done {
            Ok(value) => value,
            Err(e) => {
                self.db.rollback()?;
                return Err(e.into());
            }
        };
        if let Err(e) = self.db.commit() {
            self.db.rollback()?;
            return Err(e.into());
        }
        Ok(value)
    }
}

fn read_range(
    conn: &rusqlite::Connection,
    range: &KeyRange,
) -> durable_sql::Result<Vec<(String, Vec<u8>)>> {
    if range.end.as_deref().is_some_and(|end| end <= range.start.as_slice()) {
        return Ok(Vec::new());
    }
    let end = range.end.as_deref();
    Ok(table::read_range(conn, &range.start, true, end, range.reverse, range.limit)?)
}

#[async_trait]
impl KvBackend for SqliteBackend {
    async fn get(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        // Held statements: prepared once per database, not looked up per call.
        Ok(self.db.internal(|i| {
            let mut out = Vec::with_capacity(keys.len());
            for key in keys {
                let mut stmt = i.held(GET)?;
                stmt.bind_text(1, key.as_bytes())?;
                out.push(stmt.step()?.then(|| stmt.column(0).unwrap_or_default().to_vec()));
            }
            Ok(out)
        })?)
    }

    async fn list(&self, range: &KeyRange) -> Result<Vec<(String, Vec<u8>)>> {
        Ok(self.db.internal(|i| read_range(i.connection(), range))?)
    }

    async fn delete(&self, keys: Vec<String>) -> Result<usize> {
        if keys.is_empty() {
            return Ok(0);
        }
        self.transaction(|i| {
            let mut count = 0;
            for key in &keys {
                count += delete_one(i, key)?;
            }
            Ok(count)
        })
    }

    async fn write(&self, batch: WriteBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.transaction(|i| {
            if batch.delete_all {
                i.connection().execute(DELETE_ALL, [])?;
            }
            for key in &batch.deletes {
                delete_one(i, key)?;
            }
            for (key, value) in &batch.puts {
                let mut stmt = i.held(PUT)?;
                stmt.bind_text(1, key.as_bytes())?;
                stmt.bind_blob(2, value)?;
                stmt.step()?;
            }
            Ok(())
        })
    }
}

/// Deletes one key with the held DELETE statement; 1 if it existed.
fn delete_one(i: &mut Internal<'_>, key: &str) -> durable_sql::Result<usize> {
    let mut stmt = i.held(DELETE)?;
    stmt.bind_text(1, key.as_bytes())?;
    stmt.step()?;
    Ok(usize::from(stmt.changes() > 0))
}
