//! The clock that stamps commits and bounds the recovery window: the system's, or (with the
//! `testing` feature) the workspace's manual one that tests move by hand.

use std::time::{SystemTime, UNIX_EPOCH};

/// A source of wall-clock time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time, in ms since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
        }
    }
}

/// The workspace's manual clock (`durable_sql::testing::ManualClock`, with the `testing`
/// feature) stamps commits too: tests cover 31 days of history in milliseconds.
#[cfg(feature = "testing")]
impl Clock for durable_sql::testing::ManualClock {
    fn now_ms(&self) -> i64 {
        durable_sql::testing::ManualClock::now_ms(self)
    }
}

/// Milliseconds since the Unix epoch of a [`SystemTime`] (negative before 1970).
pub fn system_time_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}
