//! `palisade-ctl`: the operator's client for `palisade-supervisor`.
//!
//! One-shot commands over the supervisor's control RPC (`docs/rpc.md`),
//! locally or through a bastion (`--via`): the connection (greeting, pinned
//! TLS, operator login, calls) is [`palisade_client`]'s; [`config`] holds
//! the endpoints file, [`render`] the readable output, and [`exit_code`]
//! turns a client failure into this program's exit code. `upgrades --home`
//! still reads the upgrade record from disk with no RPC. [`shell`] is the
//! interactive shell: the same commands over one connection kept open
//! ([`run_local`], [`connect`], [`run_call`] are the steps both modes
//! share).
//!
//! Invariant: secrets (the vault passphrase) are never taken from argv,
//! never put in JSON, and live only in zeroizing buffers.
#![forbid(unsafe_code)]

pub(crate) mod config;
pub mod log_archive;
pub(crate) mod records;
pub(crate) mod render;
pub(crate) mod shell;
pub(crate) mod shutdown_host;

use std::fmt;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use secrecy::SecretString;
use serde_json::Value;
use zeroize::Zeroizing;

use palisade_client::{
    BastionTarget, CallError, Client, ConnectOptions, Endpoint, Fingerprint, OperatorKey, TlsPolicy,
};
use palisade_ssh::dial::Dial;
use palisade_ssh::host_key::{FirstUse, HostKeyPolicy};
use palisade_wire::rpc::methods::{self, Method};
use palisade_wire::rpc::params::{
    BackupListParams, BackupRestoreParams, EipRotateParams, FailoverHandoffParams,
    HostShutdownParams, LogsTailParams, NoParams, UpgradeAddParams, UpgradeCancelParams, Validate,
    VaultUnlockParams,
};

use crate::config::ConfigError;

/// Exit codes of `palisade-ctl` (`docs/rpc.md` §6).
pub mod exit_code {
    /// Success.
    pub const OK: i32 = 0;
    /// The call failed: an error answer, an unhealthy `health`, or an
    /// unreadable or partly invalid file.
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

    /// The exit code of a failed connection or call.
    pub fn for_failure(kind: palisade_client::FailureKind) -> i32 {
        match kind {
            palisade_client::FailureKind::Connection => CONNECTION,
            palisade_client::FailureKind::Authentication => AUTH,
            palisade_client::FailureKind::Call => CALL,
        }
    }
}

const ABOUT: &str = "Operator shell and scripting client for palisade-supervisor.";

const LONG_ABOUT: &str = "Operator shell and scripting client for palisade-supervisor.

Each command opens one connection to the supervisor's control RPC, makes its
call, prints the result and exits with a code scripts can test.

`palisade-ctl shell` is the interactive shell for people: the same commands,
one connection kept open (reopened when lost), history, Tab completion and
hints, and an unlock prompt that never echoes. Connection flags go before
`shell`; see `palisade-ctl shell --help`.

Connection modes:
  local   --socket PATH  (or `socket` in the config)
          On the validator host, over the supervisor's Unix socket. A trusted
          local user (root or the supervisor's own user) may stay in
          plaintext and needs no operator key; anyone else is told by the
          supervisor to use TLS, and then --pin and an operator key are needed.
          The process serving the socket must run as root, as you, or as
          --server-user USER (`server-user` in the config): checked with
          SO_PEERCRED before anything is sent; anyone else is refused (exit 3).
  remote  --via user@bastion[:port] --validator NAME
          From anywhere: SSH to a bastion (its host key pinned by
          --known-hosts, default ~/.ssh/known_hosts, or --host-key SHA256:...;
          an unknown or changed key is refused), logging in with --ssh-key
          (default: the operator key), then a session whose forced command on
          the bastion, `palisade-bastion rpc-relay`, connects it to validator
          NAME's socket there (the key may do nothing else: docs/bastion-sshd.md).
          For a bastion whose operator keys forward Unix sockets instead, give
          the socket's path: --remote-socket PATH (a direct-streamlocal
          channel). Always TLS with the pinned certificate plus operator
          authentication, so the bastion can neither read the unlock
          passphrase nor issue commands of its own.

TLS: after the supervisor's greeting, TLS 1.3 runs when the supervisor
requires it, --tls is given, or a pin is configured (--pin or `pin`: then
whatever the greeting says, since the greeting proves nothing). Only the certificate whose fingerprint is
pinned (--pin sha256:..., printed by `palisade-supervisor init-rpc`) is
accepted; any other is a hard failure (exit 3) naming both fingerprints.

Authentication: with an operator name and key (--operator, --key, or the
config), the client signs the supervisor's challenge, bound to the TLS
session, with the operator's ed25519 key (an OpenSSH key from
`ssh-keygen -t ed25519`, mode 0600). A key with a passphrase is used
through ssh-agent, as ssh does: `ssh-add KEY` once, and palisade-ctl asks
the agent at $SSH_AUTH_SOCK to sign with that key (no other) for the
operator login and the bastion login alike; the passphrase never reaches
palisade-ctl. For a key the agent holds with no private key file (a
hardware key), give the public key file: --key KEY.pub. The operator's role (viewer, operator, admin) limits what it
may call.

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
  via = \"palisade-ops@bastion1.example.com:22\"
  # remote-socket = \"/run/palisade-validators/val-b.sock\"  # only for socket forwarding
  known-hosts = \"~/.ssh/known_hosts\"                     # the default
  # host-key-fingerprints = [\"SHA256:...\"]               # or pin here
  # ssh-key = \"~/.ssh/id_ed25519\"                        # default: key
  pin = \"sha256:9c41...\"
  operator = \"alice\"
  key = \"~/.ssh/palisade_alice\"
  log-signer = \"ssh-ed25519 AAAA...\"                     # logs --archive (see its --help)
  log-identity = \"~/.config/palisade/age.key\"            # logs --archive

Output: a short readable rendering, or with --json the call's raw `result`
as JSON (stable for scripts). Errors go to stderr.";

const LOGS_AFTER_HELP: &str =
    "Without --archive: the supervisor's `logs.tail` (the last lines it holds
in memory). With --archive: the log segments the supervisor shipped to the
bastions ([logs], docs/log-format.md), read through --via's bastion (its
rpc-relay serves `palisade-log-archive VALIDATOR`: list and get of that
validator's log segments only) or from --from-dir DIR.

The pinned signer key is --signer, else $PALISADE_LOG_SIGNER, else the
validator's `log-signer` in the config file (an `ssh-ed25519 AAAA…` line);
the identity is --identity, else the validator's `log-identity`. The
validator's config entry is the one --validator (or the config's default)
selects.

Every segment's signature is checked with the pinned signer key before
anything is decrypted; a segment that is unsigned, forged, renamed,
truncated or altered is refused with a line on stderr naming it, the others
are printed, and the command exits 1 saying how many were refused. Lines
are printed as stored (JSON lines by default); --json wraps text lines as
{\"line\": …}. A summary goes to stderr.

Examples:
  palisade-ctl --via ops@b1.example.com --validator val-a logs --archive \\
      --identity ~/.config/palisade/age.key --signer ~/val-a-tunnel.pub --since 2h
  palisade-ctl --validator val-a logs --archive --from-dir ./logs \\
      --identity age.key --signer 'ssh-ed25519 AAAA…' --grep 'ERR|WRN'
  palisade-ctl --validator val-a logs --archive --since 2h   # log-signer, log-identity
                                                            # in ctl.toml";

const AFTER_HELP: &str = "Exit codes:
  0  ok
  1  the call returned an error (also: `health` found problems, an
     unreadable upgrade record, `shutdown-host` not confirmed)
  2  usage: bad arguments, bad config file, no socket configured
  3  connection: socket missing or refused, bad greeting, TLS failure or
     certificate pin mismatch, timeout
  4  authentication or authorization refused, unusable operator key

Examples:
  palisade-ctl --socket /run/palisade/supervisor.sock status
  palisade-ctl --via palisade-ops@b1.example.com --validator val-b unlock
  palisade-ctl health || page-oncall
  palisade-ctl --validator val-b --json backups | jq '.stores[0].backups[0]'
  palisade-ctl logs --lines 200
  palisade-ctl node stop && palisade-ctl restore local backup-…-h1234.age
  palisade-ctl shutdown-host                        # asks for the validator's name
  palisade-ctl unlock                               # asks, no echo
  pass show palisade/val-a | palisade-ctl unlock --passphrase-stdin
  palisade-ctl upgrade add v2 --url https://example.com/gaiad-v2 --checksum sha256:...
  palisade-ctl call tunnel.reconnect --params '{\"bastion\":\"b1\"}'
  palisade-ctl eip list                             # admin, vault unlocked
  palisade-ctl eip rotate bastion-1                 # waits up to 120 s
  palisade-ctl upgrades --home /home/gaia/.gaia --json | jq '.[-1].switch_ms'
  palisade-ctl --validator val-b shell              # interactive";

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

    /// Reach the supervisor through a bastion: SSH as USER (port 22 by
    /// default), then the validator's socket there; always TLS + pin.
    #[arg(long, global = true, value_name = "USER@BASTION[:PORT]", value_parser = parse_via)]
    pub via: Option<Via>,

    /// With --via: reach the validator through this socket on the bastion
    /// (a direct-streamlocal channel, for operator keys with
    /// `port-forwarding`) instead of the bastion's `rpc-relay` (the
    /// default, which needs only --validator).
    #[arg(long, global = true, value_name = "PATH", requires = "via")]
    pub remote_socket: Option<PathBuf>,

    /// With --via: the SSH key for the bastion login [default: --key]; one
    /// with a passphrase must be in ssh-agent.
    #[arg(long, global = true, value_name = "FILE")]
    pub ssh_key: Option<PathBuf>,

    /// With --via: the known_hosts file holding the bastion's host key
    /// [default: ~/.ssh/known_hosts].
    #[arg(long, global = true, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,

    /// With --via: a bastion host key fingerprint to accept, as
    /// `ssh-keygen -lf` prints it (repeatable).
    #[arg(long = "host-key", global = true, value_name = "SHA256:BASE64",
          value_parser = parse_host_key_fingerprint)]
    pub host_keys: Vec<String>,

    /// The supervisor's certificate fingerprint to accept.
    #[arg(long, global = true, value_name = "sha256:HEX", value_parser = Fingerprint::parse)]
    pub pin: Option<Fingerprint>,

    /// Run TLS even when the supervisor allows plaintext (a pin does too).
    #[arg(long, global = true)]
    pub tls: bool,

    /// On a local socket: a user (name or uid), besides root and you, that
    /// may serve it (the supervisor's user); repeatable.
    #[arg(long = "server-user", global = true, value_name = "USER")]
    pub server_users: Vec<String>,

    /// Log in as this operator (needs a key).
    #[arg(long, global = true, value_name = "NAME")]
    pub operator: Option<String>,

    /// The operator's OpenSSH ed25519 private key (one with a passphrase
    /// must be in ssh-agent: `ssh-add FILE`), or the public key file of one
    /// that ssh-agent holds.
    #[arg(long, global = true, value_name = "FILE")]
    pub key: Option<PathBuf>,

    /// Give up on a call after this many seconds [default: 60; 120 for
    /// `eip rotate`, which answers when the rotation is done].
    #[arg(long, global = true, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: Option<u64>,
}

/// How long a call may take without --timeout.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How long `eip rotate` waits without --timeout: the supervisor answers
/// only when the new address is associated, the tunnel is up on it and the
/// bastion's health check passed (EC2 calls retried on throttling, a
/// redial, a health probe), or when it has rolled back. Its own bounds on
/// those steps (`[eip] tunnel-timeout`, EC2's request timeout) must keep
/// that answer inside this wait.
pub const EIP_ROTATE_TIMEOUT: Duration = Duration::from_secs(120);

impl ConnectionArgs {
    /// The timeout of the connection and its quick calls: --timeout, or
    /// [`DEFAULT_CALL_TIMEOUT`].
    pub fn session_timeout(&self) -> Duration {
        self.timeout
            .map_or(DEFAULT_CALL_TIMEOUT, Duration::from_secs)
    }

    /// How long `command`'s call may take: --timeout when given, else the
    /// command's own ([`EIP_ROTATE_TIMEOUT`] for a rotation, raw or not).
    pub fn call_timeout(&self, command: &Command) -> Duration {
        if let Some(seconds) = self.timeout {
            return Duration::from_secs(seconds);
        }
        let rotates = match command {
            Command::Eip {
                action: EipAction::Rotate { .. },
            } => true,
            Command::Call { method, .. } => method == methods::EipRotate::NAME,
            _ => false,
        };
        if rotates {
            EIP_ROTATE_TIMEOUT
        } else {
            DEFAULT_CALL_TIMEOUT
        }
    }
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
    /// Recent daemon and supervisor log lines; with --archive, the
    /// shipped, encrypted log segments (verified, decrypted, filtered).
    #[command(after_help = LOGS_AFTER_HELP)]
    Logs {
        /// How many lines (1-1000); not with --archive.
        #[arg(long, default_value_t = palisade_wire::rpc::params::DEFAULT_TAIL_LINES)]
        lines: u64,
        #[command(flatten)]
        archive: log_archive::ArchiveArgs,
    },
    /// Tunnels per bastion: connected since, last error, bytes, reconnects.
    Tunnels,
    /// Backups per store (local and every bastion's), newest first, with
    /// sequence, height and what is known of the watermark.
    Backups {
        /// Most backups shown per store (1-100) [default: 20].
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Restore the sign state from one backup (see `backups`): only with
    /// the node stopped (`node stop`) and the vault unlocked; refused when
    /// the backup is not above the local state or a higher backup exists.
    Restore {
        /// The store, as `backups` names it (`local`, `bastion:NAME`, …).
        store: String,
        /// The backup's file name.
        file: String,
    },
    /// Shut the validator host down: stop the node, final backup, wipe the
    /// keys, run the supervisor's `[host] shutdown-command`. Asks for the
    /// validator's name first.
    ShutdownHost {
        /// Do not ask (scripts).
        #[arg(long)]
        yes: bool,
    },
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
        /// Start even if fewer backup stores than the supervisor's
        /// start quorum can be read (admin). The supervisor logs and
        /// records it: an unreachable store may hold a newer sign state.
        #[arg(long)]
        accept_unreachable_stores: bool,
    },
    /// Lock the key vault: final backup, decrypted keys wiped.
    Lock,
    /// Several hosts for one validator ([failover]): who signs, hand the
    /// validator to another host, pause automatic takeover.
    Failover {
        #[command(subcommand)]
        action: FailoverAction,
    },
    /// Elastic IPs of the bastions (admin; list and rotate need the vault
    /// unlocked): list them, move a bastion to a fresh one, follow a
    /// rotation.
    #[command(long_about = EIP_LONG_ABOUT)]
    Eip {
        #[command(subcommand)]
        action: EipAction,
    },
    /// Show upgrades: the supervisor's staged and pending upgrades and the
    /// last records (upgrade.list); with --home, the upgrade record on this
    /// disk instead (no RPC; <home>/cosmovisor/palisade-upgrades.jsonl).
    Upgrades {
        /// Read the record offline from this node home (DAEMON_HOME), e.g.
        /// /home/gaia/.gaia. Only when given: an exported DAEMON_HOME does
        /// not turn the RPC call into a disk read.
        #[arg(long, value_name = "DAEMON_HOME")]
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
        /// Send the params even when this palisade-ctl's contract refuses
        /// them (a supervisor of another version may take them).
        #[arg(long)]
        unchecked: bool,
    },
    /// Interactive shell: the commands above over one connection, with
    /// history, completion and a no-echo unlock prompt.
    #[command(long_about = shell::LONG_ABOUT, after_help = shell::AFTER_HELP)]
    Shell(shell::ShellArgs),
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

/// `failover …`.
#[derive(Debug, Clone, Subcommand)]
pub enum FailoverAction {
    /// This host's role, the primary and its fencing token, the lease,
    /// the last handoff, and what this host waits for.
    Status,
    /// On the primary: stop the node, take the final backup, write a
    /// signed handoff record and free the leadership for HOST, which then
    /// restores that state and starts (admin). If a step fails, nobody
    /// signs and the answer says which host holds what.
    Handoff {
        /// The host to hand the validator to (one of [failover] peers).
        #[arg(long, value_name = "HOST")]
        to: String,
    },
    /// Pause automatic takeover on every host (maintenance); a planned
    /// handoff still works (admin).
    Pause,
    /// Resume automatic takeover (admin).
    Resume,
}

/// `palisade-ctl eip --help`.
const EIP_LONG_ABOUT: &str = "The bastions' Elastic IPs (admin only).

For each [[bastion]] with an `eip = { instance-id = \"i-…\" }` (or
network-interface-id) and [eip] configured in the supervisor, the supervisor
asks EC2 which Elastic IPs the bastion has and can move it to a fresh one:
when a bastion's address is flooded, a new address takes the attacker's
target away, and the validator's tunnel follows it with the bastion's host
key still pinned.

These calls need the admin role. The AWS credentials live in the vault
(unless the supervisor was told to take them from its environment or a
profile file), so `eip list` and `eip rotate` need it unlocked (`unlock`);
while it is locked the supervisor refuses them. `eip status` reads the
rotation journal only.";

/// `eip …`.
#[derive(Debug, Clone, Subcommand)]
pub enum EipAction {
    /// Each bastion's Elastic IPs as EC2 describes them, with allocation
    /// and association ids, and the address its tunnel dials (admin, vault
    /// unlocked).
    #[command(
        long_about = "Each bastion's Elastic IPs as EC2 describes them (admin; the vault
must be unlocked: the AWS credentials are in it).

One table per [[bastion]] with an eip (instance-id or network-interface-id):
its instance or network interface and the address its tunnel dials now,
then every Elastic IP of the region associated with that instance or
interface or tagged palisade:bastion=<name>: public IP, allocation id,
association id and what it is associated with. `*` marks the address the
tunnel dials."
    )]
    List,
    /// Move BASTION to a fresh Elastic IP and release the old one (admin,
    /// vault unlocked); answers when the tunnel is up on the new address.
    #[command(
        long_about = "Move BASTION to a fresh Elastic IP (admin; the vault must be unlocked).

The supervisor allocates a new address (tagged palisade:bastion=BASTION),
associates it with the bastion's instance or network interface (replacing
the old association), makes the tunnel redial the new address (the bastion's
host key stays pinned, so whoever holds the old address cannot pose as the
bastion), waits for the tunnel and the bastion's health check, then releases
the old address unless --keep-old. Each step is journaled: a supervisor
stopped half-way resumes or rolls back when it starts again, and a failure
after the association moves the bastion back to its old address where it
can, the error saying which address is where (`eip status` shows the
journal). One rotation runs at a time.

The answer comes when the rotation is done, with each step's duration and
the time until the tunnel was up on the new address. palisade-ctl waits up
to 120 s for it (--timeout overrides); if it gives up first, the rotation
goes on in the supervisor: follow it with `eip status`."
    )]
    Rotate {
        /// The bastion, as `eip list` names it.
        bastion: String,
        /// Keep the old address allocated to the account (no longer
        /// associated) instead of releasing it.
        #[arg(long)]
        keep_old: bool,
    },
    /// The rotation in progress, if any, and the journal's last records
    /// (admin).
    #[command(
        long_about = "The rotation in progress, if any, and the rotation journal's last
records (admin; the vault may be locked: this reads the journal only).

Up to 50 records, oldest first: when, which rotation and bastion, the step
(started, allocated, associated, tunnel-up, released, kept-old,
release-failed, done, rolled-back, failed), the address and ids it acted on,
how long it took, and what went wrong."
    )]
    Status,
}

/// `upgrade …`.
#[derive(Debug, Subcommand)]
pub enum UpgradeAction {
    /// Stage the binary for upgrade NAME, downloaded by the supervisor
    /// (--url with --checksum) or already on the validator host (--path).
    ///
    /// The binary is installed as
    /// $DAEMON_HOME/cosmovisor/upgrades/<name>/bin/$DAEMON_NAME, so the
    /// upgrade at the plan height needs no download. The call answers once
    /// the binary is staged: for a large download raise --timeout (the
    /// supervisor's own limit is [upgrade] download-timeout, 10 min by
    /// default); if palisade-ctl gives up first, the supervisor still
    /// finishes: check with `palisade-ctl upgrades`.
    #[command(group(clap::ArgGroup::new("source").required(true).args(["url", "path"])))]
    Add {
        /// The upgrade's on-chain name.
        name: String,
        /// Where the supervisor downloads the binary (http or https; a raw
        /// binary, zip or tar.gz).
        #[arg(long)]
        url: Option<String>,
        /// The download's checksum, sha256:<hex> or sha512:<hex>: required
        /// with --url, optional with --path.
        #[arg(long)]
        checksum: Option<String>,
        /// A binary already on the validator host (absolute path; the
        /// supervisor copies it).
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

/// Check a host key fingerprint as `ssh-keygen -lf` prints it.
pub fn parse_host_key_fingerprint(text: &str) -> Result<String, String> {
    palisade_ssh::host_key::parse_fingerprint(text)
        .map(|()| text.to_string())
        .map_err(|error| error.to_string())
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
    /// The operator did not confirm (e.g. `shutdown-host`).
    NotConfirmed(String),
    /// Connecting or calling failed, and there is something to do about
    /// it: said after the error.
    Advised(CallError, &'static str),
    /// `logs --archive` refused this many segments (each named on stderr).
    SegmentsRefused(usize),
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Records(_)
            | Error::Output(_)
            | Error::Unhealthy
            | Error::NotConfirmed(_)
            | Error::SegmentsRefused(_) => exit_code::CALL,
            Error::Config(_) | Error::Usage(_) => exit_code::USAGE,
            Error::Call(error) | Error::Advised(error, _) => exit_code::for_failure(error.kind()),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Records(error) => write!(f, "{error}"),
            Error::Output(message) | Error::Usage(message) | Error::NotConfirmed(message) => {
                write!(f, "{message}")
            }
            Error::SegmentsRefused(count) => write!(
                f,
                "{count} log segment(s) refused (each named above): not trustworthy as stored"
            ),
            Error::Config(error) => write!(f, "{error}"),
            Error::Call(error) => write!(f, "{error}"),
            Error::Advised(error, advice) => write!(f, "{error}\n{advice}"),
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

/// The call of method `M` with `params`, checked by the contract's own
/// `validate` first: a value the supervisor would refuse is a usage error
/// here, with the supervisor's message, before anything connects.
fn typed_call<M: Method>(params: M::Params) -> Result<Option<PlannedCall>, Error> {
    params
        .validate()
        .map_err(|error| Error::Usage(error.message))?;
    let params = serde_json::to_value(&params)
        .map_err(|error| Error::Output(format!("cannot encode the params: {error}")))?;
    Ok(Some(PlannedCall {
        method: M::NAME.to_string(),
        // `NoParams` is `null`: the request leaves `params` out.
        params: (!params.is_null()).then_some(params),
    }))
}

/// The call `command` makes, or `None` for the commands without RPC.
pub fn planned_call(command: &Command) -> Result<Option<PlannedCall>, Error> {
    match command {
        Command::Version | Command::Shell(_) => Ok(None),
        Command::Upgrades { home: Some(_) } => Ok(None),
        Command::Upgrades { home: None } => typed_call::<methods::UpgradeList>(NoParams),
        Command::Status => typed_call::<methods::Status>(NoParams),
        Command::Health => typed_call::<methods::Health>(NoParams),
        Command::Logs { lines, .. } => typed_call::<methods::LogsTail>(LogsTailParams {
            lines: Some(*lines),
        }),
        Command::Tunnels => typed_call::<methods::TunnelList>(NoParams),
        Command::Backups { limit } => {
            typed_call::<methods::BackupList>(BackupListParams { limit: *limit })
        }
        Command::Restore { store, file } => {
            typed_call::<methods::BackupRestore>(BackupRestoreParams {
                store: store.clone(),
                file: file.clone(),
            })
        }
        // The first step; `run` does both (see `shutdown_host`).
        Command::ShutdownHost { .. } => {
            typed_call::<methods::HostShutdown>(HostShutdownParams::request())
        }
        Command::BackupNow => typed_call::<methods::BackupNow>(NoParams),
        Command::Node { action } => match action {
            NodeAction::Start => typed_call::<methods::NodeStart>(NoParams),
            NodeAction::Stop => typed_call::<methods::NodeStop>(NoParams),
            NodeAction::Restart => typed_call::<methods::NodeRestart>(NoParams),
        },
        // A plain unlock leaves `params` out, as before the option existed.
        Command::Unlock {
            accept_unreachable_stores: false,
            ..
        } => Ok(Some(PlannedCall {
            method: methods::VaultUnlock::NAME.to_string(),
            params: None,
        })),
        Command::Unlock {
            accept_unreachable_stores: true,
            ..
        } => typed_call::<methods::VaultUnlock>(VaultUnlockParams {
            accept_unreachable_stores: true,
        }),
        Command::Lock => typed_call::<methods::VaultLock>(NoParams),
        Command::Failover { action } => match action {
            FailoverAction::Status => typed_call::<methods::FailoverStatusMethod>(NoParams),
            FailoverAction::Handoff { to } => {
                typed_call::<methods::FailoverHandoff>(FailoverHandoffParams { to: to.clone() })
            }
            FailoverAction::Pause => typed_call::<methods::FailoverPause>(NoParams),
            FailoverAction::Resume => typed_call::<methods::FailoverResume>(NoParams),
        },
        Command::Eip { action } => match action {
            EipAction::List => typed_call::<methods::EipList>(NoParams),
            EipAction::Rotate { bastion, keep_old } => {
                typed_call::<methods::EipRotate>(EipRotateParams {
                    bastion: bastion.clone(),
                    keep_old: *keep_old,
                })
            }
            EipAction::Status => typed_call::<methods::EipStatus>(NoParams),
        },
        Command::Upgrade {
            action:
                UpgradeAction::Add {
                    name,
                    url,
                    checksum,
                    path,
                },
        } => {
            let path = path
                .as_deref()
                .map(|path| {
                    path.to_str().map(str::to_owned).ok_or_else(|| {
                        Error::Usage(format!("--path {} is not UTF-8", path.display()))
                    })
                })
                .transpose()?;
            typed_call::<methods::UpgradeAdd>(UpgradeAddParams {
                name: name.clone(),
                url: url.clone(),
                checksum: checksum.clone(),
                path,
            })
        }
        Command::Upgrade {
            action: UpgradeAction::Cancel { name },
        } => typed_call::<methods::UpgradeCancel>(UpgradeCancelParams { name: name.clone() }),
        Command::Call {
            method,
            params,
            unchecked,
        } => {
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
            // The params go as given (this is the escape hatch), but a
            // method the contract knows has them checked here first, so a
            // typo'd member fails with the supervisor's −32602 text, unless
            // --unchecked says this supervisor may know better. An unknown
            // method goes to the supervisor, which says so.
            if !unchecked && let Some(info) = methods::method_info(method) {
                (info.check_params)(params.clone().unwrap_or(Value::Null))
                    .map_err(|error| Error::Usage(format!("--params: {}", error.message)))?;
            }
            Ok(Some(PlannedCall {
                method: method.clone(),
                params,
            }))
        }
    }
}

/// Run one command (one-shot mode), or the shell.
pub fn run(cli: Cli) -> Result<(), Error> {
    if let Command::Shell(args) = cli.command {
        return shell::run(cli.connection, args, cli.json);
    }
    if let Command::ShutdownHost { yes } = cli.command {
        return shutdown_host::run(&cli.connection, yes, cli.json);
    }
    if let Command::Logs { archive, .. } = &cli.command
        && archive.archive
    {
        let profile = archive_profile(&cli.connection)?;
        return log_archive::run(&cli.connection, archive, &profile, cli.json);
    }
    let Some(call) = run_local(&cli.command, cli.json)? else {
        return Ok(());
    };
    // Ask for the passphrase before connecting: no connection waits on a
    // person typing.
    let secret = match &cli.command {
        Command::Unlock {
            passphrase_stdin, ..
        } => Some(read_passphrase(*passphrase_stdin)?),
        _ => None,
    };
    let mut options = connect_options(&cli.connection)?;
    options.call_timeout = cli.connection.call_timeout(&cli.command);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| Error::Output(format!("cannot start the runtime: {error}")))?;
    runtime.block_on(async {
        let mut client = Client::connect(options).await?;
        run_call(&mut client, &call, secret.as_ref(), cli.json).await
    })?;
    Ok(())
}

/// The part of `command` that needs no connection: the local commands
/// (`version`, `upgrades --home`, …) run here and give `None`; the others
/// give the call to make.
pub fn run_local(command: &Command, json: bool) -> Result<Option<PlannedCall>, Error> {
    match command {
        Command::Version => {
            println!("palisade-ctl version: {}", env!("CARGO_PKG_VERSION"));
            Ok(None)
        }
        Command::Upgrades { home: Some(home) } => show_record(home, json).map(|()| None),
        Command::Shell(_) => Err(Error::Usage("the shell does not nest".into())),
        Command::ShutdownHost { .. } => Err(Error::Usage(
            "shutdown-host confirms in two steps: run `palisade-ctl shutdown-host`".into(),
        )),
        Command::Logs { archive, .. } if archive.archive => Err(Error::Usage(
            "logs --archive reads the bastion's store, not the supervisor: run \
             `palisade-ctl logs --archive …` on its own"
                .into(),
        )),
        _ => planned_call(command),
    }
}

/// Open a connection as `args` (over the config file) say.
pub async fn connect(args: &ConnectionArgs) -> Result<Client, Error> {
    let options = connect_options(args)?;
    Ok(Client::connect(options).await?)
}

/// Make `call` on an open connection (`secret`: the passphrase of
/// `unlock`) and print its result; returns the result. A `health` that
/// found problems is [`Error::Unhealthy`], after printing them.
pub async fn run_call(
    client: &mut Client,
    call: &PlannedCall,
    secret: Option<&SecretString>,
    json: bool,
) -> Result<Value, Error> {
    let answer = match secret {
        Some(secret) => {
            client
                .call_with_secret(&call.method, call.params.clone(), secret)
                .await
        }
        None => client.call(&call.method, call.params.clone()).await,
    };
    let result = answer.map_err(|error| advised(&call.method, error))?;
    if json {
        let text = serde_json::to_string_pretty(&result)
            .map_err(|error| Error::Output(format!("cannot encode JSON: {error}")))?;
        println!("{}", render::escape_json_output(&text));
    } else {
        print!("{}", render::render(&call.method, &result));
    }
    if call.method == "health" && result.get("ok").and_then(Value::as_bool) != Some(true) {
        return Err(Error::Unhealthy);
    }
    Ok(result)
}

/// `error` of a call to `method`, with advice where the error alone leaves
/// the operator guessing: a rotation that failed or was not waited for
/// may have moved addresses, and the journal says where they are.
fn advised(method: &str, error: CallError) -> Error {
    use palisade_wire::rpc::code;
    if method != methods::EipRotate::NAME {
        return Error::Call(error);
    }
    match &error {
        // The rotation failed once under way (a refusal before it, −32004,
        // says what to do itself).
        CallError::Rpc(rpc) if rpc.code == code::INTERNAL => Error::Advised(
            error,
            "`palisade-ctl eip status` shows the rotation journal: which address is where",
        ),
        CallError::Connection(_) => Error::Advised(
            error,
            "the rotation may go on in the supervisor: follow it with `palisade-ctl eip status`",
        ),
        _ => Error::Call(error),
    }
}

/// Resolve flags over the config file into how to connect.
pub fn connect_options(args: &ConnectionArgs) -> Result<ConnectOptions, Error> {
    connect_options_for(args, Purpose::Rpc)
}

/// What a connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The supervisor's control RPC (TLS with the pinned certificate).
    Rpc,
    /// A bastion's log archive (`logs --archive`): SSH only; the segments
    /// carry their own signatures, so no pin and no operator login.
    LogArchive,
}

/// The config file (`--config`, else the default location, where a missing
/// file is an empty config) and its path.
fn load_config(args: &ConnectionArgs) -> Result<(config::CtlConfig, Option<PathBuf>), Error> {
    let (config_path, required) = match &args.config {
        Some(path) => (Some(path.clone()), true),
        None => (config::default_path(), false),
    };
    let config = match &config_path {
        Some(path) => config::load(path, required).map_err(Error::Config)?,
        None => config::CtlConfig::default(),
    };
    Ok((config, config_path))
}

/// `logs --archive`'s settings (`log-signer`, `log-identity`) from the
/// config entry the connection flags select, as [`connect_options_for`]
/// selects it.
fn archive_profile(args: &ConnectionArgs) -> Result<log_archive::ArchiveProfile, Error> {
    let (config, config_path) = load_config(args)?;
    Ok(match config.select(args.validator.as_deref()) {
        Ok(Some(entry)) => log_archive::ArchiveProfile {
            origin: format!(
                "{}: validator '{}'",
                config_path
                    .map(|path| path.display().to_string())
                    .unwrap_or_default(),
                entry.name
            ),
            signer: entry.log_signer,
            identity: entry.log_identity.clone(),
            unavailable: None,
        },
        Ok(None) => log_archive::ArchiveProfile::default(),
        Err(reason) => log_archive::ArchiveProfile {
            unavailable: Some(reason),
            ..Default::default()
        },
    })
}

/// As [`connect_options`], for `purpose`.
pub fn connect_options_for(
    args: &ConnectionArgs,
    purpose: Purpose,
) -> Result<ConnectOptions, Error> {
    let (config, config_path) = load_config(args)?;
    // With --via on the command line, --validator may name a validator
    // behind the bastion that the config does not list.
    let entry = match config.select(args.validator.as_deref()) {
        Ok(entry) => entry,
        Err(_) if args.via.is_some() && args.validator.is_some() => None,
        Err(message) => return Err(Error::Usage(message)),
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
    let via = match (&args.socket, &args.via) {
        (Some(_), _) => None,
        (None, Some(via)) => Some(via.clone()),
        (None, None) => entry.and_then(|entry| entry.via.clone()),
    };
    let endpoint = if let Some(via) = via {
        let validator = args
            .validator
            .clone()
            .or_else(|| entry.map(|entry| entry.name.clone()));
        let remote_socket = args
            .remote_socket
            .clone()
            .or_else(|| entry.and_then(|entry| entry.remote_socket.clone()));
        let target = match (remote_socket, validator) {
            (Some(socket), _) => BastionTarget::Socket(
                socket
                    .to_str()
                    .ok_or_else(|| Error::Usage("--remote-socket is not UTF-8".into()))?
                    .to_string(),
            ),
            (None, Some(validator)) => {
                if let Some(problem) = palisade_wire::names::validator_name_problem(&validator) {
                    return Err(Error::Usage(format!(
                        "--validator {validator:?}: {problem}"
                    )));
                }
                BastionTarget::Relay { validator }
            }
            (None, None) => {
                return Err(Error::Usage(
                    "--via needs the validator's name (--validator NAME), or its socket on \
                     the bastion (--remote-socket PATH) for a bastion that forwards sockets"
                        .into(),
                ));
            }
        };
        if pin.is_none() && purpose == Purpose::Rpc {
            return Err(Error::Usage(
                "--via always runs TLS to the supervisor: pin its certificate with --pin \
                 sha256:… or `pin` in the config (printed by `palisade-supervisor init-rpc`)"
                    .into(),
            ));
        }
        let ssh_key = args
            .ssh_key
            .clone()
            .or_else(|| entry.and_then(|entry| entry.ssh_key.clone()))
            .or_else(|| key.clone())
            .ok_or_else(|| {
                Error::Usage("--via needs an SSH key for the bastion: --ssh-key or --key".into())
            })?;
        let mut fingerprints = args.host_keys.clone();
        if let Some(entry) = entry {
            fingerprints.extend(entry.host_key_fingerprints.iter().cloned());
        }
        let known_hosts = args
            .known_hosts
            .clone()
            .or_else(|| entry.and_then(|entry| entry.known_hosts.clone()))
            .or_else(|| config::expand_home_dir(".ssh/known_hosts"));
        Endpoint::Bastion {
            dial: Dial {
                host: via.host.clone(),
                port: via.port.unwrap_or(22),
                user: via.user.clone(),
                key_path: ssh_key,
                host_keys: HostKeyPolicy {
                    pinned_fingerprints: fingerprints,
                    known_hosts_file: known_hosts,
                    first_use: FirstUse::Refuse,
                },
                timeout: palisade_client::CONNECT_TIMEOUT.min(args.session_timeout()),
            },
            target,
        }
    } else {
        let socket = match (&args.socket, entry) {
            (Some(socket), _) => socket.clone(),
            (None, Some(entry)) => entry
                .socket
                .clone()
                .expect("validated: an entry without via has a socket"),
            (None, None) => {
                return Err(Error::Usage(format!(
                    "no supervisor to talk to: pass --socket PATH or --via USER@BASTION, or \
                     configure a [[validator]] in {}",
                    config_path
                        .map(|path| path.display().to_string())
                        .unwrap_or_else(|| "--config FILE".into())
                )));
            }
        };
        Endpoint::Socket(socket)
    };
    let server_users = if args.server_users.is_empty() {
        entry
            .and_then(|entry| entry.server_user.clone())
            .into_iter()
            .collect()
    } else {
        args.server_users.clone()
    };
    let server_uids = server_users
        .iter()
        .map(|user| {
            palisade_client::resolve_user(user)
                .map_err(|reason| Error::Usage(format!("--server-user {user}: {reason}")))
        })
        .collect::<Result<Vec<u32>, Error>>()?;
    let operator = match (name, key) {
        _ if purpose == Purpose::LogArchive => None,
        (Some(name), Some(key)) => Some(OperatorKey::load_or_agent(&name, &key)?),
        (Some(_), None) => return Err(Error::Usage("--operator needs --key".into())),
        (None, Some(_)) => return Err(Error::Usage("--key needs --operator".into())),
        (None, None) => None,
    };
    Ok(ConnectOptions {
        endpoint,
        tls: if args.tls {
            TlsPolicy::Always
        } else {
            TlsPolicy::WhenRequired
        },
        pin,
        server_uids,
        operator,
        call_timeout: args.session_timeout(),
    })
}

/// The vault passphrase: from the terminal without echo, or the first
/// line of stdin.
fn read_passphrase(from_stdin: bool) -> Result<SecretString, Error> {
    // One more than the longest secret, to tell "too long".
    let limit = palisade_wire::rpc::MAX_SECRET_BYTES + 1;
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
        println!("{}", render::escape_json_output(&text));
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
    use serde_json::json;

    use super::*;

    const BACKUP: &str =
        "backup-sim-1-00000000000000000000000000000000000000AB-00000000000000000004-h12.age";
    const TOKEN: &str = "0123456789abcdef0123456789abcdef";
    const SHA256: &str = "sha256:aec070645fe53ee3b3763059376134f058cc337247c978add178b6ccdfb0019f";

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
            (&["backups"], "backup.list", Some(json!({}))),
            (
                &["backups", "--limit", "5"],
                "backup.list",
                Some(json!({"limit": 5})),
            ),
            (
                &["restore", "local", BACKUP],
                "backup.restore",
                Some(json!({"store": "local", "file": BACKUP})),
            ),
            (
                &["restore", "bastion:b1", BACKUP],
                "backup.restore",
                Some(json!({"store": "bastion:b1", "file": BACKUP})),
            ),
            (&["shutdown-host"], "host.shutdown", Some(json!({}))),
            (
                &["shutdown-host", "--yes"],
                "host.shutdown",
                Some(json!({})),
            ),
            (
                &[
                    "call",
                    "host.shutdown",
                    "--params",
                    r#"{"confirm":"0123456789abcdef0123456789abcdef"}"#,
                ],
                "host.shutdown",
                Some(json!({"confirm": TOKEN})),
            ),
            // Unknown methods go as given: the supervisor answers them.
            (
                &["call", "nosuch.method", "--params", r#"{"x":1}"#],
                "nosuch.method",
                Some(json!({"x": 1})),
            ),
            // --unchecked: as given, even what this contract refuses.
            (
                &[
                    "call",
                    "logs.tail",
                    "--unchecked",
                    "--params",
                    r#"{"lines":5000,"x":1}"#,
                ],
                "logs.tail",
                Some(json!({"lines": 5000, "x": 1})),
            ),
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
                    SHA256,
                ],
                "upgrade.add",
                Some(json!({"name": "v2", "url": "https://x/y", "checksum": SHA256})),
            ),
            (
                &["upgrade", "add", "v2", "--path", "/opt/gaiad"],
                "upgrade.add",
                Some(json!({"name": "v2", "path": "/opt/gaiad"})),
            ),
            (
                &[
                    "upgrade",
                    "add",
                    "v2",
                    "--path",
                    "/opt/gaiad",
                    "--checksum",
                    SHA256,
                ],
                "upgrade.add",
                Some(json!({"name": "v2", "path": "/opt/gaiad", "checksum": SHA256})),
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
            (&["eip", "list"], "eip.list", None),
            (
                &["eip", "rotate", "b1"],
                "eip.rotate",
                Some(json!({"bastion": "b1", "keep_old": false})),
            ),
            (
                &["eip", "rotate", "--keep-old", "b1"],
                "eip.rotate",
                Some(json!({"bastion": "b1", "keep_old": true})),
            ),
            (&["eip", "status"], "eip.status", None),
            (
                &["call", "eip.rotate", "--params", r#"{"bastion":"b1"}"#],
                "eip.rotate",
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
    fn logs_archive_options_are_checked_before_anything_runs() {
        for args in [
            &["logs", "--since", "2h"][..],
            &["logs", "--grep", "x"],
            &["logs", "--archive", "--since", "whenever"],
            &["logs", "--archive", "--until", "2026-13-01T00:00:00Z"],
        ] {
            let error = Cli::try_parse_from(std::iter::once(&"palisade-ctl").chain(args.iter()))
                .unwrap_err();
            assert_eq!(error.exit_code(), exit_code::USAGE, "{args:?}");
        }
        let cli =
            Cli::try_parse_from(["palisade-ctl", "logs", "--archive", "--since", "2h"]).unwrap();
        // In the shell it is refused (it reads the bastion, not the RPC).
        let error = run_local(&cli.command, false).unwrap_err();
        assert!(error.to_string().contains("on its own"), "{error}");
        assert_eq!(error.exit_code(), exit_code::USAGE);
        // One-shot, missing --identity / --signer / a bad --grep are usage
        // errors before any connection.
        let run_args = |extra: &[&str]| {
            let mut args = vec!["palisade-ctl", "--validator", "v", "logs", "--archive"];
            args.extend_from_slice(extra);
            run(Cli::try_parse_from(args).unwrap()).unwrap_err()
        };
        let error = run_args(&["--from-dir", "/nonexistent"]);
        assert!(error.to_string().contains("--identity"), "{error}");
        let error = run_args(&["--identity", "/nonexistent"]);
        assert!(error.to_string().contains("--signer"), "{error}");
        let error = run_args(&[
            "--identity",
            "/x",
            "--signer",
            "ssh-ed25519 AAAA",
            "--grep",
            "(",
        ]);
        assert!(error.to_string().contains("--grep"), "{error}");
        assert_eq!(error.exit_code(), exit_code::USAGE);
        let error = run_args(&["--identity", "/x", "--signer", "ssh-rsa AAAA"]);
        assert!(
            error.to_string().contains("--signer: not an ssh-ed25519"),
            "{error}"
        );
    }

    #[test]
    fn usage_errors() {
        let clap_rejects: &[&[&str]] = &[
            &["logs", "--lines", "-1"],
            &["logs", "--lines", "many"],
            &["upgrade", "add", "v2"],
            &["upgrade", "add", "v2", "--checksum", "sha256:ab"],
            &["upgrade", "cancel"],
            &["backups", "--limit", "x"],
            &["restore"],
            &["restore", "local"],
            &["restore", "local", "a.age", "b.age"],
            &["shutdown-host", "--force"],
            &["shutdown-host", "val1"],
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
            &["eip"],
            &["eip", "rotate"],
            &["eip", "rotate", "b1", "b2"],
            &["eip", "status", "b1"],
            &["eip", "rotate", "b1", "--keep-old=yes"],
        ];
        for args in clap_rejects {
            let error = Cli::try_parse_from(std::iter::once(&"palisade-ctl").chain(args.iter()))
                .unwrap_err();
            assert_eq!(error.exit_code(), exit_code::USAGE, "{args:?}");
        }
        // Refused before connecting, with the contract's own message.
        let planned_rejects: &[(&[&str], &str)] = &[
            (&["call", "status", "--params", "{"], "--params is not JSON"),
            (&["call", "vault.unlock"], "takes a secret"),
            (
                &["call", "tunnel.reconnect", "--params", r#"{"bastio":"b1"}"#],
                "--params: tunnel.reconnect params: unknown field `bastio`, expected `bastion`",
            ),
            (
                &["call", "logs.tail", "--params", r#"{"lines":5000}"#],
                "--params: lines must be an integer from 1 to 1000, not 5000",
            ),
            (
                &["call", "status", "--params", "[]"],
                "--params: status takes no params",
            ),
            (
                &["logs", "--lines", "0"],
                "lines must be an integer from 1 to 1000, not 0",
            ),
            (
                &["logs", "--lines", "1001"],
                "lines must be an integer from 1 to 1000, not 1001",
            ),
            (
                &["backups", "--limit", "0"],
                "limit must be an integer from 1 to 100, not 0",
            ),
            (
                &["backups", "--limit", "101"],
                "limit must be an integer from 1 to 100, not 101",
            ),
            (
                &["upgrade", "add", "v2", "--path", "gaiad"],
                "`path` must be absolute (a file on the validator host), not gaiad",
            ),
            (
                &["upgrade", "add", "v2", "--path", "./bin/gaiad"],
                "must be absolute",
            ),
            (
                &["upgrade", "add", "v2", "--url", "https://x"],
                "`checksum` (sha256:HEX or sha512:HEX) is required with `url`",
            ),
            (
                &[
                    "upgrade",
                    "add",
                    "v2",
                    "--url",
                    "https://x",
                    "--checksum",
                    "sha256:ab",
                ],
                "sha256 digest has 2 hex digits, expected 64",
            ),
            (
                &[
                    "upgrade",
                    "add",
                    "v2",
                    "--path",
                    "/x",
                    "--checksum",
                    "md5:00",
                ],
                "cryptographically broken",
            ),
            (
                &["upgrade", "add", "../v2", "--path", "/x"],
                "upgrade name \"../v2\" contains a path separator",
            ),
            (&["upgrade", "cancel", ".v2"], "starts with '.'"),
            (
                &["restore", "local", "notes.txt"],
                "\"notes.txt\" is not a backup file name",
            ),
            (&["restore", "", BACKUP], "store must be a non-empty string"),
            (
                &["eip", "rotate", ""],
                "bastion must be a non-empty string (see eip.list)",
            ),
            (
                &[
                    "call",
                    "eip.rotate",
                    "--params",
                    r#"{"bastion":"b1","keep_old":1}"#,
                ],
                "keep_old",
            ),
        ];
        for (args, message) in planned_rejects {
            let cli =
                Cli::try_parse_from(std::iter::once(&"palisade-ctl").chain(args.iter())).unwrap();
            let error = planned_call(&cli.command).unwrap_err();
            assert_eq!(error.exit_code(), exit_code::USAGE, "{args:?}");
            assert!(error.to_string().contains(message), "{args:?}: {error}");
        }
    }

    #[test]
    fn a_rotation_waits_longer_unless_told_otherwise() {
        let timeout = |args: &[&str]| {
            let cli =
                Cli::try_parse_from(std::iter::once(&"palisade-ctl").chain(args.iter())).unwrap();
            (
                cli.connection.session_timeout(),
                cli.connection.call_timeout(&cli.command),
            )
        };
        let (quick, rotation) = (DEFAULT_CALL_TIMEOUT, EIP_ROTATE_TIMEOUT);
        assert!(rotation > quick);
        assert_eq!(timeout(&["status"]), (quick, quick));
        assert_eq!(timeout(&["eip", "list"]), (quick, quick));
        assert_eq!(timeout(&["eip", "rotate", "b1"]), (quick, rotation));
        assert_eq!(
            timeout(&["call", "eip.rotate", "--params", r#"{"bastion":"b1"}"#]),
            (quick, rotation)
        );
        let five = Duration::from_secs(5);
        assert_eq!(
            timeout(&["--timeout", "5", "eip", "rotate", "b1"]),
            (five, five)
        );
        assert_eq!(
            timeout(&["eip", "rotate", "b1", "--timeout", "5"]),
            (five, five)
        );
        assert_eq!(
            timeout(&["--timeout", "300", "status"]).1,
            Duration::from_secs(300)
        );
    }

    #[test]
    fn failed_rotations_say_where_to_look() {
        use palisade_wire::rpc::{RpcError, code};
        let rpc = |code| CallError::Rpc(RpcError::new(code, "x"));
        let cases = [
            ("eip.rotate", rpc(code::WRONG_STATE), None),
            ("eip.rotate", rpc(code::INTERNAL), Some("eip status` shows")),
            ("eip.rotate", rpc(code::INVALID_PARAMS), None),
            (
                "eip.rotate",
                CallError::Connection("no answer".into()),
                Some("may go on"),
            ),
            (
                "eip.rotate",
                CallError::Auth(RpcError::new(code::FORBIDDEN, "x")),
                None,
            ),
            ("eip.list", rpc(code::WRONG_STATE), None),
            ("status", CallError::Connection("x".into()), None),
        ];
        for (method, error, advice) in cases {
            let code = exit_code::for_failure(error.kind());
            let error = advised(method, error);
            assert_eq!(error.exit_code(), code, "{method} {error}");
            match (advice, &error) {
                (Some(advice), Error::Advised(_, said)) => {
                    assert!(said.contains(advice), "{method}: {said}");
                    assert!(error.to_string().contains(&format!("\n{said}")));
                }
                (None, Error::Call(_)) => {}
                (expected, error) => panic!("{method}: {expected:?}, got {error:?}"),
            }
        }
    }

    #[test]
    fn shutdown_host_is_two_steps_only() {
        // Not as a single call (the shell's path): it must confirm.
        let cli = Cli::try_parse_from(["palisade-ctl", "shutdown-host", "--yes"]).unwrap();
        let error = run_local(&cli.command, false).unwrap_err();
        assert_eq!(error.exit_code(), exit_code::USAGE);
        assert!(error.to_string().contains("two steps"), "{error}");
        let declined = Error::NotConfirmed("not confirmed".into());
        assert_eq!(declined.exit_code(), exit_code::CALL);
        assert_eq!(declined.to_string(), "not confirmed");
    }

    #[test]
    fn client_errors_map_to_exit_codes() {
        use palisade_wire::rpc::{RpcError, code};
        let rpc = |code| RpcError::new(code, "x");
        let cases = [
            (CallError::Connection("x".into()), exit_code::CONNECTION),
            (CallError::NoPin, exit_code::CONNECTION),
            (
                CallError::PinMismatch {
                    pinned: "a".into(),
                    presented: "b".into(),
                },
                exit_code::CONNECTION,
            ),
            (CallError::Auth(rpc(code::UNAUTHENTICATED)), exit_code::AUTH),
            (CallError::Rpc(rpc(code::METHOD_NOT_FOUND)), exit_code::CALL),
        ];
        for (error, expected) in cases {
            assert_eq!(Error::Call(error).exit_code(), expected);
        }
    }

    #[test]
    fn via_needs_a_validator_a_pin_and_a_key() {
        let dir = std::env::temp_dir().join(format!("palisade-ctl-via-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("empty.toml");
        std::fs::write(&config, "").unwrap();
        let config = config.to_str().unwrap();
        let pin = format!("sha256:{}", "ab".repeat(32));
        let cases: &[(&[&str], &str)] = &[
            (&["--via", "ops@b", "status"], "--validator NAME"),
            (
                &["--via", "ops@b", "--validator", "a b", "status"],
                "may use only",
            ),
            (
                &["--via", "ops@b", "--validator", "val-a", "status"],
                "pin its certificate",
            ),
            (
                &[
                    "--via",
                    "ops@b",
                    "--validator",
                    "val-a",
                    "--pin",
                    &pin,
                    "status",
                ],
                "--ssh-key or --key",
            ),
        ];
        for (args, expected) in cases {
            let cli = Cli::try_parse_from(
                ["palisade-ctl", "--config", config]
                    .iter()
                    .chain(args.iter()),
            )
            .unwrap();
            let error = connect_options(&cli.connection).unwrap_err();
            assert_eq!(error.exit_code(), exit_code::USAGE, "{args:?}: {error}");
            assert!(error.to_string().contains(expected), "{args:?}: {error}");
        }
        let cli = Cli::try_parse_from([
            "palisade-ctl",
            "--config",
            config,
            "--via",
            "ops@[::1]:2222",
            "--validator",
            "val-a",
            "--pin",
            &pin,
            "--ssh-key",
            "/nonexistent/id",
            "--host-key",
            "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU",
            "status",
        ])
        .unwrap();
        let options = connect_options(&cli.connection).unwrap();
        match options.endpoint {
            Endpoint::Bastion { dial, target } => {
                assert_eq!(
                    target,
                    BastionTarget::Relay {
                        validator: "val-a".into()
                    }
                );
                assert_eq!((dial.host.as_str(), dial.port), ("::1", 2222));
                assert_eq!(dial.user, "ops");
                assert_eq!(dial.host_keys.pinned_fingerprints.len(), 1);
                assert_eq!(dial.host_keys.first_use, FirstUse::Refuse);
            }
            other => panic!("expected a bastion endpoint, got {other:?}"),
        }
        // A socket path on the bastion: a direct-streamlocal channel instead.
        let cli = Cli::try_parse_from([
            "palisade-ctl",
            "--config",
            config,
            "--via",
            "ops@b",
            "--validator",
            "val-a",
            "--remote-socket",
            "/run/palisade-validators/val-a.sock",
            "--pin",
            &pin,
            "--ssh-key",
            "/nonexistent/id",
            "status",
        ])
        .unwrap();
        match connect_options(&cli.connection).unwrap().endpoint {
            Endpoint::Bastion { target, .. } => assert_eq!(
                target,
                BastionTarget::Socket("/run/palisade-validators/val-a.sock".into())
            ),
            other => panic!("expected a bastion endpoint, got {other:?}"),
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
