//! The record every upgrade leaves behind: what was detected, downloaded,
//! verified, backed up, switched and started, and how long each step took.
//!
//! The supervisor appends one JSON object per line to
//! `$DAEMON_HOME/cosmovisor/palisade-upgrades.jsonl`; `palisade-ctl` and
//! operators read it back.

use serde::{Deserialize, Serialize};

/// How the supervisor learned that an upgrade is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectionSource {
    /// `data/upgrade-info.json` written by the upgrade module.
    UpgradeInfoFile,
    /// The `UPGRADE "name" NEEDED at height: N` line on the daemon's output.
    OutputLine,
}

/// One step of an upgrade, in the order performed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpgradeStep {
    /// The old daemon was stopped after the plan was detected.
    StopOld,
    /// The upgrade binary was downloaded (only with auto-download).
    Download,
    /// The downloaded artifact's checksum was verified and unpacked.
    Verify,
    /// `data/` was snapshotted.
    DataBackup,
    /// `COSMOVISOR_CUSTOM_PREUPGRADE` and `<binary> pre-upgrade` ran.
    PreUpgrade,
    /// `current` was switched to the upgrade directory.
    Switch,
    /// The new binary was started.
    StartNew,
}

/// Outcome of one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: UpgradeStep,
    /// Wall-clock duration of the step in milliseconds.
    pub duration_ms: u64,
    /// Human-readable detail: a URL, a checksum, a backup path, an exit code.
    #[serde(default)]
    pub detail: String,
}

/// How the upgrade ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "reason")]
pub enum UpgradeOutcome {
    /// The new binary is running.
    Completed,
    /// The switch was done; the supervisor exited as configured
    /// (`DAEMON_RESTART_AFTER_UPGRADE=false`).
    SwitchedNotRestarted,
    /// The upgrade could not be performed; the node stays halted and the
    /// reason says why.
    Failed(String),
}

/// The full record of one upgrade attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeRecord {
    /// Upgrade name as found in the plan (after recasing).
    pub name: String,
    /// Plan height, when known.
    #[serde(default)]
    pub height: Option<u64>,
    pub detected_by: DetectionSource,
    /// RFC 3339 time of detection.
    pub detected_at: String,
    pub steps: Vec<StepRecord>,
    pub outcome: UpgradeOutcome,
    /// Detected → new binary running, excluding the data backup, in ms.
    #[serde(default)]
    pub switch_ms: Option<u64>,
}
