//! The output gate: results wait until every commit started before them is durable.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::error::Error;

/// An object's output gate.
///
/// [`lock`](OutputGate::lock) adds a lock (one per commit that must become durable);
/// [`wait`](OutputGate::wait) resolves once every lock taken *before* the call has completed.
/// Locks may complete out of order. A lock that fails (or is dropped without completing)
/// breaks the gate: waiters registered after it reject with its error, waiters registered
/// before it still resolve once the locks ahead of them complete.
#[derive(Clone, Default)]
pub struct OutputGate {
    inner: Arc<GateInner>,
}

impl std::fmt::Debug for OutputGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.inner.lock();
        f.debug_struct("OutputGate")
            .field("pending", &s.pending.len())
            .field("broken", &s.broken.is_some())
            .finish()
    }
}

#[derive(Default)]
struct GateInner {
    state: Mutex<GateState>,
    changed: Notify,
}

#[derive(Default)]
struct GateState {
    next: u64,
    pending: BTreeSet<u64>,
    /// The first failed lock and its error.
    broken: Option<(u64, Error)>,
}

impl GateInner {
    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One lock on an [`OutputGate`]. Complete it with [`complete`](OutputLock::complete) or
/// [`fail`](OutputLock::fail); dropping it unfinished breaks the gate.
#[must_use = "dropping an output lock unfinished breaks the gate"]
pub struct OutputLock {
    gate: Arc<GateInner>,
    id: u64,
    done: bool,
}

impl std::fmt::Debug for OutputLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputLock").field("id", &self.id).finish()
    }
}

impl OutputGate {
    /// A new, open gate.
    pub fn new() -> OutputGate {
        OutputGate::default()
    }

    /// Adds a lock: waiters registered from now on wait for it.
    pub fn lock(&self) -> OutputLock {
        let mut s = self.inner.lock();
        let id = s.next;
        s.next += 1;
        s.pending.insert(id);
        OutputLock { gate: self.inner.clone(), id, done: false }
    }

    /// The error that broke the gate, if one did.
    pub fn broken(&self) -> Option<Error> {
        self.inner.lock().broken.as_ref().map(|(_, e)| e.clone())
    }

    /// True when no lock is pending.
    pub fn is_idle(&self) -> bool {
        self.inner.lock().pending.is_empty()
    }

    /// Resolves once every lock taken before this call has completed; rejects if the gate
    /// broke at a lock taken before this call.
    pub fn wait(&self) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        let inner = self.inner.clone();
        let upto = inner.lock().next;
        async move {
            loop {
                let notified = inner.changed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                {
                    let s = inner.lock();
                    if let Some((at, e)) = &s.broken
                        && *at < upto
                    {
                        return Err(e.clone());
                    }
                    if s.pending.range(..upto).next().is_none() {
                        return Ok(());
                    }
                }
                notified.await;
            }
        }
    }
}

impl OutputLock {
    /// The commit this lock stands for is durable.
    pub fn complete(mut self) {
        self.finish(None);
    }

    /// The commit failed: the gate breaks with `error`.
    pub fn fail(mut self, error: Error) {
        self.finish(Some(error));
    }

    fn finish(&mut self, error: Option<Error>) {
        if self.done {
            return;
        }
        self.done = true;
        {
            let mut s = self.gate.lock();
            s.pending.remove(&self.id);
            if let Some(e) = error
                && s.broken.is_none()
            {
                s.broken = Some((self.id, e));
            }
        }
        self.gate.changed.notify_waiters();
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        if !self.done {
            self.finish(Some(Error::WriteFailed(
                "output lock was canceled before completion".into(),
            )));
        }
    }
}
