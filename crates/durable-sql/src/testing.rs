//! Test doubles shared by every layer (behind the `testing` feature): the one manual clock of
//! the workspace. It lives in the base crate so that the turn layer (alarms), the archiver
//! (commit stamps, the recovery window) and the facade can all be driven by the same clock
//! in one test.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// A wall clock that only moves when told to: tests cover hours of alarms or 31 days of
/// history in milliseconds. Clones share the same time.
///
/// The layers above implement their clock traits for it (`durable_txn::Clock`,
/// `durable_pitr::Clock`), so one `ManualClock` can drive all of them.
///
/// ```
/// use durable_sql::testing::ManualClock;
/// let clock = ManualClock::new(1_000);
/// let later = clock.clone();
/// clock.advance(500);
/// assert_eq!(later.now_ms(), 1_500);
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    now: AtomicI64,
    /// Tasks sleeping until a time, woken whenever the clock moves.
    sleepers: Mutex<Vec<Waker>>,
}

impl ManualClock {
    /// A clock standing at `now_ms` (milliseconds since the Unix epoch).
    pub fn new(now_ms: i64) -> ManualClock {
        ManualClock {
            inner: Arc::new(Inner {
                now: AtomicI64::new(now_ms),
                sleepers: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The time, in milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        self.inner.now.load(Ordering::SeqCst)
    }

    /// Moves the clock forward by `ms`.
    pub fn advance(&self, ms: i64) {
        self.inner.now.fetch_add(ms, Ordering::SeqCst);
        self.wake();
    }

    /// Sets the clock to `now_ms` (it may go backwards).
    pub fn set(&self, now_ms: i64) {
        self.inner.now.store(now_ms, Ordering::SeqCst);
        self.wake();
    }

    fn wake(&self) {
        let sleepers =
            std::mem::take(&mut *self.inner.sleepers.lock().unwrap_or_else(|p| p.into_inner()));
        for waker in sleepers {
            waker.wake();
        }
    }

    /// A future that completes once the clock reads `at_ms` or later (with any executor).
    pub fn sleep_until(&self, at_ms: i64) -> ManualSleep {
        ManualSleep { clock: self.clone(), at_ms }
    }
}

/// The future of [`ManualClock::sleep_until`].
#[derive(Debug)]
pub struct ManualSleep {
    clock: ManualClock,
    at_ms: i64,
}

impl Future for ManualSleep {
    type Output = ();

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.clock.now_ms() >= self.at_ms {
            return Poll::Ready(());
        }
        let mut sleepers = self.clock.inner.sleepers.lock().unwrap_or_else(|p| p.into_inner());
        // Checked again under the lock: a move in between woke the list before we joined it.
        if self.clock.now_ms() >= self.at_ms {
            return Poll::Ready(());
        }
        sleepers.push(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Flag(std::sync::atomic::AtomicBool);
    impl std::task::Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_sleep_completes_when_the_clock_gets_there() {
        let clock = ManualClock::new(100);
        let flag = Arc::new(Flag(false.into()));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let mut sleep = std::pin::pin!(clock.sleep_until(150));
        assert!(sleep.as_mut().poll(&mut cx).is_pending());
        clock.advance(20);
        assert!(flag.0.swap(false, Ordering::SeqCst), "woken to look again");
        assert!(sleep.as_mut().poll(&mut cx).is_pending(), "120 < 150");
        clock.set(150);
        assert!(flag.0.load(Ordering::SeqCst));
        assert!(sleep.as_mut().poll(&mut cx).is_ready());
    }
}
