//! KV-backed storage: the write-behind cache under the turn model, with the gates timed
//! against a slow backend (legacy-kv-and-gates sections 2.4 to 2.14).

use std::sync::Arc;
use std::time::Duration;

use durable_backend::cache::CacheOptions;
use durable_backend::{FaultyBackend, KvBackend, MemoryBackend, Op as Call};
use durable_kv::ListOptions;
use durable_txn::{Compatibility, Error, Object, PutOptions, Storage, Transaction};
use tokio::sync::Semaphore;

use crate::support::Plain;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

type Faulty = Arc<FaultyBackend<MemoryBackend>>;

fn faulty() -> Faulty {
    Arc::new(FaultyBackend::new(MemoryBackend::new()))
}

fn storage(backend: &Faulty) -> Storage {
    Storage::kv_backed(backend.clone(), CacheOptions::default())
}

fn object(backend: &Faulty) -> Object<Plain> {
    let backend = backend.clone();
    Object::spawn(move || Ok(storage(&backend)), |_| Plain)
}

async fn stored(backend: &Faulty, key: &str) -> Option<i64> {
    let got = backend.get(&[key.to_string()]).await.unwrap();
    got[0].as_ref().map(|b| durable_kv::codec::decode(b).unwrap())
}

#[test]
fn writes_reach_the_backend_as_one_batch_at_sync_and_reads_need_no_io() {
    rt().block_on(async {
        let backend = faulty();
        let s = storage(&backend);
        s.put("a", &1i64);
        s.put_multiple(&[("b", 2i64), ("c", 3)]);
        assert!(s.delete("c").await.unwrap());
        assert_eq!(s.get::<i64>("a").await.unwrap(), Some(1), "served from the cache");
        assert!(backend.calls().is_empty(), "nothing reached the backend yet");
        s.sync().await.unwrap();
        let writes: Vec<_> = backend.calls().into_iter().filter(|c| c.op == Call::Write).collect();
        assert_eq!(writes.len(), 1, "one atomic batch");
        assert_eq!(stored(&backend, "b").await, Some(2));
        assert_eq!(stored(&backend, "c").await, None);
        let listed: Vec<(String, i64)> = s.list(&ListOptions::default()).await.unwrap();
        assert_eq!(listed, vec![("a".into(), 1), ("b".into(), 2)]);
    });
}

#[test]
fn sql_sync_kv_and_transaction_sync_answer_with_the_runtime_errors() {
    let s = Storage::kv_backed(Arc::new(MemoryBackend::new()), CacheOptions::default());
    assert_eq!(s.sql().unwrap_err(), Error::SqlNotAvailable);
    assert!(s.kv().unwrap_err().to_string().starts_with(
        "The storage.kv (synchronous KV) API is only available for SQLite-backed Durable Objects"
    ));
    let r: Result<(), Error> = s.transaction_sync(|| Ok(()));
    assert_eq!(r.unwrap_err().to_string(), "Durable Object is not backed by SQL.");
    assert!(s.database_size().is_err());
    let long = "k".repeat(2049);
    let err = s.put(&long, &1i64).now().ok().unwrap().unwrap_err();
    assert_eq!(
        err.to_string(),
        "Keys cannot be larger than 2048 bytes. A key of size 2049 was provided."
    );
    assert_eq!(err.js_name(), "RangeError");
}

#[test]
fn the_output_gate_holds_a_result_until_its_flush_is_durable() {
    rt().block_on(async {
        let backend = faulty();
        let release = Arc::new(Semaphore::new(0));
        let r2 = release.clone();
        backend.set_delay(move |call| {
            let r2 = r2.clone();
            let is_write = call.op == Call::Write;
            Box::pin(async move {
                if is_write {
                    r2.acquire().await.unwrap().forget();
                }
            })
        });
        let object = object(&backend);
        let confirmed = tokio::spawn({
            let object = object.clone();
            async move {
                object
                    .call(|ctx| async move {
                        ctx.storage().put("k", &1i64);
                        7
                    })
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!confirmed.is_finished(), "held while the flush waits");
        release.add_permits(1);
        assert_eq!(confirmed.await.unwrap().unwrap(), 7);
        assert_eq!(stored(&backend, "k").await, Some(1), "durable before it was released");

        // Every write unconfirmed: the result goes out before the flush completes.
        let unconfirmed = object
            .call(|ctx| async move {
                let o = PutOptions::new().allow_unconfirmed(true);
                ctx.storage().put_with("u", &2i64, o);
                8
            })
            .await
            .unwrap();
        assert_eq!(unconfirmed, 8);
        assert_eq!(stored(&backend, "u").await, None, "not yet flushed");
        release.add_permits(1);
        // The flush runs on its own task: wait for it, up to a bound a loaded box never nears.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while stored(&backend, "u").await != Some(2) {
            assert!(std::time::Instant::now() < deadline, "the released flush wrote u");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
}

#[test]
fn the_input_gate_makes_read_then_write_atomic_across_a_slow_read() {
    rt().block_on(async {
        let backend = faulty();
        backend.set_delay(|call| {
            let slow = call.op == Call::Get;
            Box::pin(async move {
                if slow {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        });
        let object = object(&backend);
        let calls: Vec<_> = (0..3)
            .map(|_| {
                let object = object.clone();
                tokio::spawn(async move {
                    object
                        .call(|ctx| async move {
                            let n = ctx.storage().get::<i64>("n").await.unwrap().unwrap_or(0);
                            ctx.storage().put("n", &(n + 1));
                            n
                        })
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut seen = Vec::new();
        for c in calls {
            seen.push(c.await.unwrap());
        }
        seen.sort_unstable();
        assert_eq!(seen, [0, 1, 2], "never 0, 0, 0");
        assert_eq!(stored(&backend, "n").await, Some(3));
    });
}

#[test]
fn a_failed_flush_turns_held_results_into_errors_and_resets_the_object() {
    rt().block_on(async {
        let backend = faulty();
        let object = object(&backend);
        object
            .call(|ctx| async move { ctx.storage().put("good", &1i64).await })
            .await
            .unwrap()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        backend.fail_when(|call| call.op == Call::Write);
        let err = object
            .call(|ctx| async move {
                ctx.storage().put("bad", &2i64);
            })
            .await
            .unwrap_err();
        assert!(
            err.to_string().starts_with(
                "Internal error in Durable Object storage write caused object to be reset"
            ),
            "{err}"
        );
        backend.heal();
        // No pause: the reset is queued before the failed result is released, so this call
        // runs on the reset object.
        let (good, bad) = object
            .call(|ctx| async move {
                (
                    ctx.storage().get::<i64>("good").await.unwrap(),
                    ctx.storage().get::<i64>("bad").await.unwrap(),
                )
            })
            .await
            .unwrap();
        assert_eq!((good, bad), (Some(1), None), "the reset object lost the failed write");
    });
}

#[test]
fn transactions_keep_private_writes_until_they_commit() {
    rt().block_on(async {
        let backend = faulty();
        let s = storage(&backend);
        s.put("a", &1i64);
        let seen = s
            .transaction(|txn: Transaction| async move {
                txn.put("b", &2i64).await?;
                assert!(txn.delete("a").await?);
                let listed: Vec<(String, i64)> = txn.list(&ListOptions::default()).await?;
                let inner = txn
                    .transaction(|t: Transaction| async move {
                        t.put("c", &3i64).await?;
                        t.rollback()?;
                        Ok::<_, Error>(())
                    })
                    .await;
                inner?;
                Ok::<_, Error>(listed)
            })
            .await
            .unwrap();
        assert_eq!(seen, vec![("b".to_string(), 2)]);
        assert_eq!(s.get::<i64>("a").await.unwrap(), None);
        assert_eq!(s.get::<i64>("b").await.unwrap(), Some(2));
        assert_eq!(s.get::<i64>("c").await.unwrap(), None);
        let r = s
            .transaction(|txn: Transaction| async move {
                txn.put("d", &4i64).await?;
                txn.set_alarm(4_000_000_000_000).await?;
                Err::<(), _>(Error::Aborted("no".into()))
            })
            .await;
        assert!(r.is_err());
        assert_eq!(s.get::<i64>("d").await.unwrap(), None);
        assert_eq!(s.get_alarm().await.unwrap(), None);
        s.sync().await.unwrap();
        assert_eq!(stored(&backend, "b").await, Some(2));
    });
}

#[test]
fn the_alarm_lives_beside_the_data_and_delete_all_follows_the_compatibility_flag() {
    rt().block_on(async {
        let backend = faulty();
        {
            let s = storage(&backend);
            s.set_alarm(4_000_000_000_000).await.unwrap();
            s.put("x", &1i64);
            s.delete_all().await.unwrap();
            s.sync().await.unwrap();
            assert_eq!(s.get_alarm().await.unwrap(), None, "delete_all_deletes_alarm is on");
        }
        {
            let s = storage(&backend);
            assert_eq!(s.get_alarm().await.unwrap(), None);
            s.put("x", &1i64);
            s.set_alarm(4_000_000_000_000).await.unwrap();
            s.sync().await.unwrap();
        }
        let s = storage(&backend);
        assert_eq!(s.get_alarm().await.unwrap(), Some(4_000_000_000_000));
        let listed: Vec<(String, i64)> = s.list(&ListOptions::new().limit(1)).await.unwrap();
        assert_eq!(listed, vec![("x".to_string(), 1)], "the alarm never shows in a list");
        s.set_compatibility(Compatibility::for_date(2026, 1, 1));
        s.delete_all().await.unwrap();
        s.sync().await.unwrap();
        let s = storage(&backend);
        assert_eq!(s.get::<i64>("x").await.unwrap(), None);
        assert_eq!(s.get_alarm().await.unwrap(), Some(4_000_000_000_000), "flag off: kept");
    });
}

#[test]
fn a_dropped_kv_storage_flushes_what_is_pending() {
    let backend = faulty();
    {
        let s = storage(&backend);
        s.put("late", &5i64);
    }
    let got = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(stored(&backend, "late"));
    assert_eq!(got, Some(5));
}
