//! `bookmark`, `restore` and `archive`: point-in-time recovery on stored objects.

use crate::support::Data;

fn count(data: &Data) -> i64 {
    data.json(&["sql", "o", "SELECT count(*) AS n FROM t"])["rows"][0]["n"].as_i64().unwrap()
}

#[test]
fn restore_to_a_bookmark_and_undo_it() {
    let data = Data::new();
    data.ok(&["sql", "o", "CREATE TABLE t (x)"]);
    data.ok(&["sql", "o", "INSERT INTO t VALUES (1), (2)"]);
    let before = data.ok(&["bookmark", "o"]).trim().to_owned();
    assert_eq!(before.len(), 55, "{before}");
    data.ok(&["sql", "o", "DELETE FROM t"]);
    let after = data.json(&["bookmark", "o"])["bookmark"].as_str().unwrap().to_owned();
    assert!(after > before, "bookmarks sort in history order");
    assert_eq!(count(&data), 0);

    let doc = data.json(&["restore", "o", &before]);
    assert_eq!(doc["restored_to"], before.as_str());
    assert_eq!(count(&data), 2);
    // The restore is undoable: the undo bookmark brings the deletion back.
    let undo = doc["undo"].as_str().unwrap().to_owned();
    let text = data.ok(&["restore", "o", &undo]);
    assert!(text.starts_with("restored \"o\" to "), "{text}");
    assert!(text.contains("undo with: durable restore \"o\" "), "{text}");
    assert_eq!(count(&data), 0);

    // The objects listing shows the current bookmark.
    let objects = data.json(&["objects"]);
    assert_eq!(objects[0]["bookmark"].as_str().unwrap().len(), 55);
}

#[test]
fn restore_at_a_time_and_refusals() {
    let data = Data::new();
    data.ok(&["sql", "o", "CREATE TABLE t (x)"]);
    data.ok(&["sql", "o", "INSERT INTO t VALUES (1)"]);
    // `--at 0s` is now: the latest commit, so the data stays as it is.
    let now = data.ok(&["bookmark", "o", "--at", "0s"]);
    assert_eq!(now, data.ok(&["bookmark", "o"]));
    data.ok(&["restore", "o", "--at", "0s"]);
    assert_eq!(count(&data), 1);
    let err = data.fails(&["bookmark", "o", "--at", "40d"]);
    assert!(err.contains("within the last 30 days"), "{err}");
    let err = data.fails(&["bookmark", "o", "--at", "yesterday-ish"]);
    assert!(err.contains("is not a time"), "{err}");
    let err = data.fails(&["restore", "o", "nope"]);
    assert!(err.contains("Invalid bookmark"), "{err}");
    data.fails(&["restore", "o"]);
    data.fails(&["restore", "missing", "--at", "1m"]);
    assert_eq!(count(&data), 1);
}

#[test]
fn archive_status_and_prune() {
    let data = Data::new();
    data.ok(&["sql", "o", "CREATE TABLE t (x)"]);
    data.ok(&["sql", "p", "CREATE TABLE t (x)"]);
    let status = data.json(&["archive", "status"]);
    let list = status.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["object"], "o");
    assert_eq!(list[0]["archived"], true);
    assert!(list[0]["seq"].as_u64().unwrap() >= 1, "{status}");
    let one = data.json(&["archive", "status", "p"]);
    assert_eq!(one.as_array().unwrap().len(), 1);
    assert_eq!(data.json(&["archive", "prune"])["maintained"], serde_json::json!(["o", "p"]));
    assert!(data.path().join("archive").is_dir());
    data.fails(&["archive", "status", "missing"]);
}

#[test]
fn another_archive_folder() {
    let data = Data::new();
    let elsewhere = data.root().join("history");
    let folder = elsewhere.to_str().unwrap();
    data.ok(&["--archive", folder, "sql", "o", "CREATE TABLE t (x)"]);
    data.ok(&["--archive", folder, "archive", "prune"]);
    assert!(elsewhere.join("o.sqlite").is_dir(), "the archive went to --archive");
    assert!(!data.path().join("archive").exists());
}
