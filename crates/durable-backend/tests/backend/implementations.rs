//! The contract suite on every implementation, and what is particular to each.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use durable_backend::{
    FaultyBackend, KvBackend, MemoryBackend, SqliteBackend, WriteBatch, testing,
};
use durable_kv::Kv;
use durable_sql::{Database, Options};

use crate::support::{keys, v};

#[tokio::test]
async fn the_memory_backend_keeps_the_contract() {
    testing::run_suite(|| Arc::new(MemoryBackend::new()) as Arc<dyn KvBackend>).await;
}

#[tokio::test]
async fn the_sqlite_backend_keeps_the_contract_in_files() {
    let dir = tempfile::tempdir().unwrap();
    let n = AtomicUsize::new(0);
    testing::run_suite(|| {
        let path = dir.path().join(format!("object-{}.sqlite", n.fetch_add(1, Ordering::Relaxed)));
        Arc::new(SqliteBackend::open(path).unwrap()) as Arc<dyn KvBackend>
    })
    .await;
}

#[tokio::test]
async fn the_sqlite_backend_keeps_the_contract_in_memory() {
    testing::run_suite(|| Arc::new(SqliteBackend::in_memory().unwrap()) as Arc<dyn KvBackend>)
        .await;
}

#[tokio::test]
async fn a_backend_with_a_per_call_key_limit_keeps_the_contract() {
    // Gets, puts and deletes over 128 keys are refused; the suite splits them, and `write`
    // batches of any size pass whole.
    testing::run_suite(|| {
        Arc::new(FaultyBackend::new(MemoryBackend::new()).with_max_keys_per_call(128))
            as Arc<dyn KvBackend>
    })
    .await;
}

#[tokio::test]
async fn sqlite_batches_are_durable_when_the_call_returns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o.sqlite");
    {
        let b = SqliteBackend::open(&path).unwrap();
        b.put(vec![("a".into(), v("1")), ("b".into(), v("2"))]).await.unwrap();
        b.write(WriteBatch { deletes: keys(&["a"]), ..WriteBatch::default() }).await.unwrap();
        assert!(!b.database().in_transaction(), "every call commits before it returns");
    }
    let b = SqliteBackend::open(&path).unwrap();
    assert_eq!(b.get(&keys(&["a", "b"])).await.unwrap(), vec![None, Some(v("2"))]);
}

#[tokio::test]
async fn a_failed_sqlite_batch_rolls_back_and_the_backend_goes_on() {
    let b = SqliteBackend::in_memory().unwrap();
    b.put(vec![("keep".into(), v("old"))]).await.unwrap();
    let batch = WriteBatch {
        delete_all: true,
        deletes: Vec::new(),
        puts: vec![("small".into(), v("s")), ("huge".into(), vec![0; 3_000_000])],
    };
    let err = b.write(batch).await.unwrap_err();
    assert!(err.to_string().contains("SQLITE_TOOBIG"), "{err}");
    assert!(!b.database().in_transaction());
    assert_eq!(b.get(&keys(&["keep", "small"])).await.unwrap(), vec![Some(v("old")), None]);
    b.put(vec![("next".into(), v("n"))]).await.unwrap();
    assert_eq!(b.get(&keys(&["next"])).await.unwrap(), vec![Some(v("n"))]);
}

#[tokio::test]
async fn the_sqlite_backend_shares_the_kv_table_layout() {
    let db = Database::open_in_memory(Options::default()).unwrap();
    let b = SqliteBackend::new(db.clone()).unwrap();
    let encoded = durable_kv::codec::encode(&"hello").unwrap();
    b.put(vec![("greeting".into(), encoded)]).await.unwrap();
    let kv = Kv::new(db);
    assert_eq!(kv.get::<String>("greeting").unwrap().as_deref(), Some("hello"));
}

#[test]
fn write_batches_split_in_application_order() {
    let batch = WriteBatch {
        delete_all: true,
        deletes: keys(&["a", "b", "c"]),
        puts: vec![("x".into(), v("1")), ("y".into(), v("2"))],
    };
    let pieces = batch.split(2);
    assert_eq!(pieces.len(), 3);
    assert!(pieces[0].delete_all && pieces[0].deletes == keys(&["a", "b"]));
    assert!(!pieces[1].delete_all && pieces[1].deletes == keys(&["c"]));
    assert_eq!(pieces[2].puts, batch.puts);
    assert!(pieces.iter().all(|p| p.key_count() <= 2));
    let only_delete_all = WriteBatch { delete_all: true, ..WriteBatch::default() };
    assert_eq!(only_delete_all.split(128), vec![only_delete_all.clone()]);
    assert!(WriteBatch::default().split(0).is_empty());
}
