//! `Cursor` and `Row`: consumption modes sharing one stream, `one()`, read-ahead, column
//! names (duplicates included), and cursors outliving their database's contents (spec
//! section 2.2; oracle cases 03, 27).

use durable_sql::{Error, SqlValue, params};

use crate::support::{ABC_CDE, Mode, db, exec_mode, names, render, run, value};

const UNION: &str = "SELECT 1 AS col UNION ALL SELECT 'foo' UNION ALL SELECT 3";

#[test]
fn every_mode_reads_the_same_rows() {
    let db = db();
    run(&db, "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, score REAL, data BLOB)");
    run(&db, "INSERT INTO t VALUES (1, 'a', 1.5, x'00ff'), (2, 'b', NULL, NULL)");
    let sql = "SELECT id, name, score, data FROM t ORDER BY id";
    for mode in [Mode::ToArray, Mode::Raw, Mode::Iterate] {
        let out = exec_mode(&db, sql, &[], mode).unwrap();
        assert_eq!(render(&out.rows), "[[1, 'a', 1.5, x'00ff'], [2, 'b', NULL, NULL]]", "{mode:?}");
        assert_eq!(names(&out.columns), ["id", "name", "score", "data"], "{mode:?}");
        assert_eq!((out.read, out.written), (2, 0), "{mode:?}");
    }
    let next = exec_mode(&db, sql, &[], Mode::Next).unwrap();
    assert_eq!(render(&next.rows), "[[1, 'a', 1.5, x'00ff']]");
    assert_eq!(next.read, 2, "read ahead by one");
}

#[test]
fn rows_carry_their_column_names() {
    let db = db();
    let rows = db.exec(UNION, &[]).unwrap().to_array::<durable_sql::Row>().unwrap();
    let values: Vec<&SqlValue> = rows.iter().map(|r| r.value("col").unwrap()).collect();
    assert_eq!(
        values,
        [&SqlValue::Integer(1), &SqlValue::Text("foo".into()), &SqlValue::Integer(3)]
    );
    let row =
        db.exec("SELECT 123 AS foo, 'abc' AS bar", &[]).unwrap().one::<durable_sql::Row>().unwrap();
    assert_eq!(names(row.column_names()), ["foo", "bar"]);
    assert_eq!(row.get::<i64>("foo").unwrap(), 123);
    assert_eq!(row.get::<String>("bar").unwrap(), "abc");
    assert_eq!(row.get_index::<String>(1).unwrap(), "abc");
    assert_eq!(row.values(), [SqlValue::Integer(123), SqlValue::Text("abc".into())]);
    assert_eq!(row.get::<i64>("nope").unwrap_err().to_string(), "no such column: nope");
    assert!(matches!(row.get_index::<i64>(2), Err(Error::NoSuchColumn(_))));
    assert!(row.value("nope").is_none());
}

#[test]
fn column_names_follow_sqlite() {
    // Spec items 1-6 and 23; oracle 27.
    let db = db();
    let cases: &[(&str, &[SqlValue], &[&str], &str)] = &[
        ("SELECT 123", &[], &["123"], "[[123]]"),
        ("SELECT 'hello'", &[], &["'hello'"], "[['hello']]"),
        ("SELECT ? + ?", &params![123, 456], &["? + ?"], "[[579]]"),
        ("SELECT ?", &params![456], &["?"], "[[456]]"),
        ("SELECT x'ff' AS blob", &[], &["blob"], "[[x'ff']]"),
        (
            "SELECT 1 AS \"my col\", 2 AS \"été\", 3 AS [x y]",
            &[],
            &["my col", "été", "x y"],
            "[[1, 2, 3]]",
        ),
        ("SELECT count(*), 1 + 1 FROM (SELECT 1)", &[], &["count(*)", "1 + 1"], "[[1, 2]]"),
        // A comment after the last statement belongs to it, and to its column's name.
        ("SELECT 1 -- trailing comment", &[], &["1 -- trailing comment"], "[[1]]"),
        ("SELECT 1 /* c */", &[], &["1 /* c */"], "[[1]]"),
        ("SELECT 1 -- c\n", &[], &["1 -- c"], "[[1]]"),
    ];
    for (sql, params, columns, rows) in cases {
        let out = exec_mode(&db, sql, params, Mode::ToArray).unwrap();
        assert_eq!(names(&out.columns), *columns, "{sql}");
        assert_eq!(render(&out.rows), *rows, "{sql}");
    }
    run(&db, "CREATE TABLE abc(a, b, c)");
    let update = db.exec("UPDATE abc SET a = 1 WHERE b = 123542", &[]).unwrap();
    assert!(update.column_names().is_empty());
    let insert = db.exec("INSERT INTO abc VALUES (1, 2, 3)", &[]).unwrap();
    assert!(insert.column_names().is_empty());
    let returning = db.exec("UPDATE abc SET a = 5 WHERE 0 RETURNING *", &[]).unwrap();
    assert_eq!(names(returning.column_names()), ["a", "b", "c"], "known before any row");
}

#[test]
fn duplicate_column_names_keep_every_value_and_name_the_last() {
    // Spec item 22, oracle 27: toArray keeps the last value per name, raw keeps all.
    let db = db();
    run(&db, ABC_CDE);
    let sql = "SELECT * FROM abc, cde ORDER BY abc.a, cde.c DESC";
    let mut cursor = db.exec(sql, &[]).unwrap();
    assert_eq!(names(cursor.column_names()), ["a", "b", "c", "c", "d", "e"]);
    let rows = cursor.to_array::<durable_sql::Row>().unwrap();
    assert_eq!(names(cursor.column_names()), ["a", "b", "c", "c", "d", "e"], "after the end");
    let raw: Vec<Vec<SqlValue>> = rows.iter().map(|r| r.values().to_vec()).collect();
    assert_eq!(
        render(&raw),
        "[[1, 2, 3, 7, 8, 9], [1, 2, 3, 1, 2, 3], [4, 5, 6, 7, 8, 9], [4, 5, 6, 1, 2, 3]]"
    );
    let cs: Vec<i64> = rows.iter().map(|r| r.get("c").unwrap()).collect();
    assert_eq!(cs, [7, 1, 7, 1], "the last column named c wins");
    let entries: Vec<(&str, String)> =
        rows[0].entries().into_iter().map(|(k, v)| (k, value(v))).collect();
    assert_eq!(
        entries,
        [("a", "1"), ("b", "2"), ("c", "7"), ("d", "8"), ("e", "9")]
            .map(|(k, v)| (k, v.to_owned()))
    );

    let row = db.exec("SELECT 1 AS x, 2 AS x", &[]).unwrap().one::<durable_sql::Row>().unwrap();
    assert_eq!(row.value("x"), Some(&SqlValue::Integer(2)));
    assert_eq!(row.entries(), [("x", &SqlValue::Integer(2))]);
    assert_eq!(row.values(), [SqlValue::Integer(1), SqlValue::Integer(2)]);
}

#[test]
fn one_wants_exactly_one_row() {
    // Spec items 10-12, oracle 03.
    let db = db();
    run(&db, "CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3)");

    let e = db
        .exec("SELECT x FROM t WHERE x = 99", &[])
        .unwrap()
        .one::<durable_sql::Row>()
        .unwrap_err();
    assert!(matches!(e, Error::NoResults));
    assert_eq!(e.to_string(), "Expected exactly one result from SQL query, but got no results.");

    let mut many = db.exec("SELECT x FROM t", &[]).unwrap();
    let e = many.one::<durable_sql::Row>().unwrap_err();
    assert!(matches!(e, Error::MultipleResults));
    assert_eq!(
        e.to_string(),
        "Expected exactly one result from SQL query, but got multiple results."
    );
    assert!(many.next().is_none(), "one() closes the cursor on multiple results");

    let mut single = db.exec("SELECT x FROM t WHERE x = 2", &[]).unwrap();
    assert_eq!(single.one::<durable_sql::Row>().unwrap().get_index::<i64>(0).unwrap(), 2);
    assert!(single.next().is_none(), "exhausted after one()");
    assert!(single.to_array::<durable_sql::Row>().unwrap().is_empty());
    assert!(matches!(single.one::<durable_sql::Row>(), Err(Error::NoResults)));

    // one() checks the rows that remain on a partly read cursor.
    let mut partly = db.exec("SELECT x FROM t ORDER BY x", &[]).unwrap();
    partly.next().unwrap().unwrap();
    partly.next().unwrap().unwrap();
    assert_eq!(partly.one::<durable_sql::Row>().unwrap().get_index::<i64>(0).unwrap(), 3);

    // An aggregate over nothing is still one row.
    let row = db
        .exec("SELECT max(x) AS m FROM t WHERE x > 100", &[])
        .unwrap()
        .one::<durable_sql::Row>()
        .unwrap();
    assert_eq!(row.value("m"), Some(&SqlValue::Null));
}

#[test]
fn modes_share_one_stream() {
    let db = db();
    run(&db, "CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3), (4), (5)");
    let mut cursor = db.exec("SELECT x FROM t ORDER BY x", &[]).unwrap();
    assert_eq!(cursor.next().unwrap().unwrap().get::<i64>("x").unwrap(), 1);
    assert_eq!(cursor.raw().next().unwrap().unwrap(), [SqlValue::Integer(2)]);
    assert_eq!(render(&cursor.raw().take(1).collect::<Result<Vec<_>, _>>().unwrap()), "[[3]]");
    assert_eq!(render(&cursor.to_raw_array().unwrap()), "[[4], [5]]");
    assert!(cursor.next().is_none());
    assert!(cursor.next().is_none(), "stays exhausted");
    assert!(cursor.raw().next().is_none());
    assert!(cursor.to_array::<durable_sql::Row>().unwrap().is_empty());
    assert_eq!(names(cursor.column_names()), ["x"]);
}

#[test]
fn iterating_an_empty_result() {
    // Spec item 8's `done` without a value; oracle 03 "next() on empty".
    let db = db();
    run(&db, "CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3)");
    let out = exec_mode(&db, "SELECT * FROM t WHERE x > 100", &[], Mode::Next).unwrap();
    assert!(out.rows.is_empty());
    assert_eq!(names(&out.columns), ["x"]);
    assert_eq!(out.read, 3);
    let out = exec_mode(&db, "SELECT 1 WHERE 0", &[], Mode::Next).unwrap();
    assert!(out.rows.is_empty());
    assert_eq!(out.read, 0);
}

#[test]
fn read_ahead_keeps_rows_read_one_ahead() {
    // Spec item 73: after k rows of 10, rows_read == min(k + 1, 10).
    let db = db();
    run(
        &db,
        "CREATE TABLE t(x); WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c \
         WHERE n < 10) INSERT INTO t SELECT n FROM c",
    );
    let mut cursor = db.exec("SELECT * FROM t", &[]).unwrap();
    assert_eq!(cursor.rows_read(), 1, "the eager first step read one row");
    let mut seen = Vec::new();
    for k in 1..=10u64 {
        cursor.next().unwrap().unwrap();
        seen.push(cursor.rows_read());
        assert_eq!(cursor.rows_read(), (k + 1).min(10), "after {k} rows");
    }
    assert!(cursor.next().is_none());
    assert_eq!(cursor.rows_read(), 10, "frozen at the end");
    assert_eq!(cursor.rows_written(), 0);
}

#[test]
fn nested_cursors_count_separately() {
    // Spec item 74.
    let db = db();
    run(&db, ABC_CDE);
    let mut outer = db.exec("SELECT * FROM abc", &[]).unwrap();
    let mut inner_rows = 0;
    for row in &mut outer {
        row.unwrap();
        let mut inner = db.exec("SELECT * FROM cde", &[]).unwrap();
        inner_rows += inner.to_array::<durable_sql::Row>().unwrap().len();
        assert_eq!(inner.rows_read(), 2);
    }
    assert_eq!(inner_rows, 4);
    assert_eq!(outer.rows_read(), 2);
}

#[test]
fn an_error_after_the_first_row_surfaces_when_reading() {
    // Oracle 03 "runtime error mid-iteration": the first row is fine, the second fails.
    let db = db();
    run(&db, "CREATE TABLE t(id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1), (2), (3)");
    let sql = "SELECT id, CASE WHEN id = 2 THEN abs(-9223372036854775808) ELSE id END AS v \
               FROM t ORDER BY id";
    let mut cursor = db.exec(sql, &[]).unwrap();
    let e = cursor.to_array::<durable_sql::Row>().unwrap_err();
    assert_eq!(e.to_string(), "integer overflow: SQLITE_ERROR");
    assert!(cursor.next().is_none(), "a failed cursor is finished");
}

#[test]
fn a_cursor_may_see_writes_made_after_it_started() {
    // No snapshot isolation (spec section 2.2): a scan sees rows appended behind it.
    let db = db();
    run(&db, "CREATE TABLE t(id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1), (2)");
    let mut cursor = db.exec("SELECT id FROM t ORDER BY id", &[]).unwrap();
    assert_eq!(cursor.next().unwrap().unwrap().get::<i64>("id").unwrap(), 1);
    run(&db, "INSERT INTO t VALUES (3)");
    assert_eq!(render(&cursor.to_raw_array().unwrap()), "[[2], [3]]");
}

#[test]
fn cursors_can_move_between_threads() {
    let db = db();
    run(&db, "CREATE TABLE t(x); INSERT INTO t VALUES (1), (2)");
    let mut cursor = db.exec("SELECT x FROM t ORDER BY x", &[]).unwrap();
    cursor.next().unwrap().unwrap();
    let rest = std::thread::spawn(move || cursor.to_raw_array().unwrap()).join().unwrap();
    assert_eq!(render(&rest), "[[2]]");
}

#[test]
fn counters_belong_to_one_execution() {
    // Spec item 72: a cached statement run twice reports each run's counters.
    let db = db();
    run(&db, "CREATE TABLE tbl(id INTEGER PRIMARY KEY, value TEXT)");
    let insert = "INSERT INTO tbl(id, value) VALUES (?, ?)";
    let first = db.exec(insert, &params![1, "a"]).unwrap();
    let second = db.exec(insert, &params![2, "b"]).unwrap();
    assert_eq!((first.rows_read(), first.rows_written()), (1, 1));
    assert_eq!((second.rows_read(), second.rows_written()), (1, 1));
    let mut scan = db.exec("SELECT * FROM tbl", &[]).unwrap();
    scan.to_array::<durable_sql::Row>().unwrap();
    assert_eq!(scan.rows_read(), 2);
    // The statement went back to the cache; running it again leaves this cursor's counters.
    let mut again = db.exec("SELECT * FROM tbl WHERE 0 OR 1", &[]).unwrap();
    let mut same = db.exec("SELECT * FROM tbl", &[]).unwrap();
    assert_eq!(same.next().map(|r| r.is_ok()), Some(true));
    assert_eq!((scan.rows_read(), scan.rows_written()), (2, 0));
    assert_eq!(same.rows_read(), 2);
    again.close();
}
