//! `durable sql`: tables, JSON rows, counters, parameters and the authorizer.

use serde_json::json;

use crate::support::Data;

#[test]
fn creates_inserts_and_selects_with_counters() {
    let data = Data::new();
    let out = data.ok(&["sql", "room", "CREATE TABLE msgs (id INTEGER PRIMARY KEY, body)"]);
    assert!(out.contains("rows written: "), "{out}");
    let out = data.ok(&["sql", "room", "INSERT INTO msgs (body) VALUES (?), (?)", "hello", "42"]);
    assert_eq!(out.trim(), "(0 rows; rows read: 0, rows written: 2)");

    let table = data.ok(&["sql", "room", "SELECT id, body, typeof(body) AS t FROM msgs"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines[0], "id | body  | t");
    assert_eq!(lines[1], "---+-------+--------");
    assert_eq!(lines[2], "1  | hello | text");
    // A parameter that parses as JSON binds as that JSON: 42 is an integer.
    assert_eq!(lines[3], "2  | 42    | integer");
    assert_eq!(lines[4], "(2 rows; rows read: 2, rows written: 0)");

    let doc = data.json(&["sql", "room", "SELECT * FROM msgs WHERE id = ?", "1"]);
    assert_eq!(
        doc,
        json!({
            "columns": ["id", "body"],
            "rows": [{"id": 1, "body": "hello"}],
            "rows_read": 1,
            "rows_written": 0,
        })
    );
}

#[test]
fn parameters_bind_json_types_blobs_and_negative_numbers() {
    let data = Data::new();
    let doc = data.json(&[
        "sql",
        "p",
        "SELECT ? AS a, ? AS b, ? AS c, ? AS d, ? AS e, typeof(?) AS f",
        "-5",
        "1.5",
        "null",
        r#""42""#,
        r#"{"$bytes": "00ff"}"#,
        "true",
    ]);
    assert_eq!(
        doc["rows"][0],
        json!({"a": -5, "b": 1.5, "c": null, "d": "42", "e": {"$bytes": "00ff"}, "f": "integer"})
    );
    let err = data.fails(&["sql", "p", "SELECT ?", "[1, 2]"]);
    assert!(err.contains("SQL binds no arrays"), "{err}");
}

#[test]
fn errors_are_the_runtimes_messages_and_change_nothing() {
    let data = Data::new();
    data.ok(&["sql", "r", "CREATE TABLE t (x INTEGER)"]);
    assert_eq!(
        data.fails(&["sql", "r", "SELECT * FROM nope"]),
        "durable: no such table: nope: SQLITE_ERROR"
    );
    assert_eq!(
        data.fails(&["sql", "r", "ATTACH DATABASE 'x.db' AS x"]),
        "durable: not authorized: SQLITE_AUTH"
    );
    data.ok(&["kv", "put", "r", "k", "1"]);
    let err = data.fails(&["sql", "r", "SELECT * FROM _cf_KV"]);
    assert!(err.contains("SQLITE_AUTH"), "{err}");
    // The first statement ran, the second failed: the command as a whole changed nothing.
    data.fails(&["sql", "r", "INSERT INTO t VALUES (1); INSERT INTO nope VALUES (2)"]);
    let doc = data.json(&["sql", "r", "SELECT count(*) AS n FROM t"]);
    assert_eq!(doc["rows"][0]["n"], 0);
}
