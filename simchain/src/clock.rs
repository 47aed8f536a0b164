//! Wall-clock formatting and human-friendly durations.
//!
//! CometBFT only needs RFC 3339 timestamps in UTC (`2024-05-01T12:00:00.123456789Z`, from
//! humantime) and its console logger's kitchen time (`3:04PM`, derived here).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Errors from [`parse_duration`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DurationError {
    /// The text had no number in front of the unit.
    #[error("invalid duration {0:?}: expected a number followed by ms, s or m (e.g. 200ms)")]
    Malformed(String),
}

/// Parses `200ms`, `1s`, `1.5s`, `2m`; a bare number means milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let trimmed = text.trim();
    let malformed = || DurationError::Malformed(text.to_string());
    let (number, scale_ms) = if let Some(n) = trimmed.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = trimmed.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = trimmed.strip_suffix('m') {
        (n, 60_000.0)
    } else {
        (trimmed, 1.0)
    };
    let value: f64 = number.trim().parse().map_err(|_| malformed())?;
    if !value.is_finite() || value < 0.0 {
        return Err(malformed());
    }
    Ok(Duration::from_secs_f64(value * scale_ms / 1000.0))
}

fn since_epoch(time: SystemTime) -> Duration {
    time.duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// RFC 3339 in UTC with nanoseconds, as CometBFT prints block and vote times
/// (times before 1970 clamp to the epoch).
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_nanos(time.max(UNIX_EPOCH)).to_string()
}

/// RFC 3339 in UTC the way Go's `time.Time.MarshalJSON` writes it (`time.RFC3339Nano`): the
/// fraction keeps only its significant digits and disappears when zero
/// (`2024-02-29T15:04:05.1Z`, `2024-02-29T15:04:05Z`). CometBFT's RPC JSON encodes times like this
/// after converting them to UTC (`libs/json/encoder.go`, v0.38), e.g. `/status`'s
/// `latest_block_time`, and so does the SDK's `genesis_time`.
pub fn rfc3339_go(time: SystemTime) -> String {
    let full = rfc3339(time);
    // `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`: trim the fraction's trailing zeros, then a bare dot.
    let Some(body) = full.strip_suffix('Z') else {
        return full;
    };
    let trimmed = body.trim_end_matches('0').trim_end_matches('.');
    format!("{trimmed}Z")
}

/// RFC 3339 in UTC to the second (`2024-02-29T15:04:05Z`): zerolog's default `TimeFieldFormat`
/// (`time.RFC3339`), the `time` field of the SDK's JSON log lines (rs/zerolog v1.33
/// `globals.go`). zerolog writes local time; simd's zone is UTC.
pub fn rfc3339_seconds(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time.max(UNIX_EPOCH)).to_string()
}

/// Kitchen time (`3:04PM`, UTC), the timestamp of CometBFT's console log format.
pub fn kitchen(time: SystemTime) -> String {
    let of_day = since_epoch(time).as_secs() % 86_400;
    let hour24 = of_day / 3600;
    let minute = (of_day / 60) % 60;
    let (hour12, suffix) = match hour24 {
        0 => (12, "AM"),
        1..=11 => (hour24, "AM"),
        12 => (12, "PM"),
        _ => (hour24 - 12, "PM"),
    };
    format!("{hour12}:{minute:02}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_documented() {
        let cases = [
            ("200ms", Some(Duration::from_millis(200))),
            ("1s", Some(Duration::from_secs(1))),
            ("1.5s", Some(Duration::from_millis(1500))),
            ("2m", Some(Duration::from_secs(120))),
            ("150", Some(Duration::from_millis(150))),
            ("fast", None),
            ("-1s", None),
            ("", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_duration(text).ok(), expected, "{text}");
        }
    }

    #[test]
    fn rfc3339_and_kitchen_match_known_instants() {
        // 2024-02-29T15:04:05.000000007Z
        let t = UNIX_EPOCH + Duration::new(1_709_219_045, 7);
        assert_eq!(rfc3339(t), "2024-02-29T15:04:05.000000007Z");
        assert_eq!(kitchen(t), "3:04PM");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(kitchen(UNIX_EPOCH), "12:00AM");
        assert_eq!(rfc3339_go(t), "2024-02-29T15:04:05.000000007Z");
        assert_eq!(
            rfc3339_go(UNIX_EPOCH + Duration::new(1_709_219_045, 120_000_000)),
            "2024-02-29T15:04:05.12Z"
        );
        assert_eq!(rfc3339_go(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_seconds(t), "2024-02-29T15:04:05Z");
    }
}
