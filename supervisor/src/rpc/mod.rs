//! The control socket (`[rpc] socket`) and the RPC server behind it
//! (`docs/rpc.md`).
//!
//! This is the socket the tunnels publish on every bastion (reverse
//! Unix-socket forward). Every connection first receives the
//! [`Greeting`](palisade_wire::rpc::Greeting) line, which is all a bastion's
//! health check needs to prove the whole path is alive. Then, with
//! [`ControlSocket::serve_rpc`]: peers that are not trusted local users
//! ([`peer`]) must start TLS 1.3 ([`tls`]) and log in ([`auth`]); the
//! requests that follow are checked and handed to a [`Dispatcher`]
//! ([`connection`]).
//!
//! Invariants:
//! - the socket's directory is created 0700 if missing and must not be
//!   accessible to others (group access is allowed for an operators'
//!   group); the socket itself is mode 0600 (0660 would be the group
//!   choice, not made yet);
//! - a leftover socket is replaced only when nothing listens on it: a
//!   second supervisor never steals the socket of a running one;
//! - at most [`MAX_CONNECTIONS`] connections are served at once and every
//!   write is bounded by [`WRITE_TIMEOUT`], every read and handshake by the
//!   idle timeout, so a stuck peer costs one slot for a bounded time and
//!   never blocks the supervisor;
//! - a remote connection must log in within
//!   [`admission::UNAUTHENTICATED_DEADLINE`], and when all slots are taken a
//!   random not-yet-authenticated one is closed for the newcomer
//!   ([`admission`]): a flood through a bastion cannot lock out operators,
//!   and never a trusted local user;
//! - a connection from a bastion is never trusted and never served without
//!   TLS: with no certificate it gets the greeting and is closed;
//! - each bastion's reverse forward ends on its own entry socket
//!   ([`ControlSocket::bind_bastion_entry`], beside the control socket): a
//!   connection there is always remote and its [`auth::Source`] is that
//!   bastion, so the login throttle tells bastions apart without believing
//!   anything a bastion sends.

pub(crate) mod admission;
pub(crate) mod auth;
pub mod calls;
pub(crate) mod connection;
pub(crate) mod dispatcher;
pub(crate) mod peer;
pub(crate) mod tls;

use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use palisade_wire::rpc::{CHALLENGE_BYTES, EXPORTER_LABEL, Greeting, TlsRequirement};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::{OperatorSettings, RpcSettings};

pub use auth::Operators;
pub use connection::LOCAL_ROLE;
pub use dispatcher::{Caller, Dispatcher};
pub use peer::{PeerTrust, TrustPolicy};
pub use tls::{ReplaceIdentity, fingerprint_of, init_identity, read_fingerprint};

/// Connections served at once; more wait in the listen backlog (unless an
/// unauthenticated remote one can be evicted, see [`admission`]).
pub const MAX_CONNECTIONS: usize = 64;

/// Bound on writing the greeting or one response to one peer.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// First byte of a TLS handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// When a connection last arrived through each bastion's entry (its
/// health check, every few seconds, or an operator): what an Elastic IP
/// rotation waits for to know that the bastion reaches the validator again
/// (`crate::eip`).
#[derive(Clone, Debug, Default)]
pub struct BastionArrivals(
    Arc<std::sync::Mutex<std::collections::BTreeMap<String, std::time::SystemTime>>>,
);

impl BastionArrivals {
    /// The last arrival through `bastion`'s entry, if any.
    pub fn last(&self, bastion: &str) -> Option<std::time::SystemTime> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(bastion)
            .copied()
    }

    fn arrived(&self, bastion: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(bastion.to_string(), std::time::SystemTime::now());
    }
}

/// A bastion's entry to the control socket.
struct BastionEntry {
    bastion: Arc<str>,
    path: PathBuf,
    listener: UnixListener,
}

/// Which listener a connection arrived on.
#[derive(Debug, Clone)]
enum Listener {
    /// The control socket itself: local processes (and tests).
    Main,
    /// A bastion's entry: what that bastion forwards.
    Bastion(Arc<str>),
}

/// A bound control socket, not yet serving.
pub struct ControlSocket {
    listener: UnixListener,
    entries: Vec<BastionEntry>,
    path: PathBuf,
    validator: String,
    tls_dir: PathBuf,
    idle_timeout: Duration,
    trust: TrustPolicy,
    arrivals: BastionArrivals,
    calls: Arc<calls::RpcCalls>,
}

impl ControlSocket {
    /// Bind `settings.socket` (see the module invariants).
    pub fn bind(settings: &RpcSettings) -> anyhow::Result<ControlSocket> {
        let listener = palisade_daemon::socket::bind_private(
            &settings.socket,
            "control socket",
            palisade_daemon::socket::DirAccess::OwnerAndGroup,
        )?;
        Ok(ControlSocket {
            listener,
            entries: Vec::new(),
            path: settings.socket.clone(),
            validator: settings.name.clone(),
            tls_dir: settings.tls_dir.clone(),
            idle_timeout: settings.idle_timeout,
            trust: TrustPolicy::for_uids(&settings.trusted_uids),
            arrivals: BastionArrivals::default(),
            calls: Arc::default(),
        })
    }

    /// The calls answered, by method and role (for the metrics).
    pub fn call_counts(&self) -> Arc<calls::RpcCalls> {
        Arc::clone(&self.calls)
    }

    /// When connections last arrived through each bastion's entry.
    pub fn arrivals(&self) -> BastionArrivals {
        self.arrivals.clone()
    }

    /// Bind `bastion`'s entry socket
    /// ([`bastion_entry_socket`](crate::config::bastion_entry_socket)), where
    /// its tunnel's reverse forward of the control socket ends; returns its
    /// path. Same rules as the control socket (mode 0600, a live one never
    /// displaced); removed with it at shutdown.
    pub fn bind_bastion_entry(&mut self, bastion: &str) -> anyhow::Result<PathBuf> {
        let path = crate::config::bastion_entry_socket(&self.path, bastion);
        let listener = palisade_daemon::socket::bind_private(
            &path,
            "bastion's entry to the control socket",
            palisade_daemon::socket::DirAccess::OwnerAndGroup,
        )?;
        self.entries.push(BastionEntry {
            bastion: bastion.into(),
            path: path.clone(),
            listener,
        });
        Ok(path)
    }

    /// Replace the trust rule ([`TrustPolicy::for_this_process`] by
    /// default); tests use it to reach every path from one process.
    pub fn with_trust_policy(mut self, trust: TrustPolicy) -> ControlSocket {
        self.trust = trust;
        self
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serve the RPC (`docs/rpc.md`) until `shutdown`, then remove the
    /// socket file. Calls that pass authentication and authorization go to
    /// `dispatcher`; `operators` may log in over TLS. Without a TLS identity
    /// in `[rpc] tls-dir` only trusted local users are served (an error
    /// says to run `init-rpc`).
    pub async fn serve_rpc(
        self,
        dispatcher: Arc<dyn Dispatcher>,
        operators: Vec<OperatorSettings>,
        shutdown: CancellationToken,
    ) {
        let identity = match tls::load_identity(&self.tls_dir) {
            Ok(identity) => {
                tracing::info!(
                    socket = %self.path.display(),
                    fingerprint = %identity.fingerprint,
                    operators = operators.len(),
                    "control RPC serving (TLS for remote peers)"
                );
                Some(identity)
            }
            Err(error) if operators.is_empty() => {
                // Nobody could log in remotely anyway: local use only.
                tracing::info!(
                    socket = %self.path.display(),
                    "control RPC serving trusted local users only (no [[operator]] and no TLS \
                     certificate: {error:#}; see `palisade-supervisor init-rpc`)"
                );
                None
            }
            Err(error) => {
                tracing::error!(
                    socket = %self.path.display(),
                    "control RPC: no usable TLS certificate ({error:#}); only trusted local \
                     users can call it, remote connections are closed after the greeting. \
                     Create one with `palisade-supervisor init-rpc`"
                );
                None
            }
        };
        let shared = Arc::new(connection::Shared {
            validator: self.validator.clone(),
            dispatcher,
            operators: Operators::new(operators),
            throttle: auth::LoginThrottle::default(),
            idle_timeout: self.idle_timeout,
            calls: Arc::clone(&self.calls),
        });
        let serving = Arc::new(Serving {
            shared,
            identity,
            trust: self.trust,
            slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            arrivals: self.arrivals.clone(),
            unauthenticated: Arc::new(admission::Unauthenticated::default()),
            deadline: admission::UNAUTHENTICATED_DEADLINE.min(self.idle_timeout),
            shutdown,
        });
        let mut entries = Vec::new();
        let mut entry_paths = Vec::new();
        for BastionEntry {
            bastion,
            path,
            listener,
        } in self.entries
        {
            entry_paths.push(path);
            let serving = serving.clone();
            entries.push(tokio::spawn(async move {
                serving
                    .accept_loop(&listener, Listener::Bastion(bastion))
                    .await
            }));
        }
        serving.accept_loop(&self.listener, Listener::Main).await;
        for entry in entries {
            let _ = entry.await;
        }
        remove_socket(&self.path);
        for path in entry_paths {
            remove_socket(&path);
        }
    }
}

/// What every listener's accept loop shares.
struct Serving {
    shared: Arc<connection::Shared>,
    identity: Option<tls::ServerIdentity>,
    trust: TrustPolicy,
    slots: Arc<Semaphore>,
    arrivals: BastionArrivals,
    unauthenticated: Arc<admission::Unauthenticated>,
    deadline: Duration,
    shutdown: CancellationToken,
}

impl Serving {
    /// Accept on `listener` until shutdown, one task per connection.
    async fn accept_loop(&self, listener: &UnixListener, arrived_on: Listener) {
        loop {
            let Some((stream, permit)) =
                accept(listener, &self.slots, &self.unauthenticated, &self.shutdown).await
            else {
                break;
            };
            let (trust, source) = match &arrived_on {
                // Whatever its credentials (they are our own process's):
                // only that bastion's forward ends here.
                Listener::Bastion(bastion) => {
                    self.arrivals.arrived(bastion);
                    (PeerTrust::Remote, auth::Source::Bastion(bastion.clone()))
                }
                Listener::Main => {
                    let credentials = peer::peer_credentials(&stream);
                    (
                        self.trust.classify(credentials),
                        auth::Source::Local(credentials.map(|credentials| credentials.uid)),
                    )
                }
            };
            let admitted = match trust {
                PeerTrust::Remote => Some(self.unauthenticated.admit(self.deadline)),
                PeerTrust::TrustedLocal { .. } => None,
            };
            let shared = self.shared.clone();
            let identity = self.identity.clone();
            let shutdown = self.shutdown.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let peer = Peer { trust, source };
                match admitted {
                    Some((ticket, kill)) => {
                        tokio::select! {
                            _ = kill.cancelled() => {}
                            _ = serve_connection(stream, peer, identity, Some(ticket), &shared, &shutdown) => {}
                        }
                    }
                    None => {
                        serve_connection(stream, peer, identity, None, &shared, &shutdown).await
                    }
                }
            });
        }
    }
}

/// Who a connection is, as far as the server can tell.
struct Peer {
    trust: PeerTrust,
    source: auth::Source,
}

/// Accept a connection and give it a slot: a free one, else one freed by
/// evicting a random unauthenticated remote connection, else wait for one
/// (the newcomer waits, accepted, while the backlog queues the rest).
/// `None` at shutdown.
async fn accept(
    listener: &UnixListener,
    slots: &Arc<Semaphore>,
    unauthenticated: &admission::Unauthenticated,
    shutdown: &CancellationToken,
) -> Option<(UnixStream, tokio::sync::OwnedSemaphorePermit)> {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return None,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "control socket: accept failed");
                // EMFILE and the like: do not spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if let Ok(permit) = slots.clone().try_acquire_owned() {
            return Some((stream, permit));
        }
        unauthenticated.evict_one();
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return None,
            permit = slots.clone().acquire_owned() => permit.ok()?,
        };
        return Some((stream, permit));
    }
}

fn remove_socket(path: &Path) {
    if let Err(error) = std::fs::remove_file(path)
        && error.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(socket = %path.display(), %error, "could not remove the control socket");
    }
}

/// One connection: greeting, transport (TLS or plaintext), session.
async fn serve_connection(
    mut stream: UnixStream,
    Peer { trust, source }: Peer,
    identity: Option<tls::ServerIdentity>,
    ticket: Option<admission::Ticket>,
    shared: &connection::Shared,
    shutdown: &CancellationToken,
) {
    let mut greeting = Greeting::new(&shared.validator, env!("CARGO_PKG_VERSION"));
    greeting.tls = Some(match trust {
        PeerTrust::TrustedLocal { .. } => TlsRequirement::Optional,
        PeerTrust::Remote => TlsRequirement::Required,
    });
    let written = tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(&greeting.to_line()).await?;
        stream.flush().await
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        tracing::debug!("control socket: peer left before the greeting");
        return;
    }
    // Wait for the client's first byte: a health check closes here, a TLS
    // client sends a handshake record, a trusted local one may send JSON.
    let first_byte = tokio::select! {
        _ = shutdown.cancelled() => return,
        first = tokio::time::timeout(shared.idle_timeout, peek_first_byte(&stream)) => first,
    };
    let first_byte = match first_byte {
        Ok(Ok(Some(byte))) => byte,
        Ok(Ok(None)) => return,
        Ok(Err(error)) => {
            tracing::debug!(%error, "control socket: read failed");
            return;
        }
        Err(_) => {
            tracing::debug!("control socket: nothing after the greeting within the idle timeout");
            return;
        }
    };
    let local_caller = match &trust {
        PeerTrust::TrustedLocal { user } => Some(Caller {
            operator: format!("local:{user}"),
            role: LOCAL_ROLE,
            tls: false,
        }),
        PeerTrust::Remote => None,
    };
    if first_byte != TLS_HANDSHAKE_RECORD {
        if local_caller.is_none() {
            tracing::info!(
                "control socket: a remote peer sent plaintext where TLS is required; closing"
            );
            return;
        }
        let start = connection::SessionStart {
            caller: local_caller,
            tls: false,
            channel_binding: [0; CHALLENGE_BYTES],
            ticket,
            source,
        };
        connection::serve_session(&mut stream, shared, start, shutdown).await;
        return;
    }
    let Some(identity) = identity else {
        tracing::error!(
            validator = %shared.validator,
            "control socket: a client wants TLS but there is no RPC certificate; closing. \
             Run `palisade-supervisor init-rpc` and give operators the printed pin"
        );
        return;
    };
    let handshake = tokio::select! {
        _ = shutdown.cancelled() => return,
        handshake = tokio::time::timeout(shared.idle_timeout, identity.acceptor.accept(stream)) => handshake,
    };
    let mut tls_stream = match handshake {
        Ok(Ok(tls_stream)) => tls_stream,
        Ok(Err(error)) => {
            tracing::info!(%error, "control socket: TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::info!("control socket: TLS handshake timed out");
            return;
        }
    };
    let binding =
        tls_stream
            .get_ref()
            .1
            .export_keying_material([0u8; CHALLENGE_BYTES], EXPORTER_LABEL, None);
    let channel_binding = match binding {
        Ok(binding) => binding,
        Err(error) => {
            tracing::error!(%error, "control socket: TLS exporter failed; closing");
            return;
        }
    };
    let start = connection::SessionStart {
        caller: local_caller.map(|caller| Caller {
            tls: true,
            ..caller
        }),
        tls: true,
        channel_binding,
        ticket,
        source,
    };
    connection::serve_session(&mut tls_stream, shared, start, shutdown).await;
    let _ = tokio::time::timeout(WRITE_TIMEOUT, tls_stream.shutdown()).await;
}

/// The first byte the peer sent, left in the socket; `None` if it closed.
async fn peek_first_byte(stream: &UnixStream) -> io::Result<Option<u8>> {
    loop {
        stream.readable().await?;
        let mut byte = [0u8; 1];
        let peeked = stream.try_io(Interest::READABLE, || {
            nix::sys::socket::recv(
                stream.as_raw_fd(),
                &mut byte,
                nix::sys::socket::MsgFlags::MSG_PEEK,
            )
            .map_err(io::Error::from)
        });
        match peeked {
            Ok(0) => return Ok(None),
            Ok(_) => return Ok(Some(byte[0])),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
            Err(error) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    use tokio::io::AsyncBufReadExt;

    fn settings(dir: &Path) -> RpcSettings {
        RpcSettings {
            socket: dir.join("run").join("supervisor.sock"),
            name: "val-a".into(),
            tls_dir: dir.join("rpc"),
            idle_timeout: Duration::from_secs(5),
            trusted_uids: vec![0],
        }
    }

    /// The greeting needs no dispatcher; no call is made here.
    struct Unused;

    impl Dispatcher for Unused {
        fn call<'a>(
            &'a self,
            _caller: &'a Caller,
            _method: &'a str,
            _params: serde_json::Value,
            _secret: Option<secrecy::SecretString>,
        ) -> crate::backup::BoxFuture<'a, Result<serde_json::Value, palisade_wire::rpc::RpcError>>
        {
            Box::pin(async { unreachable!("no call in this test") })
        }
    }

    #[tokio::test]
    async fn every_connection_gets_the_greeting_and_shutdown_removes_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let settings = settings(dir.path());
        let socket = ControlSocket::bind(&settings).unwrap();
        let mode = std::fs::metadata(&settings.socket)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let parent_mode = std::fs::metadata(settings.socket.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(parent_mode & 0o777, 0o700);
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(socket.serve_rpc(Arc::new(Unused), Vec::new(), shutdown.clone()));
        for _ in 0..3 {
            let stream = tokio::net::UnixStream::connect(&settings.socket)
                .await
                .unwrap();
            let mut line = Vec::new();
            tokio::io::BufReader::new(stream)
                .read_until(b'\n', &mut line)
                .await
                .unwrap();
            let greeting = Greeting::parse(&line).unwrap();
            assert_eq!(greeting.validator, "val-a");
            assert_eq!(greeting.version, env!("CARGO_PKG_VERSION"));
        }
        // A second supervisor must not take over the live socket.
        let error = ControlSocket::bind(&settings).err().unwrap().to_string();
        assert!(error.contains("another process is listening"), "{error}");
        shutdown.cancel();
        server.await.unwrap();
        assert!(!settings.socket.exists());
    }

    #[tokio::test]
    async fn stale_socket_is_replaced_but_other_files_and_open_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let settings = settings(dir.path());
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(settings.socket.parent().unwrap())
            .unwrap();
        // Stale: bound then dropped, the file stays behind.
        drop(std::os::unix::net::UnixListener::bind(&settings.socket).unwrap());
        assert!(settings.socket.exists());
        drop(ControlSocket::bind(&settings).unwrap());

        std::fs::remove_file(&settings.socket).unwrap();
        std::fs::write(&settings.socket, b"not a socket").unwrap();
        let error = ControlSocket::bind(&settings).err().unwrap().to_string();
        assert!(error.contains("is not a socket"), "{error}");
        assert_eq!(std::fs::read(&settings.socket).unwrap(), b"not a socket");

        std::fs::remove_file(&settings.socket).unwrap();
        std::fs::set_permissions(
            settings.socket.parent().unwrap(),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let error = ControlSocket::bind(&settings).err().unwrap().to_string();
        assert!(
            error.contains("must not be accessible to others"),
            "{error}"
        );
        assert!(!settings.socket.exists());
    }
}
