//! The object runtime: turns, coalescing, the input gate, results after commits, resets
//! (spec sections 5 and 6; legacy-kv-and-gates section 2.4).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use durable_sql::{Database, Options};
use durable_txn::{Actor, Error, Object, Storage};
use tokio::sync::Barrier;

use crate::support::{Dir, count_commits, plain, read_i64};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn get(storage: &Storage, key: &str) -> i64 {
    storage.get::<i64>(key).now().ok().unwrap().unwrap().unwrap_or(0)
}

#[test]
fn read_then_write_without_real_io_is_atomic_between_events() {
    let dir = Dir::new();
    runtime().block_on(async {
        let object = plain(&dir);
        let calls = (0..3).map(|_| {
            let object = object.clone();
            async move {
                object
                    .call(|ctx| async move {
                        let n = get(ctx.storage(), "n");
                        ctx.storage().put("n", &(n + 1));
                        n
                    })
                    .await
            }
        });
        let mut seen: Vec<i64> =
            futures_join(calls.collect()).await.into_iter().map(Result::unwrap).collect();
        seen.sort_unstable();
        assert_eq!(seen, [0, 1, 2]);
    });
}

#[test]
fn a_real_await_between_read_and_write_races_but_block_concurrency_while_does_not() {
    let dir = Dir::new();
    runtime().block_on(async {
        let object = plain(&dir);
        // get → await real I/O → put: every event reads before any writes (0, 0, 0).
        let barrier = Arc::new(Barrier::new(3));
        let calls = (0..3).map(|_| {
            let barrier = barrier.clone();
            let object = object.clone();
            async move {
                object
                    .call(move |ctx| async move {
                        let n = get(ctx.storage(), "racy");
                        barrier.wait().await;
                        ctx.storage().put("racy", &(n + 1));
                        n
                    })
                    .await
            }
        });
        let seen: Vec<i64> =
            futures_join(calls.collect()).await.into_iter().map(Result::unwrap).collect();
        assert_eq!(seen, [0, 0, 0]);

        // The same inside block_concurrency_while: the input gate stays closed across the
        // await, so the increments serialize (0, 1, 2).
        let calls = (0..3).map(|_| {
            let object = object.clone();
            async move {
                object
                    .call(|ctx| async move {
                        let c = ctx.clone();
                        ctx.block_concurrency_while(async move {
                            let n = get(c.storage(), "safe");
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            c.storage().put("safe", &(n + 1));
                            Ok::<_, Error>(n)
                        })
                        .await
                    })
                    .await
            }
        });
        let mut seen: Vec<i64> =
            futures_join(calls.collect()).await.into_iter().map(|r| r.unwrap().unwrap()).collect();
        seen.sort_unstable();
        assert_eq!(seen, [0, 1, 2]);
    });
}

/// Runs every future as its own task, concurrently, and collects the outputs in order.
pub async fn futures_join<F>(futures: Vec<F>) -> Vec<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

#[test]
fn each_poll_is_a_turn_and_a_result_is_released_after_its_commit() {
    let dir = Dir::new();
    let path = dir.path();
    runtime().block_on(async {
        let counter = Arc::new(std::sync::Mutex::new(None));
        let c2 = counter.clone();
        let object: Object<crate::support::Plain> = Object::spawn(dir.opener(), move |s| {
            *c2.lock().unwrap() = Some(count_commits(s));
            crate::support::Plain
        });
        object
            .call(|ctx| async move {
                ctx.storage().put("a", &1i64);
                ctx.storage().sql().unwrap().exec("CREATE TABLE t (x)", &[]).unwrap();
                // Awaiting a storage call does not end the turn.
                ctx.storage().put("b", &2i64).await.unwrap();
                tokio::task::yield_now().await; // real yield: the turn ends here
                ctx.storage().put("c", &3i64);
            })
            .await
            .unwrap();
        // The result came back after the second turn's commit: another connection sees it.
        let other = Database::open(&path, Options::default()).unwrap();
        let n = other
            .internal(|i| {
                Ok(i.connection()
                    .query_row("SELECT count(*) FROM _cf_KV", [], |r| r.get::<_, i64>(0))?)
            })
            .unwrap();
        assert_eq!(n, 3);
        let commits = counter.lock().unwrap().clone().unwrap();
        assert_eq!(commits.load(Ordering::SeqCst), 2, "two turns, two commits");
    });
}

#[test]
fn a_failed_commit_turns_the_result_into_an_error_and_resets_the_object() {
    let dir = Dir::new();
    runtime().block_on(async {
        let made = Arc::new(AtomicUsize::new(0));
        let m2 = made.clone();
        let object = Object::spawn(dir.opener(), move |_| {
            m2.fetch_add(1, Ordering::SeqCst);
            crate::support::Plain
        });
        object
            .call(|ctx| async move {
                let db = ctx.storage().sql().unwrap();
                db.exec("CREATE TABLE p (id INTEGER PRIMARY KEY)", &[]).unwrap();
                db.exec(
                    "CREATE TABLE c (p INTEGER REFERENCES p(id) DEFERRABLE INITIALLY DEFERRED)",
                    &[],
                )
                .unwrap();
                ctx.storage().put("good", &1i64);
            })
            .await
            .unwrap();
        let err = object
            .call(|ctx| async move {
                ctx.storage().put("bad", &1i64);
                ctx.storage().sql().unwrap().exec("INSERT INTO c VALUES (42)", &[]).unwrap();
                "released?"
            })
            .await
            .unwrap_err();
        assert!(
            err.to_string().starts_with(
                "Durable Object was reset and rolled back to its last known good state because \
                 the application left the database in a state where constraints were violated: \
                 FOREIGN KEY constraint failed"
            ),
            "{err}"
        );
        let (good, bad) = object
            .call(|ctx| async move { (get(ctx.storage(), "good"), get(ctx.storage(), "bad")) })
            .await
            .unwrap();
        assert_eq!((good, bad), (1, 0));
        assert_eq!(made.load(Ordering::SeqCst), 2, "in-memory state was rebuilt");
    });
}

#[test]
fn abort_fails_events_in_flight_and_discards_uncommitted_writes() {
    let dir = Dir::new();
    runtime().block_on(async {
        let object = plain(&dir);
        object
            .call(|ctx| async move { ctx.storage().put("kept", &1i64).await })
            .await
            .unwrap()
            .unwrap();
        let barrier = Arc::new(Barrier::new(2));
        let b2 = barrier.clone();
        let waiting = object.call(move |ctx| async move {
            b2.wait().await;
            std::future::pending::<()>().await;
            let _ = ctx;
        });
        let aborting = object.call(move |ctx| async move {
            barrier.wait().await;
            ctx.storage().put("lost", &2i64);
            ctx.abort(Some("bye"));
        });
        let (w, a) = tokio::join!(waiting, aborting);
        assert_eq!(w.unwrap_err(), Error::Aborted("bye".into()));
        assert_eq!(a.unwrap_err(), Error::Aborted("bye".into()));
        let (kept, lost) = object
            .call(|ctx| async move { (get(ctx.storage(), "kept"), get(ctx.storage(), "lost")) })
            .await
            .unwrap();
        assert_eq!((kept, lost), (1, 0));
    });
}

#[test]
fn uncaught_errors_and_panics_do_not_roll_back_the_turn() {
    let dir = Dir::new();
    runtime().block_on(async {
        let object = plain(&dir);
        let r: Result<(), String> = object
            .call(|ctx| async move {
                ctx.storage().put("written", &1i64);
                Err("thrown".to_string())
            })
            .await
            .unwrap();
        assert_eq!(r.unwrap_err(), "thrown");
        let panicked = object
            .call(|ctx| async move {
                ctx.storage().put("before-panic", &1i64);
                if get(ctx.storage(), "written") == 1 {
                    panic!("object code panicked");
                }
            })
            .await
            .unwrap_err();
        assert!(panicked.to_string().contains("object code panicked"));
        let both = object
            .call(|ctx| async move {
                (get(ctx.storage(), "written"), get(ctx.storage(), "before-panic"))
            })
            .await
            .unwrap();
        assert_eq!(both, (1, 1));
    });
}

#[test]
fn async_transaction_holds_the_input_gate() {
    let dir = Dir::new();
    runtime().block_on(async {
        let object = plain(&dir);
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let o1 = order.clone();
        let o2 = order.clone();
        let started = Arc::new(tokio::sync::Notify::new());
        let s2 = started.clone();
        let txn = object.call(move |ctx| async move {
            ctx.storage()
                .transaction(|txn| async move {
                    o1.lock().unwrap().push("txn start");
                    s2.notify_one();
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    txn.put("k", &1i64).await?;
                    o1.lock().unwrap().push("txn end");
                    Ok::<_, Error>(())
                })
                .await
        });
        let other = async {
            started.notified().await;
            object
                .call(move |ctx| async move {
                    o2.lock().unwrap().push("other");
                    get(ctx.storage(), "k")
                })
                .await
        };
        let (t, seen) = tokio::join!(txn, other);
        t.unwrap().unwrap();
        assert_eq!(seen.unwrap(), 1, "the other event ran after the transaction");
        assert_eq!(*order.lock().unwrap(), ["txn start", "txn end", "other"]);
    });
}

struct Counter;
impl Actor for Counter {}

#[test]
fn many_objects_run_side_by_side() {
    let dirs: Vec<Dir> = (0..40).map(|_| Dir::new()).collect();
    runtime().block_on(async {
        let objects: Vec<Object<Counter>> =
            dirs.iter().map(|d| Object::spawn(d.opener(), |_| Counter)).collect();
        let mut tasks = Vec::new();
        for (i, object) in objects.iter().enumerate() {
            let object = object.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..25 {
                    object
                        .call(|ctx| async move {
                            let n = get(ctx.storage(), "n");
                            ctx.storage().put("n", &(n + 1));
                        })
                        .await
                        .unwrap();
                }
                i
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        for object in &objects {
            assert_eq!(
                object.call(|ctx| async move { get(ctx.storage(), "n") }).await.unwrap(),
                25
            );
        }
    });
    for d in &dirs {
        assert_eq!(read_i64(&d.open(), "n"), Some(25));
    }
}
