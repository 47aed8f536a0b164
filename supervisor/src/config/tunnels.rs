//! `[rpc]`, `[tunnel]` and `[[bastion]]`: the control socket and the SSH
//! tunnels to the bastions (see DESIGN.md "Topology" and
//! `docs/configuration.md`).
//!
//! ```toml
//! [rpc]
//! socket = "/run/palisade/supervisor.sock"
//! name = "val-a"
//! trusted-uids = [0, 1000]        # default: root and the supervisor's own uid
//!
//! [tunnel]
//! key-file = "/etc/palisade/tunnel_ed25519"
//! known-hosts = "/etc/palisade/known_hosts"
//!
//! [[bastion]]
//! name = "bastion-1"
//! host = "203.0.113.10"
//! user = "palisade-tunnel"
//! host-key-fingerprints = ["SHA256:…"]
//! rpc-socket = "/run/palisade-validators/val-a.sock"
//! backup-command = "palisade-bastion backup-session"
//! local-forwards = [{ listen = "127.0.0.1:26701", target = "10.0.0.5:26656" }]
//! remote-forwards = [{ listen = "127.0.0.1:26660", target = "127.0.0.1:26660" }]
//! ```

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use palisade_wire::names::validator_name_problem;
use serde::Deserialize;

use super::Resolver;
use crate::tunnel::{
    BastionConfig, FirstUse, HostKeyPolicy, LocalTcpForward, ReconnectBackoff, ReverseTcpForward,
    ReverseUnixForward,
};

/// Longest usable Unix socket path (`sun_path` is 108 bytes with the NUL).
pub const MAX_SOCKET_PATH_BYTES: usize = 107;

/// `[rpc]`: the supervisor's control socket.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawRpc {
    /// Default `$DAEMON_HOME/palisade/run/supervisor.sock` (the directory is
    /// created 0700).
    pub socket: Option<PathBuf>,
    /// Default: the host name. This validator's name on the bastions (its
    /// backup-store directory, the greeting their health checks read).
    pub name: Option<String>,
    /// Default `$DAEMON_HOME/palisade/rpc`: the directory (0700) holding the
    /// RPC server's TLS certificate `cert.pem` and key `key.pem` (0600),
    /// made by `palisade-supervisor init-rpc`.
    pub tls_dir: Option<PathBuf>,
    /// Default `60s`: a connection without a complete line for this long is
    /// closed.
    pub idle_timeout: Option<String>,
    /// Default `[0, <the supervisor's own uid>]`: the uids whose local
    /// connections are trusted (no TLS, no login, admin as `local:<user>`);
    /// `[]` trusts nobody. The supervisor's own tunnel is never trusted.
    pub trusted_uids: Option<Vec<u32>>,
}

/// `[tunnel]`: settings shared by every `[[bastion]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawTunnel {
    /// Required with any `[[bastion]]`: the ed25519 client key (OpenSSH
    /// format, no passphrase), readable while the vault is locked so that
    /// the tunnels, and with them remote unlock, work after a reboot.
    pub key_file: Option<PathBuf>,
    /// Default none: an OpenSSH known_hosts file with the bastions' keys.
    pub known_hosts: Option<PathBuf>,
    /// Default `false`: accept and record the first key of a bastion that
    /// has none on record (needs `known-hosts`).
    pub trust_first_use: Option<bool>,
    /// Default `10s`: TCP connect + SSH handshake + authentication.
    pub connect_timeout: Option<String>,
    /// Default `5s`: silence after which a keepalive is sent.
    pub keepalive_interval: Option<String>,
    /// Default `3`: unanswered keepalives that declare the bastion dead.
    pub keepalive_max: Option<usize>,
    /// Default `1500ms`: the longest pause between reconnection attempts
    /// that reached sshd.
    pub reconnect_max_delay: Option<String>,
    /// Default `100ms`: between two TCP probes of a bastion that does not
    /// accept connections.
    pub probe_interval: Option<String>,
    /// Default by CPU: the ciphers offered, most preferred first.
    pub ciphers: Option<Vec<String>>,
}

/// One `[[bastion]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawBastion {
    pub name: Option<String>,
    pub host: Option<String>,
    /// Default `22`.
    pub port: Option<u16>,
    pub user: Option<String>,
    /// `SHA256:…` as `ssh-keygen -lf` prints them; or use `tunnel.known-hosts`.
    pub host_key_fingerprints: Option<Vec<String>>,
    /// Default none: where sshd publishes this supervisor's control socket
    /// on the bastion (reverse Unix-socket forward).
    pub rpc_socket: Option<String>,
    /// Default none: with it, every backup also goes to this bastion, over
    /// a session running this command. The bastion's authorized_keys line
    /// forces the real one (`command="palisade-bastion backup-session …
    /// --validator NAME"`), so what is sent here is informational.
    pub backup_command: Option<String>,
    /// Local TCP listeners carried to a target as seen from the bastion.
    pub local_forwards: Option<Vec<RawForward>>,
    /// TCP listeners on the bastion carried back to a local target.
    pub remote_forwards: Option<Vec<RawForward>>,
    /// Default none: the sentry node behind this bastion. With it the
    /// supervisor forwards a loopback address of its own to the sentry's
    /// P2P port and writes gaiad's `[p2p]` peering to it (`docs/supervisor.md`).
    pub sentry: Option<RawSentry>,
    /// Default none: the EC2 instance or network interface whose Elastic IP
    /// is this bastion's public address (`[eip]`, `docs/eip.md`).
    pub eip: Option<super::RawBastionEip>,
}

/// `sentry = { node-id = "…", target = "…", listen = "…" }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawSentry {
    /// Required: the sentry's CometBFT node ID (`gaiad tendermint show-node-id`
    /// on the sentry), 40 hex digits.
    pub node_id: Option<String>,
    /// Required: the sentry's P2P address as the bastion reaches it
    /// (`host:port`, e.g. `10.0.0.5:26656`).
    pub target: Option<String>,
    /// Default `127.0.0.<2 + n>:26756` for the n-th `[[bastion]]` (from 0):
    /// a loopback address of its own per sentry, so CometBFT's duplicate-IP
    /// filter keeps every sentry connected.
    pub listen: Option<String>,
}

/// `{ listen = "…", target = "…" }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawForward {
    pub listen: Option<String>,
    pub target: Option<String>,
}

/// The validated `[rpc]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcSettings {
    pub socket: PathBuf,
    pub name: String,
    /// Holds `cert.pem` and `key.pem` (see [`crate::rpc::tls`]).
    pub tls_dir: PathBuf,
    /// Longest wait for a complete line (or a TLS handshake).
    pub idle_timeout: Duration,
    /// Uids whose local connections are trusted (`docs/rpc.md` §1).
    pub trusted_uids: Vec<u32>,
}

/// The validated `[tunnel]` and `[[bastion]]` tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelSettings {
    pub key_file: PathBuf,
    pub known_hosts: Option<PathBuf>,
    pub trust_first_use: bool,
    pub connect_timeout: Duration,
    pub keepalive_interval: Duration,
    pub keepalive_max: usize,
    pub reconnect_max_delay: Duration,
    pub probe_interval: Duration,
    /// `None`: [`palisade_ssh::ciphers::default_order`].
    pub ciphers: Option<Vec<String>>,
    pub bastions: Vec<BastionSettings>,
}

/// One validated `[[bastion]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BastionSettings {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub host_key_fingerprints: Vec<String>,
    pub rpc_socket: Option<String>,
    pub backup_command: Option<String>,
    pub local_forwards: Vec<LocalTcpForward>,
    pub remote_forwards: Vec<ReverseTcpForward>,
    /// The sentry behind this bastion; its forward is among
    /// `local_forwards` too.
    pub sentry: Option<SentrySettings>,
    /// What its Elastic IP is associated with, for rotation.
    pub eip: Option<super::EipTarget>,
}

/// A validated `sentry`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentrySettings {
    /// Lower-case hex, 40 digits.
    pub node_id: String,
    /// The local end of its forward: what gaiad dials.
    pub listen: SocketAddr,
    pub target_host: String,
    pub target_port: u16,
}

/// The port of a sentry's forward when `listen` is not given: not gaiad's
/// P2P (26656) or RPC (26657) port, which a node listening on `0.0.0.0`
/// holds on every loopback address too.
pub const DEFAULT_SENTRY_PORT: u16 = 26756;

impl TunnelSettings {
    /// Every `[[bastion]]`'s sentry, in configuration order, with its
    /// bastion's name.
    pub fn sentries(&self) -> impl Iterator<Item = (&str, &SentrySettings)> {
        self.bastions.iter().filter_map(|bastion| {
            bastion
                .sentry
                .as_ref()
                .map(|sentry| (bastion.name.as_str(), sentry))
        })
    }

    /// The tunnel library's configuration for `bastion`; its `rpc-socket`
    /// forwards to the control socket `rpc_socket`'s entry for this bastion
    /// ([`bastion_entry_socket`]).
    pub fn bastion_config(&self, bastion: &BastionSettings, rpc_socket: &Path) -> BastionConfig {
        let policy = HostKeyPolicy {
            pinned_fingerprints: bastion.host_key_fingerprints.clone(),
            known_hosts_file: self.known_hosts.clone(),
            first_use: if self.trust_first_use {
                FirstUse::TrustAndRecord
            } else {
                FirstUse::Refuse
            },
        };
        let mut config = BastionConfig::new(
            &bastion.name,
            &bastion.host,
            bastion.port,
            &bastion.user,
            &self.key_file,
            policy,
        );
        config.connect_timeout = self.connect_timeout;
        config.keepalive_interval = self.keepalive_interval;
        config.keepalive_max = self.keepalive_max;
        config.backoff = ReconnectBackoff {
            initial: ReconnectBackoff::default()
                .initial
                .min(self.reconnect_max_delay),
            max: self.reconnect_max_delay,
            probe_interval: self.probe_interval,
        };
        if let Some(ciphers) = &self.ciphers {
            config.ciphers = palisade_ssh::ciphers::parse(ciphers)
                .expect("validated when the configuration was loaded");
        }
        config.reverse_unix_forwards = bastion
            .rpc_socket
            .iter()
            .map(|remote| ReverseUnixForward {
                remote_socket_path: remote.clone(),
                local_socket_path: bastion_entry_socket(rpc_socket, &bastion.name),
            })
            .collect();
        config.reverse_tcp_forwards = bastion.remote_forwards.clone();
        config.local_tcp_forwards = bastion.local_forwards.clone();
        config
    }
}

/// The control socket's entry for the connections `bastion` forwards:
/// `<[rpc] socket>.via-<bastion>`, beside the control socket. Each bastion's
/// reverse forward ends on its own entry, so the RPC server knows which
/// bastion a connection came through (its login throttle counts failures
/// per bastion, `docs/rpc.md` §2) without trusting anything the bastion
/// says.
pub fn bastion_entry_socket(rpc_socket: &Path, bastion: &str) -> PathBuf {
    let mut path = rpc_socket.as_os_str().to_owned();
    path.push(".via-");
    path.push(bastion);
    PathBuf::from(path)
}

fn socket_path_problem(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        Some(format!("'{path}' must be an absolute path"))
    } else if path.len() > MAX_SOCKET_PATH_BYTES {
        Some(format!(
            "'{path}' is {} bytes; Unix socket paths are limited to {MAX_SOCKET_PATH_BYTES}",
            path.len()
        ))
    } else {
        None
    }
}

/// `host:port` or `[v6]:port`, port not 0.
fn host_port(text: &str) -> Result<(String, u16), String> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("'{text}' must be host:port"))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port: u16 = port
        .parse()
        .map_err(|_| format!("'{text}': '{port}' is not a port number"))?;
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("'{text}' must be host:port"));
    }
    if port == 0 {
        return Err(format!(
            "'{text}': port 0 is not allowed (the address must be stable)"
        ));
    }
    Ok((host.to_string(), port))
}

/// A CometBFT node ID: the hex of 20 bytes (`p2p/key.go`).
fn is_node_id(text: &str) -> bool {
    text.len() == 40 && text.bytes().all(|byte| byte.is_ascii_hexdigit())
}

/// `127.0.0.<2 + index>:26756`: one loopback address per bastion's sentry.
fn default_sentry_listen(index: usize) -> SocketAddr {
    let last = u8::try_from(2 + index).unwrap_or(u8::MAX);
    SocketAddr::from(([127, 0, 0, last], DEFAULT_SENTRY_PORT))
}

fn loopback_socket_addr(text: &str) -> Result<SocketAddr, String> {
    let address: SocketAddr = text
        .parse()
        .map_err(|_| format!("'{text}' must be an IP address and port, e.g. 127.0.0.1:26656"))?;
    if address.port() == 0 {
        return Err(format!(
            "'{text}': port 0 is not allowed (the address must be stable)"
        ));
    }
    if !address.ip().is_loopback() {
        return Err(format!(
            "'{text}' must be a loopback address: a forward on another interface would let \
             anyone who reaches this host use the tunnel"
        ));
    }
    Ok(address)
}

fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .filter(|name| validator_name_problem(name).is_none())
        .unwrap_or_else(|| "validator".to_string())
}

/// Most uids in `rpc.trusted-uids`.
pub const MAX_TRUSTED_UIDS: usize = 16;

pub(super) fn validate_rpc(r: &mut Resolver<'_>, raw: RawRpc, daemon_home: &Path) -> RpcSettings {
    let socket = raw.socket.unwrap_or_else(|| {
        daemon_home
            .join("palisade")
            .join("run")
            .join("supervisor.sock")
    });
    if daemon_home.as_os_str().is_empty() {
        // DAEMON_HOME is missing; that is reported already.
    } else if let Some(problem) = socket_path_problem(&socket.to_string_lossy()) {
        let origin = r.file_origin("rpc.socket");
        r.report(origin, problem);
    }
    let name = match raw.name {
        Some(name) => {
            if let Some(problem) = validator_name_problem(&name) {
                let origin = r.file_origin("rpc.name");
                r.report(origin, problem);
            }
            name
        }
        None => host_name(),
    };
    let tls_dir = raw
        .tls_dir
        .unwrap_or_else(|| daemon_home.join("palisade").join("rpc"));
    if !tls_dir.is_absolute() && !daemon_home.as_os_str().is_empty() {
        let origin = r.file_origin("rpc.tls-dir");
        r.report(
            origin,
            format!("'{}' must be an absolute path", tls_dir.display()),
        );
    }
    let idle_timeout = r.duration(
        None,
        "rpc.idle-timeout",
        raw.idle_timeout.as_deref(),
        Duration::from_secs(60),
    );
    if !(Duration::from_millis(100)..=Duration::from_secs(3600)).contains(&idle_timeout) {
        let origin = r.file_origin("rpc.idle-timeout");
        r.report(origin, "must be between 100ms and 1h");
    }
    let trusted_uids = match raw.trusted_uids {
        Some(uids) => {
            let mut sorted = uids.clone();
            sorted.sort_unstable();
            sorted.dedup();
            if sorted.len() != uids.len() || uids.len() > MAX_TRUSTED_UIDS {
                let origin = r.file_origin("rpc.trusted-uids");
                r.report(
                    origin,
                    format!("must list at most {MAX_TRUSTED_UIDS} uids, each once"),
                );
            }
            uids
        }
        None => {
            let own = nix::unistd::geteuid().as_raw();
            if own == 0 { vec![0] } else { vec![0, own] }
        }
    };
    RpcSettings {
        socket,
        name,
        tls_dir,
        idle_timeout,
        trusted_uids,
    }
}

pub(super) fn validate_tunnels(
    r: &mut Resolver<'_>,
    tunnel: Option<RawTunnel>,
    bastions: Vec<RawBastion>,
) -> Option<TunnelSettings> {
    if bastions.is_empty() {
        if tunnel.is_some() {
            let origin = r.file_origin("tunnel");
            r.report(origin, "[tunnel] has no effect without a [[bastion]] table");
        }
        return None;
    }
    let tunnel = tunnel.unwrap_or_default();
    let key_file = match tunnel.key_file {
        Some(path) => {
            let origin = r.file_origin("tunnel.key-file");
            if !path.is_absolute() {
                r.report(
                    origin,
                    format!("'{}' must be an absolute path", path.display()),
                );
            } else if !path.is_file() {
                r.report(
                    origin,
                    format!(
                        "'{}' does not exist (create it with ssh-keygen -t ed25519 -N '' -f {})",
                        path.display(),
                        path.display()
                    ),
                );
            }
            path
        }
        None => {
            let origin = r.file_origin("tunnel.key-file");
            r.report(origin, "is required with [[bastion]]: the SSH client key");
            PathBuf::new()
        }
    };
    let known_hosts = tunnel.known_hosts.inspect(|path| {
        if !path.is_absolute() {
            let origin = r.file_origin("tunnel.known-hosts");
            r.report(
                origin,
                format!("'{}' must be an absolute path", path.display()),
            );
        }
    });
    let trust_first_use = tunnel.trust_first_use.unwrap_or(false);
    if trust_first_use && known_hosts.is_none() {
        let origin = r.file_origin("tunnel.trust-first-use");
        r.report(
            origin,
            "needs tunnel.known-hosts: the first key seen is recorded there",
        );
    }
    let connect_timeout = r.duration(
        None,
        "tunnel.connect-timeout",
        tunnel.connect_timeout.as_deref(),
        Duration::from_secs(10),
    );
    let keepalive_interval = r.duration(
        None,
        "tunnel.keepalive-interval",
        tunnel.keepalive_interval.as_deref(),
        Duration::from_secs(5),
    );
    let reconnect_max_delay = r.duration(
        None,
        "tunnel.reconnect-max-delay",
        tunnel.reconnect_max_delay.as_deref(),
        ReconnectBackoff::default().max,
    );
    let probe_interval = r.duration(
        None,
        "tunnel.probe-interval",
        tunnel.probe_interval.as_deref(),
        ReconnectBackoff::default().probe_interval,
    );
    if probe_interval > Duration::from_secs(10) {
        let origin = r.file_origin("tunnel.probe-interval");
        r.report(origin, "must be at most 10s");
    }
    if let Some(ciphers) = &tunnel.ciphers
        && let Err(problem) = palisade_ssh::ciphers::parse(ciphers)
    {
        let origin = r.file_origin("tunnel.ciphers");
        r.report(origin, problem);
    }
    for (value, key, minimum) in [
        (
            probe_interval,
            "tunnel.probe-interval",
            Duration::from_millis(10),
        ),
        (
            connect_timeout,
            "tunnel.connect-timeout",
            Duration::from_millis(100),
        ),
        (
            keepalive_interval,
            "tunnel.keepalive-interval",
            Duration::from_millis(100),
        ),
        (
            reconnect_max_delay,
            "tunnel.reconnect-max-delay",
            Duration::from_millis(10),
        ),
    ] {
        if value < minimum {
            let origin = r.file_origin(key);
            r.report(
                origin,
                format!("must be at least {}", humantime::format_duration(minimum)),
            );
        }
    }
    let keepalive_max = tunnel.keepalive_max.unwrap_or(3);
    if keepalive_max == 0 {
        let origin = r.file_origin("tunnel.keepalive-max");
        r.report(origin, "must be at least 1");
    }

    let mut names = BTreeSet::new();
    let mut listens = BTreeSet::new();
    let mut settings = Vec::new();
    for (index, raw) in bastions.into_iter().enumerate() {
        let key = |field: &str| format!("bastion[{}].{field}", index + 1);
        let problem = |r: &mut Resolver<'_>, field: &str, reason: String| {
            let origin = r.file_origin(key(field));
            r.report(origin, reason);
        };
        let name = raw.name.unwrap_or_default();
        if name.is_empty() {
            problem(r, "name", "is required".into());
        } else if let Some(reason) = validator_name_problem(&name) {
            problem(r, "name", reason);
        } else if !names.insert(name.clone()) {
            problem(
                r,
                "name",
                format!("'{name}' is used by another [[bastion]]"),
            );
        }
        let host = raw.host.unwrap_or_default();
        if host.trim().is_empty() {
            problem(r, "host", "is required".into());
        }
        let port = raw.port.unwrap_or(22);
        if port == 0 {
            problem(r, "port", "must not be 0".into());
        }
        let user = raw.user.unwrap_or_default();
        if user.trim().is_empty() {
            problem(
                r,
                "user",
                "is required: the tunnel user on the bastion".into(),
            );
        }
        let host_key_fingerprints = raw.host_key_fingerprints.unwrap_or_default();
        for fingerprint in &host_key_fingerprints {
            if let Err(error) = crate::tunnel::parse_fingerprint(fingerprint) {
                problem(r, "host-key-fingerprints", error.to_string());
            }
        }
        if host_key_fingerprints.is_empty() && known_hosts.is_none() {
            problem(
                r,
                "host-key-fingerprints",
                "no host key to pin: list the bastion's fingerprints (ssh-keygen -lf) or set \
                 tunnel.known-hosts"
                    .into(),
            );
        }
        if let Some(path) = &raw.rpc_socket
            && let Some(reason) = socket_path_problem(path)
        {
            problem(r, "rpc-socket", reason);
        }
        if let Some(command) = &raw.backup_command
            && (command.trim().is_empty() || command.contains(['\n', '\0']))
        {
            problem(
                r,
                "backup-command",
                "must be a one-line command, e.g. \"palisade-bastion backup-session\"".into(),
            );
        }
        let mut local_forwards = Vec::new();
        for (position, forward) in raw
            .local_forwards
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let field = format!("local-forwards[{}]", position + 1);
            let listen = match forward.listen.as_deref().map(loopback_socket_addr) {
                Some(Ok(listen)) => {
                    if !listens.insert(listen) {
                        problem(r, &field, format!("listen address {listen} is used twice"));
                    }
                    Some(listen)
                }
                Some(Err(reason)) => {
                    problem(r, &field, format!("listen: {reason}"));
                    None
                }
                None => {
                    problem(r, &field, "listen is required".into());
                    None
                }
            };
            let target = match forward.target.as_deref().map(host_port) {
                Some(Ok(target)) => Some(target),
                Some(Err(reason)) => {
                    problem(r, &field, format!("target: {reason}"));
                    None
                }
                None => {
                    problem(
                        r,
                        &field,
                        "target is required (host:port as seen from the bastion)".into(),
                    );
                    None
                }
            };
            if let (Some(listen), Some((target_host, target_port))) = (listen, target) {
                local_forwards.push(LocalTcpForward {
                    listen,
                    target_host,
                    target_port,
                });
            }
        }
        let mut remote_forwards = Vec::new();
        for (position, forward) in raw
            .remote_forwards
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let field = format!("remote-forwards[{}]", position + 1);
            let listen = match forward.listen.as_deref().map(host_port) {
                Some(Ok(listen)) => Some(listen),
                Some(Err(reason)) => {
                    problem(r, &field, format!("listen: {reason}"));
                    None
                }
                None => {
                    problem(
                        r,
                        &field,
                        "listen is required (address:port on the bastion)".into(),
                    );
                    None
                }
            };
            let target = match forward.target.as_deref() {
                Some(text) => match text.parse::<SocketAddr>() {
                    Ok(target) if target.port() != 0 => Some(target),
                    _ => {
                        problem(
                            r,
                            &field,
                            format!("target: '{text}' must be a local IP address and port"),
                        );
                        None
                    }
                },
                None => {
                    problem(
                        r,
                        &field,
                        "target is required (a local address:port)".into(),
                    );
                    None
                }
            };
            if let (Some((remote_address, remote_port)), Some(local_target)) = (listen, target) {
                if remote_forwards
                    .iter()
                    .any(|f: &ReverseTcpForward| f.remote_port == remote_port)
                {
                    problem(r, &field, format!("port {remote_port} is forwarded twice"));
                }
                remote_forwards.push(ReverseTcpForward {
                    remote_address,
                    remote_port,
                    local_target,
                });
            }
        }
        let sentry = raw.sentry.and_then(|raw| {
            let node_id = match raw.node_id {
                Some(id) if is_node_id(&id) => Some(id.to_ascii_lowercase()),
                Some(id) => {
                    problem(
                        r,
                        "sentry.node-id",
                        format!(
                            "'{id}' is not a CometBFT node ID (40 hex digits; \
                             `gaiad tendermint show-node-id` on the sentry)"
                        ),
                    );
                    None
                }
                None => {
                    problem(
                        r,
                        "sentry.node-id",
                        "is required: the sentry's node ID (`gaiad tendermint show-node-id`)"
                            .into(),
                    );
                    None
                }
            };
            let target = match raw.target.as_deref().map(host_port) {
                Some(Ok(target)) => Some(target),
                Some(Err(reason)) => {
                    problem(r, "sentry.target", reason);
                    None
                }
                None => {
                    problem(
                        r,
                        "sentry.target",
                        "is required: the sentry's P2P address as the bastion reaches it \
                         (host:port)"
                            .into(),
                    );
                    None
                }
            };
            let listen = match raw.listen.as_deref().map(loopback_socket_addr) {
                Some(Ok(listen)) => Some(listen),
                Some(Err(reason)) => {
                    problem(r, "sentry.listen", reason);
                    None
                }
                None => Some(default_sentry_listen(index)),
            };
            if let Some(listen) = listen
                && !listens.insert(listen)
            {
                problem(
                    r,
                    "sentry.listen",
                    format!("listen address {listen} is used twice"),
                );
            }
            match (node_id, target, listen) {
                (Some(node_id), Some((target_host, target_port)), Some(listen)) => {
                    Some(SentrySettings {
                        node_id,
                        listen,
                        target_host,
                        target_port,
                    })
                }
                _ => None,
            }
        });
        if let Some(sentry) = &sentry {
            local_forwards.push(LocalTcpForward {
                listen: sentry.listen,
                target_host: sentry.target_host.clone(),
                target_port: sentry.target_port,
            });
        }
        let eip = raw.eip.and_then(|eip| {
            super::eip::validate_bastion_eip(r, &format!("bastion[{}]", index + 1), eip)
        });
        settings.push(BastionSettings {
            eip,
            name,
            host,
            port,
            user,
            host_key_fingerprints,
            rpc_socket: raw.rpc_socket,
            backup_command: raw.backup_command,
            local_forwards,
            remote_forwards,
            sentry,
        });
    }
    Some(TunnelSettings {
        key_file,
        known_hosts,
        trust_first_use,
        connect_timeout,
        keepalive_interval,
        keepalive_max,
        reconnect_max_delay,
        probe_interval,
        ciphers: tunnel.ciphers,
        bastions: settings,
    })
}

#[cfg(test)]
mod tests {

    const FINGERPRINT: &str = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";

    use crate::config::test_support::load;

    #[test]
    fn sentries_get_a_loopback_address_each_and_a_forward() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("tunnel_ed25519");
        std::fs::write(&key, "not parsed at load time").unwrap();
        let bastion = |name: &str, sentry: &str| {
            format!(
                "[[bastion]]\nname = \"{name}\"\nhost = \"203.0.113.10\"\nuser = \"t\"\n\
                 host-key-fingerprints = [\"{FINGERPRINT}\"]\n{sentry}\n"
            )
        };
        let id = "0123456789ABCDEF0123456789abcdef01234567";
        let good = format!(
            "[tunnel]\nkey-file = {key:?}\n{}{}{}",
            bastion(
                "ba",
                &format!("sentry = {{ node-id = \"{id}\", target = \"10.0.0.5:26656\" }}")
            ),
            bastion(
                "bb",
                &format!(
                    "sentry = {{ node-id = \"{id}\", target = \"10.0.1.5:26656\", listen = \"127.0.0.9:26656\" }}"
                )
            ),
            bastion("bc", ""),
        );
        let config = load(dir.path(), &good).unwrap();
        let tunnels = config.tunnels.unwrap();
        let sentries: Vec<(&str, String, String)> = tunnels
            .sentries()
            .map(|(name, s)| (name, s.node_id.clone(), s.listen.to_string()))
            .collect();
        let lower = id.to_ascii_lowercase();
        assert_eq!(
            sentries,
            [
                ("ba", lower.clone(), "127.0.0.2:26756".to_string()),
                ("bb", lower, "127.0.0.9:26656".to_string()),
            ]
        );
        // The sentry's forward is a local forward like any other.
        let forward = &tunnels.bastions[0].local_forwards[0];
        assert_eq!(forward.listen.to_string(), "127.0.0.2:26756");
        assert_eq!(
            (forward.target_host.as_str(), forward.target_port),
            ("10.0.0.5", 26656)
        );
        assert!(tunnels.bastions[2].sentry.is_none());

        for (sentry, words) in [
            (
                "sentry = { target = \"10.0.0.5:26656\" }",
                "`bastion[1].sentry.node-id`: is required",
            ),
            (
                "sentry = { node-id = \"abc\", target = \"10.0.0.5:26656\" }",
                "is not a CometBFT node ID",
            ),
            (
                &format!("sentry = {{ node-id = \"{id}\" }}"),
                "`bastion[1].sentry.target`: is required",
            ),
            (
                &format!(
                    "sentry = {{ node-id = \"{id}\", target = \"10.0.0.5:26656\", listen = \"0.0.0.0:26756\" }}"
                ),
                "must be a loopback address",
            ),
            (
                &format!(
                    "sentry = {{ node-id = \"{id}\", target = \"10.0.0.5:26656\", listen = \"127.0.0.1:26701\" }}\nlocal-forwards = [{{ listen = \"127.0.0.1:26701\", target = \"10.0.0.6:1\" }}]"
                ),
                "listen address 127.0.0.1:26701 is used twice",
            ),
            (
                &format!(
                    "sentry = {{ node-id = \"{id}\", target = \"10.0.0.5:26656\", port = 1 }}"
                ),
                "unknown field `port`",
            ),
        ] {
            let text = format!("[tunnel]\nkey-file = {key:?}\n{}", bastion("ba", sentry));
            let error = load(dir.path(), &text).unwrap_err().to_string();
            assert!(error.contains(words), "{sentry}: {error}");
        }
    }

    #[test]
    fn bastions_are_validated_into_tunnel_configs() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("tunnel_ed25519");
        std::fs::write(&key, "not parsed at load time").unwrap();
        let config = load(
            dir.path(),
            &format!(
                "[vault]\nswap = \"warn\"\n[rpc]\nname = \"val-a\"\n\
                 [tunnel]\nkey-file = {key:?}\nkeepalive-interval = \"2s\"\n\
                 [[bastion]]\nname = \"b1\"\nhost = \"203.0.113.10\"\nuser = \"palisade-tunnel\"\n\
                 host-key-fingerprints = [\"{FINGERPRINT}\"]\n\
                 rpc-socket = \"/run/palisade-bastion/val-a.sock\"\n\
                 backup-command = \"palisade-bastion backup-session\"\n\
                 local-forwards = [{{ listen = \"127.0.0.1:26701\", target = \"10.0.0.5:26656\" }}]\n\
                 remote-forwards = [{{ listen = \"127.0.0.1:26660\", target = \"127.0.0.1:26660\" }}]\n"
            ),
        )
        .unwrap();
        assert_eq!(config.rpc.name, "val-a");
        assert_eq!(
            config.rpc.socket,
            dir.path().join("palisade/run/supervisor.sock")
        );
        let tunnels = config.tunnels.unwrap();
        assert_eq!(
            tunnels.keepalive_interval,
            std::time::Duration::from_secs(2)
        );
        let bastion = &tunnels.bastions[0];
        assert_eq!(bastion.port, 22);
        let tunnel = tunnels.bastion_config(bastion, &config.rpc.socket);
        assert_eq!(tunnel.reverse_unix_forwards.len(), 1);
        assert_eq!(
            tunnel.reverse_unix_forwards[0].local_socket_path,
            dir.path()
                .join(format!("palisade/run/supervisor.sock.via-{}", bastion.name))
        );
        assert_eq!(tunnel.local_tcp_forwards[0].target_host, "10.0.0.5");
        assert_eq!(tunnel.local_tcp_forwards[0].target_port, 26656);
        assert_eq!(tunnel.reverse_tcp_forwards[0].remote_port, 26660);
        assert_eq!(tunnel.backoff.max, std::time::Duration::from_millis(1500));
        assert_eq!(
            tunnel.backoff.probe_interval,
            std::time::Duration::from_millis(100)
        );
        assert_eq!(tunnel.ciphers, palisade_ssh::ciphers::default_order());
    }

    #[test]
    fn every_bad_bastion_value_is_reported_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("tunnel_ed25519");
        std::fs::write(&key, "x").unwrap();
        let good = format!(
            "[tunnel]\nkey-file = {key:?}\n[[bastion]]\nname = \"b1\"\nhost = \"h\"\nuser = \"u\"\n\
             host-key-fingerprints = [\"{FINGERPRINT}\"]\n"
        );
        assert!(load(dir.path(), &good).is_ok());
        // (extra TOML after a valid base or a whole config, expected message)
        let cases: Vec<(String, &str)> = vec![
            (
                "[[bastion]]\nname = \"b1\"\nhost = \"h\"\nuser = \"u\"\n".into(),
                "key `tunnel.key-file`: is required with [[bastion]]",
            ),
            (
                format!(
                    "{good}[[bastion]]\nname = \"b1\"\nhost = \"h2\"\nuser = \"u\"\nhost-key-fingerprints = [\"{FINGERPRINT}\"]\n"
                ),
                "key `bastion[2].name`: 'b1' is used by another [[bastion]]",
            ),
            (
                format!(
                    "[tunnel]\nkey-file = {key:?}\n[[bastion]]\nname = \"b1\"\nhost = \"h\"\nuser = \"u\"\n"
                ),
                "key `bastion[1].host-key-fingerprints`: no host key to pin",
            ),
            (
                format!(
                    "[tunnel]\nkey-file = {key:?}\n[[bastion]]\nname = \"b1\"\nhost = \"h\"\nuser = \"u\"\nhost-key-fingerprints = [\"MD5:aa\"]\n"
                ),
                "is not of the form SHA256:<base64>",
            ),
            (
                format!(
                    "[tunnel]\nkey-file = {key:?}\ntrust-first-use = true\n[[bastion]]\nname = \"b1\"\nhost = \"h\"\nuser = \"u\"\nhost-key-fingerprints = [\"{FINGERPRINT}\"]\n"
                ),
                "key `tunnel.trust-first-use`: needs tunnel.known-hosts",
            ),
            (
                format!(
                    "{good}local-forwards = [{{ listen = \"0.0.0.0:26656\", target = \"10.0.0.5:26656\" }}]\n"
                ),
                "must be a loopback address",
            ),
            (
                format!(
                    "{good}local-forwards = [{{ listen = \"127.0.0.1:0\", target = \"10.0.0.5:26656\" }}]\n"
                ),
                "port 0 is not allowed",
            ),
            (
                format!(
                    "{good}local-forwards = [{{ listen = \"127.0.0.1:26656\", target = \"sentry\" }}]\n"
                ),
                "key `bastion[1].local-forwards[1]`: target: 'sentry' must be host:port",
            ),
            (
                format!("{good}local-forwards = [{{ listen = \"127.0.0.1:26656\" }}]\n"),
                "target is required",
            ),
            (
                format!(
                    "{good}remote-forwards = [{{ listen = \"127.0.0.1:26660\", target = \"localhost:26660\" }}]\n"
                ),
                "must be a local IP address and port",
            ),
            (
                format!("{good}rpc-socket = \"relative.sock\"\n"),
                "key `bastion[1].rpc-socket`: 'relative.sock' must be an absolute path",
            ),
            (
                format!("{good}rpc-socket = \"/{}\"\n", "x".repeat(120)),
                "Unix socket paths are limited to 107",
            ),
            (
                format!("{good}backup-command = \"\"\n"),
                "must be a one-line command",
            ),
            (
                format!("{good}backup-command = \"palisade-bastion backup-session\"\n"),
                "backups to bastions need the vault's signing key",
            ),
            (format!("{good}portt = 22\n"), "unknown field `portt`"),
            (
                good.replace("[tunnel]\n", "[tunnel]\nprobe-interval = \"1ms\"\n"),
                "key `tunnel.probe-interval`: must be at least 10ms",
            ),
            (
                good.replace("[tunnel]\n", "[tunnel]\nprobe-interval = \"1m\"\n"),
                "key `tunnel.probe-interval`: must be at most 10s",
            ),
            (
                good.replace("[tunnel]\n", "[tunnel]\nciphers = [\"aes256-ctr\"]\n"),
                "key `tunnel.ciphers`: \"aes256-ctr\" is not supported",
            ),
            (
                good.replace("[tunnel]\n", "[tunnel]\nciphers = []\n"),
                "key `tunnel.ciphers`: must name at least one cipher",
            ),
            (
                "[tunnel]\nkeepalive-max = 3\n".into(),
                "[tunnel] has no effect without a [[bastion]] table",
            ),
            (
                "[rpc]\nname = \"val a\"\n".into(),
                "key `rpc.name`: \"val a\" may use only ASCII letters",
            ),
            // The rule of palisade_wire::names, as the bastion applies it: a
            // name starting with '-' would read as an option on its command
            // line (`backup-session --validator NAME`).
            (
                "[rpc]\nname = \"-val-a\"\n".into(),
                "key `rpc.name`: \"-val-a\" must not start with '-' or '.'",
            ),
            (
                "[rpc]\nname = \".val-a\"\n".into(),
                "key `rpc.name`: \".val-a\" must not start with '-' or '.'",
            ),
            (
                format!("[rpc]\nname = \"{}\"\n", "v".repeat(65)),
                "is longer than 64 bytes",
            ),
            (
                "[rpc]\ntrusted-uids = [0, 0]\n".into(),
                "key `rpc.trusted-uids`: must list at most 16 uids, each once",
            ),
            ("[rpc]\ntrusted-uids = [-1]\n".into(), "invalid value"),
            (
                format!(
                    "[tunnel]\nkey-file = {:?}\n[[bastion]]\nname = \"-b1\"\nhost = \"h\"\nuser = \"u\"\nhost-key-fingerprints = [\"{FINGERPRINT}\"]\n",
                    dir.path().join("missing")
                ),
                "key `bastion[1].name`: \"-b1\" must not start with '-' or '.'",
            ),
            (
                format!(
                    "[tunnel]\nkey-file = {:?}\n[[bastion]]\nname = \"b1\"\nhost = \"h\"\nuser = \"u\"\nhost-key-fingerprints = [\"{FINGERPRINT}\"]\n",
                    dir.path().join("missing")
                ),
                "does not exist (create it with ssh-keygen",
            ),
        ];
        for (text, expected) in cases {
            let error = load(dir.path(), &text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text}\n→ {error}");
        }
    }
}
