//! Configuration: a TOML file and Cosmovisor's environment variables,
//! parsed raw, then validated into a [`Config`] whose types carry the
//! preconditions.
//!
//! Precedence, as in Cosmovisor: an environment variable overrides the same
//! setting in the file, which overrides the default. Validation collects
//! *every* problem and reports them together, each naming where the value
//! came from (`file:key` or `environment variable NAME`) and why it is wrong.
//! Loading has no side effects: a bad configuration changes nothing.

mod account;
mod eip;
mod failover;
mod host;
mod logs;
mod metrics;
mod operators;
mod tunnels;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::upgrade::download::ChecksumPolicy;

pub use account::NodeAccount;
pub use eip::{
    CredentialSource, EipAuto, EipSettings, EipTarget, RawBastionEip, RawEip, default_profile_file,
};
pub use failover::{FailoverSettings, RawFailover, TakeoverMode, valid_host_id};
pub use host::{HostSettings, RawHost, check_shutdown_command};
pub use logs::{LogFormat, LogSettings, RawLogs, parse_recipient};
pub use metrics::{MetricsSettings, RawMetrics, loopback_address};
pub use operators::{OperatorSettings, RawOperator, parse_operator_key};
pub use tunnels::{
    BastionSettings, DEFAULT_SENTRY_PORT, MAX_SOCKET_PATH_BYTES, RawBastion, RawForward, RawRpc,
    RawSentry, RawTunnel, RpcSettings, SentrySettings, TunnelSettings, bastion_entry_socket,
};

/// Everything wrong with a configuration, reported at once.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML or has unknown keys.
    #[error("config file {path}: {message}")]
    Syntax { path: PathBuf, message: String },
    /// One or more values are invalid.
    #[error("invalid configuration:\n{}", .0.iter().map(|issue| format!("  - {issue}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<ConfigIssue>),
}

/// One invalid value: where it came from and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub origin: Origin,
    pub reason: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.origin, self.reason)
    }
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Built-in default.
    Default,
    /// `file:section.key`.
    File {
        path: PathBuf,
        key: Cow<'static, str>,
    },
    /// An environment variable.
    Env(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => write!(f, "default"),
            Origin::File { path, key } => write!(f, "{}: key `{key}`", path.display()),
            Origin::Env(name) => write!(f, "environment variable {name}"),
        }
    }
}

/// The configuration file as written, before validation. Every key is
/// optional; defaults are documented here and in `docs/configuration.md`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawConfig {
    #[serde(default)]
    pub daemon: RawDaemon,
    #[serde(default)]
    pub upgrade: RawUpgrade,
    #[serde(default)]
    pub restart: RawRestart,
    #[serde(default)]
    pub output: RawOutput,
    /// Present → the key vault is enabled and the supervisor starts locked.
    pub vault: Option<RawVault>,
    /// Sign-state backups (require `[vault]`: they are signed with its key).
    pub backup: Option<RawBackup>,
    /// The control socket.
    #[serde(default)]
    pub rpc: RawRpc,
    /// Settings shared by the bastion tunnels.
    pub tunnel: Option<RawTunnel>,
    /// One SSH tunnel per bastion.
    #[serde(default)]
    pub bastion: Vec<RawBastion>,
    /// Who may log in to the control RPC (none by default).
    #[serde(default)]
    pub operator: Vec<RawOperator>,
    /// The host itself (the `host.shutdown` command).
    #[serde(default)]
    pub host: RawHost,
    /// Several hosts for one validator (`docs/failover.md`).
    pub failover: Option<RawFailover>,
    /// Elastic IP rotation of the bastions (`docs/eip.md`).
    pub eip: Option<RawEip>,
    /// Log shipping to the bastions (`docs/log-format.md`).
    pub logs: Option<RawLogs>,
    /// The Prometheus endpoint (`docs/metrics.md`); absent: off.
    pub metrics: Option<RawMetrics>,
}

/// `[vault]`: keys encrypted at rest, decrypted into tmpfs on unlock.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawVault {
    /// Default `$DAEMON_HOME/palisade/vault`.
    pub dir: Option<PathBuf>,
    /// Default `/run/palisade/keys` (inside the unit's `RuntimeDirectory=`,
    /// which only the supervisor's user may write): where decrypted keys
    /// live while unlocked. Must be on tmpfs/ramfs, in a directory other
    /// users cannot write (see `vault::tmpfs`).
    pub tmpfs_dir: Option<PathBuf>,
    /// Unattended unlock from this file (explicit opt-in; no default).
    pub passphrase_file: Option<PathBuf>,
    /// Required: `"warn"` or `"refuse"` when swap is enabled (decrypted
    /// keys could be swapped to disk). A security choice, so no default.
    pub swap: Option<String>,
    /// Default `18`: scrypt work factor (log2 N) used by `init-vault`.
    /// Below 16 is for tests only.
    pub scrypt_work_factor: Option<u8>,
    /// Default none: offline recovery recipients (`age1…` or
    /// `ssh-ed25519 …`) that can open backups without the passphrase.
    pub recovery_recipients: Option<Vec<String>>,
}

/// `[backup]`: signed, age-encrypted sign-state backups.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawBackup {
    /// Default `$DAEMON_HOME/palisade/backups`: the local store.
    pub dir: Option<PathBuf>,
    /// Default none: more directory stores (another disk, a mount).
    pub extra_dirs: Option<Vec<PathBuf>>,
    /// Default `200`: backups kept per store (newest first).
    pub retention: Option<usize>,
    /// Default `300ms`: a burst of watermark changes makes one backup, at
    /// most this often (well under one block time).
    pub debounce: Option<String>,
    /// Default: `chain_id` from `$DAEMON_HOME/config/genesis.json`.
    pub chain_id: Option<String>,
    /// Default `"all"`: how many backup stores (the local directories and
    /// the bastions with `backup-command`) must be read before gaiad starts.
    pub start_quorum: Option<RawStartQuorum>,
    /// Default `60s`: how long unreachable stores are retried at start
    /// before the start is refused.
    pub start_quorum_wait: Option<String>,
}

/// `backup.start-quorum`: `"all"` or a count.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawStartQuorum {
    Count(i64),
    Word(String),
}

/// `[daemon]`: the supervised binary (Cosmovisor's `DAEMON_*`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawDaemon {
    /// `DAEMON_HOME`. Required. Holds `cosmovisor/`, `config/`, `data/`.
    pub home: Option<PathBuf>,
    /// `DAEMON_NAME`. Required. The binary's file name, e.g. `gaiad`.
    pub name: Option<String>,
    /// `DAEMON_SHUTDOWN_GRACE`. Default `10s`: time between SIGINT and
    /// SIGKILL when stopping the daemon.
    pub shutdown_grace: Option<String>,
    /// `DAEMON_RESTART_DELAY`. Default `0s`: pause after an upgrade's
    /// switch before the new binary starts.
    pub restart_delay: Option<String>,
    /// `DAEMON_RESTART_AFTER_UPGRADE`. Default `true`: start the new binary
    /// after an upgrade; `false` exits the supervisor after the switch.
    pub restart_after_upgrade: Option<bool>,
    /// Default `10`: CometBFT's `[consensus] double_sign_check_height`,
    /// written to `config.toml` when the supervisor manages the node's
    /// peering (a `[[bastion]]` with a `sentry`); `0` turns the check off.
    pub double_sign_check_height: Option<u64>,
    /// Default: the supervisor's own user. The account the node and the
    /// pre-upgrade scripts run under (a name or a uid; never root). Needs
    /// CAP_SETUID, CAP_SETGID, CAP_KILL, CAP_CHOWN and CAP_DAC_OVERRIDE
    /// (`docs/supervisor.md`, "The node's own account").
    pub user: Option<String>,
    /// Default: the primary group of `user`.
    pub group: Option<String>,
}

/// `[upgrade]`: how upgrades are detected, prepared and performed.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawUpgrade {
    /// `DAEMON_POLL_INTERVAL`. Default `300ms`: polling interval for
    /// `data/upgrade-info.json` (inotify is used too; polling is the net).
    pub poll_interval: Option<String>,
    /// `DAEMON_ALLOW_DOWNLOAD_BINARIES`. Default `false`.
    pub allow_download_binaries: Option<bool>,
    /// `DAEMON_DOWNLOAD_MUST_HAVE_CHECKSUM`. Default `true` (Cosmovisor
    /// defaults to false; Palisade never runs an unverified download unless
    /// told so explicitly).
    pub download_must_have_checksum: Option<bool>,
    /// Default `1GiB`-equivalent in bytes: the largest artifact accepted.
    pub download_max_bytes: Option<u64>,
    /// Default `10m`: the longest a single download may take.
    pub download_timeout: Option<String>,
    /// `UNSAFE_SKIP_BACKUP`. Default `false`: back up `data/` before upgrading.
    pub unsafe_skip_backup: Option<bool>,
    /// `DAEMON_DATA_BACKUP_DIR`. Default `DAEMON_HOME`.
    pub data_backup_dir: Option<PathBuf>,
    /// `DAEMON_PREUPGRADE_MAX_RETRIES`. Default `0`: how often
    /// `<binary> pre-upgrade` is retried when it exits 31.
    pub preupgrade_max_retries: Option<u32>,
    /// `COSMOVISOR_CUSTOM_PREUPGRADE`. Default none: a script in
    /// `$DAEMON_HOME/cosmovisor` run before `pre-upgrade`.
    pub custom_preupgrade: Option<PathBuf>,
    /// `COSMOVISOR_DISABLE_RECASE`. Default `false`: upgrade names are
    /// lower-cased before looking up `upgrades/<name>`.
    pub disable_recase: Option<bool>,
}

/// `[restart]`: crash restarts.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawRestart {
    /// Default `1s`: first delay after a crash; doubles per crash.
    pub backoff_initial: Option<String>,
    /// Default `60s`: the longest delay between restarts.
    pub backoff_max: Option<String>,
    /// Default `5`: crashes within `crash-loop-window` that count as a crash
    /// loop; the supervisor then stops restarting and says why.
    pub crash_loop_max_crashes: Option<u32>,
    /// Default `10m`.
    pub crash_loop_window: Option<String>,
    /// Default `60s`: a run at least this long resets the backoff.
    pub healthy_after: Option<String>,
}

/// `[output]`: the daemon's stdout/stderr.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawOutput {
    /// Default `4194304` (4 MiB): daemon output buffered between its pipes
    /// and the supervisor's own output. When full, output is dropped and
    /// counted — the daemon is never blocked.
    pub buffer_bytes: Option<usize>,
    /// Default `65536`: longer lines are truncated (and counted).
    pub max_line_bytes: Option<usize>,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub daemon_home: PathBuf,
    pub daemon_name: String,
    pub shutdown_grace: Duration,
    pub restart_delay: Duration,
    pub restart_after_upgrade: bool,
    /// `[consensus] double_sign_check_height` for the node's config.toml
    /// (written with the peering).
    pub double_sign_check_height: u64,
    /// `None`: the node runs as the supervisor's user.
    pub daemon_account: Option<NodeAccount>,
    pub poll_interval: Duration,
    pub allow_download_binaries: bool,
    pub checksum_policy: ChecksumPolicy,
    pub download_max_bytes: u64,
    pub download_timeout: Duration,
    pub data_backup: DataBackupPolicy,
    pub preupgrade_max_retries: u32,
    pub custom_preupgrade: Option<PathBuf>,
    pub recase: UpgradeNameCase,
    pub restart: RestartSettings,
    pub output: OutputSettings,
    /// The file this was loaded from, if any (for `config` output).
    pub source_file: Option<PathBuf>,
    /// `None`: no vault; keys are wherever gaiad's config says (Cosmovisor
    /// behaviour).
    pub vault: Option<VaultSettings>,
    /// The control socket.
    pub rpc: RpcSettings,
    /// `None`: no `[[bastion]]`, no tunnels.
    pub tunnels: Option<TunnelSettings>,
    /// `[[operator]]`: the RPC's operators (empty: only trusted local users).
    pub operators: Vec<OperatorSettings>,
    /// `[host]`: what a confirmed `host.shutdown` runs.
    pub host: HostSettings,
    /// `None`: this host is the validator's only signer.
    pub failover: Option<FailoverSettings>,
    /// `None`: no Elastic IP rotation.
    pub eip: Option<EipSettings>,
    /// `None`: no log shipping.
    pub logs: Option<LogSettings>,
    /// `None`: no metrics endpoint.
    pub metrics: Option<MetricsSettings>,
}

/// What to do when swap is enabled while the vault is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwapPolicy {
    Warn,
    Refuse,
}

/// The validated `[vault]` (and `[backup]`) settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultSettings {
    pub dir: PathBuf,
    pub tmpfs_dir: PathBuf,
    pub passphrase_file: Option<PathBuf>,
    pub swap: SwapPolicy,
    pub scrypt_work_factor: u8,
    pub recovery_recipients: Vec<String>,
    pub backup: BackupSettings,
}

/// The validated `[backup]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSettings {
    pub dir: PathBuf,
    pub extra_dirs: Vec<PathBuf>,
    pub retention: usize,
    pub debounce: Duration,
    /// `None`: read from `config/genesis.json` when needed.
    pub chain_id: Option<String>,
    /// Stores that must be read before gaiad starts.
    pub start_quorum: StartQuorum,
    /// How long unreachable stores are retried before the start is refused.
    pub start_quorum_wait: Duration,
}

/// How many backup stores the start rule must read (`backup.start-quorum`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartQuorum {
    /// Every configured store (the default).
    All,
    /// At least this many (1 or more).
    AtLeast(usize),
}

/// Whether `data/` is snapshotted before an upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataBackupPolicy {
    /// Snapshot into `backup_root` (the backup dir itself is created
    /// inside, named after the upgrade and time).
    Before { backup_root: PathBuf },
    /// `UNSAFE_SKIP_BACKUP=true`.
    Skip,
}

/// How upgrade names map to `upgrades/<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeNameCase {
    /// Lower-case names (Cosmovisor's default).
    Lower,
    /// Keep names as they are (`COSMOVISOR_DISABLE_RECASE=true`).
    AsIs,
}

/// Crash restart behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartSettings {
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub crash_loop_max_crashes: u32,
    pub crash_loop_window: Duration,
    pub healthy_after: Duration,
}

/// Output capture limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputSettings {
    pub buffer_bytes: usize,
    pub max_line_bytes: usize,
}

impl Config {
    /// `$DAEMON_HOME/cosmovisor`.
    pub fn cosmovisor_dir(&self) -> PathBuf {
        self.daemon_home.join("cosmovisor")
    }

    /// `$DAEMON_HOME/data/upgrade-info.json`.
    pub fn upgrade_info_path(&self) -> PathBuf {
        self.daemon_home.join("data").join("upgrade-info.json")
    }

    /// Load from an optional file plus the given environment.
    pub fn load(
        file: Option<&Path>,
        env: &BTreeMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let raw = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                toml::from_str::<RawConfig>(&text).map_err(|error| ConfigError::Syntax {
                    path: path.to_path_buf(),
                    message: error.to_string().trim_end().replace('\n', " "),
                })?
            }
            None => RawConfig::default(),
        };
        validate(raw, file, env)
    }

    /// Load using the process environment.
    pub fn load_from_process_env(file: Option<&Path>) -> Result<Config, ConfigError> {
        let env: BTreeMap<String, String> = std::env::vars().collect();
        Config::load(file, &env)
    }

    /// The effective configuration as `KEY=value` lines, Cosmovisor's
    /// `config` command style plus Palisade's own settings.
    pub fn describe(&self) -> Vec<(String, String)> {
        let duration = |value: Duration| humantime::format_duration(value).to_string();
        let (skip_backup, backup_dir) = match &self.data_backup {
            DataBackupPolicy::Before { backup_root } => {
                ("false".to_string(), backup_root.display().to_string())
            }
            DataBackupPolicy::Skip => ("true".to_string(), String::new()),
        };
        let fixed: Vec<(&'static str, String)> = vec![
            ("DAEMON_HOME", self.daemon_home.display().to_string()),
            ("DAEMON_NAME", self.daemon_name.clone()),
            (
                "DAEMON_ALLOW_DOWNLOAD_BINARIES",
                self.allow_download_binaries.to_string(),
            ),
            (
                "DAEMON_DOWNLOAD_MUST_HAVE_CHECKSUM",
                (self.checksum_policy == ChecksumPolicy::Required).to_string(),
            ),
            (
                "DAEMON_RESTART_AFTER_UPGRADE",
                self.restart_after_upgrade.to_string(),
            ),
            ("DAEMON_RESTART_DELAY", duration(self.restart_delay)),
            ("DAEMON_SHUTDOWN_GRACE", duration(self.shutdown_grace)),
            ("DAEMON_POLL_INTERVAL", duration(self.poll_interval)),
            ("UNSAFE_SKIP_BACKUP", skip_backup),
            ("DAEMON_DATA_BACKUP_DIR", backup_dir),
            (
                "DAEMON_PREUPGRADE_MAX_RETRIES",
                self.preupgrade_max_retries.to_string(),
            ),
            (
                "COSMOVISOR_CUSTOM_PREUPGRADE",
                self.custom_preupgrade
                    .as_ref()
                    .map(|path| path.display().to_string())
                    .unwrap_or_default(),
            ),
            (
                "COSMOVISOR_DISABLE_RECASE",
                (self.recase == UpgradeNameCase::AsIs).to_string(),
            ),
            (
                "restart.backoff-initial",
                duration(self.restart.backoff_initial),
            ),
            ("restart.backoff-max", duration(self.restart.backoff_max)),
            (
                "restart.crash-loop-max-crashes",
                self.restart.crash_loop_max_crashes.to_string(),
            ),
            (
                "restart.crash-loop-window",
                duration(self.restart.crash_loop_window),
            ),
            (
                "restart.healthy-after",
                duration(self.restart.healthy_after),
            ),
            ("output.buffer-bytes", self.output.buffer_bytes.to_string()),
            (
                "output.max-line-bytes",
                self.output.max_line_bytes.to_string(),
            ),
            (
                "upgrade.download-max-bytes",
                self.download_max_bytes.to_string(),
            ),
            ("upgrade.download-timeout", duration(self.download_timeout)),
            ("rpc.socket", self.rpc.socket.display().to_string()),
            ("rpc.name", self.rpc.name.clone()),
            (
                "host.shutdown-command",
                format!("{:?}", self.host.shutdown_command),
            ),
            (
                "daemon.double-sign-check-height",
                self.double_sign_check_height.to_string(),
            ),
            (
                "daemon.user",
                match &self.daemon_account {
                    None => "none (the supervisor's own)".to_string(),
                    Some(account) => format!(
                        "{} (uid {}, gid {})",
                        account.user, account.uid, account.gid
                    ),
                },
            ),
            ("rpc.tls-dir", self.rpc.tls_dir.display().to_string()),
            ("rpc.idle-timeout", duration(self.rpc.idle_timeout)),
            ("rpc.trusted-uids", format!("{:?}", self.rpc.trusted_uids)),
        ];
        let mut lines: Vec<(String, String)> = fixed
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value))
            .collect();
        let mut add = |key: String, value: String| lines.push((key, value));
        match &self.metrics {
            None => add("metrics".into(), "off (no [metrics])".into()),
            Some(metrics) => {
                add(
                    "metrics.listen".into(),
                    format!("http://{}/metrics", metrics.listen),
                );
                add(
                    "metrics.bastion-listen".into(),
                    metrics.bastion_listen.map_or_else(
                        || "none".to_string(),
                        |address| format!("{address} on every bastion"),
                    ),
                );
            }
        }
        let paths = |paths: &[PathBuf]| {
            paths
                .iter()
                .map(|path| path.display().to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        match &self.vault {
            None => add(
                "vault".into(),
                "none (keys stay where config.toml names them)".into(),
            ),
            Some(vault) => {
                add("vault.dir".into(), vault.dir.display().to_string());
                add(
                    "vault.tmpfs-dir".into(),
                    vault.tmpfs_dir.display().to_string(),
                );
                add(
                    "vault.passphrase-file".into(),
                    vault
                        .passphrase_file
                        .as_ref()
                        .map(|path| path.display().to_string())
                        .unwrap_or_default(),
                );
                add(
                    "vault.swap".into(),
                    match vault.swap {
                        SwapPolicy::Warn => "warn",
                        SwapPolicy::Refuse => "refuse",
                    }
                    .into(),
                );
                add(
                    "vault.scrypt-work-factor".into(),
                    vault.scrypt_work_factor.to_string(),
                );
                add(
                    "vault.recovery-recipients".into(),
                    vault.recovery_recipients.len().to_string(),
                );
                let backup = &vault.backup;
                add("backup.dir".into(), backup.dir.display().to_string());
                add("backup.extra-dirs".into(), paths(&backup.extra_dirs));
                add("backup.retention".into(), backup.retention.to_string());
                add("backup.debounce".into(), duration(backup.debounce));
                add(
                    "backup.chain-id".into(),
                    backup
                        .chain_id
                        .clone()
                        .unwrap_or_else(|| "(from config/genesis.json)".into()),
                );
                add(
                    "backup.start-quorum".into(),
                    match backup.start_quorum {
                        StartQuorum::All => "all".into(),
                        StartQuorum::AtLeast(count) => count.to_string(),
                    },
                );
                add(
                    "backup.start-quorum-wait".into(),
                    duration(backup.start_quorum_wait),
                );
            }
        }
        if let Some(tunnels) = &self.tunnels {
            add(
                "tunnel.key-file".into(),
                tunnels.key_file.display().to_string(),
            );
            add(
                "tunnel.known-hosts".into(),
                tunnels
                    .known_hosts
                    .as_ref()
                    .map(|path| path.display().to_string())
                    .unwrap_or_default(),
            );
            add(
                "tunnel.trust-first-use".into(),
                tunnels.trust_first_use.to_string(),
            );
            add(
                "tunnel.connect-timeout".into(),
                duration(tunnels.connect_timeout),
            );
            add(
                "tunnel.keepalive-interval".into(),
                duration(tunnels.keepalive_interval),
            );
            add(
                "tunnel.keepalive-max".into(),
                tunnels.keepalive_max.to_string(),
            );
            add(
                "tunnel.reconnect-max-delay".into(),
                duration(tunnels.reconnect_max_delay),
            );
            add(
                "tunnel.probe-interval".into(),
                duration(tunnels.probe_interval),
            );
            add(
                "tunnel.ciphers".into(),
                match &tunnels.ciphers {
                    Some(ciphers) => ciphers.join(","),
                    None => {
                        let order: Vec<String> = palisade_ssh::ciphers::default_order()
                            .iter()
                            .map(|name| name.as_ref().to_string())
                            .collect();
                        format!("{} (by CPU)", order.join(","))
                    }
                },
            );
            for bastion in &tunnels.bastions {
                let key = |field: &str| format!("bastion.{}.{field}", bastion.name);
                add(
                    key("address"),
                    format!("{}@{}:{}", bastion.user, bastion.host, bastion.port),
                );
                add(
                    key("host-key-fingerprints"),
                    bastion.host_key_fingerprints.join(","),
                );
                add(
                    key("rpc-socket"),
                    bastion.rpc_socket.clone().unwrap_or_default(),
                );
                add(
                    key("backup-command"),
                    bastion.backup_command.clone().unwrap_or_default(),
                );
                add(
                    key("forwards"),
                    format!(
                        "{} local, {} remote",
                        bastion.local_forwards.len(),
                        bastion.remote_forwards.len()
                    ),
                );
                if let Some(target) = &bastion.eip {
                    add(
                        key("eip"),
                        match target {
                            EipTarget::Instance(id) => format!("instance {id}"),
                            EipTarget::NetworkInterface(id) => format!("network interface {id}"),
                        },
                    );
                }
            }
        }
        if let Some(eip) = &self.eip {
            add("eip.region".into(), eip.region.clone());
            add(
                "eip.endpoint".into(),
                eip.endpoint
                    .clone()
                    .unwrap_or_else(|| "AWS's for the region".into()),
            );
            add(
                "eip.credentials".into(),
                match &eip.credentials {
                    CredentialSource::Vault => "vault (aws-credentials.age)".to_string(),
                    CredentialSource::Environment => "environment".to_string(),
                    CredentialSource::Profile { file, name } => {
                        format!("profile {name} in {}", file.display())
                    }
                },
            );
            add("eip.tunnel-timeout".into(), duration(eip.tunnel_timeout));
            add("eip.request-timeout".into(), duration(eip.request_timeout));
            add(
                "eip.auto".into(),
                match &eip.auto {
                    None => "off".to_string(),
                    Some(auto) => format!(
                        "after {} down{} with another bastion up; cooldown {}; at most {} per hour",
                        duration(auto.after),
                        match auto.slow_above {
                            Some(limit) =>
                                format!(" or with a round trip above {}", duration(limit)),
                            None => String::new(),
                        },
                        duration(auto.cooldown),
                        auto.max_per_hour
                    ),
                },
            );
        }
        if let Some(failover) = &self.failover {
            add("failover.host-id".into(), failover.host_id.clone());
            add("failover.peers".into(), failover.peers.join(","));
            add(
                "failover.etcd-endpoints".into(),
                failover.etcd_endpoints.join(","),
            );
            add("failover.chain-rpc".into(), failover.chain_rpc.join(","));
            add(
                "failover.key-prefix".into(),
                failover
                    .key_prefix
                    .clone()
                    .unwrap_or_else(|| "(from the vault's backup key)".into()),
            );
            add("failover.lease-ttl".into(), duration(failover.lease_ttl));
            add(
                "failover.fence-margin".into(),
                duration(failover.fence_margin),
            );
            add(
                "failover.poll-interval".into(),
                duration(failover.poll_interval),
            );
            add(
                "failover.chain-guard-blocks".into(),
                failover.chain_guard_blocks.to_string(),
            );
            add(
                "failover.takeover".into(),
                failover.takeover.as_str().into(),
            );
            add(
                "failover.handoff-timeout".into(),
                duration(failover.handoff_timeout),
            );
        }
        if let Some(logs) = &self.logs {
            add("logs.recipients".into(), logs.recipients.len().to_string());
            add("logs.format".into(), logs.format.as_str().into());
            add("logs.segment-bytes".into(), logs.segment_bytes.to_string());
            add(
                "logs.segment-interval".into(),
                duration(logs.segment_interval),
            );
            add(
                "logs.spool-dir".into(),
                logs.spool_dir.display().to_string(),
            );
            add("logs.spool-bytes".into(), logs.spool_bytes.to_string());
            add("logs.buffer-bytes".into(), logs.buffer_bytes.to_string());
            add(
                "logs.signing-key".into(),
                logs.signing_key.display().to_string(),
            );
            add("logs.host".into(), logs.host.clone());
        }
        for operator in &self.operators {
            add(
                format!("operator.{}.role", operator.name),
                operator.role.to_string(),
            );
        }
        lines
    }
}

/// Resolves each setting from env, then file, then default, collecting
/// every problem on the way.
struct Resolver<'a> {
    file: Option<&'a Path>,
    env: &'a BTreeMap<String, String>,
    issues: Vec<ConfigIssue>,
}

impl Resolver<'_> {
    fn file_origin(&self, key: impl Into<Cow<'static, str>>) -> Origin {
        Origin::File {
            path: self.file.map(Path::to_path_buf).unwrap_or_default(),
            key: key.into(),
        }
    }

    fn report(&mut self, origin: Origin, reason: impl Into<String>) {
        self.issues.push(ConfigIssue {
            origin,
            reason: reason.into(),
        });
    }

    /// A non-empty environment variable, if set. Cosmovisor treats an
    /// empty variable as unset; so do we.
    fn env_value(&self, name: &'static str) -> Option<&str> {
        self.env
            .get(name)
            .map(String::as_str)
            .filter(|value| !value.is_empty())
    }

    /// Booleans in the file are typed by serde, so only the environment
    /// can supply a malformed one.
    fn bool(&mut self, env: &'static str, file: Option<bool>, default: bool) -> bool {
        if let Some(text) = self.env_value(env) {
            return match parse_bool(text) {
                Some(value) => value,
                None => {
                    self.report(
                        Origin::Env(env),
                        format!("'{text}' is not a boolean (use true or false)"),
                    );
                    default
                }
            };
        }
        file.unwrap_or(default)
    }

    fn duration(
        &mut self,
        env: Option<&'static str>,
        key: &'static str,
        file: Option<&str>,
        default: Duration,
    ) -> Duration {
        let (text, origin) = match env.and_then(|name| self.env_value(name).map(|v| (v, name))) {
            Some((text, name)) => (text.to_string(), Origin::Env(name)),
            None => match file {
                Some(text) => (text.to_string(), self.file_origin(key)),
                None => return default,
            },
        };
        match humantime::parse_duration(text.trim()) {
            Ok(value) => value,
            Err(error) => {
                self.report(
                    origin,
                    format!("'{text}' is not a duration ({error}; use e.g. 300ms, 10s, 5m)"),
                );
                default
            }
        }
    }

    fn number<T: std::str::FromStr + Copy>(
        &mut self,
        env: Option<&'static str>,
        key: &'static str,
        file: Option<T>,
        default: T,
        what: &str,
    ) -> (T, Origin) {
        if let Some(name) = env
            && let Some(text) = self.env_value(name)
        {
            return match text.trim().parse::<T>() {
                Ok(value) => (value, Origin::Env(name)),
                Err(_) => {
                    self.report(Origin::Env(name), format!("'{text}' is not {what}"));
                    (default, Origin::Env(name))
                }
            };
        }
        match file {
            Some(value) => (value, self.file_origin(key)),
            None => (default, Origin::Default),
        }
    }

    fn path(
        &mut self,
        env: &'static str,
        key: &'static str,
        file: Option<PathBuf>,
    ) -> Option<(PathBuf, Origin)> {
        if let Some(text) = self.env_value(env) {
            return Some((PathBuf::from(text), Origin::Env(env)));
        }
        file.map(|path| (path, self.file_origin(key)))
    }
}

/// Go's `strconv.ParseBool` (what Cosmovisor uses), plus `on`/`off` which
/// the original Cosmovisor documentation shows.
fn parse_bool(text: &str) -> Option<bool> {
    match text.trim() {
        "1" | "t" | "T" | "TRUE" | "true" | "True" | "on" | "ON" | "On" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" | "off" | "OFF" | "Off" => Some(false),
        _ => None,
    }
}

fn validate(
    raw: RawConfig,
    file: Option<&Path>,
    env: &BTreeMap<String, String>,
) -> Result<Config, ConfigError> {
    let mut resolver = Resolver {
        file,
        env,
        issues: Vec::new(),
    };
    let r = &mut resolver;

    let daemon_home = match r.path("DAEMON_HOME", "daemon.home", raw.daemon.home) {
        Some((path, origin)) => {
            if !path.is_absolute() {
                r.report(
                    origin,
                    format!("'{}' must be an absolute path", path.display()),
                );
            } else if !path.is_dir() {
                r.report(
                    origin,
                    format!("'{}' is not an existing directory", path.display()),
                );
            }
            path
        }
        None => {
            r.report(
                Origin::Env("DAEMON_HOME"),
                "is required (or set daemon.home in the config file)",
            );
            PathBuf::new()
        }
    };

    let daemon_name = match r.env_value("DAEMON_NAME") {
        Some(name) => Some((name.to_string(), Origin::Env("DAEMON_NAME"))),
        None => raw
            .daemon
            .name
            .clone()
            .map(|name| (name, r.file_origin("daemon.name"))),
    };
    let daemon_name = match daemon_name {
        Some((name, origin)) => {
            if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                r.report(
                    origin,
                    format!("'{name}' must be a plain file name such as gaiad"),
                );
            }
            name
        }
        None => {
            r.report(
                Origin::Env("DAEMON_NAME"),
                "is required (or set daemon.name in the config file)",
            );
            String::new()
        }
    };

    let shutdown_grace = r.duration(
        Some("DAEMON_SHUTDOWN_GRACE"),
        "daemon.shutdown-grace",
        raw.daemon.shutdown_grace.as_deref(),
        Duration::from_secs(10),
    );
    let restart_delay = r.duration(
        Some("DAEMON_RESTART_DELAY"),
        "daemon.restart-delay",
        raw.daemon.restart_delay.as_deref(),
        Duration::ZERO,
    );
    let restart_after_upgrade = r.bool(
        "DAEMON_RESTART_AFTER_UPGRADE",
        raw.daemon.restart_after_upgrade,
        true,
    );
    let poll_interval = r.duration(
        Some("DAEMON_POLL_INTERVAL"),
        "upgrade.poll-interval",
        raw.upgrade.poll_interval.as_deref(),
        Duration::from_millis(300),
    );
    if poll_interval < Duration::from_millis(10) {
        let origin = if r.env_value("DAEMON_POLL_INTERVAL").is_some() {
            Origin::Env("DAEMON_POLL_INTERVAL")
        } else {
            r.file_origin("upgrade.poll-interval")
        };
        r.report(origin, "must be at least 10ms");
    }
    let allow_download_binaries = r.bool(
        "DAEMON_ALLOW_DOWNLOAD_BINARIES",
        raw.upgrade.allow_download_binaries,
        false,
    );
    let must_have_checksum = r.bool(
        "DAEMON_DOWNLOAD_MUST_HAVE_CHECKSUM",
        raw.upgrade.download_must_have_checksum,
        true,
    );
    let (download_max_bytes, origin) = r.number(
        None,
        "upgrade.download-max-bytes",
        raw.upgrade.download_max_bytes,
        1 << 30,
        "a byte count",
    );
    if download_max_bytes == 0 {
        r.report(origin, "must be greater than 0");
    }
    let download_timeout = r.duration(
        None,
        "upgrade.download-timeout",
        raw.upgrade.download_timeout.as_deref(),
        Duration::from_secs(600),
    );
    let skip_backup = r.bool("UNSAFE_SKIP_BACKUP", raw.upgrade.unsafe_skip_backup, false);
    let backup_root = match r.path(
        "DAEMON_DATA_BACKUP_DIR",
        "upgrade.data-backup-dir",
        raw.upgrade.data_backup_dir,
    ) {
        Some((path, origin)) => {
            if !path.is_absolute() {
                r.report(
                    origin,
                    format!("'{}' must be an absolute path", path.display()),
                );
            } else if !skip_backup && !path.is_dir() {
                r.report(
                    origin,
                    format!("'{}' is not an existing directory", path.display()),
                );
            }
            path
        }
        None => daemon_home.clone(),
    };
    let data_backup = if skip_backup {
        DataBackupPolicy::Skip
    } else {
        DataBackupPolicy::Before { backup_root }
    };
    let (preupgrade_max_retries, _) = r.number(
        Some("DAEMON_PREUPGRADE_MAX_RETRIES"),
        "upgrade.preupgrade-max-retries",
        raw.upgrade.preupgrade_max_retries,
        0u32,
        "a non-negative integer",
    );
    let custom_preupgrade = match r.path(
        "COSMOVISOR_CUSTOM_PREUPGRADE",
        "upgrade.custom-preupgrade",
        raw.upgrade.custom_preupgrade,
    ) {
        Some((path, origin)) => {
            // Cosmovisor resolves the script relative to $DAEMON_HOME/cosmovisor.
            let resolved = if path.is_absolute() {
                path
            } else {
                daemon_home.join("cosmovisor").join(path)
            };
            if !daemon_home.as_os_str().is_empty() && !resolved.is_file() {
                r.report(
                    origin,
                    format!("script '{}' does not exist", resolved.display()),
                );
            }
            Some(resolved)
        }
        None => None,
    };
    let disable_recase = r.bool(
        "COSMOVISOR_DISABLE_RECASE",
        raw.upgrade.disable_recase,
        false,
    );

    let backoff_initial = r.duration(
        None,
        "restart.backoff-initial",
        raw.restart.backoff_initial.as_deref(),
        Duration::from_secs(1),
    );
    let backoff_max = r.duration(
        None,
        "restart.backoff-max",
        raw.restart.backoff_max.as_deref(),
        Duration::from_secs(60),
    );
    if backoff_max < backoff_initial {
        let origin = r.file_origin("restart.backoff-max");
        r.report(origin, "must not be smaller than restart.backoff-initial");
    }
    let (crash_loop_max_crashes, origin) = r.number(
        None,
        "restart.crash-loop-max-crashes",
        raw.restart.crash_loop_max_crashes,
        5u32,
        "a positive integer",
    );
    if crash_loop_max_crashes == 0 {
        r.report(origin, "must be at least 1");
    }
    let crash_loop_window = r.duration(
        None,
        "restart.crash-loop-window",
        raw.restart.crash_loop_window.as_deref(),
        Duration::from_secs(600),
    );
    let healthy_after = r.duration(
        None,
        "restart.healthy-after",
        raw.restart.healthy_after.as_deref(),
        Duration::from_secs(60),
    );
    let (buffer_bytes, origin) = r.number(
        None,
        "output.buffer-bytes",
        raw.output.buffer_bytes,
        4usize << 20,
        "a byte count",
    );
    if !(64 << 10..=1 << 30).contains(&buffer_bytes) {
        r.report(origin, "must be between 65536 and 1073741824");
    }
    let (max_line_bytes, origin) = r.number(
        None,
        "output.max-line-bytes",
        raw.output.max_line_bytes,
        65536usize,
        "a byte count",
    );
    if !(256..=16 << 20).contains(&max_line_bytes) {
        r.report(origin, "must be between 256 and 16777216");
    }

    let vault = validate_vault(r, raw.vault, raw.backup, &daemon_home);
    let rpc = tunnels::validate_rpc(r, raw.rpc, &daemon_home);
    let mut tunnels = tunnels::validate_tunnels(r, raw.tunnel, raw.bastion);
    let metrics = metrics::validate_metrics(r, raw.metrics);
    if let Some(forward) = metrics.as_ref().and_then(MetricsSettings::bastion_forward) {
        match &mut tunnels {
            Some(tunnels) => {
                for bastion in &mut tunnels.bastions {
                    if bastion
                        .remote_forwards
                        .iter()
                        .any(|f| f.remote_port == forward.remote_port)
                    {
                        let origin = r.file_origin("metrics.bastion-listen");
                        r.report(
                            origin,
                            format!(
                                "port {} is already forwarded on bastion {} (its remote-forwards)",
                                forward.remote_port, bastion.name
                            ),
                        );
                    } else {
                        bastion.remote_forwards.push(forward.clone());
                    }
                }
            }
            None => {
                let origin = r.file_origin("metrics.bastion-listen");
                r.report(origin, "there is no [[bastion]] to forward the metrics to");
            }
        }
    }
    let operators = operators::validate_operators(r, raw.operator);
    let host = host::validate_host(r, raw.host);
    let daemon_account =
        account::resolve_account(r, raw.daemon.user.as_deref(), raw.daemon.group.as_deref());
    let failover = failover::validate_failover(r, raw.failover, vault.is_some());
    let eip = eip::validate_eip(r, raw.eip, vault.is_some());
    let logs = logs::validate_logs(
        r,
        raw.logs,
        &daemon_home,
        &rpc.name,
        tunnels.as_ref(),
        vault
            .as_ref()
            .map(|vault| vault.recovery_recipients.as_slice())
            .unwrap_or_default(),
    );
    if let Some(tunnels) = &tunnels {
        let with_eip = tunnels.bastions.iter().any(|bastion| bastion.eip.is_some());
        if with_eip && eip.is_none() {
            let origin = r.file_origin("eip");
            r.report(
                origin,
                "a [[bastion]] has an eip but there is no [eip] (region, credentials)",
            );
        }
    }
    if let Some(tunnels) = &tunnels
        && tunnels.bastions.iter().any(|b| b.backup_command.is_some())
        && vault.is_none()
    {
        let origin = r.file_origin("bastion.backup-command");
        r.report(
            origin,
            "backups to bastions need the vault's signing key: add a [vault] section",
        );
    }

    if let Some(tunnels) = &tunnels {
        for bastion in tunnels.bastions.iter().filter(|b| b.rpc_socket.is_some()) {
            let entry = bastion_entry_socket(&rpc.socket, &bastion.name);
            if entry.as_os_str().len() > MAX_SOCKET_PATH_BYTES {
                let origin = r.file_origin("rpc.socket");
                r.report(
                    origin,
                    format!(
                        "bastion {}'s entry to the control socket, {}, would be {} bytes; Unix \
                         socket paths are limited to {MAX_SOCKET_PATH_BYTES}: shorten the \
                         socket's path or the bastion's name",
                        bastion.name,
                        entry.display(),
                        entry.as_os_str().len()
                    ),
                );
            }
        }
    }

    if !resolver.issues.is_empty() {
        return Err(ConfigError::Invalid(resolver.issues));
    }
    Ok(Config {
        eip,
        logs,
        metrics,
        vault,
        rpc,
        tunnels,
        operators,
        host,
        failover,
        daemon_home,
        daemon_name,
        shutdown_grace,
        restart_delay,
        restart_after_upgrade,
        double_sign_check_height: raw.daemon.double_sign_check_height.unwrap_or(10),
        daemon_account,
        poll_interval,
        allow_download_binaries,
        checksum_policy: if must_have_checksum {
            ChecksumPolicy::Required
        } else {
            ChecksumPolicy::Optional
        },
        download_max_bytes,
        download_timeout,
        data_backup,
        preupgrade_max_retries,
        custom_preupgrade,
        recase: if disable_recase {
            UpgradeNameCase::AsIs
        } else {
            UpgradeNameCase::Lower
        },
        restart: RestartSettings {
            backoff_initial,
            backoff_max,
            crash_loop_max_crashes,
            crash_loop_window,
            healthy_after,
        },
        output: OutputSettings {
            buffer_bytes,
            max_line_bytes,
        },
        source_file: file.map(Path::to_path_buf),
    })
}

fn validate_vault(
    r: &mut Resolver<'_>,
    vault: Option<RawVault>,
    backup: Option<RawBackup>,
    daemon_home: &Path,
) -> Option<VaultSettings> {
    let Some(vault) = vault else {
        if backup.is_some() {
            let origin = r.file_origin("backup");
            r.report(
                origin,
                "backups need the vault's signing key: add a [vault] section",
            );
        }
        return None;
    };
    let absolute = |r: &mut Resolver<'_>, key: &'static str, path: PathBuf| {
        if !path.is_absolute() {
            let origin = r.file_origin(key);
            r.report(
                origin,
                format!("'{}' must be an absolute path", path.display()),
            );
        }
        path
    };
    let dir = match vault.dir {
        Some(path) => absolute(r, "vault.dir", path),
        None => daemon_home.join("palisade").join("vault"),
    };
    let tmpfs_dir = match vault.tmpfs_dir {
        Some(path) => absolute(r, "vault.tmpfs-dir", path),
        None => PathBuf::from("/run/palisade/keys"),
    };
    let passphrase_file = vault
        .passphrase_file
        .map(|path| absolute(r, "vault.passphrase-file", path));
    let swap = match vault.swap.as_deref() {
        Some("warn") => SwapPolicy::Warn,
        Some("refuse") => SwapPolicy::Refuse,
        Some(other) => {
            let origin = r.file_origin("vault.swap");
            r.report(origin, format!("'{other}' must be \"warn\" or \"refuse\""));
            SwapPolicy::Refuse
        }
        None => {
            let origin = r.file_origin("vault.swap");
            r.report(
                origin,
                "is required: \"refuse\" (recommended) or \"warn\" when swap is enabled",
            );
            SwapPolicy::Refuse
        }
    };
    let scrypt_work_factor = vault.scrypt_work_factor.unwrap_or(18);
    if !(10..=22).contains(&scrypt_work_factor) {
        let origin = r.file_origin("vault.scrypt-work-factor");
        r.report(origin, "must be between 10 (tests only) and 22");
    }
    let backup = backup.unwrap_or_default();
    let backup_dir = match backup.dir {
        Some(path) => absolute(r, "backup.dir", path),
        None => daemon_home.join("palisade").join("backups"),
    };
    let extra_dirs = backup
        .extra_dirs
        .unwrap_or_default()
        .into_iter()
        .map(|path| absolute(r, "backup.extra-dirs", path))
        .collect();
    let (retention, origin) = r.number(
        None,
        "backup.retention",
        backup.retention,
        200usize,
        "a count",
    );
    if retention == 0 {
        r.report(origin, "must be at least 1");
    }
    let debounce = r.duration(
        None,
        "backup.debounce",
        backup.debounce.as_deref(),
        Duration::from_millis(300),
    );
    if let Some(chain_id) = &backup.chain_id
        && chain_id.trim().is_empty()
    {
        let origin = r.file_origin("backup.chain-id");
        r.report(origin, "must not be empty");
    }
    let start_quorum = match backup.start_quorum {
        None => StartQuorum::All,
        Some(RawStartQuorum::Word(word)) if word == "all" => StartQuorum::All,
        Some(RawStartQuorum::Count(count)) if count >= 1 => {
            StartQuorum::AtLeast(usize::try_from(count).unwrap_or(usize::MAX))
        }
        Some(other) => {
            let origin = r.file_origin("backup.start-quorum");
            let shown = match other {
                RawStartQuorum::Count(count) => count.to_string(),
                RawStartQuorum::Word(word) => format!("{word:?}"),
            };
            r.report(
                origin,
                format!("{shown} must be \"all\" or a number of stores, at least 1"),
            );
            StartQuorum::All
        }
    };
    let start_quorum_wait = r.duration(
        None,
        "backup.start-quorum-wait",
        backup.start_quorum_wait.as_deref(),
        Duration::from_secs(60),
    );
    Some(VaultSettings {
        dir,
        tmpfs_dir,
        passphrase_file,
        swap,
        scrypt_work_factor,
        recovery_recipients: vault.recovery_recipients.unwrap_or_default(),
        backup: BackupSettings {
            dir: backup_dir,
            extra_dirs,
            retention,
            debounce,
            chain_id: backup.chain_id,
            start_quorum,
            start_quorum_wait,
        },
    })
}

/// For the config modules' tests: load `text` (TOML) with a minimal
/// `[daemon]` (home `dir`, name gaiad) and no environment.
#[cfg(test)]
pub(crate) mod test_support {
    use std::collections::BTreeMap;

    use super::{Config, ConfigError};

    pub(crate) fn load(dir: &std::path::Path, text: &str) -> Result<Config, ConfigError> {
        let file = dir.join("palisade.toml");
        std::fs::write(
            &file,
            format!("[daemon]\nhome = {dir:?}\nname = \"gaiad\"\n{text}"),
        )
        .unwrap();
        Config::load(Some(&file), &BTreeMap::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn home() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn env_only_like_cosmovisor() {
        let home = home();
        let config = Config::load(
            None,
            &env(&[
                ("DAEMON_HOME", home.path().to_str().unwrap()),
                ("DAEMON_NAME", "gaiad"),
                ("DAEMON_POLL_INTERVAL", "1s"),
                ("DAEMON_ALLOW_DOWNLOAD_BINARIES", "on"),
                ("UNSAFE_SKIP_BACKUP", "true"),
                ("COSMOVISOR_DISABLE_RECASE", "1"),
            ]),
        )
        .unwrap();
        assert_eq!(config.daemon_name, "gaiad");
        assert_eq!(config.poll_interval, Duration::from_secs(1));
        assert!(config.allow_download_binaries);
        assert_eq!(config.data_backup, DataBackupPolicy::Skip);
        assert_eq!(config.recase, UpgradeNameCase::AsIs);
        assert_eq!(config.checksum_policy, ChecksumPolicy::Required);
        assert_eq!(config.shutdown_grace, Duration::from_secs(10));
    }

    #[test]
    fn env_overrides_file() {
        let home = home();
        let file = home.path().join("palisade.toml");
        std::fs::write(
            &file,
            format!(
                "[daemon]\nhome = {:?}\nname = \"simd\"\nshutdown-grace = \"3s\"\n",
                home.path()
            ),
        )
        .unwrap();
        let config = Config::load(Some(&file), &env(&[("DAEMON_SHUTDOWN_GRACE", "7s")])).unwrap();
        assert_eq!(config.daemon_name, "simd");
        assert_eq!(config.shutdown_grace, Duration::from_secs(7));
        let config = Config::load(Some(&file), &env(&[])).unwrap();
        assert_eq!(config.shutdown_grace, Duration::from_secs(3));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let home = home();
        let file = home.path().join("palisade.toml");
        std::fs::write(
            &file,
            "[restart]\nbackoff-initial = \"soon\"\ncrash-loop-max-crashes = 0\n[output]\nbuffer-bytes = 1\n",
        )
        .unwrap();
        let error = Config::load(
            Some(&file),
            &env(&[
                ("DAEMON_POLL_INTERVAL", "fast"),
                ("DAEMON_ALLOW_DOWNLOAD_BINARIES", "maybe"),
                ("DAEMON_PREUPGRADE_MAX_RETRIES", "-1"),
            ]),
        )
        .unwrap_err();
        let ConfigError::Invalid(issues) = &error else {
            panic!("expected Invalid, got {error}");
        };
        let text = error.to_string();
        for needle in [
            "environment variable DAEMON_HOME: is required",
            "environment variable DAEMON_NAME: is required",
            "environment variable DAEMON_POLL_INTERVAL: 'fast' is not a duration",
            "environment variable DAEMON_ALLOW_DOWNLOAD_BINARIES: 'maybe' is not a boolean",
            "environment variable DAEMON_PREUPGRADE_MAX_RETRIES: '-1' is not a non-negative integer",
            "key `restart.backoff-initial`: 'soon' is not a duration",
            "key `restart.crash-loop-max-crashes`: must be at least 1",
            "key `output.buffer-bytes`: must be between 65536 and 1073741824",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        assert_eq!(issues.len(), 8, "{text}");
    }

    #[test]
    fn unknown_key_is_rejected_with_its_name() {
        let home = home();
        let file = home.path().join("palisade.toml");
        std::fs::write(&file, "[daemon]\nnmae = \"gaiad\"\n").unwrap();
        let error = Config::load(Some(&file), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown field `nmae`"), "{error}");
        assert!(error.contains("palisade.toml"), "{error}");
    }

    #[test]
    fn bad_paths_and_names() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("DAEMON_HOME", "relative/home"), ("DAEMON_NAME", "gaiad")],
                "DAEMON_HOME: 'relative/home' must be an absolute path",
            ),
            (
                &[
                    ("DAEMON_HOME", "/nonexistent/palisade"),
                    ("DAEMON_NAME", "gaiad"),
                ],
                "is not an existing directory",
            ),
            (
                &[("DAEMON_HOME", "/tmp"), ("DAEMON_NAME", "bin/gaiad")],
                "DAEMON_NAME: 'bin/gaiad' must be a plain file name",
            ),
            (
                &[
                    ("DAEMON_HOME", "/tmp"),
                    ("DAEMON_NAME", "gaiad"),
                    ("COSMOVISOR_CUSTOM_PREUPGRADE", "missing.sh"),
                ],
                "COSMOVISOR_CUSTOM_PREUPGRADE: script '/tmp/cosmovisor/missing.sh' does not exist",
            ),
        ];
        for (vars, expected) in cases {
            let error = Config::load(None, &env(vars)).unwrap_err().to_string();
            assert!(error.contains(expected), "{vars:?}: {error}");
        }
    }

    #[test]
    fn vault_section_defaults_and_required_swap_choice() {
        let home = home();
        let file = home.path().join("palisade.toml");
        let base = format!("[daemon]\nhome = {:?}\nname = \"gaiad\"\n", home.path());
        std::fs::write(&file, format!("{base}[vault]\nswap = \"refuse\"\n")).unwrap();
        let vault = Config::load(Some(&file), &env(&[])).unwrap().vault.unwrap();
        assert_eq!(vault.dir, home.path().join("palisade/vault"));
        assert_eq!(vault.tmpfs_dir, PathBuf::from("/run/palisade/keys"));
        assert_eq!(vault.swap, SwapPolicy::Refuse);
        assert_eq!(vault.backup.retention, 200);
        assert_eq!(vault.backup.dir, home.path().join("palisade/backups"));

        let cases = [
            ("[vault]\n", "key `vault.swap`: is required"),
            (
                "[vault]\nswap = \"maybe\"\n",
                "'maybe' must be \"warn\" or \"refuse\"",
            ),
            (
                "[vault]\nswap = \"warn\"\ntmpfs-dir = \"shm\"\n",
                "key `vault.tmpfs-dir`: 'shm' must be an absolute path",
            ),
            (
                "[vault]\nswap = \"warn\"\nscrypt-work-factor = 30\n",
                "between 10 (tests only) and 22",
            ),
            (
                "[backup]\nretention = 3\n",
                "backups need the vault's signing key",
            ),
            (
                "[vault]\nswap = \"warn\"\n[backup]\nretention = 0\n",
                "key `backup.retention`: must be at least 1",
            ),
            (
                "[vault]\nswap = \"warn\"\npassphrase = \"x\"\n",
                "unknown field `passphrase`",
            ),
        ];
        for (section, expected) in cases {
            std::fs::write(&file, format!("{base}{section}")).unwrap();
            let error = Config::load(Some(&file), &env(&[]))
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{section}: {error}");
        }
    }

    #[test]
    fn parse_bool_matches_go() {
        for (text, expected) in [
            ("true", Some(true)),
            ("T", Some(true)),
            ("1", Some(true)),
            ("on", Some(true)),
            ("False", Some(false)),
            ("0", Some(false)),
            ("off", Some(false)),
            ("yes", None),
            ("", None),
        ] {
            assert_eq!(parse_bool(text), expected, "{text:?}");
        }
    }
}
