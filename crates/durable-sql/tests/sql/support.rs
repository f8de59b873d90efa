//! Test helpers: fresh databases in temporary folders, a compact text rendering of rows, and
//! `check`-style assertions that compare a query's rows or error with an expected string.

use std::fmt::Write as _;
use std::ops::Deref;
use std::path::PathBuf;

use durable_sql::{Cursor, Database, Error, Options, SqlValue};

/// The runtime's message for transaction statements in user SQL (spec section 3.3).
pub const TRANSACTION_MESSAGE: &str = "To execute a transaction, please use the \
     state.storage.transaction() or state.storage.transactionSync() APIs instead of the SQL \
     BEGIN TRANSACTION or SAVEPOINT statements. The JavaScript API is safer because it will \
     automatically roll back on exceptions, and because it interacts correctly with Durable \
     Objects' automatic atomic write coalescing.";

/// SQLite's generic authorizer denial, as the runtime reports it.
pub const NOT_AUTHORIZED: &str = "error: not authorized: SQLITE_AUTH";

/// A database file in its own temporary folder, removed when the value is dropped.
pub struct TestDb {
    db: Database,
    dir: tempfile::TempDir,
    options: Options,
}

impl Deref for TestDb {
    type Target = Database;

    fn deref(&self) -> &Database {
        &self.db
    }
}

impl TestDb {
    /// The database file.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("object.sqlite")
    }

    /// Closes the handle (which commits) and opens the file again, as a restarted object would.
    pub fn reopen(self) -> TestDb {
        let TestDb { db, dir, options } = self;
        db.close().expect("close commits");
        let db = Database::open(dir.path().join("object.sqlite"), options.clone()).expect("reopen");
        TestDb { db, dir, options }
    }

    /// The temporary folder holding the file.
    pub fn dir_path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// A cheap second handle on the same connection.
    pub fn handle(&self) -> Database {
        self.db.clone()
    }
}

/// A fresh file-backed database with the default (production) options.
pub fn db() -> TestDb {
    db_with(Options::default())
}

/// A fresh file-backed database with `options`.
pub fn db_with(options: Options) -> TestDb {
    let dir = tempfile::tempdir().expect("temporary folder");
    let db = Database::open(dir.path().join("object.sqlite"), options.clone()).expect("open");
    TestDb { db, dir, options }
}

/// Renders one value: `NULL`, `42`, `1.5` (reals always show a `.` or an exponent, so `3.0`
/// is told apart from `3`), `'text'` (quotes doubled), `x'00ff'`.
pub fn value(v: &SqlValue) -> String {
    match v {
        SqlValue::Null => "NULL".to_owned(),
        SqlValue::Integer(i) => i.to_string(),
        SqlValue::Real(f) => format!("{f:?}"),
        SqlValue::Text(s) => format!("'{}'", s.replace('\'', "''")),
        SqlValue::Blob(b) => {
            let mut out = String::from("x'");
            for byte in b {
                write!(out, "{byte:02x}").unwrap();
            }
            out.push('\'');
            out
        }
    }
}

/// Renders rows as `[[1, 'a'], [2, NULL]]`.
pub fn render(rows: &[Vec<SqlValue>]) -> String {
    let rows: Vec<String> = rows
        .iter()
        .map(|r| format!("[{}]", r.iter().map(value).collect::<Vec<_>>().join(", ")))
        .collect();
    format!("[{}]", rows.join(", "))
}

/// Renders a result: the rows, or `error: <message>`.
pub fn outcome(result: Result<Vec<Vec<SqlValue>>, Error>) -> String {
    match result {
        Ok(rows) => render(&rows),
        Err(e) => format!("error: {e}"),
    }
}

/// Runs `sql` with `params` and renders all its rows (or its error, from `exec` or from
/// reading the rows).
pub fn query(db: &Database, sql: &str, params: &[SqlValue]) -> String {
    outcome(db.exec(sql, params).and_then(|mut c| c.to_raw_array()))
}

/// Asserts that `sql` (no parameters) gives `expect`: rows as [`render`] writes them, or
/// `error: <message>`.
#[track_caller]
pub fn check(db: &Database, sql: &str, expect: &str) {
    check_params(db, sql, &[], expect);
}

/// [`check`] with parameters.
#[track_caller]
pub fn check_params(db: &Database, sql: &str, params: &[SqlValue], expect: &str) {
    let got = query(db, sql, params);
    assert_eq!(got, expect, "\n  query: {}", shorten(sql));
}

/// Runs every `(sql, expect)` pair in order, reporting all mismatches at once.
#[track_caller]
pub fn check_all(db: &Database, cases: &[(&str, &str)]) {
    let mut failures = String::new();
    for (sql, expect) in cases {
        let got = query(db, sql, &[]);
        if got != *expect {
            writeln!(
                failures,
                "  query:    {}\n  expected: {expect}\n  got:      {got}",
                shorten(sql)
            )
            .unwrap();
        }
    }
    assert!(failures.is_empty(), "mismatches:\n{failures}");
}

/// Asserts that `sql` fails, and returns the error.
#[track_caller]
pub fn error(db: &Database, sql: &str, params: &[SqlValue]) -> Error {
    match db.exec(sql, params).and_then(|mut c| c.to_raw_array()) {
        Ok(rows) => panic!("expected an error from {}, got rows {}", shorten(sql), render(&rows)),
        Err(e) => e,
    }
}

/// Runs `sql`, ignoring its rows; panics with the error.
#[track_caller]
pub fn run(db: &Database, sql: &str) {
    if let Err(e) = db.exec(sql, &[]).and_then(|mut c| c.to_raw_array()) {
        panic!("{}: {e}", shorten(sql));
    }
}

/// How a test consumes a cursor before reading its counters (the oracle's `mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Read the counters without consuming anything.
    None,
    /// `to_array()`.
    ToArray,
    /// `raw()` to the end.
    Raw,
    /// One call of `next()`.
    Next,
    /// Iterate to the end.
    Iterate,
}

/// What one `exec` gave: column names, rows consumed per the mode, and the counters read
/// after consuming.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// `Cursor::column_names`.
    pub columns: Vec<String>,
    /// The rows the mode consumed.
    pub rows: Vec<Vec<SqlValue>>,
    /// `Cursor::rows_read` after consuming.
    pub read: u64,
    /// `Cursor::rows_written` after consuming.
    pub written: u64,
}

/// Consumes `cursor` per `mode`.
pub fn consume(cursor: &mut Cursor, mode: Mode) -> Result<Vec<Vec<SqlValue>>, Error> {
    Ok(match mode {
        Mode::None => Vec::new(),
        Mode::ToArray => {
            cursor.to_array::<durable_sql::Row>()?.into_iter().map(|r| r.into_values()).collect()
        }
        Mode::Raw => cursor.raw().collect::<Result<_, _>>()?,
        Mode::Next => cursor.next().transpose()?.map(|r| r.into_values()).into_iter().collect(),
        Mode::Iterate => {
            let mut rows = Vec::new();
            for row in cursor {
                rows.push(row?.into_values());
            }
            rows
        }
    })
}

/// Runs `sql` and consumes its cursor per `mode`.
pub fn exec_mode(
    db: &Database,
    sql: &str,
    params: &[SqlValue],
    mode: Mode,
) -> Result<Outcome, Error> {
    let mut cursor = db.exec(sql, params)?;
    let rows = consume(&mut cursor, mode)?;
    Ok(Outcome {
        columns: cursor.column_names().to_vec(),
        rows,
        read: cursor.rows_read(),
        written: cursor.rows_written(),
    })
}

/// Creates the project's KV table through the trusted seam, as the KV layer does, with one
/// key in it (the oracle's cases make `_cf_KV` exist with a `put` first).
pub fn create_kv_table(db: &Database) {
    db.internal(|i| {
        i.begin_write()?;
        i.connection().execute_batch(
            "CREATE TABLE IF NOT EXISTS _cf_KV (key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID;
             INSERT INTO _cf_KV VALUES ('k', x'01');",
        )?;
        Ok(())
    })
    .expect("internal SQL creates _cf_KV");
}

/// The `_cf_KV` rows, read through the trusted seam.
pub fn kv_rows(db: &Database) -> Vec<(String, Vec<u8>)> {
    db.internal(|i| {
        let mut stmt = i.connection().prepare("SELECT key, value FROM _cf_KV ORDER BY key")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    })
    .expect("internal SQL reads _cf_KV")
}

/// Checks that every statement in `sqls` is refused with `not authorized: SQLITE_AUTH`,
/// reporting every one that is not.
#[track_caller]
pub fn check_refused(db: &Database, sqls: &[&str]) {
    let cases: Vec<(&str, &str)> = sqls.iter().map(|sql| (*sql, NOT_AUTHORIZED)).collect();
    check_all(db, &cases);
}

/// The spec's join fixture (item 22): `abc` = (1,2,3),(4,5,6); `cde` = (7,8,9),(1,2,3).
pub const ABC_CDE: &str = "CREATE TABLE abc(a, b, c); CREATE TABLE cde(c, d, e); \
     INSERT INTO abc VALUES (1, 2, 3), (4, 5, 6); INSERT INTO cde VALUES (7, 8, 9), (1, 2, 3)";

/// SQL text shortened for assertion messages.
pub fn shorten(sql: &str) -> String {
    if sql.len() <= 160 {
        sql.to_owned()
    } else {
        let mut end = 120;
        while !sql.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}... ({} bytes)", &sql[..end], sql.len())
    }
}

/// Column names as `&str`s, for comparisons with literals.
pub fn names(columns: &[String]) -> Vec<&str> {
    columns.iter().map(String::as_str).collect()
}
