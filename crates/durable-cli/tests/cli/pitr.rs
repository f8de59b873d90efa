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
    let err = data.usage_error(&["bookmark", "o", "--at", "yesterday-ish"]);
    assert!(err.contains("is not an RFC 3339 time"), "{err}");
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
    // The open segment's size: bytes in JSON, human units in the table.
    let bytes = one[0]["open_segment_bytes"].as_u64().unwrap();
    assert!(bytes > 0, "{one}");
    let text = data.ok(&["archive", "status", "p"]);
    assert!(text.lines().next().unwrap().ends_with("| open segment | not uploaded"), "{text}");
    let cells: Vec<&str> = text.lines().nth(2).unwrap().split(" | ").map(str::trim).collect();
    let cell = cells[cells.len() - 2];
    assert!(cell.ends_with(" B") || cell.ends_with(" KiB"), "{cell} in {text}");
    // Closing uploaded everything: nothing waits.
    assert_eq!(cells[cells.len() - 1], "0", "{text}");
    assert_eq!(one[0]["pending"], 0, "{one}");
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

#[test]
fn times_are_durations_ago_rfc3339_with_any_offset_or_epoch_milliseconds() {
    use chrono::{FixedOffset, SecondsFormat, Utc};
    let data = Data::new();
    data.ok(&["sql", "o", "CREATE TABLE t (x)"]);
    data.ok(&["sql", "o", "INSERT INTO t VALUES (1)"]);
    let current = data.ok(&["bookmark", "o"]);
    let now = Utc::now();
    let plus_two = FixedOffset::east_opt(2 * 3600).unwrap();
    let ms = now.timestamp_millis().to_string();
    for at in [
        now.to_rfc3339_opts(SecondsFormat::Millis, true),
        now.with_timezone(&plus_two).to_rfc3339_opts(SecondsFormat::Micros, false),
        now.to_rfc3339_opts(SecondsFormat::Millis, true).replace('T', " "),
        ms.clone(),
        "0s".into(),
        "0m ago".into(),
    ] {
        assert_eq!(data.ok(&["bookmark", "o", "--at", &at]), current, "--at {at}");
    }
    // A duration of humantime's: several units.
    data.ok(&["bookmark", "o", "--at", "2h 30m"]);
    data.ok(&["bookmark", "o", "--at", "1day"]);
    // The JSON form says which time it resolved, in RFC 3339 with milliseconds.
    let doc = data.json(&["bookmark", "o", "--at", &ms]);
    assert_eq!(doc["at"], now.to_rfc3339_opts(SecondsFormat::Millis, true));
}

#[test]
fn a_bad_time_is_refused_by_the_command_line_with_its_reason() {
    let data = Data::new();
    data.ok(&["sql", "o", "CREATE TABLE t (x)"]);
    for (at, reason) in [
        ("15x", "unknown time unit \"x\""),
        ("15", "time unit needed"),
        ("2025-02-30T00:00:00Z", "is not an RFC 3339 time"),
        ("2025-01-31T12:00:00", "is not an RFC 3339 time"),
        ("99999999999999999999", "out of range"),
        ("", "an empty time"),
    ] {
        let err = data.usage_error(&["bookmark", "o", "--at", at]);
        assert!(err.contains("invalid value") && err.contains(reason), "--at {at:?}: {err}");
        let err = data.usage_error(&["restore", "o", "--at", at]);
        assert!(err.contains(reason), "--at {at:?}: {err}");
    }
    assert_eq!(count(&data), 0);
}

#[test]
fn export_and_restore_to_a_file_read_the_archive_alone() {
    let data = Data::new();
    data.ok(&["sql", "o", "CREATE TABLE t (x); INSERT INTO t VALUES (1)"]);
    let first = data.ok(&["bookmark", "o"]).trim().to_owned();
    std::thread::sleep(std::time::Duration::from_millis(30));
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    let between = since_epoch.unwrap().as_millis().to_string();
    std::thread::sleep(std::time::Duration::from_millis(30));
    data.ok(&["sql", "o", "INSERT INTO t VALUES (2)"]);
    let count = |file: &std::path::Path| -> i64 {
        let db = durable_storage::Database::open(file, Default::default()).unwrap();
        db.exec("SELECT count(*) FROM t", &[]).unwrap().one::<i64>().unwrap()
    };
    let latest = data.root().join("latest.sqlite");
    let out = data.ok(&["export", "o", "--to", latest.to_str().unwrap()]);
    assert!(out.starts_with(&format!("wrote {}", latest.display())), "{out}");
    assert_eq!(count(&latest), 2);
    let old = data.root().join("old.sqlite");
    data.ok(&["restore", "o", &first, "--to", old.to_str().unwrap()]);
    assert_eq!(count(&old), 1, "the state at the bookmark, the object untouched");
    let doc = data.json(&["export", "o", "--bookmark", &first, "--to", old.to_str().unwrap()]);
    assert_eq!(doc["bookmark"], first.as_str());
    // By time: the newest commit at or before it, found in the archive.
    std::fs::remove_file(&old).unwrap();
    let doc = data.json(&["export", "o", "--at", &between, "--to", old.to_str().unwrap()]);
    assert_eq!(doc["bookmark"], first.as_str(), "{doc}");
    assert_eq!(count(&old), 1);
    let err =
        data.fails(&["export", "o", "--at", "2000-01-01T00:00:00Z", "--to", old.to_str().unwrap()]);
    assert!(err.contains("no commit of \"o\" archived at or before 946684800000 ms"), "{err}");
    assert_eq!(data.json(&["sql", "o", "SELECT count(*) AS n FROM t"])["rows"][0]["n"], 2);
}
