//! Opening a database: the file and its WAL, the options applied to the connection
//! (durability, locking, checkpoints), in-memory databases, and `checkpoint`.

use durable_sql::{CheckpointMode, Database, Durability, Error, Options};

use crate::support::{NOT_AUTHORIZED, check, db, db_with, run};

/// Reads a pragma through the trusted seam (user SQL may not).
fn pragma(db: &Database, name: &str) -> String {
    db.internal(|i| {
        Ok(i.connection().query_row(&format!("PRAGMA {name}"), [], |r| {
            r.get::<_, durable_sql::rusqlite::types::Value>(0).map(|v| format!("{v:?}"))
        })?)
    })
    .unwrap()
}

/// Issue 19: `Options` is built method by method; each method sets its one field.
#[test]
fn options_build_one_field_per_method() {
    assert_eq!(Options::new(), Options::default());
    let limits = durable_sql::Limits { max_columns: 7, ..Default::default() };
    let o = Options::new()
        .durability(Durability::Group)
        .limits(limits.clone())
        .exclusive_locking(true)
        .auto_checkpoint(false)
        .statement_cache_bytes(4096);
    assert_eq!(o.durability, Durability::Group);
    assert_eq!(o.limits, limits);
    assert!(o.exclusive_locking && !o.auto_checkpoint);
    assert_eq!(o.statement_cache_bytes, 4096);
}

#[test]
fn the_connection_is_configured_from_the_options() {
    let cases = [
        (Durability::Full, "Integer(2)"),
        (Durability::Group, "Integer(1)"),
        (Durability::Off, "Integer(0)"),
    ];
    for (durability, expect) in cases {
        let db = db_with(Options::new().durability(durability));
        assert_eq!(db.durability(), durability);
        assert_eq!(pragma(&db, "synchronous"), expect, "{durability:?}");
        assert_eq!(pragma(&db, "journal_mode"), "Text(\"wal\")");
        assert_eq!(pragma(&db, "foreign_keys"), "Integer(1)");
        assert_eq!(pragma(&db, "wal_autocheckpoint"), "Integer(1000)");
        assert_eq!(pragma(&db, "locking_mode"), "Text(\"normal\")");
        assert_eq!(pragma(&db, "page_size"), "Integer(4096)");
    }
    let db = db_with(Options::new().auto_checkpoint(false).exclusive_locking(true));
    assert_eq!(pragma(&db, "wal_autocheckpoint"), "Integer(0)");
    assert_eq!(pragma(&db, "locking_mode"), "Text(\"exclusive\")");
    // The configuration survives a reset (a new connection is made).
    db.reset().unwrap();
    assert_eq!(pragma(&db, "wal_autocheckpoint"), "Integer(0)");
    assert_eq!(pragma(&db, "journal_mode"), "Text(\"wal\")");
    assert_eq!(pragma(&db, "foreign_keys"), "Integer(1)");
}

#[test]
fn a_second_handle_sees_committed_data_unless_locking_is_exclusive() {
    let db = db();
    run(&db, "CREATE TABLE t(x); INSERT INTO t VALUES (1)");
    db.commit().unwrap();
    run(&db, "INSERT INTO t VALUES (2)");
    let other = Database::open(db.path(), Options::default()).unwrap();
    check(&other, "SELECT x FROM t", "[[1]]");
    db.commit().unwrap();
    check(&other, "SELECT x FROM t ORDER BY x", "[[1], [2]]");
    drop(other);

    let exclusive = db_with(Options::new().exclusive_locking(true));
    run(&exclusive, "CREATE TABLE t(x)");
    exclusive.commit().unwrap();
    // Another connection waits for the lock (rusqlite's busy timeout) and then fails; it
    // never reads while the exclusive handle is open.
    let (tx, rx) = std::sync::mpsc::channel();
    let path = exclusive.path();
    std::thread::spawn(move || {
        let read = Database::open(path, Options::default())
            .and_then(|other| other.exec("SELECT count(*) FROM t", &[]).map(drop));
        let _ = tx.send(read.is_ok());
    });
    match rx.recv_timeout(std::time::Duration::from_millis(300)) {
        Err(_) => {}
        Ok(read) => assert!(!read, "the exclusive handle keeps other connections out"),
    }
}

#[test]
fn open_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing-folder").join("object.sqlite");
    let e = Database::open(&path, Options::default()).unwrap_err();
    assert!(matches!(e, Error::Open { .. }), "{e:?}");
    assert!(
        e.to_string().starts_with(&format!("cannot open database {}: ", path.display())),
        "{e}"
    );
}

#[test]
fn in_memory_databases_work_and_reset() {
    let db = Database::open_in_memory(Options::default()).unwrap();
    assert_eq!(db.path(), None);
    run(&db, "CREATE TABLE t(x); INSERT INTO t VALUES (1)");
    db.transaction_sync(|| db.exec("INSERT INTO t VALUES (2)", &[]).map(drop)).unwrap();
    db.commit().unwrap();
    check(&db, "SELECT x FROM t ORDER BY x", "[[1], [2]]");
    check(&db, "CREATE TABLE _cf_x(a)", NOT_AUTHORIZED);
    db.reset().unwrap();
    check(&db, "SELECT count(*) FROM sqlite_master", "[[0]]");
    let file = db_with(Options::default());
    assert_eq!(file.handle().path(), Some(file.dir_path().join("object.sqlite")));
}

#[test]
fn clones_share_one_connection() {
    let db = db();
    let clone = db.handle();
    run(&clone, "CREATE TABLE t(x); INSERT INTO t VALUES (1)");
    assert!(db.in_transaction(), "the clone's write opened the shared transaction");
    db.rollback().unwrap();
    check(&clone, "SELECT count(*) FROM sqlite_master", "[[0]]");
}

#[test]
fn checkpoints_copy_the_wal_into_the_database() {
    let db = db_with(Options::new().auto_checkpoint(false));
    run(
        &db,
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v); INSERT INTO t VALUES (1, randomblob(10000))",
    );
    db.commit().unwrap();
    let mut wal = db.path().into_os_string();
    wal.push("-wal");
    assert!(std::fs::metadata(&wal).unwrap().len() > 0);
    let (log, done) = db.checkpoint(CheckpointMode::Passive).unwrap();
    assert!(log > 0);
    assert_eq!(log, done);
    assert_eq!(db.checkpoint(CheckpointMode::Full).unwrap(), (log, log));
    assert_eq!(db.checkpoint(CheckpointMode::Truncate).unwrap(), (0, 0));
    assert_eq!(std::fs::metadata(&wal).unwrap().len(), 0);
    let db = db.reopen();
    check(&db, "SELECT id, length(v) FROM t", "[[1, 10000]]");
}

#[test]
fn dropping_the_last_handle_commits() {
    let db = db();
    let path = db.path();
    let other = Database::open(&path, Options::default()).unwrap();
    run(&other, "CREATE TABLE t(x); INSERT INTO t VALUES (1)");
    let clone = other.clone();
    drop(other);
    assert!(clone.in_transaction(), "a clone keeps the connection and its transaction");
    drop(clone);
    check(&db, "SELECT x FROM t", "[[1]]");
}
