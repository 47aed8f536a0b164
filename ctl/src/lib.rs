//! `palisade-ctl`: the operator's client for `palisade-supervisor`.
//!
//! This release ships the command line, `version`, and `upgrades` (which
//! reads the supervisor's upgrade record file directly from disk). Commands
//! that need the supervisor's RPC are listed so scripts and muscle memory
//! can be built against them, but they fail with exit code 1 and say so —
//! they never pretend to succeed.
#![forbid(unsafe_code)]

pub mod records;

use std::fmt;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Exit codes of `palisade-ctl`. `CONNECTION` and `AUTH` are reserved for
/// the RPC commands of a later release.
pub mod exit_code {
    /// Success.
    pub const OK: i32 = 0;
    /// The call failed: an error answer, an unreadable or partly invalid
    /// file, or a command not available yet.
    pub const CALL: i32 = 1;
    /// Command-line usage error (from clap).
    pub const USAGE: i32 = 2;
    /// The supervisor or bastion could not be reached (planned).
    pub const CONNECTION: i32 = 3;
    /// Operator authentication was refused (planned).
    pub const AUTH: i32 = 4;
}

const ABOUT: &str = "Operator shell and scripting client for palisade-supervisor.";

const LONG_ABOUT: &str = "Operator shell and scripting client for palisade-supervisor.

Two ways to reach a supervisor (RPC commands, arriving in a later release):
  local   --socket PATH
          On the validator host, over the supervisor's Unix socket.
  remote  --via user@bastion[:port]
          From anywhere: SSH to a bastion, then on through the Unix socket the
          validator publishes there with a reverse forward. The session is
          end-to-end TLS with the supervisor's pinned certificate plus operator
          authentication, so the bastion can neither read the unlock
          passphrase nor issue commands of its own.

Operators will authenticate with a role that limits what they may do:
read-only (status, logs, upgrades), operator (unlock/lock, backups, staging
upgrades) and admin (handoff/failover between validator hosts).

Works in this release: `version`, and `upgrades --home DAEMON_HOME`, which
reads the upgrade record file on the local disk and needs no RPC.";

const AFTER_HELP: &str =
    "Exit codes: 0 ok, 1 call error (including \"not available yet\"), 2 usage,
3 connection failure, 4 authentication failure (3 and 4: once the RPC exists).

Examples:
  palisade-ctl upgrades --home /home/gaia/.gaia
  palisade-ctl upgrades --home /home/gaia/.gaia --json | jq '.[-1].switch_ms'";

/// The message of every command whose RPC does not exist yet.
pub const NOT_AVAILABLE: &str = "not available yet: the RPC arrives in a later release";

/// Command line of `palisade-ctl`.
#[derive(Debug, Parser)]
#[command(
    name = "palisade-ctl",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// Reach the supervisor locally over its Unix socket (RPC commands).
    #[arg(long, global = true, value_name = "PATH", conflicts_with = "via")]
    pub socket: Option<PathBuf>,

    /// Reach the supervisor through a bastion over SSH (RPC commands).
    #[arg(long, global = true, value_name = "USER@BASTION[:PORT]", value_parser = parse_via)]
    pub via: Option<Via>,

    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the version.
    Version,
    /// Show the upgrade record: every upgrade the supervisor performed or
    /// attempted, step by step, with durations. Reads
    /// $DAEMON_HOME/cosmovisor/palisade-upgrades.jsonl.
    Upgrades {
        /// The node's home (DAEMON_HOME), e.g. /home/gaia/.gaia.
        #[arg(long, env = "DAEMON_HOME", value_name = "DAEMON_HOME")]
        home: PathBuf,
        /// Print the records as a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Supervisor, daemon, vault and tunnel status (not available yet).
    Status,
    /// Unlock the key vault with its passphrase (not available yet).
    Unlock,
    /// Lock the key vault and wipe the decrypted keys (not available yet).
    Lock,
    /// Take a signed, encrypted backup now (not available yet).
    Backup,
    /// Stage an upgrade binary on the validator remotely (not available yet).
    StageUpgrade,
    /// Planned handoff of signing to another validator host (not available yet).
    Handoff,
    /// Follow the daemon's and supervisor's logs (not available yet).
    Logs,
    /// Interactive shell (not available yet).
    Shell,
}

/// A remote target: `user@host[:port]`, IPv6 hosts in brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    pub user: String,
    pub host: String,
    pub port: Option<u16>,
}

/// Parse `user@host[:port]`.
pub fn parse_via(text: &str) -> Result<Via, String> {
    let usage = || format!("'{text}' is not user@bastion[:port]");
    let (user, rest) = text.split_once('@').ok_or_else(usage)?;
    if user.is_empty() || rest.is_empty() {
        return Err(usage());
    }
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']').ok_or_else(usage)?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':').ok_or_else(usage)?)),
        }
    } else {
        match rest.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    let valid_host = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_');
    if host.is_empty() || !host.chars().all(valid_host) {
        return Err(usage());
    }
    let port = match port {
        Some(port) => match port.parse::<u16>() {
            Ok(port) if port > 0 => Some(port),
            _ => return Err(format!("'{port}' in '{text}' is not a port (1-65535)")),
        },
        None => None,
    };
    Ok(Via {
        user: user.to_string(),
        host: host.to_string(),
        port,
    })
}

/// Why a command failed; `main` prints it and exits with [`Error::exit_code`].
#[derive(Debug)]
pub enum Error {
    /// The upgrade record could not be read (or had bad lines).
    Records(records::RecordsError),
    /// A command whose RPC does not exist yet.
    NotAvailable(&'static str),
    /// Writing the output failed (e.g. JSON encoding).
    Output(String),
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Records(_) | Error::NotAvailable(_) | Error::Output(_) => exit_code::CALL,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Records(error) => write!(f, "{error}"),
            Error::NotAvailable(command) => write!(f, "{command}: {NOT_AVAILABLE}"),
            Error::Output(message) => write!(f, "{message}"),
        }
    }
}

impl std::error::Error for Error {}

/// Run one command.
pub fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Version => {
            println!("palisade-ctl version: {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Upgrades { home, json } => {
            let path = records::record_path(&home);
            let read = records::read_records(&home).map_err(Error::Records)?;
            if json {
                let text = serde_json::to_string_pretty(&read.records)
                    .map_err(|error| Error::Output(format!("cannot encode JSON: {error}")))?;
                println!("{text}");
            } else if read.records.is_empty() && read.bad_lines.is_empty() {
                println!("no upgrades recorded yet ({})", path.display());
            } else if !read.records.is_empty() {
                print!("{}", records::render_table(&read.records));
            }
            if read.bad_lines.is_empty() {
                Ok(())
            } else {
                Err(Error::Records(records::RecordsError::BadLines {
                    path,
                    lines: read.bad_lines,
                }))
            }
        }
        Command::Status => Err(Error::NotAvailable("status")),
        Command::Unlock => Err(Error::NotAvailable("unlock")),
        Command::Lock => Err(Error::NotAvailable("lock")),
        Command::Backup => Err(Error::NotAvailable("backup")),
        Command::StageUpgrade => Err(Error::NotAvailable("stage-upgrade")),
        Command::Handoff => Err(Error::NotAvailable("handoff")),
        Command::Logs => Err(Error::NotAvailable("logs")),
        Command::Shell => Err(Error::NotAvailable("shell")),
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
    fn via_parsing() {
        let via = |user: &str, host: &str, port: Option<u16>| Via {
            user: user.into(),
            host: host.into(),
            port,
        };
        let good = [
            (
                "ops@bastion1.example.com",
                via("ops", "bastion1.example.com", None),
            ),
            ("ops@10.0.0.5:2222", via("ops", "10.0.0.5", Some(2222))),
            ("ops@[2001:db8::1]", via("ops", "2001:db8::1", None)),
            ("ops@[2001:db8::1]:22", via("ops", "2001:db8::1", Some(22))),
        ];
        for (text, expected) in good {
            assert_eq!(parse_via(text).unwrap(), expected, "{text}");
        }
        let bad = [
            "bastion",
            "@bastion",
            "ops@",
            "ops@bastion:0",
            "ops@bastion:99999",
            "ops@bastion:ssh",
            "ops@bas tion",
            "ops@[2001:db8::1",
            "ops@[::1]x",
        ];
        for text in bad {
            assert!(parse_via(text).is_err(), "{text} should be rejected");
        }
    }

    #[test]
    fn socket_and_via_conflict() {
        let error = Cli::try_parse_from([
            "palisade-ctl",
            "--socket",
            "/run/x.sock",
            "--via",
            "ops@b",
            "status",
        ])
        .unwrap_err();
        assert_eq!(error.exit_code(), exit_code::USAGE);
    }

    #[test]
    fn rpc_commands_are_not_available_yet() {
        for command in [
            "status",
            "unlock",
            "lock",
            "backup",
            "stage-upgrade",
            "handoff",
            "logs",
            "shell",
        ] {
            let cli = Cli::try_parse_from(["palisade-ctl", command]).unwrap();
            let error = run(cli).unwrap_err();
            assert_eq!(error.exit_code(), exit_code::CALL, "{command}");
            assert_eq!(error.to_string(), format!("{command}: {NOT_AVAILABLE}"));
        }
    }
}
