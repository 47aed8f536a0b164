//! The results of the control RPC's methods: exactly the JSON the
//! supervisor answers (`docs/rpc.md` §3 and §7).
//!
//! Serializing a value gives the answer's JSON, `null` members included
//! where the supervisor writes them (`"pid": null`) and optional members
//! left out where it leaves them out (`"note"`, `"warning"`). Reading is
//! lenient — no `deny_unknown_fields` — so that a client keeps working
//! against a newer supervisor that adds members; a member the supervisor
//! always sends is required, so that an answer of another shape is not
//! taken for an empty one.

use serde::{Deserialize, Serialize};

use super::Role;
use crate::upgrade_record::UpgradeRecord;

/// The node as the supervision loop last saw it (`status`'s
/// `node.state`, and the answer of the node and vault commands).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// The supervisor is starting: opening the vault, running the start
    /// check, or starting the daemon.
    Starting,
    /// The vault is locked: the node does not run until `vault.unlock`.
    Locked,
    /// The daemon runs.
    Running,
    /// Stopped by an operator (`node.stop`); `node.start` starts it again.
    Stopped,
    /// Waiting out a restart backoff after a crash.
    Restarting,
    /// Stopped for an upgrade that cannot proceed (e.g. its binary is
    /// missing); `current` still points at the old version.
    Halted,
    /// An upgrade is being performed.
    Upgrading,
    /// The node is being stopped (`node.stop`, `node.restart`, `vault.lock`,
    /// a shutdown), or the supervisor is shutting down.
    Stopping,
    /// `[failover]`: unlocked and ready, but another host holds the
    /// validator's leadership (or none does yet): the node does not run.
    Standby,
}

impl NodeState {
    /// The state as the RPC spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Starting => "starting",
            NodeState::Locked => "locked",
            NodeState::Running => "running",
            NodeState::Stopped => "stopped",
            NodeState::Restarting => "restarting",
            NodeState::Halted => "halted",
            NodeState::Upgrading => "upgrading",
            NodeState::Stopping => "stopping",
            NodeState::Standby => "standby",
        }
    }
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

// ------------------------------------------------------------------ auth

/// `auth.challenge`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthChallengeResult {
    /// Standard base64 (with padding) of 32 random bytes, to be signed.
    pub challenge: String,
}

/// `auth.login`: who the connection now acts as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthLoginResult {
    /// The operator's name, as configured.
    pub operator: String,
    /// The operator's role.
    pub role: Role,
}

// ---------------------------------------------------------------- status

/// `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResult {
    /// The validator's name (`[rpc] name`), as in the greeting.
    pub validator: String,
    /// The supervisor process.
    pub supervisor: SupervisorStatus,
    /// The node.
    pub node: NodeStatus,
    /// The key vault.
    pub vault: VaultStatus,
    /// The local sign state's watermark; `null` when the state file does
    /// not exist.
    pub watermark: Option<WatermarkStatus>,
    /// The last backup this supervisor wrote since it started; `null`
    /// before the first.
    pub last_backup: Option<LastBackup>,
    /// The tunnels, one per `[[bastion]]`, as `tunnel.list` gives them.
    pub tunnels: Vec<TunnelEntry>,
    /// Upgrades the supervisor knows of.
    pub upgrades: UpgradesStatus,
    /// `[failover]`: this host's role and the leadership; absent without
    /// `[failover]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<FailoverStatus>,
}

/// `status.failover` and `failover.status`: who signs for the validator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverStatus {
    /// This host's id (`[failover] host-id`).
    pub host_id: String,
    /// `primary` (holds the leadership) or `standby`.
    pub role: String,
    /// The host holding the leadership as etcd last said; `null` when
    /// none does or etcd could not be read.
    pub leader: Option<String>,
    /// The leader's fencing token (its leader key's create revision).
    pub token: Option<i64>,
    /// The lease's TTL.
    pub lease_ttl_s: u64,
    /// On the primary: milliseconds left before it must stop signing
    /// unless a renewal moves the deadline.
    pub signing_deadline_in_ms: Option<u64>,
    /// Whether automatic takeover is paused (`failover.pause`); `null`
    /// when etcd could not be read.
    pub paused: Option<bool>,
    /// `auto` or `manual` (`[failover] takeover`).
    pub takeover: String,
    /// The other hosts.
    pub peers: Vec<String>,
    /// `null` when the last look at etcd worked, else what failed.
    pub etcd_error: Option<String>,
    /// The last handoff record seen in etcd.
    pub last_handoff: Option<HandoffSummary>,
    /// What this host waits for, in words (a takeover's guard, a reserved
    /// handoff), when anything.
    pub note: Option<String>,
}

/// A handoff record, as `failover.status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoffSummary {
    pub from: String,
    pub to: String,
    /// The fencing token the old primary gave up.
    pub from_token: i64,
    /// Its final sign state, in words; `null` when it had none.
    pub watermark: Option<String>,
    /// When it was written, Unix milliseconds (the writer's clock).
    pub at_ms: u64,
    /// Whether its signature verified against the vault's backup key.
    pub verified: bool,
}

/// `failover.handoff`: the validator was handed over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverHandoffResult {
    /// The host the record names.
    pub to: String,
    /// The fencing token this host gave up.
    pub token: i64,
    /// The final sign state, in words; `null` when there was none.
    pub watermark: Option<String>,
    /// The stores that took the final backup.
    pub stores: Vec<String>,
    /// This host's node state now (`standby`).
    pub node: NodeState,
}

/// `failover.pause` and `failover.resume`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverPauseResult {
    /// Whether automatic takeover is paused now.
    pub paused: bool,
}

/// `status.supervisor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisorStatus {
    /// The supervisor's release.
    pub version: String,
    /// Its process ID.
    pub pid: u32,
    /// When it started, Unix seconds.
    pub started_at: u64,
    /// Seconds since it started.
    pub uptime_s: u64,
}

/// `status.node`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// What the node is doing.
    pub state: NodeState,
    /// The daemon's process ID while it runs, else `null`.
    pub pid: Option<u32>,
    /// The daemon's version when known, else `null`.
    pub version: Option<String>,
    /// The node's latest block height, asked of its RPC while it runs;
    /// `null` otherwise or when the node's RPC does not answer.
    pub height: Option<u64>,
}

/// `status.vault`: `{"enabled":true,"locked":…}`, or `{"enabled":false}`
/// without `[vault]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultStatus {
    /// Whether a vault is configured.
    pub enabled: bool,
    /// With a vault: whether it is locked. Absent without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked: Option<bool>,
}

/// `status.watermark`: the local sign state, or why it cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WatermarkStatus {
    /// `priv_validator_state.json`'s height, round and step.
    Known {
        /// Highest height signed.
        height: u64,
        /// Round at that height.
        round: u32,
        /// Step (1 propose, 2 prevote, 3 precommit).
        step: u8,
    },
    /// The file exists but is not a sign state.
    Unreadable {
        /// Why.
        error: String,
    },
}

/// A backup the supervisor wrote (`status.last_backup`, `backup.now`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastBackup {
    /// Its file name in the stores.
    pub file: String,
    /// Its sequence number.
    pub sequence: u64,
    /// The sign state it holds: `height H round R step S`.
    pub watermark: String,
    /// The stores that took it.
    pub stores: Vec<String>,
    /// When it was written, Unix seconds.
    pub at: u64,
}

/// `status.upgrades`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradesStatus {
    /// The plan in `data/upgrade-info.json`, when it holds a valid one,
    /// else `null` (`upgrade.list` tells more).
    pub plan_on_disk: Option<PlannedUpgrade>,
    /// A manual plan the loop holds until the node reaches its height,
    /// described in words; `null` when none.
    pub scheduled: Option<String>,
}

/// `status.upgrades.plan_on_disk`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedUpgrade {
    /// The upgrade's name as the chain wrote it.
    pub name: String,
    /// Its height; `null` only for the legacy time-based plan.
    pub height: Option<u64>,
}

/// `health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthResult {
    /// No problems.
    pub ok: bool,
    /// What is wrong, one sentence each (`node is stopped`, `vault is
    /// locked`, `tunnel to b1 is down: …`).
    pub problems: Vec<String>,
}

/// `logs.tail`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsTailResult {
    /// The daemon's last output lines, oldest first.
    pub lines: Vec<String>,
}

// --------------------------------------------------------------- tunnels

/// `tunnel.list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelListResult {
    /// One per `[[bastion]]`, in configuration order.
    pub tunnels: Vec<TunnelEntry>,
}

/// One tunnel to a bastion (`tunnel.list`, `status.tunnels`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelEntry {
    /// The bastion's configured name.
    pub name: String,
    /// Whether the link and its forwards are up.
    pub connected: bool,
    /// Since when, Unix seconds; `null` while down.
    pub connected_since: Option<u64>,
    /// Why the last attempt failed or the last connection ended; `null`
    /// when nothing failed yet.
    pub last_error: Option<String>,
    /// The last forwarded connection that could not be set up (the link
    /// itself stays up); `null` when none.
    pub last_forward_error: Option<String>,
    /// Bytes carried to the bastion through forwarded connections.
    pub bytes_to_bastion: u64,
    /// Bytes carried from the bastion.
    pub bytes_from_bastion: u64,
    /// Successful connections after the first, of every connection to the
    /// bastion (the main one and each local forward's own) together.
    pub reconnects: u64,
    /// The tunnel has stopped for good (shutdown, or a host-key or
    /// authentication failure).
    pub stopped: bool,
    /// The address the tunnel dials when it is not the configured `host`:
    /// the bastion's public address after an Elastic IP rotation
    /// (`eip.rotate`). Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The last measured round trip of the link, in milliseconds (an SSH
    /// keepalive request and its reply, one per keepalive interval; an
    /// unanswered one counts as the whole interval). Absent while down and
    /// before the first measurement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round_trip_ms: Option<u64>,
}

// ------------------------------------------------------------------- eip

/// `eip.list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EipListResult {
    /// One per `[[bastion]]` with an `[bastion.eip]`, in configuration
    /// order.
    pub bastions: Vec<EipBastion>,
}

/// One bastion's addresses (`eip.list`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EipBastion {
    /// The bastion's configured name.
    pub bastion: String,
    /// The EC2 instance its addresses are associated with, if configured
    /// by instance.
    pub instance_id: Option<String>,
    /// The network interface, if configured by interface.
    pub network_interface_id: Option<String>,
    /// The address the tunnel dials now (the configured host until a
    /// rotation).
    pub dialing: String,
    /// Every Elastic IP of the region associated with the bastion's
    /// instance or interface, or tagged as the bastion's.
    pub addresses: Vec<EipAddress>,
}

/// One Elastic IP as EC2 describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EipAddress {
    pub public_ip: String,
    pub allocation_id: String,
    pub association_id: Option<String>,
    pub instance_id: Option<String>,
    pub network_interface_id: Option<String>,
}

/// `eip.rotate`: the rotation is done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EipRotateResult {
    pub bastion: String,
    /// The rotation's id (its journal records carry it).
    pub rotation: String,
    /// The address before (`null` when the bastion had none associated).
    pub old_public_ip: Option<String>,
    pub old_allocation_id: Option<String>,
    /// The new address, associated and reached through the tunnel.
    pub public_ip: String,
    pub allocation_id: String,
    /// Whether the old address was released (`false` with `keep_old`, or
    /// when there was none).
    pub released_old: bool,
    /// Each step and how long it took, in order.
    pub steps: Vec<EipStep>,
    /// From the command to the tunnel up on the new address, milliseconds.
    pub tunnel_up_ms: u64,
}

/// One step of a rotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EipStep {
    /// `allocated`, `associated`, `tunnel-up`, `released`, …
    pub step: String,
    pub took_ms: u64,
}

/// `eip.status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EipStatusResult {
    /// The rotation in progress, if any.
    pub in_progress: Option<EipInProgress>,
    /// The journal's last records, oldest first.
    pub journal: Vec<EipJournalRecord>,
}

/// A rotation that has started and not finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EipInProgress {
    pub rotation: String,
    pub bastion: String,
    /// The last step recorded.
    pub step: String,
    /// Unix seconds when it started.
    pub started: u64,
}

/// One journal record (`eip.status`, and a line of the journal file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EipJournalRecord {
    /// Unix milliseconds.
    pub at_ms: u64,
    pub rotation: String,
    pub bastion: String,
    /// `started`, `allocated`, `associated`, `tunnel-up`, `released`,
    /// `done`, `rolled-back`, `failed`.
    pub step: String,
    /// Addresses and ids the step produced or acted on; why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub association_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// How long the step took, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub took_ms: Option<u64>,
}

/// `tunnel.reconnect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelReconnectResult {
    /// The bastion asked to reconnect.
    pub bastion: String,
    /// Always `true`: the reconnect was requested (it happens in the
    /// tunnel's own task; `tunnel.list` shows the outcome).
    pub reconnecting: bool,
}

// -------------------------------------------------------------- upgrades

/// `upgrade.list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeListResult {
    /// What `current` points at (`genesis`, `upgrades/<dir>`); `null` when
    /// it cannot be read.
    pub current: Option<String>,
    /// Every visible `upgrades/<dir>`, sorted, at most 100.
    pub staged: Vec<StagedUpgrade>,
    /// How many more staged upgrades exist than are listed; absent when
    /// all are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged_not_listed: Option<u64>,
    /// Upgrade directories an `upgrade.add` or `upgrade.cancel` is
    /// writing now.
    pub staging: Vec<String>,
    /// `data/upgrade-info.json`; `null` when there is none.
    pub plan_on_disk: Option<PlanOnDisk>,
    /// The version the loop is upgrading to now; `null` when none.
    pub in_progress: Option<String>,
    /// A manual plan the loop holds until its height; `null` when none.
    pub scheduled: Option<String>,
    /// The last (at most 10) entries of the upgrade record, oldest first.
    pub records: Vec<UpgradeRecord>,
    /// Lines of the record's tail that did not parse; absent when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records_unreadable_lines: Option<u64>,
}

/// One `upgrades/<dir>` (`upgrade.list`'s `staged`): `sha256` and `size`
/// when its binary is usable, `error` instead when not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedUpgrade {
    /// The directory's name.
    pub name: String,
    /// Where its binary is (or would be): `…/upgrades/<dir>/bin/<daemon>`.
    pub path: String,
    /// Whether `current` points at it.
    pub current: bool,
    /// The binary's SHA-256, lower-case hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The binary's size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Why the binary is not usable (missing, not executable, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `upgrade.list`'s `plan_on_disk`: the plan and whether it can be carried
/// out as is, or why it cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PlanOnDisk {
    /// A valid plan.
    Usable {
        /// The upgrade's name as the chain wrote it.
        name: String,
        /// Its height; `null` only for the legacy time-based plan.
        height: Option<u64>,
        /// Its directory under `upgrades/` (recased and escaped).
        dir: String,
        /// Whether that directory holds a usable binary.
        staged: bool,
        /// Whether `current` already points at it.
        applied: bool,
    },
    /// A plan whose name cannot become a directory name.
    BadName {
        /// The upgrade's name as the chain wrote it.
        name: String,
        /// Its height.
        height: Option<u64>,
        /// Why the name is refused.
        error: String,
    },
    /// A file that is not a plan (yet): half-written or invalid.
    Unreadable {
        /// Why.
        error: String,
    },
}

/// `upgrade.add`: the binary staged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeAddResult {
    /// The upgrade's name as given.
    pub name: String,
    /// Its directory under `upgrades/` (recased and escaped).
    pub dir: String,
    /// The installed binary: `…/upgrades/<dir>/bin/<daemon>`.
    pub path: String,
    /// Its SHA-256, lower-case hex.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
    /// Where it came from: the URL (userinfo and query redacted) or the
    /// path given.
    pub source: String,
}

/// `upgrade.cancel`: what was removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeCancelResult {
    /// The upgrade's name as given.
    pub name: String,
    /// Its directory under `upgrades/`.
    pub dir: String,
    /// The directory that was renamed aside and deleted.
    pub removed: String,
    /// Set when the renamed directory could not be deleted (it is removed
    /// at the next start); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Set when `data/upgrade-info.json` still plans this upgrade; absent
    /// otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

// --------------------------------------------------------------- backups

/// `backup.now`: the backup written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupNowResult {
    /// The last backup written.
    pub backup: LastBackup,
    /// Set when that is not a new one (the sign state has not moved, or no
    /// store took the new one); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `backup.list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupListResult {
    /// One entry per store, in configuration order.
    pub stores: Vec<StoreListing>,
}

/// One store of `backup.list`: `{store, reachable:true, total, truncated,
/// backups}` or `{store, reachable:false, error}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawStoreListing", into = "RawStoreListing")]
pub enum StoreListing {
    /// The store answered.
    Reachable {
        /// The store's name (`local`, `dir<N>:<path>`, `bastion:<name>`).
        store: String,
        /// How many backups it holds.
        total: u64,
        /// Whether fewer than `total` are listed.
        truncated: bool,
        /// Its backups, newest (highest sequence) first.
        backups: Vec<ListedBackup>,
    },
    /// The store cannot be listed now (the call still succeeds).
    Unreachable {
        /// The store's name.
        store: String,
        /// Why.
        error: String,
    },
}

impl StoreListing {
    /// The store's name.
    pub fn store(&self) -> &str {
        match self {
            StoreListing::Reachable { store, .. } | StoreListing::Unreachable { store, .. } => {
                store
            }
        }
    }
}

/// The wire form of [`StoreListing`]: `reachable` tells which members
/// follow.
#[derive(Serialize, Deserialize)]
struct RawStoreListing {
    store: String,
    reachable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    total: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    truncated: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    backups: Option<Vec<ListedBackup>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl TryFrom<RawStoreListing> for StoreListing {
    type Error = String;
    fn try_from(raw: RawStoreListing) -> Result<StoreListing, String> {
        if raw.reachable {
            match (raw.total, raw.truncated, raw.backups) {
                (Some(total), Some(truncated), Some(backups)) => Ok(StoreListing::Reachable {
                    store: raw.store,
                    total,
                    truncated,
                    backups,
                }),
                _ => Err(format!(
                    "store {} is reachable without total, truncated and backups",
                    raw.store
                )),
            }
        } else {
            Ok(StoreListing::Unreachable {
                error: raw.error.ok_or_else(|| {
                    format!("store {} is unreachable without an error", raw.store)
                })?,
                store: raw.store,
            })
        }
    }
}

impl From<StoreListing> for RawStoreListing {
    fn from(listing: StoreListing) -> RawStoreListing {
        match listing {
            StoreListing::Reachable {
                store,
                total,
                truncated,
                backups,
            } => RawStoreListing {
                store,
                reachable: true,
                total: Some(total),
                truncated: Some(truncated),
                backups: Some(backups),
                error: None,
            },
            StoreListing::Unreachable { store, error } => RawStoreListing {
                store,
                reachable: false,
                total: None,
                truncated: None,
                backups: None,
                error: Some(error),
            },
        }
    }
}

/// One backup in a store's listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedBackup {
    /// Its file name.
    pub file: String,
    /// Its sequence number, from the name.
    pub sequence: u64,
    /// The sign state's height it holds, from the name.
    pub height: u64,
    /// `height H round R step S`, known only for the last backup this
    /// supervisor wrote (the rest is inside the encrypted bundle); `null`
    /// otherwise.
    pub watermark: Option<String>,
    /// When it was written, Unix seconds: a directory store's file time;
    /// `null` when unknown (a bastion's store).
    pub at: Option<u64>,
}

/// `backup.restore`: what was restored, and what it replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRestoreResult {
    /// The backup restored.
    pub restored: RestoredBackup,
    /// What the state file held before: `height H round R step S`,
    /// `missing`, or `unreadable (…)`.
    pub previous: String,
    /// The state file written.
    pub path: String,
}

/// `backup.restore`'s `restored`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoredBackup {
    /// The store it came from.
    pub store: String,
    /// Its file name.
    pub file: String,
    /// Its sequence number (from the signed metadata).
    pub sequence: u64,
    /// The sign state now on disk: `height H round R step S`.
    pub watermark: String,
}

// ------------------------------------------------------- node and vault

/// `node.start`, `node.stop`, `node.restart`: the node's new state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeResult {
    /// What the node does now (`starting`, `stopped`, `restarting`).
    pub node: NodeState,
}

/// `vault.unlock`: unlocked, and the node starting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultUnlockResult {
    /// Always `false`: the vault is unlocked.
    pub locked: bool,
    /// What the node does now (`starting`).
    pub node: NodeState,
}

/// `vault.lock`: locked (the final backup taken, the keys wiped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultLockResult {
    /// Always `true`.
    pub locked: bool,
}

// --------------------------------------------------------- host.shutdown

/// `host.shutdown`'s two answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum HostShutdownResult {
    /// The answer to `{}`: a confirmation token.
    TokenIssued(ShutdownToken),
    /// The answer to `{"confirm": TOKEN}`: the shutdown has begun.
    ShuttingDown(ShuttingDown),
}

/// `host.shutdown {}`: the token to confirm with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShutdownToken {
    /// The token: 32 lower-case hex digits, bound to the operator who
    /// asked, usable once.
    pub confirm: String,
    /// How long it is valid, in seconds.
    pub expires_in_s: u64,
    /// The command that will run (`[host] shutdown-command`).
    pub command: Vec<String>,
}

/// `host.shutdown {"confirm": TOKEN}`: what happens now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShuttingDown {
    /// Always `true`.
    pub shutting_down: bool,
    /// The node's state when the shutdown began (`stopping` while it is
    /// being stopped; `stopped`, `locked` or `halted` when none ran).
    pub node: NodeState,
    /// The command that runs once the node is stopped, the final backup
    /// taken and the keys wiped.
    pub command: Vec<String>,
}
