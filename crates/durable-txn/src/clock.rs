//! Clocks: the system's, and a manual one that tests move by hand.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

/// A future that completes at a time.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Where the object runtime gets the time from (alarms, `set_alarm`'s "past means now").
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
    /// Completes once `now_ms() >= at_ms`.
    fn sleep_until(&self, at_ms: i64) -> Sleep;
}

/// The system clock, with tokio timers.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
    }

    fn sleep_until(&self, at_ms: i64) -> Sleep {
        let wait = at_ms.saturating_sub(self.now_ms()).max(0) as u64;
        Box::pin(tokio::time::sleep(Duration::from_millis(wait)))
    }
}

/// A clock that only moves when told to: tests cover hours of alarms in milliseconds.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: AtomicI64,
    moved: Notify,
}

impl ManualClock {
    /// A clock standing at `now_ms`.
    pub fn new(now_ms: i64) -> Arc<ManualClock> {
        Arc::new(ManualClock { now: AtomicI64::new(now_ms), moved: Notify::new() })
    }

    /// Moves the clock forward by `ms`.
    pub fn advance(&self, ms: i64) {
        self.now.fetch_add(ms, Ordering::SeqCst);
        self.moved.notify_waiters();
    }

    /// Sets the clock to `now_ms`.
    pub fn set(&self, now_ms: i64) {
        self.now.store(now_ms, Ordering::SeqCst);
        self.moved.notify_waiters();
    }
}

impl Clock for Arc<ManualClock> {
    fn now_ms(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }

    fn sleep_until(&self, at_ms: i64) -> Sleep {
        let clock = self.clone();
        Box::pin(async move {
            loop {
                let moved = clock.moved.notified();
                tokio::pin!(moved);
                moved.as_mut().enable();
                if clock.now_ms() >= at_ms {
                    return;
                }
                moved.await;
            }
        })
    }
}
