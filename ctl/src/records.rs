//! Reading `$DAEMON_HOME/cosmovisor/palisade-upgrades.jsonl`, the record
//! the supervisor appends after every upgrade attempt (one JSON
//! [`UpgradeRecord`] per line), and rendering it for people.
//!
//! A bad line (torn write, hand edit, newer format) is reported with its
//! line number and skipped; the other lines are still shown. Nothing here
//! panics on input.

use std::fmt;
use std::path::{Path, PathBuf};

use palisade_client::peer_text::clean;
use palisade_wire::upgrade_record::{DetectionSource, UpgradeOutcome, UpgradeRecord, UpgradeStep};

/// File name of the record inside `$DAEMON_HOME/cosmovisor`.
pub const RECORD_FILE: &str = "palisade-upgrades.jsonl";

/// `$DAEMON_HOME/cosmovisor/palisade-upgrades.jsonl`.
pub fn record_path(home: &Path) -> PathBuf {
    home.join("cosmovisor").join(RECORD_FILE)
}

/// A line that is not a valid record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// 1-based line number.
    pub line: usize,
    pub reason: String,
}

/// Why the record could not be read.
#[derive(Debug)]
pub enum RecordsError {
    /// `--home` is not a directory with a `cosmovisor/` folder.
    NotAHome { home: PathBuf, reason: String },
    /// The file exists but could not be read.
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Some lines are not valid records (the valid ones were shown).
    BadLines { path: PathBuf, lines: Vec<BadLine> },
}

impl fmt::Display for RecordsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordsError::NotAHome { home, reason } => write!(
                f,
                "{}: {reason}; pass the node's DAEMON_HOME with --home",
                home.display()
            ),
            RecordsError::Read { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            RecordsError::BadLines { path, lines } => {
                write!(
                    f,
                    "{}: {} invalid line(s) skipped:",
                    path.display(),
                    lines.len()
                )?;
                for bad in lines {
                    write!(f, "\n  line {}: {}", bad.line, bad.reason)?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for RecordsError {}

/// The records that parsed, and the lines that did not.
#[derive(Debug, Default)]
pub struct ReadRecords {
    pub records: Vec<UpgradeRecord>,
    pub bad_lines: Vec<BadLine>,
}

/// Read the record of the node at `home`. A missing file means no upgrade
/// has been recorded yet and is not an error; a missing home is.
pub fn read_records(home: &Path) -> Result<ReadRecords, RecordsError> {
    let not_a_home = |reason: &str| RecordsError::NotAHome {
        home: home.to_path_buf(),
        reason: reason.to_string(),
    };
    if !home.is_dir() {
        return Err(not_a_home("not an existing directory"));
    }
    if !home.join("cosmovisor").is_dir() {
        return Err(not_a_home(
            "has no cosmovisor/ directory (run `palisade-supervisor init` first)",
        ));
    }
    let path = record_path(home);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(parse_records(&bytes)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(ReadRecords::default()),
        Err(source) => Err(RecordsError::Read { path, source }),
    }
}

/// Parse JSON lines; blank lines are ignored.
pub fn parse_records(bytes: &[u8]) -> ReadRecords {
    let mut read = ReadRecords::default();
    for (index, line) in bytes.split(|&byte| byte == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<UpgradeRecord>(line) {
            Ok(record) => read.records.push(record),
            Err(error) => read.bad_lines.push(BadLine {
                line: index + 1,
                reason: line_error(&error),
            }),
        }
    }
    read
}

/// serde_json counts lines within the one line it was given; report the
/// column only, as the caller names the file's line.
fn line_error(error: &serde_json::Error) -> String {
    let mut message = error.to_string();
    if let Some(position) = message.rfind(" at line ") {
        message.truncate(position);
    }
    if error.column() > 0 {
        message.push_str(&format!(" (column {})", error.column()));
    }
    message
}

/// The records as an aligned table, each followed by its steps.
pub fn render_table(records: &[UpgradeRecord]) -> String {
    let header = [
        "NAME",
        "HEIGHT",
        "DETECTED BY",
        "DETECTED AT",
        "SWITCH",
        "OUTCOME",
    ];
    let rows: Vec<[String; 6]> = records
        .iter()
        .map(|record| {
            [
                clean(&record.name),
                record
                    .height
                    .map_or_else(|| "-".to_string(), |height| height.to_string()),
                detection_name(record.detected_by).to_string(),
                clean(&record.detected_at),
                record
                    .switch_ms
                    .map_or_else(|| "-".to_string(), |ms| format!("{ms} ms")),
                outcome_text(&record.outcome),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut out = String::new();
        for (column, cell) in cells.iter().enumerate() {
            if column + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  ", width = widths[column]));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(&header);
    for (record, row) in records.iter().zip(&rows) {
        out.push_str(&line(&row.each_ref().map(String::as_str)));
        let step_width = record
            .steps
            .iter()
            .map(|step| step_name(step.step).len())
            .max()
            .unwrap_or(0);
        let ms_width = record
            .steps
            .iter()
            .map(|step| step.duration_ms.to_string().len())
            .max()
            .unwrap_or(0);
        for step in &record.steps {
            let detail = clean(&step.detail);
            let text = format!(
                "    {:<step_width$}  {:>ms_width$} ms  {detail}",
                step_name(step.step),
                step.duration_ms
            );
            out.push_str(text.trim_end());
            out.push('\n');
        }
    }
    out
}

/// The record's own (snake_case) name of a step.
pub fn step_name(step: UpgradeStep) -> &'static str {
    match step {
        UpgradeStep::StopOld => "stop_old",
        UpgradeStep::Download => "download",
        UpgradeStep::Verify => "verify",
        UpgradeStep::DataBackup => "data_backup",
        UpgradeStep::PreUpgrade => "pre_upgrade",
        UpgradeStep::Switch => "switch",
        UpgradeStep::StartNew => "start_new",
    }
}

fn detection_name(source: DetectionSource) -> &'static str {
    match source {
        DetectionSource::UpgradeInfoFile => "upgrade-info.json",
        DetectionSource::OutputLine => "output line",
    }
}

fn outcome_text(outcome: &UpgradeOutcome) -> String {
    match outcome {
        UpgradeOutcome::Completed => "completed".into(),
        UpgradeOutcome::SwitchedNotRestarted => "switched, not restarted".into(),
        UpgradeOutcome::Failed(reason) => format!("failed: {}", clean(reason)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_wire::upgrade_record::StepRecord;

    const COMPLETED: &str = r#"{"name":"v2","height":50,"detected_by":"upgrade_info_file","detected_at":"2026-11-22T21:00:00.000Z","steps":[{"step":"stop_old","duration_ms":120,"detail":"Exited(Code(0))"},{"step":"data_backup","duration_ms":1500,"detail":"/home/gaia/.gaia/data-backup-v2-20261122T210000Z (Reflink, 12 files, 4096 bytes)"},{"step":"pre_upgrade","duration_ms":8,"detail":"pre-upgrade ok (attempt 1)"},{"step":"switch","duration_ms":1,"detail":"current: genesis -> upgrades/v2"},{"step":"start_new","duration_ms":2,"detail":"/x/bin/gaiad pid 42"}],"outcome":{"status":"completed"},"switch_ms":131}"#;
    const FAILED: &str = r#"{"name":"v3","detected_by":"output_line","detected_at":"2026-11-23T08:00:00.000Z","steps":[],"outcome":{"status":"failed","reason":"pre-upgrade failed: the new binary aborted the upgrade (exit 30)"}}"#;
    const SWITCHED: &str = r#"{"name":"v4","height":90,"detected_by":"output_line","detected_at":"t","steps":[{"step":"switch","duration_ms":3}],"outcome":{"status":"switched_not_restarted"}}"#;

    #[test]
    fn good_lines_parse() {
        let text = format!("{COMPLETED}\n\n{FAILED}\r\n{SWITCHED}\n");
        let read = parse_records(text.as_bytes());
        assert!(read.bad_lines.is_empty(), "{:?}", read.bad_lines);
        let names: Vec<&str> = read.records.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["v2", "v3", "v4"]);
        assert_eq!(read.records[0].height, Some(50));
        assert_eq!(read.records[0].switch_ms, Some(131));
        assert_eq!(read.records[1].height, None);
        assert_eq!(
            read.records[1].outcome,
            UpgradeOutcome::Failed(
                "pre-upgrade failed: the new binary aborted the upgrade (exit 30)".into()
            )
        );
        // `detail` defaults to empty.
        assert_eq!(
            read.records[2].steps,
            [StepRecord {
                step: UpgradeStep::Switch,
                duration_ms: 3,
                detail: String::new()
            }]
        );
    }

    #[test]
    fn bad_lines_are_reported_with_their_number() {
        // (line content, fragment of the reason)
        let rows = [
            ("{", "EOF"),
            ("not json", "expected"),
            (r#"{"name":"v2"}"#, "missing field"),
            (
                r#"{"name":"v2","detected_by":"carrier_pigeon","detected_at":"t","steps":[],"outcome":{"status":"completed"}}"#,
                "unknown variant `carrier_pigeon`",
            ),
            (
                r#"{"name":"v2","detected_by":"output_line","detected_at":"t","steps":[{"step":"switch","duration_ms":-1}],"outcome":{"status":"completed"}}"#,
                "invalid value",
            ),
            (
                r#"{"name":"v2","detected_by":"output_line","detected_at":"t","steps":[],"outcome":{"status":"exploded"}}"#,
                "unknown variant `exploded`",
            ),
            ("[]", "expected struct UpgradeRecord"),
            ("42", "invalid type"),
        ];
        for (content, reason) in rows {
            let text = format!("{COMPLETED}\n{content}\n{FAILED}\n");
            let read = parse_records(text.as_bytes());
            assert_eq!(read.records.len(), 2, "{content}");
            assert_eq!(read.bad_lines.len(), 1, "{content}");
            assert_eq!(read.bad_lines[0].line, 2, "{content}");
            assert!(
                read.bad_lines[0].reason.contains(reason),
                "{content}: {}",
                read.bad_lines[0].reason
            );
        }
        // Invalid UTF-8 on one line spoils only that line.
        let mut bytes = COMPLETED.as_bytes().to_vec();
        bytes.extend_from_slice(b"\n\xff\xfe\n");
        let read = parse_records(&bytes);
        assert_eq!((read.records.len(), read.bad_lines.len()), (1, 1));
        assert_eq!(read.bad_lines[0].line, 2);
    }

    #[test]
    fn table_shows_steps_and_outcomes() {
        let read = parse_records(format!("{COMPLETED}\n{FAILED}\n{SWITCHED}").as_bytes());
        let table = render_table(&read.records);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("NAME  HEIGHT  DETECTED BY"), "{table}");
        assert!(
            lines[1].starts_with("v2    50      upgrade-info.json"),
            "{table}"
        );
        assert!(
            lines[1].contains("131 ms") && lines[1].ends_with("completed"),
            "{table}"
        );
        assert_eq!(lines[2], "    stop_old      120 ms  Exited(Code(0))");
        assert!(
            lines[3].starts_with("    data_backup  1500 ms  /home/gaia"),
            "{table}"
        );
        assert_eq!(lines[6], "    start_new       2 ms  /x/bin/gaiad pid 42");
        assert!(lines[7].starts_with("v3    -       output line"), "{table}");
        assert!(
            lines[7].ends_with(
                "failed: pre-upgrade failed: the new binary aborted the upgrade (exit 30)"
            ),
            "{table}"
        );
        assert!(lines[8].ends_with("switched, not restarted"), "{table}");
        assert_eq!(lines[9], "    switch  3 ms");
    }

    #[test]
    fn control_characters_are_escaped() {
        let line = r#"{"name":"v2\u001b[31m","detected_by":"output_line","detected_at":"t","steps":[],"outcome":{"status":"failed","reason":"a\nb"}}"#;
        let table = render_table(&parse_records(line.as_bytes()).records);
        assert!(!table.contains('\u{1b}'), "{table:?}");
        assert!(table.contains("v2\\u{1b}[31m"), "{table}");
        assert!(table.contains("failed: a\\nb"), "{table}");
    }

    #[test]
    fn reading_from_a_home() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path();
        assert!(matches!(
            read_records(&home.join("missing")),
            Err(RecordsError::NotAHome { .. })
        ));
        let error = read_records(home).unwrap_err().to_string();
        assert!(error.contains("has no cosmovisor/ directory"), "{error}");

        std::fs::create_dir(home.join("cosmovisor")).unwrap();
        let read = read_records(home).unwrap();
        assert!(read.records.is_empty() && read.bad_lines.is_empty());

        std::fs::write(record_path(home), format!("{COMPLETED}\ngarbage\n")).unwrap();
        let read = read_records(home).unwrap();
        assert_eq!(read.records.len(), 1);
        assert_eq!(read.bad_lines[0].line, 2);
        assert_eq!(
            read.bad_lines[0].reason, "expected value (column 1)",
            "serde's own line number is dropped"
        );
        let error = RecordsError::BadLines {
            path: record_path(home),
            lines: read.bad_lines,
        }
        .to_string();
        assert!(
            error.contains("palisade-upgrades.jsonl: 1 invalid line(s) skipped:\n  line 2: "),
            "{error}"
        );
    }
}
