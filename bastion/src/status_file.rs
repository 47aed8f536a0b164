//! The health status file: written by `run`, read by `status`.
//!
//! One JSON document (format [`FORMAT`]), replaced atomically after every
//! probe through `palisade_daemon::durable`: written to a temporary file in
//! the same directory (mode 0600), fsynced, renamed over the old one, and the
//! directory fsynced, so a reader sees either the previous or the new
//! document, never a mix. `run` removes it on a clean shutdown; a file that
//! has not been updated for a while ([`StatusReport::stale_after`]) belongs
//! to a daemon that is gone.
//!
//! ```json
//! {"format":1,"service":"palisade-bastion","version":"0.1.0","pid":4242,
//!  "started":"2025-06-01T10:00:00.000Z","updated":"2025-06-01T10:05:00.123Z",
//!  "interval_ms":10000,"timeout_ms":3000,
//!  "validators":[{"name":"val-a","socket":"/run/palisade-validators/val-a.sock",
//!    "state":"up","since":"…","last_checked":"…","last_error":null,
//!    "consecutive_failures":0,
//!    "supervisor":{"validator":"val-a","version":"0.1.0","protocol":1}}]}
//! ```

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use palisade_client::peer_text::clean;
use palisade_daemon::durable::{AtomicWrite, Existing};
use serde::{Deserialize, Serialize};

use crate::config::HealthCheckOptions;
use crate::health_state::{State, SupervisorIdentity, ValidatorHealth};

/// Version of the document's format.
pub const FORMAT: u32 = 1;
/// Value of [`StatusReport::service`].
pub const SERVICE: &str = "palisade-bastion";
/// Largest status file `status` reads.
pub const MAX_STATUS_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Slack added to the staleness bound for a busy or suspended machine.
const STALE_SLACK: Duration = Duration::from_secs(10);

/// The whole document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// [`FORMAT`].
    pub format: u32,
    /// [`SERVICE`].
    pub service: String,
    /// The daemon's release.
    pub version: String,
    /// The daemon's process id.
    pub pid: u32,
    /// When the daemon started (RFC 3339, UTC).
    pub started: String,
    /// When this document was written (RFC 3339, UTC).
    pub updated: String,
    /// `health.interval` in milliseconds.
    pub interval_ms: u64,
    /// `health.timeout` in milliseconds.
    pub timeout_ms: u64,
    /// In configuration order.
    pub validators: Vec<ValidatorStatus>,
}

/// One validator's entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatorStatus {
    pub name: String,
    pub socket: PathBuf,
    /// `unknown` (not checked yet), `up` or `down`.
    pub state: State,
    /// When the current state began (RFC 3339, UTC).
    pub since: String,
    /// When the last probe finished; null before the first.
    pub last_checked: Option<String>,
    /// The reason of the latest failed probe (kept after recovery; the
    /// state says whether it is current).
    pub last_error: Option<String>,
    /// Failed probes since the last success.
    pub consecutive_failures: u64,
    /// From the latest greeting (kept while down); null if never up.
    pub supervisor: Option<SupervisorIdentity>,
}

fn timestamp(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

impl StatusReport {
    /// The document for `table` at `now`.
    pub fn new(
        table: &[ValidatorHealth],
        options: &HealthCheckOptions,
        started: SystemTime,
        now: SystemTime,
    ) -> StatusReport {
        StatusReport {
            format: FORMAT,
            service: SERVICE.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
            started: timestamp(started),
            updated: timestamp(now),
            interval_ms: options.interval.as_millis() as u64,
            timeout_ms: options.timeout.as_millis() as u64,
            validators: table
                .iter()
                .map(|health| ValidatorStatus {
                    name: health.name.clone(),
                    socket: health.socket.clone(),
                    state: health.state,
                    since: timestamp(health.since),
                    last_checked: health.last_checked.map(timestamp),
                    last_error: health.last_error.as_ref().map(ToString::to_string),
                    consecutive_failures: health.consecutive_failures,
                    supervisor: health.supervisor.clone(),
                })
                .collect(),
        }
    }

    /// Older than this, the document belongs to a daemon that stopped
    /// updating it: three probe rounds plus some slack.
    pub fn stale_after(&self) -> Duration {
        let round = Duration::from_millis(self.interval_ms.saturating_add(self.timeout_ms));
        round.saturating_mul(3) + STALE_SLACK
    }

    /// How long ago the document was written, if that is longer than
    /// [`StatusReport::stale_after`].
    pub fn staleness(&self, now: SystemTime) -> Option<Duration> {
        let updated = humantime::parse_rfc3339(&self.updated).ok()?;
        let age = now.duration_since(updated).unwrap_or_default();
        (age > self.stale_after()).then_some(age)
    }

    /// Counts for the exit code.
    pub fn verdict(&self) -> Verdict {
        let count = |state: State| self.validators.iter().filter(|v| v.state == state).count();
        Verdict {
            total: self.validators.len(),
            up: count(State::Up),
            down: count(State::Down),
            unknown: count(State::Unknown),
        }
    }

    /// The human table `status` prints.
    pub fn render(&self, now: SystemTime) -> String {
        let ago = |text: &str| match humantime::parse_rfc3339(text) {
            Ok(time) => {
                let age = now.duration_since(time).unwrap_or_default();
                format!(
                    "{} ago",
                    humantime::format_duration(Duration::from_secs(age.as_secs()))
                )
            }
            Err(_) => text.to_string(),
        };
        let mut rows = vec![[
            "VALIDATOR".to_string(),
            "STATE".into(),
            "SINCE".into(),
            "CHECKED".into(),
            "FAILURES".into(),
            "SUPERVISOR".into(),
            "DETAIL".into(),
        ]];
        for validator in &self.validators {
            let supervisor = match &validator.supervisor {
                Some(identity) if identity.validator != validator.name => {
                    format!("{} (announces {:?})", identity.version, identity.validator)
                }
                Some(identity) => identity.version.clone(),
                None => "-".into(),
            };
            let detail = match validator.state {
                State::Down => validator.last_error.clone().unwrap_or_default(),
                State::Unknown => "not checked yet".into(),
                State::Up => String::new(),
            };
            // Cleaned where it entered (the greeting's parser), and again
            // here: the file may come from another build.
            let supervisor = clean(&supervisor);
            let detail = clean(&detail);
            rows.push([
                clean(&validator.name),
                validator.state.as_str().into(),
                clean(&ago(&validator.since)),
                clean(
                    &validator
                        .last_checked
                        .as_deref()
                        .map(ago)
                        .unwrap_or("-".into()),
                ),
                validator.consecutive_failures.to_string(),
                supervisor,
                detail,
            ]);
        }
        let mut widths = [0usize; 7];
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in &rows {
            let mut line = String::new();
            for (column, (cell, width)) in row.iter().zip(widths).enumerate() {
                if column + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:width$}  ");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        let verdict = self.verdict();
        let _ = writeln!(
            out,
            "{}/{} validators up; status written {} by palisade-bastion {} (pid {})",
            verdict.up,
            verdict.total,
            clean(&ago(&self.updated)),
            clean(&self.version),
            self.pid
        );
        out
    }
}

/// How many validators are in each state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub total: usize,
    pub up: usize,
    pub down: usize,
    pub unknown: usize,
}

impl Verdict {
    pub fn all_up(&self) -> bool {
        self.up == self.total
    }
}

/// Why the status file could not be used.
#[derive(Debug)]
pub enum StatusFileError {
    /// Missing or unreadable.
    Read { path: PathBuf, source: io::Error },
    /// Larger than [`MAX_STATUS_FILE_BYTES`].
    TooLarge { path: PathBuf },
    /// Not a status document of a format this release knows.
    Invalid { path: PathBuf, reason: String },
}

impl std::fmt::Display for StatusFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StatusFileError::Read { path, source } => write!(
                f,
                "cannot read status file {}: {source} (is `palisade-bastion run` running?)",
                path.display()
            ),
            StatusFileError::TooLarge { path } => write!(
                f,
                "status file {} is larger than {MAX_STATUS_FILE_BYTES} bytes",
                path.display()
            ),
            StatusFileError::Invalid { path, reason } => {
                write!(f, "status file {} is not valid: {reason}", path.display())
            }
        }
    }
}

impl std::error::Error for StatusFileError {}

/// Read and check the status file.
pub fn read(path: &Path) -> Result<StatusReport, StatusFileError> {
    let read_error = |source| StatusFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(MAX_STATUS_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_STATUS_FILE_BYTES {
        return Err(StatusFileError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    let invalid = |reason: String| StatusFileError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let report: StatusReport =
        serde_json::from_slice(&bytes).map_err(|error| invalid(error.to_string()))?;
    if report.service != SERVICE {
        return Err(invalid(format!(
            "written by {:?}, not {SERVICE}",
            report.service
        )));
    }
    if report.format != FORMAT {
        return Err(invalid(format!(
            "format {} (this release reads format {FORMAT})",
            report.format
        )));
    }
    Ok(report)
}

/// Create the status file's directory (mode 0700) when it is missing.
pub fn prepare_dir(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.exists() => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir),
        _ => Ok(()),
    }
}

/// Replace `path` with `bytes` atomically and durably, mode 0600.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    Ok(AtomicWrite::new(0o600, Existing::Replace).write(path, bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health_check::{DownReason, ProbeOutcome};
    use palisade_wire::rpc::Greeting;
    use std::os::unix::fs::PermissionsExt;

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seconds)
    }

    fn sample() -> StatusReport {
        let mut table = vec![
            ValidatorHealth::new("val-a", "/run/a.sock", at(0)),
            ValidatorHealth::new("val-b", "/run/b.sock", at(0)),
            ValidatorHealth::new("val-c", "/run/c.sock", at(0)),
        ];
        table[0].record(at(1), ProbeOutcome::Up(Greeting::new("val-a", "0.1.0")));
        table[1].record(at(1), ProbeOutcome::Down(DownReason::NoSocket));
        table[1].record(at(11), ProbeOutcome::Down(DownReason::NoSocket));
        let options = HealthCheckOptions::default();
        StatusReport::new(&table, &options, at(0), at(11))
    }

    #[test]
    fn the_document_has_every_field_and_round_trips() {
        let report = sample();
        let json = serde_json::to_value(&report).unwrap();
        let b = &json["validators"][1];
        assert_eq!(b["state"], "down");
        assert_eq!(b["since"], "2023-11-14T22:13:21.000Z");
        assert_eq!(b["last_checked"], "2023-11-14T22:13:31.000Z");
        assert_eq!(b["last_error"], "tunnel not established (no socket)");
        assert_eq!(b["consecutive_failures"], 2);
        assert_eq!(b["supervisor"], serde_json::Value::Null);
        assert_eq!(json["validators"][0]["supervisor"]["version"], "0.1.0");
        assert_eq!(json["validators"][2]["state"], "unknown");
        assert_eq!(json["interval_ms"], 10_000);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.json");
        write_atomic(&path, &serde_json::to_vec(&report).unwrap()).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(read(&path).unwrap(), report);
        // Replaced, not appended; no temporary file left.
        write_atomic(&path, &serde_json::to_vec(&report).unwrap()).unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn verdict_staleness_and_table() {
        let report = sample();
        let verdict = report.verdict();
        assert_eq!(
            verdict,
            Verdict {
                total: 3,
                up: 1,
                down: 1,
                unknown: 1
            }
        );
        assert!(!verdict.all_up());
        // Default 10 s + 3 s, three rounds plus 10 s of slack: 49 s.
        assert_eq!(report.stale_after(), Duration::from_secs(49));
        assert_eq!(report.staleness(at(60)), None);
        assert_eq!(report.staleness(at(61)), Some(Duration::from_secs(50)));

        let table = report.render(at(71));
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("VALIDATOR  STATE    SINCE"), "{table}");
        assert!(
            lines[1].starts_with("val-a      up       1m 10s ago"),
            "{table}"
        );
        assert!(
            lines[2].contains("down") && lines[2].ends_with("tunnel not established (no socket)"),
            "{table}"
        );
        assert!(lines[3].ends_with("not checked yet"), "{table}");
        assert!(
            lines[4].starts_with("1/3 validators up; status written 1m ago"),
            "{table}"
        );
    }

    #[test]
    fn bad_files_are_named_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.json");
        assert!(matches!(read(&path), Err(StatusFileError::Read { .. })));
        assert!(
            read(&path)
                .unwrap_err()
                .to_string()
                .contains("is `palisade-bastion run` running?")
        );
        // (content, expected fragment)
        let mut other_format = serde_json::to_value(sample()).unwrap();
        other_format["format"] = 2.into();
        let rows = [
            ("not json".to_string(), "expected ident"),
            ("{}".to_string(), "missing field"),
            (other_format.to_string(), "format 2"),
        ];
        for (content, expected) in rows {
            fs::write(&path, &content).unwrap();
            let error = read(&path).unwrap_err();
            assert!(matches!(error, StatusFileError::Invalid { .. }), "{error}");
            assert!(error.to_string().contains(expected), "{error}");
        }
    }
}
