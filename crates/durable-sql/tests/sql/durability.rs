//! Confirmed and unconfirmed writes (spec 5.3), and `WalSync`, the fsync a layer above runs
//! off the commit to share it among commits.

use durable_sql::{CheckpointMode, Database, Options, Synchronous, params};

fn normal() -> Options {
    Options { synchronous: Synchronous::Normal, ..Options::default() }
}

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

#[test]
fn wal_sync_follows_the_wal_file_through_checkpoints_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o.sqlite");
    let db = Database::open(&path, normal()).unwrap();
    let wal = db.wal_sync();
    // Nothing written yet: no WAL to sync (or an empty one).
    wal.sync().unwrap();
    db.exec("CREATE TABLE t(x)", &[]).unwrap();
    db.commit().unwrap();
    wal.sync().unwrap();
    db.checkpoint(CheckpointMode::Truncate).unwrap();
    wal.sync().unwrap();
    db.exec("INSERT INTO t VALUES (1)", &[]).unwrap();
    db.commit().unwrap();
    wal.sync().unwrap();
    db.close().unwrap();
    // The last connection checkpointed and removed the WAL: nothing left to sync.
    assert!(!db_wal(&path).exists());
    wal.sync().unwrap();

    // A new connection makes a new WAL file: the old handle follows it.
    let db = Database::open(&path, normal()).unwrap();
    db.exec("INSERT INTO t VALUES (2)", &[]).unwrap();
    db.commit().unwrap();
    assert!(db_wal(&path).exists());
    wal.sync().unwrap();
    std::thread::spawn(move || wal.sync()).join().unwrap().unwrap();
    let n: i64 =
        db.exec("SELECT count(*) AS n FROM t", &[]).unwrap().one().unwrap().get("n").unwrap();
    assert_eq!(n, 2);
}

#[test]
fn wal_sync_of_an_in_memory_database_does_nothing() {
    let db = Database::open_in_memory(normal()).unwrap();
    db.exec("CREATE TABLE t(x)", &[]).unwrap();
    db.commit().unwrap();
    assert_eq!(db.wal_path(), None);
    db.wal_sync().sync().unwrap();
}

#[test]
fn wal_sync_reports_a_wal_it_cannot_reach() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("objects");
    std::fs::create_dir(&sub).unwrap();
    let db = Database::open(sub.join("o.sqlite"), normal()).unwrap();
    let wal = db.wal_sync();
    db.exec("CREATE TABLE t(x)", &[]).unwrap();
    db.commit().unwrap();
    db.close().unwrap();
    // The folder is replaced by a file: the WAL's path is neither there nor absent.
    std::fs::remove_dir_all(&sub).unwrap();
    std::fs::write(&sub, b"not a folder").unwrap();
    let err = wal.sync().unwrap_err();
    assert_ne!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
}

fn db_wal(path: &std::path::Path) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-wal");
    name.into()
}
