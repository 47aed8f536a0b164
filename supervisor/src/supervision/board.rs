//! The board: what the supervision executor publishes for the control RPC
//! to read — the node's state, pid and version, whether the vault is
//! locked, the upgrade being held or performed, and the backup worker's
//! trigger while the vault is unlocked.
//!
//! A leaf: it knows no JSON and decides nothing. Only the executor writes
//! it (after every step of the machine, before performing the step's
//! actions); everyone else reads.

use std::sync::{Arc, Mutex};

use crate::backup::BackupTrigger;
use crate::upgrade::layout::Version;

/// The node's state as the RPC shows it (the contract's type).
pub use palisade_wire::rpc::results::NodeState;

/// What the executor shares with the control RPC.
#[derive(Debug)]
pub struct Board {
    pub node: NodeState,
    pub pid: Option<u32>,
    pub version: Option<String>,
    /// `None`: no vault configured.
    pub vault_locked: Option<bool>,
    /// Asks the backup worker for a backup; `None` while the vault is
    /// locked (or without a vault).
    pub backup_trigger: Option<BackupTrigger>,
    /// An upgrade plan held until the node reaches its height, in words.
    pub scheduled_upgrade: Option<String>,
    /// The version the upgrade in progress targets; `upgrade.cancel`
    /// refuses it while `node` is [`NodeState::Upgrading`].
    pub upgrading: Option<Version>,
}

/// Shared handle on the [`Board`].
pub type SharedBoard = Arc<Mutex<Board>>;

/// Locks the board, surviving a poisoned lock (the data stays usable).
pub fn board(shared: &SharedBoard) -> std::sync::MutexGuard<'_, Board> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A new board for a supervisor with (or without) a vault.
pub fn new_board(vault: bool) -> SharedBoard {
    Arc::new(Mutex::new(Board {
        node: NodeState::Starting,
        pid: None,
        version: None,
        vault_locked: vault.then_some(true),
        backup_trigger: None,
        scheduled_upgrade: None,
        upgrading: None,
    }))
}
