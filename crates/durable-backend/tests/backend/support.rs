//! Helpers shared by the test modules: key lists, encoded values, a hand-released gate.

use std::sync::Arc;

use durable_backend::{Call, Delay, FaultyBackend, MemoryBackend, Op};
use tokio::sync::Semaphore;

/// Owned keys from string slices.
pub fn keys(keys: &[&str]) -> Vec<String> {
    keys.iter().map(|k| (*k).to_owned()).collect()
}

/// A value's bytes (values are opaque at this level).
pub fn v(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

/// A memory backend behind a fault wrapper, shared.
pub fn faulty() -> Arc<FaultyBackend<MemoryBackend>> {
    Arc::new(FaultyBackend::new(MemoryBackend::new()))
}

/// Calls of `op` in a log.
pub fn count(calls: &[Call], op: Op) -> usize {
    calls.iter().filter(|c| c.op == op).count()
}

/// Holds every call of the kinds `ops` until the test releases it: each call takes one permit.
pub fn hold(backend: &FaultyBackend<MemoryBackend>, ops: &'static [Op]) -> Arc<Semaphore> {
    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    backend.set_delay(move |call: &Call| -> Delay {
        let g = g.clone();
        let held = ops.contains(&call.op);
        Box::pin(async move {
            if held && let Ok(permit) = g.acquire().await {
                permit.forget();
            }
        })
    });
    gate
}
