//! The authorizer, adversarially: transaction statements, ATTACH/DETACH, TEMP objects, the
//! reserved `_cf_` prefix in every letter case and for every kind of object, pragmas,
//! functions and virtual-table modules off the allow-lists, and escapes such as
//! `VACUUM INTO`, `sqlite_dbpage`, views and triggers over internal tables (spec sections
//! 3.1-3.3; oracle cases 05, 33, 37-41).

use std::panic::{AssertUnwindSafe, catch_unwind};

use durable_sql::{Database, Error, is_reserved, params};

use crate::support::{
    NOT_AUTHORIZED, TRANSACTION_MESSAGE, TestDb, check, check_all, check_params, check_refused,
    create_kv_table, db, error, kv_rows, names, run,
};

/// A database with `_cf_KV` (one key, made through the trusted seam) and a user table.
fn setup() -> TestDb {
    let db = db();
    create_kv_table(&db);
    run(&db, "CREATE TABLE ok(a, b); INSERT INTO ok VALUES (1, 2)");
    db
}

/// The internal table must be exactly as `setup` made it.
#[track_caller]
fn assert_kv_intact(db: &Database) {
    assert_eq!(kv_rows(db), [("k".to_owned(), vec![1u8])]);
}

fn tx_error() -> String {
    format!("error: {TRANSACTION_MESSAGE}")
}

#[test]
fn transaction_statements_get_the_tailored_message() {
    // Oracle 05 and 37; spec item 49.
    let db = setup();
    run(&db, "CREATE TABLE t(x)");
    let statements = [
        "BEGIN",
        "BEGIN TRANSACTION",
        "BEGIN DEFERRED",
        "BEGIN IMMEDIATE TRANSACTION",
        "begin exclusive",
        "END",
        "end transaction",
        "COMMIT",
        "COMMIT TRANSACTION",
        "ROLLBACK",
        "ROLLBACK TRANSACTION",
        "ROLLBACK TO sp",
        "ROLLBACK TRANSACTION TO SAVEPOINT sp",
        "SAVEPOINT sp",
        "savepoint _cf_sync_savepoint_0",
        "RELEASE sp",
        "RELEASE SAVEPOINT sp",
        "RELEASE _cf_sync_savepoint_0",
    ];
    for sql in statements {
        let e = error(&db, sql, &[]);
        assert!(matches!(e, Error::TransactionStatement), "{sql}: {e:?}");
        assert_eq!(format!("error: {e}"), tx_error(), "{sql}");
    }
    // In a multi-statement string, statements before it have run; none after it.
    check(&db, "INSERT INTO t VALUES (1); BEGIN", &tx_error());
    check(&db, "BEGIN; INSERT INTO t VALUES (2)", &tx_error());
    check(&db, "SELECT x FROM t", "[[1]]");
    // The tailored message does not stick to the next, unrelated denial.
    check(&db, "CREATE TABLE _cf_x(a)", NOT_AUTHORIZED);
    check(&db, "SELECT 1", "[[1]]");
    // BEGIN inside a trigger body is not a transaction statement.
    check(&db, "CREATE TRIGGER trg AFTER INSERT ON t BEGIN SELECT 1; END", "[]");
    check(&db, "INSERT INTO t VALUES (5); SELECT count(*) FROM t", "[[2]]");
}

#[test]
fn attach_and_detach_are_refused() {
    // Oracle 05 and 39; spec item 54. No file appears.
    let db = setup();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("attached.db");
    let attach_file = format!("ATTACH DATABASE '{}' AS x", target.display());
    let attach_uri = format!("ATTACH 'file:{}?mode=rwc' AS y", target.display());
    for sql in [
        attach_file.as_str(),
        attach_uri.as_str(),
        "ATTACH ':memory:' AS m",
        "ATTACH '' AS e",
        "ATTACH 'file:y?mode=memory' AS y",
        "DETACH other",
        "DETACH DATABASE x",
        "DETACH main",
        "DETACH temp",
    ] {
        check(&db, sql, NOT_AUTHORIZED);
    }
    // A bound file name changes nothing.
    check_params(&db, "ATTACH ? AS z", &params![target.display().to_string()], NOT_AUTHORIZED);
    assert!(!target.exists());
    check(&db, "SELECT name FROM pragma_database_list", NOT_AUTHORIZED);
}

#[test]
fn temp_objects_are_refused() {
    // Oracle 39; spec item 53.
    let db = setup();
    check_all(
        &db,
        &[
            ("CREATE TEMP TABLE tt(x)", NOT_AUTHORIZED),
            ("CREATE TEMPORARY TABLE tt2 AS SELECT 1 AS a", NOT_AUTHORIZED),
            ("CREATE TABLE temp.tx(a)", NOT_AUTHORIZED),
            ("CREATE TEMP TABLE tempy AS SELECT * FROM sqlite_master", NOT_AUTHORIZED),
            ("CREATE TEMP VIEW tv AS SELECT * FROM ok", NOT_AUTHORIZED),
            ("CREATE VIEW temp.tv2 AS SELECT 1", NOT_AUTHORIZED),
            ("CREATE TEMP TRIGGER ttrg AFTER INSERT ON ok BEGIN SELECT 1; END", NOT_AUTHORIZED),
            (
                "CREATE TEMP TRIGGER ttrg2 AFTER INSERT ON ok BEGIN DELETE FROM _cf_KV; END",
                NOT_AUTHORIZED,
            ),
            ("CREATE TEMP TABLE _cf_t(x)", NOT_AUTHORIZED),
            // Reading the (empty) temp schema is allowed.
            ("SELECT count(*) AS n FROM sqlite_temp_master", "[[0]]"),
            ("SELECT count(*) AS n FROM temp.sqlite_master", "[[0]]"),
            ("SELECT * FROM other.ok", "error: no such table: other.ok: SQLITE_ERROR"),
            // main.-qualified statements are fine.
            (
                "CREATE TABLE main.base(a); INSERT INTO main.base VALUES (1); SELECT a FROM main.base",
                "[[1]]",
            ),
            (
                "SELECT name FROM sqlite_master WHERE name NOT LIKE '\\_cf\\_%' ESCAPE '\\' \
                 ORDER BY name",
                "[['base'], ['ok']]",
            ),
        ],
    );
    // An INSERT that fires the (refused) temp trigger would have touched _cf_KV.
    run(&db, "INSERT INTO ok VALUES (3, 4)");
    assert_kv_intact(&db);
}

#[test]
fn reserved_names_are_refused_in_any_letter_case() {
    // Oracle 38; spec items 36, 38-40.
    let db = setup();
    let denied = [
        "CREATE TABLE _cf_t(x)",
        "CREATE TABLE _CF_t(x)",
        "CREATE TABLE _Cf_t(x)",
        "CREATE TABLE _cF_t(x)",
        "CREATE TABLE \"_cf_q\"(x)",
        "CREATE TABLE [_CF_b](x)",
        "CREATE TABLE `_cf_bt`(x)",
        "CREATE TABLE main._cf_m(x)",
        "CREATE TABLE IF NOT EXISTS _cf_KV(x)",
        "CREATE TABLE _cf_copy AS SELECT 1 AS a",
        "CREATE TABLE _cf_(x)",
        "CREATE INDEX _cf_idx ON ok(a)",
        "CREATE INDEX _CF_IDX ON ok(a)",
        "CREATE UNIQUE INDEX _cF_u ON ok(b)",
        "CREATE INDEX kv_val ON _cf_KV(value)",
        "CREATE INDEX kv_val ON _CF_kv(value)",
        "CREATE TRIGGER _CF_trg AFTER INSERT ON ok BEGIN SELECT 1; END",
        "CREATE TRIGGER kv_trg AFTER INSERT ON _cf_KV BEGIN SELECT 1; END",
        "CREATE TRIGGER kv_trg2 BEFORE DELETE ON _Cf_kV BEGIN SELECT 1; END",
        "CREATE VIEW _cf_v AS SELECT 1",
        "CREATE VIEW _Cf_V AS SELECT 1",
        "ALTER TABLE ok RENAME TO _cf_renamed",
        "ALTER TABLE ok RENAME TO _Cf_R",
        "ALTER TABLE ok RENAME TO \"_CF_quoted\"",
        "ALTER TABLE _cf_KV RENAME TO mine",
        "ALTER TABLE _cf_KV ADD COLUMN z",
        "ALTER TABLE _cf_KV RENAME COLUMN value TO v",
        "ALTER TABLE _cf_KV DROP COLUMN value",
        "CREATE VIRTUAL TABLE _cf_fts USING fts5(body)",
        "CREATE VIRTUAL TABLE _CF_fts_test USING fts5(content)",
        "CREATE VIRTUAL TABLE _cf_rt USING rtree(id, a, b)",
        "CREATE VIRTUAL TABLE _cF_voc USING fts5vocab(ok, 'row')",
        "INSERT INTO _cf_KV VALUES ('x', x'00')",
        "INSERT OR REPLACE INTO _cf_KV VALUES ('k', x'02')",
        "REPLACE INTO _CF_KV VALUES ('k', x'02')",
        "INSERT INTO _cf_KV VALUES ('k', x'02') ON CONFLICT(key) DO UPDATE SET value = x'03'",
        "UPDATE _cf_KV SET value = x'00'",
        "DELETE FROM _cf_KV",
        "DELETE FROM main._cf_kv WHERE key = 'k'",
        "DROP TABLE _cf_KV",
        "DROP TABLE IF EXISTS _CF_KV",
        "SELECT count(*) FROM _cf_KV",
    ];
    check_refused(&db, &denied);
    // The table kept its name, and the look-alikes are ordinary names.
    check_all(
        &db,
        &[
            ("SELECT a FROM ok", "[[1]]"),
            (
                "CREATE TABLE _cf(x); CREATE TABLE cf_x(x); CREATE TABLE x_cf_(x); CREATE TABLE __cf_(x)",
                "[]",
            ),
            ("CREATE TABLE _cfx(x); CREATE TABLE cf(x)", "[]"),
            ("ALTER TABLE ok RENAME COLUMN b TO _cf_col", "[]"),
            ("SELECT _cf_col FROM ok", "[[2]]"),
            ("CREATE INDEX ok_cf ON ok(_cf_col)", "[]"),
            ("CREATE VIRTUAL TABLE my_fts USING fts5(content)", "[]"),
            (
                "SELECT type, name FROM sqlite_master WHERE type = 'table' AND name LIKE '%cf%' \
                 AND name NOT LIKE 'my_fts%' ORDER BY name",
                "[['table', '__cf_'], ['table', '_cf'], ['table', '_cf_KV'], ['table', '_cfx'], \
                 ['table', 'cf'], ['table', 'cf_x'], ['table', 'x_cf_']]",
            ),
        ],
    );
    assert_kv_intact(&db);
}

#[test]
fn internal_tables_cannot_be_read() {
    // Oracle 05 and 38; spec item 37. `_cf_KV` was made through `Database::internal`.
    let db = setup();
    db.internal(|i| {
        i.connection().execute_batch(
            "CREATE TABLE _cf_METADATA (key INTEGER PRIMARY KEY, value BLOB);
             INSERT INTO _cf_METADATA VALUES (1, x'aa');
             CREATE INDEX kv_by_value ON _cf_KV(value);",
        )?;
        Ok(())
    })
    .unwrap();
    check_all(
        &db,
        &[
            ("SELECT * FROM _cf_KV", "error: access to _cf_KV.key is prohibited: SQLITE_AUTH"),
            ("SELECT key FROM _cf_KV", "error: access to _cf_KV.key is prohibited: SQLITE_AUTH"),
            (
                "SELECT value FROM _CF_kv",
                "error: access to _cf_KV.value is prohibited: SQLITE_AUTH",
            ),
            ("SELECT * FROM main._cf_KV", "error: access to _cf_KV.key is prohibited: SQLITE_AUTH"),
            (
                "SELECT value FROM _cf_METADATA",
                "error: access to _cf_METADATA.value is prohibited: SQLITE_AUTH",
            ),
            (
                "SELECT (SELECT value FROM _cf_KV LIMIT 1)",
                "error: access to _cf_KV.value is prohibited: SQLITE_AUTH",
            ),
            (
                "SELECT a FROM ok WHERE a IN (SELECT length(key) FROM _cf_KV)",
                "error: access to _cf_KV.key is prohibited: SQLITE_AUTH",
            ),
            (
                "WITH k AS (SELECT key FROM _cf_KV) SELECT * FROM k",
                "error: access to _cf_KV.key is prohibited: SQLITE_AUTH",
            ),
            (
                "INSERT INTO ok SELECT key, value FROM _cf_KV",
                "error: access to _cf_KV.key is prohibited: SQLITE_AUTH",
            ),
            (
                "SELECT ok.a FROM ok JOIN _cf_KV ON _cf_KV.key = 'k'",
                "error: access to _cf_KV.key is prohibited: SQLITE_AUTH",
            ),
            // An index on an internal table, even one with an ordinary name.
            ("DROP INDEX kv_by_value", NOT_AUTHORIZED),
        ],
    );
    // A view over an internal table can be created but not used (oracle README).
    check(&db, "CREATE VIEW peek AS SELECT key, value FROM _cf_KV", "[]");
    let e = error(&db, "SELECT * FROM peek", &[]);
    assert_eq!(e.sqlite().map(|f| f.code_name()), Some("SQLITE_AUTH"), "{e}");
    // The schema still lists internal tables.
    check(
        &db,
        "SELECT name FROM sqlite_master WHERE name LIKE '\\_cf%' ESCAPE '\\' ORDER BY name",
        "[['_cf_KV'], ['_cf_METADATA']]",
    );
    assert_kv_intact(&db);
}

#[test]
fn triggers_and_views_cannot_write_internal_tables() {
    // A trigger body is authorized when a statement that fires it is prepared, as user SQL.
    let db = setup();
    let attempts = [
        "CREATE TRIGGER evil AFTER INSERT ON ok BEGIN DELETE FROM _cf_KV; END; \
         INSERT INTO ok VALUES (5, 6)",
        "CREATE TRIGGER evil2 AFTER UPDATE ON ok BEGIN \
         INSERT INTO _cf_KV VALUES ('x', x'00'); END; UPDATE ok SET a = 7",
        "CREATE VIEW v AS SELECT 1 AS x; \
         CREATE TRIGGER evil3 INSTEAD OF DELETE ON v BEGIN UPDATE _cf_KV SET value = x'ff'; END; \
         DELETE FROM v",
    ];
    for sql in attempts {
        let e = error(&db, sql, &[]);
        assert_eq!(e.sqlite().map(|f| f.code_name()), Some("SQLITE_AUTH"), "{sql}: {e}");
        assert_kv_intact(&db);
    }
    // The same trigger kept in the schema keeps failing the statements that fire it.
    for sql in ["INSERT INTO ok VALUES (8, 9)", "UPDATE ok SET a = 7", "DELETE FROM v"] {
        if let Ok(mut c) = db.exec(sql, &[]) {
            panic!("{sql} ran: {:?}", c.to_raw_array());
        }
    }
    assert_kv_intact(&db);
}

#[test]
fn pragmas_off_the_allow_list_are_refused() {
    // Oracle 05 and 40; spec items 41-42.
    let db = setup();
    run(
        &db,
        "CREATE TABLE pt(id INTEGER PRIMARY KEY, name TEXT NOT NULL, tag TEXT); CREATE INDEX pt_tag ON pt(tag, name)",
    );
    let denied = [
        "PRAGMA journal_mode",
        "PRAGMA journal_mode=DELETE",
        "PRAGMA main.journal_mode = OFF",
        "PRAGMA synchronous=OFF",
        "PRAGMA integrity_check",
        "PRAGMA cache_size",
        "PRAGMA user_version",
        "PRAGMA user_version = 7",
        "PRAGMA application_id = 1",
        "PRAGMA max_page_count = 100",
        "PRAGMA page_count",
        "PRAGMA freelist_count",
        "PRAGMA schema_version",
        "PRAGMA schema_version = 1",
        "PRAGMA writable_schema = ON",
        "PRAGMA trusted_schema = ON",
        "PRAGMA encoding",
        "PRAGMA compile_options",
        "PRAGMA function_list",
        "PRAGMA pragma_list",
        "PRAGMA module_list",
        "PRAGMA database_list",
        "PRAGMA hard_heap_limit = 1024",
        "PRAGMA soft_heap_limit = 1024",
        "PRAGMA mmap_size = 1000000",
        "PRAGMA locking_mode = EXCLUSIVE",
        "PRAGMA temp_store = MEMORY",
        "PRAGMA secure_delete = ON",
        "PRAGMA auto_vacuum = FULL",
        "PRAGMA incremental_vacuum",
        "PRAGMA wal_checkpoint(TRUNCATE)",
        "PRAGMA wal_autocheckpoint = 0",
        "PRAGMA busy_timeout = 1",
        "PRAGMA query_only = ON",
        "PRAGMA cell_size_check = ON",
        "PRAGMA shrink_memory",
        "PRAGMA page_size = 8192",
        "PRAGMA data_version = 5",
        "PRAGMA table_info(_cf_KV)",
        "PRAGMA table_xinfo(_CF_kv)",
        "PRAGMA index_list(_cf_KV)",
        "PRAGMA foreign_key_list(_cf_KV)",
        "PRAGMA foreign_key_check(_cf_KV)",
        "PRAGMA quick_check(_cf_KV)",
        "PRAGMA ignore_check_constraints = abcd",
        "PRAGMA foreign_keys = \"foo\"",
        "SELECT name FROM pragma_table_info('_cf_KV')",
        "SELECT * FROM pragma_function_list",
        "SELECT * FROM pragma_pragma_list",
        "SELECT * FROM pragma_compile_options",
    ];
    check_refused(&db, &denied);
    check(
        &db,
        "PRAGMA defer_foreign_keys = 'yes",
        "error: unrecognized token: \"'yes\" at offset 28: SQLITE_ERROR",
    );
    assert_kv_intact(&db);
}

#[test]
fn pragmas_on_the_allow_list_work() {
    // Oracle 05 and 40; spec items 43-46, 56.
    let db = setup();
    run(
        &db,
        "CREATE TABLE pt(id INTEGER PRIMARY KEY, name TEXT NOT NULL, tag TEXT); CREATE INDEX pt_tag ON pt(tag, name)",
    );
    check_all(
        &db,
        &[
            (
                "PRAGMA table_info(pt)",
                "[[0, 'id', 'INTEGER', 0, NULL, 1], [1, 'name', 'TEXT', 1, NULL, 0], \
                 [2, 'tag', 'TEXT', 0, NULL, 0]]",
            ),
            (
                "PRAGMA table_xinfo(pt)",
                "[[0, 'id', 'INTEGER', 0, NULL, 1, 0], [1, 'name', 'TEXT', 1, NULL, 0, 0], \
                 [2, 'tag', 'TEXT', 0, NULL, 0, 0]]",
            ),
            ("PRAGMA index_list(pt)", "[[0, 'pt_tag', 0, 'c', 0]]"),
            ("PRAGMA index_info(pt_tag)", "[[0, 2, 'tag'], [1, 1, 'name']]"),
            (
                "PRAGMA index_xinfo(pt_tag)",
                "[[0, 2, 'tag', 0, 'BINARY', 1], [1, 1, 'name', 0, 'BINARY', 1], \
                 [2, -1, NULL, 0, 'BINARY', 0]]",
            ),
            ("PRAGMA quick_check", "[['ok']]"),
            ("PRAGMA quick_check(3)", "[['ok']]"),
            ("PRAGMA quick_check(pt)", "[['ok']]"),
            ("PRAGMA foreign_key_check", "[]"),
            ("PRAGMA foreign_key_check(pt)", "[]"),
            ("PRAGMA page_size", "[[4096]]"),
            ("PRAGMA foreign_keys", "[[1]]"),
            ("PRAGMA recursive_triggers = yes", "[]"),
            ("PRAGMA recursive_triggers", "[[1]]"),
            ("PRAGMA recursive_triggers = 'off'", "[]"),
            ("PRAGMA recursive_triggers", "[[0]]"),
            ("PRAGMA case_sensitive_like = TRUE", "[]"),
            ("SELECT 'ABC' LIKE 'abc'", "[[0]]"),
            ("PRAGMA case_sensitive_like = 0", "[]"),
            ("SELECT 'ABC' LIKE 'abc'", "[[1]]"),
            ("PRAGMA reverse_unordered_selects", "[[0]]"),
            ("PRAGMA legacy_alter_table = \"no\"", "[]"),
            ("PRAGMA ignore_check_constraints", "[[0]]"),
            (
                "SELECT name, type, pk FROM pragma_table_info('pt') ORDER BY cid",
                "[['id', 'INTEGER', 1], ['name', 'TEXT', 0], ['tag', 'TEXT', 0]]",
            ),
            (
                "SELECT name FROM pragma_table_list WHERE name NOT LIKE 'sqlite_%' \
                 AND name NOT LIKE '\\_cf\\_%' ESCAPE '\\' ORDER BY name",
                "[['ok'], ['pt']]",
            ),
            (
                "SELECT schema, name, type, ncol, wr, strict FROM pragma_table_list \
                 WHERE name = '_cf_KV'",
                "[['main', '_cf_KV', 'table', 2, 1, 0]]",
            ),
            ("PRAGMA optimize", "[]"),
        ],
    );
    let data_version =
        db.exec("PRAGMA data_version", &[]).unwrap().one::<durable_sql::Row>().unwrap();
    assert_eq!(names(data_version.column_names()), ["data_version"]);
    assert!(data_version.get::<i64>("data_version").is_ok());
}

#[test]
fn boolean_pragmas_accept_the_runtimes_spellings() {
    // Spec item 55.
    let db = setup();
    let cases = [
        ("true", 1),
        ("false", 0),
        ("on", 1),
        ("off", 0),
        ("yes", 1),
        ("no", 0),
        ("1", 1),
        ("0", 0),
        ("tRuE", 1),
        ("NO", 0),
        ("'true'", 1),
        ("\"yes\"", 1),
        ("\"0\"", 0),
        ("  true    ", 1),
    ];
    for (word, expect) in cases {
        check(&db, &format!("PRAGMA defer_foreign_keys = {word}"), "[]");
        check(&db, "PRAGMA defer_foreign_keys", &format!("[[{expect}]]"));
    }
    for word in ["abcd", "\"foo\"", "2", "'maybe'"] {
        check(&db, &format!("PRAGMA defer_foreign_keys = {word}"), NOT_AUTHORIZED);
    }
}

#[test]
fn optimize_and_analyze_are_allowed() {
    // Spec items 45-46 with the runtime's answers: internal tables show in optimize's plan.
    let db = db();
    create_kv_table(&db);
    let plan = "[['ANALYZE \"main\".\"myTable\"'], ['ANALYZE \"main\".\"_cf_KV\"']]";
    check_all(
        &db,
        &[
            ("CREATE TABLE myTable(foo TEXT, bar INTEGER)", "[]"),
            ("PRAGMA optimize(-1)", plan),
            ("PRAGMA optimize(0x7fffffff)", plan),
            ("PRAGMA optimize=0x10002", "[]"),
            ("ANALYZE", "[]"),
            ("PRAGMA optimize", "[]"),
            ("ANALYZE myTable", "[]"),
            ("REINDEX", "[]"),
            ("REINDEX myTable", "[]"),
            ("PRAGMA quick_check(100)", "[['ok']]"),
            ("PRAGMA quick_check(myTable)", "[['ok']]"),
            ("PRAGMA optimize(0x80000000)", NOT_AUTHORIZED),
            ("PRAGMA optimize(abc)", NOT_AUTHORIZED),
            // ANALYZE's own table is an ordinary, readable one.
            ("SELECT count(*) > 0 FROM sqlite_stat1", "[[1]]"),
        ],
    );
}

#[test]
fn functions_off_the_allow_list_are_refused() {
    // Oracle 03, 32 and 41; spec item 47.
    let db = setup();
    let fn_denied = |name: &str, at: usize| {
        format!("error: not authorized to use function: {name} at offset {at}: SQLITE_ERROR")
    };
    check_all(
        &db,
        &[
            ("SELECT sqlite_version()", &fn_denied("sqlite_version", 7)),
            ("SELECT typeof(sqlite_version()) AS v", &fn_denied("sqlite_version", 14)),
            ("SELECT sqlite_source_id()", &fn_denied("sqlite_source_id", 7)),
            (
                "SELECT sqlite_compileoption_used('ENABLE_FTS5')",
                &fn_denied("sqlite_compileoption_used", 7),
            ),
            ("SELECT sqlite_compileoption_get(0)", &fn_denied("sqlite_compileoption_get", 7)),
            ("SELECT unistr('\\u0041')", &fn_denied("unistr", 7)),
            ("SELECT json_pretty('{\"a\":1}') AS v", &fn_denied("json_pretty", 7)),
            ("SELECT json_error_position('{')", &fn_denied("json_error_position", 7)),
            ("SELECT fts5(NULL)", &fn_denied("fts5", 7)),
            (
                "SELECT no_such_fn(1)",
                "error: no such function: no_such_fn at offset 7: SQLITE_ERROR",
            ),
            ("SELECT load_extension('x')", "error: not authorized: SQLITE_ERROR"),
            ("SELECT load_extension('libfoo')", "error: not authorized: SQLITE_ERROR"),
        ],
    );
    // Refused in any letter case (the message spells the call as written), in any clause.
    check_all(
        &db,
        &[
            ("SELECT SQLITE_VERSION()", &fn_denied("SQLITE_VERSION", 7)),
            ("SELECT Sqlite_Version()", &fn_denied("Sqlite_Version", 7)),
            ("SELECT a FROM ok WHERE sqlite_version() = ''", &fn_denied("sqlite_version", 23)),
            ("SELECT a FROM ok ORDER BY sqlite_source_id()", &fn_denied("sqlite_source_id", 26)),
            ("CREATE TABLE d(x DEFAULT (sqlite_version()))", &fn_denied("sqlite_version", 26)),
            ("SELECT if(1, 2, 3)", &fn_denied("if", 7)),
            ("SELECT rtreenode(2, x'00')", &fn_denied("rtreenode", 7)),
        ],
    );
    // A view or trigger body is checked when a statement using it is prepared (as the
    // runtime does: creating them succeeds).
    check_all(
        &db,
        &[
            ("CREATE VIEW vv AS SELECT sqlite_version()", "[]"),
            (
                "SELECT * FROM vv",
                "error: not authorized to use function: sqlite_version: SQLITE_ERROR",
            ),
            ("CREATE TRIGGER tv AFTER INSERT ON ok BEGIN SELECT sqlite_version(); END", "[]"),
            (
                "INSERT INTO ok VALUES (1, 2)",
                "error: not authorized to use function: sqlite_version: SQLITE_ERROR",
            ),
            ("SELECT count(*) FROM ok", "[[1]]"),
        ],
    );
}

#[test]
fn functions_on_the_allow_list_work() {
    // Oracle 41 (sampled).
    let db = setup();
    check_all(
        &db,
        &[
            (
                "SELECT printf('%05.1f|%s|%d', 3.14159, 'x', 42), format('%q', 'it''s'), \
                 instr('hello', 'll'), substr('hello', 2, 3), replace('a-b-c', '-', '+'), \
                 trim('  x  '), ltrim('xxy', 'x'), rtrim('yxx', 'x')",
                "[['003.1|x|42', 'it''''s', 3, 'ell', 'a+b+c', 'x', 'y', 'y']]",
            ),
            (
                "SELECT iif(1 > 2, 'yes', 'no'), coalesce(NULL, NULL, 3), nullif(5, 5), \
                 char(72, 105), unicode('é'), quote('a''b'), hex('AB'), unhex('4142'), \
                 concat('a', NULL, 'b'), concat_ws('-', 'a', NULL, 'b'), sign(-3), \
                 round(2.567, 2), abs(-7)",
                "[['no', 3, NULL, 'Hi', 233, '''a''''b''', '4142', x'4142', 'ab', 'a-b', -1, \
                 2.57, 7]]",
            ),
            (
                "SELECT round(pi(), 5), pow(2, 10), sqrt(16), log2(8), floor(-1.5), ceil(1.2), \
                 mod(7, 3), trunc(-2.7), round(degrees(atan2(1, 1)), 3), cos(0)",
                "[[3.14159, 1024.0, 4.0, 3.0, -2.0, 2.0, 1.0, -2.0, 45.0, 1.0]]",
            ),
            (
                "WITH v(x, g) AS (VALUES (1, 'a'), (2, 'a'), (4, 'b')) SELECT group_concat(x, ';'), \
                 string_agg(g, ','), total(x), avg(x), count(DISTINCT g) FROM v",
                "[['1;2;4', 'a,a,b', 7.0, 2.3333333333333335, 2]]",
            ),
            (
                "WITH v(x) AS (VALUES (10), (20), (20), (30)) SELECT x, row_number() OVER w, \
                 rank() OVER w, lag(x) OVER w, lead(x, 1, -1) OVER w, ntile(2) OVER w FROM v \
                 WINDOW w AS (ORDER BY x)",
                "[[10, 1, 1, NULL, 20, 1], [20, 2, 2, 10, 20, 1], [20, 3, 2, 20, 30, 2], \
                 [30, 4, 4, 20, -1, 2]]",
            ),
            ("SELECT typeof(random()), length(randomblob(8))", "[['integer', 8]]"),
            ("SELECT likely(1), unlikely(0), likelihood(1, 0.5)", "[[1, 0, 1]]"),
            (
                "SELECT date('2024-02-28', '+1 day'), datetime(0, 'unixepoch'), \
                 strftime('%Y-%j', '2024-12-31'), julianday('2000-01-01'), \
                 unixepoch('2024-01-01 00:00:00')",
                "[['2024-02-29', '1970-01-01 00:00:00', '2024-366', 2451544.5, 1704067200]]",
            ),
            (
                "SELECT json_extract('{\"a\":{\"b\":[1,2,{\"c\":\"x\"}]}}', '$.a.b[2].c'), \
                 json_object('k', 1, 'arr', json_array(1, 'two', NULL, 3.5)), \
                 json_group_array(value) FROM json_each('[1,2]')",
                "[['x', '{\"k\":1,\"arr\":[1,\"two\",null,3.5]}', '[1,2]']]",
            ),
            (
                "SELECT typeof(jsonb('{\"a\":[1,2]}')), json(jsonb('{\"a\":[1,2]}')), \
                 jsonb_extract(jsonb('{\"a\":[1,2]}'), '$.a[1]')",
                "[['blob', '{\"a\":[1,2]}', 2]]",
            ),
            ("SELECT json_extract('{not json', '$.a')", "error: malformed JSON: SQLITE_ERROR"),
            (
                "SELECT fullkey FROM json_tree('{\"a\":{\"b\":1}}') WHERE atom IS NOT NULL",
                "[['$.a.b']]",
            ),
        ],
    );
}

#[test]
fn only_allowed_virtual_table_modules() {
    // Oracle 33; spec item 50.
    let db = setup();
    check_all(
        &db,
        &[
            ("CREATE VIRTUAL TABLE old USING fts4(body)", NOT_AUTHORIZED),
            ("CREATE VIRTUAL TABLE old3 USING fts3(body)", NOT_AUTHORIZED),
            ("CREATE VIRTUAL TABLE t2 USING fts5abcd(body)", NOT_AUTHORIZED),
            ("CREATE VIRTUAL TABLE j USING json_each", NOT_AUTHORIZED),
            ("CREATE VIRTUAL TABLE f USING FtS5(body)", "[]"),
            ("CREATE VIRTUAL TABLE fv USING fTs5VoCaB(f, 'instance')", "[]"),
            ("CREATE VIRTUAL TABLE r USING rtree(id, a, b)", "[]"),
            ("CREATE VIRTUAL TABLE ri USING RTREE_I32(id, a, b)", "[]"),
            (
                "INSERT INTO f(body) VALUES ('hello world'); SELECT body FROM f WHERE f MATCH 'hello'",
                "[['hello world']]",
            ),
            ("DROP TABLE f; DROP TABLE r", "[]"),
        ],
    );
}

#[test]
fn no_raw_page_access_and_no_vacuum_into() {
    let db = setup();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy.db");
    let vacuum_into = format!("VACUUM INTO '{}'", copy.display());
    let in_transaction = "error: cannot VACUUM from within a transaction: SQLITE_ERROR";
    let schema = "error: table sqlite_master may not be modified: SQLITE_ERROR";
    check_all(
        &db,
        &[
            ("SELECT * FROM sqlite_dbpage", "error: no such table: sqlite_dbpage: SQLITE_ERROR"),
            (
                "SELECT data FROM sqlite_dbpage WHERE pgno = 1",
                "error: no such table: sqlite_dbpage: SQLITE_ERROR",
            ),
            (
                "UPDATE sqlite_dbpage SET data = zeroblob(4096) WHERE pgno = 2",
                "error: no such table: sqlite_dbpage: SQLITE_ERROR",
            ),
            ("CREATE VIRTUAL TABLE pages USING sqlite_dbpage", NOT_AUTHORIZED),
            ("SELECT * FROM dbstat", "error: no such table: dbstat: SQLITE_ERROR"),
            (&vacuum_into, in_transaction),
            ("VACUUM", in_transaction),
            ("DELETE FROM sqlite_master", schema),
            ("UPDATE sqlite_schema SET sql = 'x' WHERE name = '_cf_KV'", schema),
        ],
    );
    check_params(
        &db,
        "VACUUM INTO ?",
        &params![copy.display().to_string()],
        "error: cannot VACUUM from within a transaction: SQLITE_ERROR",
    );
    assert!(!copy.exists(), "VACUUM INTO must not write a copy of the database");
    // Even with no transaction open.
    db.commit().unwrap();
    assert!(db.exec(&format!("VACUUM INTO '{}'", copy.display()), &[]).is_err());
    assert!(!copy.exists(), "VACUUM INTO must not write a copy of the database");
    check(&db, "VACUUM", "error: cannot VACUUM from within a transaction: SQLITE_ERROR");
    check(
        &db,
        "DELETE FROM sqlite_master",
        "error: table sqlite_master may not be modified: SQLITE_ERROR",
    );
    assert_kv_intact(&db);
}

#[test]
fn trusted_sql_reaches_internal_tables_and_user_sql_still_does_not() {
    let db = setup();
    // Trusted mode ends with the closure, whether it succeeded or failed.
    let e = db
        .internal(|i| {
            i.connection().execute_batch("INSERT INTO _cf_KV VALUES ('z', x'09')")?;
            i.connection().execute_batch("SELECT * FROM missing")?;
            Ok(())
        })
        .unwrap_err();
    assert_eq!(e.to_string(), "no such table: missing: SQLITE_ERROR");
    check(&db, "SELECT * FROM _cf_KV", "error: access to _cf_KV.key is prohibited: SQLITE_AUTH");
    check(&db, "DELETE FROM _cf_KV WHERE key = 'z'", NOT_AUTHORIZED);
    // Triggers are refused even to trusted SQL.
    let e = db
        .internal(|i| {
            i.connection()
                .execute_batch("CREATE TRIGGER t AFTER INSERT ON _cf_KV BEGIN SELECT 1; END")?;
            Ok(())
        })
        .unwrap_err();
    assert_eq!(e.sqlite().map(|f| f.code_name()), Some("SQLITE_AUTH"), "{e}");
    assert_eq!(kv_rows(&db).len(), 2);
    assert!(is_reserved("_cF_anything") && !is_reserved("cf_x"));
}

#[test]
fn a_panic_in_trusted_sql_does_not_leave_the_connection_trusted() {
    let db = setup();
    let handle = db.handle();
    let panicked = catch_unwind(AssertUnwindSafe(|| {
        handle
            .internal(|_| -> durable_sql::Result<()> { panic!("internal code panicked") })
            .unwrap();
    }));
    assert!(panicked.is_err());
    check(&db, "SELECT * FROM _cf_KV", "error: access to _cf_KV.key is prohibited: SQLITE_AUTH");
    check(&db, "DELETE FROM _cf_KV", NOT_AUTHORIZED);
    assert_kv_intact(&db);
}
