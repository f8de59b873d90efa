//! `durable kv`: get, put, delete and list, values as JSON.

use serde_json::json;

use crate::support::Data;

#[test]
fn put_get_delete_round_trip_json_values() {
    let data = Data::new();
    assert_eq!(
        data.ok(&["kv", "put", "o", "config", r#"{"theme": "dark", "n": [1, 2.5]}"#]),
        "put 1 key\n"
    );
    assert_eq!(data.ok(&["kv", "get", "o", "config"]), "{\"n\":[1,2.5],\"theme\":\"dark\"}\n");
    // Text that is not JSON is stored as a string; tagged JSON carries the other types.
    data.ok(&[
        "kv",
        "put",
        "o",
        "word",
        "hello",
        "bytes",
        r#"{"$bytes":"0aff"}"#,
        "nan",
        r#"{"$float":"NaN"}"#,
    ]);
    let doc = data.json(&["kv", "get", "o", "word", "bytes", "nan", "missing"]);
    assert_eq!(
        doc,
        json!([
            {"key": "bytes", "value": {"$bytes": "0aff"}},
            {"key": "nan", "value": {"$float": "NaN"}},
            {"key": "word", "value": "hello"},
        ])
    );
    assert_eq!(data.ok(&["kv", "delete", "o", "word"]), "true\n");
    assert_eq!(data.ok(&["kv", "delete", "o", "word"]), "false\n");
    assert_eq!(data.json(&["kv", "delete", "o", "bytes", "nan", "word"]), json!({"deleted": 2}));
    assert_eq!(data.fails(&["kv", "get", "o", "word"]), "durable: no key \"word\"");
}

#[test]
fn list_takes_the_runtimes_options() {
    let data = Data::new();
    let mut args = vec!["kv", "put", "o"];
    let pairs: Vec<(String, String)> =
        (1..=9).map(|i| (format!("user:{i}"), i.to_string())).collect();
    for (k, v) in &pairs {
        args.push(k);
        args.push(v);
    }
    args.extend(["team:a", "\"a\""]);
    data.ok(&args);
    let keys = |extra: &[&str]| -> Vec<String> {
        let mut a = vec!["kv", "list", "o"];
        a.extend_from_slice(extra);
        let doc = data.json(&a);
        doc.as_array().unwrap().iter().map(|e| e["key"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(keys(&["--prefix", "team:"]), ["team:a"]);
    assert_eq!(keys(&["--start", "user:3", "--end", "user:6"]), ["user:3", "user:4", "user:5"]);
    assert_eq!(keys(&["--prefix", "user:", "--limit", "2", "--reverse"]), ["user:9", "user:8"]);
    assert_eq!(keys(&["--start-after", "user:8"]), ["user:9"]);
    let text = data.ok(&["kv", "list", "o", "--prefix", "user:", "--limit", "1"]);
    assert_eq!(text, "user:1\t1\n");
    assert_eq!(
        data.fails(&["kv", "list", "o", "--limit", "0"]),
        "durable: List limit must be positive."
    );
    assert_eq!(
        data.fails(&["kv", "list", "o", "--start", "a", "--start-after", "b"]),
        "durable: list() cannot be called with both start and startAfter values."
    );
}

#[test]
fn reads_of_a_missing_object_are_refused_without_creating_it() {
    let data = Data::new();
    data.ok(&["kv", "put", "exists", "k", "1"]);
    let err = data.fails(&["kv", "get", "nobody", "k"]);
    assert!(err.starts_with("durable: no object named \"nobody\""), "{err}");
    data.fails(&["kv", "list", "nobody"]);
    let names = data.json(&["objects"]);
    assert_eq!(names.as_array().unwrap().len(), 1, "{names}");
}
