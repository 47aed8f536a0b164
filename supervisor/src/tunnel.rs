//! Outbound SSH tunnels from the validator host to its bastions.
//!
//! The validator host has no public address; it dials every bastion's stock
//! OpenSSH sshd and keeps the connection up (see DESIGN.md "Topology"):
//! local TCP forwards reach the sentries' P2P ports and a reverse Unix-socket
//! forward publishes the supervisor's RPC socket on the bastion.
//!
//! Invariants:
//! - host keys are checked by [`HostKeyPolicy`]; no code path accepts an
//!   arbitrary key (STYLE.md item 10);
//! - every task spawned for a connection stops when that connection dies or
//!   the caller's shutdown token is cancelled, so a reconnect never stacks
//!   stale forwards and shutdown leaks no sockets.

mod connection;
mod mesh;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use connection::{
    BastionConnection, BastionObserver, BastionState, BastionTunnel, DialTarget, ReconnectBackoff,
    run_bastion,
};
pub use mesh::TunnelMesh;
pub(crate) use palisade_ssh::host_key::known_hosts_name;
pub use palisade_ssh::host_key::{
    FirstUse, HostKeyError, HostKeyPolicy, fingerprint, parse_fingerprint,
};

/// Which kind of forward sshd refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardKind {
    /// `streamlocal-forward@openssh.com`: a Unix socket on the bastion
    /// forwarded back to this host.
    ReverseUnixSocket,
    /// `direct-tcpip`: a connection from this host to a TCP target reached
    /// from the bastion.
    LocalTcp,
    /// `tcpip-forward`: a TCP listener on the bastion forwarded back to
    /// this host.
    ReverseTcp,
    /// `direct-streamlocal@openssh.com`: a connection from this host to a
    /// Unix socket on the bastion.
    LocalUnixSocket,
    /// A session channel running a command (the backup store's forced
    /// command).
    Exec,
}

impl std::fmt::Display for ForwardKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ForwardKind::ReverseUnixSocket => "reverse Unix-socket forward",
            ForwardKind::LocalTcp => "local TCP forward (direct-tcpip)",
            ForwardKind::ReverseTcp => "reverse TCP forward (tcpip-forward)",
            ForwardKind::LocalUnixSocket => {
                "connection to a bastion Unix socket (direct-streamlocal)"
            }
            ForwardKind::Exec => "session command",
        })
    }
}

/// A Unix socket on the bastion whose connections come back to a local one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReverseUnixForward {
    /// Path sshd listens on, on the bastion.
    pub remote_socket_path: String,
    /// Local socket each forwarded connection is connected to.
    pub local_socket_path: PathBuf,
}

/// A TCP listener on the bastion whose connections come back to a local
/// TCP address (e.g. a Prometheus scrape of the validator's metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReverseTcpForward {
    /// Address sshd binds on the bastion (`127.0.0.1` keeps it private to
    /// the bastion); subject to sshd's `GatewayPorts` and `permitlisten`.
    pub remote_address: String,
    /// Port sshd binds; never 0, so the address is stable across reconnects.
    pub remote_port: u16,
    /// Local address each forwarded connection is connected to.
    pub local_target: std::net::SocketAddr,
}

/// A local TCP listener whose connections are carried to `target_host:target_port`
/// as seen from the bastion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalTcpForward {
    /// Where to listen locally; port 0 picks a free port, reported by
    /// [`BastionTunnel::local_tcp_addrs`].
    pub listen: std::net::SocketAddr,
    pub target_host: String,
    pub target_port: u16,
}

/// Everything needed to keep one bastion connection up.
#[derive(Debug, Clone)]
pub struct BastionConfig {
    /// Stable name for logs and state (e.g. `bastion-1`).
    pub name: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    /// ed25519 private key in OpenSSH format, without passphrase (the key
    /// lives on tmpfs like the validator's other keys).
    pub private_key_path: PathBuf,
    pub host_key_policy: HostKeyPolicy,
    /// Bound on TCP connect plus SSH handshake and authentication.
    pub connect_timeout: Duration,
    /// Silence after which a keepalive is sent; `keepalive_max` unanswered
    /// keepalives declare the peer dead, so a vanished bastion is noticed
    /// within about `interval * (max + 1)` rather than at the TCP timeout.
    pub keepalive_interval: Duration,
    pub keepalive_max: usize,
    pub reverse_unix_forwards: Vec<ReverseUnixForward>,
    pub reverse_tcp_forwards: Vec<ReverseTcpForward>,
    pub local_tcp_forwards: Vec<LocalTcpForward>,
    pub backoff: ReconnectBackoff,
    /// The ciphers offered, most preferred first
    /// ([`palisade_ssh::ciphers::default_order`] unless configured).
    pub ciphers: Vec<russh::cipher::Name>,
    /// Dialed instead of `host` when set (host keys are still looked up
    /// for `host`).
    pub dial: DialAddress,
}

/// The address a tunnel dials instead of its configured `host`: the
/// bastion's public address after an Elastic IP rotation (`crate::eip`).
/// Shared by the tunnel's connections (read at each attempt), its observer
/// and the rotation. The host key stays pinned to the bastion's configured
/// name: a hijacked address cannot impersonate it.
#[derive(Clone, Debug, Default)]
pub struct DialAddress(Arc<std::sync::RwLock<Option<String>>>);

impl DialAddress {
    /// The override, if one is set.
    pub fn get(&self) -> Option<String> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Dial `address` from the next attempt on (`None`: the configured host).
    pub fn set(&self, address: Option<String>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = address;
    }
}

impl BastionConfig {
    /// A config with the defaults for timeouts, keepalive and backoff.
    pub fn new(
        name: impl Into<String>,
        host: impl Into<String>,
        port: u16,
        user: impl Into<String>,
        private_key_path: impl Into<PathBuf>,
        host_key_policy: HostKeyPolicy,
    ) -> BastionConfig {
        BastionConfig {
            name: name.into(),
            host: host.into(),
            port,
            user: user.into(),
            private_key_path: private_key_path.into(),
            host_key_policy,
            connect_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(10),
            keepalive_max: 3,
            reverse_unix_forwards: Vec::new(),
            reverse_tcp_forwards: Vec::new(),
            local_tcp_forwards: Vec::new(),
            backoff: ReconnectBackoff::default(),
            ciphers: palisade_ssh::ciphers::default_order(),
            dial: DialAddress::default(),
        }
    }
}

/// Why a tunnel could not be set up or kept up.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// The host key is not the pinned one (unknown, changed, revoked), or
    /// the pins or known_hosts file are unusable.
    #[error(transparent)]
    HostKey(#[from] HostKeyError),
    /// The server presented a certificate; only plain pinned keys are trusted.
    #[error("{host} presented a host certificate; only pinned plain host keys are accepted")]
    HostCertificateNotSupported { host: String },
    /// The client's private key could not be loaded.
    #[error("private key {}: {source}", path.display())]
    PrivateKey {
        path: PathBuf,
        source: russh::keys::Error,
    },
    /// The TCP connection to the bastion failed.
    #[error("connecting to {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    /// TCP connect, handshake and authentication did not finish in time.
    #[error("connecting to {address}: timed out after {timeout:?}")]
    ConnectTimeout { address: String, timeout: Duration },
    /// sshd did not accept the public key for this user.
    #[error("{host} rejected public-key authentication for user {user}")]
    AuthenticationRejected { host: String, user: String },
    /// sshd refused a forward (authorized_keys `permitopen`/`restrict`, or
    /// sshd_config `AllowTcpForwarding`/`AllowStreamLocalForwarding`).
    #[error("bastion refused {kind} to {target}: {reason}")]
    ForwardRefused {
        kind: ForwardKind,
        target: String,
        reason: String,
    },
    /// A local listener for a TCP forward could not be bound.
    #[error("listening on {address} for a local forward: {source}")]
    LocalListen {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
    /// The SSH connection is closed.
    #[error("connection to the bastion is closed")]
    Closed,
    /// No connection to this bastion right now (it is reconnecting).
    #[error("bastion {bastion} is not connected{}", last_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default())]
    NotConnected {
        bastion: String,
        last_error: Option<String>,
    },
    /// Any other SSH protocol or transport error.
    #[error("ssh: {0}")]
    Ssh(#[from] russh::Error),
}

impl TunnelError {
    /// Errors that retrying cannot fix without an operator: wrong keys or
    /// identity. The supervisor loop stops on these instead of hammering.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            TunnelError::HostKey(_)
                | TunnelError::HostCertificateNotSupported { .. }
                | TunnelError::PrivateKey { .. }
                | TunnelError::AuthenticationRejected { .. }
        )
    }
}
