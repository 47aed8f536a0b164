//! Retries of an HTTP delivery (the bastion's alert sinks, the supervisor's Loki push):
//! exponential backoff with jitter, or the wait the server asked for (`Retry-After`), capped.
//! Pure: the caller samples the jitter and sleeps.

use std::time::Duration;

/// Longest wait a `Retry-After` may ask for.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(300);

/// How failed deliveries are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// Wait after the first failure (doubled after each further one).
    pub first: Duration,
    /// Longest wait before jitter.
    pub max: Duration,
}

impl Default for RetryPolicy {
    /// 5 attempts, 1 s doubling up to 60 s.
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            first: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait after `failures` (1 or more) failed attempts: the server's `retry_after` when
    /// it gave one (capped at [`RETRY_AFTER_MAX`]), else the backoff plus `sample` (in
    /// `[0, 1)`) times half of it.
    pub fn delay(&self, failures: u32, retry_after: Option<Duration>, sample: f64) -> Duration {
        if let Some(wait) = retry_after {
            return wait.min(RETRY_AFTER_MAX);
        }
        let doublings = failures.saturating_sub(1).min(20);
        let base = self.first.saturating_mul(1 << doublings).min(self.max);
        base + base.mul_f64(0.5 * sample.clamp(0.0, 1.0))
    }
}

/// A `Retry-After` header in its delta-seconds form (the HTTP-date form is not read: the
/// caller falls back to its backoff).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_honours_retry_after() {
        let policy = RetryPolicy::default();
        let s = Duration::from_secs;
        let rows = [
            (1, None, 0.0, s(1)),
            (2, None, 0.0, s(2)),
            (3, None, 0.5, s(5)),
            (9, None, 0.0, s(60)),
            (9, None, 0.99, s(60) + s(60).mul_f64(0.495)),
            (1, Some(s(3)), 0.9, s(3)),
            (1, Some(s(9999)), 0.0, RETRY_AFTER_MAX),
        ];
        for (failures, retry_after, sample, expected) in rows {
            assert_eq!(policy.delay(failures, retry_after, sample), expected);
        }
        assert_eq!(parse_retry_after(" 7 "), Some(s(7)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2026 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }
}
