//! `[logs]`: shipping gaiad's output and the supervisor's own log to the
//! bastions as signed, encrypted segments (`docs/log-format.md`).
//!
//! ```toml
//! [logs]
//! recipients = ["age1…", "ssh-ed25519 AAAA… alice"]  # the operators; plus vault.recovery-recipients
//! # format = "json"            # or "text"
//! # segment-bytes = 1048576     # plaintext per segment, at most 1 MiB
//! # segment-interval = "10s"    # a segment is cut at least this often while lines arrive
//! # spool-dir = "$DAEMON_HOME/palisade/log-spool"
//! # spool-bytes = 268435456     # segments waiting for a bastion; the oldest go first
//! # buffer-bytes = 16777216     # lines waiting for the segment writer; more are dropped
//! # signing-key = "<[tunnel] key-file>"  # an OpenSSH ed25519 private key
//! # host = "<the host name>"
//!
//! # [logs.loki]                # optional: also push the lines to Loki (docs/loki.md)
//! # url = "http://127.0.0.1:3100/loki/api/v1/push"
//! ```
//!
//! The section needs at least one `[[bastion]]` with `backup-command`
//! (segments travel over the backup session) and at least one recipient
//! (with the recovery recipients): logs nobody can read are refused here.
//!
//! `[logs.loki]` is a sub-table, so it comes with all of the above: a Loki
//! push is a copy of the lines for a dashboard, in addition to the encrypted,
//! signed segments that remain the archive. Its keys are
//! [`crate::loki::RawLokiSettings`], validated there; a bad value is reported
//! here as `logs.loki.<key>`. The `validator` label defaults to `[rpc] name`
//! and the `host` label to `logs.host`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use palisade_wire::log_segment::host_name_problem;
use serde::Deserialize;

use super::{Resolver, TunnelSettings};
use crate::loki::{LokiSettings, RawLokiSettings};

/// Default plaintext bytes per segment (1 MiB), also the most allowed: a
/// segment must fit one store payload ([`palisade_wire::backup_store::MAX_LOG_PAYLOAD_BYTES`]).
pub const DEFAULT_SEGMENT_BYTES: usize = 1024 * 1024;
/// Fewest plaintext bytes per segment.
pub const MIN_SEGMENT_BYTES: usize = 64 * 1024;
/// Default longest time between a segment's first line and its cut.
pub const DEFAULT_SEGMENT_INTERVAL: Duration = Duration::from_secs(10);
/// Default spool size: 256 MiB.
pub const DEFAULT_SPOOL_BYTES: u64 = 256 * 1024 * 1024;
/// Smallest spool: room for four largest segments.
pub const MIN_SPOOL_BYTES: u64 = 4 * palisade_wire::backup_store::MAX_LOG_PAYLOAD_BYTES as u64;
/// Default bytes of lines waiting for the segment writer.
pub const DEFAULT_BUFFER_BYTES: usize = 16 * 1024 * 1024;
/// Most recipients (each costs a header stanza and an X25519 operation per
/// segment).
pub const MAX_RECIPIENTS: usize = 32;

/// `[logs]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawLogs {
    /// The operators' age recipients (`age1…` or `ssh-ed25519 …`); the
    /// vault's `recovery-recipients` are added. Required unless those exist.
    pub recipients: Option<Vec<String>>,
    /// Default `"json"`: one JSON object per line; `"text"`: plain lines.
    pub format: Option<String>,
    /// Default 1048576 (1 MiB), between 65536 and 1048576.
    pub segment_bytes: Option<usize>,
    /// Default `10s`, between `100ms` and `1h`.
    pub segment_interval: Option<String>,
    /// Default `$DAEMON_HOME/palisade/log-spool`.
    pub spool_dir: Option<PathBuf>,
    /// Default 268435456 (256 MiB), at least four segments.
    pub spool_bytes: Option<u64>,
    /// Default 16777216 (16 MiB), between 1 MiB and 1 GiB.
    pub buffer_bytes: Option<usize>,
    /// Default `[tunnel] key-file`: the OpenSSH ed25519 private key that
    /// signs the segments.
    pub signing_key: Option<PathBuf>,
    /// Default: this machine's host name.
    pub host: Option<String>,
    /// `[logs.loki]`: also push the lines to a Loki endpoint.
    pub loki: Option<RawLokiSettings>,
}

/// How lines are written into a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `{"ts":…,"stream":…,"level":…,"source":…,"msg":…}` per line.
    Json,
    /// `<ts> <source> <stream> <level> <msg>` per line.
    Text,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Json => "json",
            LogFormat::Text => "text",
        }
    }
}

/// The validated `[logs]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// `logs.recipients` then `vault.recovery-recipients`, each parsed once
    /// here to report a bad one.
    pub recipients: Vec<String>,
    pub format: LogFormat,
    pub segment_bytes: usize,
    pub segment_interval: Duration,
    pub spool_dir: PathBuf,
    pub spool_bytes: u64,
    pub buffer_bytes: usize,
    pub signing_key: PathBuf,
    pub host: String,
    /// `[logs.loki]`, if set.
    pub loki: Option<LokiSettings>,
}

/// Parses a backup/recovery recipient: an age X25519 public key (`age1…`) or
/// an OpenSSH `ssh-ed25519 AAAA… [comment]` line.
pub fn parse_recipient(text: &str) -> Result<Box<dyn age::Recipient + Send>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty".into());
    }
    if text.to_ascii_uppercase().starts_with("AGE-SECRET-KEY-") || text.contains("PRIVATE KEY") {
        return Err("this is a secret key, not a public recipient".into());
    }
    if text.starts_with("age1") {
        return <age::x25519::Recipient as std::str::FromStr>::from_str(text)
            .map(|recipient| Box::new(recipient) as Box<dyn age::Recipient + Send>)
            .map_err(|reason| format!("not a valid age X25519 recipient: {reason}"));
    }
    if text.starts_with("ssh-ed25519 ") {
        return match <age::ssh::Recipient as std::str::FromStr>::from_str(text) {
            Ok(recipient @ age::ssh::Recipient::SshEd25519(..)) => Ok(Box::new(recipient)),
            Ok(_) => Err("not an ssh-ed25519 key".into()),
            Err(_) => Err("not a valid ssh-ed25519 public key".into()),
        };
    }
    Err("expected an age X25519 recipient (age1…) or an ssh-ed25519 public key".into())
}

/// This machine's host name, if it can name a segment's writer.
fn system_host_name() -> Result<String, String> {
    let name = nix::unistd::gethostname()
        .map_err(|error| format!("cannot read the host name ({error}); set logs.host"))?;
    let name = name.to_string_lossy().into_owned();
    // A fully qualified name: the first label is enough and keeps names short.
    let short = name.split('.').next().unwrap_or_default().to_owned();
    match host_name_problem(&short) {
        None => Ok(short),
        Some(reason) => Err(format!(
            "the host name cannot name log segments ({reason}); set logs.host"
        )),
    }
}

pub(super) fn validate_logs(
    r: &mut Resolver<'_>,
    raw: Option<RawLogs>,
    daemon_home: &Path,
    validator: &str,
    tunnels: Option<&TunnelSettings>,
    recovery_recipients: &[String],
) -> Option<LogSettings> {
    let raw = raw?;
    let mut recipients = raw.recipients.clone().unwrap_or_default();
    for (index, recipient) in recipients.iter().enumerate() {
        if let Err(reason) = parse_recipient(recipient) {
            let origin = r.file_origin("logs.recipients");
            r.report(origin, format!("element {}: {reason}", index + 1));
        }
    }
    recipients.extend(recovery_recipients.iter().cloned());
    if recipients.is_empty() {
        let origin = r.file_origin("logs.recipients");
        r.report(
            origin,
            "is required: the operators' age recipients (age1… or ssh-ed25519 …) that can read \
             the logs (none, and no vault.recovery-recipients: nobody could)",
        );
    } else if recipients.len() > MAX_RECIPIENTS {
        let origin = r.file_origin("logs.recipients");
        r.report(
            origin,
            format!(
                "{} recipients with vault.recovery-recipients, more than {MAX_RECIPIENTS}",
                recipients.len()
            ),
        );
    }
    let format = match raw.format.as_deref() {
        None | Some("json") => LogFormat::Json,
        Some("text") => LogFormat::Text,
        Some(other) => {
            let origin = r.file_origin("logs.format");
            r.report(origin, format!("'{other}' must be \"json\" or \"text\""));
            LogFormat::Json
        }
    };
    let (segment_bytes, origin) = r.number(
        None,
        "logs.segment-bytes",
        raw.segment_bytes,
        DEFAULT_SEGMENT_BYTES,
        "a byte count",
    );
    if !(MIN_SEGMENT_BYTES..=DEFAULT_SEGMENT_BYTES).contains(&segment_bytes) {
        r.report(
            origin,
            format!(
                "{segment_bytes} must be between {MIN_SEGMENT_BYTES} and {DEFAULT_SEGMENT_BYTES} \
                 (a segment must fit one bastion store object)"
            ),
        );
    }
    let segment_interval = r.duration(
        None,
        "logs.segment-interval",
        raw.segment_interval.as_deref(),
        DEFAULT_SEGMENT_INTERVAL,
    );
    if !(Duration::from_millis(100)..=Duration::from_secs(3600)).contains(&segment_interval) {
        let origin = r.file_origin("logs.segment-interval");
        r.report(origin, "must be between 100ms and 1h");
    }
    let spool_dir = match raw.spool_dir {
        Some(path) => {
            if !path.is_absolute() {
                let origin = r.file_origin("logs.spool-dir");
                r.report(
                    origin,
                    format!("'{}' must be an absolute path", path.display()),
                );
            }
            path
        }
        None => daemon_home.join("palisade").join("log-spool"),
    };
    let (spool_bytes, origin) = r.number(
        None,
        "logs.spool-bytes",
        raw.spool_bytes,
        DEFAULT_SPOOL_BYTES,
        "a byte count",
    );
    if spool_bytes < MIN_SPOOL_BYTES {
        r.report(
            origin,
            format!("{spool_bytes} must be at least {MIN_SPOOL_BYTES} (four segments)"),
        );
    }
    let (buffer_bytes, origin) = r.number(
        None,
        "logs.buffer-bytes",
        raw.buffer_bytes,
        DEFAULT_BUFFER_BYTES,
        "a byte count",
    );
    if !(1 << 20..=1 << 30).contains(&buffer_bytes) {
        r.report(origin, "must be between 1048576 and 1073741824");
    }
    let signing_key = match (raw.signing_key, tunnels) {
        (Some(path), _) => {
            if !path.is_absolute() {
                let origin = r.file_origin("logs.signing-key");
                r.report(
                    origin,
                    format!("'{}' must be an absolute path", path.display()),
                );
            }
            path
        }
        (None, Some(tunnels)) => tunnels.key_file.clone(),
        (None, None) => PathBuf::new(),
    };
    let shipping_bastions = tunnels.map_or(0, |tunnels| {
        tunnels
            .bastions
            .iter()
            .filter(|bastion| bastion.backup_command.is_some())
            .count()
    });
    if shipping_bastions == 0 {
        let origin = r.file_origin("logs");
        r.report(
            origin,
            "needs at least one [[bastion]] with backup-command: segments travel over the \
             bastions' backup sessions",
        );
    }
    let host = match raw.host {
        Some(host) => {
            if let Some(reason) = host_name_problem(&host) {
                let origin = r.file_origin("logs.host");
                r.report(origin, reason);
            }
            host
        }
        None => match system_host_name() {
            Ok(host) => host,
            Err(reason) => {
                let origin = r.file_origin("logs.host");
                r.report(origin, reason);
                String::new()
            }
        },
    };
    let loki = raw
        .loki
        .and_then(|loki| match loki.validate(validator, &host) {
            Ok(loki) => Some(loki),
            Err(issues) => {
                for issue in issues {
                    let origin = r.file_origin(format!("logs.loki.{}", issue.key));
                    r.report(origin, issue.reason);
                }
                None
            }
        });
    Some(LogSettings {
        recipients,
        format,
        segment_bytes,
        segment_interval,
        spool_dir,
        spool_bytes,
        buffer_bytes,
        signing_key,
        host,
        loki,
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::load;
    use super::*;

    const RECIPIENT: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

    /// A vault (backup-command needs one) and one bastion that takes
    /// backups, before `[logs]`.
    fn bastion(dir: &Path) -> String {
        let key = dir.join("tunnel_key");
        std::fs::write(&key, "").unwrap();
        let fingerprint = format!("SHA256:{}", "A".repeat(43));
        format!(
            "[vault]\nswap = \"refuse\"\n[tunnel]\nkey-file = {key:?}\n[[bastion]]\nname = \"b1\"\n\
             host = \"127.0.0.1\"\nuser = \"u\"\nhost-key-fingerprints = [{fingerprint:?}]\n\
             backup-command = \"palisade-bastion backup-session\"\n"
        )
    }

    #[test]
    fn defaults_are_documented_and_the_tunnel_key_signs() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "{}[logs]\nrecipients = [{RECIPIENT:?}]\n",
            bastion(dir.path())
        );
        let config = load(dir.path(), &text).unwrap();
        let logs = config.logs.unwrap();
        assert_eq!(logs.recipients, [RECIPIENT]);
        assert_eq!(logs.format, LogFormat::Json);
        assert_eq!(logs.segment_bytes, 1 << 20);
        assert_eq!(logs.segment_interval, Duration::from_secs(10));
        assert_eq!(logs.spool_dir, dir.path().join("palisade/log-spool"));
        assert_eq!(logs.spool_bytes, 256 << 20);
        assert_eq!(logs.buffer_bytes, 16 << 20);
        assert_eq!(logs.signing_key, dir.path().join("tunnel_key"));
        assert!(host_name_problem(&logs.host).is_none());
        assert!(logs.loki.is_none());
        assert!(load(dir.path(), "").unwrap().logs.is_none());
    }

    #[test]
    fn loki_labels_default_to_the_rpc_name_and_the_logs_host() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "{}[rpc]\nname = \"val-a\"\n[logs]\nrecipients = [{RECIPIENT:?}]\nhost = \"host-1\"\n\
             [logs.loki]\nurl = \"http://127.0.0.1:3100/loki/api/v1/push\"\nbatch-lines = 10\n",
            bastion(dir.path())
        );
        let loki = load(dir.path(), &text).unwrap().logs.unwrap().loki.unwrap();
        assert_eq!(loki.url.as_str(), "http://127.0.0.1:3100/loki/api/v1/push");
        assert_eq!(loki.batch_lines, 10);
        assert_eq!(
            loki.labels,
            std::collections::BTreeMap::from([
                ("host".to_string(), "host-1".to_string()),
                ("validator".to_string(), "val-a".to_string()),
            ])
        );
        let text = format!(
            "{}[logs]\nrecipients = [{RECIPIENT:?}]\nhost = \"host-1\"\n\
             [logs.loki]\nurl = \"https://logs.example/loki/api/v1/push\"\n\
             validator = \"v\"\nhost = \"h\"\n[logs.loki.labels]\nchain = \"c\"\n",
            bastion(dir.path())
        );
        let loki = load(dir.path(), &text).unwrap().logs.unwrap().loki.unwrap();
        assert_eq!(
            loki.labels,
            std::collections::BTreeMap::from([
                ("chain".to_string(), "c".to_string()),
                ("host".to_string(), "h".to_string()),
                ("validator".to_string(), "v".to_string()),
            ])
        );
    }

    #[test]
    fn every_bad_loki_value_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let url = "url = \"http://127.0.0.1:3100/loki/api/v1/push\"\n";
        let rows: &[(String, &str)] = &[
            (
                String::new(),
                "key `logs.loki.url`: is required: Loki's push endpoint",
            ),
            (
                "url = \"http://10.1.2.3:3100/loki/api/v1/push\"".into(),
                "key `logs.loki.url`: must be https (http only to a loopback host",
            ),
            (
                "url = \"https://tenant:s3cr3t@logs.example/push\"".into(),
                "key `logs.loki.url`: the path must end with /loki/api/v1/push",
            ),
            (
                "url = \"ftp://127.0.0.1/loki/api/v1/push\"".into(),
                "key `logs.loki.url`: scheme \"ftp\" is not http(s)",
            ),
            (
                format!("{url}validator = \"\""),
                "key `logs.loki.validator`: must not be empty",
            ),
            (
                format!("{url}host = \"\""),
                "key `logs.loki.host`: must not be empty",
            ),
            (
                format!("{url}batch-lines = 0"),
                "key `logs.loki.batch-lines`: 0 must be between 1 and 100000",
            ),
            (
                format!("{url}queue-lines = 5\nbatch-lines = 10"),
                "key `logs.loki.queue-lines`: 5 is less than batch-lines (10)",
            ),
            (
                format!("{url}batch-interval = \"soon\""),
                "key `logs.loki.batch-interval`: 'soon' is not a duration",
            ),
            (
                format!("{url}timeout = \"1h\""),
                "key `logs.loki.timeout`: '1h' must be between 100ms and 2m",
            ),
            (
                format!("{url}[logs.loki.labels]\nstream = \"x\""),
                "key `logs.loki.labels.stream`: is set by Palisade",
            ),
            (
                format!("{url}[logs.loki.labels]\n\"9x\" = \"x\""),
                "key `logs.loki.labels.9x`: is not a Loki label name",
            ),
            (format!("{url}tenant = \"x\""), "unknown field `tenant`"),
        ];
        for (lines, needle) in rows {
            let text = format!(
                "{}[logs]\nrecipients = [{RECIPIENT:?}]\n[logs.loki]\n{lines}\n",
                bastion(dir.path())
            );
            let error = load(dir.path(), &text).unwrap_err().to_string();
            assert!(error.contains(needle), "{lines}: {error}");
            assert!(!error.contains("s3cr3t"), "{error}");
        }
    }

    #[test]
    fn every_bad_value_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let rows: &[(&str, &str)] = &[
            ("recipients = []", "logs.recipients`: is required"),
            ("recipients = [\"age1nope\"]", "element 1: not a valid age"),
            ("format = \"xml\"", "'xml' must be \"json\" or \"text\""),
            (
                "segment-bytes = 2000000",
                "must be between 65536 and 1048576",
            ),
            ("segment-bytes = 10", "must be between 65536 and 1048576"),
            (
                "segment-interval = \"10ms\"",
                "must be between 100ms and 1h",
            ),
            ("segment-interval = \"soon\"", "'soon' is not a duration"),
            ("spool-dir = \"spool\"", "must be an absolute path"),
            ("spool-bytes = 1000", "must be at least"),
            ("buffer-bytes = 10", "must be between 1048576"),
            ("signing-key = \"key\"", "must be an absolute path"),
            ("host = \"a/b\"", "logs.host"),
            ("colour = true", "unknown field `colour`"),
        ];
        for (line, needle) in rows {
            let recipients = if line.starts_with("recipients") {
                String::new()
            } else {
                format!("recipients = [{RECIPIENT:?}]\n")
            };
            let text = format!("{}[logs]\n{recipients}{line}\n", bastion(dir.path()));
            let error = load(dir.path(), &text).unwrap_err().to_string();
            assert!(error.contains(needle), "{line}: {error}");
        }
        let error = load(
            dir.path(),
            &format!("[logs]\nrecipients = [{RECIPIENT:?}]\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("needs at least one [[bastion]] with backup-command"),
            "{error}"
        );
    }
}
