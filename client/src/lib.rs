//! `palisade-client`: the client of the supervisor's control RPC
//! (`docs/rpc.md`), shared by `palisade-ctl`, `palisade-bastion` (health
//! checks and `call`) and the benchmarks.
//!
//! It owns one connection to a supervisor: reaching an [`Endpoint`] (a
//! local Unix socket, or a bastion through `palisade_ssh::dial` and a
//! `direct-streamlocal` channel), reading the greeting, TLS 1.3 accepting
//! only the pinned certificate ([`Fingerprint`]), operator login with an
//! OpenSSH ed25519 key ([`OperatorKey`], from the key file or ssh-agent),
//! then any number of calls and the secret line. It also owns
//! [`peer_text::clean`], the one way text that came from a peer is made
//! safe to print.
//!
//! It must never prompt, print, read a configuration file or decide an
//! exit code: those are its callers' (a terminal program and a daemon want
//! different things). [`CallError::kind`] says what kind of failure an
//! error is, and each caller maps that to its own exit codes. Nothing here
//! may depend on a line editor or a terminal library: the bastion links
//! this crate and must stay free of them.
//!
//! Invariants:
//! - every connect, read and write has a timeout, and every line read is
//!   bounded ([`MAX_GREETING_BYTES`] for the greeting, [`MAX_LINE_BYTES`]
//!   for responses): a stuck or hostile peer costs a bounded time and memory;
//! - when TLS is used, the only certificate accepted is the pinned one
//!   (no CA, no name check), and the handshake's signatures are still
//!   verified with rustls' crypto provider, so the peer must hold the
//!   pinned certificate's private key; a different certificate is a hard
//!   failure naming both fingerprints;
//! - the operator's signature is bound to this TLS session (exporter) or,
//!   on plaintext, to 32 zero bytes, exactly as `auth_message` says;
//! - secrets travel only as the secret line after a request of a
//!   [`SECRET_METHODS`] method, from zeroizing buffers; never in JSON. The
//!   secret line is always padded to one length and written together with
//!   its request, so its TLS record does not show the secret's length.
#![forbid(unsafe_code)]

pub mod peer_text;

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::Signer;
use palisade_ssh::agent::AgentKey;
use palisade_ssh::dial::{Dial, DialError};
use palisade_wire::rpc::{
    CHALLENGE_BYTES, EXPORTER_LABEL, Greeting, MAX_GREETING_BYTES, MAX_LINE_BYTES,
    MAX_SECRET_BYTES, MAX_SECRET_LINE_BYTES, Request, Response, Role, RpcError, SECRET_METHODS,
    TlsRequirement, auth_message, code, fingerprint_of, pad_secret,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use zeroize::Zeroizing;

use crate::peer_text::clean;

/// Bound on connecting, reading the greeting, the TLS handshake and the
/// authentication exchange (lowered to the call timeout when that is
/// shorter).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Default bound on one call (request written, response read).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A pinned certificate fingerprint: `sha256:` and 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// Parse `sha256:<64 hex>`; upper-case hex is accepted and lowered.
    pub fn parse(text: &str) -> Result<Fingerprint, String> {
        let digest = palisade_wire::rpc::parse_fingerprint(text)?;
        Ok(Fingerprint(palisade_wire::rpc::format_fingerprint(&digest)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// When to run TLS after the greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsPolicy {
    /// When the greeting says `required` (a trusted local user may stay in
    /// plaintext).
    WhenRequired,
    /// Always (`--tls`, and every connection through a bastion).
    Always,
}

/// An operator's identity: the name the supervisor knows and the ed25519
/// key that signs the login challenge, either from the key file (zeroized
/// on drop by ed25519-dalek) or held by ssh-agent.
pub struct OperatorKey {
    pub name: String,
    signer: OperatorSigner,
}

enum OperatorSigner {
    Seed(ed25519_dalek::SigningKey),
    Agent(AgentKey),
}

impl fmt::Debug for OperatorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let signer = match &self.signer {
            OperatorSigner::Seed(_) => "REDACTED".to_string(),
            OperatorSigner::Agent(agent) => format!("ssh-agent at {}", agent.socket.display()),
        };
        f.debug_struct("OperatorKey")
            .field("name", &self.name)
            .field("signer", &signer)
            .finish()
    }
}

impl OperatorKey {
    /// Load an unencrypted OpenSSH ed25519 private key (as written by
    /// `ssh-keygen -t ed25519 -N ''`). Like ssh, refuse a key file that
    /// others can read. For services (the bastion's health checks), which
    /// cannot type a passphrase: a key that has one is refused.
    pub fn load(name: &str, path: &Path) -> Result<OperatorKey, CallError> {
        OperatorKey::load_with(name, path, false)
    }

    /// As [`OperatorKey::load`], but a key with a passphrase, or a file
    /// with only the public key (a hardware key's, say), is used through
    /// ssh-agent (`$SSH_AUTH_SOCK`, after `ssh-add`), as ssh does: for an
    /// operator at a terminal.
    pub fn load_or_agent(name: &str, path: &Path) -> Result<OperatorKey, CallError> {
        OperatorKey::load_with(name, path, true)
    }

    fn load_with(name: &str, path: &Path, agent: bool) -> Result<OperatorKey, CallError> {
        let fail = |reason: String| CallError::Key {
            path: path.to_path_buf(),
            reason,
        };
        let text = Zeroizing::new(std::fs::read(path).map_err(|error| fail(error.to_string()))?);
        let via_agent = |public: &russh::keys::PublicKey, public_only: bool| {
            if public.key_data().ed25519().is_none() {
                return Err(fail(format!("a {} key, not ed25519", public.algorithm())));
            }
            AgentKey::for_key_file(path, public.clone(), public_only)
                .map(|agent| OperatorKey {
                    name: name.to_string(),
                    signer: OperatorSigner::Agent(agent),
                })
                .map_err(|error| fail(error.to_string()))
        };
        // Only the public half (e.g. of a hardware key): the agent signs.
        if let Some(public) = std::str::from_utf8(&text)
            .ok()
            .and_then(palisade_ssh::agent::public_key_file)
        {
            if !agent {
                return Err(fail(
                    "a public key: a service needs the private key file (unencrypted, mode 0600)"
                        .into(),
                ));
            }
            return via_agent(&public, true);
        }
        let metadata = std::fs::metadata(path).map_err(|error| fail(error.to_string()))?;
        if metadata.permissions().mode() & 0o077 != 0 {
            return Err(fail(format!(
                "permissions {:o} are too open (others can read the key); chmod 600 it",
                metadata.permissions().mode() & 0o777
            )));
        }
        let key = russh::keys::ssh_key::PrivateKey::from_openssh(&*text)
            .map_err(|error| fail(format!("not an OpenSSH private key: {error}")))?;
        let algorithm = key.algorithm();
        if key.public_key().key_data().ed25519().is_none() {
            return Err(fail(format!("a {algorithm} key, not ed25519")));
        }
        if key.is_encrypted() {
            if !agent {
                return Err(fail(
                    "the key has a passphrase, which a service cannot type: use a dedicated \
                     unencrypted key, mode 0600"
                        .into(),
                ));
            }
            return via_agent(key.public_key(), false);
        }
        let keypair = key
            .key_data()
            .ed25519()
            .ok_or_else(|| fail(format!("a {algorithm} key, not ed25519")))?;
        let seed = Zeroizing::new(keypair.private.to_bytes());
        Ok(OperatorKey::from_seed(name, &seed))
    }

    /// From the 32-byte ed25519 seed.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> OperatorKey {
        OperatorKey {
            name: name.to_string(),
            signer: OperatorSigner::Seed(ed25519_dalek::SigningKey::from_bytes(seed)),
        }
    }

    /// The ed25519 signature of `message`.
    async fn sign(&self, message: &[u8]) -> Result<[u8; 64], CallError> {
        match &self.signer {
            OperatorSigner::Seed(key) => Ok(key.sign(message).to_bytes()),
            OperatorSigner::Agent(agent) => {
                let fail = |reason: String| CallError::Key {
                    path: agent.path.clone(),
                    reason,
                };
                let signature = agent
                    .sign(message)
                    .await
                    .map_err(|error| fail(error.to_string()))?;
                <[u8; 64]>::try_from(signature.as_bytes()).map_err(|_| {
                    fail(format!(
                        "ssh-agent answered a {} signature, not ed25519",
                        signature.algorithm()
                    ))
                })
            }
        }
    }
}

/// Where the supervisor's control socket is.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// A Unix socket on this host: the supervisor's own (`[rpc] socket`),
    /// or, on a bastion, the validator's reverse-forwarded one. Its server
    /// must run as root, as this process's user or as one of
    /// [`ConnectOptions::server_uids`] (`SO_PEERCRED`, checked before
    /// anything is read or sent).
    Socket(PathBuf),
    /// Through a bastion: SSH with a pinned host key, then a channel to the
    /// validator's socket there ([`BastionTarget`]). TLS with the pinned
    /// certificate is then always used, whatever the greeting says.
    Bastion { dial: Dial, target: BastionTarget },
}

/// How the channel through a bastion reaches the validator's socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BastionTarget {
    /// A session running [`relay_command`]: the operator's key is forced
    /// into `palisade-bastion rpc-relay` on the bastion (authorized_keys
    /// `command="…",restrict`, no forwarding at all), which connects to
    /// this configured validator's socket. The separate-users layout
    /// (docs/bastion.md).
    Relay { validator: String },
    /// A `direct-streamlocal` channel to this socket path: for keys with
    /// `port-forwarding` (the one-account layout).
    Socket(String),
}

/// The command a client asks sshd to run to reach `validator` through
/// `palisade-bastion rpc-relay` (which reads it from
/// `SSH_ORIGINAL_COMMAND`).
pub fn relay_command(validator: &str) -> String {
    format!("{RELAY_COMMAND} {validator}")
}

/// The first word of [`relay_command`].
pub const RELAY_COMMAND: &str = "palisade-rpc";

/// The command a client asks sshd to run to read `validator`'s log
/// segments through `palisade-bastion rpc-relay` (read-only; the session
/// then speaks `palisade_wire::backup_store`).
pub fn log_archive_command(validator: &str) -> String {
    format!("{LOG_ARCHIVE_COMMAND} {validator}")
}

/// The first word of [`log_archive_command`].
pub const LOG_ARCHIVE_COMMAND: &str = "palisade-log-archive";

/// How `palisade-bastion rpc-relay` starts the one line it writes when it
/// refuses (instead of the supervisor's greeting).
pub const RELAY_REFUSAL_PREFIX: &str = "palisade-bastion: ";

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Socket(path) => write!(f, "{}", path.display()),
            Endpoint::Bastion {
                dial,
                target: BastionTarget::Socket(socket),
            } => {
                write!(f, "{}@{}:{}:{socket}", dial.user, dial.host, dial.port)
            }
            Endpoint::Bastion {
                dial,
                target: BastionTarget::Relay { validator },
            } => write!(
                f,
                "{}@{}:{} (relay to {validator})",
                dial.user, dial.host, dial.port
            ),
        }
    }
}

/// How to reach and authenticate to one supervisor.
#[derive(Debug)]
pub struct ConnectOptions {
    pub endpoint: Endpoint,
    /// When to run TLS. A `pin` forces it whatever this says.
    pub tls: TlsPolicy,
    /// The certificate to accept; needed whenever TLS runs. When set, TLS
    /// always runs: the greeting (unauthenticated) cannot talk the client
    /// out of it.
    pub pin: Option<Fingerprint>,
    /// Besides root and this process's own user, the uids that may serve a
    /// local socket ([`Endpoint::Socket`]), checked with `SO_PEERCRED`
    /// before anything is read or sent: the supervisor's user when it is
    /// neither.
    pub server_uids: Vec<u32>,
    /// Log in as this operator; `None`: stay anonymous (fine for trusted
    /// local users).
    pub operator: Option<OperatorKey>,
    /// Bound on each call, and on connecting when shorter than
    /// [`CONNECT_TIMEOUT`].
    pub call_timeout: Duration,
}

/// Why a connection or a call failed. [`CallError::kind`] says which kind
/// of failure it is, for callers that turn failures into exit codes.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The socket could not be reached, the peer closed or stalled, or
    /// sent something that is not the protocol.
    #[error("{0}")]
    Connection(String),
    /// TLS setup or handshake failed (other than a pin mismatch).
    #[error("TLS with the supervisor failed: {0}")]
    Tls(String),
    /// The supervisor presented a certificate other than the pinned one.
    #[error(
        "the supervisor's certificate is {presented}, but {pinned} is pinned: refusing \
         (if the certificate was replaced on purpose, update the pin)"
    )]
    PinMismatch { pinned: String, presented: String },
    /// The process serving a local socket runs as a user that is not
    /// allowed to (see [`server_uid_allowed`]).
    #[error(
        "{path} is served by a process of uid {uid}{name}, which is neither root, you (uid \
         {own}), nor an expected supervisor user: refusing to talk to it (if that is the \
         supervisor's user, pass --server-user or set `server-user` in the config)",
        path = path.display(),
        name = user_name_suffix(*uid)
    )]
    UntrustedServer { path: PathBuf, uid: u32, own: u32 },
    /// TLS is needed but no fingerprint is configured.
    #[error(
        "the supervisor requires TLS but no certificate fingerprint is pinned: pass --pin \
         sha256:… or set `pin` in the config (printed by `palisade-supervisor init-rpc`)"
    )]
    NoPin,
    /// The operator key file could not be used.
    #[error("operator key {}: {reason}", path.display())]
    Key { path: PathBuf, reason: String },
    /// The supervisor refused the login, or the call for lack of
    /// authentication or role.
    #[error("{}", describe_rpc_error(.0))]
    Auth(RpcError),
    /// The supervisor answered the call with an error.
    #[error("{}", describe_rpc_error(.0))]
    Rpc(RpcError),
    /// The caller misused the API (e.g. a secret method without a secret).
    #[error("{0}")]
    Usage(String),
    /// The bastion could not be reached, its host key is not the pinned
    /// one, it refused the SSH login or the channel to the socket.
    #[error("bastion: {0}")]
    Bastion(#[from] DialError),
}

/// The kinds of failure a caller tells apart (`palisade-ctl` and
/// `palisade-bastion call` give each its own exit code, `docs/rpc.md` §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The supervisor could not be reached: the socket, the bastion on the
    /// way, the greeting, TLS (a pin mismatch included), a timeout.
    Connection,
    /// Authentication or authorization was refused (by the supervisor or
    /// the bastion's sshd), or a key is unusable.
    Authentication,
    /// The call itself failed: an error answer, or a request the client
    /// refuses to send.
    Call,
}

impl CallError {
    /// Which kind of failure this is.
    pub fn kind(&self) -> FailureKind {
        match self {
            CallError::Connection(_)
            | CallError::UntrustedServer { .. }
            | CallError::Tls(_)
            | CallError::PinMismatch { .. }
            | CallError::NoPin => FailureKind::Connection,
            CallError::Key { .. } | CallError::Auth(_) => FailureKind::Authentication,
            CallError::Rpc(_) | CallError::Usage(_) => FailureKind::Call,
            CallError::Bastion(DialError::PrivateKey { .. })
            | CallError::Bastion(DialError::Agent(_))
            | CallError::Bastion(DialError::AuthenticationRejected { .. }) => {
                FailureKind::Authentication
            }
            CallError::Bastion(_) => FailureKind::Connection,
        }
    }
}

/// The rule for who may serve a local socket: root, the client's own
/// user, or one of `expected` (the supervisor's user, when configured).
pub fn server_uid_allowed(server_uid: u32, own_uid: u32, expected: &[u32]) -> bool {
    server_uid == 0 || server_uid == own_uid || expected.contains(&server_uid)
}

/// A user name or a numeric uid, as `--server-user` takes it.
pub fn resolve_user(user: &str) -> Result<u32, String> {
    if let Ok(uid) = user.parse::<u32>() {
        return Ok(uid);
    }
    match nix::unistd::User::from_name(user) {
        Ok(Some(found)) => Ok(found.uid.as_raw()),
        Ok(None) => Err(format!("no user named {user:?}")),
        Err(error) => Err(format!("cannot look up user {user:?}: {error}")),
    }
}

fn user_name_suffix(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(user)) => format!(" ({})", clean(&user.name)),
        _ => String::new(),
    }
}

fn describe_rpc_error(error: &RpcError) -> String {
    let mut text = format!("{} (code {})", clean(&error.message), error.code);
    if let Some(data) = &error.data {
        text.push_str(&format!(" {}", clean(&data.to_string())));
    }
    match error.code {
        code::UNAUTHENTICATED => {
            text.push_str("; log in with --operator and --key (or `operator`/`key` in the config)")
        }
        code::FORBIDDEN => text.push_str("; the operator's role does not allow this method"),
        _ => {}
    }
    text
}

trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

/// An open connection, after the greeting, TLS and login.
pub struct Client {
    stream: BufReader<Box<dyn Transport>>,
    greeting: Greeting,
    tls: bool,
    role: Option<Role>,
    next_id: u64,
    call_timeout: Duration,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("greeting", &self.greeting)
            .field("tls", &self.tls)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connect, read the greeting, run TLS if needed, log in if an
    /// operator is configured.
    pub async fn connect(options: ConnectOptions) -> Result<Client, CallError> {
        let bound = CONNECT_TIMEOUT.min(options.call_timeout);
        tokio::time::timeout(bound, Client::connect_unbounded(options))
            .await
            .map_err(|_| {
                CallError::Connection(format!(
                    "no complete greeting, handshake and login within {} s",
                    bound.as_secs()
                ))
            })?
    }

    async fn connect_unbounded(options: ConnectOptions) -> Result<Client, CallError> {
        let endpoint = &options.endpoint;
        let (mut stream, through_bastion): (Box<dyn Transport>, bool) = match endpoint {
            Endpoint::Socket(path) => {
                let socket = UnixStream::connect(path).await.map_err(|error| {
                    CallError::Connection(format!("cannot connect to {}: {error}", path.display()))
                })?;
                // Who listens there, from the kernel: a socket some other
                // local user managed to put at this path gets nothing.
                let server_uid = socket
                    .peer_cred()
                    .map_err(|error| {
                        CallError::Connection(format!(
                            "cannot tell who serves {} (SO_PEERCRED): {error}",
                            path.display()
                        ))
                    })?
                    .uid();
                let own = nix::unistd::geteuid().as_raw();
                if !server_uid_allowed(server_uid, own, &options.server_uids) {
                    return Err(CallError::UntrustedServer {
                        path: path.clone(),
                        uid: server_uid,
                        own,
                    });
                }
                (Box::new(socket), false)
            }
            Endpoint::Bastion { dial, target } => {
                let link = palisade_ssh::dial::dial(dial).await?;
                let channel = match target {
                    BastionTarget::Socket(socket) => link.open_unix_socket(socket).await?,
                    BastionTarget::Relay { validator } => {
                        link.open_command(&relay_command(validator)).await?
                    }
                };
                (Box::new(channel), true)
            }
        };
        let relayed = matches!(
            endpoint,
            Endpoint::Bastion {
                target: BastionTarget::Relay { .. },
                ..
            }
        );
        let greeting = read_greeting(&mut stream, relayed)
            .await
            .map_err(|reason| CallError::Connection(format!("{endpoint}: {reason}")))?;
        // The greeting is unauthenticated: through a bastion it is only the
        // bastion's word, and on a local socket anyone's who could put a
        // socket there. So TLS runs whatever it says whenever a pin is
        // configured (and always through a bastion): nobody can talk us
        // into sending a login or a secret in plaintext.
        let tls_needed = through_bastion
            || options.pin.is_some()
            || options.tls == TlsPolicy::Always
            || greeting.tls == Some(TlsRequirement::Required);
        let socket = stream;
        let (transport, binding): (Box<dyn Transport>, [u8; CHALLENGE_BYTES]) = if tls_needed {
            let pin = options.pin.clone().ok_or(CallError::NoPin)?;
            let stream = tls_handshake(socket, &pin).await?;
            let mut binding = [0u8; CHALLENGE_BYTES];
            stream
                .get_ref()
                .1
                .export_keying_material(&mut binding, EXPORTER_LABEL, None)
                .map_err(|error| CallError::Tls(format!("exporter: {error}")))?;
            (Box::new(stream), binding)
        } else {
            (Box::new(socket), [0u8; CHALLENGE_BYTES])
        };
        let mut client = Client {
            stream: BufReader::new(transport),
            greeting,
            tls: tls_needed,
            role: None,
            next_id: 1,
            call_timeout: options.call_timeout,
        };
        if let Some(operator) = &options.operator {
            client.login(operator, &binding).await?;
        }
        Ok(client)
    }

    /// The supervisor's greeting.
    pub fn greeting(&self) -> &Greeting {
        &self.greeting
    }

    /// Whether the connection runs TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The role granted by `auth.login`, if logged in.
    pub fn role(&self) -> Option<Role> {
        self.role
    }

    /// Whether the connection still looks usable before the next call:
    /// the supervisor has not closed it (its idle timeout, a restart) and
    /// has sent nothing unasked. Waits at most `grace` for a close to show;
    /// consumes nothing. The shell asks before each command.
    pub async fn is_open(&mut self, grace: Duration) -> bool {
        // Pending means nothing to read: open. Anything else (end of
        // stream, an error, bytes nobody asked for) means it is not.
        tokio::time::timeout(grace, self.stream.fill_buf())
            .await
            .is_err()
    }

    async fn login(
        &mut self,
        operator: &OperatorKey,
        binding: &[u8; CHALLENGE_BYTES],
    ) -> Result<(), CallError> {
        let refused = |error: CallError| match error {
            CallError::Rpc(error) => CallError::Auth(error),
            other => other,
        };
        let answer = self
            .exchange("auth.challenge", None, None)
            .await
            .map_err(refused)?;
        let challenge = answer
            .get("challenge")
            .and_then(Value::as_str)
            .and_then(|text| BASE64.decode(text).ok())
            .and_then(|bytes| <[u8; CHALLENGE_BYTES]>::try_from(bytes).ok())
            .ok_or_else(|| {
                CallError::Connection(
                    "auth.challenge answered without a 32-byte base64 challenge".into(),
                )
            })?;
        let message = auth_message(&self.greeting.validator, &challenge, binding);
        let signature = operator.sign(&message).await?;
        let params = serde_json::json!({
            "operator": operator.name,
            "signature": BASE64.encode(signature),
        });
        let answer = self
            .exchange("auth.login", Some(params), None)
            .await
            .map_err(refused)?;
        self.role = answer
            .get("role")
            .cloned()
            .and_then(|role| serde_json::from_value(role).ok());
        Ok(())
    }

    /// Call `method`. Secret methods need [`Client::call_with_secret`].
    pub async fn call(&mut self, method: &str, params: Option<Value>) -> Result<Value, CallError> {
        if SECRET_METHODS.contains(&method) {
            return Err(CallError::Usage(format!(
                "{method} needs a secret line; use call_with_secret (`palisade-ctl unlock`)"
            )));
        }
        self.exchange(method, params, None).await
    }

    /// Call a secret method: the request line, then `secret` as the next
    /// line (`docs/rpc.md` §4).
    pub async fn call_with_secret(
        &mut self,
        method: &str,
        params: Option<Value>,
        secret: &SecretString,
    ) -> Result<Value, CallError> {
        if !SECRET_METHODS.contains(&method) {
            return Err(CallError::Usage(format!("{method} takes no secret line")));
        }
        let secret = secret.expose_secret();
        if secret.contains(['\n', '\r']) {
            return Err(CallError::Usage("the secret must be one line".into()));
        }
        if secret.len() > MAX_SECRET_BYTES {
            return Err(CallError::Usage(format!(
                "the secret is longer than {MAX_SECRET_BYTES} bytes"
            )));
        }
        self.exchange(method, params, Some(secret)).await
    }

    async fn exchange(
        &mut self,
        method: &str,
        params: Option<Value>,
        secret: Option<&str>,
    ) -> Result<Value, CallError> {
        let id = self.next_id;
        self.next_id += 1;
        let request = Request {
            jsonrpc: "2.0".into(),
            id: Value::from(id),
            method: method.to_string(),
            params,
        };
        let mut line = serde_json::to_vec(&request)
            .map_err(|error| CallError::Usage(format!("cannot encode the request: {error}")))?;
        line.push(b'\n');
        if line.len() > MAX_LINE_BYTES {
            return Err(CallError::Usage(format!(
                "the request is longer than {MAX_LINE_BYTES} bytes"
            )));
        }
        // The request line and the padded secret line go out in one write,
        // so in one TLS record whose length is the same for every secret
        // (`docs/rpc.md` §4): a bastion relaying the bytes learns nothing
        // from record sizes. Sized up front: the zeroizing buffer never
        // reallocates (no copy of the secret is left behind).
        let capacity = line.len() + secret.map_or(0, |_| MAX_SECRET_LINE_BYTES);
        let mut out = Zeroizing::new(Vec::with_capacity(capacity));
        out.extend_from_slice(&line);
        if let Some(secret) = secret {
            pad_secret(secret, &mut out).map_err(|error| CallError::Usage(error.to_string()))?;
            out.push(b'\n');
        }
        let timeout = self.call_timeout;
        let response = tokio::time::timeout(timeout, async {
            let stream = self.stream.get_mut();
            stream.write_all(&out).await.map_err(lost)?;
            stream.flush().await.map_err(lost)?;
            read_response_line(&mut self.stream).await
        })
        .await
        .map_err(|_| {
            CallError::Connection(format!(
                "no answer to {method} within {} s",
                timeout.as_secs()
            ))
        })??;
        let mut response: Response = serde_json::from_slice(&response).map_err(|error| {
            CallError::Connection(clean(&format!(
                "the supervisor's answer is not JSON-RPC: {error}"
            )))
        })?;
        if response.id != id {
            return Err(CallError::Connection(clean(&format!(
                "answer for id {} while waiting for id {id}",
                response.id
            ))));
        }
        // The peer's error text is cleaned where it enters; `data` is
        // cleaned when it is described (it stays a JSON value).
        if let Some(error) = &mut response.error {
            error.message = clean(&error.message);
        }
        match (response.result, response.error) {
            (_, Some(error)) if matches!(error.code, code::UNAUTHENTICATED | code::FORBIDDEN) => {
                Err(CallError::Auth(error))
            }
            (_, Some(error)) => Err(CallError::Rpc(error)),
            (Some(result), None) => Ok(result),
            (None, None) => Err(CallError::Connection(
                "the supervisor's answer has neither result nor error".into(),
            )),
        }
    }
}

fn lost(error: std::io::Error) -> CallError {
    CallError::Connection(format!("connection to the supervisor lost: {error}"))
}

/// One response line, at most [`MAX_LINE_BYTES`] with its newline.
async fn read_response_line(
    reader: &mut BufReader<Box<dyn Transport>>,
) -> Result<Vec<u8>, CallError> {
    let mut line = Vec::new();
    let read = (&mut *reader)
        .take(MAX_LINE_BYTES as u64)
        .read_until(b'\n', &mut line)
        .await
        .map_err(lost)?;
    if read == 0 {
        return Err(CallError::Connection(
            "the supervisor closed the connection without answering".into(),
        ));
    }
    if line.last() != Some(&b'\n') {
        return Err(CallError::Connection(if line.len() >= MAX_LINE_BYTES {
            format!("answer longer than {MAX_LINE_BYTES} bytes")
        } else {
            "the supervisor closed the connection in the middle of an answer".into()
        }));
    }
    Ok(line)
}

/// Read the greeting byte by byte, so nothing after its newline is
/// consumed (the TLS handshake follows on the same stream).
///
/// `relayed`: the channel runs `palisade-bastion rpc-relay`, which writes
/// one line starting [`RELAY_REFUSAL_PREFIX`] instead when it refuses; that
/// line (cleaned) is the error. Without the relay (a key whose forced
/// command is something else) the channel just closes, and the error says
/// what the bastion's authorized_keys line should be.
async fn read_greeting(socket: &mut Box<dyn Transport>, relayed: bool) -> Result<Greeting, String> {
    let mut line = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    loop {
        let read = socket
            .read(&mut byte)
            .await
            .map_err(|error| format!("reading the greeting: {error}"))?;
        if read == 0 {
            if relayed && line.starts_with(RELAY_REFUSAL_PREFIX.as_bytes()) {
                return Err(relay_refusal(&line));
            }
            return Err(match (line.is_empty(), relayed) {
                (true, true) => "the bastion closed the channel before the supervisor's \
                                 greeting: is this key's forced command `palisade-bastion \
                                 rpc-relay` in the bastion's authorized_keys (docs/bastion-sshd.md)? \
                                 For a bastion that forwards Unix sockets, give --remote-socket"
                    .into(),
                (true, false) => "closed before sending a greeting".into(),
                (false, _) => "closed in the middle of the greeting".into(),
            });
        }
        line.push(byte[0]);
        if byte[0] == b'\n' {
            break;
        }
        if line.len() >= MAX_GREETING_BYTES {
            return Err(format!(
                "no greeting: more than {MAX_GREETING_BYTES} bytes without a newline"
            ));
        }
    }
    if relayed && line.starts_with(RELAY_REFUSAL_PREFIX.as_bytes()) {
        return Err(relay_refusal(&line));
    }
    Greeting::parse(&line).map_err(|error| error.to_string())
}

/// The relay's refusal line as an error, cleaned (it is the bastion's word).
fn relay_refusal(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(&line[RELAY_REFUSAL_PREFIX.len()..]);
    format!(
        "the bastion's relay refused: {}",
        peer_text::clean(text.trim_end())
    )
}

/// TLS 1.3 over `socket`, accepting only the certificate pinned by `pin`
/// (handshake signatures still verified); a different certificate is
/// [`CallError::PinMismatch`] naming both fingerprints.
pub async fn tls_handshake<S>(
    socket: S,
    pin: &Fingerprint,
) -> Result<tokio_rustls::client::TlsStream<S>, CallError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(PinnedCertVerifier {
        pin: pin.clone(),
        provider: provider.clone(),
        presented: Mutex::new(None),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|error| CallError::Tls(error.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    // No name check: the pin is the identity. The name only fills SNI.
    let name = ServerName::try_from("palisade-supervisor").expect("a valid DNS name");
    match connector.connect(name, socket).await {
        Ok(stream) => Ok(stream),
        Err(error) => {
            let presented = verifier.presented.lock().expect("not poisoned").clone();
            match presented {
                Some(presented) if presented != pin.as_str() => Err(CallError::PinMismatch {
                    pinned: pin.to_string(),
                    presented,
                }),
                _ => Err(CallError::Tls(error.to_string())),
            }
        }
    }
}

/// Accepts exactly the certificate with the pinned fingerprint; handshake
/// signatures are verified with the provider's algorithms.
#[derive(Debug)]
struct PinnedCertVerifier {
    pin: Fingerprint,
    provider: Arc<CryptoProvider>,
    /// The fingerprint the server presented, for the error message.
    presented: Mutex<Option<String>>,
}

impl ServerCertVerifier for PinnedCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = fingerprint_of(end_entity);
        let matches = presented == self.pin.as_str();
        *self.presented.lock().expect("not poisoned") = Some(presented);
        if matches {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "certificate does not match the pinned fingerprint".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Only TLS 1.3 is offered.
        Err(rustls::Error::General("TLS 1.2 is not supported".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse() {
        let hex = "ab".repeat(32);
        assert_eq!(
            Fingerprint::parse(&format!("sha256:{}", hex.to_uppercase()))
                .unwrap()
                .as_str(),
            format!("sha256:{hex}")
        );
        for bad in [
            "",
            "sha256:",
            &hex,
            &format!("sha1:{hex}"),
            &format!("sha256:{}", &hex[1..]),
            &format!("sha256:{}g", &hex[1..]),
        ] {
            assert!(Fingerprint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_local_server_must_be_root_ourselves_or_expected() {
        let cases = [
            (0, 1000, &[][..], true),
            (1000, 1000, &[][..], true),
            (1001, 1000, &[][..], false),
            (1001, 1000, &[1001][..], true),
            (1002, 1000, &[1001][..], false),
            (1001, 0, &[][..], false),
        ];
        for (server, own, expected, allowed) in cases {
            assert_eq!(
                server_uid_allowed(server, own, expected),
                allowed,
                "{server} {own} {expected:?}"
            );
        }
        assert_eq!(resolve_user("0"), Ok(0));
        assert_eq!(resolve_user("root"), Ok(0));
        assert!(resolve_user("no-such-user-here").is_err());
    }

    #[test]
    fn errors_are_classified_by_kind() {
        let rpc = |code| RpcError::new(code, "x");
        let cases = [
            (CallError::Connection("x".into()), FailureKind::Connection),
            (CallError::Tls("x".into()), FailureKind::Connection),
            (CallError::NoPin, FailureKind::Connection),
            (
                CallError::PinMismatch {
                    pinned: "a".into(),
                    presented: "b".into(),
                },
                FailureKind::Connection,
            ),
            (
                CallError::Key {
                    path: PathBuf::from("k"),
                    reason: "x".into(),
                },
                FailureKind::Authentication,
            ),
            (
                CallError::Auth(rpc(code::UNAUTHENTICATED)),
                FailureKind::Authentication,
            ),
            (
                CallError::Rpc(rpc(code::METHOD_NOT_FOUND)),
                FailureKind::Call,
            ),
            (CallError::Usage("x".into()), FailureKind::Call),
        ];
        for (error, expected) in cases {
            assert_eq!(error.kind(), expected, "{error}");
        }
    }

    #[test]
    fn rpc_errors_are_described_with_peer_text_cleaned() {
        let text = describe_rpc_error(&RpcError::new(code::FORBIDDEN, "no\u{1b}[2J"));
        assert!(!text.contains('\u{1b}'), "{text}");
        assert!(text.starts_with("no\\u{1b}[2J (code "), "{text}");
        assert!(
            text.ends_with("the operator's role does not allow this method"),
            "{text}"
        );
    }
}
