//! durable-sql against raw rusqlite on the same patched SQLite and the same pragmas (WAL,
//! `synchronous=FULL`), each on a fresh temporary file:
//!
//! - `insert_100k`: 100,000 parameterised `INSERT INTO t(a, b) VALUES (?, ?)` (an integer and
//!   a short text). durable-sql runs them through `exec` inside one `transaction_sync`, then
//!   `commit`; rusqlite runs them in one transaction through a held prepared statement.
//! - `select_100k`: `SELECT a, b FROM t` over 100,000 rows, durable-sql with `to_array()`,
//!   rusqlite collecting `(i64, String)` rows into a `Vec`.
//!
//! Run with `cargo bench -p durable-sql --bench sql`.

use std::path::Path;

use divan::Bencher;
use durable_sql::rusqlite::{self, Connection};
use durable_sql::{Database, Options, params};

const ROWS: i64 = 100_000;
const TEXT: &str = "short text";
const INSERT: &str = "INSERT INTO t(a, b) VALUES (?, ?)";
const CREATE: &str = "CREATE TABLE t(id INTEGER PRIMARY KEY, a INTEGER, b TEXT)";
const SELECT: &str = "SELECT a, b FROM t";

fn main() {
    divan::main();
}

/// A fresh durable-sql database with the empty table, committed.
fn ours_empty() -> (tempfile::TempDir, Database) {
    let dir = tempfile::tempdir().expect("temporary folder");
    let db = Database::open(dir.path().join("ours.sqlite"), Options::default()).expect("open");
    db.exec(CREATE, &[]).expect("create");
    db.commit().expect("commit");
    (dir, db)
}

/// A fresh rusqlite connection with the pragmas durable-sql uses, and the empty table.
fn raw_empty() -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().expect("temporary folder");
    let conn = raw_open(&dir.path().join("raw.sqlite"));
    conn.execute_batch(CREATE).expect("create");
    (dir, conn)
}

fn raw_open(path: &Path) -> Connection {
    let conn = Connection::open(path).expect("open");
    let mode: String =
        conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).expect("journal mode");
    assert_eq!(mode, "wal");
    conn.pragma_update(None, "synchronous", "FULL").expect("synchronous");
    conn.pragma_update(None, "foreign_keys", "ON").expect("foreign keys");
    conn
}

fn ours_insert(db: &Database) {
    db.transaction_sync(|| {
        for i in 0..ROWS {
            db.exec(INSERT, &params![i, TEXT])?;
        }
        Ok::<_, durable_sql::Error>(())
    })
    .expect("inserts");
    db.commit().expect("commit");
}

fn raw_insert(conn: &mut Connection) {
    let tx = conn.transaction().expect("begin");
    {
        let mut stmt = tx.prepare(INSERT).expect("prepare");
        for i in 0..ROWS {
            stmt.execute(rusqlite::params![i, TEXT]).expect("insert");
        }
    }
    tx.commit().expect("commit");
}

#[divan::bench(sample_count = 10, sample_size = 1)]
fn insert_100k_ours(bencher: Bencher<'_, '_>) {
    bencher.with_inputs(ours_empty).bench_local_values(|(dir, db)| {
        ours_insert(&db);
        // Dropped after the measurement.
        (dir, db)
    });
}

#[divan::bench(sample_count = 10, sample_size = 1)]
fn insert_100k_raw(bencher: Bencher<'_, '_>) {
    bencher.with_inputs(raw_empty).bench_local_values(|(dir, mut conn)| {
        raw_insert(&mut conn);
        (dir, conn)
    });
}

#[divan::bench(sample_count = 20, sample_size = 1)]
fn select_100k_ours(bencher: Bencher<'_, '_>) {
    let (_dir, db) = ours_empty();
    ours_insert(&db);
    bencher.bench_local(|| {
        let rows =
            db.exec(SELECT, &[]).expect("select").to_array::<durable_sql::Row>().expect("rows");
        assert_eq!(rows.len(), ROWS as usize);
        rows
    });
}

#[divan::bench(sample_count = 20, sample_size = 1)]
fn select_100k_raw(bencher: Bencher<'_, '_>) {
    let (_dir, mut conn) = raw_empty();
    raw_insert(&mut conn);
    bencher.bench_local(|| {
        let mut stmt = conn.prepare_cached(SELECT).expect("prepare");
        let rows: Vec<(i64, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(rows.len(), ROWS as usize);
        rows
    });
}
