//! Object names to file names: escaping, digests for long names, listing.

use durable_storage::{Namespace, NamespaceOptions};

use crate::support::{Dir, now};

#[test]
fn file_names_escape_every_byte_outside_lowercase_digits_and_dash() {
    let cases = [
        ("room-42", "room-42.sqlite"),
        ("Room 42", "_52oom_2042.sqlite"),
        ("", "_.sqlite"),
        ("_index", "_5findex.sqlite"),
        (".lock", "_2elock.sqlite"),
        ("../etc/passwd", "_2e_2e_2fetc_2fpasswd.sqlite"),
        ("a_b", "a_5fb.sqlite"),
        ("é", "_c3_a9.sqlite"),
        ("\0", "_00.sqlite"),
    ];
    for (name, file) in cases {
        assert_eq!(Namespace::file_name(name), file, "name {name:?}");
    }
}

#[test]
fn long_names_use_a_sha256_digest() {
    let long = "x".repeat(201);
    let file = Namespace::file_name(&long);
    let stem = file.strip_suffix(".sqlite").unwrap();
    assert_eq!(stem.len(), 66);
    assert!(stem.starts_with("_h"));
    assert!(stem[2..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    // 200 escaped bytes is the longest kept as is.
    assert_eq!(Namespace::file_name(&"x".repeat(200)), format!("{}.sqlite", "x".repeat(200)));
    assert!(Namespace::file_name(&"X".repeat(67)).starts_with("_h"));
    assert_ne!(Namespace::file_name(&long), Namespace::file_name(&"x".repeat(202)));
}

#[test]
fn names_lists_every_stored_object_and_ignores_other_files() {
    let dir = Dir::new();
    let ns = dir.open(NamespaceOptions::default());
    let mut names: Vec<String> = [
        "", "a", "A", "Room 42", "../up", "a/b", "_index", ".lock", "日本", "\0", "%41", "_h",
        "a_b", "ab",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    names.push("long ".repeat(100));
    names.push("LONG ".repeat(100));
    for (i, name) in names.iter().enumerate() {
        let s = ns.storage(name).unwrap();
        s.put("i", &(i as i64));
        s.sync().wait().unwrap();
    }
    // Files that are not objects: foreign, non-canonical escapes, SQLite's side files.
    for file in ["notes.txt", "_61.sqlite", "_ZZ.sqlite", "UPPER.sqlite", "a.sqlite-wal"] {
        std::fs::write(dir.path().join(file), b"").unwrap();
    }
    // Every object kept its own data (no two names share a file).
    for (i, name) in names.iter().enumerate() {
        let s = ns.storage(name).unwrap();
        assert_eq!(now(s.get::<i64>("i")), Some(i as i64), "{name:?}");
    }
    names.sort();
    assert_eq!(ns.names().unwrap(), names);
    let files: std::collections::HashSet<String> =
        names.iter().map(|n| Namespace::file_name(n)).collect();
    assert_eq!(files.len(), names.len());
    for file in &files {
        assert!(
            file.bytes().all(|b| b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || b == b'-'
                || b == b'_'
                || b == b'.'),
            "{file}"
        );
        assert!(ns.dir().join(file).exists(), "{file}");
    }
    assert!(ns.exists("Room 42"));
    assert!(!ns.exists("never opened"));
    drop(ns);
    // The long names survive a restart through the index.
    let ns = dir.open(NamespaceOptions::default());
    assert_eq!(ns.names().unwrap(), names);
}
