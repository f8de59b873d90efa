//! Namespaces: the lock, one live handle per object, closing when idle, keep-open, aborted
//! instances.

use durable_storage::{Error, LOCK_FILE, ManualClock, Namespace, NamespaceOptions};

use crate::support::{Dir, T0, fast, now};

/// Issue 19: `NamespaceOptions` is built method by method; `new()` is `default()`, each
/// method sets its one field, and the clock takes a clock or a shared `Arc<dyn Clock>`.
#[test]
fn namespace_options_build_one_field_per_method() {
    use std::sync::Arc;
    use std::time::Duration;

    use durable_storage::{Archive, Backend, Clock, Compatibility};

    let default = NamespaceOptions::default();
    let new = NamespaceOptions::new();
    assert_eq!(format!("{new:?}"), format!("{default:?}"));
    assert_eq!(new.sql.durability, durable_storage::sql::Durability::Group);
    let clock = ManualClock::new(T0);
    let o = NamespaceOptions::new()
        .backend(Backend::Kv)
        .sql(durable_storage::sql::Options::new())
        .cache(Default::default())
        .keep_open(3)
        .clock(clock.clone())
        .archive(Archive::Off)
        .critical_section_timeout(Duration::from_secs(2))
        .compatibility(Compatibility::for_date(2025, 1, 1))
        .archive_lag(Duration::from_millis(10))
        .archive_maintenance(Duration::from_secs(5))
        .close_timeout(Duration::from_secs(1));
    assert_eq!((o.backend, o.keep_open), (Backend::Kv, 3));
    assert_eq!(o.sql, durable_storage::sql::Options::default());
    assert!(matches!(o.archive, Archive::Off));
    assert_eq!(o.critical_section_timeout, Duration::from_secs(2));
    assert!(!o.compatibility.delete_all_deletes_alarm);
    assert_eq!(
        (o.archive_lag, o.archive_maintenance, o.close_timeout),
        (Duration::from_millis(10), Duration::from_secs(5), Duration::from_secs(1))
    );
    clock.advance(5);
    assert_eq!(o.clock.now_ms(), T0 + 5, "the namespace follows the clock it was given");
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    assert_eq!(NamespaceOptions::new().clock(shared).clock.now_ms(), T0 + 5);
}

#[test]
fn open_creates_the_folder_and_takes_the_lock() {
    let dir = Dir::new();
    let ns = dir.open(NamespaceOptions::default());
    assert!(dir.path().join(LOCK_FILE).exists());
    match Namespace::open(dir.path(), NamespaceOptions::default()) {
        Err(Error::Locked { path }) => assert_eq!(path, dir.path().join(LOCK_FILE)),
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(ns);
    let again = Namespace::open(dir.path(), NamespaceOptions::default());
    assert!(again.is_ok(), "{again:?}");
}

#[test]
fn a_live_handle_keeps_the_lock_after_the_namespace_is_dropped() {
    let dir = Dir::new();
    let ns = dir.open(NamespaceOptions::default());
    let handle = ns.storage("a").unwrap();
    drop(ns);
    assert!(matches!(
        Namespace::open(dir.path(), NamespaceOptions::default()),
        Err(Error::Locked { .. })
    ));
    drop(handle);
    assert!(Namespace::open(dir.path(), NamespaceOptions::default()).is_ok());
}

#[test]
fn storage_returns_the_live_handle_while_one_is_alive() {
    let dir = Dir::new();
    let ns = dir.open(NamespaceOptions::default());
    let first = ns.storage("room").unwrap();
    first.put("k", &1_i64);
    let second = ns.storage("room").unwrap();
    // The uncommitted write is visible: both handles are one connection, one transaction.
    assert_eq!(now(second.get::<i64>("k")), Some(1));
    assert_eq!(ns.opened_count(), 1);
    assert_eq!(ns.open_names(), ["room"]);
    assert_eq!(second.name(), "room");
    second.sync().wait().unwrap();
}

#[test]
fn an_object_closes_when_its_last_handle_is_dropped_and_keeps_its_writes() {
    let dir = Dir::new();
    let ns = dir.open(NamespaceOptions::default());
    let handle = ns.storage("room").unwrap();
    handle.put("k", &7_i64); // never synced: dropping the last handle commits it
    let clone = handle.clone();
    drop(handle);
    assert_eq!(ns.open_names(), ["room"], "a clone keeps it open");
    drop(clone);
    assert!(ns.open_names().is_empty());
    let reopened = ns.storage("room").unwrap();
    assert_eq!(ns.opened_count(), 2);
    assert_eq!(now(reopened.get::<i64>("k")), Some(7));
}

#[test]
fn keep_open_keeps_the_most_recently_used_idle_objects() {
    let dir = Dir::new();
    let ns = dir.open(NamespaceOptions::new().keep_open(2));
    for name in ["a", "b", "c"] {
        drop(ns.storage(name).unwrap());
    }
    assert_eq!(ns.open_names(), ["b", "c"]);
    drop(ns.storage("b").unwrap()); // reuse: no open, and "b" becomes most recent
    assert_eq!(ns.opened_count(), 3);
    drop(ns.storage("a").unwrap()); // reopens "a", evicts "c"
    assert_eq!(ns.open_names(), ["a", "b"]);
    assert_eq!(ns.opened_count(), 4);
    ns.release_idle();
    assert!(ns.open_names().is_empty());
}

#[test]
fn an_aborted_instance_is_never_opened_twice_and_is_replaced_once_dropped() {
    let dir = Dir::new();
    let ns = dir.open(NamespaceOptions::default());
    let handle = ns.storage("room").unwrap();
    handle.put("committed", &1_i64);
    handle.sync().wait().unwrap();
    handle.put("lost", &2_i64);
    handle.abort();
    assert_eq!(
        handle.get::<i64>("committed").now().unwrap().unwrap_err().to_string(),
        "Durable Object storage is no longer accessible."
    );
    match ns.storage("room") {
        Err(Error::StillOpen { name }) => assert_eq!(name, "room"),
        other => panic!("expected StillOpen, got {other:?}"),
    }
    drop(handle);
    let fresh = ns.storage("room").unwrap();
    assert!(!fresh.is_aborted());
    assert_eq!(now(fresh.get::<i64>("committed")), Some(1));
    assert_eq!(now(fresh.get::<i64>("lost")), None);
}

#[test]
fn a_storage_clone_outliving_its_handles_blocks_a_second_connection() {
    let dir = Dir::new();
    let ns = dir.open(NamespaceOptions::default());
    let handle = ns.storage("room").unwrap();
    let stray = handle.storage().clone();
    drop(handle);
    assert!(matches!(ns.storage("room"), Err(Error::StillOpen { .. })));
    drop(stray);
    assert!(ns.storage("room").is_ok());
}

#[test]
fn every_opened_object_reads_the_namespace_clock() {
    let dir = Dir::new();
    let clock = ManualClock::new(T0);
    let ns = dir.open(fast(&clock));
    let handle = ns.storage("room").unwrap();
    // A past alarm time means "now" on the namespace's clock.
    now(handle.set_alarm(5));
    assert_eq!(now(handle.get_alarm()), Some(T0));
}

#[test]
fn the_alarm_index_follows_commits_only() {
    let dir = Dir::new();
    let clock = ManualClock::new(T0);
    let ns = dir.open(fast(&clock));
    let room = ns.storage("room").unwrap();
    now(room.set_alarm(T0 + 1_000));
    assert_eq!(ns.indexed_alarm("room").unwrap(), None, "not committed yet");
    room.sync().wait().unwrap();
    assert_eq!(ns.indexed_alarm("room").unwrap(), Some(T0 + 1_000));
    now(room.set_alarm(T0 + 2_000));
    room.abort();
    assert_eq!(ns.indexed_alarm("room").unwrap(), Some(T0 + 1_000), "aborted write");
    drop(room);
    let room = ns.storage("room").unwrap();
    now(room.delete_alarm());
    room.sync().wait().unwrap();
    assert_eq!(ns.indexed_alarm("room").unwrap(), None);
    assert!(ns.alarms().unwrap().is_empty());
}

#[test]
fn rebuild_index_restores_a_lost_index_from_the_objects() {
    let dir = Dir::new();
    let clock = ManualClock::new(T0);
    {
        let ns = dir.open(fast(&clock));
        for (name, at) in [("a", T0 + 1), ("b", T0 + 2)] {
            let s = ns.storage(name).unwrap();
            now(s.set_alarm(at));
            s.sync().wait().unwrap();
        }
        drop(ns.storage("c").unwrap());
    }
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.path().join(format!("_index.sqlite{suffix}")));
    }
    let ns = dir.open(fast(&clock));
    assert!(ns.alarms().unwrap().is_empty());
    ns.rebuild_index().unwrap();
    assert_eq!(ns.alarms().unwrap(), [("a".to_string(), T0 + 1), ("b".to_string(), T0 + 2)]);
    assert_eq!(ns.opened_count(), 3);
}

#[test]
fn objects_group_commit_by_default_with_and_without_the_archiver() {
    use durable_storage::{Archive, TurnEnd};
    for archive in [Archive::Local, Archive::Off] {
        let dir = Dir::new();
        let ns = dir.open(NamespaceOptions::new().archive(archive.clone()));
        let s = ns.storage("room").unwrap();
        s.put("k", &1_i64);
        match s.end_turn().unwrap() {
            // The commit is made; its fsync runs on the sync pool.
            TurnEnd::Flushing { durable, confirmed } => {
                assert!(confirmed);
                durable.wait().unwrap();
            }
            other => panic!("{archive:?}: expected a pending sync, got {other:?}"),
        }
        drop((s, ns));
        // Full durability: each commit syncs inside COMMIT, and the turn ends durable.
        let mut options = NamespaceOptions::new().archive(archive);
        options.sql.durability = durable_storage::sql::Durability::Full;
        let ns = dir.open(options);
        let s = ns.storage("room").unwrap();
        assert_eq!(now(s.get::<i64>("k")), Some(1));
        s.put("k", &2_i64);
        assert!(matches!(s.end_turn().unwrap(), TurnEnd::Durable));
    }
}
