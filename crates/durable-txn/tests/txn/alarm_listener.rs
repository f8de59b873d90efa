//! The alarm listener (the seam a namespace's alarm index hangs on): told every change of the
//! committed alarm, once, and nothing else. The storage remembers the committed alarm rather
//! than reading it after every commit, so these tests also catch a remembered value gone
//! stale (after rollbacks, failed commits, `delete_all`, resets behind its back).

use std::sync::{Arc, Mutex};

use durable_txn::{Compatibility, Error, Op, Storage, Transaction, block_on};

use crate::support::Dir;

const A: i64 = 4_000_000_000_000;
const B: i64 = 4_100_000_000_000;

/// What the listener of `storage` was told, in order.
type Told = Arc<Mutex<Vec<Option<i64>>>>;

/// Installs a listener that records what it is told.
fn listen(storage: &Storage) -> Told {
    let told: Told = Arc::default();
    let record = told.clone();
    storage.set_alarm_listener(Some(Arc::new(move |alarm| record.lock().unwrap().push(alarm))));
    told
}

fn told(told: &Told) -> Vec<Option<i64>> {
    told.lock().unwrap().clone()
}

/// The outcome of an `Op` that SQLite-backed storage answers at once.
fn now<T>(op: Op<T>) -> Result<T, Error> {
    match op.now() {
        Ok(outcome) => outcome,
        Err(_) => panic!("SQLite-backed storage answers at once"),
    }
}

fn sync(storage: &Storage) {
    now(storage.sync()).expect("sync");
}

fn alarm(storage: &Storage) -> Option<i64> {
    now(storage.get_alarm()).expect("get_alarm")
}

#[test]
fn the_listener_hears_each_committed_change_and_nothing_else() {
    let dir = Dir::new();
    let storage = dir.open();
    let heard = listen(&storage);
    assert_eq!(told(&heard), [None], "told the alarm when installed");
    for i in 0..50i64 {
        storage.put("k", &i);
        sync(&storage);
    }
    assert_eq!(told(&heard), [None], "commits that leave the alarm alone tell nothing");

    now(storage.set_alarm(A)).unwrap();
    assert_eq!(told(&heard), [None], "an uncommitted alarm is not told");
    sync(&storage);
    assert_eq!(told(&heard), [None, Some(A)]);
    for i in 0..5i64 {
        storage.put("k", &i);
        sync(&storage);
    }
    now(storage.set_alarm(A)).unwrap();
    sync(&storage);
    assert_eq!(told(&heard), [None, Some(A)], "the same alarm again is no change");

    now(storage.set_alarm(B)).unwrap();
    storage.put("k", &1i64);
    sync(&storage);
    now(storage.delete_alarm()).unwrap();
    sync(&storage);
    assert_eq!(told(&heard), [None, Some(A), Some(B), None]);

    // Set and deleted again before the commit: the committed alarm did not change.
    now(storage.set_alarm(A)).unwrap();
    now(storage.delete_alarm()).unwrap();
    sync(&storage);
    assert_eq!(told(&heard), [None, Some(A), Some(B), None]);
}

#[test]
fn user_sql_cannot_write_the_alarm_behind_the_listener() {
    // The only writer of `_cf_METADATA` is the storage itself, which is why it may remember
    // the committed alarm (spec sqlite-storage.md 3.2: `_cf_` tables are reserved).
    let dir = Dir::new();
    let storage = dir.open();
    let heard = listen(&storage);
    now(storage.set_alarm(A)).unwrap();
    sync(&storage);
    let sql = storage.sql().unwrap();
    for statement in [
        "UPDATE _cf_METADATA SET value = NULL WHERE key = 1",
        "DELETE FROM _cf_METADATA",
        "INSERT INTO _cf_METADATA (key, value) VALUES (1, 7)",
        "DROP TABLE _cf_METADATA",
        "ALTER TABLE _cf_METADATA RENAME TO meta",
    ] {
        let error = sql.exec(statement, &[]).err().unwrap_or_else(|| panic!("{statement} ran"));
        assert!(error.to_string().contains("not authorized"), "{statement}: {error}");
    }
    // Nor through a trigger on a table of its own.
    sql.exec("CREATE TABLE t (x)", &[]).unwrap();
    let trigger = "CREATE TRIGGER wipe AFTER INSERT ON t BEGIN DELETE FROM _cf_METADATA; END";
    let outcome = sql.exec(trigger, &[]).and_then(|_| sql.exec("INSERT INTO t VALUES (1)", &[]));
    assert!(outcome.is_err(), "a trigger reached _cf_METADATA");
    sync(&storage);
    assert_eq!(alarm(&storage), Some(A));
    assert_eq!(told(&heard), [None, Some(A)]);
}

#[test]
fn rolled_back_alarm_writes_are_neither_told_nor_remembered() {
    let dir = Dir::new();
    let storage = dir.open();
    let heard = listen(&storage);

    let r: Result<(), Error> = storage.transaction_sync(|| {
        now(storage.set_alarm(A))?;
        assert_eq!(alarm(&storage), Some(A), "the transaction sees its own alarm");
        Err(Error::Aborted("undo".into()))
    });
    assert!(r.is_err());
    assert_eq!(alarm(&storage), None);
    storage.put("k", &1i64);
    sync(&storage);

    let kept = block_on(storage.transaction(|txn: Transaction| async move {
        txn.set_alarm(A).await?;
        txn.rollback()?;
        Ok::<_, Error>(())
    }));
    assert!(kept.is_ok());
    assert_eq!(alarm(&storage), None);
    let failed = block_on(storage.transaction(|txn: Transaction| async move {
        txn.set_alarm(B).await?;
        Err::<(), _>(Error::Aborted("undo".into()))
    }));
    assert!(failed.is_err());
    assert_eq!(alarm(&storage), None);
    assert_eq!(told(&heard), [None], "no rolled-back alarm is told");

    // The alarm that was rolled back, set again: it must be written (an unchanged alarm
    // writes nothing, so a remembered rolled-back value would lose it) and told.
    now(storage.set_alarm(A)).unwrap();
    sync(&storage);
    assert_eq!(told(&heard), [None, Some(A)]);

    // An async transaction that keeps its alarm: told when it commits.
    block_on(storage.transaction(|txn: Transaction| async move { txn.set_alarm(B).await }))
        .unwrap();
    assert_eq!(told(&heard), [None, Some(A), Some(B)]);

    // Abort (an object reset): the uncommitted alarm is discarded and not told; the next
    // instance's listener is told the committed one.
    now(storage.set_alarm(A)).unwrap();
    storage.abort();
    drop(storage);
    assert_eq!(told(&heard), [None, Some(A), Some(B)]);
    let storage = dir.open();
    let heard = listen(&storage);
    assert_eq!(told(&heard), [Some(B)]);
    assert_eq!(alarm(&storage), Some(B));
}

#[test]
fn a_failed_commit_discards_its_alarm_and_tells_nothing() {
    let dir = Dir::new();
    let storage = dir.open();
    let sql = storage.sql().unwrap();
    sql.exec("CREATE TABLE p (id INTEGER PRIMARY KEY)", &[]).unwrap();
    sql.exec("CREATE TABLE c (p REFERENCES p (id) DEFERRABLE INITIALLY DEFERRED)", &[]).unwrap();
    sync(&storage);
    let heard = listen(&storage);

    now(storage.set_alarm(A)).unwrap();
    sql.exec("INSERT INTO c VALUES (99)", &[]).unwrap();
    assert_eq!(alarm(&storage), Some(A), "the transaction sees its own alarm");
    let error = now(storage.sync()).expect_err("the deferred foreign key fails the commit");
    assert!(error.to_string().contains("FOREIGN KEY"), "{error}");
    assert_eq!(alarm(&storage), None, "the commit rolled the alarm back");
    assert_eq!(told(&heard), [None]);

    now(storage.set_alarm(A)).unwrap();
    sync(&storage);
    assert_eq!(told(&heard), [None, Some(A)]);
}

#[test]
fn delete_all_tells_a_deleted_alarm_at_once_and_a_kept_one_not_at_all() {
    let dir = Dir::new();
    let storage = dir.open();
    let heard = listen(&storage);
    now(storage.set_alarm(A)).unwrap();
    sync(&storage);
    // Deleting everything is durable when it returns: so is the alarm's deletion.
    now(storage.delete_all()).unwrap();
    assert_eq!(told(&heard), [None, Some(A), None]);
    assert_eq!(alarm(&storage), None);

    // Before compatibility date 2026-02-24 the alarm survives: nothing changed.
    storage.set_compatibility(Compatibility::for_date(2026, 1, 1));
    now(storage.set_alarm(B)).unwrap();
    sync(&storage);
    now(storage.delete_all()).unwrap();
    sync(&storage);
    assert_eq!(alarm(&storage), Some(B));
    assert_eq!(told(&heard), [None, Some(A), None, Some(B)]);

    // An uncommitted alarm survives too, and is told when it commits.
    now(storage.set_alarm(A)).unwrap();
    now(storage.delete_all()).unwrap();
    assert_eq!(told(&heard), [None, Some(A), None, Some(B)]);
    sync(&storage);
    assert_eq!(told(&heard), [None, Some(A), None, Some(B), Some(A)]);
    drop(storage);
    assert_eq!(alarm(&dir.open()), Some(A));
}

#[test]
fn a_reset_behind_the_storage_is_not_missed() {
    // The sync KV API's `delete_all` resets the database without `Storage` seeing it: the
    // remembered alarm must not outlive the reset.
    let dir = Dir::new();
    let storage = dir.open();
    let heard = listen(&storage);
    now(storage.set_alarm(A)).unwrap();
    sync(&storage);
    storage.kv().unwrap().delete_all().unwrap();
    assert_eq!(alarm(&storage), None);
    storage.put("k", &1i64);
    sync(&storage);
    assert_eq!(told(&heard), [None, Some(A), None]);
    // And setting the same alarm again writes it.
    now(storage.set_alarm(A)).unwrap();
    sync(&storage);
    assert_eq!(told(&heard), [None, Some(A), None, Some(A)]);
}
