//! Log lines as gaiad writes them (the node, on stdout) and plain lines for `simchain-net` (on
//! stderr).
//!
//! gaiad (Cosmos SDK v0.50) logs through `cosmossdk.io/log`, a zerolog wrapper
//! (`log/logger.go`: `NewLogger`). `server/util.go` `CreateSDKLogger` picks the form from
//! `log_format` (`config.toml` or `--log_format`) and `log_no_color`:
//!
//! - **plain** (the default): zerolog's `ConsoleWriter` (rs/zerolog v1.33 `console.go`, the
//!   version `cosmossdk.io/log` v1.4 uses), coloured unless `--log_no_color`:
//!   `3:04PM INF committed state app_hash=AB height=5 module=state server=node`. The timestamp
//!   is kitchen time, then the level (`DBG`, `INF`, `WRN`, `ERR`), the message, then the fields
//!   **sorted by name** (an `error` field first). A string value is quoted (Go's
//!   `strconv.Quote`) only when it holds a space, a quote, a backslash or a byte outside
//!   printable ASCII (`needsQuote`); an empty value prints as `key=`. Colours: the time dark grey
//!   (`ESC[90m`), the level green/yellow/red (`DBG` uncoloured), the message **bold** for info and
//!   above, field names cyan (`ESC[36m`). The `NO_COLOR` environment variable also turns colour
//!   off (zerolog's `colorize`).
//! - **json**: one zerolog object per line, keys in the order zerolog appends them — `level`,
//!   the logger's context fields, the call's fields, `time` (RFC 3339, seconds), `message`:
//!   `{"level":"error","module":"server","module":"baseapp","module":"x/upgrade","time":"2024-05-01T12:00:00Z","message":"UPGRADE \"v2\" NEEDED at height: 50: "}`.
//!
//! The context fields are the loggers' `With(...)` chain, which zerolog never de-duplicates
//! (`context.go`): every SDK logger descends from `svrCtx.Logger` (`module=server`,
//! `server/util.go` `InterceptConfigsPreRunHandler`); CometBFT's loggers add `server=node`
//! (`server/start.go`) and their own `module`; application modules go through BaseApp
//! (`module=baseapp`, `baseapp/baseapp.go` `NewBaseApp`) and their keeper's `Logger`
//! (`module=x/upgrade`). So a JSON line can carry `module` three times; the console writer
//! decodes the object into a map first, so the last one wins there. [`log`] derives that chain
//! from the `module` field a call passes (see [`Origin`]).
//!
//! Writes never panic: a closed or full pipe must not crash the process (a supervisor that
//! stops reading is its own problem).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use crate::clock::{kitchen, rfc3339_seconds};

/// Log level, printed as zerolog's three-letter tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// `DBG`
    Debug,
    /// `INF`
    Info,
    /// `WRN`
    Warn,
    /// `ERR`
    Error,
}

impl Level {
    fn tag(self) -> &'static str {
        match self {
            Level::Debug => "DBG",
            Level::Info => "INF",
            Level::Warn => "WRN",
            Level::Error => "ERR",
        }
    }

    /// zerolog's level value in JSON (`LevelFieldMarshalFunc`).
    fn name(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }

    /// zerolog's `LevelColors` (v1.33 `globals.go`): debug is not coloured.
    fn color(self) -> u8 {
        match self {
            Level::Debug => 0,
            Level::Info => COLOR_GREEN,
            Level::Warn => COLOR_YELLOW,
            Level::Error => COLOR_RED,
        }
    }
}

const COLOR_RED: u8 = 31;
const COLOR_GREEN: u8 = 32;
const COLOR_YELLOW: u8 = 33;
const COLOR_CYAN: u8 = 36;
const COLOR_BOLD: u8 = 1;
const COLOR_DARK_GRAY: u8 = 90;

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// Standard output: the node's log, in the configured [`LogFormat`] (gaiad logs to stdout,
    /// `cmd.OutOrStdout()` in `server/util.go`).
    Stdout,
    /// Standard error: `simchain-net`'s own log, always plain and uncoloured.
    Stderr,
}

/// How the node writes its log: `log_format` and `log_no_color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// zerolog's console writer.
    Plain {
        /// ANSI colours (the SDK's default; off with `log_no_color` or `NO_COLOR`).
        color: bool,
    },
    /// zerolog's JSON lines.
    Json,
}

static NODE_FORMAT: OnceLock<LogFormat> = OnceLock::new();
static NODE_DEBUG: AtomicBool = AtomicBool::new(false);

/// Sets the node's log format and whether debug lines are written (`log_level` debug or
/// trace). The first call wins; before it the node logs plain and uncoloured.
pub fn configure_node_log(format: LogFormat, debug: bool) {
    let _ = NODE_FORMAT.set(format);
    NODE_DEBUG.store(debug, Ordering::Relaxed);
}

fn node_format() -> LogFormat {
    NODE_FORMAT
        .get()
        .copied()
        .unwrap_or(LogFormat::Plain { color: false })
}

/// A field value as zerolog encodes it: strings quoted in JSON, numbers and booleans bare.
#[derive(Debug, Clone, PartialEq)]
pub enum Rendered {
    /// A string.
    Text(String),
    /// A number, already formatted (a JSON number literal).
    Number(String),
    /// A boolean.
    Bool(bool),
    /// Any other value, as its JSON text (zerolog marshals slices and maps to JSON, and the
    /// console writer prints that text).
    Json(String),
}

impl Rendered {
    fn console(&self) -> String {
        match self {
            Rendered::Text(text) if needs_quote(text) => go_quote(text),
            Rendered::Text(text) => text.clone(),
            Rendered::Number(number) => number.clone(),
            Rendered::Bool(value) => value.to_string(),
            Rendered::Json(json) => json.clone(),
        }
    }

    fn json(&self, out: &mut String) {
        match self {
            Rendered::Text(text) => json_string(out, text),
            Rendered::Number(number) => out.push_str(number),
            Rendered::Bool(value) => out.push_str(if *value { "true" } else { "false" }),
            Rendered::Json(json) => out.push_str(json),
        }
    }
}

/// A value that can be logged as a field.
pub trait LogValue {
    /// The value as zerolog would encode it.
    fn render(&self) -> Rendered;
}

impl<T: LogValue + ?Sized> LogValue for &T {
    fn render(&self) -> Rendered {
        (**self).render()
    }
}

macro_rules! numbers {
    ($($t:ty),*) => {$(
        impl LogValue for $t {
            fn render(&self) -> Rendered {
                Rendered::Number(self.to_string())
            }
        }
    )*};
}
numbers!(u8, u16, u32, u64, usize, i32, i64);

macro_rules! texts {
    ($($t:ty),*) => {$(
        impl LogValue for $t {
            fn render(&self) -> Rendered {
                Rendered::Text(self.to_string())
            }
        }
    )*};
}
texts!(
    str,
    String,
    std::net::SocketAddr,
    std::net::IpAddr,
    std::io::Error,
    anyhow::Error,
    std::path::Display<'_>
);

impl LogValue for bool {
    fn render(&self) -> Rendered {
        Rendered::Bool(*self)
    }
}

/// zerolog writes a `time.Duration` as a number of milliseconds (`DurationFieldUnit`, not
/// an integer: `DurationFieldInteger` is false).
impl LogValue for std::time::Duration {
    fn render(&self) -> Rendered {
        let ms = self.as_secs_f64() * 1000.0;
        Rendered::Number(if ms.fract() == 0.0 {
            format!("{ms:.0}")
        } else {
            format!("{ms}")
        })
    }
}

/// Fields of one line: `&[("height", &height), ("module", &"state")]`.
pub type Fields<'a> = [(&'a str, &'a dyn LogValue)];

/// Which logger a node line comes from, derived from its `module` field: that decides the
/// context fields the SDK's logger chain puts in front (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The SDK server itself (`module=server`): no `module` field given.
    Server,
    /// A CometBFT module (`module=server server=node module=<m>`).
    Comet(String),
    /// An application module through BaseApp (`module=server module=baseapp module=x/<m>`).
    App(String),
}

impl Origin {
    fn of(fields: &Fields<'_>) -> Self {
        let module = fields
            .iter()
            .find(|(key, _)| *key == "module")
            .map(|(_, v)| match v.render() {
                Rendered::Text(text) => text,
                other => other.console(),
            });
        match module {
            None => Origin::Server,
            Some(m) if m.starts_with("x/") => Origin::App(m),
            Some(m) => Origin::Comet(m),
        }
    }

    fn context(&self) -> Vec<(&'static str, String)> {
        match self {
            Origin::Server => vec![("module", "server".into())],
            Origin::Comet(m) => vec![
                ("module", "server".into()),
                ("server", "node".into()),
                ("module", m.clone()),
            ],
            Origin::App(m) => vec![
                ("module", "server".into()),
                ("module", "baseapp".into()),
                ("module", m.clone()),
            ],
        }
    }
}

/// One node line in the configured format (without the newline). The `module` field, if any,
/// becomes the logger context (see [`Origin`]).
pub fn format_node_line(level: Level, message: &str, fields: &Fields<'_>) -> String {
    let origin = Origin::of(fields);
    let context = origin.context();
    let rest: Vec<(&str, Rendered)> = fields
        .iter()
        .filter(|(key, _)| *key != "module")
        .map(|(key, value)| (*key, value.render()))
        .collect();
    let context: Vec<(&str, Rendered)> = context
        .into_iter()
        .map(|(key, value)| (key, Rendered::Text(value)))
        .collect();
    match node_format() {
        LogFormat::Json => format_json(level, message, &context, &rest, SystemTime::now()),
        LogFormat::Plain { color } => {
            let color = color && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            format_console(level, message, &context, &rest, color, SystemTime::now())
        }
    }
}

/// One plain, uncoloured line with the fields as given (simchain-net's own log).
pub fn format_line(level: Level, message: &str, fields: &Fields<'_>) -> String {
    let rendered: Vec<(&str, Rendered)> = fields
        .iter()
        .map(|(key, value)| (*key, value.render()))
        .collect();
    format_console(level, message, &[], &rendered, false, SystemTime::now())
}

/// zerolog `ConsoleWriter.Write`: the event is decoded into a map (so a repeated key keeps its
/// last value), then printed as time, level, message and the remaining fields sorted by name
/// with `error` moved to the front.
pub fn format_console(
    level: Level,
    message: &str,
    context: &[(&str, Rendered)],
    fields: &[(&str, Rendered)],
    color: bool,
    now: SystemTime,
) -> String {
    let paint = |text: &str, code: u8| -> String {
        if color && code != 0 {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    };
    let mut parts = vec![
        paint(&kitchen(now), COLOR_DARK_GRAY),
        paint(level.tag(), level.color()),
    ];
    if !message.is_empty() {
        // consoleDefaultFormatMessage: bold at info and above.
        parts.push(if level == Level::Debug {
            message.to_string()
        } else {
            paint(message, COLOR_BOLD)
        });
    }
    let mut line = parts.join(" ");
    let mut map: BTreeMap<&str, &Rendered> = BTreeMap::new();
    for (key, value) in context.iter().chain(fields) {
        map.insert(key, value);
    }
    let mut names: Vec<&str> = map.keys().copied().collect();
    if let Some(position) = names.iter().position(|name| *name == "error") {
        let error = names.remove(position);
        names.insert(0, error);
    }
    if !names.is_empty() {
        line.push(' ');
    }
    let formatted: Vec<String> = names
        .iter()
        .map(|name| {
            let value = map[name].console();
            let value = if *name == "error" && color {
                // consoleDefaultFormatErrFieldValue: bold, then red.
                format!("\x1b[{COLOR_RED}m\x1b[{COLOR_BOLD}m{value}\x1b[0m\x1b[0m")
            } else {
                value
            };
            format!("{}{value}", paint(&format!("{name}="), COLOR_CYAN))
        })
        .collect();
    line.push_str(&formatted.join(" "));
    line
}

/// zerolog's JSON event: `level`, context, fields, `time`, `message` (omitted when empty).
pub fn format_json(
    level: Level,
    message: &str,
    context: &[(&str, Rendered)],
    fields: &[(&str, Rendered)],
    now: SystemTime,
) -> String {
    let mut out = String::with_capacity(128);
    out.push_str("{\"level\":");
    json_string(&mut out, level.name());
    for (key, value) in context.iter().chain(fields) {
        out.push(',');
        json_string(&mut out, key);
        out.push(':');
        value.json(&mut out);
    }
    out.push_str(",\"time\":");
    json_string(&mut out, &rfc3339_seconds(now));
    if !message.is_empty() {
        out.push_str(",\"message\":");
        json_string(&mut out, message);
    }
    out.push('}');
    out
}

/// zerolog's JSON string encoding (`internal/json/string.go`): `"` and `\` escaped, `\b \f \n
/// \r \t` short, other bytes below 0x20 and 0x7f as `\u00xx`; everything else as UTF-8.
pub fn json_string(out: &mut String, text: &str) {
    escaped_json_string(out, text, |c| c == '\u{7f}');
}

/// A JSON string as Go-family encoders write it: `"` and `\` escaped, `\b \f \n \r \t`
/// short, other control bytes and every character `also_escape` names as `\u00xx`. The two
/// encoders the simulated node imitates differ only in that set: zerolog ([`json_string`])
/// and Go's `encoding/json` ([`crate::upgrade::go_json_string`]).
pub(crate) fn escaped_json_string(
    out: &mut String,
    text: &str,
    also_escape: impl Fn(char) -> bool,
) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || also_escape(c) => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// zerolog's `needsQuote`: a space, `"`, `\`, or a byte outside printable ASCII.
fn needs_quote(text: &str) -> bool {
    text.bytes()
        .any(|b| !(0x20..=0x7e).contains(&b) || b == b' ' || b == b'\\' || b == b'"')
}

/// Go's `strconv.Quote`: printable characters as they are, the usual short escapes, other
/// control bytes as `\xNN`, other non-printable characters as `\uNNNN`.
pub fn go_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() || (c.is_whitespace() && c != ' ') => {
                let code = c as u32;
                if code < 0x10000 {
                    let _ = write!(out, "\\u{code:04x}");
                } else {
                    let _ = write!(out, "\\U{code:08x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Writes one line to `sink`, ignoring write errors. Node debug lines are written only when
/// `log_level` asks for them (CometBFT's default `info` hides them).
pub fn log(sink: Sink, level: Level, message: &str, fields: &Fields<'_>) {
    match sink {
        Sink::Stdout => {
            if level == Level::Debug && !NODE_DEBUG.load(Ordering::Relaxed) {
                return;
            }
            let mut line = format_node_line(level, message, fields);
            line.push('\n');
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(line.as_bytes());
            let _ = out.flush();
        }
        Sink::Stderr => {
            let mut line = format_line(level, message, fields);
            line.push('\n');
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    // 2024-02-29T15:04:05Z
    fn at() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_709_219_045)
    }

    fn text(s: &str) -> Rendered {
        Rendered::Text(s.into())
    }

    #[test]
    fn plain_lines_follow_zerologs_console_writer() {
        let context = [
            ("module", text("server")),
            ("server", text("node")),
            ("module", text("state")),
        ];
        let fields = [
            ("height", Rendered::Number("100".into())),
            ("err", text("a b")),
            ("empty", text("")),
            ("eq", text("a=b")),
        ];
        assert_eq!(
            format_console(
                Level::Info,
                "committed state",
                &context,
                &fields,
                false,
                at()
            ),
            r#"3:04PM INF committed state empty= eq=a=b err="a b" height=100 module=state server=node"#
        );
        // The error field goes first; no message, no fields.
        assert_eq!(
            format_console(
                Level::Error,
                "x",
                &[],
                &[("b", text("1")), ("error", text("boom"))],
                false,
                at()
            ),
            "3:04PM ERR x error=boom b=1"
        );
        assert_eq!(
            format_console(Level::Debug, "", &[], &[], false, at()),
            "3:04PM DBG"
        );
    }

    #[test]
    fn coloured_lines_use_zerologs_codes() {
        let line = format_console(
            Level::Error,
            "UPGRADE \"v2\" NEEDED at height: 50: ",
            &[("module", text("x/upgrade"))],
            &[],
            true,
            at(),
        );
        assert_eq!(
            line,
            "\x1b[90m3:04PM\x1b[0m \x1b[31mERR\x1b[0m \x1b[1mUPGRADE \"v2\" NEEDED at height: 50: \x1b[0m \x1b[36mmodule=\x1b[0mx/upgrade"
        );
        let debug = format_console(Level::Debug, "d", &[], &[("k", text("v"))], true, at());
        assert_eq!(debug, "\x1b[90m3:04PM\x1b[0m DBG d \x1b[36mk=\x1b[0mv");
    }

    #[test]
    fn json_lines_keep_context_order_and_duplicates() {
        let context = [
            ("module", text("server")),
            ("module", text("baseapp")),
            ("module", text("x/upgrade")),
        ];
        let line = format_json(
            Level::Error,
            "UPGRADE \"v2\" NEEDED at height: 50: {\"a\":1}",
            &context,
            &[
                ("n", Rendered::Number("3".into())),
                ("ok", Rendered::Bool(true)),
            ],
            at(),
        );
        assert_eq!(
            line,
            r#"{"level":"error","module":"server","module":"baseapp","module":"x/upgrade","n":3,"ok":true,"time":"2024-02-29T15:04:05Z","message":"UPGRADE \"v2\" NEEDED at height: 50: {\"a\":1}"}"#
        );
        let mut out = String::new();
        json_string(&mut out, "a\u{1}\u{7f}\té");
        assert_eq!(out, "\"a\\u0001\\u007f\\té\"");
    }

    #[test]
    fn origins_follow_the_sdk_logger_chain() {
        assert_eq!(Origin::of(&[]), Origin::Server);
        assert_eq!(
            Origin::of(&[("module", &"x/upgrade")]),
            Origin::App("x/upgrade".into())
        );
        assert_eq!(
            Origin::of(&[("height", &1u64), ("module", &"p2p")]),
            Origin::Comet("p2p".into())
        );
    }

    #[test]
    fn go_quoting_matches_strconv_quote() {
        assert_eq!(go_quote("a b"), "\"a b\"");
        assert_eq!(go_quote("q\"\\"), "\"q\\\"\\\\\"");
        assert_eq!(go_quote("\u{0}\u{7}\n"), "\"\\x00\\a\\n\"");
        assert_eq!(go_quote("é\u{a0}"), "\"é\\u00a0\"");
        assert!(!needs_quote(""));
        assert!(!needs_quote("a=b"));
        assert!(needs_quote("é"));
    }

    #[test]
    fn durations_are_milliseconds() {
        assert_eq!(
            Duration::from_millis(1500).render(),
            Rendered::Number("1500".into())
        );
        assert_eq!(
            Duration::from_micros(1500).render(),
            Rendered::Number("1.5".into())
        );
    }
}
