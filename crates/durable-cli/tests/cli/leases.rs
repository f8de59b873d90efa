//! Two data folders writing one object into one archive (two machines, a rolling deploy),
//! through the command, with a local-folder archive: while one process holds the object
//! the other gets a clear error naming it, never a second history; after the first closes,
//! the second takes over with everything. `export` and `archive verify` read the archive
//! without either.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use crate::support::Data;

#[test]
fn a_second_writer_is_refused_while_the_first_holds_the_object() {
    let (a, b) = (Data::new(), Data::new());
    let shared = a.root().join("shared-archive");
    let archive = shared.to_str().unwrap();
    // Process a keeps the object open in a shell.
    let mut shell = a
        .command()
        .args(["--data", a.path().to_str().unwrap(), "--archive", archive, "shell", "room"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = shell.stdin.take().unwrap();
    let stdout = shell.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    stdin
        .write_all(b"CREATE TABLE t(x); INSERT INTO t VALUES ('from a');\nSELECT 'ready' AS r;\n")
        .unwrap();
    stdin.flush().unwrap();
    loop {
        let line = rx.recv_timeout(Duration::from_secs(30)).expect("the shell answers");
        if line.contains("ready") {
            break;
        }
    }
    // Process b, another data folder on the same archive: refused, with a's node named.
    let err = b.fails(&["--archive", archive, "sql", "room", "INSERT INTO t VALUES ('from b')"]);
    assert!(err.contains("the object is owned by node node-"), "{err}");
    assert!(err.contains("open it there, or here once that node closes it"), "{err}");
    let a_node = std::fs::read_to_string(a.path().join("_node")).unwrap();
    assert!(err.contains(a_node.trim()), "{err} names {a_node}");
    // Reading the archive needs no lease: a's commit is there (uploaded within a second).
    let copy = b.root().join("copy.sqlite");
    let mut exported = String::new();
    for _ in 0..50 {
        let run = b.run(&["--archive", archive, "export", "room", "--to", copy.to_str().unwrap()]);
        if run.code == 0 {
            exported = run.stdout;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(exported.contains("wrote") && exported.contains("\"room\" at"), "{exported}");
    let db = durable_storage::Database::open(&copy, Default::default()).unwrap();
    let n: i64 = db.exec("SELECT count(*) FROM t", &[]).unwrap().one::<i64>().unwrap();
    assert_eq!(n, 1);
    drop(db);
    // So does `archive verify`: the object a holds is checked from the archive alone (its
    // listing, and its newest archived point rebuilt), and the report names a.
    let doc = b.json(&["--archive", archive, "archive", "verify", "room"]);
    assert_eq!(doc["ok"], true, "{doc}");
    let why = format!("node {} holds it", a_node.trim());
    assert_eq!(doc["objects"][0]["archive_only"], why.as_str(), "{doc}");
    assert_eq!(doc["objects"][0]["checked"], 1, "{doc}");
    let text = b.ok(&["--archive", archive, "archive", "verify", "room"]);
    assert!(text.contains(&format!("ok (newest archived point; {why})")), "{text}");
    // a closes (its history uploads, its lease is released): b takes over with everything.
    drop(stdin);
    assert!(shell.wait().unwrap().success());
    // A third data folder verifies it without taking it (b's next write needs the lease).
    let c = Data::new();
    let doc = c.json(&["--archive", archive, "archive", "verify", "room"]);
    assert_eq!(doc["ok"], true, "{doc}");
    assert_eq!(doc["objects"][0]["archive_only"], "not in this data folder", "{doc}");
    assert!(!c.path().join(durable_storage::Namespace::file_name("room")).exists());
    b.ok(&["--archive", archive, "sql", "room", "INSERT INTO t VALUES ('from b')"]);
    let rows = b.json(&["--archive", archive, "sql", "room", "SELECT x FROM t ORDER BY rowid"]);
    assert_eq!(rows["rows"].to_string(), r#"[{"x":"from a"},{"x":"from b"}]"#, "{rows}");
    // b's command closed the object too: a opens it again, and its old copy gives way to
    // the archive, where b wrote (it says so on stderr).
    let run =
        a.run(&["--archive", archive, "--json", "sql", "room", "SELECT x FROM t ORDER BY rowid"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("another node wrote this object"), "{run:?}");
    let rows: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(rows["rows"].to_string(), r#"[{"x":"from a"},{"x":"from b"}]"#, "{rows}");
}

/// The inspecting commands leave another node's objects alone. A folder that held an object
/// before another node took it over lists it with that owner (`objects`, `archive status`)
/// and does not maintain it (`archive prune`): opening it there would take it back.
#[test]
fn inspecting_a_folder_leaves_an_object_another_node_took_alone() {
    let (a, b) = (Data::new(), Data::new());
    let shared = a.root().join("shared-archive");
    let archive = shared.to_str().unwrap();
    a.ok(&["--archive", archive, "sql", "room", "CREATE TABLE t(x); INSERT INTO t VALUES (1)"]);
    b.ok(&["--archive", archive, "sql", "room", "INSERT INTO t VALUES (2)"]);
    let b_node = std::fs::read_to_string(b.path().join("_node")).unwrap();
    let b_node = b_node.trim();
    let listed = a.json(&["--archive", archive, "objects"]);
    assert_eq!(listed[0]["name"], "room", "{listed}");
    let owner = listed[0]["owner"].as_str().unwrap_or_default().to_owned();
    assert!(owner.starts_with(b_node) && owner.ends_with("(lease ended)"), "{listed}");
    assert!(listed[0]["size"].is_null(), "not opened: {listed}");
    let status = a.json(&["--archive", archive, "archive", "status"]);
    assert!(status[0]["owner"].as_str().is_some_and(|o| o.starts_with(b_node)), "{status}");
    let text = a.ok(&["--archive", archive, "archive", "status"]);
    assert!(text.contains(&format!("held by {b_node}")), "{text}");
    let pruned = a.ok(&["--archive", archive, "archive", "prune"]);
    assert!(pruned.contains("pruned the history of 0 object(s)"), "{pruned}");
    assert!(pruned.contains(&format!("left to their owners: room (held by {b_node}")), "{pruned}");
    // Nothing moved: b opens its object as it left it, no takeover.
    let run = b.run(&["--archive", archive, "--json", "sql", "room", "SELECT x FROM t"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stderr.contains("another node wrote this object"), "{run:?}");
    let rows: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(rows["rows"].to_string(), r#"[{"x":1},{"x":2}]"#, "{rows}");
}
