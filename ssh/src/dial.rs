//! Dialing a bastion: TCP, SSH handshake with a pinned host key, public-key
//! authentication, then `direct-streamlocal@openssh.com` channels to Unix
//! sockets on the bastion (what `ssh -L local:/remote.sock` uses).
//!
//! Invariants:
//! - the host key is checked by [`HostKeyPolicy`] before authentication;
//!   host certificates are refused (only pinned plain keys are trusted);
//! - connect, handshake and authentication are bounded together by
//!   [`Dial::timeout`]; opening a channel is bounded by the same timeout;
//! - the private key file must not be readable by group or others (as ssh
//!   insists), and its bytes are dropped once the key is parsed;
//! - a key file with a passphrase is used only through ssh-agent, and only
//!   that key: the agent's other identities are never offered.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use russh::client::{self, Msg};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelOpenFailure, ChannelStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::agent::{AgentError, AgentKey};
use crate::host_key::{HostKeyError, HostKeyPolicy, known_hosts_name};

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct Dial {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// An OpenSSH private key (ed25519 recommended), mode 0600. One with a
    /// passphrase must be held by ssh-agent (`ssh-add`).
    pub key_path: PathBuf,
    pub host_keys: HostKeyPolicy,
    /// Bound on TCP connect + handshake + authentication, and on opening
    /// each channel.
    pub timeout: Duration,
}

/// Why a bastion could not be reached or a channel not opened.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error(transparent)]
    HostKey(#[from] HostKeyError),
    #[error("{host} presented a host certificate; only pinned plain host keys are accepted")]
    HostCertificate { host: String },
    #[error("SSH key {}: {reason}", path.display())]
    PrivateKey { path: PathBuf, reason: String },
    #[error("SSH key: {0}")]
    Agent(#[from] AgentError),
    #[error("connecting to {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("connecting to {address}: no SSH session within {} s", timeout.as_secs_f64())]
    Timeout { address: String, timeout: Duration },
    #[error("{address} rejected public-key authentication for user {user}")]
    AuthenticationRejected { address: String, user: String },
    #[error("the bastion refused a channel to {path}: {reason}")]
    ChannelRefused { path: String, reason: String },
    #[error("the bastion refused to run {command:?}: {reason}")]
    CommandRefused { command: String, reason: String },
    #[error("ssh: {0}")]
    Ssh(#[from] russh::Error),
}

struct Pinned {
    host: String,
    port: u16,
    policy: HostKeyPolicy,
    /// Why the key was refused, kept because russh reports only its own
    /// error for a handler failure in some paths.
    refused: Arc<Mutex<Option<String>>>,
}

impl client::Handler for Pinned {
    type Error = DialError;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, DialError> {
        let outcome = match server_public_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => self
                .policy
                .check(&self.host, self.port, key)
                .map_err(DialError::from),
            PublicKeyOrCertificate::Certificate(_) => Err(DialError::HostCertificate {
                host: known_hosts_name(&self.host, self.port),
            }),
        };
        match outcome {
            Ok(()) => Ok(true),
            Err(error) => {
                *self.refused.lock().expect("not poisoned") = Some(error.to_string());
                Err(error)
            }
        }
    }
}

/// The key that logs in: its private half, or a key ssh-agent holds.
pub enum Credential {
    Key(Box<russh::keys::PrivateKey>),
    Agent(AgentKey),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Key(_) => f.write_str("Credential::Key(REDACTED)"),
            Credential::Agent(agent) => f.debug_tuple("Credential::Agent").field(agent).finish(),
        }
    }
}

/// Why [`login`] failed, before the caller names it in its own error type.
#[derive(Debug)]
pub enum LoginError<E> {
    /// The TCP connection failed.
    Connect(std::io::Error),
    /// Connect, handshake and authentication did not finish in time.
    Timeout,
    /// sshd did not accept the public key for this user.
    Rejected,
    /// The handshake or the authentication failed (the handler's error,
    /// e.g. a refused host key, or a protocol error converted into it).
    Ssh(E),
    /// ssh-agent could not sign with the key (only for
    /// [`Credential::Agent`]).
    Agent(AgentError),
}

/// TCP connect (no Nagle), SSH handshake with `handler` (which checks the
/// host key), then public-key authentication as `user`, all within
/// `timeout`. Shared by [`dial`] and the supervisor's tunnels, which differ
/// only in their handler and error type.
pub async fn login<H>(
    host: &str,
    port: u16,
    user: &str,
    credential: Credential,
    config: Arc<client::Config>,
    handler: H,
    timeout: Duration,
) -> Result<client::Handle<H>, LoginError<H::Error>>
where
    H: client::Handler + 'static,
    H::Error: From<russh::Error>,
{
    let started = tokio::time::Instant::now();
    let stream = match connect_tcp(host, port, timeout).await {
        Ok(stream) => stream,
        Err(error) if error.kind() == std::io::ErrorKind::TimedOut => {
            return Err(LoginError::Timeout);
        }
        Err(error) => return Err(LoginError::Connect(error)),
    };
    let left = timeout.saturating_sub(started.elapsed());
    login_over(stream, user, credential, config, handler, left).await
}

/// A TCP connection to `host:port` without Nagle's algorithm, within
/// `timeout` (an error of kind `TimedOut` after it). The supervisor's
/// tunnels use it alone as a cheap probe of a bastion that is down, and
/// start the SSH handshake ([`login_over`]) only on a connection it made.
pub async fn connect_tcp(host: &str, port: u16, timeout: Duration) -> std::io::Result<TcpStream> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect((host, port)))
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no TCP connection within {} ms", timeout.as_millis()),
            )
        })??;
    stream.set_nodelay(true).ok();
    Ok(stream)
}

/// [`login`] on a TCP connection already made (see [`connect_tcp`]): the
/// SSH handshake and the authentication within `timeout`.
pub async fn login_over<H, S>(
    stream: S,
    user: &str,
    credential: Credential,
    config: Arc<client::Config>,
    handler: H,
    timeout: Duration,
) -> Result<client::Handle<H>, LoginError<H::Error>>
where
    H: client::Handler + 'static,
    H::Error: From<russh::Error>,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let attempt = async {
        let mut handle = client::connect_stream(config, stream, handler)
            .await
            .map_err(LoginError::Ssh)?;
        let public = match &credential {
            Credential::Key(key) => key.public_key().clone(),
            Credential::Agent(agent) => agent.public.clone(),
        };
        let hash = rsa_hash(&handle, &public)
            .await
            .map_err(|error| LoginError::Ssh(H::Error::from(error)))?;
        let auth = match credential {
            Credential::Key(key) => handle
                .authenticate_publickey(
                    user.to_string(),
                    PrivateKeyWithHashAlg::new(Arc::new(*key), hash),
                )
                .await
                .map_err(|error| LoginError::Ssh(H::Error::from(error)))?,
            Credential::Agent(agent) => {
                let mut signer = agent.connect().await.map_err(LoginError::Agent)?;
                handle
                    .authenticate_publickey_with(user.to_string(), public, hash, &mut signer)
                    .await
                    .map_err(|error| {
                        LoginError::Agent(AgentError::Agent {
                            socket: agent.socket.clone(),
                            reason: format!("signing the SSH login: {error}"),
                        })
                    })?
            }
        };
        if !auth.success() {
            return Err(LoginError::Rejected);
        }
        Ok(handle)
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or(Err(LoginError::Timeout))
}

/// The signature hash for an RSA key: what the server announces
/// (`server-sig-algs`), else SHA-512, never the SHA-1 `ssh-rsa` that
/// OpenSSH refuses since 8.8. `None` (not applicable) for other keys, which
/// skips the up-to-a-second wait for the server's announcement.
async fn rsa_hash<H: client::Handler>(
    handle: &client::Handle<H>,
    public: &russh::keys::PublicKey,
) -> Result<Option<HashAlg>, russh::Error> {
    if !public.algorithm().is_rsa() {
        return Ok(None);
    }
    Ok(match handle.best_supported_rsa_hash().await? {
        Some(Some(hash)) => Some(hash),
        // Announced without rsa-sha2-*, or not announced: try the best.
        Some(None) | None => Some(HashAlg::Sha512),
    })
}

/// An authenticated SSH connection to a bastion.
pub struct Link {
    handle: Arc<client::Handle<Pinned>>,
    address: String,
    timeout: Duration,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// Connect to the bastion, check its host key, authenticate.
pub async fn dial(dial: &Dial) -> Result<Link, DialError> {
    let address = format!("{}:{}", known_host_or_bracketed(&dial.host), dial.port);
    let credential = load_credential(&dial.key_path)?;
    if let Credential::Agent(agent) = &credential {
        // Say now, before any network, if the agent lacks the key.
        agent.connect().await?;
    }
    let refused = Arc::new(Mutex::new(None));
    let handler = Pinned {
        host: dial.host.clone(),
        port: dial.port,
        policy: dial.host_keys.clone(),
        refused: refused.clone(),
    };
    let config = Arc::new(client::Config {
        nodelay: true,
        inactivity_timeout: None,
        preferred: crate::ciphers::preferred(&crate::ciphers::default_order()),
        ..client::Config::default()
    });
    let attempt = login(
        &dial.host,
        dial.port,
        &dial.user,
        credential,
        config,
        handler,
        dial.timeout,
    )
    .await;
    let handle = match attempt {
        Ok(handle) => handle,
        Err(LoginError::Connect(source)) => return Err(DialError::Connect { address, source }),
        Err(LoginError::Timeout) => {
            return Err(DialError::Timeout {
                address,
                timeout: dial.timeout,
            });
        }
        Err(LoginError::Agent(error)) => return Err(DialError::Agent(error)),
        Err(LoginError::Rejected) => {
            return Err(DialError::AuthenticationRejected {
                address,
                user: dial.user.clone(),
            });
        }
        Err(LoginError::Ssh(error)) => {
            // A refused host key can surface as a generic russh error;
            // report the policy's reason, which names the fingerprints.
            let refused = refused.lock().expect("not poisoned").take();
            return Err(match (error, refused) {
                (error @ (DialError::HostKey(_) | DialError::HostCertificate { .. }), _) => error,
                (_, Some(reason)) => DialError::Ssh(russh::Error::IO(std::io::Error::other(
                    format!("host key refused: {reason}"),
                ))),
                (error, None) => error,
            });
        }
    };
    Ok(Link {
        handle: Arc::new(handle),
        address,
        timeout: dial.timeout,
    })
}

impl Link {
    /// Open a session channel and ask sshd to run `command`; its stdin and
    /// stdout become the stream. With a key whose authorized_keys line
    /// forces `palisade-bastion rpc-relay` (`restrict` and nothing else:
    /// no forwarding), sshd runs the relay instead and hands it `command`
    /// in `SSH_ORIGINAL_COMMAND`. The returned stream keeps the SSH
    /// connection alive.
    pub async fn open_command(&self, command: &str) -> Result<UnixChannel, DialError> {
        let refused = |reason: &str| DialError::CommandRefused {
            command: command.to_string(),
            reason: reason.to_string(),
        };
        let started = async {
            let mut channel = match self.handle.channel_open_session().await {
                Ok(channel) => channel,
                Err(russh::Error::ChannelOpenFailure(reason)) => {
                    return Err(refused(&format!("session refused ({reason:?})")));
                }
                Err(error) => return Err(DialError::Ssh(error)),
            };
            channel.exec(true, command).await?;
            loop {
                match channel.wait().await {
                    Some(russh::ChannelMsg::Success) => return Ok(channel),
                    Some(russh::ChannelMsg::Failure) => {
                        return Err(refused("sshd refused the exec request"));
                    }
                    Some(russh::ChannelMsg::Close | russh::ChannelMsg::Eof) | None => {
                        return Err(refused("the channel closed before the command started"));
                    }
                    Some(_) => continue,
                }
            }
        };
        let channel = match tokio::time::timeout(self.timeout, started).await {
            Ok(result) => result?,
            Err(_) => return Err(self.timed_out(&format!("running {command:?}"))),
        };
        Ok(self.stream(channel))
    }

    /// No answer within the dial timeout while doing `what`.
    fn timed_out(&self, what: &str) -> DialError {
        DialError::Timeout {
            address: format!("{} ({what})", self.address),
            timeout: self.timeout,
        }
    }

    /// `channel` as a byte stream that keeps this connection alive.
    fn stream(&self, channel: russh::Channel<client::Msg>) -> UnixChannel {
        UnixChannel {
            stream: channel.into_stream(),
            _link: self.handle.clone(),
        }
    }

    /// Open a `direct-streamlocal@openssh.com` channel to `path` on the
    /// bastion. The returned stream keeps the SSH connection alive.
    pub async fn open_unix_socket(&self, path: &str) -> Result<UnixChannel, DialError> {
        let open = self.handle.channel_open_direct_streamlocal(path);
        let channel = match tokio::time::timeout(self.timeout, open).await {
            Ok(Ok(channel)) => channel,
            Ok(Err(russh::Error::ChannelOpenFailure(reason))) => {
                return Err(DialError::ChannelRefused {
                    path: path.to_string(),
                    reason: match reason {
                        ChannelOpenFailure::AdministrativelyProhibited => {
                            "administratively prohibited (sshd refused the forward: \
                             AllowStreamLocalForwarding, or authorized_keys \
                             restrict/permitopen)"
                                .into()
                        }
                        ChannelOpenFailure::ConnectFailed => {
                            "connect failed (no such socket on the bastion: is the \
                             validator's tunnel up?)"
                                .into()
                        }
                        other => format!("{other:?}"),
                    },
                });
            }
            Ok(Err(error)) => return Err(DialError::Ssh(error)),
            Err(_) => return Err(self.timed_out(&format!("channel to {path}"))),
        };
        Ok(self.stream(channel))
    }

    /// `host:port` as dialed.
    pub fn address(&self) -> &str {
        &self.address
    }
}

/// A byte stream over one SSH channel (to a Unix socket, or a command's
/// stdin and stdout); holds the connection open.
pub struct UnixChannel {
    stream: ChannelStream<Msg>,
    _link: Arc<client::Handle<Pinned>>,
}

impl AsyncRead for UnixChannel {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for UnixChannel {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

fn known_host_or_bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// Load an OpenSSH private key, refusing one that group or others can
/// read. A key with a passphrase becomes [`Credential::Agent`]: its public
/// half (stored in clear in the file) names the key ssh-agent must hold.
/// So does a file with only a public key (`id_ed25519.pub`, or a hardware
/// key's), whose mode does not matter.
pub fn load_credential(path: &std::path::Path) -> Result<Credential, DialError> {
    let fail = |reason: String| DialError::PrivateKey {
        path: path.to_path_buf(),
        reason,
    };
    let text =
        zeroize::Zeroizing::new(std::fs::read(path).map_err(|error| fail(error.to_string()))?);
    let text = std::str::from_utf8(&text).map_err(|_| fail("not a text key file".into()))?;
    // Only the public half (e.g. of a hardware key): the agent signs.
    if let Some(public) = crate::agent::public_key_file(text) {
        return Ok(Credential::Agent(AgentKey::for_key_file(
            path, public, true,
        )?));
    }
    let mode = std::fs::metadata(path)
        .map_err(|error| fail(error.to_string()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(fail(format!(
            "permissions {:o} are too open (others can read the key); chmod 600 it",
            mode & 0o777
        )));
    }
    match russh::keys::decode_secret_key(text, None) {
        Ok(key) => Ok(Credential::Key(Box::new(key))),
        Err(russh::keys::Error::KeyIsEncrypted) => {
            let public = russh::keys::PrivateKey::from_openssh(text)
                .map_err(|error| fail(format!("an encrypted key that is not OpenSSH's: {error}")))?
                .public_key()
                .clone();
            Ok(Credential::Agent(AgentKey::for_key_file(
                path, public, false,
            )?))
        }
        Err(other) => Err(fail(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_readable_by_others_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id");
        std::fs::write(&path, "not a key").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = load_credential(&path).unwrap_err().to_string();
        assert!(error.contains("too open"), "{error}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let error = load_credential(&path).unwrap_err().to_string();
        assert!(error.starts_with("SSH key"), "{error}");
        let missing = load_credential(&dir.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("No such file"), "{missing}");
    }

    /// An RSA key logs in with an rsa-sha2 signature (OpenSSH refuses the
    /// SHA-1 `ssh-rsa` since 8.8), from a file and through ssh-agent; an
    /// ed25519 key as before.
    #[tokio::test]
    async fn rsa_and_ed25519_keys_log_in_to_real_sshd() {
        let dir = tempfile::tempdir().unwrap();
        let rsa = dir.path().join("id_rsa");
        let status = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "rsa", "-b", "2048", "-N", "", "-C", "", "-f"])
            .arg(&rsa)
            .status()
            .expect("ssh-keygen (openssh-client) is installed");
        assert!(status.success());
        let ed25519 = dir.path().join("id_ed25519");
        palisade_testkit::ssh_keygen(&ed25519).unwrap();
        let rsa_locked = dir.path().join("id_rsa_locked");
        palisade_testkit::encrypted_copy(&rsa, &rsa_locked, "rsa passphrase").unwrap();
        let public = |path: &std::path::Path| {
            std::fs::read_to_string(path.with_extension(match path.extension() {
                Some(ext) => format!("{}.pub", ext.to_string_lossy()),
                None => "pub".into(),
            }))
            .unwrap()
        };
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let sshd = palisade_testkit::Sshd::start(palisade_testkit::SshdOptions::new(
            "127.0.0.1",
            port,
            format!("{}{}", public(&rsa), public(&ed25519)),
        ))
        .unwrap();
        let agent = palisade_testkit::SshAgent::start().unwrap();
        agent.add(&rsa_locked, Some("rsa passphrase")).unwrap();
        let dial_with = |key_path: &std::path::Path| Dial {
            host: "127.0.0.1".into(),
            port,
            user: palisade_testkit::current_user().unwrap(),
            key_path: key_path.to_path_buf(),
            host_keys: HostKeyPolicy {
                pinned_fingerprints: vec![sshd.fingerprint().to_string()],
                ..HostKeyPolicy::default()
            },
            timeout: Duration::from_secs(10),
        };
        dial(&dial_with(&rsa)).await.unwrap();
        dial(&dial_with(&ed25519)).await.unwrap();
        // Through the agent: `for_key_file` reads SSH_AUTH_SOCK, which
        // a test cannot set safely; build the credential directly.
        let locked = russh::keys::PrivateKey::read_openssh_file(&rsa_locked).unwrap();
        let credential = Credential::Agent(AgentKey {
            path: rsa_locked.clone(),
            public: locked.public_key().clone(),
            socket: agent.socket().to_path_buf(),
        });
        let target = dial_with(&rsa_locked);
        let handler = Pinned {
            host: target.host.clone(),
            port,
            policy: target.host_keys.clone(),
            refused: Arc::new(Mutex::new(None)),
        };
        let logged_in = login(
            "127.0.0.1",
            port,
            &target.user,
            credential,
            Arc::new(client::Config::default()),
            handler,
            target.timeout,
        )
        .await;
        assert!(logged_in.is_ok(), "agent login failed");
        let log = sshd.log();
        assert_eq!(log.matches("Accepted publickey").count(), 3, "{log}");
        assert_eq!(log.matches(": RSA SHA256:").count(), 2, "{log}");
    }

    #[tokio::test]
    async fn nothing_listening_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id");
        let status = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .expect("ssh-keygen (openssh-client) is installed");
        assert!(status.success());
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let error = dial(&Dial {
            host: "127.0.0.1".into(),
            port,
            user: "ops".into(),
            key_path: key,
            host_keys: HostKeyPolicy::default(),
            timeout: Duration::from_secs(5),
        })
        .await
        .unwrap_err();
        assert!(matches!(error, DialError::Connect { .. }), "{error}");
    }
}
