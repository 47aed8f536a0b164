//! Upgrade plans: `data/upgrade-info.json` as the SDK's upgrade module
//! writes it, and the `UPGRADE "name" NEEDED at height: N: info` line that
//! older SDK versions only printed.
//!
//! Pure parsing, no I/O: a bad plan is an error value that the caller
//! reports, never a panic. A half-written file is distinguished from a
//! wrong one so the watcher can retry the first and report the second.

use std::sync::LazyLock;

use regex::Regex;
use serde::Deserialize;

/// An upgrade plan, whichever way it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradePlan {
    /// The name exactly as the chain gave it (recasing happens when the
    /// directory name is derived).
    pub name: String,
    /// The height at which the upgrade takes effect; `None` only for the
    /// legacy time-based line.
    pub height: Option<u64>,
    /// The plan's free-form info (JSON with `binaries`, a URL, or text).
    pub info: String,
}

/// Why a plan could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The file is empty or ends mid-document: probably still being
    /// written. Retry later.
    #[error("upgrade-info.json is empty or incomplete (still being written?)")]
    Incomplete,
    /// The file is complete but not a usable plan.
    #[error("upgrade-info.json is not a valid upgrade plan: {0}")]
    Invalid(String),
}

#[derive(Deserialize)]
struct PlanFile {
    name: String,
    // The SDK writes an integer; accept a decimal string too, as JSON
    // encoders for int64 sometimes produce one.
    height: HeightValue,
    #[serde(default)]
    info: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum HeightValue {
    Number(i64),
    Text(String),
}

/// Parse the contents of `upgrade-info.json`.
pub fn parse_upgrade_info(bytes: &[u8]) -> Result<UpgradePlan, PlanError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(PlanError::Incomplete);
    }
    let file: PlanFile = serde_json::from_slice(bytes).map_err(|error| {
        if error.is_eof() {
            PlanError::Incomplete
        } else {
            PlanError::Invalid(error.to_string())
        }
    })?;
    if file.name.trim().is_empty() {
        return Err(PlanError::Invalid("name is empty".into()));
    }
    let height = match file.height {
        HeightValue::Number(height) => height,
        HeightValue::Text(text) => text
            .trim()
            .parse::<i64>()
            .map_err(|_| PlanError::Invalid(format!("height {text:?} is not an integer")))?,
    };
    if height <= 0 {
        return Err(PlanError::Invalid(format!(
            "height {height} must be positive"
        )));
    }
    Ok(UpgradePlan {
        name: file.name,
        height: Some(height as u64),
        info: file.info,
    })
}

/// Both historical forms: `NEEDED at height 123: info` (the original
/// Cosmovisor spec) and `NEEDED at height: 123: info` (every SDK since),
/// plus the short-lived time-based form.
///
/// Anchored: the message must be the whole log message (issue 16, finding
/// 10), so a line that merely quotes one (a transaction memo, a peer's
/// moniker, an echoed command) is not an upgrade.
static UPGRADE_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"^UPGRADE "(.*)" NEEDED at (?:height:? (\d+)|time: (\S+)):\s*(.*)$"#)
        .expect("static regex")
});

/// What precedes the message on a console line, as the loggers print it at
/// error level (the SDK logs the upgrade message with `Error`):
/// zerolog's `3:04PM ERR ` (any time format, or none), and the Tendermint
/// logger's `E[2021-05-18|12:00:00.123] `. Nothing else may come first.
static CONSOLE_PREFIX: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"^(?:(?:\S+ +)?(?:ERR|ERROR|error) +|E\[[^\]]*\] +)?"#).expect("static regex")
});

static ANSI_ESCAPE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\x1b\[[0-9;]*[A-Za-z]").expect("static regex"));

/// Parse an output line; `None` when it is not an upgrade line. Three
/// forms, as the SDK writes them (`x/upgrade/keeper/abci.go` logs the
/// message at error level through its logger):
/// - plain console text, with logger fields after the message;
/// - the console format coloured with ANSI escapes (gaiad's default on a
///   terminal, unless `--log_no_color`);
/// - `log_format = "json"`: one JSON object whose message field (zerolog's
///   `message`, older Tendermint-logger `_msg`, or `msg`) holds the text with
///   its quotes escaped.
pub fn parse_upgrade_line(line: &str) -> Option<UpgradePlan> {
    let line = line.trim_end_matches(['\n', '\r']);
    if let Some(message) = json_log_message(line) {
        // Inside a JSON message nothing follows the info: take all of it.
        return parse_message(&message, InfoExtent::Rest);
    }
    let cleaned;
    let line = if line.contains('\x1b') {
        cleaned = ANSI_ESCAPE.replace_all(line, "");
        cleaned.as_ref()
    } else {
        line
    };
    let prefix = CONSOLE_PREFIX.find(line).map_or(0, |found| found.end());
    parse_message(&line[prefix..], InfoExtent::FirstValue)
}

/// How much of the text after the height is the plan's info.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InfoExtent {
    /// All of it (a JSON log message).
    Rest,
    /// One JSON value or one token: console lines go on with the logger's
    /// `key=value` fields.
    FirstValue,
}

/// The message of a JSON log line, if `line` is one.
fn json_log_message(line: &str) -> Option<String> {
    let trimmed = line.trim_start();
    if !trimmed.starts_with('{') {
        return None;
    }
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(trimmed).ok()?;
    // The SDK logs the upgrade message at error level.
    if let Some(level) = object.get("level")
        && !level
            .as_str()
            .is_some_and(|level| level.eq_ignore_ascii_case("error"))
    {
        return None;
    }
    ["message", "_msg", "msg"]
        .iter()
        .find_map(|field| object.get(*field)?.as_str().map(str::to_owned))
}

fn parse_message(text: &str, extent: InfoExtent) -> Option<UpgradePlan> {
    let captures = UPGRADE_LINE.captures(text)?;
    let name = captures.get(1)?.as_str().to_string();
    if name.is_empty() {
        return None;
    }
    let height = match captures.get(2) {
        Some(height) => Some(height.as_str().parse::<u64>().ok()?),
        None => None,
    };
    let rest = captures.get(4).map(|m| m.as_str()).unwrap_or("").trim();
    let info = match extent {
        InfoExtent::Rest => rest.to_string(),
        InfoExtent::FirstValue => leading_info(rest),
    };
    Some(UpgradePlan { name, height, info })
}

/// The info is whatever follows the height. Log lines carry trailing
/// key=value fields, so take a complete JSON value when the info starts
/// with one, otherwise the first whitespace-delimited token.
fn leading_info(rest: &str) -> String {
    if rest.starts_with('{') || rest.starts_with('"') {
        let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<serde_json::Value>();
        if let Some(Ok(_)) = stream.next() {
            return rest[..stream.byte_offset()].to_string();
        }
    }
    let token = rest.split_whitespace().next().unwrap_or("");
    // An empty info leaves the first logger field (`module=x/upgrade`)
    // right after the height: that is not the plan's info.
    if is_logger_field(token) {
        return String::new();
    }
    token.to_string()
}

/// `key=value` as the console logger prints its fields (a lower-case key).
fn is_logger_field(token: &str) -> bool {
    token.split_once('=').is_some_and(|(key, _)| {
        !key.is_empty()
            && key
                .bytes()
                .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, height, info) of an expected plan.
    type Expected<'a, H> = (&'a str, H, &'a str);

    #[test]
    fn upgrade_info_files() {
        let cases: &[(&str, Result<Expected<u64>, &str>)] = &[
            (
                r#"{"name":"v2","height":100,"info":"x"}"#,
                Ok(("v2", 100, "x")),
            ),
            (r#"{"name":"V2","height":"100"}"#, Ok(("V2", 100, ""))),
            (
                r#"{"name":"v2","time":"0001-01-01T00:00:00Z","height":7,"info":"{\"binaries\":{}}","upgraded_client_state":null}"#,
                Ok(("v2", 7, r#"{"binaries":{}}"#)),
            ),
            ("", Err("incomplete")),
            ("   \n", Err("incomplete")),
            (r#"{"name":"v2","hei"#, Err("incomplete")),
            (r#"{"name":"","height":1}"#, Err("name is empty")),
            (r#"{"name":"v2","height":0}"#, Err("must be positive")),
            (r#"{"name":"v2","height":-5}"#, Err("must be positive")),
            (r#"{"name":"v2","height":"ten"}"#, Err("not an integer")),
            (r#"{"height":3}"#, Err("missing field `name`")),
            (r#"[1,2]"#, Err("invalid type")),
            ("not json", Err("expected")),
        ];
        for (input, expected) in cases {
            let got = parse_upgrade_info(input.as_bytes());
            match (expected, got) {
                (Ok((name, height, info)), Ok(plan)) => {
                    assert_eq!(plan.name, *name, "{input}");
                    assert_eq!(plan.height, Some(*height), "{input}");
                    assert_eq!(plan.info, *info, "{input}");
                }
                (Err("incomplete"), Err(PlanError::Incomplete)) => {}
                (Err(needle), Err(PlanError::Invalid(message))) => {
                    assert!(message.contains(needle), "{input}: {message}");
                }
                (expected, got) => panic!("{input}: expected {expected:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn upgrade_lines() {
        let cases: &[(&str, Option<Expected<Option<u64>>>)] = &[
            (
                r#"UPGRADE "v2" NEEDED at height: 100: {"binaries":{"any":"http://x"}}"#,
                Some(("v2", Some(100), r#"{"binaries":{"any":"http://x"}}"#)),
            ),
            (
                r#"UPGRADE "Chain-V3" NEEDED at height 55: https://example.com/info.json"#,
                Some(("Chain-V3", Some(55), "https://example.com/info.json")),
            ),
            (
                r#"3:04PM ERR UPGRADE "v2" NEEDED at height: 12: {"binaries":{"a b":"c"}} module=x/upgrade"#,
                Some(("v2", Some(12), r#"{"binaries":{"a b":"c"}}"#)),
            ),
            (
                "\x1b[31mERR\x1b[0m UPGRADE \"v2\" NEEDED at height: 9: \x1b[36mmodule=\x1b[0mx/upgrade",
                Some(("v2", Some(9), "")),
            ),
            (
                "\x1b[90m3:04PM\x1b[0m \x1b[31mERR\x1b[0m UPGRADE \"v2\" NEEDED at height: 9: https://x/info.json \x1b[36mmodule=\x1b[0mx/upgrade",
                Some(("v2", Some(9), "https://x/info.json")),
            ),
            (
                r#"{"level":"error","module":"x/upgrade","time":"2026-12-06T10:00:00Z","message":"UPGRADE \"v2\" NEEDED at height: 50: {\"binaries\":{\"linux/amd64\":\"https://x/g?checksum=sha256:ab\"}}"}"#,
                Some((
                    "v2",
                    Some(50),
                    r#"{"binaries":{"linux/amd64":"https://x/g?checksum=sha256:ab"}}"#,
                )),
            ),
            (
                r#"{"level":"error","module":"x/upgrade","message":"UPGRADE \"v3 beta\" NEEDED at height: 7: some text with spaces"}"#,
                Some(("v3 beta", Some(7), "some text with spaces")),
            ),
            (
                r#"{"level":"error","_msg":"UPGRADE \"v4\" NEEDED at height: 8: "}"#,
                Some(("v4", Some(8), "")),
            ),
            (r#"{"level":"info","message":"committed state"}"#, None),
            (r#"{"message": 5}"#, None),
            (
                r#"UPGRADE "v4" NEEDED at height: 77:"#,
                Some(("v4", Some(77), "")),
            ),
            (
                r#"UPGRADE "t1" NEEDED at time: 2021-01-01T00:00:00Z: info"#,
                Some(("t1", None, "info")),
            ),
            (r#"UPGRADE "" NEEDED at height: 7: x"#, None),
            // Anchored (issue 16, finding 10): output that only quotes an
            // upgrade message is not one.
            (
                r#"2:03PM INF received tx memo="UPGRADE \"v9\" NEEDED at height: 5: x" module=mempool"#,
                None,
            ),
            (
                r#"2:03PM INF UPGRADE "v9" NEEDED at height: 5: x module=x/upgrade"#,
                None,
            ),
            (r#"peer moniker UPGRADE "v9" NEEDED at height: 5: x"#, None),
            (
                r#"{"level":"info","module":"x/upgrade","message":"UPGRADE \"v9\" NEEDED at height: 5: x"}"#,
                None,
            ),
            (
                r#"{"level":"error","message":"peer said: UPGRADE \"v9\" NEEDED at height: 5: x"}"#,
                None,
            ),
            (
                "\x1b[90m2:03PM\x1b[0m \x1b[32mINF\x1b[0m UPGRADE \"v9\" NEEDED at height: 5: x",
                None,
            ),
            ("committed state height=100 module=state", None),
            (r#"UPGRADE "v2" NEEDED at height: abc: x"#, None),
        ];
        for (line, expected) in cases {
            let got = parse_upgrade_line(line);
            match expected {
                Some((name, height, info)) => {
                    let plan = got.unwrap_or_else(|| panic!("no match: {line}"));
                    assert_eq!(plan.name, *name, "{line}");
                    assert_eq!(plan.height, *height, "{line}");
                    assert_eq!(plan.info, *info, "{line}");
                }
                None => assert_eq!(got, None, "{line}"),
            }
        }
    }
}
