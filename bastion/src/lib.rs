//! `palisade-bastion`: the daemon on each public sentry/bastion node.
//!
//! This release ships `run` (the daemon: the encrypted-backup store of
//! [`backup_store`] plus health checks of every configured validator through
//! its reverse tunnel, [`health_check`], reported by [`daemon`] in logs, the
//! [`status_file`] and systemd's STATUS=), `status` (reads the status file),
//! `serve-backups` (the backup store alone), `backup-session` (the forced
//! command through which a validator's SSH key reaches the store, bound to
//! that validator: [`backup_session`]), `check-config` and `version`.
//! Scripted RPC calls (`call`) arrive with the RPC; until then `call` fails
//! loudly with exit code 1 instead of pretending to work.
#![forbid(unsafe_code)]

pub mod backup_session;
pub mod backup_store;
pub mod config;
pub mod daemon;
pub mod health_check;
pub mod health_state;
pub mod status_file;
pub mod systemd;

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::{Parser, Subcommand};

/// Exit codes of `palisade-bastion`.
pub mod exit_code {
    /// Success; for `status`: every validator is up.
    pub const OK: i32 = 0;
    /// An error: invalid configuration, a startup failure, an unreadable or
    /// stale status file, or a command that is not implemented yet.
    pub const ERROR: i32 = 1;
    /// Command-line usage error (from clap).
    pub const USAGE: i32 = 2;
    /// `status`: at least one validator is down or not checked yet.
    pub const NOT_ALL_UP: i32 = 3;
}

const ABOUT: &str = "Palisade's daemon for public sentry/bastion nodes.";

const LONG_ABOUT: &str = "Palisade's daemon for public sentry/bastion nodes.

A bastion is a public node (with its own sentry gaiad) that the validator
host, which has no public IP, connects out to over SSH. palisade-bastion is
deployed beside the stock OpenSSH sshd, which stays the bastion's only public
door: the validator's key is confined in authorized_keys with a forced
command and options such as `restrict,port-forwarding,permitopen=...` (see
docs/bastion-sshd.md). palisade-bastion itself opens no network port: it
listens only on a Unix socket (listen-socket) and connects only to Unix
sockets.

Through its one SSH connection the validator
  - reverse-forwards its supervisor's RPC socket to a path on this bastion
    (the [[validator]] socket in the configuration), which palisade-bastion
    probes to check the validator's health;
  - reaches the backup store by opening an SSH session: sshd runs the key's
    forced command, `palisade-bastion backup-session --validator NAME`, which
    relays the backup protocol between the session and listen-socket and
    lets the key touch only that validator's backups. The backups are signed
    by the validator and age-encrypted: the bastion holds ciphertext it can
    neither read nor forge. (Not direct-streamlocal: OpenSSH refuses
    Unix-socket channels for any key with a permitopen= restriction.)

Run palisade-bastion as the SSH tunnel user (e.g. palisade-tunnel), the
account the validator's key logs in as: sshd creates the reverse-forwarded
sockets owned by that user with mode 0600, and runs backup-session as that
user, which connects to listen-socket (also 0600), so nobody else can use
either. The tunnel user needs a shell that can run the forced command
(/bin/sh, not nologin).

Status of this release: `run` (backup store + health checks), `status`,
`serve-backups` (the backup store alone), `backup-session`, `check-config`
and `version` work. `call` (scripted RPC calls) is not implemented yet; it
exits with code 1 and says so. Log relay and alerting are planned.";

const AFTER_HELP: &str = "Daemon:
  palisade-bastion run --config FILE
      Serve the backup store on listen-socket and probe every validator's
      socket every health.interval: connect, read the supervisor's one-line
      greeting, close. State changes are logged; the status file (status-file)
      is rewritten after every probe. systemd Type=notify; SIGTERM/SIGINT stop.
  palisade-bastion status --config FILE [--json]
      Print the status file as a table (or the JSON document).
  palisade-bastion serve-backups --config FILE [--keep N] [--quota-bytes N]
      The backup store alone (see docs/bastion-backup-store.md).

Forced command (run by sshd, not by hand):
  palisade-bastion backup-session --config FILE --validator NAME
      One validator's session to the backup store: relays the protocol
      between stdin/stdout (the SSH channel) and listen-socket, refusing any
      request for another validator. The forced command of each validator
      key in ~palisade-tunnel/.ssh/authorized_keys; `backup-session --help`
      shows the exact line.

Planned (not implemented yet in this release):
  palisade-bastion call <VALIDATOR> <METHOD> [--json]
      Execute one RPC call against a validator's supervisor through its
      reverse tunnel.

Configuration file (TOML; docs/bastion.md lists every key):
  listen-socket = \"/run/palisade-bastion/bastion.sock\"
  backup-dir    = \"/var/lib/palisade-bastion/backups\"
  # status-file = \"/run/palisade-bastion/status.json\"  (default: beside listen-socket)
  [backups]     # optional: keep = 500, quota-bytes = 268435456,
                #           idle-timeout = \"30s\", max-connections = 64
  [health]      # optional: interval = \"10s\", timeout = \"3s\"
  [[validator]]
  name   = \"val-a\"
  socket = \"/run/palisade-bastion/val-a.sock\"   # where sshd creates the reverse forward

Exit codes: 0 ok (status: every validator up), 1 error (bad configuration,
startup failure, unreadable or stale status file, \"not implemented yet\"),
2 usage, 3 status: at least one validator down or not checked yet.";

const BACKUP_SESSION_LONG_ABOUT: &str =
    "One validator's session to the backup store, run by sshd as the forced
command of that validator's key. Not meant to be run by hand.

The validator host reaches each bastion's backup store through its SSH
connection: it opens a session channel and sends any exec request; sshd
replaces the command with the key's forced command, this one, with stdin and
stdout connected to the channel. backup-session connects to listen-socket
(the store that `run` or `serve-backups` serves) and relays the backup
protocol (docs/bastion-backup-store.md) both ways. Every request must name
--validator: a request for any other validator is not forwarded, and is
answered with `unknown_validator` before the session ends. So each key can
touch only its own validator's backups, although all keys log in as the same
tunnel user.

Why not a direct-streamlocal channel to listen-socket: OpenSSH refuses
Unix-socket channels for any key with a permitopen= restriction, and the
validators' keys need permitopen for their P2P forwards.";

const BACKUP_SESSION_AFTER_HELP: &str = "In the tunnel user's authorized_keys, one line per validator key (one line;
the tunnel user's shell must be able to run it: /bin/sh, not nologin):

command=\"/usr/bin/palisade-bastion backup-session --config /etc/palisade-bastion/bastion.toml --validator val-a\",restrict,port-forwarding,permitopen=\"10.0.0.5:26656\" ssh-ed25519 AAAA… val-a

Bounds: the session ends when nothing moves for backups.idle-timeout + 2s,
and after 10 minutes in any case. stdout carries protocol frames only; logs
go to stderr (RUST_LOG, default warn), which sshd passes to the client.

Exit codes: 0 the client closed its input and every response was relayed;
1 a refused request, an unconfigured --validator, a store that is not
running, a bad configuration, a timeout, or a broken connection (before
exiting, an error response goes to stdout when the client can still use it);
2 usage.";

/// Command line of `palisade-bastion`.
#[derive(Debug, Parser)]
#[command(
    name = "palisade-bastion",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Parse and validate a configuration file; report every problem at once.
    CheckConfig {
        /// The bastion's TOML configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Run the bastion daemon until SIGTERM or SIGINT: the backup store on
    /// listen-socket plus health checks of every configured validator through
    /// its reverse-forwarded socket, reported in the log and the status file.
    Run {
        /// The bastion's TOML configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Print the validators' health from the status file that `run`
    /// maintains. Exit 0 if every validator is up, 3 if any is down or not
    /// checked yet, 1 if the file is missing, unreadable or stale.
    Status {
        /// The bastion's TOML configuration file (for status-file).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Print the status document (JSON) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Serve the validators' encrypted backups on the configured
    /// listen-socket until SIGTERM or SIGINT. Only the backup store, without
    /// health checks (`run` does both). Flags override the configuration's
    /// `backups.*` keys.
    ServeBackups {
        /// The bastion's TOML configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Files kept per validator; older ones are removed after each put.
        /// [default: backups.keep, else 500]
        #[arg(long, value_name = "N")]
        keep: Option<usize>,
        /// Bytes stored per validator after retention; a put beyond fails
        /// with `quota`. [default: backups.quota-bytes, else 268435456]
        #[arg(long, value_name = "BYTES")]
        quota_bytes: Option<u64>,
        /// A connection that sends no complete request header for this long
        /// is closed. [default: backups.idle-timeout, else 30000]
        #[arg(long, value_name = "MS")]
        idle_timeout_ms: Option<u64>,
        /// Connections served at once; more wait in the listen backlog.
        /// [default: backups.max-connections, else 64]
        #[arg(long, value_name = "N")]
        max_connections: Option<usize>,
    },
    /// One validator's session to the backup store over stdin/stdout: the
    /// forced command of that validator's key in authorized_keys.
    #[command(
        long_about = BACKUP_SESSION_LONG_ABOUT,
        after_help = BACKUP_SESSION_AFTER_HELP,
        // Unwrapped, so that the authorized_keys line stays one line.
        term_width = 0
    )]
    BackupSession {
        /// The bastion's TOML configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The only validator this session may touch ([[validator]] name).
        #[arg(long, value_name = "NAME")]
        validator: String,
    },
    /// Call an RPC method on a validator through its reverse tunnel
    /// (NOT IMPLEMENTED YET: exits with code 1).
    Call {
        /// Validator name as in the configuration's [[validator]] tables.
        validator: String,
        /// RPC method, e.g. status.
        method: String,
        /// Print the raw JSON response.
        #[arg(long)]
        json: bool,
        /// The bastion's TOML configuration file.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Print the version.
    Version,
}

/// Why a command failed; `main` prints it and exits with [`Error::exit_code`].
#[derive(Debug)]
pub enum Error {
    /// The configuration is unreadable or invalid.
    Config(config::ConfigError),
    /// The command exists in the interface but not yet in this release.
    NotImplemented(&'static str),
    /// The backup store (`serve-backups`) could not start or failed.
    Serve(anyhow::Error),
    /// The daemon (`run`) could not start or failed.
    Daemon(anyhow::Error),
    /// `backup-session` refused a request or could not relay.
    Session(anyhow::Error),
    /// `status`: the status file is missing, unreadable or invalid.
    StatusFile(status_file::StatusFileError),
    /// `status`: the status file has not been updated for `age`: the daemon
    /// that wrote it is not running.
    StaleStatus { path: PathBuf, age: Duration },
    /// `status`: not every validator is up.
    NotAllUp(status_file::Verdict),
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::NotAllUp(_) => exit_code::NOT_ALL_UP,
            Error::Config(_)
            | Error::NotImplemented(_)
            | Error::Serve(_)
            | Error::Daemon(_)
            | Error::Session(_)
            | Error::StatusFile(_)
            | Error::StaleStatus { .. } => exit_code::ERROR,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(error) => write!(f, "{error}"),
            Error::NotImplemented(command) => write!(
                f,
                "`{command}` is not implemented yet in this release: see docs \
                 (palisade-bastion --help lists what works today)"
            ),
            Error::Serve(error) => write!(f, "backup store: {error:#}"),
            Error::Daemon(error) => write!(f, "{error:#}"),
            Error::Session(error) => write!(f, "backup-session: {error:#}"),
            Error::StatusFile(error) => write!(f, "{error}"),
            Error::StaleStatus { path, age } => write!(
                f,
                "status file {} was last updated {} ago: `palisade-bastion run` is not \
                 updating it (stopped or hung?); the table above is out of date",
                path.display(),
                humantime::format_duration(Duration::from_secs(age.as_secs()))
            ),
            Error::NotAllUp(verdict) => write!(
                f,
                "{} of {} validators not up ({} down, {} not checked yet)",
                verdict.total - verdict.up,
                verdict.total,
                verdict.down,
                verdict.unknown
            ),
        }
    }
}

impl std::error::Error for Error {}

/// Run one command.
pub fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Version => {
            println!("palisade-bastion version: {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::CheckConfig { config } => {
            let parsed = config::BastionConfig::load(&config).map_err(Error::Config)?;
            println!("{}: configuration is valid", config.display());
            print!("{}", parsed.summary());
            Ok(())
        }
        Command::ServeBackups {
            config,
            keep,
            quota_bytes,
            idle_timeout_ms,
            max_connections,
        } => {
            let parsed = config::BastionConfig::load(&config).map_err(Error::Config)?;
            init_logging("info");
            // Flags override the configuration's [backups] table.
            let mut options = parsed.backups.clone();
            if let Some(keep) = keep {
                options.keep = keep;
            }
            if let Some(quota_bytes) = quota_bytes {
                options.quota_bytes = quota_bytes;
            }
            if let Some(ms) = idle_timeout_ms {
                options.idle_timeout = Duration::from_millis(ms);
            }
            if let Some(max_connections) = max_connections {
                options.max_connections = max_connections;
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::Serve(e.into()))?;
            runtime
                .block_on(backup_store::serve(&parsed, options))
                .map_err(Error::Serve)
        }
        Command::Run { config } => {
            let parsed = config::BastionConfig::load(&config).map_err(Error::Config)?;
            init_logging("info");
            daemon::run(&parsed).map_err(Error::Daemon)
        }
        Command::Status { config, json } => {
            let parsed = config::BastionConfig::load(&config).map_err(Error::Config)?;
            status(&parsed, json)
        }
        Command::BackupSession { config, validator } => {
            // Terse: sshd passes stderr to the validator's client.
            init_logging("warn");
            backup_session::run(&config, &validator).map_err(Error::Session)
        }
        Command::Call { .. } => Err(Error::NotImplemented("call")),
    }
}

/// `status`: print the status file; the outcome decides the exit code.
fn status(config: &config::BastionConfig, json: bool) -> Result<(), Error> {
    let report = status_file::read(&config.status_file).map_err(Error::StatusFile)?;
    let now = SystemTime::now();
    if json {
        // Plain structs with string keys: serialization cannot fail.
        let text = serde_json::to_string_pretty(&report).expect("status report serializes");
        println!("{text}");
    } else {
        print!("{}", report.render(now));
    }
    for validator in &config.validators {
        if !report.validators.iter().any(|v| v.name == validator.name) {
            eprintln!(
                "palisade-bastion: note: validator {} is configured but not checked by the \
                 running daemon (restart it to apply the configuration)",
                validator.name
            );
        }
    }
    if let Some(age) = report.staleness(now) {
        return Err(Error::StaleStatus {
            path: config.status_file.clone(),
            age,
        });
    }
    let verdict = report.verdict();
    if verdict.all_up() {
        Ok(())
    } else {
        Err(Error::NotAllUp(verdict))
    }
}

/// Logs go to stderr (journald under systemd), filtered by `RUST_LOG`
/// (default `default`, e.g. `info`); colours only on a terminal.
fn init_logging(default: &str) {
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn call_is_not_implemented_and_fails_with_exit_code_1() {
        let args = ["palisade-bastion", "call", "val-a", "status"];
        let error = run(Cli::try_parse_from(args).unwrap()).unwrap_err();
        assert_eq!(error.exit_code(), exit_code::ERROR);
        assert!(
            error
                .to_string()
                .contains("not implemented yet in this release: see docs"),
            "{error}"
        );
    }

    #[test]
    fn exit_codes_are_distinct_per_outcome() {
        let verdict = status_file::Verdict {
            total: 3,
            up: 1,
            down: 1,
            unknown: 1,
        };
        // (error, exit code, message fragment)
        let rows = [
            (
                Error::NotAllUp(verdict),
                exit_code::NOT_ALL_UP,
                "2 of 3 validators not up (1 down, 1 not checked yet)",
            ),
            (
                Error::StaleStatus {
                    path: "/run/palisade-bastion/status.json".into(),
                    age: Duration::from_millis(90_500),
                },
                exit_code::ERROR,
                "last updated 1m 30s ago",
            ),
            (
                Error::Daemon(anyhow::anyhow!("binding /x")),
                exit_code::ERROR,
                "binding /x",
            ),
            (
                Error::Session(anyhow::anyhow!("request refused: unknown_validator")),
                exit_code::ERROR,
                "backup-session: request refused: unknown_validator",
            ),
        ];
        for (error, code, fragment) in rows {
            assert_eq!(error.exit_code(), code, "{error}");
            assert!(error.to_string().contains(fragment), "{error}");
        }
    }
}
