//! `Storage` without the object runtime: explicit commit points, coalescing, alarms kept
//! transactional, delete_all, abort (spec sections 5.1, 5.2, 7).

use std::sync::atomic::Ordering;

use durable_kv::ListOptions;
use durable_txn::{Compatibility, Error, GetOptions, PutOptions, Storage};

use crate::support::{Dir, count_commits, read_i64};

#[test]
fn writes_between_commit_points_commit_once_and_together() {
    let dir = Dir::new();
    let storage = dir.open();
    let commits = count_commits(&storage);
    storage.put("a", &1i64);
    storage.sql().unwrap().exec("CREATE TABLE t (x)", &[]).unwrap();
    storage.sql().unwrap().exec("INSERT INTO t VALUES (1)", &[]).unwrap();
    storage.kv().unwrap().put("b", &2i64).unwrap();
    storage.put_with("c", &3i64, PutOptions::new().allow_unconfirmed(true));
    assert_eq!(commits.load(Ordering::SeqCst), 0, "nothing commits before the commit point");
    storage.sync().now().ok().unwrap().unwrap();
    assert_eq!(commits.load(Ordering::SeqCst), 1, "one commit for SQL, sync KV and async KV");
    // A sync with nothing pending commits nothing.
    storage.sync().now().ok().unwrap().unwrap();
    assert_eq!(commits.load(Ordering::SeqCst), 1);
}

#[test]
fn a_write_whose_op_is_dropped_is_not_lost() {
    let dir = Dir::new();
    {
        let storage = dir.open();
        storage.put("dropped", &7i64);
        // No commit point: dropping the storage commits.
    }
    let storage = dir.open();
    assert_eq!(read_i64(&storage, "dropped"), Some(7));
}

#[test]
fn abort_discards_uncommitted_writes_and_closes_the_handle() {
    let dir = Dir::new();
    let storage = dir.open();
    storage.put("kept", &1i64);
    storage.sync().now().ok().unwrap().unwrap();
    storage.put("lost", &2i64);
    storage.abort();
    let err = storage.get::<i64>("kept").now().ok().unwrap().unwrap_err();
    assert_eq!(err.to_string(), "Durable Object storage is no longer accessible.");
    assert!(storage.is_aborted());
    drop(storage);
    let storage = dir.open();
    assert_eq!(read_i64(&storage, "kept"), Some(1));
    assert_eq!(read_i64(&storage, "lost"), None);
}

#[test]
fn transaction_sync_spans_sql_and_kv_and_rolls_back_both() {
    let dir = Dir::new();
    let storage = dir.open();
    storage.sql().unwrap().exec("CREATE TABLE t (x)", &[]).unwrap();
    let result: Result<(), Error> = storage.transaction_sync(|| {
        storage.sql().unwrap().exec("INSERT INTO t VALUES (1)", &[])?;
        storage.kv().unwrap().put("k", &1i64)?;
        storage.put("async", &2i64);
        Err(Error::Aborted("no".into()))
    });
    assert_eq!(result.unwrap_err(), Error::Aborted("no".into()));
    let rows = storage
        .sql()
        .unwrap()
        .exec("SELECT count(*) AS n FROM t", &[])
        .unwrap()
        .one::<durable_sql::Row>()
        .unwrap();
    assert_eq!(rows.get::<i64>("n").unwrap(), 0);
    assert_eq!(read_i64(&storage, "k"), None);
    assert_eq!(read_i64(&storage, "async"), None);
    let kept: Result<i64, Error> = storage.transaction_sync(|| {
        storage.kv().unwrap().put("k", &5i64)?;
        Ok(5)
    });
    assert_eq!(kept.unwrap(), 5);
    assert_eq!(read_i64(&storage, "k"), Some(5));
}

#[test]
fn delete_all_discards_uncommitted_writes_and_sql_tables_and_the_alarm_per_the_flag() {
    let dir = Dir::new();
    let storage = dir.open();
    storage.set_alarm(4_000_000_000_000).now().ok().unwrap().unwrap();
    storage.delete_all().now().ok().unwrap().unwrap();
    assert_eq!(storage.get_alarm().now().ok().unwrap().unwrap(), None, "flag on by default");
    // Before compatibility date 2026-02-24 the alarm survives delete_all().
    storage.set_compatibility(Compatibility::for_date(2026, 1, 1));
    storage.sql().unwrap().exec("CREATE TABLE t (x)", &[]).unwrap();
    storage.put("a", &1i64);
    storage.set_alarm(4_000_000_000_000).now().ok().unwrap().unwrap();
    storage.sync().now().ok().unwrap().unwrap();
    storage.put("counter", &888i64);
    storage.delete_all().now().ok().unwrap().unwrap();
    assert_eq!(read_i64(&storage, "counter"), None);
    assert_eq!(read_i64(&storage, "a"), None);
    assert!(storage.sql().unwrap().exec("SELECT * FROM t", &[]).is_err());
    assert_eq!(storage.get_alarm().now().ok().unwrap().unwrap(), Some(4_000_000_000_000));
    storage.sync().now().ok().unwrap().unwrap();
    drop(storage);
    let storage = dir.open();
    assert_eq!(storage.get_alarm().now().ok().unwrap().unwrap(), Some(4_000_000_000_000));
    assert_eq!(storage.database_size().unwrap(), 8192, "size with an alarm set (oracle case 48)");
    // Without an alarm the fresh database is empty again.
    storage.delete_alarm().now().ok().unwrap().unwrap();
    storage.sync().now().ok().unwrap().unwrap();
    storage.delete_all().now().ok().unwrap().unwrap();
    assert_eq!(storage.database_size().unwrap(), 4096);
}

#[test]
fn alarms_are_transactional_and_validated() {
    let storage = Storage::open_in_memory().unwrap();
    assert_eq!(storage.get_alarm().now().ok().unwrap().unwrap(), None);
    let err = storage.set_alarm(0).now().ok().unwrap().unwrap_err();
    assert_eq!(err.to_string(), "setAlarm() cannot be called with an alarm time <= 0");
    assert_eq!(err.js_name(), "TypeError");
    let r: Result<(), Error> = storage.transaction_sync(|| {
        storage.set_alarm(5_000_000_000_000).now().ok().unwrap()?;
        Err(Error::Aborted("undo".into()))
    });
    assert!(r.is_err());
    assert_eq!(storage.get_alarm().now().ok().unwrap().unwrap(), None);
    // A past time means now (the storage's clock).
    const NOW: i64 = 1_700_000_000_123;
    storage.set_clock(std::sync::Arc::new(durable_sql::testing::ManualClock::new(NOW)));
    storage.set_alarm(1).now().ok().unwrap().unwrap();
    let stored = storage.get_alarm().now().ok().unwrap().unwrap().unwrap();
    assert_eq!(stored, NOW, "clamped to now");
    storage.delete_alarm().now().ok().unwrap().unwrap();
    assert_eq!(storage.get_alarm().now().ok().unwrap().unwrap(), None);
}

/// Issue 19: `GetOptions` and `PutOptions` are built method by method; each method sets its
/// one field, and the built options work as the fields say.
#[test]
fn get_and_put_options_build_one_field_per_method() {
    assert_eq!(GetOptions::new(), GetOptions::default());
    let g = GetOptions::new().allow_concurrency(true).no_cache(true);
    assert!(g.allow_concurrency && g.no_cache);
    assert_eq!(PutOptions::new(), PutOptions::default());
    let p = PutOptions::new().allow_concurrency(true).allow_unconfirmed(true).no_cache(true);
    assert!(p.allow_concurrency && p.allow_unconfirmed && p.no_cache);
    assert!(!PutOptions::new().no_cache(true).allow_unconfirmed);

    let storage = Storage::open_in_memory().unwrap();
    storage
        .put_with("k", &1, PutOptions::new().allow_unconfirmed(true))
        .now()
        .ok()
        .unwrap()
        .unwrap();
    let got: Option<i64> = storage.get_with("k", g).now().ok().unwrap().unwrap();
    assert_eq!(got, Some(1));
}

/// Issue 19: `set_alarm` takes a `SystemTime` as well as milliseconds, on both backends and
/// in an async transaction; `i64` calls compile as before.
#[test]
fn set_alarm_takes_a_system_time_or_milliseconds() {
    use std::time::{Duration, UNIX_EPOCH};
    const AT: i64 = 4_000_000_000_000;
    // Cut to whole milliseconds, as a JavaScript `Date`.
    let at = UNIX_EPOCH + Duration::from_millis(AT as u64) + Duration::from_micros(999);
    let kv = durable_txn::Storage::kv_backed(
        std::sync::Arc::new(durable_backend::MemoryBackend::new()),
        Default::default(),
    );
    for storage in [Storage::open_in_memory().unwrap(), kv] {
        storage.set_alarm(at).now().ok().unwrap().unwrap();
        assert_eq!(durable_txn::block_on(storage.get_alarm()).unwrap(), Some(AT));
        storage.set_alarm(AT + 5).now().ok().unwrap().unwrap();
        assert_eq!(durable_txn::block_on(storage.get_alarm()).unwrap(), Some(AT + 5));
        storage.set_alarm(durable_txn::AlarmTime::from_millis(AT + 6)).now().ok().unwrap().unwrap();
        assert_eq!(durable_txn::block_on(storage.get_alarm()).unwrap(), Some(AT + 6));
        // The epoch itself and times before it are `<= 0`: the runtime's TypeError.
        for bad in [UNIX_EPOCH, UNIX_EPOCH - Duration::from_millis(1)] {
            let err = storage.set_alarm(bad).now().ok().unwrap().unwrap_err();
            assert!(matches!(err, Error::AlarmTimeNotPositive), "{err:?}");
        }
        // An async transaction's `set_alarm` takes the same.
        let later = at + Duration::from_secs(1);
        durable_txn::block_on(storage.transaction(|txn| async move {
            txn.set_alarm(later).await?;
            Ok::<_, Error>(())
        }))
        .unwrap();
        assert_eq!(durable_txn::block_on(storage.get_alarm()).unwrap(), Some(AT + 1_000));
    }
    // Before the epoch rounds down, as `Date` does: 1.5 ms before is -2.
    let before = UNIX_EPOCH - Duration::from_micros(1_500);
    assert_eq!(durable_txn::AlarmTime::from(before).as_millis(), -2);
}

#[test]
fn setting_the_same_alarm_again_writes_nothing() {
    let dir = Dir::new();
    let storage = dir.open();
    storage.set_alarm(4_000_000_000_000).now().ok().unwrap().unwrap();
    storage.sync().now().ok().unwrap().unwrap();
    let commits = count_commits(&storage);
    storage.set_alarm(4_000_000_000_000).now().ok().unwrap().unwrap();
    assert!(!storage.sql().unwrap().in_transaction(), "no write, no transaction");
    storage.sync().now().ok().unwrap().unwrap();
    assert_eq!(commits.load(Ordering::SeqCst), 0);
}

#[test]
fn async_kv_reads_see_uncommitted_writes_and_list_orders_by_bytes() {
    let storage = Storage::open_in_memory().unwrap();
    storage.put_multiple(&[("b", 2i64), ("a", 1), ("é", 3), ("Z", 0)]);
    let listed: Vec<(String, i64)> =
        storage.list(&ListOptions::default()).now().ok().unwrap().unwrap();
    let keys: Vec<&str> = listed.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["Z", "a", "b", "é"]);
    let got: Vec<(String, i64)> =
        storage.get_multiple(&["b", "missing", "a", "b"]).now().ok().unwrap().unwrap();
    assert_eq!(got, vec![("a".to_string(), 1), ("b".to_string(), 2)]);
    assert_eq!(storage.delete_multiple(&["a", "a", "nope"]).now().ok().unwrap().unwrap(), 1);
    assert!(storage.delete("b").now().ok().unwrap().unwrap());
    let err = storage.list::<i64>(&ListOptions::new().limit(0)).now().ok().unwrap().unwrap_err();
    assert_eq!(err.to_string(), "List limit must be positive.");
}
