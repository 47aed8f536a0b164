//! `status`, `health` and `tunnel.list`: what the supervisor, the node, the
//! vault, the sign state, the backups, the tunnels and the upgrades look
//! like now. Read-only: the board the executor publishes, the state file,
//! `data/upgrade-info.json`, the node's RPC and the tunnels' observers.

use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use palisade_wire::rpc::results::{
    HealthResult, LastBackup, NodeStatus, PlannedUpgrade, StatusResult, SupervisorStatus,
    TunnelEntry, UpgradesStatus, VaultStatus, WatermarkStatus,
};

use crate::node::files::NodePaths;
use crate::node::rpc::NodeRpc;
use crate::sign_state::{LocalState, read_local};
use crate::supervision::board::{NodeState, SharedBoard, board};
use crate::tunnel::BastionObserver;
use crate::upgrade::watch::{FileState, read_plan_file};

/// Reads what `status` shows.
pub(super) struct StatusReader {
    board: SharedBoard,
    validator: String,
    state_path: PathBuf,
    upgrade_info_path: PathBuf,
    node_rpc: NodeRpc,
    tunnels: Vec<BastionObserver>,
    started: Instant,
    started_at: SystemTime,
    last_backup: tokio::sync::watch::Receiver<Option<LastBackup>>,
}

impl StatusReader {
    pub(super) fn new(
        config: &crate::config::Config,
        node: &NodePaths,
        board: SharedBoard,
        tunnels: Vec<BastionObserver>,
        last_backup: tokio::sync::watch::Receiver<Option<LastBackup>>,
    ) -> StatusReader {
        StatusReader {
            board,
            validator: config.rpc.name.clone(),
            state_path: node.state.clone(),
            upgrade_info_path: config.upgrade_info_path(),
            node_rpc: NodeRpc::new(&config.daemon_home),
            tunnels,
            started: Instant::now(),
            started_at: SystemTime::now(),
            last_backup,
        }
    }

    /// The tunnel to the bastion called `name`.
    pub(super) fn tunnel(&self, name: &str) -> Option<&BastionObserver> {
        self.tunnels.iter().find(|observer| observer.name() == name)
    }

    /// The configured bastions' names.
    pub(super) fn tunnel_names(&self) -> Vec<String> {
        self.tunnels
            .iter()
            .map(|observer| observer.name().to_owned())
            .collect()
    }

    /// `tunnel.list`'s entries.
    pub(super) fn tunnels(&self) -> Vec<TunnelEntry> {
        self.tunnels
            .iter()
            .map(|observer| {
                let state = observer.snapshot();
                TunnelEntry {
                    name: observer.name().to_owned(),
                    connected: state.connected_since.is_some(),
                    connected_since: state.connected_since.map(unix_seconds),
                    last_error: state.last_error,
                    last_forward_error: state.last_forward_error,
                    bytes_to_bastion: state.bytes_to_bastion,
                    bytes_from_bastion: state.bytes_from_bastion,
                    reconnects: u64::from(state.reconnects),
                    stopped: state.stopped,
                    address: observer.dial().get(),
                    round_trip_ms: state
                        .round_trip
                        .map(|rtt| u64::try_from(rtt.as_millis()).unwrap_or(u64::MAX)),
                }
            })
            .collect()
    }

    /// `status`.
    pub(super) async fn status(&self) -> StatusResult {
        let (state, pid, version, vault_locked, scheduled) = {
            let board = board(&self.board);
            (
                board.node,
                board.pid,
                board.version.clone(),
                board.vault_locked,
                board.scheduled_upgrade.clone(),
            )
        };
        let height = if state == NodeState::Running {
            self.node_rpc.latest_height().await
        } else {
            None
        };
        let watermark = match read_local(&self.state_path) {
            LocalState::Present(watermark) => Some(WatermarkStatus::Known {
                height: watermark.height,
                round: watermark.round,
                step: u8::from(watermark.step),
            }),
            LocalState::Missing => None,
            LocalState::Unreadable(error) => Some(WatermarkStatus::Unreadable {
                error: error.to_string(),
            }),
        };
        let plan_on_disk = match read_plan_file(&self.upgrade_info_path) {
            FileState::Plan(plan) => Some(PlannedUpgrade {
                name: plan.name,
                height: plan.height,
            }),
            _ => None,
        };
        StatusResult {
            validator: self.validator.clone(),
            supervisor: SupervisorStatus {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                pid: std::process::id(),
                started_at: unix_seconds(self.started_at),
                uptime_s: self.started.elapsed().as_secs(),
            },
            node: NodeStatus {
                state,
                pid,
                version,
                height,
            },
            vault: VaultStatus {
                enabled: vault_locked.is_some(),
                locked: vault_locked,
            },
            watermark,
            last_backup: self.last_backup.borrow().clone(),
            tunnels: self.tunnels(),
            upgrades: UpgradesStatus {
                plan_on_disk,
                scheduled,
            },
            failover: None,
        }
    }

    /// `health`: what is not as it should be, from `status`.
    pub(super) async fn health(&self) -> HealthResult {
        let status = self.status().await;
        let mut problems = Vec::new();
        // A failover standby does not run its node by design.
        if status.node.state != NodeState::Running && status.node.state != NodeState::Standby {
            problems.push(format!("node is {}", status.node.state));
        } else if status.node.height.is_none() {
            problems.push("node RPC does not answer".to_string());
        }
        if status.vault.locked == Some(true) {
            problems.push("vault is locked".to_string());
        }
        for tunnel in &status.tunnels {
            if !tunnel.connected {
                problems.push(format!(
                    "tunnel to {} is down: {}",
                    tunnel.name,
                    tunnel.last_error.as_deref().unwrap_or("not connected yet")
                ));
            }
        }
        HealthResult {
            ok: problems.is_empty(),
            problems,
        }
    }
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}
