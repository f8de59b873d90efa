//! Typed rows (issue 19): `to_array::<T>()`, `one::<T>()`, `rows_as::<T>()`, serde structs
//! read by column name, every integer width range checked, `f32`, JSON columns.

use std::fmt::Debug;

use durable_sql::{Error, FromSqlValue, Row, SqlValue, params};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::support::db;

#[derive(Debug, Deserialize, PartialEq)]
struct User {
    id: u32,
    name: String,
    email: Option<String>,
}

fn users() -> crate::support::TestDb {
    let db = db();
    db.exec("CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT, email TEXT, age INTEGER)", &[])
        .unwrap();
    db.exec("INSERT INTO users VALUES (1, 'ada', NULL, 36), (2, 'grace', 'g@navy.mil', 300)", &[])
        .unwrap();
    db
}

#[test]
fn structs_read_columns_by_name() {
    let db = users();
    // Columns in another order than the fields, and one (`age`) no field asks for.
    let all: Vec<User> = db
        .exec("SELECT age, email, name, id FROM users ORDER BY id", &[])
        .unwrap()
        .to_array()
        .unwrap();
    assert_eq!(
        all,
        [
            User { id: 1, name: "ada".into(), email: None },
            User { id: 2, name: "grace".into(), email: Some("g@navy.mil".into()) },
        ]
    );
    // A missing `Option` column is `None`; a missing required one is serde's error.
    let no_email: User =
        db.exec("SELECT id, name FROM users WHERE id = 2", &[]).unwrap().one().unwrap();
    assert_eq!(no_email.email, None);
    let e = db.exec("SELECT id FROM users WHERE id = 2", &[]).unwrap().one::<User>().unwrap_err();
    assert!(matches!(&e, Error::Decode { .. }), "{e:?}");
    assert_eq!(e.to_string(), "missing field `name`");
    // The runtime's rule for repeated names: the last column of the name wins.
    let dup: User =
        db.exec("SELECT 'first' AS name, 7 AS id, 'second' AS name", &[]).unwrap().one().unwrap();
    assert_eq!(dup.name, "second");
}

#[test]
fn one_keeps_the_runtimes_messages_and_reads_single_columns() {
    let db = users();
    let e = db.exec("SELECT * FROM users WHERE id = 99", &[]).unwrap().one::<User>().unwrap_err();
    assert_eq!(e.to_string(), "Expected exactly one result from SQL query, but got no results.");
    let e = db.exec("SELECT * FROM users", &[]).unwrap().one::<User>().unwrap_err();
    assert_eq!(
        e.to_string(),
        "Expected exactly one result from SQL query, but got multiple results."
    );
    // A row of one column reads as that column's value.
    let n: i64 = db.exec("SELECT count(*) FROM users", &[]).unwrap().one().unwrap();
    assert_eq!(n, 2);
    let name: String =
        db.exec("SELECT name FROM users WHERE id = ?", &params![1]).unwrap().one().unwrap();
    assert_eq!(name, "ada");
    let none: Option<i64> =
        db.exec("SELECT max(id) FROM users WHERE id > 10", &[]).unwrap().one().unwrap();
    assert_eq!(none, None);
    let some: Option<i64> = db.exec("SELECT max(id) FROM users", &[]).unwrap().one().unwrap();
    assert_eq!(some, Some(2));
    // More columns than one cannot be a plain value; the error says why.
    let e =
        db.exec("SELECT id, name FROM users WHERE id = 1", &[]).unwrap().one::<i64>().unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot read a row of 2 columns as an i64; only a row of one column can be"
    );
    // And a single column's conversion error names it.
    let e = db.exec("SELECT name FROM users WHERE id = 1", &[]).unwrap().one::<i64>().unwrap_err();
    assert_eq!(e.to_string(), r#"column "name": cannot convert SQL text to i64"#);
}

#[test]
fn rows_as_iterates_and_reports_each_bad_row() {
    let db = users();
    let mut cursor = db.exec("SELECT id, age FROM users ORDER BY id", &[]).unwrap();
    let rows: Vec<Result<(u32, u8), Error>> = cursor.rows_as().collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].as_ref().unwrap(), &(1, 36));
    // Grace's age does not fit a u8: that row is an error naming the column, the others read.
    let e = rows[1].as_ref().unwrap_err();
    assert_eq!(e.to_string(), r#"column "age": 300 is out of range for u8"#);
    assert!(matches!(e, Error::Column { source, .. }
        if matches!(**source, Error::OutOfRange { to: "u8", .. })));
    // It consumes the cursor's one stream: the iterator and the cursor agree.
    assert_eq!(cursor.rows_read(), 2);
    assert!(cursor.next().is_none());

    // Typed and untyped reads share the stream.
    let mut cursor = db.exec("SELECT id FROM users ORDER BY id", &[]).unwrap();
    let first: Row = cursor.next().unwrap().unwrap();
    let rest: Vec<u32> = cursor.rows_as().collect::<Result<_, _>>().unwrap();
    assert_eq!((first.get::<u32>("id").unwrap(), rest), (1, vec![2]));
}

#[test]
fn to_array_fails_whole_on_a_bad_row_and_rows_still_read_as_rows() {
    let db = users();
    let e = db
        .exec("SELECT * FROM users ORDER BY id", &[])
        .unwrap()
        .to_array::<(i64, String, Option<String>, i8)>()
        .unwrap_err();
    assert_eq!(e.to_string(), r#"column "age": 300 is out of range for i8"#);
    let rows = db.exec("SELECT * FROM users ORDER BY id", &[]).unwrap().to_array::<Row>().unwrap();
    assert_eq!(rows[1].get::<i64>("age").unwrap(), 300);
    let user: User = rows.into_iter().next().unwrap().read().unwrap();
    assert_eq!(user.name, "ada");
}

/// Reads `sql`'s one value as `T` both ways (`Row::get` and a one-field struct through
/// serde) and checks that they agree with `expected` (`Ok(value)` or the error's text).
fn check_read<T>(sql: &str, expected: Result<T, &str>)
where
    T: FromSqlValue + DeserializeOwned + PartialEq + Debug,
{
    #[derive(Deserialize)]
    struct One<T> {
        v: T,
    }
    let db = db();
    let row: Row = db.exec(&format!("SELECT {sql} AS v"), &[]).unwrap().one().unwrap();
    let by_get = row.get::<T>("v").map_err(|e| e.to_string());
    let by_serde = row.read::<One<T>>().map(|o| o.v).map_err(|e| e.to_string());
    let expected = expected.map_err(str::to_owned);
    assert_eq!(by_get, expected, "Row::get of {sql}");
    assert_eq!(by_serde, expected, "serde of {sql}");
}

#[test]
fn every_integer_width_is_range_checked() {
    check_read::<i8>("127", Ok(127));
    check_read::<i8>("-128", Ok(-128));
    check_read::<i8>("128", Err(r#"column "v": 128 is out of range for i8"#));
    check_read::<i16>("-32769", Err(r#"column "v": -32769 is out of range for i16"#));
    check_read::<i16>("32767", Ok(32767));
    check_read::<i32>("2147483648", Err(r#"column "v": 2147483648 is out of range for i32"#));
    check_read::<i32>("-2147483648", Ok(i32::MIN));
    check_read::<i64>("-9223372036854775808", Ok(i64::MIN));
    check_read::<u8>("255", Ok(255));
    check_read::<u8>("256", Err(r#"column "v": 256 is out of range for u8"#));
    check_read::<u8>("-1", Err(r#"column "v": -1 is out of range for u8"#));
    check_read::<u16>("65536", Err(r#"column "v": 65536 is out of range for u16"#));
    check_read::<u32>("4294967295", Ok(u32::MAX));
    check_read::<u32>("4294967296", Err(r#"column "v": 4294967296 is out of range for u32"#));
    check_read::<u64>("9223372036854775807", Ok(i64::MAX as u64));
    check_read::<u64>("-5", Err(r#"column "v": -5 is out of range for u64"#));
    check_read::<usize>("7", Ok(7));
    // The storage class still has to be INTEGER: a REAL is not truncated.
    check_read::<u16>("1.5", Err(r#"column "v": cannot convert SQL real to u16"#));
    check_read::<Option<u8>>("NULL", Ok(None));
    check_read::<Option<u8>>("9", Ok(Some(9)));
    check_read::<Option<u8>>("999", Err(r#"column "v": 999 is out of range for u8"#));
}

#[test]
fn floats_and_other_scalars() {
    check_read::<f32>("1.5", Ok(1.5));
    check_read::<f32>("3", Ok(3.0));
    check_read::<f32>(
        "1e39",
        Err(r#"column "v": 1000000000000000000000000000000000000000 is out of range for f32"#),
    );
    check_read::<f32>("'x'", Err(r#"column "v": cannot convert SQL text to f32"#));
    check_read::<f64>("2.5", Ok(2.5));
    check_read::<bool>("1", Ok(true));
    check_read::<bool>("0", Ok(false));
    check_read::<String>("'héllo'", Ok("héllo".into()));
    check_read::<String>("NULL", Err(r#"column "v": cannot convert SQL null to String"#));
    check_read::<Vec<u8>>("x'00ff'", Ok(vec![0, 255]));
    check_read::<SqlValue>("x'01'", Ok(SqlValue::Blob(vec![1])));
    check_read::<SqlValue>("NULL", Ok(SqlValue::Null));
    check_read::<SqlValue>("0.5", Ok(SqlValue::Real(0.5)));
}

#[test]
fn json_columns() {
    use serde_json::json;
    let db = db();
    db.exec("CREATE TABLE docs(id INTEGER PRIMARY KEY, body TEXT, tags TEXT, kind TEXT)", &[])
        .unwrap();
    db.exec(
        "INSERT INTO docs VALUES (1, ?, '[\"a\",\"b\"]', 'draft'), (2, 'not json', '[]', 'gone')",
        &params![r#"{"title": "hi", "pages": 3}"#],
    )
    .unwrap();

    // `Row::get::<serde_json::Value>` parses TEXT as JSON; other classes map directly.
    let rows = db.exec("SELECT * FROM docs ORDER BY id", &[]).unwrap().to_array::<Row>().unwrap();
    assert_eq!(
        rows[0].get::<serde_json::Value>("body").unwrap(),
        json!({"title": "hi", "pages": 3})
    );
    assert_eq!(rows[0].get::<serde_json::Value>("id").unwrap(), json!(1));
    let e = rows[1].get::<serde_json::Value>("body").unwrap_err();
    assert!(matches!(&e, Error::Column { source, .. } if matches!(**source, Error::Decode { .. })));
    assert!(e.to_string().starts_with(r#"column "body": not JSON: "#), "{e}");
    check_read_json("NULL", Ok(json!(null)));
    check_read_json("2.5", Ok(json!(2.5)));
    check_read_json("x'00'", Err(r#"column "v": cannot convert SQL blob to serde_json::Value"#));

    // In a struct, a field that wants a struct, map or sequence reads the column's JSON, and
    // an enum field reads a unit variant's name.
    #[derive(Debug, Deserialize, PartialEq)]
    struct Body {
        title: String,
        pages: u16,
    }
    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum Kind {
        Draft,
        Published,
    }
    #[derive(Debug, Deserialize, PartialEq)]
    struct Doc {
        id: i64,
        body: Body,
        tags: Vec<String>,
        kind: Kind,
    }
    let doc: Doc = db.exec("SELECT * FROM docs WHERE id = 1", &[]).unwrap().one().unwrap();
    assert_eq!(
        doc,
        Doc {
            id: 1,
            body: Body { title: "hi".into(), pages: 3 },
            tags: vec!["a".into(), "b".into()],
            kind: Kind::Draft
        }
    );
    let e = db.exec("SELECT * FROM docs WHERE id = 2", &[]).unwrap().one::<Doc>().unwrap_err();
    assert!(
        e.to_string().starts_with(r#"column "body": text is not the JSON of a struct: "#),
        "{e}"
    );
    let e = db
        .exec(
            "SELECT id, ? AS body, tags, kind FROM docs WHERE id = 2",
            &params![r#"{"title":"x","pages":1}"#],
        )
        .unwrap()
        .one::<Doc>()
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"column "kind": unknown variant `gone`, expected `draft` or `published`"#
    );

    // A whole row as `serde_json::Value` is the runtime's row object: TEXT stays text there.
    let row: serde_json::Value =
        db.exec("SELECT id, kind FROM docs WHERE id = 1", &[]).unwrap().one().unwrap();
    assert_eq!(row, json!({"id": 1, "kind": "draft"}));
}

fn check_read_json(sql: &str, expected: Result<serde_json::Value, &str>) {
    let db = db();
    let row: Row = db.exec(&format!("SELECT {sql} AS v"), &[]).unwrap().one().unwrap();
    assert_eq!(
        row.get::<serde_json::Value>("v").map_err(|e| e.to_string()),
        expected.map_err(str::to_owned)
    );
}
