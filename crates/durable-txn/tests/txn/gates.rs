//! The output gate (legacy-kv-and-gates section 2.4, "OutputGate").

use std::time::Duration;

use durable_txn::{Error, OutputGate};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn a_waiter_waits_only_for_locks_taken_before_it() {
    rt().block_on(async {
        let gate = OutputGate::new();
        assert!(gate.is_idle());
        gate.wait().await.unwrap();
        let first = gate.lock();
        let waiter = tokio::spawn(gate.wait());
        let later = gate.lock();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(!waiter.is_finished());
        first.complete();
        waiter.await.unwrap().unwrap();
        later.complete();
        assert!(gate.is_idle());
    });
}

#[test]
fn locks_may_complete_out_of_order() {
    rt().block_on(async {
        let gate = OutputGate::new();
        let a = gate.lock();
        let b = gate.lock();
        let waiter = tokio::spawn(gate.wait());
        b.complete();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(!waiter.is_finished(), "a is still pending");
        a.complete();
        waiter.await.unwrap().unwrap();
    });
}

#[test]
fn a_failed_lock_breaks_later_waiters_only() {
    rt().block_on(async {
        let gate = OutputGate::new();
        let ok = gate.lock();
        let before = tokio::spawn(gate.wait());
        let bad = gate.lock();
        let after = tokio::spawn(gate.wait());
        bad.fail(Error::WriteFailed("disk".into()));
        ok.complete();
        before.await.unwrap().unwrap();
        assert_eq!(after.await.unwrap().unwrap_err(), Error::WriteFailed("disk".into()));
        assert_eq!(gate.broken(), Some(Error::WriteFailed("disk".into())));
        let dropped_gate = OutputGate::new();
        drop(dropped_gate.lock());
        assert_eq!(
            dropped_gate.wait().await.unwrap_err().to_string(),
            "Internal error in Durable Object storage write caused object to be reset; \
             reference = output lock was canceled before completion"
        );
    });
}
