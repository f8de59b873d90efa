//! Point-in-time recovery through the namespace: bookmarks, restore on next open, undo, and
//! the KV backend's refusal (spec sqlite-storage section 8, pitr.md).

use durable_storage::{Archive, Backend, Namespace, NamespaceOptions};

use crate::support::Dir;

fn count(ns: &Namespace) -> i64 {
    let s = ns.storage("doc").unwrap();
    let db = s.sql().unwrap();
    db.exec("SELECT count(*) AS n FROM notes", &[])
        .unwrap()
        .one::<durable_storage::Row>()
        .unwrap()
        .get("n")
        .unwrap()
}

fn add(ns: &Namespace, n: i64) {
    let s = ns.storage("doc").unwrap();
    let db = s.sql().unwrap();
    db.exec("CREATE TABLE IF NOT EXISTS notes (n INTEGER)", &[]).unwrap();
    for i in 0..n {
        db.exec("INSERT INTO notes VALUES (?)", &[i.into()]).unwrap();
    }
    s.sync().wait().unwrap();
}

#[test]
fn a_restore_takes_effect_on_the_next_open_and_can_be_undone() {
    let dir = Dir::new();
    let ns = dir.open(NamespaceOptions::default());
    add(&ns, 3);
    let at_three = ns.storage("doc").unwrap().current_bookmark().unwrap();
    add(&ns, 4);
    assert_eq!(count(&ns), 7);
    let later = ns.storage("doc").unwrap().current_bookmark().unwrap();
    assert!(at_three < later, "bookmarks sort in history order: {at_three} < {later}");
    let undo = ns.storage("doc").unwrap().on_next_session_restore_bookmark(&at_three).unwrap();
    // Every handle dropped: the next open restores.
    assert_eq!(count(&ns), 3);
    // The restore is itself undoable.
    ns.storage("doc").unwrap().on_next_session_restore_bookmark(&undo).unwrap();
    assert_eq!(count(&ns), 7);
    // A bookmark of another object or a typo is refused.
    let s = ns.storage("doc").unwrap();
    let mut typo = at_three.clone();
    let last = typo.pop().unwrap();
    typo.push(if last == '0' { '1' } else { '0' });
    assert!(s.on_next_session_restore_bookmark(&typo).is_err());
    assert!(s.on_next_session_restore_bookmark("not a bookmark").is_err());
}

#[test]
fn bookmarks_survive_a_restart_of_the_namespace() {
    let dir = Dir::new();
    let first = {
        let ns = dir.open(NamespaceOptions::default());
        add(&ns, 2);
        ns.storage("doc").unwrap().current_bookmark().unwrap()
    };
    let ns = dir.open(NamespaceOptions::default());
    let s = ns.storage("doc").unwrap();
    assert!(s.current_bookmark().unwrap() >= first);
    let status = s.archive_status().expect("an archive");
    assert!(status.seq >= 1, "{status:?}");
    s.maintain_archive().unwrap();
    let t = durable_storage::Clock::now_ms(&durable_storage::SystemClock);
    assert!(s.bookmark_for_time(t).unwrap() >= first);
}

#[test]
fn kv_backed_and_unarchived_objects_answer_with_the_runtime_error() {
    let message =
        "This Durable Object's storage back-end does not implement point-in-time recovery.";
    for options in [
        NamespaceOptions::new().backend(Backend::Kv),
        NamespaceOptions::new().archive(Archive::Off),
    ] {
        let dir = Dir::new();
        let ns = dir.open(options);
        let s = ns.storage("doc").unwrap();
        assert_eq!(s.current_bookmark().unwrap_err().to_string(), message);
        assert_eq!(s.bookmark_for_time(1).unwrap_err().to_string(), message);
        assert_eq!(s.on_next_session_restore_bookmark("x").unwrap_err().to_string(), message);
        assert!(s.archive_status().is_none());
    }
}

#[test]
fn history_lists_every_commit_and_each_point_rebuilds() {
    let dir = Dir::new();
    let ns = dir.open(NamespaceOptions::default());
    add(&ns, 3);
    let s = ns.storage("doc").unwrap();
    let points = s.history(None, usize::MAX).unwrap();
    let head = s.archive_status().unwrap().seq;
    let seqs: Vec<u64> = points.iter().map(|p| p.seq).collect();
    assert_eq!(seqs, (0..=head).rev().collect::<Vec<_>>(), "newest first, every point");
    assert_eq!(points[0].bookmark, s.current_bookmark().unwrap());
    // Each point rebuilds to an image of the listed size; the newest is the live database.
    for p in &points {
        assert_eq!(s.image_at(&p.bookmark).unwrap().len() as u64, p.db_bytes);
    }
    assert_eq!(points[0].db_bytes, s.database_size().unwrap());
    // Paging: the next page starts before the last bookmark of the previous one.
    let first = s.history(None, 2).unwrap();
    let rest = s.history(Some(&first[1].bookmark), usize::MAX).unwrap();
    assert_eq!([first, rest].concat(), points);
    // Objects without an archive answer with the runtime's error.
    let off = Dir::new();
    let ns = off.open(NamespaceOptions::new().archive(Archive::Off));
    let s = ns.storage("doc").unwrap();
    assert!(s.history(None, 10).is_err());
    assert!(s.image_at("x").is_err());
}
