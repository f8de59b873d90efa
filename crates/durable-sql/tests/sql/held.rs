//! Held statements (`Internal::held`): the project's own hot statements, prepared once and
//! kept across calls. They must follow schema changes, die with `reset`, survive a leaked
//! handle, and never be reachable from user SQL.

use durable_sql::{Database, Internal, Options};

use crate::support::db;

const READ: &str = "SELECT v FROM _cf_held WHERE k = ?";
const WRITE: &str = "INSERT INTO _cf_held (k, v) VALUES (?, ?)";

fn create(db: &Database) {
    db.internal(|i| Ok(i.connection().execute_batch("CREATE TABLE _cf_held (k TEXT, v BLOB)")?))
        .unwrap();
}

fn write(i: &mut Internal<'_>, k: &str, v: &[u8]) -> durable_sql::Result<u64> {
    let mut stmt = i.held(WRITE)?;
    stmt.bind_text(1, k.as_bytes())?;
    stmt.bind_blob(2, v)?;
    assert!(!stmt.step()?);
    Ok(stmt.changes())
}

fn read(db: &Database, k: &str) -> durable_sql::Result<Option<Vec<u8>>> {
    db.internal(|i| {
        let mut stmt = i.held(READ)?;
        stmt.bind_text(1, k.as_bytes())?;
        Ok(stmt.step()?.then(|| stmt.column(0).unwrap_or_default().to_vec()))
    })
}

#[test]
fn a_held_statement_writes_reads_and_reports_changes() {
    let db = db();
    create(&db);
    assert_eq!(db.internal(|i| write(i, "a", b"one")).unwrap(), 1);
    assert_eq!(db.internal(|i| write(i, "b", b"")).unwrap(), 1);
    assert_eq!(read(&db, "a").unwrap().as_deref(), Some(&b"one"[..]));
    // An empty blob is bound as an empty blob, not NULL.
    let kind = db.internal(|i| {
        Ok(i.connection().query_row("SELECT typeof(v) FROM _cf_held WHERE k = 'b'", [], |r| {
            r.get::<_, String>(0)
        })?)
    });
    assert_eq!(kind.unwrap(), "blob");
    assert_eq!(read(&db, "missing").unwrap(), None);
}

#[test]
fn a_held_statement_follows_the_table_being_dropped_and_recreated() {
    let db = db();
    create(&db);
    db.internal(|i| write(i, "a", b"1")).unwrap();
    assert!(read(&db, "a").unwrap().is_some());
    db.internal(|i| Ok(i.connection().execute_batch("DROP TABLE _cf_held")?)).unwrap();
    let e = read(&db, "a").unwrap_err();
    assert!(e.to_string().starts_with("no such table: _cf_held"), "{e}");
    // A different layout: SQLite re-prepares the held statement against it.
    db.internal(|i| {
        Ok(i.connection().execute_batch("CREATE TABLE _cf_held (x INT, k TEXT, v BLOB)")?)
    })
    .unwrap();
    assert_eq!(read(&db, "a").unwrap(), None);
    db.internal(|i| write(i, "a", b"2")).unwrap();
    assert_eq!(read(&db, "a").unwrap().as_deref(), Some(&b"2"[..]));
}

#[test]
fn a_rolled_back_table_creation_fails_the_held_statement_until_it_exists_again() {
    let db = db();
    db.begin_write().unwrap();
    create(&db);
    db.internal(|i| write(i, "a", b"1")).unwrap();
    assert!(read(&db, "a").unwrap().is_some());
    db.rollback().unwrap();
    assert!(read(&db, "a").is_err());
    create(&db);
    assert_eq!(read(&db, "a").unwrap(), None);
}

#[test]
fn reset_finalizes_held_statements_and_they_are_prepared_again() {
    let db = db();
    create(&db);
    db.internal(|i| write(i, "a", b"1")).unwrap();
    db.reset().unwrap();
    let e = read(&db, "a").unwrap_err();
    assert!(e.to_string().starts_with("no such table: _cf_held"), "{e}");
    create(&db);
    assert_eq!(read(&db, "a").unwrap(), None);
    db.internal(|i| write(i, "a", b"2")).unwrap();
    assert_eq!(read(&db, "a").unwrap().as_deref(), Some(&b"2"[..]));
}

#[test]
fn a_leaked_handle_is_reset_before_the_next_use() {
    let db = db();
    create(&db);
    db.internal(|i| write(i, "a", b"1")).unwrap();
    {
        let key = String::from("a");
        db.internal(|i| {
            let mut stmt = i.held(READ)?;
            stmt.bind_text(1, key.as_bytes())?;
            assert!(stmt.step()?);
            std::mem::forget(stmt);
            Ok(())
        })
        .unwrap();
    }
    // The leaked statement was left on a row, bound to freed bytes: the next use starts clean.
    assert_eq!(read(&db, "a").unwrap().as_deref(), Some(&b"1"[..]));
    // And nothing is left running to hold a read transaction open across a commit.
    db.internal(|i| write(i, "b", b"2")).unwrap();
    db.commit().unwrap();
}

#[test]
fn user_sql_with_a_held_statements_text_is_still_authorized() {
    let db = db();
    create(&db);
    db.internal(|i| write(i, "a", b"1")).unwrap();
    assert!(read(&db, "a").unwrap().is_some());
    let e = db.exec(READ, &durable_sql::params!["a"]).unwrap_err();
    assert_eq!(e.to_string(), "access to _cf_held.v is prohibited: SQLITE_AUTH");
    let e = db.exec(WRITE, &durable_sql::params!["b", 1]).unwrap_err();
    assert_eq!(e.to_string(), "not authorized: SQLITE_AUTH");
}

#[test]
fn held_statements_work_on_an_in_memory_database_with_exclusive_locking() {
    let db = Database::open_in_memory(Options::new().exclusive_locking(true)).unwrap();
    create(&db);
    db.internal(|i| write(i, "a", b"1")).unwrap();
    assert_eq!(read(&db, "a").unwrap().as_deref(), Some(&b"1"[..]));
}
