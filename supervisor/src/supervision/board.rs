//! The board: what the supervision executor publishes for the control RPC
//! and the metrics to read — the node's state and the machine's phase, pid
//! and version, whether the vault is locked and this host is primary, the
//! upgrade being held or performed and the upgrades finished, the backup
//! worker's trigger while the vault is unlocked, the daemon's output
//! counters and the validator's address once known.
//!
//! A leaf: it knows no JSON and decides nothing. Only the executor writes
//! it (after every step of the machine, before performing the step's
//! actions); everyone else reads.

use std::sync::{Arc, Mutex};

use crate::backup::BackupTrigger;
use crate::node::output::OutputStats;
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
    /// The machine's phase ([`crate::supervision::machine::Phase::name`]).
    pub phase: &'static str,
    /// This host is the one meant to sign: always without `[failover]`,
    /// while it holds the leadership with it.
    pub primary: bool,
    /// The running daemon's output counters.
    pub output: Option<Arc<OutputStats>>,
    /// Output lines dropped by the daemons that ran before it.
    pub output_lines_dropped_before: u64,
    /// The validator's consensus address (upper-case hex), once read
    /// (from the vault at the first unlock, or the node's key file).
    pub validator_address: Option<String>,
    /// Upgrade records written since the supervisor started, by outcome.
    pub upgrades: UpgradeCounts,
}

/// How many upgrades ended each way since the supervisor started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpgradeCounts {
    pub completed: u64,
    pub switched_not_restarted: u64,
    pub failed: u64,
}

impl UpgradeCounts {
    /// Counts one record's outcome.
    pub fn count(&mut self, outcome: &palisade_wire::upgrade_record::UpgradeOutcome) {
        use palisade_wire::upgrade_record::UpgradeOutcome;
        match outcome {
            UpgradeOutcome::Completed => self.completed += 1,
            UpgradeOutcome::SwitchedNotRestarted => self.switched_not_restarted += 1,
            UpgradeOutcome::Failed(_) => self.failed += 1,
        }
    }
}

impl Board {
    /// Daemon output lines dropped since the supervisor started.
    pub fn output_lines_dropped(&self) -> u64 {
        self.output_lines_dropped_before + self.output.as_ref().map_or(0, |stats| stats.dropped())
    }
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
        phase: "starting",
        primary: false,
        output: None,
        output_lines_dropped_before: 0,
        validator_address: None,
        upgrades: UpgradeCounts::default(),
    }))
}
