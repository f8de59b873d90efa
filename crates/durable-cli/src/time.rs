//! Times on the command line: `--at` arguments (a time ago such as `15m`, RFC 3339, or
//! milliseconds since the epoch) and RFC 3339 on output. Durations are humantime's, instants
//! chrono's (both already in the build through object_store).

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

/// Why a `--at` argument is not a time.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TimeError {
    /// The text looks like a duration (`15m`) but humantime does not read it.
    #[error("{text:?} is not a time ago: {source} (give e.g. 15m, 2h30m, 1d; or RFC 3339)")]
    Duration {
        /// The argument.
        text: String,
        /// humantime's reason.
        source: humantime::DurationError,
    },
    /// The text looks like a date (`2025-01-31T...`) but is not RFC 3339.
    #[error("{text:?} is not an RFC 3339 time: {source} (give e.g. 2025-01-31T12:00:00Z)")]
    Timestamp {
        /// The argument.
        text: String,
        /// chrono's reason.
        source: chrono::ParseError,
    },
    /// The text is a number of milliseconds outside what a time can be.
    #[error("{text:?} is out of range as milliseconds since the epoch")]
    OutOfRange {
        /// The argument.
        text: String,
    },
    /// Empty text.
    #[error("an empty time: give RFC 3339 (2025-01-31T12:00:00Z) or a time ago (15m, 2h, 1d)")]
    Empty,
}

/// A time given on the command line, before it is resolved against the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeArg {
    /// This long before now: `15m`, `2h30m`, `1d` (also `15m ago`).
    Ago(Duration),
    /// An instant: RFC 3339 with any offset, or milliseconds since the Unix epoch.
    At(DateTime<Utc>),
}

impl FromStr for TimeArg {
    type Err = TimeError;

    fn from_str(text: &str) -> Result<TimeArg, TimeError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(TimeError::Empty);
        }
        if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) && trimmed.len() > 6 {
            // Milliseconds since the epoch (a bare number of 7 digits or more; `15` alone is
            // not a time).
            let ms: i64 =
                trimmed.parse().map_err(|_| TimeError::OutOfRange { text: text.into() })?;
            let at = DateTime::from_timestamp_millis(ms)
                .ok_or_else(|| TimeError::OutOfRange { text: text.into() })?;
            return Ok(TimeArg::At(at));
        }
        // A date has a `-` after its year or a `:` in its clock; a duration has neither.
        if trimmed.get(1..).is_some_and(|rest| rest.contains(['-', ':'])) {
            return DateTime::parse_from_rfc3339(trimmed)
                .map(|t| TimeArg::At(t.with_timezone(&Utc)))
                .map_err(|source| TimeError::Timestamp { text: text.into(), source });
        }
        let ago = trimmed.strip_suffix("ago").unwrap_or(trimmed).trim_end();
        humantime::parse_duration(ago)
            .map(TimeArg::Ago)
            .map_err(|source| TimeError::Duration { text: text.into(), source })
    }
}

impl TimeArg {
    /// The time in milliseconds since the Unix epoch, `Ago` counted back from `now_ms`.
    pub fn resolve_ms(self, now_ms: i64) -> i64 {
        match self {
            TimeArg::Ago(d) => {
                now_ms.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            }
            TimeArg::At(t) => t.timestamp_millis(),
        }
    }
}

/// `ms` (since the Unix epoch) as RFC 3339 in UTC with milliseconds
/// (`2025-01-31T12:00:00.000Z`).
pub fn format_ms(ms: i64) -> String {
    match DateTime::from_timestamp_millis(ms) {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => format!("{ms} ms"),
    }
}

/// The current time in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}
