//! Hostile SQL (issue 10): a corpus of statements that try to leave the object's database or
//! reach the project's own tables, run against a file-backed object holding KV data, then the
//! files are read back to prove nothing escaped and nothing changed (spec sections 2.3, 3.1-3.4;
//! DESIGN.md section 5).
//!
//! The corpus is `hostile.txt` (one statement per line, each followed by `=> ` and the outcome
//! it must give) plus statements built here that do not fit on a line: the 100,000-byte + 1
//! statement, 101 parameters, deep nesting, long identifiers, NUL bytes.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use durable_sql::{Database, Options, SqlValue, is_reserved, params, rusqlite};

use crate::support::{TRANSACTION_MESSAGE, shorten};

/// The corpus file.
const CORPUS: &str = include_str!("hostile.txt");

/// The rows the object's `_cf_KV` table holds before the corpus runs (written as the KV layer
/// writes them: the same table definition, keys as TEXT, values as BLOBs).
pub const KV_ROWS: &[(&str, &[u8])] = &[
    ("", b"\x01\x01\x00\x00\x00"),
    ("_cf_KV", b"\x01\x03\x00\x00\x00\x01"),
    ("alpha", b"\x01\x04\x00\x00\x00\x2a\x00\x00\x00\x00\x00\x00\x00"),
    ("beta", b"\x01\x06\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00hi"),
    ("caf\u{e9}", &[1, 7, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0x7f]),
    ("zz\u{1f600}", &[1, 1, 0, 0, 0]),
];

/// One statement of the corpus and the outcome it must give.
pub struct Entry {
    /// The statement, `{dir}` replaced.
    pub sql: String,
    /// Values bound to its parameters.
    pub params: Vec<SqlValue>,
    /// `ok`, `auth`, `tx` or an exact error message (`{dir}` standing for the folder).
    pub expect: String,
    /// Where it comes from (a line of `hostile.txt`, or the generator's name).
    pub origin: String,
}

/// A file-backed object with `_cf_KV` holding [`KV_ROWS`], committed.
pub struct Object {
    /// The handle.
    pub db: Database,
    /// Its folder (removed on drop).
    pub dir: tempfile::TempDir,
}

impl Object {
    /// Creates the object and writes its KV rows.
    pub fn new() -> Object {
        let dir = tempfile::tempdir().expect("temporary folder");
        let db = Database::open(dir.path().join("object.sqlite"), Options::default()).unwrap();
        db.internal(|i| {
            i.begin_write()?;
            let conn = i.connection();
            conn.execute_batch(
                "CREATE TABLE IF NOT EXISTS _cf_KV (key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID",
            )?;
            for (key, value) in KV_ROWS {
                conn.execute("INSERT INTO _cf_KV (key, value) VALUES (?, ?)", (key, value))?;
            }
            Ok(())
        })
        .expect("trusted SQL writes _cf_KV");
        db.commit().unwrap();
        Object { db, dir }
    }

    /// The folder, as the corpus's `{dir}`.
    pub fn dir(&self) -> String {
        self.dir.path().display().to_string()
    }

    /// The database file.
    pub fn file(&self) -> PathBuf {
        self.dir.path().join("object.sqlite")
    }
}

/// `_cf_KV` through the trusted seam.
pub fn kv_rows(db: &Database) -> Vec<(String, Vec<u8>)> {
    db.internal(|i| {
        let mut stmt = i.connection().prepare("SELECT key, value FROM _cf_KV ORDER BY key")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    })
    .expect("trusted SQL reads _cf_KV")
}

/// [`KV_ROWS`] as owned rows, in key order.
pub fn expected_kv() -> Vec<(String, Vec<u8>)> {
    let mut rows: Vec<_> = KV_ROWS.iter().map(|(k, v)| (k.to_string(), v.to_vec())).collect();
    rows.sort();
    rows
}

/// `PRAGMA integrity_check` through the trusted seam.
pub fn integrity(db: &Database) -> Vec<String> {
    try_integrity(db).expect("integrity_check runs")
}

/// `PRAGMA integrity_check`, its error as text.
///
/// The whole-database check also asks every virtual table to check itself, and FTS5 fails that
/// with a bare `SQL logic error` when the table's own declaration is broken (`fts5(x,
/// content_rowid='missing')`, which SQLite accepts at CREATE): plain SQLite does the same. Then
/// every ordinary table (FTS5's shadow tables among them) is checked by name instead, so the
/// B-trees are still checked.
fn try_integrity(db: &Database) -> Result<Vec<String>, String> {
    db.internal(|i| {
        let c = i.connection();
        let check = |sql: &str| -> rusqlite::Result<Vec<String>> {
            c.prepare(sql)?.query_map([], |r| r.get::<_, String>(0))?.collect()
        };
        match check("PRAGMA integrity_check") {
            Ok(rows) => Ok(rows),
            Err(_) => {
                let tables: Vec<String> = c
                    .prepare(
                        "SELECT name FROM sqlite_schema WHERE type = 'table' \
                         AND sql NOT LIKE 'CREATE VIRTUAL%'",
                    )?
                    .query_map([], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                let mut rows = Vec::new();
                for table in tables {
                    let quoted = table.replace('"', "\"\"");
                    for row in check(&format!("PRAGMA integrity_check(\"{quoted}\")"))? {
                        if row != "ok" {
                            rows.push(row);
                        }
                    }
                }
                if rows.is_empty() {
                    rows.push("ok".into());
                }
                Ok(rows)
            }
        }
    })
    .map_err(|e| format!("{e:?}"))
}

/// The schema's SQL, for a failure's report.
fn schema(db: &Database) -> Vec<String> {
    db.internal(|i| {
        let mut stmt = i.connection().prepare("SELECT sql FROM sqlite_schema")?;
        let rows = stmt.query_map([], |r| r.get::<_, Option<String>>(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    })
    .map(|rows| rows.into_iter().flatten().collect())
    .unwrap_or_else(|e| vec![format!("schema unreadable: {e}")])
}

/// What running a statement gave: `ok`, the error's message, or the panic.
pub fn outcome(db: &Database, sql: &str, params: &[SqlValue]) -> Result<(), String> {
    let run = catch_unwind(AssertUnwindSafe(|| {
        db.exec(sql, params).and_then(|mut c| c.to_raw_array()).map(drop)
    }));
    match run {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(format!("PANIC: {what}"))
        }
    }
}

/// The outcome written the corpus's way.
fn rendered(result: &Result<(), String>, dir: &str) -> String {
    match result {
        Ok(()) => "ok".to_owned(),
        Err(m) if m == "not authorized: SQLITE_AUTH" => "auth".to_owned(),
        Err(m) if m == TRANSACTION_MESSAGE => "tx".to_owned(),
        Err(m) => m.replace(dir, "{dir}"),
    }
}

/// The statements of `hostile.txt`, `{dir}` replaced by `dir`.
pub fn file_entries(dir: &str) -> Vec<Entry> {
    let mut entries = Vec::new();
    let mut pending: Option<(usize, &str)> = None;
    for (n, line) in CORPUS.lines().enumerate() {
        if let Some(expect) = line.strip_prefix("=> ") {
            let (at, sql) =
                pending.take().unwrap_or_else(|| panic!("line {}: no statement", n + 1));
            entries.push(Entry {
                sql: sql.replace("{dir}", dir),
                params: Vec::new(),
                expect: expect.to_owned(),
                origin: format!("hostile.txt:{}", at + 1),
            });
        } else if line.starts_with('#') || line.trim().is_empty() {
            assert!(pending.is_none(), "line {}: statement without `=> `", n);
        } else {
            assert!(pending.is_none(), "line {}: statement without `=> `", n);
            pending = Some((n, line));
        }
    }
    assert!(pending.is_none(), "the last statement has no `=> `");
    entries
}

fn entry(origin: &str, sql: String, params: impl Into<Vec<SqlValue>>, expect: &str) -> Entry {
    Entry { sql, params: params.into(), expect: expect.to_owned(), origin: origin.to_owned() }
}

/// `SELECT '<x...>' AS v` padded to exactly `len` bytes after `prefix`.
fn padded(prefix: &str, len: usize) -> String {
    let fixed = prefix.len() + "SELECT '' AS v".len();
    format!("{prefix}SELECT '{}' AS v", "x".repeat(len - fixed))
}

/// Statements too long or too odd for a line of `hostile.txt`.
pub fn generated_entries(dir: &str) -> Vec<Entry> {
    const TOO_LONG: &str = "statement too long: SQLITE_TOOBIG";
    const DEPTH: &str = "Expression tree is too large (maximum depth 100): SQLITE_ERROR";
    const TOO_BIG: &str = "string or blob too big: SQLITE_TOOBIG";
    const VARIABLE: &str = "variable number must be between ?1 and ?100 at offset 7: SQLITE_ERROR";
    const IN_TRANSACTION: &str = "cannot VACUUM from within a transaction: SQLITE_ERROR";
    const NO_STATEMENT: &str = "SQL code did not contain a statement.";
    let values = |n: usize| -> Vec<SqlValue> { (0..n as i64).map(SqlValue::from).collect() };
    let nest = |open: &str, inner: &str, close: &str, n: usize| {
        format!("{}{inner}{}", open.repeat(n), close.repeat(n))
    };
    let reserved_long = format!("_cf_{}", "k".repeat(60_000));
    let long = format!("t{}", "x".repeat(60_000));
    vec![
        entry("100,001 bytes", padded("", 100_001), vec![], TOO_LONG),
        entry(
            "100,001 bytes after ATTACH",
            padded("ATTACH ':memory:' AS m; ", 100_001),
            vec![],
            TOO_LONG,
        ),
        entry(
            "100,001 bytes after DELETE",
            padded("DELETE FROM _cf_KV; ", 100_001),
            vec![],
            TOO_LONG,
        ),
        entry(
            "100,000 bytes after DELETE",
            padded("DELETE FROM _cf_KV; ", 100_000),
            vec![],
            "auth",
        ),
        entry("100,001 bytes of statements", "SELECT 1;".repeat(11_112), vec![], TOO_LONG),
        entry(
            "101 parameters",
            format!("SELECT {}", vec!["?"; 101].join(", ")),
            values(101),
            "too many SQL variables at offset 307: SQLITE_ERROR",
        ),
        entry(
            "101 named parameters",
            format!("SELECT {}", (0..101).map(|i| format!(":p{i}")).collect::<Vec<_>>().join(", ")),
            values(101),
            "too many SQL variables at offset 597: SQLITE_ERROR",
        ),
        entry(
            "101 parameters into _cf_KV",
            format!("INSERT INTO _cf_KV VALUES ({})", vec!["?"; 101].join(", ")),
            values(101),
            "too many SQL variables at offset 327: SQLITE_ERROR",
        ),
        entry("?101", "SELECT ?101".to_owned(), values(101), VARIABLE),
        entry("?2147483648", "SELECT ?2147483648".to_owned(), vec![], VARIABLE),
        entry("?0", "SELECT ?0".to_owned(), vec![], VARIABLE),
        entry(
            "bound KV write",
            "INSERT INTO _cf_KV VALUES (?, ?)".to_owned(),
            params!["evil", vec![0u8]],
            "auth",
        ),
        entry(
            "bound ATTACH",
            "ATTACH ? AS x".to_owned(),
            params![format!("{dir}/bound.db")],
            "auth",
        ),
        entry(
            "bound VACUUM INTO",
            "VACUUM INTO ?".to_owned(),
            params![format!("{dir}/bound.db")],
            IN_TRANSACTION,
        ),
        entry(
            "bound zeroblob",
            "SELECT zeroblob(?)".to_owned(),
            params![2_000_000_000i64],
            TOO_BIG,
        ),
        entry(
            "bound printf",
            "SELECT printf('%.*c', ?, 'x')".to_owned(),
            params![1_000_000_000i64],
            "ok",
        ),
        entry("1,000 parentheses", format!("SELECT {}", nest("(", "1", ")", 1000)), vec![], "ok"),
        entry("101 parentheses", format!("SELECT {}", nest("(", "1", ")", 101)), vec![], "ok"),
        entry(
            "1,000 minus signs",
            format!("SELECT {}1", "-".repeat(1000)),
            vec![],
            "incomplete input: SQLITE_ERROR",
        ),
        entry("1,000 NOTs", format!("SELECT {}1", "NOT ".repeat(1000)), vec![], DEPTH),
        entry(
            "200 nested functions",
            format!("SELECT {}", nest("abs(", "1", ")", 200)),
            vec![],
            DEPTH,
        ),
        entry(
            "200 nested subqueries",
            format!("SELECT {}", nest("(SELECT ", "1", ")", 200)),
            vec![],
            DEPTH,
        ),
        entry(
            "nested subqueries reading _cf_KV",
            format!("SELECT {}", nest("(SELECT ", "key FROM _cf_KV LIMIT 1", ")", 50)),
            vec![],
            DEPTH,
        ),
        entry(
            "200 nested CASEs",
            format!("SELECT {}", nest("CASE WHEN 1 THEN ", "1", " END", 200)),
            vec![],
            DEPTH,
        ),
        entry(
            "150 nested json_arrays",
            format!("SELECT {}", nest("json_array(", "1", ")", 150)),
            vec![],
            DEPTH,
        ),
        entry(
            "deep JSON text",
            format!("SELECT json('{}')", nest("[", "1", "]", 5000)),
            vec![],
            "malformed JSON: SQLITE_ERROR",
        ),
        entry(
            "200 nested views' worth of FROM",
            format!("SELECT * FROM {}", nest("(SELECT * FROM ", "t", ")", 200)),
            vec![],
            "ok",
        ),
        entry("60,000-byte table name", format!("CREATE TABLE \"{long}\"(a)"), vec![], TOO_BIG),
        entry(
            "60,000-byte reserved name",
            format!("CREATE TABLE \"{reserved_long}\"(a)"),
            vec![],
            "auth",
        ),
        entry(
            "60,000-byte reserved read",
            format!("SELECT * FROM [{reserved_long}]"),
            vec![],
            &format!("no such table: {reserved_long}: SQLITE_ERROR"),
        ),
        entry("60,000-byte column alias", format!("SELECT 1 AS \"{long}\""), vec![], "ok"),
        entry(
            "101 columns",
            format!(
                "CREATE TABLE wide({})",
                (0..101).map(|i| format!("c{i}")).collect::<Vec<_>>().join(", ")
            ),
            vec![],
            "too many columns on wide: SQLITE_ERROR",
        ),
        entry(
            "128 function arguments",
            format!("SELECT max({})", vec!["1"; 128].join(", ")),
            vec![],
            "too many arguments on function max at offset 7: SQLITE_ERROR",
        ),
        entry(
            "NUL before DELETE",
            "SELECT 1\0; DELETE FROM _cf_KV".to_owned(),
            vec![],
            NO_STATEMENT,
        ),
        entry("NUL after ;", "SELECT 1;\0DELETE FROM _cf_KV".to_owned(), vec![], NO_STATEMENT),
        entry(
            "NUL inside a string",
            "SELECT 'a\0b'".to_owned(),
            vec![],
            "unrecognized token: \"'a\" at offset 7: SQLITE_ERROR",
        ),
        entry(
            "NUL inside a name",
            "SELECT * FROM \"_cf_KV\0\"".to_owned(),
            vec![],
            "unrecognized token: \"\"_cf_KV\" at offset 14: SQLITE_ERROR",
        ),
        entry("only NUL", "\0".to_owned(), vec![], NO_STATEMENT),
        entry("NUL then BEGIN", "\0BEGIN".to_owned(), vec![], NO_STATEMENT),
    ]
}

/// True when `got` is what `expect` (a corpus outcome) asks for.
fn matches(expect: &str, got: &Result<(), String>, dir: &str) -> bool {
    rendered(got, dir) == expect
}

/// Every file in `dir`.
fn files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn the_hostile_corpus_is_refused_or_harmless() {
    let object = Object::new();
    let db = &object.db;
    let dir = object.dir();
    let mut entries = file_entries(&dir);
    let from_file = entries.len();
    entries.extend(generated_entries(&dir));
    assert!(entries.len() >= 200, "the corpus has {} statements", entries.len());

    let record = std::env::var_os("DURABLE_HOSTILE_RECORD");
    let mut failures = String::new();
    let mut seen = Vec::new();
    let (mut refused, mut allowed) = (0, 0);
    for e in &entries {
        let started = std::time::Instant::now();
        let got = outcome(db, &e.sql, &e.params);
        let took = started.elapsed();
        if took > std::time::Duration::from_millis(250) {
            eprintln!("{}: {took:?}: {}", e.origin, shorten(&e.sql));
        }
        if got.is_ok() {
            allowed += 1;
        } else {
            refused += 1;
        }
        let shown = rendered(&got, &dir);
        if shown.starts_with("PANIC") || !matches(&e.expect, &got, &dir) {
            writeln!(
                failures,
                "{}: {}\n  expected: {}\n  got:      {}",
                e.origin,
                shorten(&e.sql),
                shorten(&e.expect),
                shorten(&shown)
            )
            .unwrap();
        }
        if let Some(broken) = db.broken() {
            writeln!(failures, "{}: broke the handle: {broken}", e.origin).unwrap();
        }
        if kv_rows(db) != expected_kv() {
            writeln!(failures, "{}: changed _cf_KV: {}", e.origin, shorten(&e.sql)).unwrap();
        }
        seen.push(shown);
    }
    if let Some(path) = record {
        let mut out = String::new();
        let mut outcomes = seen.iter();
        for line in CORPUS.lines() {
            if line.starts_with("=> ") {
                writeln!(out, "=> {}", outcomes.next().unwrap()).unwrap();
            } else {
                writeln!(out, "{line}").unwrap();
            }
        }
        for (e, shown) in entries[from_file..].iter().zip(outcomes) {
            writeln!(out, "# generated {}\n=> {shown}", e.origin).unwrap();
        }
        std::fs::write(path, out).unwrap();
    }
    eprintln!(
        "hostile corpus: {} statements ({from_file} from hostile.txt), {refused} refused, \
         {allowed} allowed and harmless",
        entries.len()
    );

    // The object is intact and still works.
    db.commit().unwrap();
    assert_eq!(kv_rows(db), expected_kv());
    assert_eq!(integrity(db), ["ok"]);
    db.exec("INSERT INTO t VALUES (3, 'three')", &[]).unwrap();
    db.commit().unwrap();
    let n: i64 = db
        .exec("SELECT count(*) AS n FROM t", &[])
        .unwrap()
        .one::<durable_sql::Row>()
        .unwrap()
        .get("n")
        .unwrap();
    assert!(n >= 1);

    // Nothing was attached, copied or written next to the database, nor in the process's
    // working folder (where relative names in ATTACH and VACUUM INTO would land).
    let allowed_files: BTreeSet<String> =
        ["object.sqlite", "object.sqlite-wal", "object.sqlite-shm"].map(String::from).into();
    let present = files(object.dir.path());
    assert!(present.is_subset(&allowed_files), "files in the object's folder: {present:?}");
    let cwd = std::env::current_dir().unwrap();
    for name in ["attached-hostile.db", "vacuumed-hostile.db"] {
        assert!(!cwd.join(name).exists(), "{name} was created in {}", cwd.display());
    }

    // Read the file itself, without the authorizer: the same KV rows, a sound database, and no
    // schema object over or named like an internal table other than the KV table's own.
    db.clone().close().unwrap();
    let file = object.file();
    drop(object.db);
    let conn = rusqlite::Connection::open_with_flags(
        &file,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .unwrap();
    let mut stmt = conn.prepare("SELECT key, value FROM _cf_KV ORDER BY key").unwrap();
    let rows: Vec<(String, Vec<u8>)> =
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect();
    assert_eq!(rows, expected_kv());
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
    let mut stmt = conn.prepare("SELECT type, name, tbl_name FROM sqlite_schema").unwrap();
    let schema: Vec<(String, String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (kind, name, table) in &schema {
        let internal = (kind == "table" && name == "_cf_KV")
            || (kind == "index" && name == "sqlite_autoindex__cf_KV_1");
        assert!(
            internal || (!is_reserved(name) && !is_reserved(table)),
            "user SQL left a {kind} {name} on {table}"
        );
    }
    assert!(failures.is_empty(), "hostile statements misbehaved:\n{failures}");
}

#[test]
fn the_corpus_file_is_well_formed() {
    let entries = file_entries("/d");
    assert!(entries.len() >= 200);
    for e in &entries {
        assert!(!e.expect.is_empty() && e.expect != "?", "{}: no expectation", e.origin);
    }
}

#[test]
fn a_foreign_key_into_the_kv_table_reveals_nothing() {
    // Rows that reference KV keys without an authorized lookup would let
    // `foreign_key_check` tell which keys exist. Inserting them is refused (the parent lookup
    // reads `_cf_KV`, even with foreign keys off), and so is adding such a column with a
    // default to rows that already exist.
    let object = Object::new();
    let db = &object.db;
    let non_null =
        "error: Cannot add a REFERENCES column with non-NULL default value: SQLITE_ERROR";
    let denied = "error: access to _cf_KV.key is prohibited: SQLITE_AUTH";
    crate::support::check_all(
        db,
        &[
            ("CREATE TABLE probe(x)", "[]"),
            ("INSERT INTO probe VALUES (1)", "[]"),
            ("PRAGMA foreign_keys = OFF", "[]"),
            ("ALTER TABLE probe ADD COLUMN hit REFERENCES _cf_KV(key) DEFAULT 'alpha'", non_null),
            ("ALTER TABLE probe ADD COLUMN miss REFERENCES _cf_KV(key) DEFAULT 'none'", non_null),
            ("ALTER TABLE probe ADD COLUMN k REFERENCES _cf_KV(key)", "[]"),
            ("UPDATE probe SET k = 'alpha'", denied),
            ("INSERT INTO probe VALUES (2, 'none')", denied),
            ("PRAGMA foreign_key_check(probe)", "[]"),
            ("PRAGMA foreign_key_check", "[]"),
            ("SELECT * FROM probe", "[[1, NULL]]"),
        ],
    );
    assert_eq!(kv_rows(db), expected_kv());
}

/// Cases per fuzz test: `PROPTEST_CASES` when set, else `default`.
fn fuzz_cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Tokens for SQL soups: keywords, the reserved names in many spellings, schema names,
/// functions and pragmas that reach outside, punctuation and literals.
const TOKENS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "INSERT",
    "INTO",
    "VALUES",
    "UPDATE",
    "SET",
    "DELETE",
    "CREATE",
    "TABLE",
    "VIEW",
    "TRIGGER",
    "INDEX",
    "VIRTUAL",
    "USING",
    "DROP",
    "ALTER",
    "RENAME",
    "TO",
    "ADD",
    "COLUMN",
    "ATTACH",
    "DETACH",
    "DATABASE",
    "AS",
    "VACUUM",
    "PRAGMA",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "SAVEPOINT",
    "RELEASE",
    "END",
    "UNION",
    "ALL",
    "JOIN",
    "ON",
    "TEMP",
    "AFTER",
    "BEFORE",
    "INSTEAD",
    "OF",
    "FOR",
    "EACH",
    "ROW",
    "RETURNING",
    "LIMIT",
    "ORDER",
    "BY",
    "GROUP",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "NOT",
    "EXISTS",
    "IN",
    "OR",
    "REPLACE",
    "IGNORE",
    "DEFAULT",
    "REFERENCES",
    "EXPLAIN",
    "REINDEX",
    "ANALYZE",
    "main",
    "temp",
    "_cf_KV",
    "\"_cf_KV\"",
    "[_CF_kv]",
    "`_cF_Kv`",
    "main._cf_KV",
    "temp._cf_KV",
    "_cf_x",
    "_cf",
    "t",
    "log",
    "key",
    "value",
    "a",
    "b",
    "sqlite_master",
    "sqlite_schema",
    "sqlite_dbpage",
    "dbstat",
    "json_each",
    "pragma_table_info",
    "load_extension",
    "zeroblob",
    "randomblob",
    "printf",
    "sqlite_version",
    "fts5",
    "rtree",
    "writable_schema",
    "journal_mode",
    "table_info",
    "foreign_keys",
    "INTO",
    "'{dir}/f.db'",
    "':memory:'",
    "'file:x?mode=memory'",
    ".",
    "(",
    ")",
    "(",
    ")",
    ",",
    ",",
    ";",
    "*",
    "=",
    "||",
    "?",
    "?1",
    ":a",
    "'x'",
    "x'00'",
    "1",
    "-1",
    "2000001",
    "NULL",
    "--",
    "/*",
    "*/",
    "'",
    "\"",
    "\0",
];

/// Ordinary statements whose mutations the fuzz also tries.
const VALID: &[&str] = &[
    "SELECT a, b FROM t WHERE a > 1 ORDER BY b",
    "INSERT INTO t VALUES (3, 'x')",
    "UPDATE t SET b = 'y' WHERE a = 1",
    "DELETE FROM t WHERE a > 10",
    "CREATE TABLE IF NOT EXISTS u(x INTEGER PRIMARY KEY, y TEXT)",
    "CREATE INDEX IF NOT EXISTS ui ON u(y)",
    "CREATE VIEW IF NOT EXISTS v2 AS SELECT * FROM t",
    "CREATE TRIGGER IF NOT EXISTS tg AFTER INSERT ON u BEGIN INSERT INTO log VALUES (new.y); END",
    "SELECT json_extract('{\"a\":1}', '$.a'), upper(b) FROM t",
    "PRAGMA table_info(t)",
    "SELECT * FROM pragma_table_list",
    "INSERT INTO t SELECT a + 1, b FROM t LIMIT 5 RETURNING *",
];

/// Applies byte-level edits (on characters, so the text stays UTF-8).
fn mutate(base: &str, edits: &[(u8, usize, usize, usize)]) -> String {
    let mut chars: Vec<char> = base.chars().collect();
    for &(op, at, len, token) in edits {
        let at = if chars.is_empty() { 0 } else { at % (chars.len() + 1) };
        let end = (at + len % 12).min(chars.len());
        match op % 4 {
            0 => {
                chars.drain(at..end);
            }
            1 => {
                let t = format!(" {} ", TOKENS[token % TOKENS.len()]);
                chars.splice(at..at, t.chars());
            }
            2 => {
                let copy: Vec<char> = chars[at..end].to_vec();
                chars.splice(at..at, copy);
            }
            _ => {
                for c in &mut chars[at..end] {
                    *c = if c.is_ascii_lowercase() {
                        c.to_ascii_uppercase()
                    } else {
                        c.to_ascii_lowercase()
                    };
                }
            }
        }
    }
    chars.into_iter().collect()
}

/// An object for the fuzz: KV rows, the corpus's user tables, and a watchdog that interrupts
/// a statement running longer than two seconds (a mutated recursive query need not end).
///
/// The watchdog interrupts while it holds the deadline's lock, and `run` clears the deadline
/// under that lock before anything else touches the connection: an interrupt meant for one
/// statement lands before the next one is prepared (which clears it), never inside the trusted
/// checks that follow.
struct Fuzzed {
    object: Object,
    deadline: std::sync::Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    handle: std::sync::Arc<std::sync::Mutex<rusqlite::InterruptHandle>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The last statements run, for a failure's report.
    recent: std::collections::VecDeque<String>,
}

impl Fuzzed {
    fn new() -> Fuzzed {
        use std::sync::{Arc, Mutex, atomic::AtomicBool, atomic::Ordering};
        let object = Object::new();
        for sql in [
            "CREATE TABLE t(a, b)",
            "INSERT INTO t VALUES (1, 'one'), (2, 'two')",
            "CREATE TABLE log(msg)",
            "CREATE VIEW tv AS SELECT a, b FROM t",
        ] {
            outcome(&object.db, sql, &[]).unwrap();
        }
        object.db.commit().unwrap();
        let handle = Arc::new(Mutex::new(Self::interrupt_handle(&object.db)));
        let deadline: Arc<Mutex<Option<std::time::Instant>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (h, d, s) = (handle.clone(), deadline.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(20));
                let deadline = d.lock().unwrap();
                if deadline.is_some_and(|at| std::time::Instant::now() > at) {
                    h.lock().unwrap().interrupt();
                }
                drop(deadline);
            }
        });
        Fuzzed { object, deadline, handle, stop, recent: Default::default() }
    }

    fn interrupt_handle(db: &Database) -> rusqlite::InterruptHandle {
        db.internal(|i| Ok(i.connection().get_interrupt_handle())).unwrap()
    }

    /// Runs one statement; `Err` with the panic's text if it panicked.
    fn run(&mut self, sql: &str) -> Result<(), String> {
        let sql = sql.replace("{dir}", &self.object.dir());
        if self.recent.len() == 64 {
            self.recent.pop_front();
        }
        self.recent.push_back(sql.clone());
        *self.deadline.lock().unwrap() =
            Some(std::time::Instant::now() + std::time::Duration::from_secs(2));
        let got = outcome(&self.object.db, &sql, &[]);
        *self.deadline.lock().unwrap() = None;
        if let Err(m) = &got
            && m.starts_with("PANIC")
        {
            return Err(format!("{}: {m}", shorten(&sql)));
        }
        if self.object.db.broken().is_some() {
            // A critical error (an interrupt) rolled back and broke the handle: reopen.
            self.object.db =
                Database::open(self.object.file(), Options::default()).expect("reopen");
            *self.handle.lock().unwrap() = Self::interrupt_handle(&self.object.db);
        }
        Ok(())
    }

    /// `_cf_KV` unchanged and the database sound.
    fn check(&self) -> Result<(), String> {
        if kv_rows(&self.object.db) != expected_kv() {
            return Err("_cf_KV changed".into());
        }
        match try_integrity(&self.object.db) {
            Ok(rows) if rows == ["ok"] => {}
            got => {
                return Err(format!(
                    "integrity_check: {got:?}\nschema: {:#?}\nlast statements: {:#?}",
                    schema(&self.object.db),
                    self.recent
                ));
            }
        }
        Ok(())
    }
}

impl Drop for Fuzzed {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Runs `cases` statements drawn from `strategy` against one object.
fn fuzz_sql(cases: u32, strategy: impl proptest::strategy::Strategy<Value = String>) {
    use proptest::test_runner::{Config, TestCaseError, TestRunner};
    let fuzzed = std::cell::RefCell::new(Fuzzed::new());
    let mut runner =
        TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let n = std::cell::Cell::new(0u32);
    let result = runner.run(&strategy, |sql| {
        let mut fuzzed = fuzzed.borrow_mut();
        fuzzed.run(&sql).map_err(TestCaseError::fail)?;
        n.set(n.get() + 1);
        if n.get().is_multiple_of(64) {
            fuzzed
                .check()
                .map_err(|e| TestCaseError::fail(format!("after {}: {e}", shorten(&sql))))?;
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let fuzzed = fuzzed.into_inner();
    fuzzed.object.db.commit().unwrap();
    fuzzed.check().unwrap();
    let present = files(fuzzed.object.dir.path());
    assert!(
        present.iter().all(|f| f.starts_with("object.sqlite")),
        "files in the object's folder: {present:?}"
    );
}

#[test]
fn fuzz_token_soups_through_the_authorizer() {
    use proptest::prelude::*;
    let soup = proptest::collection::vec(proptest::sample::select(TOKENS), 1..24)
        .prop_map(|tokens| tokens.join(" "));
    fuzz_sql(fuzz_cases(10_000), soup);
}

#[test]
fn fuzz_mutated_corpus_and_valid_statements() {
    use proptest::prelude::*;
    let sources: Vec<String> = file_entries("{dir}")
        .into_iter()
        .map(|e| e.sql)
        .chain(VALID.iter().map(|s| s.to_string()))
        .collect();
    let edits = proptest::collection::vec(
        (any::<u8>(), any::<usize>(), any::<usize>(), any::<usize>()),
        1..5,
    );
    let mutated =
        (proptest::sample::select(sources), edits).prop_map(|(base, edits)| mutate(&base, &edits));
    fuzz_sql(fuzz_cases(10_000), mutated);
}

#[test]
fn the_fuzz_checks_b_trees_past_a_broken_fts5_declaration() {
    let object = Object::new();
    outcome(&object.db, "CREATE TABLE t(a)", &[]).unwrap();
    outcome(&object.db, "CREATE VIRTUAL TABLE f USING fts5(x, content_rowid='missing')", &[])
        .unwrap();
    outcome(&object.db, "INSERT INTO t VALUES (1)", &[]).unwrap();
    let whole = object.db.internal(|i| {
        let mut stmt = i.connection().prepare("PRAGMA integrity_check")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    });
    assert!(whole.is_err(), "SQLite's whole-database check fails on it: {whole:?}");
    assert_eq!(try_integrity(&object.db), Ok(vec!["ok".to_string()]));
}
