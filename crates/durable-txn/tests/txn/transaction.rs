//! The async `transaction` (spec section 6.2).

use std::sync::atomic::Ordering;

use durable_txn::{Error, Storage, Transaction, block_on};

use crate::support::{Dir, count_commits, read_i64};

#[test]
fn earlier_writes_commit_first_and_the_closure_commits_on_ok() {
    let dir = Dir::new();
    let storage = dir.open();
    let commits = count_commits(&storage);
    storage.put("before", &1i64);
    let value = block_on(storage.transaction(|txn: Transaction| async move {
        txn.put("inside", &2i64).await?;
        let v: Option<i64> = txn.get("before").await?;
        Ok::<_, Error>(v)
    }))
    .unwrap();
    assert_eq!(value, Some(1));
    assert_eq!(commits.load(Ordering::SeqCst), 2, "the turn's writes, then the transaction");
    assert!(!storage.sql().unwrap().in_transaction());
    assert_eq!(read_i64(&storage, "inside"), Some(2));
}

#[test]
fn an_error_rolls_back_and_is_returned_unchanged() {
    let storage = Storage::open_in_memory().unwrap();
    storage.put("k", &1i64);
    #[derive(Debug, PartialEq)]
    enum Mine {
        Boom,
        Storage(Error),
    }
    impl From<Error> for Mine {
        fn from(e: Error) -> Self {
            Mine::Storage(e)
        }
    }
    let r = block_on(storage.transaction(|txn: Transaction| async move {
        txn.put("k", &2i64).await?;
        storage_sql_write(&txn);
        Err::<(), _>(Mine::Boom)
    }));
    assert_eq!(r.unwrap_err(), Mine::Boom);
    assert_eq!(read_i64(&storage, "k"), Some(1));
    assert_eq!(read_i64(&storage, "sql"), None);
}

fn storage_sql_write(txn: &Transaction) {
    txn.put("sql", &9i64);
}

#[test]
fn rollback_discards_without_error_and_later_use_gives_the_runtime_errors() {
    let storage = Storage::open_in_memory().unwrap();
    let s2 = storage.clone();
    let (value, kept) = block_on(storage.transaction(|txn: Transaction| async move {
        txn.put("k", &2i64).await?;
        s2.sql().unwrap().exec("CREATE TABLE t (x)", &[])?;
        txn.rollback()?;
        txn.rollback()?; // idempotent
        let errors = [
            txn.get::<i64>("k").await.unwrap_err().to_string(),
            txn.put("k", &3i64).await.unwrap_err().to_string(),
            txn.delete("k").await.unwrap_err().to_string(),
            txn.list::<i64>(&Default::default()).await.unwrap_err().to_string(),
            txn.get_alarm().await.unwrap_err().to_string(),
            txn.set_alarm(5).await.unwrap_err().to_string(),
            txn.delete_alarm().await.unwrap_err().to_string(),
        ];
        Ok::<_, Error>((errors, txn))
    }))
    .unwrap();
    assert_eq!(
        value,
        [
            "Cannot get() on rolled back transaction",
            "Cannot put() on rolled back transaction",
            "Cannot delete() on rolled back transaction",
            "Cannot list() on rolled back transaction",
            "Cannot getAlarm() on rolled back transaction",
            "Cannot setAlarm() on rolled back transaction",
            "Cannot deleteAlarm() on rolled back transaction",
        ]
    );
    assert_eq!(read_i64(&storage, "k"), None);
    assert!(
        storage.sql().unwrap().exec("SELECT * FROM t", &[]).is_err(),
        "the table rolled back too"
    );
    drop(kept);

    let leaked =
        block_on(storage.transaction(|txn: Transaction| async move { Ok::<_, Error>(txn) }))
            .unwrap();
    let err = block_on(leaked.put("k", &1i64)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Cannot call put() on transaction that has already committed: did you move `txn` \
         outside of the closure?"
    );
}

#[test]
fn delete_all_is_refused_inside_a_transaction() {
    let storage = Storage::open_in_memory().unwrap();
    let s2 = storage.clone();
    let r = block_on(storage.transaction(|txn: Transaction| async move {
        let a = txn.delete_all().await.unwrap_err();
        let b = s2.delete_all().await.unwrap_err();
        Ok::<_, Error>((a, b))
    }))
    .unwrap();
    assert_eq!(r.0.to_string(), "Cannot call deleteAll() within a transaction");
    assert_eq!(r.1, Error::DeleteAllInTransaction);
}

#[test]
fn nested_transactions_roll_back_alone_and_an_outer_rollback_undoes_them() {
    let storage = Storage::open_in_memory().unwrap();
    block_on(storage.transaction(|outer: Transaction| async move {
        outer.put("outer", &1i64).await?;
        let inner = outer.clone();
        let r = outer
            .transaction(|txn: Transaction| async move {
                txn.put("inner", &2i64).await?;
                // Rolling back the outer one while the inner runs is refused.
                let refused = inner.rollback().unwrap_err();
                assert_eq!(
                    refused.to_string(),
                    "Cannot roll back an outer transaction while a nested transaction is still \
                     running."
                );
                Err::<(), _>(Error::Aborted("inner fails".into()))
            })
            .await;
        assert!(r.is_err());
        outer
            .transaction(|txn: Transaction| async move {
                txn.put("inner2", &3i64).await?;
                Ok::<_, Error>(())
            })
            .await?;
        Ok::<_, Error>(())
    }))
    .unwrap();
    assert_eq!(read_i64(&storage, "outer"), Some(1));
    assert_eq!(read_i64(&storage, "inner"), None);
    assert_eq!(read_i64(&storage, "inner2"), Some(3));

    block_on(storage.transaction(|outer: Transaction| async move {
        outer
            .transaction(|txn: Transaction| async move {
                txn.put("nested-then-outer-rollback", &1i64).await?;
                Ok::<_, Error>(())
            })
            .await?;
        outer.rollback()?;
        Ok::<_, Error>(())
    }))
    .unwrap();
    assert_eq!(read_i64(&storage, "nested-then-outer-rollback"), None);
}

#[test]
fn a_dropped_transaction_future_rolls_back() {
    let storage = Storage::open_in_memory().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let fut = storage.transaction(|txn: Transaction| async move {
            txn.put("k", &1i64).await?;
            std::future::pending::<()>().await;
            Ok::<_, Error>(())
        });
        let timed = tokio::time::timeout(std::time::Duration::from_millis(10), fut).await;
        assert!(timed.is_err());
    });
    assert_eq!(read_i64(&storage, "k"), None);
    assert!(!storage.sql().unwrap().in_transaction());
    storage.put("after", &1i64);
    storage.sync().now().ok().unwrap().unwrap();
    assert_eq!(read_i64(&storage, "after"), Some(1));
}
