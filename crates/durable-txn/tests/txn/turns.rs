//! The turn model's remaining differences from the runtime, fixed: `sync()` belongs to the
//! turn, a failed commit resets the object wherever the commit runs, the output gate holds
//! calls to other objects (and `Context::output_gate`), and critical sections time out.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use durable_sql::{Durability, Options};
use durable_txn::{CRITICAL_SECTION_TIMEOUT_MESSAGE, Error, Object, ObjectOptions, Storage};

use crate::support::{Dir, Plain};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn read(storage: &Storage, key: &str) -> Option<i64> {
    storage.get(key).now().ok().unwrap().unwrap()
}

/// Yields once: the poll returns `Pending`, so the turn ends.
async fn end_turn() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}

#[test]
fn an_unawaited_sync_commits_nothing_so_a_later_abort_discards_the_turn() {
    let dir = Dir::new();
    runtime().block_on(async {
        let object = Object::spawn(dir.opener(), |_| Plain);
        let aborted = object
            .call(|ctx| async move {
                ctx.storage().put("before", &1_i64);
                let _pending = ctx.storage().sync(); // not awaited
                ctx.storage().put("after", &2_i64);
                ctx.abort(Some("reset by the test"));
            })
            .await;
        assert_eq!(aborted.unwrap_err().to_string(), "reset by the test");
        let seen = object
            .call(
                |ctx| async move { (read(ctx.storage(), "before"), read(ctx.storage(), "after")) },
            )
            .await
            .unwrap();
        assert_eq!(seen, (None, None), "the un-awaited sync made nothing durable");
    });
}

#[test]
fn an_awaited_sync_ends_the_turn_and_waits_for_its_commit() {
    let dir = Dir::new();
    runtime().block_on(async {
        let object = Object::spawn(dir.opener(), |_| Plain);
        let aborted = object
            .call(|ctx| async move {
                ctx.storage().put("before", &1_i64);
                ctx.storage().sync().await.unwrap();
                // A new turn: the write before the sync is committed and durable.
                ctx.storage().put("after", &2_i64);
                ctx.abort(None);
            })
            .await;
        assert!(aborted.is_err());
        let seen = object
            .call(
                |ctx| async move { (read(ctx.storage(), "before"), read(ctx.storage(), "after")) },
            )
            .await
            .unwrap();
        assert_eq!(seen, (Some(1), None));
    });
    // Outside the runtime, sync() is still the explicit commit point.
    let storage = dir.open();
    storage.put("plain", &3_i64);
    storage.sync().wait().unwrap();
    drop(storage);
    assert_eq!(read(&dir.open(), "plain"), Some(3));
}

/// A table whose rows must reference a parent, checked at commit (deferred).
fn deferred_fk(storage: &Storage) {
    let db = storage.sql().unwrap();
    db.exec(
        "CREATE TABLE IF NOT EXISTS parent(id INTEGER PRIMARY KEY); \
         CREATE TABLE IF NOT EXISTS child(p INTEGER REFERENCES parent(id) \
         DEFERRABLE INITIALLY DEFERRED)",
        &[],
    )
    .unwrap();
}

const FK_RESET: &str = "Durable Object was reset and rolled back to its last known good state \
    because the application left the database in a state where constraints were violated: \
    FOREIGN KEY constraint failed: SQLITE_CONSTRAINT (extended: SQLITE_CONSTRAINT_FOREIGNKEY)";

#[test]
fn a_failed_commit_resets_the_object_wherever_the_commit_runs() {
    let dir = Dir::new();
    runtime().block_on(async {
        let object = Object::spawn(dir.opener(), |_| Plain);
        object.call(|ctx| async move { deferred_fk(ctx.storage()) }).await.unwrap();
        // At the start of transaction(): the turn's writes commit first, and fail.
        let failed = object
            .call(|ctx| async move {
                let s = ctx.storage().clone();
                s.put("lost", &1_i64);
                s.sql().unwrap().exec("INSERT INTO child VALUES (77)", &[]).unwrap();
                let r = s.transaction(|_txn| async { Ok::<_, Error>(()) }).await;
                // The object keeps running this event, but it is being reset.
                r.map_err(|e| e.to_string())
            })
            .await;
        assert_eq!(failed.unwrap_err().to_string(), FK_RESET);
        // At sync(): the turn's commit fails; the event fails with it.
        let failed = object
            .call(|ctx| async move {
                ctx.storage().put("lost", &2_i64);
                ctx.storage().sql().unwrap().exec("INSERT INTO child VALUES (78)", &[]).unwrap();
                ctx.storage().sync().await
            })
            .await;
        assert_eq!(failed.unwrap_err().to_string(), FK_RESET);
        // The next event runs on a fresh instance that works; the failed turns left nothing.
        let after = object
            .call(|ctx| async move {
                ctx.storage().put("ok", &3_i64);
                let n: i64 = ctx
                    .storage()
                    .sql()
                    .unwrap()
                    .exec("SELECT count(*) AS n FROM child", &[])
                    .unwrap()
                    .one::<durable_sql::Row>()
                    .unwrap()
                    .get("n")
                    .unwrap();
                (read(ctx.storage(), "lost"), n)
            })
            .await
            .unwrap();
        assert_eq!(after, (None, 0));
    });
}

/// Holds group-commit syncs while shut.
#[derive(Clone, Default)]
struct Valve(Arc<(Mutex<bool>, Condvar)>);

impl Valve {
    fn set(&self, shut: bool) {
        *self.0.0.lock().unwrap() = shut;
        self.0.1.notify_all();
    }

    fn open_storage(&self, path: &std::path::Path) -> durable_txn::Result<Storage> {
        let storage = Storage::open(path, Options::new().durability(Durability::Group))?;
        let valve = self.clone();
        storage.sql()?.set_sync_hook(Some(Arc::new(move || {
            let (shut, cv) = &*valve.0;
            let mut shut = shut.lock().unwrap();
            while *shut {
                shut = cv.wait(shut).unwrap();
            }
            Ok(())
        })));
        Ok(storage)
    }
}

#[test]
fn a_call_to_another_object_waits_for_the_callers_writes_to_be_durable() {
    let caller_dir = Dir::new();
    let callee_dir = Dir::new();
    let valve = Valve::default();
    runtime().block_on(async {
        let v = valve.clone();
        let path = caller_dir.path();
        let caller = Object::spawn(move || v.open_storage(&path), |_| Plain);
        let callee = Object::spawn(callee_dir.opener(), |_| Plain);
        caller
            .call(|ctx| async move { ctx.storage().put("warm", &0_i64).await })
            .await
            .unwrap()
            .unwrap();
        valve.set(true);
        let reached = Arc::new(AtomicBool::new(false));
        let r = reached.clone();
        let call = tokio::spawn(async move {
            caller
                .call(move |ctx| async move {
                    ctx.storage().put("sent", &1_i64);
                    // An outgoing message: held by the caller's output gate.
                    callee
                        .call(move |_| async move { r.store(true, Ordering::SeqCst) })
                        .await
                        .unwrap();
                })
                .await
        });
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(!reached.load(Ordering::SeqCst), "delivered before the caller's write was durable");
        valve.set(false);
        call.await.unwrap().unwrap();
        assert!(reached.load(Ordering::SeqCst));
    });
}

#[test]
fn output_gate_waits_for_the_writes_made_before_it() {
    let dir = Dir::new();
    let valve = Valve::default();
    runtime().block_on(async {
        let v = valve.clone();
        let path = dir.path();
        let object = Object::spawn(move || v.open_storage(&path), |_| Plain);
        object
            .call(|ctx| async move { ctx.storage().put("warm", &0_i64).await })
            .await
            .unwrap()
            .unwrap();
        valve.set(true);
        let passed = Arc::new(AtomicBool::new(false));
        let p = passed.clone();
        let call = tokio::spawn(async move {
            object
                .call(move |ctx| async move {
                    ctx.storage().put("k", &1_i64);
                    ctx.output_gate().await.unwrap();
                    p.store(true, Ordering::SeqCst);
                })
                .await
        });
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(!passed.load(Ordering::SeqCst), "the gate passed before the write was durable");
        valve.set(false);
        call.await.unwrap().unwrap();
        assert!(passed.load(Ordering::SeqCst));
    });
}

#[test]
fn critical_sections_that_hold_the_gate_too_long_reset_the_object() {
    let dir = Dir::new();
    runtime().block_on(async {
        let options = ObjectOptions::default().critical_section_timeout(Duration::from_millis(100));
        let object = Object::spawn_with(dir.opener(), |_| Plain, options);
        let failed = object
            .call(|ctx| async move {
                // Committed when the turn ends at the section's first real wait.
                ctx.storage().put("kept", &1_i64);
                ctx.block_concurrency_while(async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    Ok::<_, Error>(())
                })
                .await
            })
            .await;
        assert_eq!(failed.unwrap_err().to_string(), CRITICAL_SECTION_TIMEOUT_MESSAGE);
        // A transaction closure gets the same limit.
        let failed = object
            .call(|ctx| async move {
                let s = ctx.storage().clone();
                s.transaction(|_txn| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    Ok::<_, Error>(())
                })
                .await
            })
            .await;
        assert_eq!(failed.unwrap_err().to_string(), CRITICAL_SECTION_TIMEOUT_MESSAGE);
        // A fresh instance works, and a short section passes.
        let after = object
            .call(|ctx| async move {
                let quick = ctx.block_concurrency_while(async { Ok::<_, Error>(7) }).await;
                end_turn().await;
                (read(ctx.storage(), "kept"), quick.unwrap())
            })
            .await
            .unwrap();
        assert_eq!(after, (Some(1), 7));
    });
}
