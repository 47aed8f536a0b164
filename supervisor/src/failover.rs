//! Several hosts for one validator, one of them signing: the leadership on
//! an etcd lease, its driver, the takeover rule and the signed handoff
//! record. The argument that no two hosts sign one height/round/step, and
//! its assumptions, are in `docs/failover.md`; the code cites its sections.
//!
//! - [`driver`]: a task that campaigns for the leader key while the state
//!   machine is a standby, renews the lease while it is primary, and
//!   reports to the machine ([`crate::supervision::machine::LeaseEvent`]);
//!   the machine fences (kills the node) on its own deadline timer.
//! - [`takeover`]: what runs between taking the leadership and starting
//!   the node: the chain guard, the highest backup, the sign-state floor.
//! - [`record`]: the handoff record, signed with the vault's backup key.
//!
//! May call: `palisade_etcd`, `backup`, `sign_state`, `node::rpc`. Must
//! never: start the node (only the machine does, behind its gate), or
//! write the sign state below what it holds.

pub mod driver;
pub mod record;
pub mod takeover;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::sign_state::Watermark;

use sha2::{Digest, Sha256};

use palisade_wire::rpc::results::{FailoverStatus, HandoffSummary};

/// What the leadership driver ([`driver`]) reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseEvent {
    /// This host holds the leadership, with fencing token `token`; it must
    /// stop signing by `stop_by` unless a renewal moves that.
    Acquired {
        token: i64,
        stop_by: Instant,
        /// Taken over by a verified handoff record (else: after the
        /// previous lease expired, or with no previous leader).
        handoff: Option<HandoffGrant>,
    },
    /// The leadership with this token was renewed: stop signing by `stop_by`
    /// at the latest.
    Renewed { token: i64, stop_by: Instant },
    /// The leadership with this token is gone (expired, deposed, renewed
    /// too late, given up by the driver for any reason the machine did not
    /// ask for).
    Lost { token: i64, reason: String },
}

/// A verified handoff record naming this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoffGrant {
    /// The host that handed over.
    pub from: String,
    /// Its final sign state: the floor of this host's.
    pub watermark: Option<Watermark>,
}

/// The etcd keys of one validator's hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// The prefix: `[failover] key-prefix`, or [`default_prefix`].
    pub group: String,
}

impl Keys {
    /// The leader key: its value is the leader's host id, its lease the
    /// leader's, its create revision the fencing token.
    pub fn leader(&self) -> String {
        format!("{}/leader", self.group)
    }

    /// The last handoff record (signed JSON, no lease).
    pub fn handoff(&self) -> String {
        format!("{}/handoff", self.group)
    }

    /// Present while automatic takeover is paused.
    pub fn paused(&self) -> String {
        format!("{}/paused", self.group)
    }
}

/// `/palisade/` and the first 16 hex digits of the SHA-256 of the vault's
/// backup verifying key: the same on every host that shares the vault,
/// readable while it is locked, different for every validator.
pub fn default_prefix(backup_verifying_key: &str) -> String {
    let digest = Sha256::digest(backup_verifying_key.as_bytes());
    format!("/palisade/{}", &hex::encode(digest)[..16])
}

/// What `failover.status` shows, kept up to date by the driver and the
/// executor.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub leader: Option<String>,
    pub token: Option<i64>,
    /// This host holds the leadership (the machine's view).
    pub primary: bool,
    /// The primary's signing deadline.
    pub stop_by: Option<Instant>,
    pub paused: Option<bool>,
    pub etcd_error: Option<String>,
    pub last_handoff: Option<HandoffSummary>,
    pub note: Option<String>,
}

/// The view, shared between the driver, the executor and the RPC.
pub type SharedView = Arc<Mutex<View>>;

/// Locks the view, surviving a poisoned lock.
pub fn view(shared: &SharedView) -> std::sync::MutexGuard<'_, View> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The view as the RPC answers it.
pub fn status(settings: &crate::config::FailoverSettings, shared: &SharedView) -> FailoverStatus {
    let view = view(shared).clone();
    FailoverStatus {
        host_id: settings.host_id.clone(),
        role: if view.primary { "primary" } else { "standby" }.into(),
        leader: view.leader,
        token: view.token,
        lease_ttl_s: settings.lease_ttl.as_secs(),
        signing_deadline_in_ms: view
            .stop_by
            .filter(|_| view.primary)
            .map(|at| at.saturating_duration_since(Instant::now()).as_millis() as u64),
        paused: view.paused,
        takeover: settings.takeover.as_str().into(),
        peers: settings.peers.clone(),
        etcd_error: view.etcd_error,
        last_handoff: view.last_handoff,
        note: view.note,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_live_under_one_prefix_derived_from_the_vault() {
        let group = default_prefix("AAAAC3NzaC1lZDI1NTE5AAAAIE");
        assert!(group.starts_with("/palisade/") && group.len() == "/palisade/".len() + 16);
        assert_eq!(group, default_prefix("AAAAC3NzaC1lZDI1NTE5AAAAIE"));
        assert_ne!(group, default_prefix("another key"));
        let keys = Keys { group };
        assert!(keys.leader().ends_with("/leader"));
        assert!(keys.handoff().ends_with("/handoff"));
        assert!(keys.paused().ends_with("/paused"));
    }
}
