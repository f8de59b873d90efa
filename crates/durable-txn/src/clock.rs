//! Clocks: the system's, and (with the `testing` feature) the workspace's manual one that
//! tests move by hand.

use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A future that completes at a time.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Where the object runtime gets the time from (alarms, `set_alarm`'s "past means now").
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
    /// Completes once `now_ms() >= at_ms`.
    fn sleep_until(&self, at_ms: i64) -> Sleep;
}

/// A shared clock is a clock (so `NamespaceOptions::clock` takes an `Arc<dyn Clock>` too).
impl<C: Clock + ?Sized> Clock for std::sync::Arc<C> {
    fn now_ms(&self) -> i64 {
        (**self).now_ms()
    }

    fn sleep_until(&self, at_ms: i64) -> Sleep {
        (**self).sleep_until(at_ms)
    }
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

/// The workspace's manual clock (`durable_sql::testing::ManualClock`, with the `testing`
/// feature) drives alarms too: tests cover hours of alarms in milliseconds.
#[cfg(feature = "testing")]
impl Clock for durable_sql::testing::ManualClock {
    fn now_ms(&self) -> i64 {
        durable_sql::testing::ManualClock::now_ms(self)
    }

    fn sleep_until(&self, at_ms: i64) -> Sleep {
        Box::pin(durable_sql::testing::ManualClock::sleep_until(self, at_ms))
    }
}
