//! Times on the command line: RFC 3339 in and out, and relative times such as `15m`.

use crate::error::{Error, Result};

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (inverse of `days_from_civil`).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `ms` (since the Unix epoch) as RFC 3339 in UTC with milliseconds.
pub fn format_ms(ms: i64) -> String {
    let (days, rest) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, m, d) = civil_from_days(days);
    let (h, min, s, milli) = (rest / 3_600_000, rest / 60_000 % 60, rest / 1000 % 60, rest % 1000);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{milli:03}Z")
}

/// The current time in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A duration such as `15m`, `2h30m`, `90s`, `7d` or `500ms`, in milliseconds.
pub fn parse_duration_ms(text: &str) -> Option<i64> {
    let mut total: i64 = 0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: i64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => 1,
            "s" | "sec" => 1000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    Some(total)
}

fn num(text: &str, range: std::ops::RangeInclusive<i64>) -> Option<i64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|n| range.contains(n))
}

/// RFC 3339 (`2025-01-31T12:00:00Z`, `2025-01-31 12:00:00.5+02:00`) in milliseconds.
pub fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    let text = text.trim();
    let (date, time) = text.split_once(['T', 't', ' '])?;
    let mut parts = date.split('-');
    let y = num(parts.next()?, 0..=9999)?;
    let m = num(parts.next()?, 1..=12)?;
    let d = num(parts.next()?, 1..=31)?;
    if parts.next().is_some() {
        return None;
    }
    let (clock, offset_ms) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else {
        let at = time.rfind(['+', '-'])?;
        let (c, off) = time.split_at(at);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off[1..].split_once(':')?;
        (c, sign * (num(oh, 0..=23)? * 60 + num(om, 0..=59)?) * 60_000)
    };
    let mut hms = clock.split(':');
    let h = num(hms.next()?, 0..=23)?;
    let min = num(hms.next()?, 0..=59)?;
    let sec_text = hms.next()?;
    if hms.next().is_some() {
        return None;
    }
    let (s, frac) = sec_text.split_once('.').unwrap_or((sec_text, ""));
    let s = num(s, 0..=60)?;
    let milli = if frac.is_empty() {
        0
    } else {
        if !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        format!("{:0<3}", &frac[..frac.len().min(3)]).parse::<i64>().ok()?
    };
    if d > days_in_month(y, m) {
        return None;
    }
    let days = days_from_civil(y, m, d);
    Some(((days * 24 + h) * 60 + min) * 60_000 + s * 1000 + milli - offset_ms)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    days_from_civil(if m == 12 { y + 1 } else { y }, m % 12 + 1, 1) - days_from_civil(y, m, 1)
}

/// A time given as RFC 3339, as milliseconds since the epoch, or relative to `now_ms`
/// (`15m` or `15m ago`: fifteen minutes before now).
pub fn parse_time_ms(text: &str, now_ms: i64) -> Result<i64> {
    let relative = text.trim().strip_suffix("ago").unwrap_or(text).trim();
    if let Some(ms) = parse_duration_ms(relative) {
        return Ok(now_ms.saturating_sub(ms));
    }
    if let Some(ms) = parse_rfc3339_ms(text) {
        return Ok(ms);
    }
    Err(Error::msg(format!(
        "{text:?} is not a time: give RFC 3339 (2025-01-31T12:00:00Z) or a time ago (15m, 2h, 1d)"
    )))
}
