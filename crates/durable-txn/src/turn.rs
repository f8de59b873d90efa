//! The current turn: which event of which object runs on this thread, and the input gate.
//!
//! The object runtime sets the current turn around every poll of an event's future. Storage
//! calls made during that poll find it here: a call that must wait for I/O takes an
//! [`InputLock`], and while any lock of an event is held the runtime delivers no other event
//! to the object. Outside the runtime there is no current turn and every helper is a no-op.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

use crate::error::Error;

/// Deepest nesting of `block_concurrency_while` the runtime allows.
pub(crate) const MAX_CRITICAL_DEPTH: usize = 64;

/// State shared by an object's driver, its events' wakers and their input locks.
#[derive(Default)]
pub(crate) struct ExecShared {
    state: Mutex<ExecState>,
}

#[derive(Default)]
pub(crate) struct ExecState {
    /// Events woken and waiting to be polled, in wake order.
    pub ready: VecDeque<u64>,
    /// The event holding the input gate, and how many locks it holds.
    pub holder: Option<u64>,
    pub locks: usize,
    /// How deeply `block_concurrency_while` is nested in the holder.
    pub critical_depth: usize,
    /// The driver's waker.
    pub driver: Option<Waker>,
    /// A reset the object's code asked for (abort, failed critical section, failed commit).
    pub reset: Option<Error>,
    /// Code waiting for the output gate to pass everything written before it (told once the
    /// running turn has ended and its commit, with every earlier one, is durable).
    pub gate_waiters: Vec<tokio::sync::oneshot::Sender<Option<Error>>>,
    /// How long a critical section (`block_concurrency_while`, `transaction`) may hold the
    /// input gate before the object is reset.
    pub critical_timeout: Option<std::time::Duration>,
}

impl ExecShared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, ExecState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues event `id` for a poll and wakes the driver.
    pub(crate) fn wake_event(&self, id: u64) {
        let waker = {
            let mut s = self.lock();
            if !s.ready.contains(&id) {
                s.ready.push_back(id);
            }
            s.driver.clone()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn wake_driver(&self) {
        let waker = self.lock().driver.clone();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

thread_local! {
    static CURRENT: RefCell<Option<(Arc<ExecShared>, u64)>> = const { RefCell::new(None) };
}

/// Runs `f` as a turn of event `id`.
pub(crate) fn enter<R>(shared: &Arc<ExecShared>, id: u64, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<(Arc<ExecShared>, u64)>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            CURRENT.with(|c| *c.borrow_mut() = previous);
        }
    }
    let previous = CURRENT.with(|c| c.borrow_mut().replace((shared.clone(), id)));
    let _restore = Restore(previous);
    f()
}

/// True while the calling code runs as a turn of an object runtime.
pub fn in_turn() -> bool {
    CURRENT.with(|c| c.borrow().is_some())
}

/// A hold on an object's input gate, taken by the event running now. While any lock of an
/// event is alive, the runtime delivers no other event to the object. Dropping the last
/// one opens the gate.
#[must_use = "the input gate opens again when the lock is dropped"]
pub struct InputLock {
    shared: Arc<ExecShared>,
    critical: bool,
}

impl std::fmt::Debug for InputLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputLock").field("critical", &self.critical).finish()
    }
}

impl InputLock {
    fn take(critical: bool) -> Result<Option<InputLock>, Error> {
        let current = CURRENT.with(|c| c.borrow().clone());
        let Some((shared, id)) = current else { return Ok(None) };
        {
            let mut s = shared.lock();
            if critical {
                if s.holder == Some(id) && s.critical_depth >= MAX_CRITICAL_DEPTH {
                    return Err(Error::NestedTooDeeply);
                }
                s.critical_depth += 1;
            }
            s.holder = Some(id);
            s.locks += 1;
        }
        Ok(Some(InputLock { shared, critical }))
    }
}

impl Drop for InputLock {
    fn drop(&mut self) {
        let open = {
            let mut s = self.shared.lock();
            if self.critical {
                s.critical_depth = s.critical_depth.saturating_sub(1);
            }
            s.locks = s.locks.saturating_sub(1);
            if s.locks == 0 {
                s.holder = None;
                true
            } else {
                false
            }
        };
        if open {
            self.shared.wake_driver();
        }
    }
}

/// Takes an input lock for the event running now (`None` outside the object runtime).
pub fn input_lock() -> Option<InputLock> {
    InputLock::take(false).ok().flatten()
}

/// Takes an input lock for a critical section (`block_concurrency_while`, `transaction`),
/// refusing to nest deeper than the runtime allows.
pub(crate) fn critical_section() -> Result<Option<InputLock>, Error> {
    InputLock::take(true)
}

/// A receiver told (`None`: passed; `Some`: the gate broke) once everything written before
/// the call is durable: the running turn has ended, its writes committed, and every commit
/// up to it is durable. `None` outside the object runtime.
pub(crate) fn output_gate_waiter() -> Option<tokio::sync::oneshot::Receiver<Option<Error>>> {
    let (shared, _) = CURRENT.with(|c| c.borrow().clone())?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    shared.lock().gate_waiters.push(tx);
    Some(rx)
}

/// How long a critical section of the running object may hold the input gate.
pub(crate) fn critical_timeout() -> Option<std::time::Duration> {
    let (shared, _) = CURRENT.with(|c| c.borrow().clone())?;
    shared.lock().critical_timeout
}

/// Asks the runtime to reset the object once the running turn ends: every event in flight
/// fails with `error`, and the object starts again from its last committed state.
pub(crate) fn request_reset(error: Error) -> bool {
    let current = CURRENT.with(|c| c.borrow().clone());
    match current {
        Some((shared, _)) => {
            let mut s = shared.lock();
            if s.reset.is_none() {
                s.reset = Some(error);
            }
            true
        }
        None => false,
    }
}
