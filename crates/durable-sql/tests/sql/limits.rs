//! The limits every connection enforces, at and just past each boundary (spec section 3.4,
//! items 48 and 57-61; oracle case 42), and a small `Limits::max_database_size`.

use durable_sql::{Limits, Options, SqlValue, params};

use crate::support::{check, check_all, check_params, db, db_with, error, run};

const TOO_BIG: &str = "error: string or blob too big: SQLITE_TOOBIG";

/// `SELECT '<x...>' AS v` padded to exactly `len` bytes.
fn statement_of(len: usize, prefix: &str) -> String {
    let fixed = prefix.len() + "SELECT '' AS v".len();
    format!("{prefix}SELECT '{}' AS v", "x".repeat(len - fixed))
}

fn columns(n: usize) -> String {
    (0..n).map(|i| format!("c{i}")).collect::<Vec<_>>().join(", ")
}

#[test]
fn columns_stop_at_100() {
    let db = db();
    let select = |n: usize| {
        format!("SELECT {}", (0..n).map(|i| i.to_string()).collect::<Vec<_>>().join(", "))
    };
    check_all(
        &db,
        &[
            (&format!("CREATE TABLE c100({})", columns(100)), "[]"),
            (
                &format!("CREATE TABLE c101({})", columns(101)),
                "error: too many columns on c101: SQLITE_ERROR",
            ),
            (
                "ALTER TABLE c100 ADD COLUMN c100",
                "error: too many columns on sqlite_altertab_c100: SQLITE_ERROR",
            ),
            (&format!("SELECT count(*) FROM ({})", select(100)), "[[1]]"),
            (&select(101), "error: too many columns in result set: SQLITE_ERROR"),
        ],
    );
    assert_eq!(db.exec(&select(100), &[]).unwrap().column_names().len(), 100);
}

#[test]
fn parameters_stop_at_100() {
    let db = db();
    let hundred: Vec<SqlValue> = (0..100).map(SqlValue::from).collect();
    let sum = format!("SELECT {} AS s", vec!["?"; 100].join(" + "));
    check_params(&db, &sum, &hundred, "[[4950]]");
    let list = format!("SELECT {}", vec!["?"; 101].join(", "));
    let mut hundred_one = hundred.clone();
    hundred_one.push(SqlValue::from(100));
    check_params(
        &db,
        &list,
        &hundred_one,
        "error: too many SQL variables at offset 307: SQLITE_ERROR",
    );
    check_params(&db, "SELECT ?100 AS last", &hundred, "[[99]]");
    check(
        &db,
        "SELECT ?101 AS v",
        "error: variable number must be between ?1 and ?100 at offset 7: SQLITE_ERROR",
    );
    check(
        &db,
        "SELECT ?0 AS v",
        "error: variable number must be between ?1 and ?100 at offset 7: SQLITE_ERROR",
    );
}

#[test]
fn statement_text_stops_at_100000_bytes_for_the_whole_call() {
    let db = db();
    let exact = statement_of(100_000, "");
    assert_eq!(exact.len(), 100_000);
    let out = db.exec(&exact, &[]).unwrap().one::<durable_sql::Row>().unwrap();
    assert_eq!(out.get::<String>("v").unwrap().len(), 100_000 - "SELECT '' AS v".len());
    check(&db, &statement_of(100_001, ""), "error: statement too long: SQLITE_TOOBIG");
    // The limit applies to the whole exec() string, not per statement.
    let two = statement_of(100_000, "SELECT 1; ");
    assert_eq!(two.len(), 100_000);
    assert!(db.exec(&two, &[]).is_ok());
    check(&db, &statement_of(100_005, "SELECT 1; "), "error: statement too long: SQLITE_TOOBIG");
    let many: String = "SELECT 1;".repeat(100_001 / 9 + 1);
    assert!(many.len() > 100_000);
    check(&db, &many, "error: statement too long: SQLITE_TOOBIG");
}

#[test]
fn values_stop_at_2_000_000_bytes() {
    let db = db();
    run(&db, "CREATE TABLE big(v)");
    // A stored row is its value plus a 5-byte record header: 1,999,995 bytes is the largest
    // value one column can hold.
    check_params(&db, "INSERT INTO big VALUES (?)", &params![vec![7u8; 1_999_995]], "[]");
    check_params(&db, "INSERT INTO big VALUES (?)", &params![vec![7u8; 1_999_996]], TOO_BIG);
    check(&db, "SELECT length(v) FROM big", "[[1999995]]");
    check_params(&db, "SELECT length(?)", &params![vec![0u8; 2_000_000]], "[[2000000]]");
    check_params(&db, "SELECT length(?)", &params![vec![0u8; 2_000_001]], TOO_BIG);
    check_params(&db, "SELECT length(?)", &params!["t".repeat(2_000_001)], TOO_BIG);
    check_params(&db, "SELECT length(?)", &params!["t".repeat(2_000_000)], "[[2000000]]");
    check(&db, "SELECT length(zeroblob(2000001))", TOO_BIG);
    check(&db, "SELECT length(randomblob(2000001))", TOO_BIG);
    check(&db, "SELECT length(zeroblob(2000000))", "[[2000000]]");
    // The limit is on a whole row, too.
    run(&db, "CREATE TABLE two(a, b)");
    check_params(
        &db,
        "INSERT INTO two VALUES (?, ?)",
        &params![vec![1u8; 1_000_001], vec![2u8; 1_000_001]],
        TOO_BIG,
    );
    check(&db, "SELECT count(*) FROM two", "[[0]]");
    let e = error(&db, "SELECT length(?)", &params![vec![0u8; 2_000_001]]);
    let failure = e.sqlite().expect("a SQLite failure");
    assert_eq!((failure.code, failure.code_name()), (18, "SQLITE_TOOBIG"));
}

#[test]
fn compound_selects_stop_at_5_terms() {
    let db = db();
    let union =
        |n: usize| (1..=n).map(|i| format!("SELECT {i}")).collect::<Vec<_>>().join(" UNION ALL ");
    check(&db, &union(5), "[[1], [2], [3], [4], [5]]");
    check(&db, &union(6), "error: too many terms in compound SELECT: SQLITE_ERROR");
    check(
        &db,
        &union(6).replace("UNION ALL", "UNION"),
        "error: too many terms in compound SELECT: SQLITE_ERROR",
    );
}

#[test]
fn like_and_glob_patterns_stop_at_50_bytes() {
    let db = db();
    let like = |n: usize| format!("SELECT 'a' LIKE '{}a'", "%".repeat(n - 1));
    let glob = |n: usize| format!("SELECT 'a' GLOB '{}a'", "*".repeat(n - 1));
    let too_complex = "error: LIKE or GLOB pattern too complex: SQLITE_ERROR";
    check(&db, &like(50), "[[1]]");
    check(&db, &like(51), too_complex);
    check(&db, &glob(50), "[[1]]");
    check(&db, &glob(51), too_complex);
    // Spec item 59: a bound pattern.
    check_params(&db, "SELECT 'a' LIKE ?", &params![format!("{}a", "%".repeat(50))], too_complex);
    check_params(&db, "SELECT 'a' LIKE ?", &params![format!("{}a", "%".repeat(49))], "[[1]]");
}

#[test]
fn expression_depth_and_function_arguments() {
    let db = db();
    let sum = |n: usize| format!("SELECT {} AS s", vec!["1"; n].join(" + "));
    let max = |n: usize| format!("SELECT max({}) AS m", vec!["1"; n].join(", "));
    check_all(
        &db,
        &[
            (&sum(100), "[[100]]"),
            (&sum(101), "error: Expression tree is too large (maximum depth 100): SQLITE_ERROR"),
            (&max(127), "[[1]]"),
            (&max(128), "error: too many arguments on function max at offset 7: SQLITE_ERROR"),
        ],
    );
}

#[test]
fn trigger_recursion_stops_at_depth_10() {
    // Oracle 42: the failing chain keeps the rows it had inserted.
    let db = db();
    run(
        &db,
        "CREATE TABLE rec(n); CREATE TRIGGER rec_t AFTER INSERT ON rec WHEN new.n < 50 \
         BEGIN INSERT INTO rec VALUES (new.n + 1); END; PRAGMA recursive_triggers = ON",
    );
    check(&db, "INSERT INTO rec VALUES (1)", "error: triggers nested too deep: SQLITE_ERROR");
    let written = db.exec("INSERT INTO rec VALUES (45)", &[]).unwrap().rows_written();
    assert_eq!(written, 6);
    check(&db, "SELECT count(*), max(n) FROM rec", "[[17, 50]]");
}

#[test]
fn a_small_max_database_size_fills_up() {
    let options =
        Options::new().limits(Limits { max_database_size: 16 * 4096, ..Limits::default() });
    let db = db_with(options);
    run(&db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
    db.exec("INSERT INTO t VALUES (1, ?)", &params![vec![1u8; 10_000]]).unwrap();
    db.commit().unwrap();
    let e = error(&db, "INSERT INTO t VALUES (2, ?)", &params![vec![2u8; 100_000]]);
    assert_eq!(e.to_string(), "database or disk is full: SQLITE_FULL");
    let failure = e.sqlite().unwrap();
    assert!(failure.is_critical());
    assert_eq!(failure.code_name(), "SQLITE_FULL");
    db.rollback().unwrap();
    // What was committed before survives.
    let db = db.reopen();
    check(&db, "SELECT id, length(v) FROM t", "[[1, 10000]]");
    assert!(db.database_size().unwrap() <= 16 * 4096);
}

#[test]
fn every_limit_follows_the_options() {
    let options = Options::new().limits(Limits {
        max_database_size: 10_000_000_000,
        max_columns: 6,
        max_statement_length: 200,
        max_bound_parameters: 2,
        max_value_size: 1000,
        max_compound_select: 2,
        max_expression_depth: 5,
        max_function_arguments: 2,
        max_like_pattern_length: 3,
        max_trigger_depth: 2,
    });
    let db = db_with(options);
    check_all(
        &db,
        &[
            ("CREATE TABLE c6(a, b, c, d, e, f)", "[]"),
            ("CREATE TABLE c7(a, b, c, d, e, f, g)", "error: too many columns on c7: SQLITE_ERROR"),
            ("SELECT 1, 2, 3, 4, 5, 6, 7", "error: too many columns in result set: SQLITE_ERROR"),
            (&format!("SELECT '{}'", "x".repeat(192)), "error: statement too long: SQLITE_TOOBIG"),
            (
                "SELECT ?3",
                "error: variable number must be between ?1 and ?2 at offset 7: SQLITE_ERROR",
            ),
            ("SELECT length(zeroblob(1001))", "error: string or blob too big: SQLITE_TOOBIG"),
            ("SELECT length(zeroblob(1000))", "[[1000]]"),
            ("SELECT 1 UNION ALL SELECT 2", "[[1], [2]]"),
            (
                "SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3",
                "error: too many terms in compound SELECT: SQLITE_ERROR",
            ),
            (
                "SELECT 1 + 1 + 1 + 1 + 1 + 1",
                "error: Expression tree is too large (maximum depth 5): SQLITE_ERROR",
            ),
            (
                "SELECT max(1, 2, 3)",
                "error: too many arguments on function max at offset 7: SQLITE_ERROR",
            ),
            ("SELECT 'a' LIKE '%%a'", "[[1]]"),
            ("SELECT 'a' LIKE '%%%a'", "error: LIKE or GLOB pattern too complex: SQLITE_ERROR"),
            (
                "CREATE TABLE r(n); CREATE TRIGGER rt AFTER INSERT ON r WHEN new.n < 3 BEGIN INSERT INTO r VALUES (new.n + 1); END",
                "[]",
            ),
        ],
    );
    check_params(
        &db,
        "SELECT ?, ?, ?",
        &params![1, 2, 3],
        "error: too many SQL variables at offset 13: SQLITE_ERROR",
    );
    check_params(&db, "SELECT length(?)", &params![vec![0u8; 1001]], TOO_BIG);
    check(&db, "PRAGMA recursive_triggers = ON", "[]");
    check(&db, "INSERT INTO r VALUES (1)", "error: triggers nested too deep: SQLITE_ERROR");
    check(&db, "INSERT INTO r VALUES (2)", "[]");
}
