//! `history` (every retained commit, newest first, paged) and `archive verify` (every
//! retained point rebuilds and passes SQLite's integrity check; the archive's chain of
//! segments has no gap).

use crate::support::Data;

fn commits(data: &Data, n: usize) {
    data.ok(&["sql", "o", "CREATE TABLE t (x)"]);
    for i in 0..n {
        data.ok(&[
            "sql",
            "o",
            "INSERT INTO t VALUES (randomblob(?))",
            &(1000 * (i + 1)).to_string(),
        ]);
    }
}

#[test]
fn history_lists_commits_newest_first_and_pages() {
    let data = Data::new();
    commits(&data, 4);
    let doc = data.json(&["history", "o", "--limit", "100"]);
    let all = doc["commits"].as_array().unwrap().clone();
    let head = data.json(&["archive", "status", "o"])[0]["seq"].as_u64().unwrap();
    let seqs: Vec<u64> = all.iter().map(|c| c["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (0..=head).rev().collect::<Vec<_>>(), "{doc}");
    assert_eq!(doc["next"], serde_json::Value::Null);
    let current = data.ok(&["bookmark", "o"]);
    assert_eq!(all[0]["bookmark"].as_str().unwrap(), current.trim());
    assert_eq!(all.last().unwrap()["kind"], "init");
    assert_eq!(all[0]["kind"], "commit");
    assert!(all[0]["size"].as_u64().unwrap() > all[1]["size"].as_u64().unwrap(), "{doc}");
    assert!(all[0]["time"].as_str().unwrap().ends_with('Z'), "{doc}");

    // Pages of two, following `next`.
    let mut paged = Vec::new();
    let mut args = vec!["history".to_owned(), "o".into(), "--limit".into(), "2".into()];
    loop {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let page = data.json(&refs);
        paged.extend(page["commits"].as_array().unwrap().iter().cloned());
        let Some(next) = page["next"].as_str() else { break };
        args.truncate(4);
        args.extend(["--before".to_owned(), next.to_owned()]);
    }
    assert_eq!(paged, all);

    // Text: a table, and how to get the next page.
    let text = data.ok(&["history", "o", "--limit", "2"]);
    assert!(text.contains("bookmark"), "{text}");
    assert!(text.contains(current.trim()), "{text}");
    assert!(text.contains("more: durable history \"o\" --limit 2 --before "), "{text}");
    let text = data.ok(&["history", "o"]);
    assert!(!text.contains("more:"), "{text}");
    // Sizes in human units: the newest commit's line shows its KiB.
    let newest = all[0]["size"].as_u64().unwrap();
    let human = format!("| {:.2} KiB ", newest as f64 / 1024.0);
    let line = text.lines().find(|l| l.contains(current.trim())).unwrap();
    assert!(line.contains(&human), "{human} in {line}");

    let err = data.fails(&["history", "missing"]);
    assert!(err.contains("no object named"), "{err}");
    let err = data.fails(&["history", "o", "--before", "nope"]);
    assert!(err.contains("Invalid bookmark"), "{err}");
}

#[test]
fn archive_verify_rebuilds_every_point() {
    let data = Data::new();
    commits(&data, 5);
    data.ok(&["kv", "put", "p", "k", "1"]);
    let head = data.json(&["archive", "status", "o"])[0]["seq"].as_u64().unwrap();

    let doc = data.json(&["archive", "verify"]);
    assert_eq!(doc["ok"], true, "{doc}");
    let objects = doc["objects"].as_array().unwrap();
    assert_eq!(objects.len(), 2);
    assert_eq!(objects[0]["object"], "o");
    assert_eq!(objects[0]["retained"].as_u64().unwrap(), head + 1);
    assert_eq!(objects[0]["checked"].as_u64().unwrap(), head + 1);
    // The archive listing: nothing superseded (one writer), no gap, nothing straddling.
    assert_eq!(objects[0]["superseded"], 0, "{doc}");
    assert_eq!(objects[0]["gaps"], serde_json::json!([]), "{doc}");
    assert_eq!(objects[0]["straddling"], serde_json::json!([]), "{doc}");

    // A sample: the newest, the oldest and evenly spaced points; `--all` overrides it.
    let doc = data.json(&["archive", "verify", "o", "--sample", "3"]);
    assert_eq!(doc["objects"][0]["checked"], 3, "{doc}");
    let doc = data.json(&["archive", "verify", "o", "--sample", "1", "--all"]);
    assert_eq!(doc["objects"][0]["checked"].as_u64().unwrap(), head + 1, "{doc}");

    // Everything was archived when the commands closed the objects; verify again from there.
    data.ok(&["archive", "prune"]);
    let text = data.ok(&["archive", "verify", "o"]);
    assert!(text.lines().any(|l| l.starts_with('o') && l.trim_end().ends_with("ok")), "{text}");
    data.fails(&["archive", "verify", "missing"]);
}

#[test]
fn archive_verify_reports_a_damaged_archive() {
    let data = Data::new();
    commits(&data, 3);
    data.ok(&["archive", "prune"]);
    let seg_dir = data.path().join("archive").join("o.sqlite").join("seg");
    let segments: Vec<_> =
        std::fs::read_dir(&seg_dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(!segments.is_empty(), "no archived segment in {}", seg_dir.display());
    for path in &segments {
        let mut bytes = std::fs::read(path).unwrap();
        let at = bytes.len() - 10;
        bytes[at] ^= 0xff;
        std::fs::write(path, bytes).unwrap();
    }
    let run = data.run(&["archive", "verify", "o", "--all"]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("failed verification"), "{run:?}");
    assert!(run.stdout.contains("o ") && run.stdout.contains("failed"), "{run:?}");
    assert!(run.stdout.contains("corrupt"), "{run:?}");
}

#[test]
fn archive_verify_fails_an_object_with_a_gap_in_its_archive() {
    let data = Data::new();
    commits(&data, 5);
    // Each command closed the object, uploading its commits as a segment of their own.
    let seg_dir = data.path().join("archive").join("o.sqlite").join("seg");
    let mut segments: Vec<String> = std::fs::read_dir(&seg_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    segments.sort();
    assert!(segments.len() >= 4, "{segments:?}");
    let middle = &segments[segments.len() / 2];
    std::fs::remove_file(seg_dir.join(middle)).unwrap();
    let first = u64::from_str_radix(&middle[9..25], 16).unwrap();
    let last = u64::from_str_radix(&middle[26..42], 16).unwrap();

    let run = data.run(&["archive", "verify", "o"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.starts_with("durable: 1 object(s) failed verification"), "{run:?}");
    assert!(run.stderr.contains("1 gap(s) in the archived history"), "{run:?}");
    let seqs = if first == last { format!("seq {first}") } else { format!("seqs {first}-{last}") };
    let line = format!("o: {seqs} missing from the archive (a gap in the chain of segments)");
    assert!(run.stdout.lines().any(|l| l == line), "{line} in {run:?}");
    let row = run.stdout.lines().find(|l| l.starts_with("o ")).unwrap();
    assert!(row.contains("1 gap(s)"), "{row}");

    let run = data.run(&["--json", "archive", "verify", "o"]);
    assert_eq!(run.code, 1, "{run:?}");
    let doc: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(doc["ok"], false, "{doc}");
    let o = &doc["objects"][0];
    assert_eq!(o["ok"], false, "{doc}");
    assert_eq!(o["gaps"], serde_json::json!([{ "first_seq": first, "last_seq": last }]), "{doc}");
    assert_eq!(o["superseded"], 0, "{doc}");
    assert_eq!(o["straddling"], serde_json::json!([]), "{doc}");
}
