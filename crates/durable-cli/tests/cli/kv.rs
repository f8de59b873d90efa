//! `durable kv`: get, put, delete and list, values as JSON (also those a typed program stored).

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

/// What a Rust program stores: a struct with an enum, an option, bytes and a map.
#[derive(serde::Serialize)]
struct Profile {
    name: String,
    role: Role,
    nickname: Option<String>,
    visits: u32,
    #[serde(with = "bytes")]
    avatar: Vec<u8>,
    scores: std::collections::BTreeMap<String, f64>,
}

#[derive(serde::Serialize)]
enum Role {
    Admin,
    Guest { since: i64 },
}

mod bytes {
    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }
}

#[test]
fn values_a_typed_program_stored_print_as_json() {
    let data = Data::new();
    {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let ns = durable_storage::Namespace::open(data.path(), Default::default()).unwrap();
        let handle = ns.storage("app").unwrap();
        let profile = |name: &str, role| Profile {
            name: name.into(),
            role,
            nickname: None,
            visits: 3,
            avatar: vec![0, 255],
            scores: [("chess".to_owned(), 1.5)].into(),
        };
        handle.put("user:ada", &profile("Ada", Role::Admin)).wait().unwrap();
        handle.put("user:bob", &profile("Bob", Role::Guest { since: 7 })).wait().unwrap();
        handle.put("count", &42u64).wait().unwrap();
        handle.sync().wait().unwrap();
        drop(handle);
        runtime.block_on(ns.close()).unwrap();
    }
    let ada = json!({
        "avatar": {"$bytes": "00ff"},
        "name": "Ada",
        "nickname": null,
        "role": "Admin",
        "scores": {"chess": 1.5},
        "visits": 3,
    });
    assert_eq!(data.json(&["kv", "get", "app", "user:ada"])["value"], ada);
    let text = data.ok(&["kv", "get", "app", "user:bob"]);
    let bob: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(bob["role"], json!({"Guest": {"since": 7}}), "{text}");
    assert!(!text.contains("$raw"), "{text}");
    let listed = data.json(&["kv", "list", "app", "--prefix", "user:"]);
    assert_eq!(listed[0], json!({"key": "user:ada", "value": ada}));
    assert_eq!(listed[1]["value"]["name"], "Bob");
    assert_eq!(data.ok(&["kv", "get", "app", "count"]), "42\n");
    // The shell prints them the same way.
    let run = data.run_with_input(&["shell", "app"], "kv get user:ada\n");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&run.stdout).unwrap(), ada, "{run:?}");
}
