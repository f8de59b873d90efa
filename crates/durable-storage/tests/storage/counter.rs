//! End to end: a counter actor run by the object runtime over a namespace.

use durable_storage::{Actor, Error, NamespaceOptions, ObjectHandle};

use crate::support::{Dir, eventually, now, rt};

struct Counter;

impl Actor for Counter {}

struct Other;

impl Actor for Other {}

async fn increment(counter: &ObjectHandle<Counter>) -> i64 {
    counter
        .call(|ctx| async move {
            let n: i64 = ctx.storage().get("n").await.unwrap().unwrap_or(0);
            ctx.storage().put("n", &(n + 1));
            n + 1
        })
        .await
        .unwrap()
}

#[test]
fn a_counter_counts_across_calls_concurrent_calls_and_restarts() {
    let dir = Dir::new();
    rt().block_on(async {
        let ns = dir.open(NamespaceOptions::default());
        let counter = ns.object("visits", |_| Counter).unwrap();
        for expected in 1..=5 {
            assert_eq!(increment(&counter).await, expected);
        }
        // Concurrent read-then-write increments never lose an update (one turn each).
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let c = ns.object("visits", |_| Counter).unwrap();
            tasks.push(tokio::spawn(async move { increment(&c).await }));
        }
        let mut seen = Vec::new();
        for t in tasks {
            seen.push(t.await.unwrap());
        }
        seen.sort();
        assert_eq!(seen, (6..=25).collect::<Vec<_>>());
        assert_eq!(ns.opened_count(), 1, "one runtime, one open");
        // Dropping every handle stops the runtime and closes the object.
        drop(counter);
        eventually("the object closes", || ns.open_names().is_empty()).await;
        let counter = ns.object("visits", |_| Counter).unwrap();
        assert_eq!(increment(&counter).await, 26);
        assert_eq!(ns.opened_count(), 2);
    });
}

#[test]
fn a_running_object_and_a_storage_handle_share_one_connection() {
    let dir = Dir::new();
    rt().block_on(async {
        let ns = dir.open(NamespaceOptions::default());
        let counter = ns.object("visits", |_| Counter).unwrap();
        assert_eq!(increment(&counter).await, 1);
        let handle = ns.storage("visits").unwrap();
        assert_eq!(now(handle.get::<i64>("n")), Some(1));
        assert_eq!(ns.opened_count(), 1);
        assert_eq!(counter.name(), "visits");
    });
}

#[test]
fn an_object_runs_with_one_actor_type_at_a_time() {
    let dir = Dir::new();
    rt().block_on(async {
        let ns = dir.open(NamespaceOptions::default());
        let counter = ns.object("x", |_| Counter).unwrap();
        match ns.object("x", |_| Other) {
            Err(Error::ActorMismatch { name }) => assert_eq!(name, "x"),
            other => panic!("expected ActorMismatch, got {other:?}"),
        }
        drop(counter);
        // Once the first runtime has stopped (Busy until then), another actor type may run.
        eventually("the runtime stops", || match ns.object("x", |_| Other) {
            Ok(_) => true,
            Err(Error::Busy { name }) => {
                assert_eq!(name, "x");
                false
            }
            Err(e) => panic!("unexpected {e}"),
        })
        .await;
    });
}

#[test]
fn object_outside_a_tokio_runtime_is_a_typed_error() {
    let dir = Dir::new();
    let ns = dir.open(NamespaceOptions::default());
    assert!(matches!(ns.object("x", |_| Counter), Err(Error::NoRuntime)));
    assert!(matches!(ns.run_alarms(|_, _| Counter), Err(Error::NoRuntime)));
}

#[test]
fn an_abort_resets_the_object_which_reopens_through_the_namespace() {
    let dir = Dir::new();
    rt().block_on(async {
        let ns = dir.open(NamespaceOptions::default());
        let counter = ns.object("visits", |_| Counter).unwrap();
        assert_eq!(increment(&counter).await, 1);
        let aborted = counter
            .call(|ctx| async move {
                ctx.storage().put("n", &100_i64);
                ctx.abort(Some("reset please"));
            })
            .await;
        assert_eq!(aborted.unwrap_err().to_string(), "reset please");
        assert_eq!(increment(&counter).await, 2, "the uncommitted 100 was discarded");
        assert_eq!(ns.opened_count(), 2, "the reset opened the object again");
    });
}
