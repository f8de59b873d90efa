//! `FaultyBackend`: injected errors, per-call key limits, crashes, latency and the call log.

use std::time::{Duration, Instant};

use durable_backend::{Call, Delay, Error, KvBackend, Op, WriteBatch};

use crate::support::{faulty, keys, v};

#[tokio::test]
async fn the_next_calls_fail_and_a_failed_write_applies_nothing() {
    let b = faulty();
    b.fail_next(2);
    let err = b.put(vec![("a".into(), v("1"))]).await.unwrap_err();
    assert!(matches!(err, Error::Injected { .. }), "{err:?}");
    assert!(b.get(&keys(&["a"])).await.is_err());
    assert_eq!(b.get(&keys(&["a"])).await.unwrap(), vec![None], "the failed put applied nothing");
    b.put(vec![("a".into(), v("1"))]).await.unwrap();
    assert_eq!(b.inner().entries(), vec![("a".to_owned(), v("1"))]);
}

#[tokio::test]
async fn calls_fail_on_a_predicate_until_healed() {
    let b = faulty();
    b.fail_when(|call: &Call| call.op.is_write() && call.keys.iter().any(|k| k == "bad"));
    b.put(vec![("good".into(), v("1"))]).await.unwrap();
    let batch = WriteBatch {
        puts: vec![("x".into(), v("1")), ("bad".into(), v("2"))],
        ..Default::default()
    };
    assert!(b.write(batch.clone()).await.is_err());
    assert_eq!(b.get(&keys(&["x", "bad"])).await.unwrap(), vec![None, None]);
    b.heal();
    b.write(batch).await.unwrap();
    assert_eq!(b.inner().len(), 3);
}

#[tokio::test]
async fn a_crash_after_n_batches_stops_everything_that_follows() {
    let b = faulty();
    b.crash_after_batches(2);
    b.put(vec![("a".into(), v("1"))]).await.unwrap();
    assert_eq!(b.get(&keys(&["a"])).await.unwrap(), vec![Some(v("1"))], "reads do not count");
    b.delete(keys(&["zzz"])).await.unwrap();
    assert!(!b.is_crashed());
    let err = b.put(vec![("b".into(), v("2"))]).await.unwrap_err();
    assert_eq!(err, Error::Crashed { batches: 2 });
    assert!(b.is_crashed());
    assert!(matches!(b.get(&keys(&["a"])).await, Err(Error::Crashed { .. })), "reads fail too");
    assert!(b.delete_all().await.is_err());
    assert_eq!(b.inner().entries(), vec![("a".to_owned(), v("1"))], "nothing reached the store");
    assert_eq!(b.write_batches(), 2);
    b.heal();
    b.put(vec![("b".into(), v("2"))]).await.unwrap();
    assert_eq!(b.inner().len(), 2, "after a restart the store keeps what it had");
}

#[tokio::test]
async fn a_failed_inner_write_does_not_count_as_a_batch() {
    let b =
        durable_backend::FaultyBackend::new(durable_backend::SqliteBackend::in_memory().unwrap());
    b.crash_after_batches(1);
    let huge = WriteBatch { puts: vec![("h".into(), vec![0; 3_000_000])], ..Default::default() };
    assert!(matches!(b.write(huge).await, Err(Error::Kv(_))));
    b.put(vec![("a".into(), v("1"))]).await.unwrap();
    assert!(b.put(vec![("b".into(), v("2"))]).await.is_err());
}

#[tokio::test]
async fn the_per_call_key_limit_binds_gets_puts_and_deletes_but_not_write_batches() {
    let b = std::sync::Arc::new(
        durable_backend::FaultyBackend::new(durable_backend::MemoryBackend::new())
            .with_max_keys_per_call(128),
    );
    assert_eq!(b.max_keys_per_call(), Some(128));
    let many: Vec<String> = (0..129).map(|i| format!("k{i}")).collect();
    let err = b.get(&many).await.unwrap_err();
    assert_eq!(err, Error::CallTooLarge { count: 129, limit: 128 });
    assert!(b.delete(many.clone()).await.is_err());
    assert!(b.get(&many[..128]).await.is_ok());
    let puts = many.iter().map(|k| (k.clone(), v("x"))).collect();
    b.write(WriteBatch { puts, ..Default::default() }).await.unwrap();
    assert_eq!(b.inner().len(), 129);
}

#[tokio::test]
async fn latency_delays_each_call_and_the_log_records_it() {
    let b = faulty();
    b.set_delay(|call: &Call| -> Delay {
        let ms = if call.op == Op::Get { 300 } else { 0 };
        Box::pin(tokio::time::sleep(Duration::from_millis(ms)))
    });
    // The get's delay is far above what an undelayed call takes on a loaded machine (~1 ms).
    let start = Instant::now();
    b.put(vec![("a".into(), v("1"))]).await.unwrap();
    assert!(start.elapsed() < Duration::from_millis(300), "the put was not delayed");
    let start = Instant::now();
    b.get(&keys(&["a", "b"])).await.unwrap();
    assert!(start.elapsed() >= Duration::from_millis(300), "the get waited for its delay");
    b.clear_delay();
    b.delete_all().await.unwrap();
    let calls = b.take_calls();
    assert_eq!(calls.iter().map(|c| c.op).collect::<Vec<_>>(), [Op::Put, Op::Get, Op::DeleteAll]);
    assert_eq!(calls[1].keys, keys(&["a", "b"]));
    assert!(calls[2].delete_all);
    assert!(b.calls().is_empty());
}
