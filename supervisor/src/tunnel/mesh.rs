//! [`TunnelMesh`]: every configured bastion's tunnel, started together and
//! stopped together, plus the backup stores reached through them.
//!
//! Each tunnel runs on its own tasks: a bastion that is down, slow or
//! refusing never delays the others, gaiad, or the supervision executor (its
//! local listeners stay bound and refuse connections while it is down, so
//! gaiad simply peers through the other bastions).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{BastionObserver, BastionState, BastionTunnel, DialTarget, TunnelError};
use crate::backup::{BackupStore, RemoteStore};
use crate::config::TunnelSettings;

/// Bound on stopping all tunnels at shutdown.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// The running tunnels.
pub struct TunnelMesh {
    /// With the command reaching the bastion's backup store, if configured.
    tunnels: Vec<(BastionTunnel, Option<String>)>,
    shutdown: CancellationToken,
    connect_timeout: Duration,
}

impl TunnelMesh {
    /// Bind every local forward and start every tunnel; fails only when a
    /// local listener cannot be bound (a configuration problem), never
    /// because a bastion is unreachable.
    ///
    /// `dial` names the bastions that answer on another address than their
    /// configured host (after an Elastic IP rotation, `crate::eip`).
    pub async fn start(
        settings: &TunnelSettings,
        rpc_socket: &Path,
        dial: &std::collections::BTreeMap<String, String>,
        shutdown: &CancellationToken,
    ) -> Result<TunnelMesh, TunnelError> {
        let shutdown = shutdown.child_token();
        let mut tunnels = Vec::new();
        for bastion in &settings.bastions {
            let config = settings.bastion_config(bastion, rpc_socket);
            if let Some(address) = dial.get(&bastion.name) {
                tracing::info!(bastion = %bastion.name, %address, configured = %bastion.host, "dialing the address of the last elastic IP rotation");
                config.dial.set(Some(address.clone()));
            }
            tracing::info!(
                bastion = %bastion.name,
                address = %format!("{}@{}:{}", bastion.user, bastion.host, bastion.port),
                rpc_socket = bastion.rpc_socket.as_deref().unwrap_or("-"),
                backup_command = bastion.backup_command.as_deref().unwrap_or("-"),
                local_forwards = bastion.local_forwards.len(),
                remote_forwards = bastion.remote_forwards.len(),
                "starting bastion tunnel"
            );
            let tunnel = match BastionTunnel::start(config, shutdown.clone()).await {
                Ok(tunnel) => tunnel,
                Err(error) => {
                    shutdown.cancel();
                    return Err(error);
                }
            };
            tunnels.push((tunnel, bastion.backup_command.clone()));
        }
        Ok(TunnelMesh {
            tunnels,
            shutdown,
            connect_timeout: settings.connect_timeout,
        })
    }

    /// A backup store per bastion with a `backup-command`, named
    /// `bastion:<name>`, holding `validator`'s backups.
    pub fn backup_stores(&self, validator: &str) -> Vec<Arc<dyn BackupStore>> {
        self.tunnels
            .iter()
            .filter_map(|(tunnel, backup_command)| {
                let command = backup_command.as_ref()?;
                let store = RemoteStore::new(
                    Arc::new(tunnel.dialer(DialTarget::Exec(command.clone()))),
                    validator,
                    crate::backup::bastion_store_name(tunnel.name()),
                );
                Some(Arc::new(store) as Arc<dyn BackupStore>)
            })
            .collect()
    }

    /// The dialers of the bastions with a `backup-command`, by name: where
    /// log segments go (`crate::logs`).
    pub fn log_dialers(&self) -> Vec<(String, Arc<dyn crate::backup::StreamDialer>)> {
        self.tunnels
            .iter()
            .filter_map(|(tunnel, backup_command)| {
                let command = backup_command.as_ref()?;
                let dialer: Arc<dyn crate::backup::StreamDialer> =
                    Arc::new(tunnel.dialer(DialTarget::Exec(command.clone())));
                Some((tunnel.name().to_string(), dialer))
            })
            .collect()
    }

    /// Wait (at most the connect timeout plus a second) for the bastions
    /// that hold backups, so the start rule sees them; the ones still down
    /// are named in the log and skipped.
    pub async fn wait_for_backup_bastions(&self) {
        // One deadline for all: waiting in turn costs no more than the
        // slowest bastion.
        let deadline = tokio::time::Instant::now() + self.connect_timeout + Duration::from_secs(1);
        for (tunnel, backup_command) in &self.tunnels {
            if backup_command.is_none() {
                continue;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if !tunnel.wait_connected(left).await {
                tracing::warn!(
                    bastion = tunnel.name(),
                    "bastion not reachable at start: its backups are not consulted by the start check"
                );
            }
        }
    }

    /// The current state of every tunnel, in configuration order.
    pub fn states(&self) -> Vec<(String, BastionState)> {
        self.tunnels
            .iter()
            .map(|(tunnel, _)| (tunnel.name().to_string(), tunnel.snapshot()))
            .collect()
    }

    /// Handles that read every tunnel's state, for the control RPC.
    pub fn observers(&self) -> Vec<BastionObserver> {
        self.tunnels
            .iter()
            .map(|(tunnel, _)| tunnel.observer())
            .collect()
    }

    /// Close every connection and wait (bounded) for the tasks to end.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for (tunnel, _) in self.tunnels {
            let name = tunnel.name().to_string();
            match tokio::time::timeout(STOP_TIMEOUT, tunnel.stopped()).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::debug!(bastion = %name, %error, "tunnel had stopped"),
                Err(_) => tracing::warn!(bastion = %name, "tunnel did not stop in time"),
            }
        }
    }
}
