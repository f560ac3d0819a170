//! Time as a parameter, so that date rules and schedules are testable without waiting.

use chrono::{DateTime, TimeDelta, Utc};
use std::time::Duration;

/// A source of the current instant.
pub trait Clock: Send + Sync {
    /// Now, in UTC.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock stopped at one instant (tests, `validate --today`).
pub struct FixedClock(pub DateTime<Utc>);

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

/// `wait` after `now` (the far future when it does not fit).
pub fn later(now: DateTime<Utc>, wait: Duration) -> DateTime<Utc> {
    now + TimeDelta::from_std(wait).unwrap_or(TimeDelta::MAX)
}

/// Seconds from an RFC 3339 instant to `now`, 0 when there is none (or it is ahead):
/// the age a lag gauge shows.
pub fn seconds_since(now: DateTime<Utc>, instant: Option<&str>) -> f64 {
    instant
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| (now - t.with_timezone(&Utc)).as_seconds_f64().max(0.0))
        .unwrap_or(0.0)
}

/// The wait after the `attempts`-th failed attempt in a row: 1 s, doubling, plus `jitter`
/// (0 to 1) of a tenth of it. The webhook inbox and the change feed's delivery retry by it.
pub fn backoff(attempts: u32, jitter: f64) -> Duration {
    let base = Duration::from_secs(1) * 2u32.saturating_pow(attempts.saturating_sub(1).min(16));
    base + base.mul_f64(0.1 * jitter.clamp(0.0, 1.0))
}

/// A random fraction from 0 to 1, so that retries of several workers or destinations do
/// not fall in step.
pub fn jitter() -> f64 {
    getrandom::u32().map_or(0.5, |n| f64::from(n) / f64::from(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_a_second_with_a_tenth_of_jitter() {
        assert_eq!(backoff(1, 0.0), Duration::from_secs(1));
        assert_eq!(backoff(2, 0.0), Duration::from_secs(2));
        assert_eq!(backoff(4, 0.0), Duration::from_secs(8));
        assert_eq!(backoff(4, 1.0), Duration::from_millis(8_800));
        assert!(backoff(u32::MAX, 1.0) > Duration::from_secs(60_000));
    }

    #[test]
    fn an_age_is_never_negative_and_zero_without_an_instant() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:01:00Z")
            .expect("an instant")
            .with_timezone(&Utc);
        assert_eq!(seconds_since(now, Some("2026-01-01T00:00:00Z")), 60.0);
        assert_eq!(seconds_since(now, Some("2026-01-01T00:02:00Z")), 0.0);
        assert_eq!(seconds_since(now, None), 0.0);
        assert_eq!(seconds_since(now, Some("not a time")), 0.0);
    }
}
