//! Confirmed and unconfirmed writes (spec 5.3), and the commit pipeline: sequence numbers,
//! the events and their order, group commit's syncs and their failures.

use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use durable_sql::{CommitEvent, Database, Durability, Options, params};

#[test]
fn sql_writes_are_confirmed_and_unconfirmed_scopes_are_not() {
    let db = Database::open_in_memory(Options::default()).unwrap();
    assert!(!db.write_confirmed(), "no transaction yet");
    db.unconfirmed(|| db.exec("CREATE TABLE t(x)", &[]).map(|_| ())).unwrap();
    assert!(db.in_transaction());
    assert!(!db.write_confirmed(), "only unconfirmed writes so far");
    // Reads inside or outside the scope change nothing.
    db.exec("SELECT * FROM t", &[]).unwrap();
    assert!(!db.write_confirmed());
    db.exec("INSERT INTO t VALUES (?)", &params![1]).unwrap();
    assert!(db.write_confirmed(), "one confirmed write gates the whole transaction");
    db.unconfirmed(|| db.exec("INSERT INTO t VALUES (2)", &[]).map(|_| ())).unwrap();
    assert!(db.write_confirmed(), "a later unconfirmed write does not clear it");
    db.commit().unwrap();
    assert!(!db.write_confirmed(), "the flag belongs to the committed transaction");

    db.unconfirmed(|| db.exec("INSERT INTO t VALUES (3)", &[]).map(|_| ())).unwrap();
    assert!(!db.write_confirmed());
    db.rollback().unwrap();
    assert!(!db.write_confirmed());
    db.transaction_sync(|| Ok::<_, durable_sql::Error>(())).unwrap();
    assert!(db.write_confirmed(), "transaction_sync counts as a confirmed write");
    db.commit().unwrap();
}

#[test]
fn an_unconfirmed_scope_ends_even_when_its_closure_panics() {
    let db = Database::open_in_memory(Options::default()).unwrap();
    db.exec("CREATE TABLE t(x)", &[]).unwrap();
    db.commit().unwrap();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        db.unconfirmed(|| panic!("inside"));
    }));
    assert!(caught.is_err());
    db.exec("INSERT INTO t VALUES (1)", &[]).unwrap();
    assert!(db.write_confirmed(), "the scope did not leak past the panic");
}

/// Every event a database delivers, rendered with the name of the thread it came on.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<(String, String)>>>);

impl Log {
    fn attach(&self, db: &Database) {
        let log = self.clone();
        db.subscribe(Arc::new(move |event: &CommitEvent<'_>| {
            let text = match event {
                CommitEvent::Committed { seq } => format!("committed {seq}"),
                CommitEvent::Durable { seq, .. } => format!("durable {seq}"),
                CommitEvent::SyncFailed { durable, error } => {
                    format!("sync failed after {durable}: {error}")
                }
                CommitEvent::Resetting => "resetting".into(),
                CommitEvent::Reset { seq } => format!("reset after {seq}"),
                CommitEvent::Closed { last, durable } => format!("closed at {last} {durable}"),
                other => format!("{other:?}"),
            };
            let thread = std::thread::current().name().unwrap_or("?").to_string();
            log.0.lock().unwrap().push((text, thread));
        }));
    }

    fn events(&self) -> Vec<String> {
        self.0.lock().unwrap().iter().map(|(e, _)| e.clone()).collect()
    }

    fn threads_of(&self, prefix: &str) -> Vec<String> {
        let log = self.0.lock().unwrap();
        log.iter().filter(|(e, _)| e.starts_with(prefix)).map(|(_, t)| t.clone()).collect()
    }
}

fn write(db: &Database, x: i64) -> Option<u64> {
    db.exec("INSERT INTO t VALUES (?)", &params![x]).unwrap();
    db.commit().unwrap()
}

fn with_table(dir: &std::path::Path, durability: Durability) -> Database {
    let db = Database::open(dir.join("o.sqlite"), Options::new().durability(durability)).unwrap();
    db.exec("CREATE TABLE t(x)", &[]).unwrap();
    db.commit().unwrap();
    db
}

#[test]
fn full_durability_reports_each_commit_durable_as_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let db = with_table(dir.path(), Durability::Full);
    let log = Log::default();
    log.attach(&db);
    assert_eq!(write(&db, 1), Some(2), "the table's commit was the first");
    assert_eq!(db.commit().unwrap(), None, "nothing to commit");
    db.exec("SELECT * FROM t", &[]).unwrap();
    assert_eq!(db.commit().unwrap(), None, "a read opens no transaction");
    assert_eq!(write(&db, 2), Some(3));
    db.exec("INSERT INTO t VALUES (3)", &[]).unwrap();
    db.rollback().unwrap();
    assert_eq!(log.events(), ["committed 2", "durable 2", "committed 3", "durable 3"]);
    let progress = db.commit_progress();
    assert_eq!((progress.committed, progress.durable), (3, 3));
    db.sync().unwrap();
    drop(db);
    assert_eq!(log.events().last().unwrap(), "closed at 3 true");
}

#[test]
fn group_commit_reports_commits_durable_from_a_sync_thread() {
    let dir = tempfile::tempdir().unwrap();
    let db = with_table(dir.path(), Durability::Group);
    // The table's commit is durable before anyone listens.
    db.sync().unwrap();
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    db.subscribe(Arc::new(move |event: &CommitEvent<'_>| {
        if let CommitEvent::Durable { seq, db } = event {
            // The database is unlocked here: subscribers may use it.
            let n: i64 = db
                .exec("SELECT count(*) AS n FROM t", &[])
                .unwrap()
                .one::<durable_sql::Row>()
                .unwrap()
                .get("n")
                .unwrap();
            tx.lock().unwrap().send((*seq, n)).unwrap();
        }
    }));
    let log = Log::default();
    log.attach(&db);
    for x in 0..20 {
        write(&db, x);
    }
    // Durable events only grow and end at the last commit.
    let mut last = 0;
    while last < 21 {
        let (seq, rows) = rx.recv_timeout(Duration::from_secs(10)).expect("durable in time");
        assert!(seq > last, "{seq} after {last}");
        assert!(rows >= seq as i64 - 1, "the subscriber read the database: {rows} rows");
        last = seq;
    }
    assert!(log.threads_of("durable").iter().all(|t| t == "durable-sync"), "{:?}", log.0);
    assert!(log.threads_of("committed").iter().all(|t| t != "durable-sync"));
    let events = log.events();
    let committed: Vec<_> = events.iter().filter(|e| e.starts_with("committed")).collect();
    assert_eq!(committed.len(), 20);
    // A Durable event never comes before the commit it covers.
    for (i, e) in events.iter().enumerate() {
        if let Some(seq) = e.strip_prefix("durable ") {
            assert!(events[..i].contains(&format!("committed {seq}")), "{events:?}");
        }
    }
}

#[test]
fn sync_makes_every_earlier_commit_durable_on_the_calling_thread() {
    let dir = tempfile::tempdir().unwrap();
    let db = with_table(dir.path(), Durability::Group);
    let release = Arc::new(Mutex::new(()));
    let held = release.lock().unwrap();
    let gate = release.clone();
    // Every pool sync waits for the gate: only `sync` on this thread can make progress.
    let pool_thread = |name: Option<&str>| name == Some("durable-sync");
    db.set_sync_hook(Some(Arc::new(move || {
        if pool_thread(std::thread::current().name()) {
            drop(gate.lock().unwrap());
        }
        Ok(())
    })));
    write(&db, 1);
    write(&db, 2);
    // The pool is held on its first sync; `sync` waits for it, then syncs what is left.
    let waiter = {
        let db = db.clone();
        std::thread::spawn(move || db.sync())
    };
    std::thread::sleep(Duration::from_millis(50));
    assert!(!waiter.is_finished(), "sync waits for the running sync");
    drop(held);
    waiter.join().unwrap().unwrap();
    let progress = db.commit_progress();
    assert_eq!(progress.durable, progress.committed);
    db.sync().unwrap();
}

#[test]
fn a_failed_sync_stops_the_pipeline_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let db = with_table(dir.path(), Durability::Group);
    db.sync().unwrap();
    let log = Log::default();
    log.attach(&db);
    db.set_sync_hook(Some(Arc::new(|| Err(std::io::Error::other("disk on fire")))));
    write(&db, 1);
    let err = db.sync().unwrap_err();
    assert!(err.to_string().contains("disk on fire"), "{err}");
    let progress = db.commit_progress();
    assert_eq!(progress.durable, 1);
    assert!(progress.failed.is_some());
    // Even with a healthy disk again, nothing later is reported durable by this handle.
    db.set_sync_hook(None);
    write(&db, 2);
    assert!(db.sync().is_err());
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(db.commit_progress().durable, 1);
    assert!(
        log.events().iter().any(|e| e == "sync failed after 1: disk on fire"),
        "{log:?}",
        log = log.events()
    );
    assert!(!log.events().iter().any(|e| e.starts_with("durable")));
    drop(db);
    assert_eq!(log.events().last().unwrap(), "closed at 3 false");
}

#[test]
fn a_panicking_sync_hook_is_a_failed_sync() {
    let dir = tempfile::tempdir().unwrap();
    let db = with_table(dir.path(), Durability::Group);
    db.set_sync_hook(Some(Arc::new(|| panic!("hook panicked"))));
    write(&db, 1);
    let err = db.sync().unwrap_err();
    assert!(err.to_string().contains("panicked"), "{err}");
    assert!(db.commit_progress().failed.is_some());
}

#[test]
fn reset_and_close_are_events_between_the_commits() {
    let dir = tempfile::tempdir().unwrap();
    let db = with_table(dir.path(), Durability::Group);
    let log = Log::default();
    log.attach(&db);
    write(&db, 1);
    db.reset().unwrap();
    // The wipe is durable at once: the commit before it no longer waits for a sync.
    assert_eq!(db.commit_progress().durable, 2);
    db.exec("CREATE TABLE u(y)", &[]).unwrap();
    db.exec("INSERT INTO u VALUES (1)", &[]).unwrap();
    // Dropped with a write open: the last handle commits it and syncs it.
    drop(db);
    let events: Vec<_> = log.events().into_iter().filter(|e| !e.starts_with("durable")).collect();
    assert_eq!(
        events,
        ["committed 2", "resetting", "reset after 2", "committed 3", "closed at 3 true"]
    );
    let db = Database::open(dir.path().join("o.sqlite"), Options::default()).unwrap();
    let n: i64 = db
        .exec("SELECT count(*) AS n FROM u", &[])
        .unwrap()
        .one::<durable_sql::Row>()
        .unwrap()
        .get("n")
        .unwrap();
    assert_eq!(n, 1, "the final commit reached the file");
}

#[test]
fn an_unsubscribed_subscriber_hears_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    let db = with_table(dir.path(), Durability::Full);
    let log = Log::default();
    log.attach(&db);
    let other = Log::default();
    let id = {
        let other = other.clone();
        db.subscribe(Arc::new(move |e: &CommitEvent<'_>| {
            other.0.lock().unwrap().push((format!("{e:?}"), String::new()));
        }))
    };
    write(&db, 1);
    db.unsubscribe(id);
    write(&db, 2);
    assert_eq!(other.events().len(), 2, "committed and durable of the first write only");
    assert_eq!(log.events().len(), 4);
}

#[test]
fn group_commit_in_memory_has_nothing_to_sync() {
    let db = Database::open_in_memory(Options::new().durability(Durability::Group)).unwrap();
    db.exec("CREATE TABLE t(x)", &[]).unwrap();
    db.commit().unwrap();
    db.sync().unwrap();
    assert_eq!(db.wal_path(), None);
    let p = db.commit_progress();
    assert_eq!((p.committed, p.durable), (1, 1));
}

#[test]
fn group_commit_reports_a_wal_it_cannot_reach() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("objects");
    std::fs::create_dir(&sub).unwrap();
    let db =
        Database::open(sub.join("o.sqlite"), Options::new().durability(Durability::Group)).unwrap();
    db.exec("CREATE TABLE t(x)", &[]).unwrap();
    db.sync().unwrap();
    // Hold the pool off, so the next commit is synced by `sync` after the folder is gone.
    db.set_sync_hook(Some(Arc::new(|| {
        if std::thread::current().name() == Some("durable-sync") {
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    })));
    db.exec("INSERT INTO t VALUES (1)", &[]).unwrap();
    db.commit().unwrap();
    std::fs::remove_dir_all(&sub).unwrap();
    std::fs::write(&sub, b"not a folder").unwrap();
    db.set_sync_hook(None);
    // The WAL's path is neither there nor absent: an error, not a silent success.
    match db.sync() {
        Err(e) => assert!(e.to_string().starts_with("sync failed: "), "{e}"),
        Ok(()) => panic!("the sync cannot have reached the WAL"),
    }
}

#[test]
fn a_host_can_stop_the_pipeline_for_good_under_either_durability() {
    for durability in [Durability::Full, Durability::Group] {
        let dir = tempfile::tempdir().unwrap();
        let db = with_table(dir.path(), durability);
        db.sync().unwrap();
        let log = Log::default();
        log.attach(&db);
        db.fail_durability(std::io::Error::other("taken over"));
        // Commits still go to the local file, but none is reported durable again.
        assert_eq!(write(&db, 1), Some(2), "{durability:?}");
        let err = db.sync().unwrap_err();
        assert!(err.to_string().contains("taken over"), "{durability:?}: {err}");
        let progress = db.commit_progress();
        assert_eq!(progress.durable, 1, "{durability:?}");
        assert!(progress.failed.is_some(), "{durability:?}");
        assert_eq!(
            log.events(),
            ["sync failed after 1: taken over", "committed 2"],
            "{durability:?}"
        );
    }
}
