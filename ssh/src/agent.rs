//! Keys held by ssh-agent. An operator whose OpenSSH key has a passphrase
//! adds it once with `ssh-add`, and `palisade-ctl` signs through the agent
//! at `$SSH_AUTH_SOCK` as ssh does: the passphrase and the private key never
//! reach palisade-ctl. Hardware-backed keys that the agent exposes work the
//! same way.
//!
//! Invariants:
//! - the agent is used only for a key file that is encrypted, and only for
//!   the public key that file names: the agent's other identities are never
//!   offered to a bastion or a supervisor;
//! - every exchange with the agent is bounded by [`AGENT_TIMEOUT`] (an agent
//!   that asks for confirmation, `ssh-add -c`, has that long to be answered).

use std::path::{Path, PathBuf};
use std::time::Duration;

use russh::keys::PublicKey;
use russh::keys::agent::client::AgentClient;
use russh::keys::ssh_key::Signature;
use tokio::net::UnixStream;

/// Bound on connecting to the agent and on each request to it.
pub const AGENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a key held by ssh-agent could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The key file is encrypted and there is no agent to sign with.
    #[error(
        "{} has a passphrase and no ssh-agent is available (SSH_AUTH_SOCK is not set): \
         run `ssh-add {}` in a session with an agent, or use an unencrypted key kept on \
         an encrypted disk",
        path.display(),
        path.display()
    )]
    NoAgent { path: PathBuf },
    /// The agent runs but does not hold this key.
    #[error(
        "the ssh-agent at {} does not hold the key of {} ({fingerprint}): add it with \
         `ssh-add` (for a key with a passphrase: `ssh-add {}`)",
        socket.display(),
        path.display(),
        path.display()
    )]
    NotInAgent {
        path: PathBuf,
        socket: PathBuf,
        fingerprint: String,
    },
    /// The key file holds only the public half and there is no agent.
    #[error(
        "{} is a public key, whose private half must be in ssh-agent, and no ssh-agent is \
         available (SSH_AUTH_SOCK is not set)",
        path.display()
    )]
    NoAgentForPublicKey { path: PathBuf },
    /// The agent could not be reached, refused, or answered nonsense.
    #[error("ssh-agent at {}: {reason}", socket.display())]
    Agent { socket: PathBuf, reason: String },
}

/// The key of a key file that holds only a public key (`ssh-ed25519 AAAA…
/// [comment]`, one line, as in `id_ed25519.pub`); `None` for anything else.
pub fn public_key_file(text: &str) -> Option<PublicKey> {
    let mut lines = text.lines().filter(|line| !line.trim().is_empty());
    let line = lines.next()?;
    if lines.next().is_some() {
        return None;
    }
    PublicKey::from_openssh(line.trim()).ok()
}

/// A public key whose private half is held by the agent at `socket`.
#[derive(Debug, Clone)]
pub struct AgentKey {
    /// The key file this came from, for messages.
    pub path: PathBuf,
    pub public: PublicKey,
    pub socket: PathBuf,
}

impl AgentKey {
    /// The agent named by `$SSH_AUTH_SOCK` for the key file at `path`:
    /// an encrypted private key, or only the public key of one the agent
    /// holds (a hardware key, say); `public` is its public half either
    /// way. The agent is not contacted yet: [`AgentKey::connect`] does that.
    pub fn for_key_file(
        path: &Path,
        public: PublicKey,
        public_only: bool,
    ) -> Result<AgentKey, AgentError> {
        let socket = std::env::var_os("SSH_AUTH_SOCK")
            .filter(|value| !value.is_empty())
            .map(PathBuf::from)
            .ok_or_else(|| {
                let path = path.to_path_buf();
                if public_only {
                    AgentError::NoAgentForPublicKey { path }
                } else {
                    AgentError::NoAgent { path }
                }
            })?;
        Ok(AgentKey {
            path: path.to_path_buf(),
            public,
            socket,
        })
    }

    fn failed(&self, reason: impl std::fmt::Display) -> AgentError {
        AgentError::Agent {
            socket: self.socket.clone(),
            reason: reason.to_string(),
        }
    }

    async fn bounded<T, E: std::fmt::Display>(
        &self,
        what: &str,
        step: impl Future<Output = Result<T, E>>,
    ) -> Result<T, AgentError> {
        match tokio::time::timeout(AGENT_TIMEOUT, step).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(self.failed(format!("{what}: {error}"))),
            Err(_) => Err(self.failed(format!(
                "{what}: no answer within {} s",
                AGENT_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Connect to the agent and check that it holds this key.
    pub async fn connect(&self) -> Result<AgentClient<UnixStream>, AgentError> {
        let mut client = self
            .bounded("connecting", AgentClient::connect_uds(&self.socket))
            .await?;
        let identities = self
            .bounded("listing keys", client.request_identities())
            .await?;
        if identities
            .iter()
            .any(|identity| identity.public_key().key_data() == self.public.key_data())
        {
            Ok(client)
        } else {
            Err(AgentError::NotInAgent {
                path: self.path.clone(),
                socket: self.socket.clone(),
                fingerprint: crate::host_key::fingerprint(&self.public),
            })
        }
    }

    /// Have the agent sign `data` (for ed25519: the plain 64-byte
    /// signature, the same one the key file would give).
    pub async fn sign(&self, data: &[u8]) -> Result<Signature, AgentError> {
        let mut client = self.connect().await?;
        self.bounded(
            "signing",
            client.sign_request_signature(&self.public, None, data),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer as _, Verifier as _};
    use palisade_testkit::{SshAgent, encrypted_copy, ssh_keygen};

    const PASSPHRASE: &str = "correct horse 42";

    /// The agent signs with the key the file names and no other, and the
    /// signature is exactly the one the unencrypted key would give.
    #[tokio::test]
    async fn the_agent_signs_with_the_key_file_s_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let (plain, other, locked) = (
            dir.path().join("plain"),
            dir.path().join("other"),
            dir.path().join("locked"),
        );
        ssh_keygen(&plain).unwrap();
        ssh_keygen(&other).unwrap();
        encrypted_copy(&plain, &locked, PASSPHRASE).unwrap();
        let file = russh::keys::PrivateKey::read_openssh_file(&locked).unwrap();
        assert!(file.is_encrypted());
        let agent = SshAgent::start().unwrap();
        let key = AgentKey {
            path: locked.clone(),
            public: file.public_key().clone(),
            socket: agent.socket().to_path_buf(),
        };

        agent.add(&other, None).unwrap();
        let error = key.sign(b"challenge").await.unwrap_err();
        assert!(matches!(error, AgentError::NotInAgent { .. }), "{error}");
        let message = error.to_string();
        assert!(
            message.contains("ssh-add") && message.contains("locked"),
            "{message}"
        );
        assert!(public_key_file(&std::fs::read_to_string(&locked).unwrap()).is_none());
        let public_text = std::fs::read_to_string(dir.path().join("locked.pub")).unwrap();
        assert_eq!(
            public_key_file(&public_text),
            Some(file.public_key().clone())
        );
        assert_eq!(
            public_key_file(&format!("\n{public_text}\n")),
            Some(file.public_key().clone())
        );
        assert!(public_key_file(&format!("{public_text}{public_text}")).is_none());
        assert!(public_key_file("").is_none());

        agent.add(&locked, Some(PASSPHRASE)).unwrap();
        let signature = key.sign(b"challenge").await.unwrap();
        let plain_key = russh::keys::PrivateKey::read_openssh_file(&plain).unwrap();
        let seed = plain_key.key_data().ed25519().unwrap().private.to_bytes();
        let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
        assert_eq!(
            signature.as_bytes(),
            signing.sign(b"challenge").to_bytes().as_slice()
        );
        let bytes = <[u8; 64]>::try_from(signature.as_bytes()).unwrap();
        signing
            .verifying_key()
            .verify(b"challenge", &ed25519_dalek::Signature::from_bytes(&bytes))
            .unwrap();
    }

    #[tokio::test]
    async fn an_agent_that_is_not_there_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        ssh_keygen(&path).unwrap();
        let key = AgentKey {
            path: path.clone(),
            public: russh::keys::PublicKey::read_openssh_file(path.with_extension("pub")).unwrap(),
            socket: dir.path().join("no-agent.sock"),
        };
        let Err(error) = key.connect().await else {
            panic!("connected to an agent that is not there");
        };
        let error = error.to_string();
        assert!(
            error.contains("no-agent.sock") && error.contains("connecting"),
            "{error}"
        );
    }
}
