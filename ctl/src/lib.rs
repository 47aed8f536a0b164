//! `palisade-ctl`: the operator's client for `palisade-supervisor`.
//!
//! One-shot commands over the supervisor's control RPC (`docs/rpc.md`):
//! [`client`] holds the connection (greeting, pinned TLS, operator login,
//! calls), [`config`] the endpoints file, [`render`] the readable output.
//! `upgrades --home` still reads the upgrade record from disk with no RPC.
//! Remote mode (`--via`, SSH through a bastion) and the interactive shell
//! are listed but fail with exit code 1 and say so.
//!
//! Invariant: secrets (the vault passphrase) are never taken from argv,
//! never put in JSON, and live only in zeroizing buffers.
#![forbid(unsafe_code)]

pub mod client;
pub mod config;
pub mod records;
pub mod render;

use std::fmt;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use secrecy::SecretString;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::client::{CallError, Client, ConnectOptions, Fingerprint, OperatorKey, TlsPolicy};
use crate::config::ConfigError;

/// Exit codes of `palisade-ctl` (`docs/rpc.md` §6).
pub mod exit_code {
    /// Success.
    pub const OK: i32 = 0;
    /// The call failed: an error answer, an unhealthy `health`, an
    /// unreadable or partly invalid file, or a command not available yet.
    pub const CALL: i32 = 1;
    /// Command-line usage error (from clap), a bad config file, or no
    /// endpoint to talk to.
    pub const USAGE: i32 = 2;
    /// The supervisor could not be reached: socket missing or refused, bad
    /// greeting, TLS failure or certificate pin mismatch, timeout.
    pub const CONNECTION: i32 = 3;
    /// Operator authentication or authorization was refused, or the
    /// operator key is unusable.
    pub const AUTH: i32 = 4;
}

const ABOUT: &str = "Operator shell and scripting client for palisade-supervisor.";

const LONG_ABOUT: &str = "Operator shell and scripting client for palisade-supervisor.

Each command opens one connection to the supervisor's control RPC, makes its
call, prints the result and exits with a code scripts can test.

Connection modes:
  local   --socket PATH  (or `socket` in the config)
          On the validator host, over the supervisor's Unix socket. A trusted
          local user (root or the supervisor's own user) may stay in
          plaintext and needs no operator key; anyone else is told by the
          supervisor to use TLS, and then --pin and an operator key are needed.
  remote  --via user@bastion[:port]  (not available yet)
          From anywhere: SSH to a bastion, then on through the Unix socket the
          validator publishes there. Always TLS with the pinned certificate
          plus operator authentication, so the bastion can neither read the
          unlock passphrase nor issue commands of its own.

TLS: after the supervisor's greeting, TLS 1.3 runs when the supervisor
requires it or --tls is given. Only the certificate whose fingerprint is
pinned (--pin sha256:..., printed by `palisade-supervisor init-rpc`) is
accepted; any other is a hard failure (exit 3) naming both fingerprints.

Authentication: with an operator name and key (--operator, --key, or the
config), the client signs the supervisor's challenge, bound to the TLS
session, with the operator's ed25519 key (an unencrypted OpenSSH key from
`ssh-keygen -t ed25519`, mode 0600). The operator's role (viewer, operator,
admin) limits what it may call.

Config file (--config FILE, $PALISADE_CTL_CONFIG, default
~/.config/palisade/ctl.toml); flags override it:

  default = \"val-a\"

  [[validator]]
  name = \"val-a\"
  socket = \"/run/palisade/supervisor.sock\"
  pin = \"sha256:3f2a...\"
  operator = \"alice\"
  key = \"~/.ssh/palisade_alice\"

  [[validator]]
  name = \"val-b\"
  via = \"ops@bastion1.example.com:22\"
  remote-socket = \"/run/palisade-bastion/val-b.sock\"
  pin = \"sha256:9c41...\"
  operator = \"alice\"
  key = \"~/.ssh/palisade_alice\"

Output: a short readable rendering, or with --json the call's raw `result`
as JSON (stable for scripts). Errors go to stderr.";

const AFTER_HELP: &str = "Exit codes:
  0  ok
  1  the call returned an error (also: `health` found problems, a command
     not available yet, an unreadable upgrade record)
  2  usage: bad arguments, bad config file, no socket configured
  3  connection: socket missing or refused, bad greeting, TLS failure or
     certificate pin mismatch, timeout
  4  authentication or authorization refused, unusable operator key

Examples:
  palisade-ctl --socket /run/palisade/supervisor.sock status
  palisade-ctl health || page-oncall
  palisade-ctl --validator val-b --json backups | jq '.[0]'
  palisade-ctl logs --lines 200
  palisade-ctl unlock                               # asks, no echo
  pass show palisade/val-a | palisade-ctl unlock --passphrase-stdin
  palisade-ctl upgrade add v2 --url https://example.com/gaiad-v2 --checksum sha256:...
  palisade-ctl call tunnel.reconnect --params '{\"bastion\":\"b1\"}'
  palisade-ctl upgrades --home /home/gaia/.gaia --json | jq '.[-1].switch_ms'";

/// The message of every command or mode that does not exist yet.
pub const NOT_AVAILABLE: &str = "not available yet: it arrives in a later release";

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
    #[command(flatten)]
    pub connection: ConnectionArgs,

    /// Print the call's raw `result` as JSON (stable for scripts).
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// How to reach the supervisor; each overrides the config file.
#[derive(Debug, Args)]
pub struct ConnectionArgs {
    /// The config file [default: ~/.config/palisade/ctl.toml].
    #[arg(long, global = true, value_name = "FILE", env = "PALISADE_CTL_CONFIG")]
    pub config: Option<PathBuf>,

    /// Which [[validator]] of the config to reach [default: `default`, or
    /// the only one].
    #[arg(long, global = true, value_name = "NAME")]
    pub validator: Option<String>,

    /// Reach the supervisor locally over its Unix socket.
    #[arg(long, global = true, value_name = "PATH", conflicts_with = "via")]
    pub socket: Option<PathBuf>,

    /// Reach the supervisor through a bastion over SSH (not available yet).
    #[arg(long, global = true, value_name = "USER@BASTION[:PORT]", value_parser = parse_via)]
    pub via: Option<Via>,

    /// The supervisor's certificate fingerprint to accept.
    #[arg(long, global = true, value_name = "sha256:HEX", value_parser = Fingerprint::parse)]
    pub pin: Option<Fingerprint>,

    /// Run TLS even when the supervisor allows plaintext.
    #[arg(long, global = true)]
    pub tls: bool,

    /// Log in as this operator (needs a key).
    #[arg(long, global = true, value_name = "NAME")]
    pub operator: Option<String>,

    /// The operator's unencrypted OpenSSH ed25519 private key.
    #[arg(long, global = true, value_name = "FILE")]
    pub key: Option<PathBuf>,

    /// Give up on a call after this many seconds.
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the version.
    Version,
    /// Supervisor, node, vault, sign-state watermark, tunnels, last backup.
    Status,
    /// Whether everything is fine; exits 1 when there are problems.
    Health,
    /// Recent daemon and supervisor log lines.
    Logs {
        /// How many lines.
        #[arg(long, default_value_t = 100,
              value_parser = clap::value_parser!(u32).range(1..=1000))]
        lines: u32,
    },
    /// Tunnels per bastion: connected since, last error, bytes, reconnects.
    Tunnels,
    /// Backups per store, with watermark and sequence.
    Backups,
    /// Take a signed, encrypted backup now.
    BackupNow,
    /// Start, stop or restart the node.
    Node {
        #[command(subcommand)]
        action: NodeAction,
    },
    /// Unlock the key vault. The passphrase is read from the terminal with
    /// no echo, or from stdin with --passphrase-stdin; never from argv.
    Unlock {
        /// Read the passphrase from the first line of stdin.
        #[arg(long)]
        passphrase_stdin: bool,
    },
    /// Lock the key vault: final backup, decrypted keys wiped.
    Lock,
    /// Show upgrades: with --home, the upgrade record on this disk (no
    /// RPC; $DAEMON_HOME/cosmovisor/palisade-upgrades.jsonl); otherwise
    /// the supervisor's staged and pending upgrades.
    Upgrades {
        /// The node's home (DAEMON_HOME), e.g. /home/gaia/.gaia.
        #[arg(long, env = "DAEMON_HOME", value_name = "DAEMON_HOME")]
        home: Option<PathBuf>,
    },
    /// Stage or cancel an upgrade binary.
    Upgrade {
        #[command(subcommand)]
        action: UpgradeAction,
    },
    /// Make a raw call: METHOD with --params JSON.
    Call {
        /// The method, e.g. `tunnel.reconnect`.
        method: String,
        /// The params as JSON, e.g. '{"bastion":"b1"}'.
        #[arg(long, value_name = "JSON")]
        params: Option<String>,
    },
    /// Planned handoff of signing to another validator host (not available yet).
    Handoff,
    /// Interactive shell (not available yet).
    Shell,
}

/// `node …`.
#[derive(Debug, Clone, Copy, Subcommand)]
pub enum NodeAction {
    /// Start the node.
    Start,
    /// Stop the node.
    Stop,
    /// Restart the node.
    Restart,
}

/// `upgrade …`.
#[derive(Debug, Subcommand)]
pub enum UpgradeAction {
    /// Stage the binary for upgrade NAME, downloaded by the supervisor
    /// (--url with --checksum) or already on the validator host (--path).
    #[command(group(clap::ArgGroup::new("source").required(true).args(["url", "path"])))]
    Add {
        /// The upgrade's on-chain name.
        name: String,
        /// Where the supervisor downloads the binary.
        #[arg(long, requires = "checksum", conflicts_with = "path")]
        url: Option<String>,
        /// The binary's checksum, sha256:<hex>.
        #[arg(long, requires = "url")]
        checksum: Option<String>,
        /// A binary already on the validator host.
        #[arg(long, value_name = "FILE")]
        path: Option<PathBuf>,
    },
    /// Remove a staged upgrade.
    Cancel {
        /// The upgrade's on-chain name.
        name: String,
    },
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
    /// A command or mode that does not exist yet.
    NotAvailable(&'static str),
    /// Writing the output failed (e.g. JSON encoding).
    Output(String),
    /// The config file is unreadable or invalid.
    Config(ConfigError),
    /// Arguments that clap cannot check (e.g. no socket anywhere).
    Usage(String),
    /// Connecting or calling failed.
    Call(CallError),
    /// `health` answered, with problems.
    Unhealthy,
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Records(_) | Error::NotAvailable(_) | Error::Output(_) | Error::Unhealthy => {
                exit_code::CALL
            }
            Error::Config(_) | Error::Usage(_) => exit_code::USAGE,
            Error::Call(error) => error.exit_code(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Records(error) => write!(f, "{error}"),
            Error::NotAvailable(command) => write!(f, "{command}: {NOT_AVAILABLE}"),
            Error::Output(message) | Error::Usage(message) => write!(f, "{message}"),
            Error::Config(error) => write!(f, "{error}"),
            Error::Call(error) => write!(f, "{error}"),
            Error::Unhealthy => write!(f, "the supervisor reports problems"),
        }
    }
}

impl std::error::Error for Error {}

impl From<CallError> for Error {
    fn from(error: CallError) -> Error {
        Error::Call(error)
    }
}

/// One RPC call a command makes.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedCall {
    pub method: String,
    pub params: Option<Value>,
}

/// The call `command` makes, or `None` for the commands without RPC.
pub fn planned_call(command: &Command) -> Result<Option<PlannedCall>, Error> {
    let call = |method: &str, params: Option<Value>| {
        Ok(Some(PlannedCall {
            method: method.to_string(),
            params,
        }))
    };
    match command {
        Command::Version | Command::Handoff | Command::Shell => Ok(None),
        Command::Upgrades { home: Some(_) } => Ok(None),
        Command::Upgrades { home: None } => call("upgrade.list", None),
        Command::Status => call("status", None),
        Command::Health => call("health", None),
        Command::Logs { lines } => call("logs.tail", Some(json!({ "lines": lines }))),
        Command::Tunnels => call("tunnel.list", None),
        Command::Backups => call("backup.list", None),
        Command::BackupNow => call("backup.now", None),
        Command::Node { action } => call(
            match action {
                NodeAction::Start => "node.start",
                NodeAction::Stop => "node.stop",
                NodeAction::Restart => "node.restart",
            },
            None,
        ),
        Command::Unlock { .. } => call("vault.unlock", None),
        Command::Lock => call("vault.lock", None),
        Command::Upgrade {
            action:
                UpgradeAction::Add {
                    name,
                    url,
                    checksum,
                    path,
                },
        } => {
            let params = match (url, checksum, path) {
                (Some(url), Some(checksum), None) => {
                    json!({ "name": name, "url": url, "checksum": checksum })
                }
                (None, None, Some(path)) => {
                    let path = path.to_str().ok_or_else(|| {
                        Error::Usage(format!("--path {} is not UTF-8", path.display()))
                    })?;
                    json!({ "name": name, "path": path })
                }
                _ => {
                    return Err(Error::Usage(
                        "upgrade add needs --url with --checksum, or --path".into(),
                    ));
                }
            };
            call("upgrade.add", Some(params))
        }
        Command::Upgrade {
            action: UpgradeAction::Cancel { name },
        } => call("upgrade.cancel", Some(json!({ "name": name }))),
        Command::Call { method, params } => {
            let params = params
                .as_deref()
                .map(serde_json::from_str::<Value>)
                .transpose()
                .map_err(|error| Error::Usage(format!("--params is not JSON: {error}")))?;
            if palisade_wire::rpc::SECRET_METHODS.contains(&method.as_str()) {
                return Err(Error::Usage(format!(
                    "{method} takes a secret: use `palisade-ctl unlock`"
                )));
            }
            call(method, params)
        }
    }
}

/// Run one command.
pub fn run(cli: Cli) -> Result<(), Error> {
    match &cli.command {
        Command::Version => {
            println!("palisade-ctl version: {}", env!("CARGO_PKG_VERSION"));
            return Ok(());
        }
        Command::Upgrades { home: Some(home) } => return show_record(home, cli.json),
        Command::Handoff => return Err(Error::NotAvailable("handoff")),
        Command::Shell => return Err(Error::NotAvailable("shell")),
        _ => {}
    }
    let Some(call) = planned_call(&cli.command)? else {
        return Ok(());
    };
    // Ask for the passphrase before connecting: no connection waits on a
    // person typing.
    let secret = match &cli.command {
        Command::Unlock { passphrase_stdin } => Some(read_passphrase(*passphrase_stdin)?),
        _ => None,
    };
    let options = connect_options(&cli.connection)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| Error::Output(format!("cannot start the runtime: {error}")))?;
    let result = runtime.block_on(async {
        let mut client = Client::connect(options).await?;
        match &secret {
            Some(secret) => {
                client
                    .call_with_secret(&call.method, call.params.clone(), secret)
                    .await
            }
            None => client.call(&call.method, call.params.clone()).await,
        }
    })?;
    drop(secret);
    if cli.json {
        let text = serde_json::to_string_pretty(&result)
            .map_err(|error| Error::Output(format!("cannot encode JSON: {error}")))?;
        println!("{text}");
    } else {
        print!("{}", render::render(&call.method, &result));
    }
    if call.method == "health" && result.get("ok").and_then(Value::as_bool) != Some(true) {
        return Err(Error::Unhealthy);
    }
    Ok(())
}

/// Resolve flags over the config file into how to connect.
pub fn connect_options(args: &ConnectionArgs) -> Result<ConnectOptions, Error> {
    if args.via.is_some() {
        return Err(Error::NotAvailable("--via (remote mode through a bastion)"));
    }
    let (config_path, required) = match &args.config {
        Some(path) => (Some(path.clone()), true),
        None => (config::default_path(), false),
    };
    let config = match &config_path {
        Some(path) => config::load(path, required).map_err(Error::Config)?,
        None => config::CtlConfig::default(),
    };
    let entry = config
        .select(args.validator.as_deref())
        .map_err(Error::Usage)?;
    let socket = match (&args.socket, entry) {
        (Some(socket), _) => socket.clone(),
        (None, Some(entry)) => match (&entry.socket, &entry.via) {
            (Some(socket), _) => socket.clone(),
            (None, Some(_)) => {
                return Err(Error::NotAvailable("--via (remote mode through a bastion)"));
            }
            (None, None) => unreachable!("validated: socket or via"),
        },
        (None, None) => {
            return Err(Error::Usage(format!(
                "no supervisor to talk to: pass --socket PATH, or configure a [[validator]] \
                 in {}",
                config_path
                    .map(|path| path.display().to_string())
                    .unwrap_or_else(|| "--config FILE".into())
            )));
        }
    };
    let pin = args
        .pin
        .clone()
        .or_else(|| entry.and_then(|entry| entry.pin.clone()));
    let configured = entry.and_then(|entry| entry.operator.clone());
    let name = args
        .operator
        .clone()
        .or_else(|| configured.as_ref().map(|(name, _)| name.clone()));
    let key = args.key.clone().or_else(|| configured.map(|(_, key)| key));
    let operator = match (name, key) {
        (Some(name), Some(key)) => Some(OperatorKey::load(&name, &key)?),
        (Some(_), None) => return Err(Error::Usage("--operator needs --key".into())),
        (None, Some(_)) => return Err(Error::Usage("--key needs --operator".into())),
        (None, None) => None,
    };
    Ok(ConnectOptions {
        socket,
        tls: if args.tls {
            TlsPolicy::Always
        } else {
            TlsPolicy::WhenRequired
        },
        pin,
        operator,
        call_timeout: Duration::from_secs(args.timeout),
    })
}

/// The vault passphrase: from the terminal without echo, or the first
/// line of stdin.
fn read_passphrase(from_stdin: bool) -> Result<SecretString, Error> {
    let limit = palisade_wire::rpc::MAX_SECRET_LINE_BYTES;
    let mut text = Zeroizing::new(String::with_capacity(limit + 1));
    if from_stdin {
        let mut bytes = Zeroizing::new(Vec::with_capacity(limit + 1));
        std::io::stdin()
            .lock()
            .take(limit as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|error| Error::Usage(format!("cannot read the passphrase: {error}")))?;
        let line = bytes.split(|&byte| byte == b'\n').next().unwrap_or(&[]);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() >= limit {
            return Err(Error::Usage(format!(
                "the passphrase is longer than {} bytes",
                limit - 1
            )));
        }
        text.push_str(
            std::str::from_utf8(line)
                .map_err(|_| Error::Usage("the passphrase is not UTF-8".into()))?,
        );
    } else {
        let typed = Zeroizing::new(rpassword::prompt_password("Vault passphrase: ").map_err(
            |error| {
                Error::Usage(format!(
                    "cannot read the passphrase from the terminal ({error}); \
                     use --passphrase-stdin"
                ))
            },
        )?);
        text.push_str(&typed);
    }
    if text.is_empty() {
        return Err(Error::Usage("empty passphrase".into()));
    }
    Ok(SecretString::from(std::mem::take(&mut *text)))
}

fn show_record(home: &std::path::Path, json: bool) -> Result<(), Error> {
    let path = records::record_path(home);
    let read = records::read_records(home).map_err(Error::Records)?;
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
    fn commands_map_to_calls() {
        let cases: &[(&[&str], &str, Option<Value>)] = &[
            (&["status"], "status", None),
            (&["health"], "health", None),
            (&["logs"], "logs.tail", Some(json!({"lines": 100}))),
            (
                &["logs", "--lines", "7"],
                "logs.tail",
                Some(json!({"lines": 7})),
            ),
            (&["tunnels"], "tunnel.list", None),
            (&["backups"], "backup.list", None),
            (&["backup-now"], "backup.now", None),
            (&["node", "start"], "node.start", None),
            (&["node", "stop"], "node.stop", None),
            (&["node", "restart"], "node.restart", None),
            (&["unlock"], "vault.unlock", None),
            (&["lock"], "vault.lock", None),
            (&["upgrades"], "upgrade.list", None),
            (
                &[
                    "upgrade",
                    "add",
                    "v2",
                    "--url",
                    "https://x/y",
                    "--checksum",
                    "sha256:ab",
                ],
                "upgrade.add",
                Some(json!({"name": "v2", "url": "https://x/y", "checksum": "sha256:ab"})),
            ),
            (
                &["upgrade", "add", "v2", "--path", "/opt/gaiad"],
                "upgrade.add",
                Some(json!({"name": "v2", "path": "/opt/gaiad"})),
            ),
            (
                &["upgrade", "cancel", "v2"],
                "upgrade.cancel",
                Some(json!({"name": "v2"})),
            ),
            (
                &[
                    "call",
                    "tunnel.reconnect",
                    "--params",
                    r#"{"bastion":"b1"}"#,
                ],
                "tunnel.reconnect",
                Some(json!({"bastion": "b1"})),
            ),
        ];
        for (args, method, params) in cases {
            let cli = Cli::try_parse_from(std::iter::once(&"palisade-ctl").chain(args.iter()))
                .unwrap_or_else(|error| panic!("{args:?}: {error}"));
            let call = planned_call(&cli.command).unwrap().unwrap();
            assert_eq!(call.method, *method, "{args:?}");
            assert_eq!(&call.params, params, "{args:?}");
        }
    }

    #[test]
    fn usage_errors() {
        let clap_rejects: &[&[&str]] = &[
            &["logs", "--lines", "0"],
            &["logs", "--lines", "1001"],
            &["upgrade", "add", "v2"],
            &["upgrade", "add", "v2", "--url", "https://x"],
            &[
                "upgrade",
                "add",
                "v2",
                "--path",
                "/x",
                "--url",
                "u",
                "--checksum",
                "c",
            ],
            &["unlock", "--passphrase", "hunter2"],
            &["status", "--pin", "sha256:12"],
            &["status", "--timeout", "0"],
        ];
        for args in clap_rejects {
            let error = Cli::try_parse_from(std::iter::once(&"palisade-ctl").chain(args.iter()))
                .unwrap_err();
            assert_eq!(error.exit_code(), exit_code::USAGE, "{args:?}");
        }
        let planned_rejects: &[&[&str]] = &[
            &["call", "status", "--params", "{"],
            &["call", "vault.unlock"],
        ];
        for args in planned_rejects {
            let cli =
                Cli::try_parse_from(std::iter::once(&"palisade-ctl").chain(args.iter())).unwrap();
            let error = planned_call(&cli.command).unwrap_err();
            assert_eq!(error.exit_code(), exit_code::USAGE, "{args:?}");
        }
    }

    #[test]
    fn unbuilt_commands_say_so() {
        for command in ["handoff", "shell"] {
            let cli = Cli::try_parse_from(["palisade-ctl", command]).unwrap();
            let error = run(cli).unwrap_err();
            assert_eq!(error.exit_code(), exit_code::CALL, "{command}");
            assert_eq!(error.to_string(), format!("{command}: {NOT_AVAILABLE}"));
        }
        let cli = Cli::try_parse_from(["palisade-ctl", "--via", "ops@b", "status"]).unwrap();
        let error = run(cli).unwrap_err();
        assert_eq!(error.exit_code(), exit_code::CALL);
        assert!(error.to_string().contains(NOT_AVAILABLE), "{error}");
    }
}
