//! `Database::database_size`: pages in use times the page size, WAL included, free pages
//! excluded (spec sections 2.4 and 7.1, items 77-78; oracle cases 09, 44, 48).

use durable_sql::Error;

use crate::support::{Mode, create_kv_table, db, exec_mode, run};

/// A statement, its `(rows_read, rows_written)`, and the database size after it.
type Step = (&'static str, (u64, u64), u64);

/// Runs each statement and checks its counters and the size after it.
#[track_caller]
fn sizes(db: &durable_sql::Database, steps: &[Step]) {
    let mut failures = Vec::new();
    for (sql, counters, size) in steps {
        let out = exec_mode(db, sql, &[], Mode::None).unwrap();
        if (out.read, out.written) != *counters {
            failures
                .push(format!("{sql}: counters {:?}, want {counters:?}", (out.read, out.written)));
        }
        let got = db.database_size().unwrap();
        if got != *size {
            failures.push(format!("{sql}: size {got}, want {size}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_fresh_database_is_one_page() {
    // Spec item 78; oracle 09 and 48 "fresh".
    let db = db();
    assert_eq!(db.database_size().unwrap(), 4096);
    run(&db, "SELECT 1");
    assert_eq!(db.database_size().unwrap(), 4096, "reads add nothing");
    let db = db.reopen();
    assert_eq!(db.database_size().unwrap(), 4096);
}

#[test]
fn create_table_adds_a_page_and_drop_gives_it_back() {
    // Spec item 77, uncommitted and committed.
    let db = db();
    let s = db.database_size().unwrap();
    run(&db, "CREATE TABLE x(v)");
    assert_eq!(db.database_size().unwrap(), s + 4096);
    run(&db, "DROP TABLE x");
    assert_eq!(db.database_size().unwrap(), s);
    run(&db, "CREATE TABLE y(v)");
    db.commit().unwrap();
    assert_eq!(db.database_size().unwrap(), s + 4096);
    run(&db, "DROP TABLE y");
    db.commit().unwrap();
    assert_eq!(db.database_size().unwrap(), s);
}

#[test]
fn size_follows_rows_indexes_and_deletes() {
    // Oracle 48, with `_cf_KV` made through trusted SQL in place of the first kv.put.
    let db = db();
    create_kv_table(&db);
    assert_eq!(db.database_size().unwrap(), 8192);
    sizes(
        &db,
        &[
            ("CREATE TABLE big(id INTEGER PRIMARY KEY, pad TEXT)", (1, 2), 12288),
            ("CREATE INDEX big_pad ON big(pad)", (2, 1), 16384),
            (
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 500) \
                 INSERT INTO big SELECT x, printf('%0200d', x) FROM c",
                (1001, 1000),
                249856,
            ),
            ("DELETE FROM big WHERE id > 100", (400, 400), 65536),
            ("DROP TABLE big", (5, 0), 8192),
        ],
    );
}

#[test]
fn size_of_ten_thousand_rows() {
    // Oracle 09.
    let db = db();
    create_kv_table(&db);
    sizes(
        &db,
        &[
            ("CREATE TABLE t(id INTEGER PRIMARY KEY, pad TEXT)", (1, 2), 12288),
            (
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000) \
                 INSERT INTO t(id, pad) SELECT x, printf('%0100d', x) FROM c",
                (2001, 1000),
                126976,
            ),
            (
                "WITH RECURSIVE c(x) AS (SELECT 1001 UNION ALL SELECT x + 1 FROM c \
                 WHERE x < 10000) INSERT INTO t(id, pad) SELECT x, printf('%0100d', x) FROM c",
                (18001, 9000),
                1122304,
            ),
            ("CREATE INDEX t_pad ON t(pad)", (20527, 10001), 2240512),
            ("DELETE FROM t WHERE id > 5000", (5000, 5000), 1130496),
            ("DROP TABLE t", (5, 0), 8192),
        ],
    );
    db.commit().unwrap();
    db.reset().unwrap();
    assert_eq!(db.database_size().unwrap(), 4096, "after a reset");
}

#[test]
fn a_rolled_back_create_table_leaves_the_size_unchanged() {
    // Oracle 44.
    let db = db();
    create_kv_table(&db);
    let before = db.database_size().unwrap();
    let failed = db.transaction_sync(|| {
        run(&db, "CREATE TABLE tmp(x); INSERT INTO tmp VALUES (1)");
        assert_eq!(db.database_size().unwrap(), before + 4096);
        Err::<(), _>(Error::NoResults)
    });
    assert!(failed.is_err());
    assert_eq!(db.database_size().unwrap(), before);
    run(&db, "CREATE TABLE kept(x)");
    db.rollback().unwrap();
    assert_eq!(db.database_size().unwrap(), before - 4096, "the rollback took _cf_KV too");
}
