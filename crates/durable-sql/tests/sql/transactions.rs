//! The implicit transaction and `transaction_sync`: commit, rollback, reset, nesting,
//! panics, deferred constraints at commit, and cursors that outlive a commit or a reset
//! (spec sections 2.2, 5, 6.1, 7.1, items 62-69 and 87-91; oracle cases 06, 36, 37, 44).

use std::panic::{AssertUnwindSafe, catch_unwind};

use durable_sql::{Database, Error, params};

use crate::support::{
    TRANSACTION_MESSAGE, TestDb, check, check_all, create_kv_table, db, error, kv_rows, query,
    render, run,
};

fn ids(db: &Database) -> String {
    query(db, "SELECT id FROM t ORDER BY id", &[])
}

fn insert(db: &Database, id: i64) -> durable_sql::Result<()> {
    db.exec("INSERT INTO t(id) VALUES (?)", &params![id]).map(drop)
}

fn with_table() -> TestDb {
    let db = db();
    run(&db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
    db.commit().unwrap();
    db
}

/// An error type of the caller's own, as `transaction_sync` callbacks return.
#[derive(Debug, PartialEq)]
enum AppError {
    Sql(Error),
    Boom(&'static str),
}

impl From<Error> for AppError {
    fn from(e: Error) -> Self {
        AppError::Sql(e)
    }
}

#[test]
fn writes_are_grouped_until_commit() {
    let db = with_table();
    assert!(!db.in_transaction());
    check(&db, "SELECT count(*) FROM t", "[[0]]");
    assert!(!db.in_transaction(), "reads do not open the implicit transaction");
    insert(&db, 1).unwrap();
    assert!(db.in_transaction());
    insert(&db, 2).unwrap();
    db.commit().unwrap();
    assert!(!db.in_transaction());
    db.commit().unwrap();
    insert(&db, 3).unwrap();
    db.rollback().unwrap();
    assert!(!db.in_transaction());
    db.rollback().unwrap();
    assert_eq!(ids(&db), "[[1], [2]]");
    // Uncommitted writes survive closing the handle (it commits).
    insert(&db, 4).unwrap();
    let db = db.reopen();
    assert_eq!(ids(&db), "[[1], [2], [4]]");
}

#[test]
fn transaction_sync_commits_and_returns_the_value() {
    // Spec item 87.
    let db = db();
    let got = db
        .transaction_sync(|| {
            run(&db, "CREATE TABLE IF NOT EXISTS s(v)");
            Ok::<_, Error>("some data")
        })
        .unwrap();
    assert_eq!(got, "some data");
    db.commit().unwrap();
    let db = db.reopen();
    check(&db, "SELECT name FROM sqlite_master WHERE name = 's'", "[['s']]");
}

#[test]
fn transaction_sync_rolls_back_on_err_and_returns_it() {
    // Oracle 06; spec item 88.
    let db = with_table();
    insert(&db, 1).unwrap();
    let e = db
        .transaction_sync(|| {
            insert(&db, 2)?;
            Err::<(), _>(AppError::Boom("boom"))
        })
        .unwrap_err();
    assert_eq!(e, AppError::Boom("boom"));
    assert_eq!(ids(&db), "[[1]]", "writes before the call stay, writes inside are gone");
    assert!(db.in_transaction());

    let e = db
        .transaction_sync(|| {
            run(&db, "CREATE TABLE r(v)");
            db.exec("SELECT * FROM misspelled", &[])?;
            Ok::<_, Error>(())
        })
        .unwrap_err();
    assert_eq!(e.to_string(), "no such table: misspelled: SQLITE_ERROR");
    check(&db, "SELECT count(*) FROM sqlite_master WHERE name = 'r'", "[[0]]");

    // A SQL error that propagates rolls back; one that is caught keeps the rest (oracle 44).
    let e = db
        .transaction_sync(|| {
            insert(&db, 9)?;
            insert(&db, 9)?;
            Ok::<_, Error>(())
        })
        .unwrap_err();
    assert!(e.to_string().starts_with("UNIQUE constraint failed: t.id"), "{e}");
    db.transaction_sync(|| {
        insert(&db, 7)?;
        assert!(insert(&db, 7).is_err());
        insert(&db, 8)
    })
    .unwrap();
    db.commit().unwrap();
    assert_eq!(ids(&db), "[[1], [7], [8]]");
}

#[test]
fn transaction_sync_nests() {
    // Oracle 06 and 44; spec item 89.
    let db = with_table();
    run(&db, "CREATE TABLE i(v); INSERT INTO i VALUES (1)");
    db.transaction_sync(|| {
        run(&db, "UPDATE i SET v = 2");
        let inner = db.transaction_sync(|| {
            run(&db, "UPDATE i SET v = 3");
            Err::<(), _>(AppError::Boom("foo"))
        });
        assert_eq!(inner, Err(AppError::Boom("foo")));
        check(&db, "SELECT v FROM i", "[[2]]");
        Ok::<_, AppError>(())
    })
    .unwrap();
    check(&db, "SELECT v FROM i", "[[2]]");

    // Inner commits, outer fails: both are gone.
    let outer = db.transaction_sync(|| {
        db.transaction_sync(|| insert(&db, 6))?;
        assert_eq!(ids(&db), "[[6]]");
        Err::<(), _>(AppError::Boom("outer"))
    });
    assert_eq!(outer, Err(AppError::Boom("outer")));
    assert_eq!(ids(&db), "[]");

    // Three levels, the middle fails and the outer catches it.
    db.transaction_sync(|| {
        insert(&db, 1)?;
        let middle = db.transaction_sync(|| {
            insert(&db, 2)?;
            db.transaction_sync(|| insert(&db, 3))?;
            Err::<(), _>(AppError::Boom("L2 fails"))
        });
        assert_eq!(middle, Err(AppError::Boom("L2 fails")));
        assert_eq!(ids(&db), "[[1]]");
        insert(&db, 11)?;
        Ok::<_, AppError>(())
    })
    .unwrap();
    db.commit().unwrap();
    assert_eq!(ids(&db), "[[1], [11]]");
}

#[test]
fn a_panic_rolls_back_and_resumes() {
    let db = with_table();
    insert(&db, 1).unwrap();
    let handle = db.handle();
    let payload = catch_unwind(AssertUnwindSafe(|| {
        let _ = handle.transaction_sync(|| -> Result<(), Error> {
            insert(&handle, 2).unwrap();
            panic!("boom");
        });
    }))
    .unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom"));
    assert_eq!(ids(&db), "[[1]]");
    // The handle is usable afterwards, and the savepoint depth is back to zero.
    db.transaction_sync(|| insert(&db, 3)).unwrap();
    db.commit().unwrap();
    assert!(!db.in_transaction());

    // A panic caught inside an outer transaction undoes only the inner one.
    db.transaction_sync(|| {
        insert(&db, 4)?;
        let inner = catch_unwind(AssertUnwindSafe(|| {
            let _ = db.transaction_sync(|| -> Result<(), Error> {
                insert(&db, 5).unwrap();
                panic!("inner");
            });
        }));
        assert!(inner.is_err());
        insert(&db, 6)
    })
    .unwrap();
    db.commit().unwrap();
    let db = db.reopen();
    assert_eq!(ids(&db), "[[1], [3], [4], [6]]");
}

#[test]
fn transaction_statements_are_refused_inside_transaction_sync() {
    // Oracle 06 and 37.
    let db = with_table();
    db.transaction_sync(|| {
        insert(&db, 3)?;
        for sql in [
            "BEGIN",
            "COMMIT",
            "END",
            "ROLLBACK",
            "SAVEPOINT sp",
            "RELEASE sp",
            "RELEASE _cf_sync_savepoint_0",
            "ROLLBACK TO _cf_sync_savepoint_0",
        ] {
            let e = error(&db, sql, &[]);
            assert!(matches!(e, Error::TransactionStatement), "{sql}: {e:?}");
            assert_eq!(e.to_string(), TRANSACTION_MESSAGE);
        }
        insert(&db, 4)
    })
    .unwrap();
    db.commit().unwrap();
    assert_eq!(ids(&db), "[[3], [4]]");
}

#[test]
fn commit_is_refused_while_transaction_sync_runs() {
    let db = with_table();
    db.transaction_sync(|| {
        insert(&db, 1)?;
        assert!(db.commit().is_err());
        insert(&db, 2)
    })
    .unwrap();
    db.commit().unwrap();
    let db = db.reopen();
    assert_eq!(ids(&db), "[[1], [2]]");
}

#[test]
fn internal_writes_inside_transaction_sync_roll_back_too() {
    // Spec items 90-91 at this layer: an internal table created inside a failed
    // transaction_sync is gone, and can be created again.
    let db = db();
    let create_kv = |db: &Database| {
        db.internal(|i| {
            i.begin_write()?;
            i.connection().execute_batch(
                "CREATE TABLE IF NOT EXISTS _cf_KV (key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID;
                 INSERT OR REPLACE INTO _cf_KV VALUES ('foo', x'7b');",
            )?;
            Ok(())
        })
    };
    let failed = db.transaction_sync(|| {
        create_kv(&db)?;
        Err::<(), _>(AppError::Boom("bar"))
    });
    assert_eq!(failed, Err(AppError::Boom("bar")));
    check(&db, "SELECT count(*) FROM sqlite_master WHERE name = '_cf_KV'", "[[0]]");
    create_kv(&db).unwrap();
    db.commit().unwrap();
    assert_eq!(kv_rows(&db), [("foo".to_owned(), vec![0x7b])]);
}

#[test]
fn deferred_constraints_fail_the_commit_and_roll_back() {
    // Oracle 36; spec items 66-67.
    let db = db();
    run(
        &db,
        "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT); \
         CREATE TABLE posts(id INTEGER PRIMARY KEY, \
         user_id INTEGER NOT NULL REFERENCES users(id), title TEXT); \
         INSERT INTO users VALUES (1, 'ann')",
    );
    db.commit().unwrap();
    // Fixed before the commit: fine.
    db.transaction_sync(|| {
        run(&db, "PRAGMA defer_foreign_keys = ON");
        run(&db, "INSERT INTO posts(user_id, title) VALUES (4, 'early')");
        run(&db, "INSERT INTO users VALUES (4, 'dee')");
        Ok::<_, Error>(())
    })
    .unwrap();
    db.commit().unwrap();
    // Left violated: the transaction_sync returns normally, the commit fails.
    run(&db, "INSERT INTO users VALUES (5, 'eve')");
    db.transaction_sync(|| {
        run(&db, "PRAGMA defer_foreign_keys = ON");
        run(&db, "INSERT INTO posts(user_id, title) VALUES (2, 'dangling')");
        Ok::<_, Error>(())
    })
    .unwrap();
    let e = db.commit().unwrap_err();
    assert!(matches!(e, Error::ConstraintsAtCommit(_)), "{e:?}");
    assert!(e.to_string().starts_with("Durable Object was reset and rolled back"), "{e}");
    assert_eq!(
        e.to_string(),
        "Durable Object was reset and rolled back to its last known good state because the \
         application left the database in a state where constraints were violated: FOREIGN KEY \
         constraint failed: SQLITE_CONSTRAINT (extended: SQLITE_CONSTRAINT_FOREIGNKEY)"
    );
    assert_eq!(e.sqlite().unwrap().extended_code, 787);
    assert!(!db.in_transaction());
    // Every write of that transaction is gone; earlier commits stay; the handle works.
    check_all(
        &db,
        &[
            ("SELECT title FROM posts ORDER BY id", "[['early']]"),
            ("SELECT id FROM users ORDER BY id", "[[1], [4]]"),
            ("INSERT INTO users VALUES (6, 'fay'); SELECT count(*) FROM users", "[[3]]"),
        ],
    );
    db.commit().unwrap();
    let db = db.reopen();
    check(&db, "SELECT id FROM users ORDER BY id", "[[1], [4], [6]]");
}

#[test]
fn foreign_keys_are_on_and_enforced() {
    // Oracle 36; spec items 64-65, 68-69.
    let db = db();
    run(
        &db,
        "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT); \
         CREATE TABLE posts(id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL \
         REFERENCES users(id) ON DELETE CASCADE ON UPDATE CASCADE, title TEXT); \
         CREATE TABLE locks(user_id INTEGER REFERENCES users(id) ON DELETE RESTRICT); \
         INSERT INTO users VALUES (1, 'ann'), (2, 'bob'), (3, 'cy')",
    );
    check_all(
        &db,
        &[
            ("PRAGMA foreign_keys", "[[1]]"),
            (
                "INSERT INTO posts(user_id, title) VALUES (9, 'orphan')",
                "error: FOREIGN KEY constraint failed: SQLITE_CONSTRAINT \
                 (extended: SQLITE_CONSTRAINT_FOREIGNKEY)",
            ),
            ("INSERT INTO posts(user_id, title) VALUES (1, 'a1'), (1, 'a2'), (2, 'b1')", "[]"),
            ("DELETE FROM users WHERE id = 1", "[]"),
            ("SELECT user_id, title FROM posts ORDER BY id", "[[2, 'b1']]"),
            ("UPDATE users SET id = 20 WHERE id = 2", "[]"),
            ("SELECT user_id, title FROM posts ORDER BY id", "[[20, 'b1']]"),
            (
                "INSERT INTO locks VALUES (3); DELETE FROM users WHERE id = 3",
                "error: FOREIGN KEY constraint failed: SQLITE_CONSTRAINT \
                 (extended: SQLITE_CONSTRAINT_TRIGGER)",
            ),
            (
                "PRAGMA foreign_key_list(posts)",
                "[[0, 0, 'users', 'user_id', 'id', 'CASCADE', 'CASCADE', 'NONE']]",
            ),
            ("PRAGMA foreign_key_check", "[]"),
        ],
    );
    // Spec item 65: the first failing statement of a transaction_sync stops it.
    let e = db
        .transaction_sync(|| -> Result<(), Error> {
            run(&db, "INSERT INTO users VALUES (7, 'gus')");
            db.exec("INSERT INTO posts(user_id, title) VALUES (99, 'x')", &[])?;
            unreachable!("the FK error propagates")
        })
        .unwrap_err();
    assert!(e.to_string().starts_with("FOREIGN KEY constraint failed"), "{e}");
    check(&db, "SELECT count(*) FROM users WHERE id = 7", "[[0]]");
    db.commit().unwrap();

    // Spec item 69: switching foreign keys off is ignored inside a transaction.
    run(&db, "INSERT INTO users VALUES (8, 'hal')");
    run(&db, "PRAGMA foreign_keys = OFF");
    check(&db, "PRAGMA foreign_keys", "[[1]]");
    db.commit().unwrap();

    // Spec item 68: with no transaction open it takes effect, for the connection.
    run(&db, "PRAGMA foreign_keys = OFF");
    check(&db, "PRAGMA foreign_keys", "[[0]]");
    run(
        &db,
        "CREATE TABLE A(id INTEGER PRIMARY KEY, b_id REFERENCES B(id)); INSERT INTO A VALUES (1, 1)",
    );
    check(&db, "PRAGMA foreign_key_check", "[['A', 1, 'B', 0]]");
    run(&db, "CREATE TABLE B(id INTEGER PRIMARY KEY); INSERT INTO B VALUES (1)");
    check(&db, "PRAGMA foreign_key_check", "[]");
    db.commit().unwrap();
}

#[test]
fn check_constraints_can_be_ignored_and_found_again() {
    // Spec items 62-63.
    let db = db();
    run(
        &db,
        "CREATE TABLE altercolumns(x); ALTER TABLE altercolumns ADD COLUMN checked_col TEXT CHECK(checked_col IN ('A','B'))",
    );
    check_all(
        &db,
        &[
            ("INSERT INTO altercolumns(checked_col) VALUES ('A')", "[]"),
            (
                "INSERT INTO altercolumns(checked_col) VALUES ('C')",
                "error: CHECK constraint failed: checked_col IN ('A','B'): SQLITE_CONSTRAINT \
                 (extended: SQLITE_CONSTRAINT_CHECK)",
            ),
            ("PRAGMA ignore_check_constraints = ON", "[]"),
            ("INSERT INTO altercolumns(checked_col) VALUES ('C'), ('D')", "[]"),
            ("PRAGMA ignore_check_constraints = OFF", "[]"),
            (
                "PRAGMA quick_check",
                "[['CHECK constraint failed in altercolumns'], \
                 ['CHECK constraint failed in altercolumns']]",
            ),
        ],
    );
}

#[test]
fn a_half_read_returning_cursor_does_not_fail_the_commit() {
    // Spec section 2.2 "Hazard": the runtime's COMMIT fails here; this crate finishes the
    // statement first and keeps its rows for the cursor.
    let db = with_table();
    let mut cursor = db.exec("INSERT INTO t(id) VALUES (1), (2), (3) RETURNING id", &[]).unwrap();
    assert_eq!(cursor.next().unwrap().unwrap().get::<i64>("id").unwrap(), 1);
    db.commit().unwrap();
    assert!(!db.in_transaction());
    assert_eq!(render(&cursor.to_raw_array().unwrap()), "[[2], [3]]");
    assert_eq!(cursor.rows_written(), 3);

    // Never read at all, and closed after the commit.
    let unread = db.exec("UPDATE t SET v = 'x' RETURNING id, v", &[]).unwrap();
    db.commit().unwrap();
    drop(unread);
    let db = db.reopen();
    check(&db, "SELECT id, v FROM t ORDER BY id", "[[1, 'x'], [2, 'x'], [3, 'x']]");
}

#[test]
fn a_read_cursor_survives_a_commit() {
    let db = with_table();
    run(&db, "INSERT INTO t(id) VALUES (1), (2), (3)");
    let mut cursor = db.exec("SELECT id FROM t ORDER BY id", &[]).unwrap();
    cursor.next().unwrap().unwrap();
    db.commit().unwrap();
    assert_eq!(render(&cursor.to_raw_array().unwrap()), "[[2], [3]]");
}

#[test]
fn reset_deletes_everything_and_cancels_cursors() {
    // Spec sections 2.2 and 7.1.
    let db = with_table();
    create_kv_table(&db);
    run(&db, "INSERT INTO t(id) VALUES (1), (2), (3)");
    db.commit().unwrap();
    let mut cursor = db.exec("SELECT id FROM t ORDER BY id", &[]).unwrap();
    cursor.next().unwrap().unwrap();
    let mut unread = db.exec("SELECT id FROM t", &[]).unwrap();
    insert(&db, 4).unwrap();
    db.reset().unwrap();
    assert!(!db.in_transaction());

    let e = cursor.next().unwrap().unwrap_err();
    assert!(matches!(e, Error::Canceled), "{e:?}");
    assert_eq!(e.to_string(), "SQLite query was canceled because the database was deleted.");
    assert!(matches!(unread.to_array::<durable_sql::Row>(), Err(Error::Canceled)));

    check_all(
        &db,
        &[
            ("SELECT count(*) FROM sqlite_master", "[[0]]"),
            // The cached statement fails until its table exists again.
            ("SELECT id FROM t ORDER BY id", "error: no such table: t: SQLITE_ERROR"),
            ("PRAGMA foreign_keys", "[[1]]"),
        ],
    );
    assert_eq!(db.database_size().unwrap(), 4096);
    // Writes after the reset persist.
    run(&db, "CREATE TABLE t(id INTEGER PRIMARY KEY); INSERT INTO t VALUES (9)");
    db.commit().unwrap();
    let db = db.reopen();
    assert_eq!(ids(&db), "[[9]]");
}

fn autocommit(db: &Database) -> bool {
    db.internal(|i| Ok(i.autocommit())).unwrap()
}

#[test]
fn rollback_with_a_read_cursor_open_leaves_no_transaction_behind() {
    let db = with_table();
    run(&db, "INSERT INTO t(id) VALUES (1), (2), (3)");
    db.commit().unwrap();
    let mut cursor = db.exec("SELECT id FROM t ORDER BY id", &[]).unwrap();
    cursor.next().unwrap().unwrap();
    insert(&db, 4).unwrap();
    assert!(!autocommit(&db));
    db.rollback().unwrap();
    assert!(!db.in_transaction());
    assert!(autocommit(&db), "SQLite's transaction ended with the handle's");
    // The scan goes on over the committed rows.
    assert_eq!(render(&cursor.to_raw_array().unwrap()), "[[2], [3]]");
    insert(&db, 5).unwrap();
    db.commit().unwrap();
    assert!(autocommit(&db));
    let db = db.reopen();
    assert_eq!(ids(&db), "[[1], [2], [3], [5]]");
}

#[test]
fn rollback_of_a_schema_change_with_a_read_cursor_open() {
    let db = with_table();
    run(&db, "INSERT INTO t(id) VALUES (1), (2), (3)");
    db.commit().unwrap();
    let mut cursor = db.exec("SELECT id FROM t ORDER BY id", &[]).unwrap();
    cursor.next().unwrap().unwrap();
    run(&db, "CREATE TABLE x(v)");
    db.rollback().unwrap();
    assert!(!db.in_transaction());
    assert!(autocommit(&db), "SQLite's transaction ended with the handle's");
    // SQLite aborts scans when a rollback changed the schema under them.
    assert_eq!(
        cursor.to_raw_array().unwrap_err().to_string(),
        "abort due to ROLLBACK: SQLITE_ABORT (extended: SQLITE_ABORT_ROLLBACK)"
    );
    check(&db, "SELECT count(*) FROM sqlite_master WHERE name = 'x'", "[[0]]");
    insert(&db, 5).unwrap();
    db.commit().unwrap();
    assert_eq!(ids(&db), "[[1], [2], [3], [5]]");
}
