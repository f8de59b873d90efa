//! Values in and out: how each Rust parameter binds (an `i64` as INTEGER, an `f64` as REAL),
//! the five storage classes coming back, affinity, and conversions to Rust types (spec
//! section 2.1; oracle cases 03, 26, 28).

use durable_sql::{Error, SqlValue, params};

use crate::support::{check, check_all, check_params, db, query, run};

#[test]
fn each_parameter_binds_as_its_own_storage_class() {
    let db = db();
    let cases: &[(&str, &[SqlValue], &str)] = &[
        // i64 binds INTEGER (the runtime's JS numbers always bind REAL; Rust keeps the type).
        ("SELECT typeof(?), ?", &params![3_i64, 3_i64], "[['integer', 3]]"),
        ("SELECT typeof(?), ?", &params![3.0_f64, 3.0_f64], "[['real', 3.0]]"),
        ("SELECT ? / 2, ? / 2", &params![7_i64, 7.0_f64], "[[3, 3.5]]"),
        ("SELECT typeof(?), ? / 2", &params![1.0, 1.0], "[['real', 0.5]]"),
        ("SELECT typeof(?)", &params![7_i32], "[['integer']]"),
        ("SELECT typeof(?)", &params![7_u32], "[['integer']]"),
        ("SELECT typeof(?)", &params![1.5_f32], "[['real']]"),
        // bool binds INTEGER 0/1 (the runtime binds JS booleans as text).
        ("SELECT typeof(?1), ?1, ?2", &params![true, false], "[['integer', 1, 0]]"),
        ("SELECT typeof(?), ?", &params![i64::MAX, i64::MAX], "[['integer', 9223372036854775807]]"),
        ("SELECT ?", &params![i64::MIN], "[[-9223372036854775808]]"),
        (
            "SELECT ? AS s, typeof(?) AS te, ? AS n, typeof(?) AS tn",
            &params!["café", "", None::<i64>, ()],
            "[['café', 'text', NULL, 'null']]",
        ),
        (
            "SELECT ?, ?, ?, typeof(?), length(?)",
            &params![
                vec![0u8, 1, 255],
                [0xab_u8, 0xcd],
                Vec::<u8>::new(),
                Vec::<u8>::new(),
                &[0u8, 1, 255][..]
            ],
            "[[x'0001ff', x'abcd', x'', 'blob', 3]]",
        ),
        ("SELECT ?, typeof(?)", &params![Some("x"), None::<&str>], "[['x', 'null']]"),
        // NaN binds as NULL; infinities and -0.0 survive.
        ("SELECT ?, typeof(?)", &params![f64::NAN, f64::NAN], "[[NULL, 'null']]"),
        (
            "SELECT ?, ?, typeof(?)",
            &params![f64::INFINITY, -0.0_f64, f64::NEG_INFINITY],
            "[[inf, -0.0, 'real']]",
        ),
        // A NUL inside text is kept; SQL's length() stops at it.
        ("SELECT length(?), ?", &params!["a\0b", "a\0b"], "[[1, 'a\0b']]"),
    ];
    for (sql, params, expect) in cases {
        check_params(&db, sql, params, expect);
    }
}

#[test]
fn stored_parameters_keep_their_class_under_column_affinity() {
    // Oracle 26 "typeof of stored params", with Rust's i64 binding INTEGER.
    let db = db();
    run(&db, "CREATE TABLE p(a, b, c, d)");
    db.exec("INSERT INTO p VALUES (?, ?, ?, ?)", &params![10, "10", None::<i64>, vec![0x10_u8]])
        .unwrap();
    db.exec("INSERT INTO p VALUES (?, ?, ?, ?)", &params![10.0, 10.5, "x", 0]).unwrap();
    check(
        &db,
        "SELECT typeof(a), typeof(b), typeof(c), typeof(d) FROM p ORDER BY rowid",
        "[['integer', 'text', 'null', 'blob'], ['real', 'real', 'text', 'integer']]",
    );
    // Spec item 24: blobs, zeroblob and NULL in one INSERT.
    run(&db, "CREATE TABLE tb(data)");
    db.exec(
        "INSERT INTO tb(data) VALUES (?), (ZEROBLOB(10)), (null), (?)",
        &params![vec![0u8; 12], None::<Vec<u8>>],
    )
    .unwrap();
    check(
        &db,
        "SELECT data FROM tb ORDER BY rowid",
        "[[x'000000000000000000000000'], [x'00000000000000000000'], [NULL], [NULL]]",
    );
}

#[test]
fn results_come_back_in_their_storage_class() {
    // Oracle 28. Integers come back exact (the runtime loses precision above 2^53).
    let db = db();
    check_all(
        &db,
        &[
            (
                "SELECT typeof(1), typeof(1.0), typeof('1'), typeof(x'01'), typeof(NULL)",
                "[['integer', 'real', 'text', 'blob', 'null']]",
            ),
            (
                "SELECT 9223372036854775807, -9223372036854775808, 9007199254740993",
                "[[9223372036854775807, -9223372036854775808, 9007199254740993]]",
            ),
            (
                "SELECT 1.0, -0.0, 1.5e300 * 1e10, -1e308 * 10, 0.1 + 0.2, 1e-320",
                "[[1.0, -0.0, inf, -inf, 0.30000000000000004, 1e-320]]",
            ),
            ("SELECT 1e999, -1e999, 0.0 * -1", "[[inf, -inf, -0.0]]"),
            (
                "SELECT x'', zeroblob(3), x'DEADbeef', typeof(x'')",
                "[[x'', x'000000', x'deadbeef', 'blob']]",
            ),
            (
                "SELECT CAST('abc' AS INTEGER), CAST('12abc' AS INTEGER), CAST(1e20 AS INTEGER), \
                 CAST(3.99 AS INTEGER), CAST(x'6869' AS TEXT), CAST('5' AS REAL), CAST(12 AS BLOB)",
                "[[0, 12, 9223372036854775807, 3, 'hi', 5.0, x'3132']]",
            ),
            ("SELECT abs(-9223372036854775808)", "error: integer overflow: SQLITE_ERROR"),
            (
                "SELECT 9223372036854775807 + 1, typeof(9223372036854775807 + 1)",
                "[[9.223372036854776e18, 'real']]",
            ),
            ("SELECT 1 / 0, 1 % 0, 1.0 / 0", "[[NULL, NULL, NULL]]"),
            (
                "SELECT 'é😀', length('é😀'), octet_length('é😀'), hex('é'), upper('straße')",
                "[['é😀', 2, 6, 'C3A9', 'STRAßE']]",
            ),
            (
                "SELECT 0x10, 0x7fffffffffffffff, 0xffffffffffffffff",
                "[[16, 9223372036854775807, -1]]",
            ),
            ("SELECT TRUE, FALSE, typeof(TRUE), NULL IS NULL", "[[1, 0, 'integer', 1]]"),
            ("SELECT 1 AS value UNION ALL SELECT 2 UNION ALL SELECT 3", "[[1], [2], [3]]"),
        ],
    );
}

#[test]
fn column_affinity_converts_as_sqlite_does() {
    // Oracle 28 "values after affinity" / "typeof after affinity".
    let db = db();
    run(
        &db,
        "CREATE TABLE aff(t TEXT, n NUMERIC, i INTEGER, r REAL, b BLOB, none); \
         INSERT INTO aff VALUES (12, '12.0', '7', 3, '5', '5'), \
         (1.5, 'abc', 2.0, '2.5', 1, x'00'), (NULL, '1e3', '0x10', 'x', 2.5, 3.0)",
    );
    check_all(
        &db,
        &[
            (
                "SELECT t, n, i, r, b, none FROM aff ORDER BY rowid",
                "[['12', 12, 7, 3.0, '5', '5'], ['1.5', 'abc', 2, 2.5, 1, x'00'], \
                 [NULL, 1000, '0x10', 'x', 2.5, 3.0]]",
            ),
            (
                "SELECT typeof(t), typeof(n), typeof(i), typeof(r), typeof(b), typeof(none) \
                 FROM aff ORDER BY rowid",
                "[['text', 'integer', 'integer', 'real', 'text', 'text'], \
                 ['text', 'text', 'integer', 'real', 'integer', 'blob'], \
                 ['null', 'integer', 'text', 'text', 'real', 'real']]",
            ),
        ],
    );
}

#[test]
fn text_and_blobs_round_trip_byte_for_byte() {
    let db = db();
    run(&db, "CREATE TABLE t(v)");
    let text = "quote ' and \"double\", tab\t, newline\n, NUL \0, emoji 😀, é";
    let bytes: Vec<u8> = (0..=255).collect();
    db.exec(
        "INSERT INTO t VALUES (?), (?), (?), (?)",
        &params![text, bytes.clone(), "", Vec::<u8>::new()],
    )
    .unwrap();
    let values: Vec<SqlValue> = db
        .exec("SELECT v FROM t ORDER BY rowid", &[])
        .unwrap()
        .raw()
        .map(|r| r.unwrap().remove(0))
        .collect();
    assert_eq!(
        values,
        [
            SqlValue::Text(text.into()),
            SqlValue::Blob(bytes),
            SqlValue::Text(String::new()),
            SqlValue::Blob(Vec::new()),
        ]
    );
}

#[test]
fn values_convert_to_rust_types() {
    let int = SqlValue::Integer(7);
    assert_eq!(int.get::<i64>().unwrap(), 7);
    assert_eq!(int.get::<f64>().unwrap(), 7.0);
    assert!(int.get::<bool>().unwrap());
    assert_eq!(int.get::<Option<i64>>().unwrap(), Some(7));
    assert_eq!(SqlValue::Null.get::<Option<String>>().unwrap(), None);
    assert_eq!(SqlValue::Text("hi".into()).get::<Vec<u8>>().unwrap(), b"hi");
    assert_eq!(SqlValue::Blob(vec![1]).get::<Vec<u8>>().unwrap(), [1]);
    assert_eq!(SqlValue::Real(2.5).get::<SqlValue>().unwrap(), SqlValue::Real(2.5));

    let e = SqlValue::Real(1.5).get::<i64>().unwrap_err();
    assert!(matches!(e, Error::Conversion { from: "real", to: "i64" }));
    assert_eq!(e.to_string(), "cannot convert SQL real to i64");
    assert_eq!(e.js_name(), "TypeError");
    let e = SqlValue::Null.get::<String>().unwrap_err();
    assert_eq!(e.to_string(), "cannot convert SQL null to String");
    let e = SqlValue::Blob(vec![]).get::<String>().unwrap_err();
    assert_eq!(e.to_string(), "cannot convert SQL blob to String");

    let names: Vec<&str> = [
        SqlValue::Null,
        SqlValue::Integer(0),
        SqlValue::Real(0.0),
        SqlValue::Text(String::new()),
        SqlValue::Blob(Vec::new()),
    ]
    .iter()
    .map(SqlValue::type_name)
    .collect();
    assert_eq!(names, ["null", "integer", "real", "text", "blob"]);
    assert!(SqlValue::default().is_null());
}

#[test]
fn rows_convert_through_the_cursor() {
    let db = db();
    let row = db
        .exec("SELECT 1 AS i, 2.5 AS r, 'x' AS t, x'01' AS b, NULL AS n", &[])
        .unwrap()
        .one::<durable_sql::Row>()
        .unwrap();
    assert_eq!(row.get::<i64>("i").unwrap(), 1);
    assert_eq!(row.get::<f64>("r").unwrap(), 2.5);
    assert_eq!(row.get::<String>("t").unwrap(), "x");
    assert_eq!(row.get::<Vec<u8>>("b").unwrap(), [1]);
    assert_eq!(row.get::<Option<i64>>("n").unwrap(), None);
    // A row's errors name the column; the value's own error is inside.
    let e = row.get::<i64>("t").unwrap_err();
    assert_eq!(e.to_string(), r#"column "t": cannot convert SQL text to i64"#);
    assert!(matches!(&e, Error::Column { column, source }
        if column == "t" && matches!(**source, Error::Conversion { from: "text", to: "i64" })));
    assert_eq!(e.js_name(), "TypeError");
    assert_eq!(
        row.get_index::<u8>(1).unwrap_err().to_string(),
        r#"column "r": cannot convert SQL real to u8"#
    );
    // The rendering helper agrees with the typed reads.
    assert_eq!(query(&db, "SELECT 1 AS i, 2.5 AS r", &[]), "[[1, 2.5]]");
}
