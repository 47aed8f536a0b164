//! The bastion's configuration file: parsed raw, then validated into a
//! [`BastionConfig`].
//!
//! ```toml
//! listen-socket = "/run/palisade-bastion/bastion.sock"
//! backup-dir = "/var/lib/palisade-bastion/backups"
//! # status-file = "/run/palisade-bastion/status.json"   (default: beside listen-socket)
//! tunnel-user = "palisade-tunnel"   # optional; the separate-users layout (docs/bastion.md)
//!
//! [backups]            # every key optional; defaults shown
//! keep = 500
//! quota-bytes = 268435456
//! idle-timeout = "30s"
//! header-timeout = "5s"
//! max-connections = 64
//! max-connections-per-validator = 4
//!
//! [logs]             # the validators' log segments (docs/log-format.md)
//! quota-bytes = 1073741824
//! max-age = "30d"
//!
//! [health]
//! interval = "10s"
//! timeout = "3s"
//!
//! [client]             # optional: the bastion's own RPC identity
//! operator = "bastion-b1"
//! key = "/etc/palisade-bastion/operator_ed25519"
//!
//! [metrics]          # optional: the Prometheus endpoint (docs/metrics.md)
//! listen = "127.0.0.1:9811"   # the default when [metrics] is present
//!
//! [[validator]]
//! name = "val-a"
//! socket = "/run/palisade-validators/val-a.sock"
//! pin = "sha256:…"     # optional: the supervisor's RPC certificate
//! ```
//!
//! Durations are strings with a unit (`300ms`, `10s`, `5m`), as in the
//! supervisor's configuration; a bare number is rejected.
//!
//! The validated settings of each table ([`BackupStoreOptions`],
//! [`HealthCheckOptions`]) are plain types defined here: the store, the
//! probes and the daemon depend on the configuration, never the other way
//! round.
//!
//! Unknown keys are errors (a typo must not silently fall back to a
//! default). Validation collects *every* problem and reports them together,
//! each naming `file: key`. Loading has no side effects: nothing is created,
//! bound or written.
//!
//! `[client]` and a validator's `pin` turn on the authenticated health
//! check and `palisade-bastion call` for that validator. The key file is
//! opened only by [`BastionConfig::load`] (for `run`, `check-config`), which
//! checks it as `palisade-ctl` does (mode, unencrypted OpenSSH ed25519) and
//! drops it again; [`BastionConfig::load_skipping_key`] never opens it, for
//! the commands that do not use it (`status`, `backup-session`, …), which
//! may run as users who cannot read it and must not fail because of it.
//! Nothing here prints or keeps key material.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::alerts::config::{AlertsConfig, RawAlerts, SecretFiles};
use palisade_client::{Fingerprint, OperatorKey};
use palisade_wire::backup_store::MAX_LIST_ENTRIES;
use palisade_wire::names::validator_name_problem;
use serde::Deserialize;

/// Longest usable Unix socket path: `sun_path` is 108 bytes on Linux,
/// including the terminating NUL.
pub const MAX_SOCKET_PATH_BYTES: usize = 107;

/// Default number of files kept per validator.
pub const DEFAULT_KEEP: usize = 500;
/// Default size cap per validator: 256 MiB.
pub const DEFAULT_QUOTA_BYTES: u64 = 256 * 1024 * 1024;
/// Default idle timeout per backup-store connection.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default cap on concurrent backup-store connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// Default cap on one validator's concurrent backup-store connections: a
/// supervisor uses one at a time (a backup, a listing, a restore), so four
/// leave room for overlap and retries while one validator's key can hold at
/// most a sixteenth of the default pool.
pub const DEFAULT_MAX_CONNECTIONS_PER_VALIDATOR: usize = 4;
/// Default bound on a connection's first header: `backup-session` connects
/// to the store only once it holds the first request, so a legitimate
/// header arrives at once.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Default size cap of one validator's log segments: 1 GiB.
pub const DEFAULT_LOG_QUOTA_BYTES: u64 = 1024 * 1024 * 1024;
/// Default age after which log segments are removed: 30 days.
pub const DEFAULT_LOG_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Bounds of `logs.max-age`.
const LOG_MAX_AGE_RANGE: (Duration, Duration) = (
    Duration::from_secs(60),
    Duration::from_secs(10 * 365 * 24 * 3600),
);

/// Default time between two probes of one validator.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(10);
/// Default bound on one probe (connect and greeting).
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(3);

/// File name of the default status file, in the listen-socket's directory.
pub const DEFAULT_STATUS_FILE_NAME: &str = "status.json";

/// Most connections `backups.max-connections` may allow.
pub const MAX_CONNECTIONS_LIMIT: usize = 4096;

/// Bounds of `backups.idle-timeout`.
const IDLE_TIMEOUT_RANGE: (Duration, Duration) =
    (Duration::from_millis(10), Duration::from_secs(3600));
/// Bounds of `backups.header-timeout`.
const HEADER_TIMEOUT_RANGE: (Duration, Duration) =
    (Duration::from_millis(10), Duration::from_secs(60));
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
    /// The account the validators' SSH keys log in as, when it is not the
    /// one running the daemon.
    tunnel_user: Option<String>,
    /// Tunables of the backup store.
    #[serde(default)]
    backups: RawBackups,
    /// Quota and retention of the validators' log segments.
    #[serde(default)]
    logs: RawLogs,
    /// Health checks of the validators.
    #[serde(default)]
    health: RawHealth,
    /// The bastion's own identity for the control RPC (optional).
    client: Option<RawClient>,
    /// Built-in alert sinks (optional): `crate::alerts::config`.
    alerts: Option<RawAlerts>,
    /// One table per validator host.
    #[serde(default)]
    validator: Vec<RawValidator>,
    /// The Prometheus endpoint (absent: off).
    metrics: Option<RawMetrics>,
}

/// `[metrics]`: see [`MetricsOptions`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawMetrics {
    listen: Option<String>,
}

/// Where the metrics endpoint listens when `[metrics]` gives no `listen`.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9811";

/// The `[metrics]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsOptions {
    /// An IP address and a fixed port; loopback by default. Another
    /// address exposes validator names, health and store sizes to that
    /// network (see docs/bastion.md).
    pub listen: std::net::SocketAddr,
}

/// `[backups]`: see [`BackupStoreOptions`] for the meaning and defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawBackups {
    keep: Option<usize>,
    quota_bytes: Option<u64>,
    idle_timeout: Option<String>,
    header_timeout: Option<String>,
    max_connections: Option<usize>,
    max_connections_per_validator: Option<usize>,
}

/// `[logs]`: see [`LogStoreOptions`] for the meaning and defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawLogs {
    quota_bytes: Option<u64>,
    max_age: Option<String>,
    archive_users: Option<Vec<String>>,
}

/// Retention of the log segments (objects of kind `log`), per validator:
/// the `[logs]` table, defaults filled in. Logs are a ring, not a record:
/// a new segment that would pass the quota removes the oldest ones (and
/// their signatures) instead of being refused, and segments older than
/// `max_age` go too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogStoreOptions {
    /// Bytes of log objects kept per validator (default 1 GiB).
    pub quota_bytes: u64,
    /// Log objects older than this (by arrival) are removed (default 30 days).
    pub max_age: Duration,
    /// Accounts (names or uids) the store also serves, for `list` and `get`
    /// of log objects only: the operators' account that `rpc-relay` runs as
    /// in the separate-users layout (default none). Resolved at start.
    pub archive_users: Vec<String>,
}

impl Default for LogStoreOptions {
    fn default() -> Self {
        LogStoreOptions {
            quota_bytes: DEFAULT_LOG_QUOTA_BYTES,
            max_age: DEFAULT_LOG_MAX_AGE,
            archive_users: Vec::new(),
        }
    }
}

/// `[health]`: see [`HealthCheckOptions`] for the meaning and defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawHealth {
    interval: Option<String>,
    timeout: Option<String>,
}

/// `[client]`: see [`ClientIdentity`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawClient {
    operator: Option<String>,
    key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawValidator {
    name: Option<String>,
    socket: Option<PathBuf>,
    pin: Option<String>,
}

/// Tunables of the backup store: the `[backups]` table, defaults filled
/// in, which `serve-backups` flags override.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupStoreOptions {
    /// Files kept per validator (at least 1, at most the protocol's listing
    /// limit).
    pub keep: usize,
    /// Bytes stored per validator, after retention.
    pub quota_bytes: u64,
    /// How long a header frame may take to arrive whole (a payload gets
    /// this plus one second per 64 KiB); a client that stalls is
    /// disconnected.
    pub idle_timeout: Duration,
    /// How long a new connection may take to send its first complete
    /// header; one that sends nothing is closed and frees its slot.
    pub header_timeout: Duration,
    /// Connections served at once (all validators together).
    pub max_connections: usize,
    /// Connections one validator may hold at once (counted from its first
    /// request naming it); one more is answered `busy` and closed, so one
    /// validator's key cannot starve the others. At most `max_connections`.
    pub max_connections_per_validator: usize,
}

impl Default for BackupStoreOptions {
    fn default() -> Self {
        BackupStoreOptions {
            keep: DEFAULT_KEEP,
            quota_bytes: DEFAULT_QUOTA_BYTES,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_validator: DEFAULT_MAX_CONNECTIONS_PER_VALIDATOR,
        }
    }
}

/// The `[health]` table, defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthCheckOptions {
    /// Time between two probes of one validator (plus jitter).
    pub interval: Duration,
    /// Bound on one probe: connecting and receiving the greeting line.
    pub timeout: Duration,
}

impl Default for HealthCheckOptions {
    fn default() -> Self {
        HealthCheckOptions {
            interval: DEFAULT_HEALTH_INTERVAL,
            timeout: DEFAULT_HEALTH_TIMEOUT,
        }
    }
}

/// Whether loading opens the `[client]` key file to check it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyFile {
    Check,
    Skip,
}

/// A validated bastion configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BastionConfig {
    pub listen_socket: PathBuf,
    pub backup_dir: PathBuf,
    /// The health status `run` maintains and `status` reads.
    pub status_file: PathBuf,
    /// `tunnel-user`: the account the validators' keys log in as (a name or
    /// a numeric uid), in the separate-users layout. The store then gives
    /// its socket to that user's primary group (mode 0660), accepts
    /// connections from that user, root and its own user only, and refuses
    /// to run as that user or with a `backup-dir` that user could move.
    /// Resolved when the store binds, not here (loading has no side
    /// effects). `None`: the older one-account layout, where the daemon
    /// runs as the tunnel user (warned about at start).
    pub tunnel_user: Option<String>,
    /// `[backups]`, defaults filled in.
    pub backups: BackupStoreOptions,
    /// `[logs]`, defaults filled in.
    pub logs: LogStoreOptions,
    /// `[health]`, defaults filled in.
    pub health: HealthCheckOptions,
    /// `[client]`: how the bastion logs in to the supervisors' RPC.
    pub client: Option<ClientIdentity>,
    /// `[alerts]`: the built-in alert sinks, when configured.
    pub alerts: Option<AlertsConfig>,
    pub validators: Vec<Validator>,
    /// `[metrics]`: the Prometheus endpoint; `None`: off.
    pub metrics: Option<MetricsOptions>,
}

/// The bastion's operator identity on the supervisors' control RPC: the
/// name of its `[[operator]]` entry there (which should have role
/// `viewer`) and its private key on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub operator: String,
    /// An unencrypted OpenSSH ed25519 private key, mode 0600 (or stricter).
    pub key: PathBuf,
}

impl ClientIdentity {
    /// Load the key (read, checked, zeroized on drop).
    pub fn load_key(&self) -> Result<OperatorKey, palisade_client::CallError> {
        OperatorKey::load(&self.operator, &self.key)
    }
}

/// A validator host, reached through the Unix socket its supervisor
/// publishes on this bastion with an SSH reverse forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validator {
    pub name: String,
    pub socket: PathBuf,
    /// The supervisor's RPC certificate fingerprint (`init-rpc`); with
    /// `[client]` it enables the authenticated health check and `call`.
    pub pin: Option<Fingerprint>,
}

impl BastionConfig {
    /// The validator named `name`, or a message listing the configured
    /// ones.
    pub fn validator(&self, name: &str) -> Result<&Validator, String> {
        self.validators
            .iter()
            .find(|validator| validator.name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = self.validators.iter().map(|v| v.name.as_str()).collect();
                format!(
                    "unknown validator {name:?}: the configured validators are {}",
                    names.join(", ")
                )
            })
    }

    /// What the health check of `validator` does, for messages.
    pub fn health_check_kind(&self, validator: &Validator) -> &'static str {
        match (&self.client, &validator.pin) {
            (Some(_), Some(_)) => "greeting, then TLS + login + health",
            (Some(_), None) => "greeting only (no pin)",
            (None, _) => "greeting only (no [client])",
        }
    }
}

impl BastionConfig {
    /// Read and validate `path`, including the `[client]` key file (it
    /// must exist, be unreadable to group and others, and hold an
    /// unencrypted OpenSSH ed25519 key). For `run` and `check-config`.
    pub fn load(path: &Path) -> Result<BastionConfig, ConfigError> {
        BastionConfig::load_with(path, KeyFile::Check)
    }

    /// Read and validate `path` without opening the `[client]` key file:
    /// for the commands that never use it (`status`, `serve-backups`,
    /// `backup-session`; `call` loads the key itself, so that an unusable
    /// key gets palisade-ctl's exit code).
    pub fn load_skipping_key(path: &Path) -> Result<BastionConfig, ConfigError> {
        BastionConfig::load_with(path, KeyFile::Skip)
    }

    fn load_with(path: &Path, key_file: KeyFile) -> Result<BastionConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        BastionConfig::parse_with(&text, path, key_file)
    }

    /// Validate `text`; `path` is only used in messages. Opens no file
    /// (the `[client]` key is not checked).
    #[cfg(test)]
    pub fn parse(text: &str, path: &Path) -> Result<BastionConfig, ConfigError> {
        BastionConfig::parse_with(text, path, KeyFile::Skip)
    }

    fn parse_with(
        text: &str,
        path: &Path,
        key_file: KeyFile,
    ) -> Result<BastionConfig, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|error| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: error.to_string().trim_end().to_string(),
        })?;
        validate(raw, key_file).map_err(|issues| ConfigError::Invalid {
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
             backups.header-timeout:  {}\n\
             backups.max-connections: {} ({} per validator)\n\
             logs.quota-bytes:        {}\n\
             logs.max-age:            {}\n\
             logs.archive-users:      {}\n\
             health.interval:         {}\n\
             health.timeout:          {}\n",
            self.listen_socket.display(),
            self.backup_dir.display(),
            self.status_file.display(),
            self.backups.keep,
            self.backups.quota_bytes,
            duration(self.backups.idle_timeout),
            duration(self.backups.header_timeout),
            self.backups.max_connections,
            self.backups.max_connections_per_validator,
            self.logs.quota_bytes,
            duration(self.logs.max_age),
            if self.logs.archive_users.is_empty() {
                "none".to_string()
            } else {
                self.logs.archive_users.join(", ")
            },
            duration(self.health.interval),
            duration(self.health.timeout),
        );
        out.push_str(&match &self.tunnel_user {
            Some(user) => format!("tunnel-user:             {user} (separate users)\n"),
            None => "tunnel-user:             not set: the validators' keys log in as the \
                     daemon's own user (docs/bastion.md, \"Separate users\")\n"
                .to_string(),
        });
        match &self.client {
            // The key's path only: key material is never printed.
            Some(client) => out.push_str(&format!(
                "client.operator:         {}\n\
                 client.key:              {}\n",
                client.operator,
                client.key.display()
            )),
            None => out.push_str(
                "client:                  none (health checks read the greeting only; \
                 `call` is unavailable)\n",
            ),
        }
        match &self.alerts {
            // Sink names and kinds only: URLs, tokens and keys are secrets.
            Some(alerts) => {
                out.push_str(&format!(
                    "alerts.source:           {}\n\
                     alerts.repeat-interval:  {}\n\
                     alerts.timeout:          {}\n",
                    alerts.source,
                    duration(alerts.repeat_interval),
                    duration(alerts.timeout),
                ));
                for sink in &alerts.sinks {
                    out.push_str(&format!(
                        "  alert sink {} ({}): max {} per hour, resolve messages {}\n",
                        sink.name,
                        sink.target.kind(),
                        sink.max_per_hour,
                        if sink.send_resolved { "on" } else { "off" }
                    ));
                }
            }
            None => out.push_str("alerts:                  none\n"),
        }
        out.push_str(&match &self.metrics {
            Some(metrics) => format!(
                "metrics.listen:          http://{}/metrics\n",
                metrics.listen
            ),
            None => "metrics:                 off (no [metrics])\n".to_string(),
        });
        out.push_str(&format!(
            "validators:              {}\n",
            self.validators.len()
        ));
        for validator in &self.validators {
            out.push_str(&format!(
                "  {} via {}\n",
                validator.name,
                validator.socket.display()
            ));
            out.push_str(&format!(
                "    pin:          {}\n    health check: {}\n",
                validator
                    .pin
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_else(|| "none".into()),
                self.health_check_kind(validator)
            ));
        }
        out
    }
}

fn validate(raw: RawConfig, key_file: KeyFile) -> Result<BastionConfig, Vec<Issue>> {
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

    if let Some(user) = &raw.tunnel_user
        && let Some(reason) = user_name_problem(user)
    {
        report("tunnel-user".into(), reason);
    }

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

    let defaults = BackupStoreOptions::default();
    let backups = BackupStoreOptions {
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
        header_timeout: duration(
            &mut report,
            "backups.header-timeout",
            raw.backups.header_timeout.as_deref(),
            defaults.header_timeout,
            HEADER_TIMEOUT_RANGE,
        ),
        max_connections_per_validator: defaults.max_connections_per_validator,
    };
    let backups = BackupStoreOptions {
        max_connections_per_validator: match raw.backups.max_connections_per_validator {
            Some(max) if max == 0 || max > backups.max_connections => {
                report(
                    "backups.max-connections-per-validator".into(),
                    format!(
                        "{max} must be between 1 and backups.max-connections ({})",
                        backups.max_connections
                    ),
                );
                backups
                    .max_connections_per_validator
                    .min(backups.max_connections)
            }
            Some(max) => max,
            None => backups
                .max_connections_per_validator
                .min(backups.max_connections),
        },
        ..backups
    };

    let log_defaults = LogStoreOptions::default();
    let logs = LogStoreOptions {
        quota_bytes: match raw.logs.quota_bytes {
            Some(quota) if quota < palisade_wire::backup_store::MAX_LOG_PAYLOAD_BYTES as u64 => {
                report(
                    "logs.quota-bytes".into(),
                    format!(
                        "{quota} must be at least {} (one segment)",
                        palisade_wire::backup_store::MAX_LOG_PAYLOAD_BYTES
                    ),
                );
                log_defaults.quota_bytes
            }
            Some(quota) => quota,
            None => log_defaults.quota_bytes,
        },
        max_age: duration(
            &mut report,
            "logs.max-age",
            raw.logs.max_age.as_deref(),
            log_defaults.max_age,
            LOG_MAX_AGE_RANGE,
        ),
        archive_users: raw.logs.archive_users.unwrap_or_default(),
    };
    for user in &logs.archive_users {
        if let Some(reason) = user_name_problem(user) {
            report("logs.archive-users".into(), reason);
        }
        if raw.tunnel_user.as_deref() == Some(user.as_str()) {
            report(
                "logs.archive-users".into(),
                format!("{user:?} is the tunnel-user, which the store serves fully already"),
            );
        }
    }

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

    let client = raw.client.and_then(|raw| {
        let operator = match raw.operator {
            Some(operator) => {
                if let Some(reason) = validator_name_problem(&operator) {
                    report("client.operator".into(), reason);
                }
                operator
            }
            None => {
                report(
                    "client.operator".into(),
                    "is required: the name of this bastion's [[operator]] entry in the \
                     supervisors' configuration"
                        .into(),
                );
                String::new()
            }
        };
        let key = match raw.key {
            Some(key) if !key.is_absolute() => {
                report(
                    "client.key".into(),
                    format!("'{}' must be an absolute path", key.display()),
                );
                None
            }
            Some(key) => {
                if key_file == KeyFile::Check
                    && let Some(reason) = key_file_problem(&operator, &key)
                {
                    report("client.key".into(), reason);
                }
                Some(key)
            }
            None => {
                report(
                    "client.key".into(),
                    "is required: the bastion's unencrypted OpenSSH ed25519 private key \
                     (ssh-keygen -t ed25519 -N '')"
                        .into(),
                );
                None
            }
        };
        key.map(|key| ClientIdentity { operator, key })
    });

    let alerts = crate::alerts::config::validate(
        raw.alerts,
        match key_file {
            KeyFile::Check => SecretFiles::Check,
            KeyFile::Skip => SecretFiles::Skip,
        },
        &mut report,
    );

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
                if let Some(reason) = validator_name_problem(&name) {
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
        let pin = entry.pin.and_then(|text| match Fingerprint::parse(&text) {
            Ok(pin) => Some(pin),
            Err(reason) => {
                report(
                    key("pin"),
                    format!(
                        "{reason} (the supervisor's RPC certificate, printed by \
                         `palisade-supervisor init-rpc` or `rpc-fingerprint`)"
                    ),
                );
                None
            }
        });
        validators.push(Validator { name, socket, pin });
    }

    let metrics = raw.metrics.and_then(|metrics| {
        let text = metrics
            .listen
            .unwrap_or_else(|| DEFAULT_METRICS_LISTEN.to_string());
        match text.trim().parse::<std::net::SocketAddr>() {
            Ok(listen) if listen.port() != 0 => Some(MetricsOptions { listen }),
            Ok(_) => {
                report(
                    "metrics.listen".into(),
                    format!("'{text}' has port 0: a fixed port is needed (Prometheus names it)"),
                );
                None
            }
            Err(_) => {
                report(
                    "metrics.listen".into(),
                    format!("'{text}' is not an IP address and port (e.g. \"127.0.0.1:9811\")"),
                );
                None
            }
        }
    });

    if issues.is_empty() {
        Ok(BastionConfig {
            metrics,
            listen_socket,
            backup_dir,
            status_file,
            tunnel_user: raw.tunnel_user,
            backups,
            logs,
            health,
            client,
            alerts,
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

/// What is wrong with the `[client]` key file, checked as `palisade-ctl`
/// checks its key (the key is read and dropped at once).
fn key_file_problem(operator: &str, path: &Path) -> Option<String> {
    match OperatorKey::load(operator, path) {
        Ok(_) => None,
        Err(palisade_client::CallError::Key { reason, .. })
            if reason.starts_with("the key has a passphrase") =>
        {
            Some(format!(
                "'{}': the key has a passphrase; the bastion needs an unencrypted key \
                 (a dedicated one, readable only by the tunnel user)",
                path.display()
            ))
        }
        Err(palisade_client::CallError::Key { reason, .. }) => {
            Some(format!("'{}': {reason}", path.display()))
        }
        Err(other) => Some(format!("'{}': {other}", path.display())),
    }
}

/// Why `name` cannot be a `tunnel-user`: a POSIX portable user name
/// (letters, digits, `.`, `_`, `-`, not starting with `-`; Debian's
/// `useradd` allows a trailing `$` too) of at most 32 bytes, or a numeric
/// uid other than 0.
fn user_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".into());
    }
    if name.bytes().all(|byte| byte.is_ascii_digit()) {
        return match name.parse::<u32>() {
            Ok(0) => Some(
                "must not be root (uid 0): the validators' keys log in as an unprivileged account"
                    .into(),
            ),
            Ok(_) => None,
            Err(_) => Some(format!("{name:?} is not a valid uid")),
        };
    }
    if name == "root" {
        return Some(
            "must not be root: the validators' keys log in as an unprivileged account".into(),
        );
    }
    let body = name.strip_suffix('$').unwrap_or(name);
    if name.len() > 32
        || name.starts_with('-')
        || !body
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
    {
        return Some(format!(
            "{name:?} is not a user name (letters, digits, '.', '_', '-', at most 32 bytes)"
        ));
    }
    None
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
                    socket: "/run/palisade-bastion/val-a.sock".into(),
                    pin: None,
                },
                Validator {
                    name: "val_b.2".into(),
                    socket: "/run/palisade-bastion/val-b.sock".into(),
                    pin: None,
                },
            ]
        );
        assert!(
            config
                .summary()
                .contains("val-a via /run/palisade-bastion/val-a.sock")
        );
        // Everything optional has its documented default.
        assert_eq!(config.tunnel_user, None);
        assert!(
            config
                .summary()
                .contains("tunnel-user:             not set")
        );
        for user in ["palisade-tunnel", "998", "pt_x.y-z", "machine$"] {
            let text = format!("tunnel-user = {user:?}\n{GOOD}");
            let config = parse(&text).unwrap();
            assert_eq!(config.tunnel_user.as_deref(), Some(user));
            assert!(
                config
                    .summary()
                    .contains(&format!("tunnel-user:             {user} (separate users)"))
            );
        }
        assert_eq!(
            config.status_file,
            PathBuf::from("/run/palisade-bastion/status.json")
        );
        assert_eq!(config.backups, BackupStoreOptions::default());
        assert_eq!(config.backups.keep, 500);
        assert_eq!(config.backups.quota_bytes, 256 * 1024 * 1024);
        assert_eq!(config.backups.idle_timeout, Duration::from_secs(30));
        assert_eq!(config.backups.max_connections, 64);
        assert_eq!(config.backups.max_connections_per_validator, 4);
        assert_eq!(config.backups.header_timeout, Duration::from_secs(5));
        assert_eq!(config.health.interval, Duration::from_secs(10));
        assert_eq!(config.health.timeout, Duration::from_secs(3));
        // No [client]: greeting-only checks, said so.
        assert_eq!(config.client, None);
        assert!(
            config
                .summary()
                .contains("client:                  none (health checks read the greeting only"),
            "{}",
            config.summary()
        );
    }

    #[test]
    fn logs_table_has_defaults_and_bad_values_are_named() {
        let config = parse(GOOD).unwrap();
        assert_eq!(config.logs, LogStoreOptions::default());
        assert_eq!(config.logs.quota_bytes, 1024 * 1024 * 1024);
        assert!(config.summary().contains("logs.max-age:            30days"));
        let good = GOOD.replacen(
            "\n[[validator]]",
            "\n[logs]\nquota-bytes = 5000000\nmax-age = \"2h\"\narchive-users = [\"palisade-ops\"]\n\n[[validator]]",
            1,
        );
        let config = parse(&good).unwrap();
        assert_eq!(
            config.logs,
            LogStoreOptions {
                quota_bytes: 5_000_000,
                max_age: Duration::from_secs(7200),
                archive_users: vec!["palisade-ops".into()],
            }
        );
        let bad = GOOD.replacen(
            "\n[[validator]]",
            "\n[logs]\nquota-bytes = 10\nmax-age = \"1s\"\nkeep = 3\n\n[[validator]]",
            1,
        );
        let error = parse(&bad).unwrap_err().to_string();
        assert!(error.contains("keep"), "{error}");
        let bad = GOOD.replacen(
            "\n[[validator]]",
            "\n[logs]\nquota-bytes = 10\nmax-age = \"1s\"\narchive-users = [\"a b\"]\n\n[[validator]]",
            1,
        );
        let error = parse(&bad).unwrap_err().to_string();
        assert!(error.contains("logs.quota-bytes"), "{error}");
        assert!(error.contains("must be at least"), "{error}");
        assert!(error.contains("logs.max-age"), "{error}");
        assert!(error.contains("logs.archive-users"), "{error}");
    }

    const PIN: &str = "sha256:3f2a00000000000000000000000000000000000000000000000000000000beef";

    fn with_client(client: &str, pins: [Option<&str>; 2]) -> String {
        let pin = |pin: Option<&str>| pin.map(|p| format!("pin = \"{p}\"\n")).unwrap_or_default();
        format!(
            "listen-socket = \"/run/b/l.sock\"\nbackup-dir = \"/b\"\n{client}\n\
             [[validator]]\nname = \"val-a\"\nsocket = \"/run/b/a.sock\"\n{}\
             [[validator]]\nname = \"val-b\"\nsocket = \"/run/b/b.sock\"\n{}",
            pin(pins[0]),
            pin(pins[1])
        )
    }

    #[test]
    fn client_and_pins_are_read_and_summarized_without_key_material() {
        let client =
            "[client]\noperator = \"bastion-b1\"\nkey = \"/etc/palisade-bastion/operator_ed25519\"";
        // Upper-case hex is accepted and lowered.
        let config = parse(&with_client(
            client,
            [Some(&PIN.to_uppercase().replace("SHA256", "sha256")), None],
        ))
        .unwrap();
        assert_eq!(
            config.client,
            Some(ClientIdentity {
                operator: "bastion-b1".into(),
                key: "/etc/palisade-bastion/operator_ed25519".into(),
            })
        );
        assert_eq!(config.validators[0].pin.as_ref().unwrap().as_str(), PIN);
        assert_eq!(config.validators[1].pin, None);
        let summary = config.summary();
        for expected in [
            "client.operator:         bastion-b1",
            "client.key:              /etc/palisade-bastion/operator_ed25519",
            &format!(
                "    pin:          {PIN}\n    health check: greeting, then TLS + login + health"
            ),
            "    pin:          none\n    health check: greeting only (no pin)",
        ] {
            assert!(summary.contains(expected), "{expected:?} in\n{summary}");
        }
        assert_eq!(config.validator("val-b").unwrap().name, "val-b");
        assert_eq!(
            config.validator("val-x").unwrap_err(),
            "unknown validator \"val-x\": the configured validators are val-a, val-b"
        );

        // Pins without [client]: accepted, greeting only.
        let config = parse(&with_client("", [Some(PIN), Some(PIN)])).unwrap();
        assert_eq!(config.client, None);
        assert!(
            config
                .summary()
                .contains("health check: greeting only (no [client])"),
            "{}",
            config.summary()
        );
    }

    #[test]
    fn each_invalid_client_or_pin_is_named() {
        let key = "key = \"/etc/k\"";
        let sha1 = PIN.replace("sha256:", "sha1:");
        let not_hex = format!("{}g", &PIN[..PIN.len() - 1]);
        // (client table, pins, expected key, expected reason fragment)
        let rows: Vec<(String, [Option<&str>; 2], &str, &str)> = vec![
            (
                format!("[client]\n{key}"),
                [None, None],
                "client.operator",
                "is required: the name of this bastion's [[operator]] entry",
            ),
            (
                "[client]\noperator = \"b1\"".into(),
                [None, None],
                "client.key",
                "is required: the bastion's unencrypted OpenSSH ed25519 private key",
            ),
            (
                "[client]\noperator = \"b1\"\nkey = \"operator_ed25519\"".into(),
                [None, None],
                "client.key",
                "'operator_ed25519' must be an absolute path",
            ),
            (
                format!("[client]\noperator = \"b 1\"\n{key}"),
                [None, None],
                "client.operator",
                "may use only ASCII letters",
            ),
            (
                format!("[client]\noperator = \"\"\n{key}"),
                [None, None],
                "client.operator",
                "must not be empty",
            ),
            (
                String::new(),
                [Some("3f2a"), None],
                "validator[1].pin",
                "'3f2a' is not a certificate pin: expected sha256:<64 hex digits>",
            ),
            (
                String::new(),
                [None, Some(&PIN[..PIN.len() - 1])],
                "validator[2].pin",
                "is not a certificate pin",
            ),
            (
                String::new(),
                [Some(&sha1), None],
                "validator[1].pin",
                "printed by `palisade-supervisor init-rpc`",
            ),
            (
                String::new(),
                [Some(&not_hex), None],
                "validator[1].pin",
                "is not a certificate pin",
            ),
        ];
        for (client, pins, key, reason) in rows {
            let input = with_client(&client, pins);
            match parse(&input) {
                Err(ConfigError::Invalid { issues, .. }) => {
                    assert_eq!(issues.len(), 1, "{input:?}: {issues:?}");
                    assert_eq!(issues[0].key, key, "{input:?}");
                    assert!(issues[0].reason.contains(reason), "{input:?}: {issues:?}");
                }
                other => panic!("{input:?}: expected Invalid, got {other:?}"),
            }
        }
        // Unknown or mistyped keys in the new tables are refused.
        for (client, expected) in [
            (
                "[client]\noperator = \"b1\"\nkey = \"/k\"\nrole = \"viewer\"",
                "unknown field `role`",
            ),
            (
                "[client]\nname = \"b1\"\nkey = \"/k\"",
                "unknown field `name`",
            ),
            ("[client]\noperator = 5\nkey = \"/k\"", "invalid type"),
            (
                "[client]\noperator = \"b1\"\nkey-file = \"/k\"",
                "unknown field `key-file`",
            ),
        ] {
            let error = parse(&with_client(client, [None, None])).unwrap_err();
            assert!(
                matches!(error, ConfigError::Syntax { .. }),
                "{client:?}: {error}"
            );
            assert!(error.to_string().contains(expected), "{client:?}: {error}");
        }
        let error = parse(
            &with_client("", [None, None])
                .replace("name = \"val-a\"", "name = \"val-a\"\nfingerprint = \"x\""),
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("unknown field `fingerprint`"),
            "{error}"
        );
        let error = parse(
            &with_client("", [None, None]).replace("name = \"val-a\"", "name = \"val-a\"\npin = 5"),
        )
        .unwrap_err();
        assert!(error.to_string().contains("invalid type"), "{error}");
    }

    /// `ssh-keygen -t TYPE` into `dir/name` with `passphrase`, mode `mode`.
    fn keygen(dir: &Path, name: &str, kind: &str, passphrase: &str, mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        let status = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", kind, "-N", passphrase, "-C", name, "-f"])
            .arg(&path)
            .status()
            .expect("ssh-keygen runs");
        assert!(status.success());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn load_checks_the_client_key_file_and_load_skipping_key_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let good = keygen(dir.path(), "good", "ed25519", "", 0o600);
        let read_only = keygen(dir.path(), "read_only", "ed25519", "", 0o400);
        let open = keygen(dir.path(), "open", "ed25519", "", 0o644);
        let group = keygen(dir.path(), "group", "ed25519", "", 0o640);
        let encrypted = keygen(dir.path(), "encrypted", "ed25519", "a passphrase", 0o600);
        let ecdsa = keygen(dir.path(), "ecdsa", "ecdsa", "", 0o600);
        let garbage = dir.path().join("garbage");
        std::fs::write(&garbage, "not a key\n").unwrap();
        std::fs::set_permissions(
            &garbage,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let missing = dir.path().join("missing");
        let file = dir.path().join("bastion.toml");
        let write = |key: &Path| {
            let client = format!("[client]\noperator = \"b1\"\nkey = \"{}\"", key.display());
            std::fs::write(&file, with_client(&client, [Some(PIN), None])).unwrap();
        };
        for key in [&good, &read_only] {
            write(key);
            let config = BastionConfig::load(&file).unwrap();
            assert_eq!(config.client.as_ref().unwrap().key, *key);
            // The loaded key is usable, and never shows in Debug output.
            let loaded = config.client.as_ref().unwrap().load_key().unwrap();
            assert!(format!("{loaded:?}").contains("REDACTED"));
        }
        // (key file, reason fragment)
        let rows = [
            (&open, "permissions 644 are too open"),
            (&group, "permissions 640 are too open"),
            (
                &encrypted,
                "the key has a passphrase; the bastion needs an unencrypted key",
            ),
            (&ecdsa, "not ed25519"),
            (&garbage, "not an OpenSSH private key"),
            (&missing, "No such file or directory"),
        ];
        for (key, reason) in rows {
            write(key);
            match BastionConfig::load(&file) {
                Err(ConfigError::Invalid { issues, .. }) => {
                    assert_eq!(issues.len(), 1, "{key:?}: {issues:?}");
                    assert_eq!(issues[0].key, "client.key");
                    assert!(issues[0].reason.contains(reason), "{key:?}: {issues:?}");
                    assert!(
                        issues[0].reason.contains(&key.display().to_string()),
                        "{issues:?}"
                    );
                }
                other => panic!("{key:?}: expected Invalid, got {other:?}"),
            }
            // The commands that never use the key do not open it.
            let config = BastionConfig::load_skipping_key(&file).unwrap();
            assert_eq!(config.client.as_ref().unwrap().key, *key);
        }
        // A key problem is reported with the others, all at once.
        let client = format!("[client]\noperator = \"b1\"\nkey = \"{}\"", open.display());
        std::fs::write(&file, with_client(&client, [Some("sha256:00"), None])).unwrap();
        let Err(ConfigError::Invalid { issues, .. }) = BastionConfig::load(&file) else {
            panic!("expected Invalid");
        };
        let keys: Vec<&str> = issues.iter().map(|issue| issue.key.as_str()).collect();
        assert_eq!(keys, ["client.key", "validator[1].pin"]);
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
header-timeout = "200ms"
max-connections = 3
max-connections-per-validator = 2

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
            BackupStoreOptions {
                keep: 7,
                quota_bytes: 1000,
                idle_timeout: Duration::from_millis(500),
                header_timeout: Duration::from_millis(200),
                max_connections: 3,
                max_connections_per_validator: 2,
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
        let rows: [(&str, &str, &str, &str); 21] = [
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
                "[backups]\nmax-connections-per-validator = 0",
                "backups.max-connections-per-validator",
                "between 1 and backups.max-connections (64)",
            ),
            (
                "",
                "[backups]\nmax-connections = 8\nmax-connections-per-validator = 9",
                "backups.max-connections-per-validator",
                "between 1 and backups.max-connections (8)",
            ),
            (
                "",
                "[backups]\nheader-timeout = \"2m\"",
                "backups.header-timeout",
                "must be between 10ms and 1m",
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
            (
                format!("tunnel-user = \"\"\n{base}[[validator]]\nname=\"a\"\nsocket=\"/a\""),
                "tunnel-user",
                "must not be empty",
            ),
            (
                format!("tunnel-user = \"root\"\n{base}[[validator]]\nname=\"a\"\nsocket=\"/a\""),
                "tunnel-user",
                "must not be root",
            ),
            (
                format!("tunnel-user = \"0\"\n{base}[[validator]]\nname=\"a\"\nsocket=\"/a\""),
                "tunnel-user",
                "must not be root (uid 0)",
            ),
            (
                format!("tunnel-user = \"a b\"\n{base}[[validator]]\nname=\"a\"\nsocket=\"/a\""),
                "tunnel-user",
                "is not a user name",
            ),
            (
                format!("tunnel-user = \"-x\"\n{base}[[validator]]\nname=\"a\"\nsocket=\"/a\""),
                "tunnel-user",
                "is not a user name",
            ),
            (
                format!("tunnel-user = \"99999999999\"\n{base}[[validator]]\nname=\"a\"\nsocket=\"/a\""),
                "tunnel-user",
                "is not a valid uid",
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
    fn metrics_are_off_by_default_on_loopback_when_enabled_and_checked() {
        let base = "listen-socket = \"/run/pb/bastion.sock\"\nbackup-dir = \"/var/lib/pb\"\n\
                    [[validator]]\nname = \"val-a\"\nsocket = \"/run/pb/val-a.sock\"\n";
        assert_eq!(parse(base).unwrap().metrics, None);
        let on = parse(&format!("{base}[metrics]\n")).unwrap();
        assert_eq!(
            on.metrics.unwrap().listen,
            DEFAULT_METRICS_LISTEN.parse().unwrap()
        );
        assert!(on.summary().contains("http://127.0.0.1:9811/metrics"));
        let set = parse(&format!("{base}[metrics]\nlisten = \"127.0.0.1:19811\"\n")).unwrap();
        assert_eq!(set.metrics.unwrap().listen.port(), 19811);
        for (listen, reason) in [
            ("127.0.0.1:0", "port 0"),
            ("localhost:9811", "not an IP address and port"),
        ] {
            let error = parse(&format!("{base}[metrics]\nlisten = \"{listen}\"\n")).unwrap_err();
            let ConfigError::Invalid { issues, .. } = &error else {
                panic!("expected Invalid, got {error}");
            };
            assert_eq!(issues[0].key, "metrics.listen");
            assert!(issues[0].reason.contains(reason), "{error}");
        }
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
