//! The control socket (`[rpc] socket`).
//!
//! This is the socket the tunnels publish on every bastion (reverse
//! Unix-socket forward). Every connection first receives the
//! [`Greeting`](palisade_wire::rpc::Greeting) line, which is all a bastion's
//! health check needs to prove the whole path is alive. The request
//! protocol (JSON-RPC with TLS and operator authentication) is not served
//! yet: after the greeting the connection is closed.
//!
//! Invariants:
//! - the socket's directory is created 0700 if missing and must not be
//!   accessible to others (group access is allowed for an operators'
//!   group); the socket itself is mode 0600 (0660 would be the group
//!   choice, not made yet);
//! - a leftover socket is replaced only when nothing listens on it: a
//!   second supervisor never steals the socket of a running one;
//! - at most [`MAX_CONNECTIONS`] connections are served at once and every
//!   write is bounded by [`WRITE_TIMEOUT`], so a stuck peer costs one slot
//!   for a bounded time and never blocks the supervisor.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use palisade_wire::rpc::Greeting;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::RpcSettings;

/// Connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 64;

/// Bound on writing the greeting to one peer.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// A bound control socket, not yet serving.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    greeting: Vec<u8>,
}

impl ControlSocket {
    /// Bind `settings.socket` (see the module invariants).
    pub fn bind(settings: &RpcSettings) -> anyhow::Result<ControlSocket> {
        let listener = bind_private_socket(&settings.socket)?;
        Ok(ControlSocket {
            listener,
            path: settings.socket.clone(),
            greeting: Greeting::new(&settings.name, env!("CARGO_PKG_VERSION")).to_line(),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serve until `shutdown`, then remove the socket file.
    pub async fn serve(self, shutdown: CancellationToken) {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let greeting: Arc<[u8]> = self.greeting.into();
        loop {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break,
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            let mut stream = match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "control socket: accept failed");
                    // EMFILE and the like: do not spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let greeting = greeting.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let written = tokio::time::timeout(WRITE_TIMEOUT, async {
                    stream.write_all(&greeting).await?;
                    stream.shutdown().await
                })
                .await;
                if let Ok(Err(error)) = written {
                    tracing::debug!(%error, "control socket: peer left before the greeting");
                }
            });
        }
        if let Err(error) = std::fs::remove_file(&self.path)
            && error.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(socket = %self.path.display(), %error, "could not remove the control socket");
        }
    }
}

/// Bind a Unix socket readable only by this user, in a directory closed to
/// others; replace a stale socket, never a live one or another file.
pub fn bind_private_socket(path: &Path) -> anyhow::Result<UnixListener> {
    let parent = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .with_context(|| format!("{} has no parent directory", path.display()))?;
    if !parent.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .with_context(|| format!("creating directory {}", parent.display()))?;
    }
    let mode = std::fs::metadata(parent)
        .with_context(|| format!("inspecting {}", parent.display()))?
        .permissions()
        .mode();
    if mode & 0o007 != 0 {
        bail!(
            "the control socket's directory {} has mode {:o}: it must not be accessible to \
             others (chmod o-rwx, or RuntimeDirectoryMode=0700 under systemd)",
            parent.display(),
            mode & 0o7777
        );
    }
    match std::fs::symlink_metadata(path) {
        Ok(metadata) if metadata.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => bail!(
                    "another process is listening on {}: is a supervisor already running?",
                    path.display()
                ),
                Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {
                    tracing::info!(socket = %path.display(), "replacing a stale control socket");
                    std::fs::remove_file(path)
                        .with_context(|| format!("removing stale socket {}", path.display()))?;
                }
                Err(error) => {
                    return Err(error)
                        .with_context(|| format!("probing existing socket {}", path.display()));
                }
            }
        }
        Ok(_) => bail!(
            "{} exists and is not a socket; not replacing it",
            path.display()
        ),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(error).with_context(|| format!("inspecting {}", path.display())),
    }
    let listener = std::os::unix::net::UnixListener::bind(path)
        .with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("setting mode 0600 on {}", path.display()))?;
    listener.set_nonblocking(true)?;
    Ok(UnixListener::from_std(listener)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn settings(dir: &Path) -> RpcSettings {
        RpcSettings {
            socket: dir.join("run").join("supervisor.sock"),
            name: "val-a".into(),
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
        let server = tokio::spawn(socket.serve(shutdown.clone()));
        for _ in 0..3 {
            let mut stream = tokio::net::UnixStream::connect(&settings.socket)
                .await
                .unwrap();
            let mut line = Vec::new();
            stream.read_to_end(&mut line).await.unwrap();
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
