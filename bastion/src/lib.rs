//! `palisade-bastion`: the daemon on each public sentry/bastion node.
//!
//! This release ships the command line, the configuration format and its
//! checker (`check-config`), and the encrypted-backup store
//! (`serve-backups`, see [`backup_store`]). The full daemon (`run`) and
//! scripted RPC calls (`call`) arrive in a later release; until then they
//! fail loudly with exit code 1 instead of pretending to work.
#![forbid(unsafe_code)]

pub mod backup_store;
pub mod config;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// Exit codes of `palisade-bastion`.
pub mod exit_code {
    /// Success.
    pub const OK: i32 = 0;
    /// An error: invalid configuration, unreadable file, or a command that
    /// is not implemented yet.
    pub const ERROR: i32 = 1;
    /// Command-line usage error (from clap).
    pub const USAGE: i32 = 2;
}

const ABOUT: &str = "Palisade's daemon for public sentry/bastion nodes.";

const LONG_ABOUT: &str = "Palisade's daemon for public sentry/bastion nodes.

A bastion is a public node (with its own sentry gaiad) that the validator
host, which has no public IP, connects out to over SSH. palisade-bastion is
deployed beside the stock OpenSSH sshd, which stays the bastion's only public
door: the validator's key is confined in authorized_keys with options such as
`restrict,permitlisten=...,permitopen=...`.

palisade-bastion itself listens only on loopback and Unix sockets. It reaches
each validator's supervisor through the reverse-forwarded Unix socket that the
validator publishes over its SSH connection. Its job (built up release by
release, see below):
  - stores the validator's backups, which are signed by the validator and
    age-encrypted before upload: the bastion holds ciphertext it can neither
    read nor forge;
  - checks the validators' health through those tunnels;
  - (planned) relays logs, raises alerts, and executes scripted RPC calls.

Status of this release: `check-config`, `serve-backups` (the encrypted-backup
store alone) and `version` work. `run` and `call` are not implemented yet;
they exit with code 1 and say so.";

const AFTER_HELP: &str = "Backup store:
  palisade-bastion serve-backups --config FILE [--keep N] [--quota-bytes N]
      Serve the validators' encrypted backups on listen-socket, stored under
      backup-dir/<validator>/ (see docs/bastion-backup-store.md).

Planned commands (not implemented yet in this release):
  palisade-bastion run --config FILE
      Run the daemon: backup store, health checks, log relay, alerting.
  palisade-bastion call <VALIDATOR> <METHOD> [--json]
      Execute one RPC call against a validator's supervisor through its
      reverse tunnel.

Configuration file (TOML):
  listen-socket = \"/run/palisade-bastion/bastion.sock\"
  backup-dir    = \"/var/lib/palisade-bastion/backups\"
  [[validator]]
  name   = \"val-a\"
  socket = \"/run/palisade-bastion/val-a.sock\"

Exit codes: 0 ok, 1 error (including \"not implemented yet\"), 2 usage.";

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
    /// Serve the validators' encrypted backups on the configured
    /// listen-socket until SIGTERM or SIGINT. Only the backup store: no
    /// health checks, log relay or alerting.
    ServeBackups {
        /// The bastion's TOML configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Files kept per validator; older ones are removed after each put.
        #[arg(long, value_name = "N", default_value_t = backup_store::DEFAULT_KEEP)]
        keep: usize,
        /// Bytes stored per validator after retention; a put beyond fails
        /// with `quota`.
        #[arg(long, value_name = "BYTES", default_value_t = backup_store::DEFAULT_QUOTA_BYTES)]
        quota_bytes: u64,
        /// A connection that sends no complete request header for this long
        /// is closed.
        #[arg(long, value_name = "MS", default_value_t = backup_store::DEFAULT_IDLE_TIMEOUT.as_millis() as u64)]
        idle_timeout_ms: u64,
        /// Connections served at once; more wait in the listen backlog.
        #[arg(long, value_name = "N", default_value_t = backup_store::DEFAULT_MAX_CONNECTIONS)]
        max_connections: usize,
    },
    /// Run the bastion daemon (NOT IMPLEMENTED YET: exits with code 1).
    Run {
        /// The bastion's TOML configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
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
    /// The backup store could not start or failed.
    Serve(anyhow::Error),
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) | Error::NotImplemented(_) | Error::Serve(_) => exit_code::ERROR,
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
            let _ = tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .try_init();
            let options = backup_store::ServeOptions {
                keep,
                quota_bytes,
                idle_timeout: Duration::from_millis(idle_timeout_ms),
                max_connections,
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::Serve(e.into()))?;
            runtime
                .block_on(backup_store::serve(&parsed, options))
                .map_err(Error::Serve)
        }
        Command::Run { .. } => Err(Error::NotImplemented("run")),
        Command::Call { .. } => Err(Error::NotImplemented("call")),
    }
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
    fn unimplemented_commands_fail_with_exit_code_1() {
        for args in [
            &["palisade-bastion", "run", "--config", "/nonexistent"][..],
            &["palisade-bastion", "call", "val-a", "status"][..],
        ] {
            let error = run(Cli::try_parse_from(args).unwrap()).unwrap_err();
            assert_eq!(error.exit_code(), exit_code::ERROR);
            assert!(
                error
                    .to_string()
                    .contains("not implemented yet in this release: see docs"),
                "{error}"
            );
        }
    }
}
