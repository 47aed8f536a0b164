//! `palisade-bastion`: the daemon on each public sentry/bastion node.
//!
//! This release ships `run` (the daemon: the encrypted-backup store of
//! [`backup_store`] plus health checks of every configured validator through
//! its reverse tunnel, [`health_check`], reported by [`daemon`] in logs, the
//! [`status_file`] and systemd's STATUS=), `status` (reads the status file),
//! `serve-backups` (the backup store alone), `backup-session` (the forced
//! command through which a validator's SSH key reaches the store, bound to
//! that validator: [`backup_session`]), `rpc-relay` (the forced command of
//! the operators' keys: one SSH session relayed to the socket of the
//! configured validator the client names, the key having no forwarding at
//! all: [`rpc_relay`]), `call` (one RPC call to a validator's supervisor
//! with the bastion's own viewer identity: [`call`]), `check-config` and
//! `version`. With `[metrics]`, `run` also serves Prometheus metrics
//! ([`metrics`]).
#![forbid(unsafe_code)]

pub(crate) mod alerts;
pub(crate) mod backup_session;
pub(crate) mod backup_store;
pub(crate) mod call;
pub(crate) mod config;
pub(crate) mod daemon;
pub(crate) mod health_check;
pub(crate) mod health_state;
pub(crate) mod metrics;
pub(crate) mod rpc_relay;
pub(crate) mod status_file;
pub(crate) mod store_access;

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::{Parser, Subcommand};

/// Exit codes of `palisade-bastion`. `call` uses palisade-ctl's
/// (`docs/rpc.md` §6): [`OK`], [`CALL`], [`USAGE`], [`CONNECTION`],
/// [`AUTH`].
pub mod exit_code {
    /// Success; for `status`: every validator is up.
    pub const OK: i32 = 0;
    /// An error: invalid configuration, a startup failure, an unreadable or
    /// stale status file.
    pub const ERROR: i32 = 1;
    /// `call`: the call answered an error, or `health` found problems.
    pub const CALL: i32 = 1;
    /// Command-line usage error (from clap); for `call` also a bad
    /// configuration, an unknown validator, no `[client]` or `pin`, a
    /// secret method.
    pub const USAGE: i32 = 2;
    /// `status`: at least one validator is down or not checked yet.
    pub const NOT_ALL_UP: i32 = 3;
    /// `call`: the supervisor could not be reached (socket, greeting, TLS,
    /// certificate pin mismatch, timeout).
    pub const CONNECTION: i32 = 3;
    /// `call`: login or authorization refused, or the bastion's key is
    /// unusable.
    pub const AUTH: i32 = 4;

    /// `call`: the exit code of a failed connection or call, as
    /// palisade-ctl gives it.
    pub fn for_failure(kind: palisade_client::FailureKind) -> i32 {
        match kind {
            palisade_client::FailureKind::Connection => CONNECTION,
            palisade_client::FailureKind::Authentication => AUTH,
            palisade_client::FailureKind::Call => CALL,
        }
    }
}

/// Where `call` and `rpc-relay` look for the configuration without
/// `--config`.
pub const DEFAULT_CONFIG: &str = "/etc/palisade-bastion/bastion.toml";

const ABOUT: &str = "Palisade's daemon for public sentry/bastion nodes.";

const LONG_ABOUT: &str = "Palisade's daemon for public sentry/bastion nodes.

A bastion is a public node (with its own sentry gaiad) that the validator
host, which has no public IP, connects out to over SSH. palisade-bastion is
deployed beside the stock OpenSSH sshd, which stays the bastion's only public
door: the validator's key is confined in authorized_keys with a forced
command and options such as `restrict,port-forwarding,permitopen=...` (see
docs/bastion-sshd.md). palisade-bastion itself opens no public network
port: it listens on a Unix socket (listen-socket), connects only to Unix
sockets, and with [metrics] serves Prometheus metrics on a loopback TCP
port (127.0.0.1:9811 by default; docs/metrics.md).

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

Operators reach a validator's supervisor with `palisade-ctl --via`. Their
keys have no forwarding at all (`restrict`), only the forced command
`palisade-bastion rpc-relay`, which sshd runs for every session: it connects
the session to the socket of the configured validator the client names
(`palisade-rpc NAME`). The bytes are relayed unread: TLS with the pinned
certificate and the operator's login run end to end. The same command serves
`palisade-log-archive NAME` (`palisade-ctl logs --archive`): list and get of
that validator's log segments, nothing else.

The store keeps the validators' log segments too (objects of kind `log`,
docs/log-format.md): signed by the validator, age-encrypted to its operators,
in backup-dir/<validator>/logs/ with their own ring retention ([logs]
quota-bytes, max-age). `[logs] archive-users` names the operators' account,
which the store then serves log reads only.

Accounts (docs/bastion.md, \"Install\"): the validators' keys log in as the
tunnel user (palisade-tunnel), the operators' keys as another account
(palisade-ops), and palisade-bastion runs as a third (palisade-bastion), which
alone owns backup-dir; `tunnel-user` in the configuration names the first.
sshd creates the validators' sockets for the tunnel user, mode 0660 in a
setgid directory of the group palisade-rpc (this daemon and the operators'
relay connect); listen-socket is mode 0660 for the tunnel user's group, and
the store serves only the tunnel user, root and itself (SO_PEERCRED). So no
operator key reaches the backups, and no validator key can make sshd delete
one. The login accounts need a shell that can run the forced commands
(/bin/sh, not nologin). Without `tunnel-user` (one account for everything,
as earlier releases did) the daemon still runs, and warns.

With a [client] table (the bastion's own operator name and ed25519 key) and
a validator's `pin` (its supervisor's RPC certificate), the health check goes
on after the greeting: TLS with the pinned certificate, login as the
bastion's operator, and the `health` method; problems it reports make the
validator down. `call` makes one RPC call the same way, for scripts. On the
supervisor, the bastion's [[operator]] entry must have role = \"viewer\":
a bastion may read status, never command, and never sees a secret.

Status of this release: `run` (backup store + health checks), `status`,
`serve-backups` (the backup store alone), `backup-session`, `rpc-relay`,
`call`, `check-config` and `version` work; the store keeps log segments too
(docs/log-format.md). With an [alerts] table, `run` sends the health checks'
alerts itself (Slack, Discord, Telegram, PagerDuty, webhooks: docs/alerts.md),
and with [metrics] it serves Prometheus metrics (docs/metrics.md).";

const AFTER_HELP: &str = "Daemon:
  palisade-bastion run --config FILE
      Serve the backup store on listen-socket and probe every validator's
      socket every health.interval: connect, read the supervisor's one-line
      greeting, close; with [client] and the validator's pin, then TLS + login
      + the `health` method (problems make the validator down). State changes
      are logged; the status file (status-file) is rewritten after every
      probe. systemd Type=notify; SIGTERM/SIGINT stop.
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
  palisade-bastion rpc-relay [--config FILE] [--validator NAME]...
      An operator's session (palisade-ctl --via) to one validator's
      supervisor: the client sends `palisade-rpc NAME`, and the relay
      connects stdin/stdout to NAME's socket, if NAME is configured (and one
      of --validator, if given); anything else gets a one-line refusal. The
      forced command of each operator key, with `restrict` and no
      forwarding; `rpc-relay --help` shows the exact line.

Scripted calls (as the daemon's account; needs [client] and the validator's pin):
  palisade-bastion call [--config FILE] VALIDATOR METHOD [--params JSON] [--json]
      One RPC call to the validator's supervisor through its reverse tunnel,
      as the bastion's viewer; `call --help` lists the exit codes.

Configuration file (TOML; docs/bastion.md lists every key):
  listen-socket = \"/run/palisade-bastion/bastion.sock\"
  backup-dir    = \"/var/lib/palisade-bastion/backups\"
  tunnel-user   = \"palisade-tunnel\"   # the validators' keys' account
  # status-file = \"/run/palisade-bastion/status.json\"  (default: beside listen-socket)
  [backups]     # optional: keep = 500, quota-bytes = 268435456,
                #           idle-timeout = \"30s\", header-timeout = \"5s\",
                #           max-connections = 64, max-connections-per-validator = 4
  [health]      # optional: interval = \"10s\", timeout = \"3s\"
  [client]      # optional: the bastion's RPC identity (a viewer)
  operator = \"bastion-b1\"
  key      = \"/etc/palisade-bastion/operator_ed25519\"
  [[validator]]
  name   = \"val-a\"
  socket = \"/run/palisade-validators/val-a.sock\"   # where sshd creates the reverse forward
  pin    = \"sha256:...\"   # optional: `palisade-supervisor rpc-fingerprint`

Exit codes: 0 ok (status: every validator up), 1 error (bad configuration,
startup failure, unreadable or stale status file, a refused or broken
backup-session or rpc-relay), 2 usage, 3 status: at
least one validator down (unreachable, or its supervisor reports problems)
or not checked yet. `call` has palisade-ctl's exit codes (`call --help`).";

const CALL_LONG_ABOUT: &str = "Call METHOD on VALIDATOR's supervisor through its reverse-forwarded
socket, and print the result as JSON.

The call runs as the bastion's own operator: the [client] table (operator
name and unencrypted OpenSSH ed25519 key, mode 0600) and the validator's
`pin` (the supervisor's RPC certificate) must be configured. The connection
is TLS with the pinned certificate plus an operator login, exactly as
palisade-ctl does: the supervisor decides what the bastion may call from the
role of its [[operator]] entry, which should be `viewer` (status, health,
logs.tail, tunnel.list, upgrade.list, backup.list).

Secret methods (vault.unlock) are refused here: secrets are never typed on a
bastion. Run as the daemon's account (e.g. `sudo -u palisade-bastion`), which
owns the key and may reach the validator sockets.";

const CALL_AFTER_HELP: &str =
    "Output: with --json the call's `result` as one line of JSON (stable, for
scripts); otherwise the same JSON, indented. Errors go to stderr.

Exit codes (the same as palisade-ctl's):
  0  ok
  1  the call answered an error (also: `health` found problems)
  2  usage: bad arguments, bad configuration, unknown validator, no [client]
     or no pin configured, a secret method
  3  connection: socket missing or refused, bad greeting, TLS failure or
     certificate pin mismatch, timeout
  4  authentication or authorization refused (the supervisor does not know
     the bastion's key, or its role does not allow METHOD), unusable key

Examples:
  palisade-bastion call val-a status --json | jq .node.height
  palisade-bastion call val-a health || page-oncall
  palisade-bastion call val-a logs.tail --params '{\"lines\":50}'";

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

const RPC_RELAY_LONG_ABOUT: &str =
    "An operator's session to one validator's supervisor, run by sshd as the
forced command of the operators' keys. Not meant to be run by hand.

palisade-ctl --via USER@BASTION --validator NAME logs in to the bastion,
opens a session channel and asks to run `palisade-rpc NAME`; sshd runs this
command instead, with that request in SSH_ORIGINAL_COMMAND and stdin and
stdout connected to the channel. rpc-relay checks that the request is
exactly `palisade-rpc` and a validator name, that the name is a configured
[[validator]] and, if --validator is given (repeatable), one of those; then
it connects to that validator's socket (within 5s) and copies bytes both
ways, unread: the supervisor's greeting, then TLS with the pinned
certificate and the operator's login, end to end. End of stdin half-closes
the socket; the session ends when the validator's side closes. Relayed bytes
are never logged.

`palisade-log-archive NAME` (palisade-ctl logs --archive) is checked by the
same rules and runs a read-only session to the backup store instead: list
and get of that validator's log segments (kind `log`), nothing else. The
account must then be able to reach listen-socket, and in the separate-users
layout be named in [logs] archive-users.

Why not a direct-streamlocal channel: OpenSSH shares one permission list
between direct-tcpip and direct-streamlocal, so a key that may forward to the
validator's socket may also open TCP connections from the bastion to
anything it reaches, and any Unix socket its account can use. An operator
key with this forced command and `restrict` can open no channel but the
session, and the session reaches only the configured validators.

Run it as the account the operators' keys log in as, which must be able to
connect to the validators' sockets and read the configuration (not the
[client] key: it is not loaded). That account needs a shell that can run the
forced command (/bin/sh, not nologin).";

const RPC_RELAY_AFTER_HELP: &str = "In authorized_keys of the account operators log in as, one line per operator key (one line):

command=\"/usr/bin/palisade-bastion rpc-relay --config /etc/palisade-bastion/bastion.toml\",restrict ssh-ed25519 AAAA… alice@laptop

To let a key reach only some validators, repeat --validator in its line:

command=\"/usr/bin/palisade-bastion rpc-relay --config /etc/palisade-bastion/bastion.toml --validator val-a --validator val-b\",restrict ssh-ed25519 AAAA… bob@laptop

The client sends the exec command (palisade-ctl --via does it):

palisade-rpc NAME

A refusal is one line on stdout, where the client expects the supervisor's
greeting, and the same line on stderr:

palisade-bastion: MESSAGE

e.g. `palisade-bastion: unknown validator \"val-x\": the configured validators
are val-a, val-b` or `palisade-bastion: cannot connect to val-a's socket
/run/palisade-validators/val-a.sock: ...: is the validator's tunnel up?`. Text
from the client is shown cleaned of control and bidi characters.

Exit codes: 0 the validator's side closed the connection (the session is
over); 1 a refusal (SSH_ORIGINAL_COMMAND missing or not `palisade-rpc NAME`,
an unknown validator or one this key may not reach, a --validator that is
not configured, an unusable configuration, the validator's socket
unreachable) or a relay that broke after it began (on stderr only: stdout
then belongs to the supervisor); 2 usage.";

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
        /// Connections one validator may hold at once; one more is answered
        /// `busy` and closed. [default:
        /// backups.max-connections-per-validator, else 4]
        #[arg(long, value_name = "N")]
        max_connections_per_validator: Option<usize>,
        /// A new connection that sends no complete first header for this
        /// long is closed. [default: backups.header-timeout, else 5000]
        #[arg(long, value_name = "MS")]
        header_timeout_ms: Option<u64>,
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
    /// An operator's session to one validator's supervisor over
    /// stdin/stdout: the forced command of the operators' keys in
    /// authorized_keys.
    #[command(
        long_about = RPC_RELAY_LONG_ABOUT,
        after_help = RPC_RELAY_AFTER_HELP,
        // Unwrapped, so that the authorized_keys lines stay one line.
        term_width = 0
    )]
    RpcRelay {
        /// The bastion's TOML configuration file.
        #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// A validator this key may reach ([[validator]] name); repeat for
        /// more. Without it: every configured validator.
        #[arg(long = "validator", value_name = "NAME")]
        validators: Vec<String>,
    },
    /// Call an RPC method on a validator's supervisor through its reverse
    /// tunnel, as the bastion's viewer, and print the result as JSON.
    #[command(long_about = CALL_LONG_ABOUT, after_help = CALL_AFTER_HELP)]
    Call {
        /// Validator name as in the configuration's [[validator]] tables.
        validator: String,
        /// RPC method, e.g. status, health, logs.tail.
        method: String,
        /// The method's params as JSON, e.g. '{"lines":50}'.
        #[arg(long, value_name = "JSON")]
        params: Option<String>,
        /// Print the result as one line of JSON (stable, for scripts).
        #[arg(long)]
        json: bool,
        /// Give up after this many seconds (connecting: at most 10).
        #[arg(long, value_name = "SECONDS", default_value_t = 60,
              value_parser = clap::value_parser!(u64).range(1..=3600))]
        timeout: u64,
        /// The bastion's TOML configuration file.
        #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Print the version.
    Version,
}

/// Why a command failed; `main` prints it and exits with [`Error::exit_code`].
#[derive(Debug)]
pub enum Error {
    /// The configuration is unreadable or invalid.
    Config(config::ConfigError),
    /// `call` failed (with palisade-ctl's exit codes).
    Call(call::CallFailure),
    /// The backup store (`serve-backups`) could not start or failed.
    Serve(anyhow::Error),
    /// The daemon (`run`) could not start or failed.
    Daemon(anyhow::Error),
    /// `backup-session` refused a request or could not relay.
    Session(anyhow::Error),
    /// `rpc-relay` refused the session (its message also went to stdout)
    /// or could not relay.
    RpcRelay(rpc_relay::RelayFailure),
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
            Error::Call(failure) => failure.exit_code(),
            Error::Config(_)
            | Error::Serve(_)
            | Error::Daemon(_)
            | Error::Session(_)
            | Error::RpcRelay(_)
            | Error::StatusFile(_)
            | Error::StaleStatus { .. } => exit_code::ERROR,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(error) => write!(f, "{error}"),
            Error::Call(failure) => write!(f, "call: {failure}"),
            Error::Serve(error) => write!(f, "backup store: {error:#}"),
            Error::Daemon(error) => write!(f, "{error:#}"),
            Error::Session(error) => write!(f, "backup-session: {error:#}"),
            // A refusal is exactly the line that went to stdout.
            Error::RpcRelay(failure) => write!(f, "{failure}"),
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
            max_connections_per_validator,
            header_timeout_ms,
        } => {
            let parsed =
                config::BastionConfig::load_skipping_key(&config).map_err(Error::Config)?;
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
                options.max_connections_per_validator =
                    options.max_connections_per_validator.min(max_connections);
            }
            if let Some(max) = max_connections_per_validator {
                options.max_connections_per_validator = max;
            }
            if let Some(ms) = header_timeout_ms {
                options.header_timeout = Duration::from_millis(ms);
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
            // `status` may run as a user who cannot read the [client] key.
            let parsed =
                config::BastionConfig::load_skipping_key(&config).map_err(Error::Config)?;
            status(&parsed, json)
        }
        Command::BackupSession { config, validator } => {
            // Terse: sshd passes stderr to the validator's client.
            init_logging("warn");
            backup_session::run(&config, &validator).map_err(Error::Session)
        }
        Command::RpcRelay { config, validators } => {
            rpc_relay::run(&config, &validators).map_err(Error::RpcRelay)
        }
        Command::Call {
            validator,
            method,
            params,
            json,
            timeout,
            config,
        } => call::run(&call::CallRequest {
            config,
            validator,
            method,
            params,
            json,
            timeout: Duration::from_secs(timeout),
        })
        .map_err(Error::Call),
    }
}

/// `status`: print the status file; the outcome decides the exit code.
fn status(config: &config::BastionConfig, json: bool) -> Result<(), Error> {
    let report = status_file::read(&config.status_file).map_err(Error::StatusFile)?;
    let now = SystemTime::now();
    if json {
        // Plain structs with string keys: serialization cannot fail.
        let text = serde_json::to_string_pretty(&report).expect("status report serializes");
        println!("{}", palisade_client::peer_text::escape_json_output(&text));
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
    fn call_refuses_secret_methods_before_reading_anything() {
        // No such config file: the refusal comes first.
        let args = [
            "palisade-bastion",
            "call",
            "--config",
            "/nonexistent/bastion.toml",
            "val-a",
            "vault.unlock",
        ];
        let error = run(Cli::try_parse_from(args).unwrap()).unwrap_err();
        assert_eq!(error.exit_code(), exit_code::USAGE);
        assert!(
            error
                .to_string()
                .contains("secrets are never typed on a bastion"),
            "{error}"
        );
        // The default config path, and an unreadable config: usage (2),
        // as palisade-ctl treats a bad config.
        let cli = Cli::try_parse_from(["palisade-bastion", "call", "val-a", "status"]).unwrap();
        let Command::Call { config, .. } = &cli.command else {
            panic!("{cli:?}");
        };
        assert_eq!(config, &PathBuf::from(DEFAULT_CONFIG));
        let args = [
            "palisade-bastion",
            "call",
            "--config",
            "/nonexistent/bastion.toml",
            "val-a",
            "status",
        ];
        let error = run(Cli::try_parse_from(args).unwrap()).unwrap_err();
        assert_eq!(error.exit_code(), exit_code::USAGE, "{error}");
        assert!(
            error.to_string().contains("/nonexistent/bastion.toml"),
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

    #[test]
    fn call_failures_have_palisade_ctls_exit_codes() {
        use palisade_client::FailureKind;
        let rows = [
            (FailureKind::Connection, 3),
            (FailureKind::Authentication, 4),
            (FailureKind::Call, 1),
        ];
        for (kind, code) in rows {
            assert_eq!(exit_code::for_failure(kind), code, "{kind:?}");
        }
    }
}
