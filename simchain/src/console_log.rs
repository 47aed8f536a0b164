//! CometBFT-style console log lines: `3:04PM INF committed state height=100 module=state`.
//!
//! Writes never panic: a closed or full pipe must not crash the process (a supervisor that
//! stops reading is its own problem). Values containing spaces or quotes are quoted.

use std::fmt::Display;
use std::io::Write;
use std::time::SystemTime;

use crate::clock::kitchen;

/// Log level, printed as CometBFT's three-letter tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// `DBG`
    Debug,
    /// `INF`
    Info,
    /// `ERR`
    Error,
}

impl Level {
    fn tag(self) -> &'static str {
        match self {
            Level::Debug => "DBG",
            Level::Info => "INF",
            Level::Error => "ERR",
        }
    }
}

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// Standard output (what CometBFT uses).
    Stdout,
    /// Standard error.
    Stderr,
}

/// Formats one line (without the trailing newline).
pub fn format_line(level: Level, message: &str, fields: &[(&str, &dyn Display)]) -> String {
    let mut line = format!("{} {} {}", kitchen(SystemTime::now()), level.tag(), message);
    for (key, value) in fields {
        let value = value.to_string();
        if value.is_empty() || value.contains([' ', '"', '=']) {
            line.push_str(&format!(" {key}={value:?}"));
        } else {
            line.push_str(&format!(" {key}={value}"));
        }
    }
    line
}

/// Writes one line to `sink`, ignoring write errors.
pub fn log(sink: Sink, level: Level, message: &str, fields: &[(&str, &dyn Display)]) {
    let mut line = format_line(level, message, fields);
    line.push('\n');
    match sink {
        Sink::Stdout => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(line.as_bytes());
            let _ = out.flush();
        }
        Sink::Stderr => {
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_follow_cometbft_console_format() {
        let line = format_line(
            Level::Info,
            "committed state",
            &[("height", &100), ("module", &"state"), ("err", &"a b")],
        );
        let (time, rest) = line.split_once(' ').unwrap();
        assert!(time.ends_with("AM") || time.ends_with("PM"), "{time}");
        assert_eq!(
            rest,
            r#"INF committed state height=100 module=state err="a b""#
        );
    }
}
