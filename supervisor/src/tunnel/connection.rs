//! One SSH connection to a bastion, its forwards, and the loop that keeps it
//! up across bastion restarts and network failures.
//!
//! Ownership: every byte-pumping task is tied to the connection's `live`
//! token, which is cancelled when the connection ends (for any reason) or is
//! dropped; the session task owns a drop guard of the `closed` token, so the
//! supervisor loop learns of a dead connection as an event, not by polling.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use palisade_ssh::dial::{Credential, LoginError};
use russh::client::{self, Msg};
use russh::keys::{PublicKeyOrCertificate, load_secret_key};
use russh::{Channel, ChannelOpenFailure};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{BastionConfig, ForwardKind, HostKeyPolicy, LocalTcpForward, TunnelError};
use crate::backup::{BoxedStream, StreamDialer};

/// What an operator (or `palisade-ctl status`) sees of one bastion link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BastionState {
    /// Set while connected and forwards are up; `None` while down.
    pub connected_since: Option<SystemTime>,
    /// Why the last connection attempt failed or the last connection ended.
    pub last_error: Option<String>,
    /// The last forwarded connection that could not be set up (e.g. a
    /// direct-tcpip target outside `permitopen`); the link itself stays up.
    pub last_forward_error: Option<String>,
    /// Bytes carried towards / from the bastion through forwarded
    /// connections; live in [`BastionTunnel::snapshot`], zero in the watch.
    pub bytes_to_bastion: u64,
    pub bytes_from_bastion: u64,
    /// Successful connections after the first, of every connection to the
    /// bastion (the main one and each forward's own) together.
    pub reconnects: u32,
    /// The supervisor loop has ended (shutdown or a fatal error).
    pub stopped: bool,
    /// The last measured round trip of the main connection: an SSH
    /// `keepalive@openssh.com` request and its reply, one every keepalive
    /// interval ([`probe_round_trips`]). A request not answered within the
    /// interval is recorded as that interval (at least that slow). `None`
    /// while down and before the first measurement.
    pub round_trip: Option<Duration>,
}

/// The pauses between connection attempts.
///
/// Two cadences. While the bastion does not accept TCP (refused,
/// unreachable, no answer within [`PROBE_TIMEOUT`]), each attempt is a TCP
/// connect alone, one every `probe_interval` (jittered by ±50 %): cheap for
/// the bastion (a SYN), and the tunnel is back within about one interval
/// once sshd accepts again. Only a connection that was accepted goes on to
/// the SSH handshake, one at a time per bastion; when that fails (sshd
/// refusing, a handshake or login error, a stall), the next attempt waits
/// the exponential backoff from `initial` to `max`, so a sick sshd is not
/// hammered with handshakes (and `MaxStartups` is never reached by us).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconnectBackoff {
    pub initial: Duration,
    pub max: Duration,
    /// Between two TCP probes of a bastion that does not accept.
    pub probe_interval: Duration,
}

/// Bound on one TCP probe (the connect alone). A SYN that got no answer by
/// then is given up and a fresh probe follows: with the kernel's own SYN
/// retransmissions at 1 s and 3 s, a link that returns would otherwise be
/// noticed late.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// `TCP_NOTSENT_LOWAT` of every SSH connection: at most this many bytes
/// wait unsent in the kernel; beyond it the tunnel holds them, in bounded
/// buffers. A few milliseconds on a 50 Mbit/s uplink, and no throughput
/// cost: it does not limit the bytes in flight.
pub const UNSENT_LIMIT: u32 = 16 * 1024;

impl Default for ReconnectBackoff {
    fn default() -> ReconnectBackoff {
        ReconnectBackoff {
            initial: Duration::from_millis(200),
            // Low on purpose: a bastion whose sshd misbehaves is tried
            // again within `max`.
            max: Duration::from_millis(1500),
            // Heal target: traffic again within 0.25 s of the bastion
            // accepting TCP (issue 17; `palisade-bench --only tunnel_heal`).
            probe_interval: Duration::from_millis(100),
        }
    }
}

impl ReconnectBackoff {
    /// Delay before the next TCP probe, `jitter` in `[0, 1)`: between half
    /// and one and a half `probe_interval`.
    pub fn probe_delay(&self, jitter: f64) -> Duration {
        let half = self.probe_interval / 2;
        half + self.probe_interval.mul_f64(jitter.clamp(0.0, 1.0))
    }

    /// Delay before attempt `failures + 1`, with "equal jitter" as in
    /// `restart_policy`: half fixed, half random, so validators that lost
    /// the same bastion do not reconnect in lockstep. `jitter` is in `[0, 1)`.
    pub fn delay(&self, failures: u32, jitter: f64) -> Duration {
        let exponent = failures.saturating_sub(1).min(30);
        let nominal = self.initial.saturating_mul(1u32 << exponent).min(self.max);
        let half = nominal / 2;
        half + half.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

type SharedState = Arc<StateCell>;

/// The state watch plus live byte counters (a watch update per read would
/// be too costly; the counters are merged in by [`BastionTunnel::snapshot`]).
struct StateCell {
    sender: watch::Sender<BastionState>,
    to_bastion: AtomicU64,
    from_bastion: AtomicU64,
    /// An operator asked for a new connection now (`tunnel.reconnect`).
    reconnect: tokio::sync::Notify,
}

impl StateCell {
    fn new(sender: watch::Sender<BastionState>) -> SharedState {
        Arc::new(StateCell {
            sender,
            to_bastion: AtomicU64::new(0),
            from_bastion: AtomicU64::new(0),
            reconnect: tokio::sync::Notify::new(),
        })
    }
}

impl std::ops::Deref for StateCell {
    type Target = watch::Sender<BastionState>;

    fn deref(&self) -> &Self::Target {
        &self.sender
    }
}

/// A forwarded connection's local end, counting bytes as they pass: reads
/// go to the bastion, writes come from it.
struct Counted<S> {
    inner: S,
    state: SharedState,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.state
                .to_bastion
                .fetch_add(read as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_write(cx, data);
        if let std::task::Poll::Ready(Ok(written)) = &polled {
            self.state
                .from_bastion
                .fetch_add(*written as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// While a bastion stays unreachable, how often that is logged again.
const STILL_DOWN_REPORT: Duration = Duration::from_secs(60);

/// Bound on connecting a forwarded channel to its local target.
const LOCAL_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

struct BastionHandler {
    host: String,
    port: u16,
    policy: HostKeyPolicy,
    /// Remote socket path → local socket path.
    reverse: Arc<HashMap<String, PathBuf>>,
    /// Remote listen port → local TCP target.
    reverse_tcp: Arc<HashMap<u16, SocketAddr>>,
    live: CancellationToken,
    state: SharedState,
    disconnect_reason: Arc<Mutex<Option<String>>>,
    /// Cancels `closed` when the session task ends and drops the handler.
    _closed_on_drop: DropGuard,
}

impl client::Handler for BastionHandler {
    type Error = TunnelError;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, TunnelError> {
        match server_public_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                self.policy.check(&self.host, self.port, key)?;
                Ok(true)
            }
            PublicKeyOrCertificate::Certificate(_) => {
                Err(TunnelError::HostCertificateNotSupported {
                    host: super::known_hosts_name(&self.host, self.port),
                })
            }
        }
    }

    async fn server_channel_open_forwarded_streamlocal(
        &mut self,
        channel: Channel<Msg>,
        socket_path: &str,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), TunnelError> {
        let Some(local_path) = self.reverse.get(socket_path).cloned() else {
            tracing::warn!(
                socket_path,
                "bastion opened a channel for a socket we never forwarded"
            );
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        let live = self.live.clone();
        let state = self.state.clone();
        tokio::spawn(async move {
            let connected = tokio::select! {
                _ = live.cancelled() => return,
                connected = UnixStream::connect(&local_path) => connected,
            };
            match connected {
                Ok(local) => {
                    reply.accept().await;
                    pump(local, channel, live, state).await;
                }
                Err(error) => {
                    tracing::warn!(
                        local_socket = %local_path.display(),
                        %error,
                        "reverse-forwarded connection: local socket unreachable"
                    );
                    reply.reject(ChannelOpenFailure::ConnectFailed).await;
                }
            }
        });
        Ok(())
    }

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: Channel<Msg>,
        connected_address: &str,
        connected_port: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), TunnelError> {
        let target = u16::try_from(connected_port)
            .ok()
            .and_then(|port| self.reverse_tcp.get(&port).copied());
        let Some(target) = target else {
            tracing::warn!(
                connected_address,
                connected_port,
                "bastion opened a channel for a TCP port we never forwarded"
            );
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        let live = self.live.clone();
        let state = self.state.clone();
        tokio::spawn(async move {
            let connected = tokio::select! {
                _ = live.cancelled() => return,
                connected = tokio::time::timeout(LOCAL_CONNECT_TIMEOUT, TcpStream::connect(target)) => connected,
            };
            match connected {
                Ok(Ok(local)) => {
                    local.set_nodelay(true).ok();
                    reply.accept().await;
                    pump(local, channel, live, state).await;
                }
                Ok(Err(error)) => {
                    tracing::warn!(%target, %error, "reverse-forwarded TCP connection: local target unreachable");
                    reply.reject(ChannelOpenFailure::ConnectFailed).await;
                }
                Err(_) => {
                    tracing::warn!(%target, "reverse-forwarded TCP connection: local target did not answer");
                    reply.reject(ChannelOpenFailure::ConnectFailed).await;
                }
            }
        });
        Ok(())
    }

    async fn disconnected(
        &mut self,
        reason: client::DisconnectReason<TunnelError>,
    ) -> Result<(), TunnelError> {
        let text = match &reason {
            client::DisconnectReason::ReceivedDisconnect(info) => {
                format!(
                    "bastion disconnected: {:?} {}",
                    info.reason_code, info.message
                )
            }
            client::DisconnectReason::Error(error) => format!("connection lost: {error}"),
        };
        *lock(&self.disconnect_reason) = Some(text);
        match reason {
            client::DisconnectReason::ReceivedDisconnect(_) => Ok(()),
            client::DisconnectReason::Error(error) => Err(error),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Copy buffer of a forwarded connection, each way: one read becomes one
/// SSH data message (up to the server's 32 KiB maximum packet), so a
/// larger buffer means fewer packets, fewer channel messages and fewer
/// syscalls per byte than tokio's default 8 KiB.
const FORWARD_BUFFER: usize = 32 * 1024;

/// Carry bytes both ways until either side closes or the connection dies.
async fn pump(
    local: impl AsyncRead + AsyncWrite + Unpin,
    channel: Channel<Msg>,
    live: CancellationToken,
    state: SharedState,
) {
    let mut local = Counted {
        inner: local,
        state,
    };
    let mut remote = channel.into_stream();
    tokio::select! {
        _ = live.cancelled() => {}
        result = tokio::io::copy_bidirectional_with_sizes(&mut local, &mut remote, FORWARD_BUFFER, FORWARD_BUFFER) => {
            if let Err(error) = result {
                tracing::debug!(%error, "forwarded connection ended with an error");
            }
        }
    }
}

/// An authenticated SSH connection to one bastion.
pub struct BastionConnection {
    handle: client::Handle<BastionHandler>,
    host: String,
    /// Cancelled when this connection is done: stops its pumps.
    live: CancellationToken,
    /// Cancelled when the SSH session task has ended.
    closed: CancellationToken,
    disconnect_reason: Arc<Mutex<Option<String>>>,
}

impl Drop for BastionConnection {
    fn drop(&mut self) {
        self.live.cancel();
    }
}

impl BastionConnection {
    /// Connect and authenticate; no forwards yet.
    pub async fn connect(config: &BastionConfig) -> Result<BastionConnection, TunnelError> {
        let state = StateCell::new(watch::channel(BastionState::default()).0);
        BastionConnection::connect_with(config, &CancellationToken::new(), state).await
    }

    async fn connect_with(
        config: &BastionConfig,
        parent: &CancellationToken,
        state: SharedState,
    ) -> Result<BastionConnection, TunnelError> {
        // After an Elastic IP rotation the bastion answers on a new address;
        // its host key is still looked up for the configured host.
        let dial_host = config.dial.get().unwrap_or_else(|| config.host.clone());
        let address = format!("{dial_host}:{}", config.port);
        let key = load_secret_key(&config.private_key_path, None).map_err(|source| {
            TunnelError::PrivateKey {
                path: config.private_key_path.clone(),
                source,
            }
        })?;
        let ssh_config = Arc::new(client::Config {
            keepalive_interval: Some(config.keepalive_interval),
            keepalive_max: config.keepalive_max,
            nodelay: true,
            preferred: palisade_ssh::ciphers::preferred(&config.ciphers),
            ..client::Config::default()
        });
        // The probe: a TCP connection alone. Nothing more is sent to a
        // bastion that does not accept one (see `ReconnectBackoff`).
        let started = tokio::time::Instant::now();
        let stream = palisade_ssh::dial::connect_tcp(
            &dial_host,
            config.port,
            PROBE_TIMEOUT.min(config.connect_timeout),
        )
        .await
        .map_err(|source| TunnelError::Connect {
            address: address.clone(),
            source,
        })?;
        if let Err(error) = crate::sys::set_tcp_notsent_lowat(&stream, UNSENT_LIMIT) {
            tracing::warn!(bastion = %config.name, %error, "cannot limit the connection's unsent bytes (TCP_NOTSENT_LOWAT); votes may queue behind bulk");
        }
        let live = parent.child_token();
        let closed = CancellationToken::new();
        let disconnect_reason = Arc::new(Mutex::new(None));
        let handler = BastionHandler {
            host: config.host.clone(),
            port: config.port,
            policy: config.host_key_policy.clone(),
            reverse: Arc::new(
                config
                    .reverse_unix_forwards
                    .iter()
                    .map(|forward| {
                        (
                            forward.remote_socket_path.clone(),
                            forward.local_socket_path.clone(),
                        )
                    })
                    .collect(),
            ),
            reverse_tcp: Arc::new(
                config
                    .reverse_tcp_forwards
                    .iter()
                    .map(|forward| (forward.remote_port, forward.local_target))
                    .collect(),
            ),
            live: live.clone(),
            state,
            disconnect_reason: disconnect_reason.clone(),
            _closed_on_drop: closed.clone().drop_guard(),
        };
        let attempt = palisade_ssh::dial::login_over(
            stream,
            &config.user,
            Credential::Key(Box::new(key)),
            ssh_config,
            handler,
            config.connect_timeout.saturating_sub(started.elapsed()),
        )
        .await;
        let handle = attempt.map_err(|error| match error {
            LoginError::Connect(source) => TunnelError::Connect {
                address: address.clone(),
                source,
            },
            LoginError::Timeout => TunnelError::ConnectTimeout {
                address: address.clone(),
                timeout: config.connect_timeout,
            },
            LoginError::Rejected => TunnelError::AuthenticationRejected {
                host: address.clone(),
                user: config.user.clone(),
            },
            LoginError::Ssh(error) => error,
            // Only for Credential::Agent, which the tunnels never use.
            LoginError::Agent(error) => {
                TunnelError::Ssh(russh::Error::IO(std::io::Error::other(error.to_string())))
            }
        })?;
        Ok(BastionConnection {
            handle,
            host: address,
            live,
            closed,
            disconnect_reason,
        })
    }

    /// Ask sshd to listen on `remote_socket_path`; connections to it arrive
    /// as channels routed to the local socket configured for that path.
    pub async fn forward_reverse_unix(&self, remote_socket_path: &str) -> Result<(), TunnelError> {
        self.handle
            .streamlocal_forward(remote_socket_path)
            .await
            .map_err(|error| match error {
                russh::Error::RequestDenied => TunnelError::ForwardRefused {
                    kind: ForwardKind::ReverseUnixSocket,
                    target: format!("{}:{remote_socket_path}", self.host),
                    reason: "request denied by sshd (AllowStreamLocalForwarding, \
                             authorized_keys restrict/port-forwarding)"
                        .into(),
                },
                other => TunnelError::Ssh(other),
            })
    }

    /// Ask sshd to listen on `remote_address:remote_port` on the bastion;
    /// connections arrive as channels routed to the configured local target.
    pub async fn forward_reverse_tcp(
        &self,
        remote_address: &str,
        remote_port: u16,
    ) -> Result<(), TunnelError> {
        let refused = |reason: String| TunnelError::ForwardRefused {
            kind: ForwardKind::ReverseTcp,
            target: format!("{}:{remote_address}:{remote_port}", self.host),
            reason,
        };
        match self
            .handle
            .tcpip_forward(remote_address, u32::from(remote_port))
            .await
        {
            Ok(_) => Ok(()),
            Err(russh::Error::RequestDenied) => Err(refused(
                "request denied by sshd (authorized_keys permitlisten/restrict, \
                 AllowTcpForwarding, or the port is in use on the bastion)"
                    .into(),
            )),
            Err(other) => Err(TunnelError::Ssh(other)),
        }
    }

    /// Open a `direct-streamlocal@openssh.com` channel to the Unix socket
    /// `socket_path` on the bastion.
    pub async fn open_direct_streamlocal(
        &self,
        socket_path: &str,
    ) -> Result<Channel<Msg>, TunnelError> {
        self.handle
            .channel_open_direct_streamlocal(socket_path)
            .await
            .map_err(|error| match error {
                russh::Error::ChannelOpenFailure(reason) => TunnelError::ForwardRefused {
                    kind: ForwardKind::LocalUnixSocket,
                    target: format!("{}:{socket_path}", self.host),
                    reason: match reason {
                        ChannelOpenFailure::AdministrativelyProhibited => {
                            "administratively prohibited (AllowStreamLocalForwarding, \
                             authorized_keys restrict/port-forwarding)"
                                .to_string()
                        }
                        ChannelOpenFailure::ConnectFailed => {
                            "nothing listens on that socket on the bastion".to_string()
                        }
                        other => format!("{other:?}"),
                    },
                },
                other => TunnelError::Ssh(other),
            })
    }

    /// Open a session channel and run `command` on the bastion (with the
    /// validator's key confined by `command=` in authorized_keys, sshd runs
    /// the forced command instead); its stdin/stdout become the channel.
    pub async fn open_exec(&self, command: &str) -> Result<Channel<Msg>, TunnelError> {
        let refused = |reason: String| TunnelError::ForwardRefused {
            kind: ForwardKind::Exec,
            target: format!("{}: {command}", self.host),
            reason,
        };
        let mut channel =
            self.handle
                .channel_open_session()
                .await
                .map_err(|error| match error {
                    russh::Error::ChannelOpenFailure(reason) => {
                        refused(format!("session refused: {reason:?}"))
                    }
                    other => TunnelError::Ssh(other),
                })?;
        channel.exec(true, command).await?;
        let reply = tokio::time::timeout(LOCAL_CONNECT_TIMEOUT, async {
            loop {
                match channel.wait().await {
                    Some(russh::ChannelMsg::Success) => return Ok(()),
                    Some(russh::ChannelMsg::Failure) => {
                        return Err(refused("sshd refused to run it".into()));
                    }
                    Some(russh::ChannelMsg::Close | russh::ChannelMsg::Eof) | None => {
                        return Err(refused(
                            "the channel closed before the command started".into(),
                        ));
                    }
                    Some(_) => continue,
                }
            }
        })
        .await;
        match reply {
            Ok(Ok(())) => Ok(channel),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(refused(format!(
                "no answer to the exec request within {LOCAL_CONNECT_TIMEOUT:?}"
            ))),
        }
    }

    /// Open a `direct-tcpip` channel to `target_host:target_port` as seen
    /// from the bastion.
    pub async fn open_direct_tcpip(
        &self,
        target_host: &str,
        target_port: u16,
        originator: SocketAddr,
    ) -> Result<Channel<Msg>, TunnelError> {
        self.handle
            .channel_open_direct_tcpip(
                target_host,
                u32::from(target_port),
                originator.ip().to_string(),
                u32::from(originator.port()),
            )
            .await
            .map_err(|error| match error {
                russh::Error::ChannelOpenFailure(reason) => TunnelError::ForwardRefused {
                    kind: ForwardKind::LocalTcp,
                    target: format!("{target_host}:{target_port}"),
                    reason: match reason {
                        ChannelOpenFailure::AdministrativelyProhibited => {
                            "administratively prohibited (not in authorized_keys permitopen, \
                             or AllowTcpForwarding off)"
                                .to_string()
                        }
                        ChannelOpenFailure::ConnectFailed => {
                            "the bastion could not connect to the target".to_string()
                        }
                        other => format!("{other:?}"),
                    },
                },
                other => TunnelError::Ssh(other),
            })
    }

    /// Resolves once the SSH session has ended.
    pub async fn closed(&self) {
        self.closed.cancelled().await;
    }

    /// Why the session ended, once it has.
    pub fn disconnect_reason(&self) -> Option<String> {
        lock(&self.disconnect_reason).clone()
    }

    /// Say goodbye to sshd and stop every forwarded connection.
    pub async fn close(&self) {
        self.live.cancel();
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "shutting down", "en")
            .await;
    }
}

/// A running bastion link: the supervisor loop plus its local listeners.
pub struct BastionTunnel {
    name: String,
    dial: crate::tunnel::DialAddress,
    /// The merged state of the main connection and the forwards' own.
    state: watch::Receiver<BastionState>,
    shared: SharedState,
    /// The forwards' connections' cells (their reconnect requests).
    lanes: Vec<SharedState>,
    current: watch::Receiver<Option<Arc<BastionConnection>>>,
    local_tcp_addrs: Vec<SocketAddr>,
    supervisor: JoinHandle<Result<(), TunnelError>>,
    lane_supervisors: Vec<JoinHandle<Result<(), TunnelError>>>,
    listeners: Vec<JoinHandle<()>>,
}

impl BastionTunnel {
    /// Bind the local TCP listeners (so their ports are known and stable
    /// across reconnects) and start the supervisor loop.
    ///
    /// Each local TCP forward gets an SSH connection of its own (a *lane*,
    /// with its own reconnect loop), beside the main connection that
    /// carries the reverse forwards and the sessions (backups, the control
    /// RPC): votes never queue behind a backup or another forward's bulk in
    /// one TCP stream (docs/benchmarks.md, "Votes first"). Every one of
    /// them limits its unsent bytes ([`UNSENT_LIMIT`]). [`BastionTunnel::state`]
    /// merges them: connected when all are.
    pub async fn start(
        config: BastionConfig,
        shutdown: CancellationToken,
    ) -> Result<BastionTunnel, TunnelError> {
        let (main_sender, main_state) = watch::channel(BastionState::default());
        let state_sender = StateCell::new(main_sender);
        let (public_sender, state) = watch::channel(BastionState::default());
        // Stops the listeners also when a loop ends on a fatal error.
        let tunnel_token = shutdown.child_token();
        let (current_sender, current) = watch::channel(None::<Arc<BastionConnection>>);
        let mut local_tcp_addrs = Vec::new();
        let mut listeners = Vec::new();
        let mut lanes = Vec::new();
        let mut lane_states = Vec::new();
        let mut lane_supervisors = Vec::new();
        for forward in &config.local_tcp_forwards {
            let listener = TcpListener::bind(forward.listen).await.map_err(|source| {
                TunnelError::LocalListen {
                    address: forward.listen,
                    source,
                }
            })?;
            let address = listener
                .local_addr()
                .map_err(|source| TunnelError::LocalListen {
                    address: forward.listen,
                    source,
                })?;
            local_tcp_addrs.push(address);
            let (lane_sender, lane_state) = watch::channel(BastionState::default());
            let lane = StateCell::new(lane_sender);
            let (lane_current_sender, lane_current) =
                watch::channel(None::<Arc<BastionConnection>>);
            let lane_config = BastionConfig {
                name: format!(
                    "{} (forward {address} -> {}:{})",
                    config.name, forward.target_host, forward.target_port
                ),
                reverse_unix_forwards: Vec::new(),
                reverse_tcp_forwards: Vec::new(),
                local_tcp_forwards: Vec::new(),
                ..config.clone()
            };
            let token = tunnel_token.clone();
            let cell = lane.clone();
            lane_supervisors.push(tokio::spawn(async move {
                let result = supervise(&lane_config, &token, &cell, &lane_current_sender).await;
                token.cancel();
                result
            }));
            // Byte counters and refused forwards are the bastion's.
            listeners.push(tokio::spawn(serve_local_tcp_forward(
                listener,
                forward.clone(),
                lane_current,
                state_sender.clone(),
                tunnel_token.clone(),
                config.name.clone(),
            )));
            lane_states.push((address, lane_state));
            lanes.push(lane);
        }
        listeners.push(tokio::spawn(merge_states(
            main_state,
            lane_states,
            public_sender,
        )));
        let name = config.name.clone();
        let dial = config.dial.clone();
        let shared = state_sender.clone();
        let supervisor = tokio::spawn(async move {
            let result = supervise(&config, &tunnel_token, &state_sender, &current_sender).await;
            tunnel_token.cancel();
            result
        });
        Ok(BastionTunnel {
            name,
            dial,
            state,
            shared,
            lanes,
            current,
            local_tcp_addrs,
            supervisor,
            lane_supervisors,
            listeners,
        })
    }

    /// Live state; `changed()`/`wait_for` to await transitions.
    pub fn state(&self) -> watch::Receiver<BastionState> {
        self.state.clone()
    }

    /// The state now, with the byte counters up to date (the watch from
    /// [`BastionTunnel::state`] carries transitions, not every byte).
    pub fn snapshot(&self) -> BastionState {
        self.observer().snapshot()
    }

    /// A cheap handle that reads this tunnel's state from elsewhere (the
    /// control RPC), without owning the tunnel.
    pub fn observer(&self) -> BastionObserver {
        BastionObserver {
            name: self.name.clone(),
            dial: self.dial.clone(),
            state: self.state.clone(),
            shared: self.shared.clone(),
            lanes: self.lanes.clone(),
        }
    }

    /// The configured name of this bastion.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Wait until the link is up (forwards established) or its loop has
    /// stopped, at most `timeout`; true when connected.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut state = self.state.clone();
        let waited = tokio::time::timeout(
            timeout,
            state.wait_for(|state| state.connected_since.is_some() || state.stopped),
        )
        .await;
        matches!(waited, Ok(Ok(state)) if state.connected_since.is_some())
    }

    /// Opens `target` on the bastion for each connection (e.g. the backup
    /// store's forced command), over the connection that is up then.
    pub fn dialer(&self, target: DialTarget) -> ChannelDialer {
        ChannelDialer {
            bastion: self.name.clone(),
            target,
            current: self.current.clone(),
            state: self.state.clone(),
        }
    }

    /// Bound addresses of the local TCP forwards, in config order.
    pub fn local_tcp_addrs(&self) -> &[SocketAddr] {
        &self.local_tcp_addrs
    }

    /// Wait until the loop has ended (after shutdown or a fatal error) and
    /// every listener is closed.
    pub async fn stopped(self) -> Result<(), TunnelError> {
        let joined = |outcome: Result<Result<(), TunnelError>, tokio::task::JoinError>| {
            outcome.unwrap_or_else(|join_error| {
                Err(TunnelError::Ssh(russh::Error::IO(std::io::Error::other(
                    join_error.to_string(),
                ))))
            })
        };
        let mut result = joined(self.supervisor.await);
        for lane in self.lane_supervisors {
            let lane = joined(lane.await);
            if result.is_ok() {
                result = lane;
            }
        }
        for listener in self.listeners {
            let _ = listener.await;
        }
        result
    }
}

/// Reads one tunnel's state; see [`BastionTunnel::observer`].
#[derive(Clone)]
pub struct BastionObserver {
    name: String,
    dial: crate::tunnel::DialAddress,
    state: watch::Receiver<BastionState>,
    shared: SharedState,
    lanes: Vec<SharedState>,
}

impl BastionObserver {
    /// The bastion's configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the tunnel dials instead of its configured host (after an
    /// Elastic IP rotation); setting it takes effect at the next attempt.
    pub fn dial(&self) -> &crate::tunnel::DialAddress {
        &self.dial
    }

    /// Drop the current connection (if any) and connect again now, without
    /// waiting out the backoff.
    pub fn request_reconnect(&self) {
        self.shared.reconnect.notify_waiters();
        for lane in &self.lanes {
            lane.reconnect.notify_waiters();
        }
    }

    /// The state now, byte counters included.
    pub fn snapshot(&self) -> BastionState {
        let mut state = self.state.borrow().clone();
        state.bytes_to_bastion = self.shared.to_bastion.load(Ordering::Relaxed);
        state.bytes_from_bastion = self.shared.from_bastion.load(Ordering::Relaxed);
        state
    }
}

/// What a [`ChannelDialer`] opens on the bastion for each connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialTarget {
    /// A session running this command (with `command=` in authorized_keys,
    /// sshd runs the forced command instead): the backup store's
    /// `palisade-bastion backup-session`.
    Exec(String),
    /// `direct-streamlocal` to this Unix socket on the bastion (refused by
    /// OpenSSH for keys with `permitopen`, see docs/bastion-sshd.md).
    UnixSocket(String),
}

/// Opens one channel per connection through a bastion's tunnel, over
/// whatever SSH connection is up at that moment.
#[derive(Clone)]
pub struct ChannelDialer {
    bastion: String,
    target: DialTarget,
    current: watch::Receiver<Option<Arc<BastionConnection>>>,
    state: watch::Receiver<BastionState>,
}

impl std::fmt::Debug for ChannelDialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelDialer")
            .field("bastion", &self.bastion)
            .field("target", &self.target)
            .finish()
    }
}

impl ChannelDialer {
    /// A bidirectional stream to the target; fails at once (no waiting)
    /// while the bastion is down.
    pub async fn dial(&self) -> Result<russh::ChannelStream<Msg>, TunnelError> {
        let Some(connection) = self.current.borrow().clone() else {
            return Err(TunnelError::NotConnected {
                bastion: self.bastion.clone(),
                last_error: self.state.borrow().last_error.clone(),
            });
        };
        let channel = match &self.target {
            DialTarget::Exec(command) => connection.open_exec(command).await?,
            DialTarget::UnixSocket(path) => connection.open_direct_streamlocal(path).await?,
        };
        Ok(channel.into_stream())
    }
}

impl StreamDialer for ChannelDialer {
    fn dial(&self) -> crate::backup::BoxFuture<'_, std::io::Result<BoxedStream>> {
        Box::pin(async move {
            match ChannelDialer::dial(self).await {
                Ok(stream) => Ok(Box::new(stream) as BoxedStream),
                Err(error) => Err(std::io::Error::other(error.to_string())),
            }
        })
    }

    fn describe(&self) -> String {
        match &self.target {
            DialTarget::Exec(_) => format!("{} (session command)", self.bastion),
            DialTarget::UnixSocket(path) => format!("{}:{path}", self.bastion),
        }
    }
}

/// Keep a bastion link up until `shutdown`; returns early only on a fatal
/// error (host key or authentication), which needs an operator.
/// Make sshd turn off Nagle's algorithm on this connection.
///
/// sshd sets `TCP_NODELAY` on a connection only when a session runs a
/// command (OpenSSH `session.c`, `do_exec_no_pty`, calls
/// `ssh_packet_set_interactive`, which sets it); a connection that only
/// forwards keeps Nagle on, so sshd holds a small packet (a vote from the
/// sentry) while anything it sent before is unacknowledged: up to one
/// message interval whenever messages come faster than the round trip
/// (measured: +12.5 ms at 80 votes/s on a 20 ms link,
/// `palisade-bench --only tunnel_vote`). So every connection runs one empty
/// session right after login: the key's forced command (`backup-session`)
/// sees the end of its input at once and exits; without a forced command,
/// `true` runs.
async fn turn_off_remote_nagle(handle: &client::Handle<BastionHandler>) -> Result<(), TunnelError> {
    let channel = handle.channel_open_session().await?;
    channel.exec(true, "true").await?;
    channel.eof().await?;
    channel.close().await?;
    Ok(())
}

/// Bound on that session's start.
const NAGLE_SESSION_TIMEOUT: Duration = Duration::from_secs(30);

/// Measures the main connection's round trip while it lives: a
/// `keepalive@openssh.com` global request with want-reply (what OpenSSH's
/// `ServerAliveInterval` sends; sshd answers it at once) every `interval`
/// ± 10 %, each bounded by `interval` — an unanswered one is recorded as
/// `interval`, the least it took. The reply travels the same TCP connection
/// as everything else, so a flooded or starved bastion shows here before
/// the keepalives give up on it. Ends with the connection.
async fn probe_round_trips(
    connection: Arc<BastionConnection>,
    state: SharedState,
    interval: Duration,
) {
    let live = connection.live.clone();
    loop {
        let jitter = 0.9 + rand::random::<f64>() * 0.2;
        tokio::select! {
            () = live.cancelled() => return,
            () = tokio::time::sleep(interval.mul_f64(jitter)) => {}
        }
        let started = tokio::time::Instant::now();
        let answered = tokio::select! {
            () = live.cancelled() => return,
            answered = tokio::time::timeout(interval, connection.handle.send_ping()) => answered,
        };
        let round_trip = match answered {
            Ok(Ok(())) => started.elapsed(),
            // The connection is going away; its end is reported elsewhere.
            Ok(Err(_)) => return,
            Err(_) => interval,
        };
        if live.is_cancelled() {
            return;
        }
        state.send_modify(|state| state.round_trip = Some(round_trip));
    }
}

/// Publish the merged state of the main connection and the forwards'
/// lanes whenever one of them changes, until all have stopped (or the main
/// connection's state is gone).
async fn merge_states(
    mut main: watch::Receiver<BastionState>,
    lanes: Vec<(SocketAddr, watch::Receiver<BastionState>)>,
    public: watch::Sender<BastionState>,
) {
    // One waker for every lane: a stored permit, so no change is missed
    // between two looks.
    let lane_changed = Arc::new(tokio::sync::Notify::new());
    for (_, lane) in &lanes {
        let mut lane = lane.clone();
        let trigger = lane_changed.clone();
        tokio::spawn(async move {
            while lane.changed().await.is_ok() {
                trigger.notify_one();
            }
        });
    }
    loop {
        let lane_states: Vec<(SocketAddr, BastionState)> = lanes
            .iter()
            .map(|(address, lane)| (*address, lane.borrow().clone()))
            .collect();
        let main_state = main.borrow_and_update().clone();
        let all_stopped = main_state.stopped && lane_states.iter().all(|(_, lane)| lane.stopped);
        let merged = merged_state(&main_state, &lane_states);
        public.send_if_modified(|state| {
            if *state == merged {
                false
            } else {
                *state = merged;
                true
            }
        });
        if all_stopped {
            return;
        }
        tokio::select! {
            changed = main.changed() => if changed.is_err() { return },
            () = lane_changed.notified() => {}
        }
    }
}

/// One bastion's state from its main connection's and its forwards'
/// lanes': connected when all are (since the last of them came up); the
/// first down connection's error, naming a lane's forward; reconnects
/// summed; stopped when any loop has stopped (they stop together: one
/// ending cancels the others).
pub(super) fn merged_state(
    main: &BastionState,
    lanes: &[(SocketAddr, BastionState)],
) -> BastionState {
    let mut merged = main.clone();
    for (_, lane) in lanes {
        merged.reconnects = merged.reconnects.saturating_add(lane.reconnects);
        merged.stopped |= lane.stopped;
        merged.connected_since = match (merged.connected_since, lane.connected_since) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
    }
    let first_lane_down = lanes
        .iter()
        .find(|(_, lane)| lane.connected_since.is_none());
    if let (Some(_), Some((address, lane))) = (main.connected_since, first_lane_down) {
        merged.last_error = Some(match &lane.last_error {
            Some(error) => format!("the connection for the forward {address}: {error}"),
            None => format!("the connection for the forward {address} is not up yet"),
        });
    }
    merged
}

pub async fn run_bastion(
    config: BastionConfig,
    shutdown: CancellationToken,
) -> Result<(), TunnelError> {
    BastionTunnel::start(config, shutdown)
        .await?
        .stopped()
        .await
}

async fn establish(
    config: &BastionConfig,
    shutdown: &CancellationToken,
    state: &SharedState,
) -> Result<BastionConnection, TunnelError> {
    let connection = BastionConnection::connect_with(config, shutdown, state.clone()).await?;
    // A forward sshd refuses is a configuration problem on one side or the
    // other: report it and keep the link (and its other forwards) up
    // rather than reconnecting in a loop that cannot fix it.
    let refused = |error: TunnelError| -> Result<(), TunnelError> {
        match error {
            TunnelError::ForwardRefused { .. } => {
                tracing::error!(bastion = %config.name, %error, "forward refused; the tunnel stays up without it");
                state.send_modify(|state| state.last_forward_error = Some(error.to_string()));
                Ok(())
            }
            other => Err(other),
        }
    };
    for forward in &config.reverse_unix_forwards {
        if let Err(error) = connection
            .forward_reverse_unix(&forward.remote_socket_path)
            .await
        {
            refused(error)?;
        }
    }
    for forward in &config.reverse_tcp_forwards {
        if let Err(error) = connection
            .forward_reverse_tcp(&forward.remote_address, forward.remote_port)
            .await
        {
            refused(error)?;
        }
    }
    Ok(connection)
}

async fn supervise(
    config: &BastionConfig,
    shutdown: &CancellationToken,
    state: &SharedState,
    current: &watch::Sender<Option<Arc<BastionConnection>>>,
) -> Result<(), TunnelError> {
    let bastion = config.name.as_str();
    // Attempts that failed in a row (for the log), and those of them that
    // got past the TCP probe (for the handshake backoff).
    let mut failures = 0u32;
    let mut handshake_failures = 0u32;
    let mut probing;
    let mut next_report = tokio::time::Instant::now();
    let mut connected_before = false;
    let outcome = loop {
        let attempt = tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            attempt = establish(config, shutdown, state) => attempt,
        };
        match attempt {
            Ok(connection) => {
                failures = 0;
                handshake_failures = 0;
                probing = false;
                let connection = Arc::new(connection);
                // In the background: the connection is usable at once, and
                // a slow login shell on the bastion delays nothing else.
                let nudged = connection.clone();
                tokio::spawn(async move {
                    let live = nudged.live.clone();
                    let outcome = tokio::select! {
                        _ = live.cancelled() => return,
                        outcome = tokio::time::timeout(
                            NAGLE_SESSION_TIMEOUT,
                            turn_off_remote_nagle(&nudged.handle),
                        ) => outcome,
                    };
                    let bastion = nudged.host.as_str();
                    match outcome {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => {
                            tracing::warn!(bastion, %error, "could not make sshd send small packets at once; messages from the bastion may wait up to a round trip")
                        }
                        Err(_) => tracing::warn!(
                            bastion,
                            "sshd did not start the session that makes it send small packets at once within {NAGLE_SESSION_TIMEOUT:?}; messages from the bastion may wait up to a round trip"
                        ),
                    }
                });
                // Listen for an operator's reconnect request before saying
                // "connected": `notify_waiters` wakes only registered
                // waiters, and whoever saw the state may ask at once.
                let reconnect_requested = state.reconnect.notified();
                tokio::pin!(reconnect_requested);
                reconnect_requested.as_mut().enable();
                // Published before the state says "connected", so whoever
                // waits for that state finds the connection usable.
                current.send_replace(Some(connection.clone()));
                state.send_modify(|state| {
                    state.connected_since = Some(SystemTime::now());
                    if connected_before {
                        state.reconnects += 1;
                    }
                });
                tracing::info!(bastion, host = %connection.host, "bastion tunnel up");
                connected_before = true;
                tokio::spawn(probe_round_trips(
                    connection.clone(),
                    state.clone(),
                    config.keepalive_interval,
                ));
                enum Ended {
                    Shutdown,
                    Closed,
                    ReconnectRequested,
                }
                let ended = tokio::select! {
                    _ = shutdown.cancelled() => Ended::Shutdown,
                    _ = connection.closed() => Ended::Closed,
                    _ = reconnect_requested => Ended::ReconnectRequested,
                };
                current.send_replace(None);
                match ended {
                    Ended::Shutdown => {
                        connection.close().await;
                        break Ok(());
                    }
                    Ended::ReconnectRequested => {
                        tracing::info!(bastion, "reconnect requested by an operator");
                        connection.close().await;
                        state.send_modify(|state| {
                            state.connected_since = None;
                            state.round_trip = None;
                            state.last_error = Some("reconnect requested by an operator".into());
                        });
                        continue;
                    }
                    Ended::Closed => {}
                }
                connection.live.cancel();
                let reason = connection
                    .disconnect_reason()
                    .unwrap_or_else(|| "connection closed".to_string());
                tracing::warn!(bastion, reason = %reason, "bastion tunnel down");
                state.send_modify(|state| {
                    state.connected_since = None;
                    state.round_trip = None;
                    state.last_error = Some(reason);
                });
            }
            Err(error) => {
                state.send_modify(|state| state.last_error = Some(error.to_string()));
                if error.is_fatal() {
                    tracing::error!(bastion, %error, "bastion tunnel stopped: this needs an operator (the other bastions and the node carry on)");
                    break Err(error);
                }
                failures += 1;
                probing = matches!(error, TunnelError::Connect { .. });
                if !probing {
                    handshake_failures += 1;
                }
                // While a bastion is down a probe fails several times a
                // second: say it once, then once a minute, not every time.
                let now = tokio::time::Instant::now();
                if failures == 1 || now >= next_report {
                    next_report = now + STILL_DOWN_REPORT;
                    tracing::warn!(bastion, attempts = failures, %error, "bastion connection attempt failed; retrying");
                } else {
                    tracing::debug!(bastion, attempts = failures, %error, "bastion connection attempt failed");
                }
            }
        }
        let delay = if probing {
            config.backoff.probe_delay(rand::random())
        } else {
            config
                .backoff
                .delay(handshake_failures.max(1), rand::random())
        };
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            _ = tokio::time::sleep(delay) => {}
            _ = state.reconnect.notified() => {
                tracing::info!(bastion, "reconnect requested by an operator: trying now");
            }
        }
    };
    state.send_modify(|state| {
        state.connected_since = None;
        state.round_trip = None;
        state.stopped = true;
    });
    outcome
}

async fn serve_local_tcp_forward(
    listener: TcpListener,
    forward: LocalTcpForward,
    current: watch::Receiver<Option<Arc<BastionConnection>>>,
    state: SharedState,
    shutdown: CancellationToken,
    bastion: String,
) {
    loop {
        let (socket, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(bastion, %error, "local forward: accept failed");
                    continue;
                }
            },
        };
        // A vote is a small write: Nagle's algorithm would hold it back
        // until the previous segment's ACK, which the peer may delay.
        socket.set_nodelay(true).ok();
        let Some(connection) = current.borrow().clone() else {
            // Refuse rather than queue: the peer (gaiad) retries on its own.
            tracing::debug!(bastion, %peer, "local forward: bastion down, closing connection");
            continue;
        };
        let forward = forward.clone();
        let state = state.clone();
        let bastion = bastion.clone();
        tokio::spawn(async move {
            let live = connection.live.clone();
            let opened = tokio::select! {
                _ = live.cancelled() => return,
                opened = connection.open_direct_tcpip(&forward.target_host, forward.target_port, peer) => opened,
            };
            drop(connection);
            match opened {
                Ok(channel) => pump(socket, channel, live, state).await,
                Err(error) => {
                    tracing::warn!(bastion, %error, "local forward refused");
                    state.send_modify(|state| state.last_forward_error = Some(error.to_string()));
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_200ms_to_a_1500ms_cap() {
        let backoff = ReconnectBackoff::default();
        // (failures, jitter, expected)
        let cases = [
            (1, 0.0, Duration::from_millis(100)),
            (1, 0.999_999, Duration::from_millis(200)),
            (2, 0.0, Duration::from_millis(200)),
            (3, 0.5, Duration::from_millis(600)),
            (4, 0.0, Duration::from_millis(750)),
            (7, 0.0, Duration::from_millis(750)),
            (40, 0.0, Duration::from_millis(750)),
            (40, 1.0, Duration::from_millis(1500)),
        ];
        for (failures, jitter, expected) in cases {
            let delay = backoff.delay(failures, jitter);
            let difference = delay.abs_diff(expected);
            assert!(
                difference < Duration::from_millis(1),
                "failures {failures}, jitter {jitter}: {delay:?} != {expected:?}"
            );
        }
    }

    #[test]
    fn a_bastion_is_connected_when_its_main_connection_and_every_lane_are() {
        use std::time::UNIX_EPOCH;
        let up = |seconds: u64, reconnects: u32| BastionState {
            connected_since: Some(UNIX_EPOCH + Duration::from_secs(seconds)),
            reconnects,
            ..BastionState::default()
        };
        let down = |error: Option<&str>| BastionState {
            last_error: error.map(str::to_string),
            ..BastionState::default()
        };
        let forward: SocketAddr = "127.0.0.1:26756".parse().unwrap();
        // (main, lanes, connected since, last error, reconnects)
        type Case = (
            BastionState,
            Vec<BastionState>,
            Option<u64>,
            Option<&'static str>,
            u32,
        );
        let cases: Vec<Case> = vec![
            (up(10, 1), vec![], Some(10), None, 1),
            (up(10, 1), vec![up(12, 2)], Some(12), None, 3),
            (
                up(10, 0),
                vec![down(Some("connection refused"))],
                None,
                Some("the connection for the forward 127.0.0.1:26756: connection refused"),
                0,
            ),
            (
                up(10, 0),
                vec![down(None)],
                None,
                Some("the connection for the forward 127.0.0.1:26756 is not up yet"),
                0,
            ),
            (
                down(Some("host key changed")),
                vec![down(Some("connection refused"))],
                None,
                Some("host key changed"),
                0,
            ),
        ];
        for (main, lanes, since, error, reconnects) in cases {
            let lanes: Vec<(SocketAddr, BastionState)> =
                lanes.into_iter().map(|lane| (forward, lane)).collect();
            let merged = merged_state(&main, &lanes);
            assert_eq!(
                merged.connected_since,
                since.map(|seconds| UNIX_EPOCH + Duration::from_secs(seconds)),
                "{main:?} {lanes:?}"
            );
            assert_eq!(merged.last_error.as_deref(), error, "{main:?} {lanes:?}");
            assert_eq!(merged.reconnects, reconnects);
        }
        let stopped = BastionState {
            stopped: true,
            ..BastionState::default()
        };
        assert!(merged_state(&up(1, 0), &[(forward, stopped)]).stopped);
    }

    #[test]
    fn probes_come_every_probe_interval_give_or_take_half() {
        let backoff = ReconnectBackoff::default();
        // (jitter, expected)
        for (jitter, expected) in [(0.0, 50), (0.5, 100), (0.999_999, 150), (7.0, 150)] {
            let delay = backoff.probe_delay(jitter);
            assert!(
                delay.abs_diff(Duration::from_millis(expected)) < Duration::from_millis(1),
                "jitter {jitter}: {delay:?}"
            );
        }
    }
}
