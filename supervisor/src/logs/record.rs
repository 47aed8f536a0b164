//! One log line as it is written into a segment (pure).
//!
//! JSON (`logs.format = "json"`, the default), one object per line, keys in
//! this order:
//!
//! ```json
//! {"ts":"2026-12-07T08:13:35.123Z","stream":"stdout","level":"info","source":"gaiad","msg":"committed state height=5"}
//! ```
//!
//! - `ts`: when the supervisor read the line (RFC 3339, UTC, milliseconds);
//!   gaiad's lines of one read share it.
//! - `stream`: `stdout`, `stderr` (gaiad) or `supervisor`.
//! - `level`: the supervisor's event level; for gaiad, the level its line
//!   states ([`daemon_level`]: the SDK's console tag `INF`, `WRN`, … or a
//!   JSON line's `"level"`), or `null` when it states none.
//! - `source`: `gaiad` (the daemon, whatever its binary is called) or
//!   `supervisor`.
//! - `msg`: the line as written (invalid UTF-8 replaced), without its
//!   newline.
//!
//! Text (`logs.format = "text"`): `<ts> <source> <stream> <level or -> <msg>`.

use crate::config::LogFormat;

/// The level a gaiad line states, lower-case, if any: the Cosmos SDK's
/// console tag (`3:04PM INF msg`, also coloured) or a JSON line's
/// `"level":"…"` (zerolog). Looks at the line's start only.
pub fn daemon_level(line: &[u8]) -> Option<&'static str> {
    let head = &line[..line.len().min(96)];
    if head.first() == Some(&b'{') {
        let at = memchr::memmem::find(head, b"\"level\":\"")? + 9;
        let end = at + memchr::memchr(b'"', &head[at..])?;
        return match &head[at..end] {
            b"trace" => Some("trace"),
            b"debug" => Some("debug"),
            b"info" => Some("info"),
            b"warn" => Some("warn"),
            b"error" => Some("error"),
            b"fatal" => Some("fatal"),
            b"panic" => Some("panic"),
            _ => None,
        };
    }
    let head = &head[..head.len().min(40)];
    for (tag, level) in [
        (&b"INF"[..], "info"),
        (b"WRN", "warn"),
        (b"ERR", "error"),
        (b"DBG", "debug"),
        (b"FTL", "fatal"),
        (b"TRC", "trace"),
    ] {
        for at in memchr::memmem::find_iter(head, tag) {
            // A word of its own: after a space or a colour code's `m`,
            // before a space or an escape.
            let before = at.checked_sub(1).map(|i| head[i]);
            let after = head.get(at + 3).copied();
            if matches!(before, Some(b' ') | Some(b'm'))
                && matches!(after, Some(b' ') | Some(0x1b) | None)
            {
                return Some(level);
            }
        }
    }
    None
}

/// Append one record for `msg` (without its newline) to `out`.
pub fn format_record(
    out: &mut Vec<u8>,
    format: LogFormat,
    ts: &str,
    stream: &str,
    level: Option<&str>,
    source: &str,
    msg: &[u8],
) {
    let msg = msg.strip_suffix(b"\r").unwrap_or(msg);
    let text = String::from_utf8_lossy(msg);
    match format {
        LogFormat::Json => {
            out.extend_from_slice(b"{\"ts\":\"");
            out.extend_from_slice(ts.as_bytes());
            out.extend_from_slice(b"\",\"stream\":\"");
            out.extend_from_slice(stream.as_bytes());
            out.extend_from_slice(b"\",\"level\":");
            match level {
                Some(level) => {
                    out.push(b'"');
                    out.extend_from_slice(level.as_bytes());
                    out.push(b'"');
                }
                None => out.extend_from_slice(b"null"),
            }
            out.extend_from_slice(b",\"source\":\"");
            out.extend_from_slice(source.as_bytes());
            out.extend_from_slice(b"\",\"msg\":");
            serde_json::to_writer(&mut *out, text.as_ref()).expect("writing to a Vec");
            out.extend_from_slice(b"}\n");
        }
        LogFormat::Text => {
            for part in [ts, " ", source, " ", stream, " ", level.unwrap_or("-"), " "] {
                out.extend_from_slice(part.as_bytes());
            }
            out.extend_from_slice(text.as_bytes());
            out.push(b'\n');
        }
    }
}

/// RFC 3339, UTC, milliseconds: `2026-12-07T08:13:35.123Z`.
pub(crate) fn timestamp(at: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_read_from_console_and_json_lines() {
        let rows: &[(&[u8], Option<&str>)] = &[
            (b"3:04PM INF committed state height=5", Some("info")),
            (b"3:04PM ERR failed", Some("error")),
            (
                b"\x1b[90m3:04PM\x1b[0m \x1b[33mWRN\x1b[0m slow",
                Some("warn"),
            ),
            (b"3:04PM DBG flood n=1", Some("debug")),
            (
                b"{\"level\":\"error\",\"module\":\"server\",\"message\":\"x\"}",
                Some("error"),
            ),
            (b"{\"level\":\"loud\"}", None),
            (b"INFO starting", None),
            (b"plain output", None),
            (b"", None),
            (b"something INFORMATIVE", None),
        ];
        for (line, level) in rows {
            assert_eq!(
                daemon_level(line),
                *level,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn records_have_the_documented_shape() {
        let mut out = Vec::new();
        format_record(
            &mut out,
            LogFormat::Json,
            "2026-12-07T08:13:35.123Z",
            "stdout",
            Some("info"),
            "gaiad",
            b"quote \" and \\ and \x01\r",
        );
        format_record(
            &mut out,
            LogFormat::Json,
            "2026-12-07T08:13:35.123Z",
            "stderr",
            None,
            "gaiad",
            b"bad \xff utf8",
        );
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            r#"{"ts":"2026-12-07T08:13:35.123Z","stream":"stdout","level":"info","source":"gaiad","msg":"quote \" and \\ and \u0001"}"#
        );
        for line in &lines {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(value["source"], "gaiad");
        }
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(lines[1]).unwrap()["level"],
            serde_json::Value::Null
        );
        let mut out = Vec::new();
        format_record(
            &mut out,
            LogFormat::Text,
            "2026-12-07T08:13:35.123Z",
            "supervisor",
            Some("warn"),
            "supervisor",
            b"tunnel down",
        );
        assert_eq!(
            out,
            b"2026-12-07T08:13:35.123Z supervisor supervisor warn tunnel down\n"
        );
        assert_eq!(
            timestamp(std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_500)),
            "1970-01-01T00:00:01.500Z"
        );
    }
}
