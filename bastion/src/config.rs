//! The bastion's configuration file: parsed raw, then validated into a
//! [`BastionConfig`].
//!
//! ```toml
//! listen-socket = "/run/palisade-bastion/bastion.sock"
//! backup-dir = "/var/lib/palisade-bastion/backups"
//! # status-file = "/run/palisade-bastion/status.json"   (default: beside listen-socket)
//!
//! [backups]            # every key optional; defaults shown
//! keep = 500
//! quota-bytes = 268435456
//! idle-timeout = "30s"
//! max-connections = 64
//!
//! [health]
//! interval = "10s"
//! timeout = "3s"
//!
//! [[validator]]
//! name = "val-a"
//! socket = "/run/palisade-bastion/val-a.sock"
//! ```
//!
//! Durations are strings with a unit (`300ms`, `10s`, `5m`), as in the
//! supervisor's configuration; a bare number is rejected.
//!
//! Unknown keys are errors (a typo must not silently fall back to a
//! default). Validation collects *every* problem and reports them together,
//! each naming `file: key`. Loading has no side effects: nothing is created,
//! bound or written.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use palisade_wire::backup_store::MAX_LIST_ENTRIES;
use serde::Deserialize;

use crate::backup_store::ServeOptions;
use crate::health_check::HealthCheckOptions;

/// Longest usable Unix socket path: `sun_path` is 108 bytes on Linux,
/// including the terminating NUL.
pub const MAX_SOCKET_PATH_BYTES: usize = 107;

/// Longest validator name.
pub const MAX_NAME_BYTES: usize = 64;

/// File name of the default status file, in the listen-socket's directory.
pub const DEFAULT_STATUS_FILE_NAME: &str = "status.json";

/// Most connections `backups.max-connections` may allow.
pub const MAX_CONNECTIONS_LIMIT: usize = 4096;

/// Bounds of `backups.idle-timeout`.
const IDLE_TIMEOUT_RANGE: (Duration, Duration) =
    (Duration::from_millis(10), Duration::from_secs(3600));
/// Bounds of `health.interval`.
const HEALTH_INTERVAL_RANGE: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(3600));
/// Bounds of `health.timeout` (and it may not exceed the interval).
const HEALTH_TIMEOUT_RANGE: (Duration, Duration) =
    (Duration::from_millis(10), Duration::from_secs(60));

/// Everything wrong with a configuration file.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Not valid TOML, a value of the wrong type, or an unknown key.
    Syntax { path: PathBuf, message: String },
    /// One or more values are invalid; all of them are listed.
    Invalid { path: PathBuf, issues: Vec<Issue> },
}

/// One invalid value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// The key, e.g. `listen-socket` or `validator[2].socket` (1-based).
    pub key: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, source } => {
                write!(f, "cannot read config file {}: {source}", path.display())
            }
            ConfigError::Syntax { path, message } => {
                write!(f, "config file {}: {message}", path.display())
            }
            ConfigError::Invalid { path, issues } => {
                write!(f, "invalid configuration ({} problems):", issues.len())?;
                for issue in issues {
                    write!(
                        f,
                        "\n  - {}: key `{}`: {}",
                        path.display(),
                        issue.key,
                        issue.reason
                    )?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// The file as written. Every key is optional here so that validation can
/// report all missing ones at once.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    /// Unix socket `palisade-ctl` and local tools use to reach the bastion.
    listen_socket: Option<PathBuf>,
    /// Where the validators' encrypted backups are stored.
    backup_dir: Option<PathBuf>,
    /// Where `run` keeps the health status (default: `status.json` in the
    /// listen-socket's directory).
    status_file: Option<PathBuf>,
    /// Tunables of the backup store.
    #[serde(default)]
    backups: RawBackups,
    /// Health checks of the validators.
    #[serde(default)]
    health: RawHealth,
    /// One table per validator host.
    #[serde(default)]
    validator: Vec<RawValidator>,
}

/// `[backups]`: see [`ServeOptions`] for the meaning and defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawBackups {
    keep: Option<usize>,
    quota_bytes: Option<u64>,
    idle_timeout: Option<String>,
    max_connections: Option<usize>,
}

/// `[health]`: see [`HealthCheckOptions`] for the meaning and defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawHealth {
    interval: Option<String>,
    timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawValidator {
    name: Option<String>,
    socket: Option<PathBuf>,
}

/// A validated bastion configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BastionConfig {
    pub listen_socket: PathBuf,
    pub backup_dir: PathBuf,
    /// The health status `run` maintains and `status` reads.
    pub status_file: PathBuf,
    /// `[backups]`, defaults filled in.
    pub backups: ServeOptions,
    /// `[health]`, defaults filled in.
    pub health: HealthCheckOptions,
    pub validators: Vec<Validator>,
}

/// A validator host, reached through the Unix socket its supervisor
/// publishes on this bastion with an SSH reverse forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validator {
    pub name: String,
    pub socket: PathBuf,
}

impl BastionConfig {
    /// Read and validate `path`.
    pub fn load(path: &Path) -> Result<BastionConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        BastionConfig::parse(&text, path)
    }

    /// Validate `text`; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<BastionConfig, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|error| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: error.to_string().trim_end().to_string(),
        })?;
        validate(raw).map_err(|issues| ConfigError::Invalid {
            path: path.to_path_buf(),
            issues,
        })
    }

    /// Human-readable summary for `check-config`.
    pub fn summary(&self) -> String {
        let duration = |value: Duration| humantime::format_duration(value).to_string();
        let mut out = format!(
            "listen-socket:           {}\n\
             backup-dir:              {}\n\
             status-file:             {}\n\
             backups.keep:            {}\n\
             backups.quota-bytes:     {}\n\
             backups.idle-timeout:    {}\n\
             backups.max-connections: {}\n\
             health.interval:         {}\n\
             health.timeout:          {}\n\
             validators:              {}\n",
            self.listen_socket.display(),
            self.backup_dir.display(),
            self.status_file.display(),
            self.backups.keep,
            self.backups.quota_bytes,
            duration(self.backups.idle_timeout),
            self.backups.max_connections,
            duration(self.health.interval),
            duration(self.health.timeout),
            self.validators.len()
        );
        for validator in &self.validators {
            out.push_str(&format!(
                "  {} via {}\n",
                validator.name,
                validator.socket.display()
            ));
        }
        out
    }
}

fn validate(raw: RawConfig) -> Result<BastionConfig, Vec<Issue>> {
    let mut issues = Vec::new();
    let mut report = |key: String, reason: String| issues.push(Issue { key, reason });

    let listen_socket = match raw.listen_socket {
        Some(path) => {
            if let Some(reason) = socket_path_problem(&path) {
                report("listen-socket".into(), reason);
            }
            path
        }
        None => {
            report(
                "listen-socket".into(),
                "is required: the Unix socket the bastion listens on".into(),
            );
            PathBuf::new()
        }
    };
    let backup_dir = match raw.backup_dir {
        Some(path) => {
            if !path.is_absolute() {
                report(
                    "backup-dir".into(),
                    format!("'{}' must be an absolute path", path.display()),
                );
            }
            path
        }
        None => {
            report(
                "backup-dir".into(),
                "is required: the directory for the validators' encrypted backups".into(),
            );
            PathBuf::new()
        }
    };

    let status_file = match raw.status_file {
        Some(path) => {
            if !path.is_absolute() {
                report(
                    "status-file".into(),
                    format!("'{}' must be an absolute path", path.display()),
                );
            } else if path.file_name().is_none() {
                report(
                    "status-file".into(),
                    format!("'{}' must name a file", path.display()),
                );
            } else if path == listen_socket {
                report(
                    "status-file".into(),
                    format!("'{}' is the listen-socket", path.display()),
                );
            }
            path
        }
        None => listen_socket
            .parent()
            .map(|dir| dir.join(DEFAULT_STATUS_FILE_NAME))
            .unwrap_or_default(),
    };

    let defaults = ServeOptions::default();
    let backups = ServeOptions {
        keep: match raw.backups.keep {
            Some(keep) if keep == 0 || keep > MAX_LIST_ENTRIES => {
                report(
                    "backups.keep".into(),
                    format!("{keep} must be between 1 and {MAX_LIST_ENTRIES}"),
                );
                defaults.keep
            }
            Some(keep) => keep,
            None => defaults.keep,
        },
        quota_bytes: match raw.backups.quota_bytes {
            Some(0) => {
                report("backups.quota-bytes".into(), "must be positive".into());
                defaults.quota_bytes
            }
            Some(quota) => quota,
            None => defaults.quota_bytes,
        },
        idle_timeout: duration(
            &mut report,
            "backups.idle-timeout",
            raw.backups.idle_timeout.as_deref(),
            defaults.idle_timeout,
            IDLE_TIMEOUT_RANGE,
        ),
        max_connections: match raw.backups.max_connections {
            Some(max) if max == 0 || max > MAX_CONNECTIONS_LIMIT => {
                report(
                    "backups.max-connections".into(),
                    format!("{max} must be between 1 and {MAX_CONNECTIONS_LIMIT}"),
                );
                defaults.max_connections
            }
            Some(max) => max,
            None => defaults.max_connections,
        },
    };

    let defaults = HealthCheckOptions::default();
    let interval = duration(
        &mut report,
        "health.interval",
        raw.health.interval.as_deref(),
        defaults.interval,
        HEALTH_INTERVAL_RANGE,
    );
    let timeout = duration(
        &mut report,
        "health.timeout",
        raw.health.timeout.as_deref(),
        defaults.timeout,
        HEALTH_TIMEOUT_RANGE,
    );
    if timeout > interval {
        report(
            "health.timeout".into(),
            format!(
                "{} is longer than health.interval ({}); a check must end before the next one",
                humantime::format_duration(timeout),
                humantime::format_duration(interval)
            ),
        );
    }
    let health = HealthCheckOptions { interval, timeout };

    if raw.validator.is_empty() {
        report(
            "validator".into(),
            "at least one [[validator]] table (name, socket) is required".into(),
        );
    }
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    let mut sockets: BTreeMap<PathBuf, usize> = BTreeMap::new();
    let mut validators = Vec::new();
    for (index, entry) in raw.validator.into_iter().enumerate() {
        let number = index + 1;
        let key = |field: &str| format!("validator[{number}].{field}");
        let name = match entry.name {
            Some(name) => {
                if let Some(reason) = name_problem(&name) {
                    report(key("name"), reason);
                } else if let Some(first) = names.insert(name.clone(), number) {
                    report(
                        key("name"),
                        format!("'{name}' is already used by validator[{first}]"),
                    );
                }
                name
            }
            None => {
                report(key("name"), "is required".into());
                String::new()
            }
        };
        let socket = match entry.socket {
            Some(socket) => {
                if let Some(reason) = socket_path_problem(&socket) {
                    report(key("socket"), reason);
                } else if socket == listen_socket {
                    report(
                        key("socket"),
                        format!("'{}' is the bastion's own listen-socket", socket.display()),
                    );
                } else if socket == status_file {
                    report(
                        key("socket"),
                        format!("'{}' is the bastion's status-file", socket.display()),
                    );
                } else if let Some(first) = sockets.insert(socket.clone(), number) {
                    report(
                        key("socket"),
                        format!(
                            "'{}' is already used by validator[{first}]",
                            socket.display()
                        ),
                    );
                }
                socket
            }
            None => {
                report(
                    key("socket"),
                    "is required: the Unix socket the validator's reverse tunnel publishes".into(),
                );
                PathBuf::new()
            }
        };
        validators.push(Validator { name, socket });
    }

    if issues.is_empty() {
        Ok(BastionConfig {
            listen_socket,
            backup_dir,
            status_file,
            backups,
            health,
            validators,
        })
    } else {
        Err(issues)
    }
}

/// A duration key: unset → `default`; otherwise parsed and range-checked,
/// reporting a problem (and returning `default`) when it is not valid.
fn duration(
    report: &mut impl FnMut(String, String),
    key: &str,
    text: Option<&str>,
    default: Duration,
    (min, max): (Duration, Duration),
) -> Duration {
    let Some(text) = text else {
        return default;
    };
    match humantime::parse_duration(text.trim()) {
        Ok(value) if value < min || value > max => {
            report(
                key.into(),
                format!(
                    "'{text}' must be between {} and {}",
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                ),
            );
            default
        }
        Ok(value) => value,
        Err(error) => {
            report(
                key.into(),
                format!("'{text}' is not a duration ({error}; use e.g. 300ms, 10s, 5m)"),
            );
            default
        }
    }
}

fn socket_path_problem(path: &Path) -> Option<String> {
    if !path.is_absolute() {
        return Some(format!("'{}' must be an absolute path", path.display()));
    }
    let length = path.as_os_str().len();
    if length > MAX_SOCKET_PATH_BYTES {
        return Some(format!(
            "'{}' is {length} bytes long; Unix socket paths are limited to {MAX_SOCKET_PATH_BYTES}",
            path.display()
        ));
    }
    None
}

fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".into());
    }
    if name.len() > MAX_NAME_BYTES {
        return Some(format!("'{name}' is longer than {MAX_NAME_BYTES} bytes"));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if !name.chars().all(allowed) || name.starts_with(['-', '.']) {
        return Some(format!(
            "{name:?} may use only ASCII letters, digits, '-', '_' and '.', \
             and must not start with '-' or '.'"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
listen-socket = "/run/palisade-bastion/bastion.sock"
backup-dir = "/var/lib/palisade-bastion/backups"

[[validator]]
name = "val-a"
socket = "/run/palisade-bastion/val-a.sock"

[[validator]]
name = "val_b.2"
socket = "/run/palisade-bastion/val-b.sock"
"#;

    fn parse(text: &str) -> Result<BastionConfig, ConfigError> {
        BastionConfig::parse(text, Path::new("bastion.toml"))
    }

    #[test]
    fn good_config_parses() {
        let config = parse(GOOD).unwrap();
        assert_eq!(
            config.listen_socket,
            PathBuf::from("/run/palisade-bastion/bastion.sock")
        );
        assert_eq!(
            config.backup_dir,
            PathBuf::from("/var/lib/palisade-bastion/backups")
        );
        assert_eq!(
            config.validators,
            vec![
                Validator {
                    name: "val-a".into(),
                    socket: "/run/palisade-bastion/val-a.sock".into()
                },
                Validator {
                    name: "val_b.2".into(),
                    socket: "/run/palisade-bastion/val-b.sock".into()
                },
            ]
        );
        assert!(
            config
                .summary()
                .contains("val-a via /run/palisade-bastion/val-a.sock")
        );
        // Everything optional has its documented default.
        assert_eq!(
            config.status_file,
            PathBuf::from("/run/palisade-bastion/status.json")
        );
        assert_eq!(config.backups, ServeOptions::default());
        assert_eq!(config.backups.keep, 500);
        assert_eq!(config.backups.quota_bytes, 256 * 1024 * 1024);
        assert_eq!(config.backups.idle_timeout, Duration::from_secs(30));
        assert_eq!(config.backups.max_connections, 64);
        assert_eq!(config.health.interval, Duration::from_secs(10));
        assert_eq!(config.health.timeout, Duration::from_secs(3));
    }

    #[test]
    fn every_optional_key_is_read() {
        let text = r#"
listen-socket = "/run/palisade-bastion/bastion.sock"
backup-dir = "/var/lib/palisade-bastion/backups"
status-file = "/var/lib/palisade-bastion/status.json"

[backups]
keep = 7
quota-bytes = 1000
idle-timeout = "500ms"
max-connections = 3

[health]
interval = "200ms"
timeout = "150ms"

[[validator]]
name = "val-a"
socket = "/run/palisade-bastion/val-a.sock"
"#;
        let config = parse(text).unwrap();
        assert_eq!(
            config.status_file,
            PathBuf::from("/var/lib/palisade-bastion/status.json")
        );
        assert_eq!(
            config.backups,
            ServeOptions {
                keep: 7,
                quota_bytes: 1000,
                idle_timeout: Duration::from_millis(500),
                max_connections: 3,
            }
        );
        assert_eq!(
            config.health,
            HealthCheckOptions {
                interval: Duration::from_millis(200),
                timeout: Duration::from_millis(150),
            }
        );
        let summary = config.summary();
        assert!(
            summary.contains("backups.idle-timeout:    500ms"),
            "{summary}"
        );
        assert!(
            summary.contains("health.interval:         200ms"),
            "{summary}"
        );
    }

    #[test]
    fn each_invalid_tunable_is_named() {
        let base = "listen-socket = \"/run/b/l.sock\"\nbackup-dir = \"/b\"\n";
        let validator = "[[validator]]\nname = \"a\"\nsocket = \"/run/b/a.sock\"\n";
        // (top-level lines, tables, expected key, expected reason fragment)
        let rows: [(&str, &str, &str, &str); 18] = [
            (
                "",
                "[backups]\nkeep = 0",
                "backups.keep",
                "0 must be between 1 and 4096",
            ),
            (
                "",
                "[backups]\nkeep = 4097",
                "backups.keep",
                "between 1 and 4096",
            ),
            (
                "",
                "[backups]\nquota-bytes = 0",
                "backups.quota-bytes",
                "must be positive",
            ),
            (
                "",
                "[backups]\nidle-timeout = \"30\"",
                "backups.idle-timeout",
                "'30' is not a duration",
            ),
            (
                "",
                "[backups]\nidle-timeout = \"soon\"",
                "backups.idle-timeout",
                "use e.g. 300ms, 10s, 5m",
            ),
            (
                "",
                "[backups]\nidle-timeout = \"0s\"",
                "backups.idle-timeout",
                "must be between 10ms and 1h",
            ),
            (
                "",
                "[backups]\nmax-connections = 0",
                "backups.max-connections",
                "between 1 and 4096",
            ),
            (
                "",
                "[backups]\nmax-connections = 100000",
                "backups.max-connections",
                "between 1 and 4096",
            ),
            (
                "",
                "[health]\ninterval = \"50ms\"",
                "health.interval",
                "must be between 100ms and 1h",
            ),
            (
                "",
                "[health]\ninterval = \"2h\"",
                "health.interval",
                "must be between 100ms and 1h",
            ),
            (
                "",
                "[health]\ninterval = \"often\"",
                "health.interval",
                "is not a duration",
            ),
            (
                "",
                "[health]\ntimeout = \"0s\"",
                "health.timeout",
                "must be between 10ms and 1m",
            ),
            (
                "",
                "[health]\ninterval = \"1s\"\ntimeout = \"2s\"",
                "health.timeout",
                "longer than health.interval",
            ),
            (
                "",
                "[health]\ntimeout = \"11s\"",
                "health.timeout",
                "longer than health.interval (10s)",
            ),
            (
                "status-file = \"status.json\"\n",
                "",
                "status-file",
                "must be an absolute path",
            ),
            (
                "status-file = \"/\"\n",
                "",
                "status-file",
                "must name a file",
            ),
            (
                "status-file = \"/run/b/l.sock\"\n",
                "",
                "status-file",
                "is the listen-socket",
            ),
            (
                "status-file = \"/run/b/a.sock\"\n",
                "",
                "validator[1].socket",
                "is the bastion's status-file",
            ),
        ];
        for (top, tables, key, reason) in rows {
            let input = format!("{base}{top}{tables}\n{validator}");
            match parse(&input) {
                Err(ConfigError::Invalid { issues, .. }) => {
                    assert_eq!(issues.len(), 1, "{input:?}: {issues:?}");
                    assert_eq!(issues[0].key, key, "{input:?}");
                    assert!(issues[0].reason.contains(reason), "{input:?}: {issues:?}");
                }
                other => panic!("{input:?}: expected Invalid, got {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_or_mistyped_tunables_are_syntax_errors() {
        let base = "listen-socket = \"/l.sock\"\nbackup-dir = \"/b\"\n";
        // (tables, expected fragment)
        let rows = [
            ("[backups]\nkeep-files = 3", "unknown field `keep-files`"),
            (
                "[backups]\nidle_timeout = \"1s\"",
                "unknown field `idle_timeout`",
            ),
            ("[health]\nintervall = \"1s\"", "unknown field `intervall`"),
            ("[health]\ninterval = 10", "invalid type"),
            ("[backups]\nkeep = -1", "invalid value"),
            ("[backups]\nquota-bytes = \"1GB\"", "invalid type"),
            ("[status]\nfile = \"/s\"", "unknown field `status`"),
        ];
        for (tables, expected) in rows {
            let input = format!("{base}{tables}\n");
            let error = parse(&input).unwrap_err();
            assert!(
                matches!(error, ConfigError::Syntax { .. }),
                "{input:?}: {error}"
            );
            assert!(error.to_string().contains(expected), "{input:?}: {error}");
        }
    }

    #[test]
    fn syntax_errors_name_the_file_and_the_problem() {
        // (input, expected fragment)
        let rows = [
            ("listen-socket = ", "bastion.toml"),
            (
                "listen_socket = \"/a.sock\"",
                "unknown field `listen_socket`",
            ),
            ("backupdir = \"/b\"", "unknown field `backupdir`"),
            (
                "[[validator]]\nname = \"a\"\nsockett = \"/x\"",
                "unknown field `sockett`",
            ),
            ("listen-socket = 5", "invalid type"),
            ("validator = \"val-a\"", "invalid type"),
        ];
        for (input, expected) in rows {
            let error = parse(input).unwrap_err();
            assert!(
                matches!(error, ConfigError::Syntax { .. }),
                "{input:?}: {error}"
            );
            let text = error.to_string();
            assert!(text.contains(expected), "{input:?}: {text}");
            assert!(text.contains("bastion.toml"), "{input:?}: {text}");
        }
    }

    #[test]
    fn each_invalid_value_is_named() {
        let long = format!("/{}", "s".repeat(MAX_SOCKET_PATH_BYTES));
        let base = "listen-socket = \"/l.sock\"\nbackup-dir = \"/b\"\n";
        // (input, expected key, expected reason fragment)
        let rows: Vec<(String, &str, &str)> = vec![
            (
                "backup-dir = \"/b\"\n[[validator]]\nname=\"a\"\nsocket=\"/a\"".into(),
                "listen-socket",
                "is required",
            ),
            (
                "listen-socket = \"/l\"\n[[validator]]\nname=\"a\"\nsocket=\"/a\"".into(),
                "backup-dir",
                "is required",
            ),
            (
                "listen-socket = \"rel.sock\"\nbackup-dir = \"/b\"\n[[validator]]\nname=\"a\"\nsocket=\"/a\"".into(),
                "listen-socket",
                "must be an absolute path",
            ),
            (
                "listen-socket = \"/l\"\nbackup-dir = \"b\"\n[[validator]]\nname=\"a\"\nsocket=\"/a\"".into(),
                "backup-dir",
                "must be an absolute path",
            ),
            (base.into(), "validator", "at least one [[validator]]"),
            (
                format!("{base}[[validator]]\nsocket=\"/a\""),
                "validator[1].name",
                "is required",
            ),
            (
                format!("{base}[[validator]]\nname=\"a\""),
                "validator[1].socket",
                "is required",
            ),
            (
                format!("{base}[[validator]]\nname=\"\"\nsocket=\"/a\""),
                "validator[1].name",
                "must not be empty",
            ),
            (
                format!("{base}[[validator]]\nname=\"a b\"\nsocket=\"/a\""),
                "validator[1].name",
                "may use only",
            ),
            (
                format!("{base}[[validator]]\nname=\"-a\"\nsocket=\"/a\""),
                "validator[1].name",
                "must not start with",
            ),
            (
                format!("{base}[[validator]]\nname=\"a\"\nsocket=\"/a\"\n[[validator]]\nname=\"a\"\nsocket=\"/b\""),
                "validator[2].name",
                "already used by validator[1]",
            ),
            (
                format!("{base}[[validator]]\nname=\"a\"\nsocket=\"/a\"\n[[validator]]\nname=\"b\"\nsocket=\"/a\""),
                "validator[2].socket",
                "already used by validator[1]",
            ),
            (
                format!("{base}[[validator]]\nname=\"a\"\nsocket=\"/l.sock\""),
                "validator[1].socket",
                "the bastion's own listen-socket",
            ),
            (
                format!("{base}[[validator]]\nname=\"a\"\nsocket=\"{long}\""),
                "validator[1].socket",
                "Unix socket paths are limited to 107",
            ),
        ];
        for (input, key, reason) in rows {
            match parse(&input) {
                Err(ConfigError::Invalid { issues, .. }) => {
                    assert_eq!(issues.len(), 1, "{input:?}: {issues:?}");
                    assert_eq!(issues[0].key, key, "{input:?}");
                    assert!(issues[0].reason.contains(reason), "{input:?}: {issues:?}");
                }
                other => panic!("{input:?}: expected Invalid, got {other:?}"),
            }
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let input = "listen-socket = \"relative\"\n\
                     [[validator]]\nname = \"bad name\"\n\
                     [[validator]]\nname = \"ok\"\nsocket = \"also-relative\"\n";
        let error = parse(input).unwrap_err();
        let ConfigError::Invalid { issues, .. } = &error else {
            panic!("expected Invalid, got {error}");
        };
        let keys: Vec<&str> = issues.iter().map(|issue| issue.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "listen-socket",
                "backup-dir",
                "validator[1].name",
                "validator[1].socket",
                "validator[2].socket"
            ]
        );
        let text = error.to_string();
        assert!(
            text.starts_with("invalid configuration (5 problems):"),
            "{text}"
        );
        assert!(
            text.contains(
                "bastion.toml: key `validator[2].socket`: 'also-relative' must be an absolute path"
            ),
            "{text}"
        );
    }

    #[test]
    fn load_reports_unreadable_files() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.toml");
        let error = BastionConfig::load(&missing).unwrap_err();
        assert!(matches!(error, ConfigError::Read { .. }));
        assert!(error.to_string().contains("missing.toml"), "{error}");

        let file = dir.path().join("bastion.toml");
        std::fs::write(&file, GOOD).unwrap();
        assert_eq!(BastionConfig::load(&file).unwrap().validators.len(), 2);
    }
}
