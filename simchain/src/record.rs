//! The network's record of what validators did: the JSON served at `GET /record` and written to
//! `--record FILE`.
//!
//! ```json
//! {"chain_id":"sim-1","height":42,
//!  "validators":{"val1":{"address":"HEX","power":10,"signed_heights":40,"missed_heights":[7,8],
//!                        "missed_count":2,"first_signed_height":1,"last_signed_height":42}},
//!  "double_signs":[{"validator":"val1","height":9,"round":0,"step":3,
//!                   "sign_bytes_a":"<b64>","sign_bytes_b":"<b64>"}],
//!  "invalid_votes":0,"upgrade_plans":[{"name":"v2","height":50,"info":""}],
//!  "listeners":[{"name":"sentry-a","listen_addr":"127.0.0.2:26656","node_id":"<hex>","up":true,"sessions":1}]}
//! ```
//!
//! Each validator also shows its sessions open right now: `sessions` (how many),
//! `connected_via` (the names of the listeners — sentries — they go through, sorted, each
//! once) and `connections` (one entry per session), plus `sessions_opened` (ever). A session
//! belongs to the validator whose address its `hello` named.
//!
//! `height` is the latest committed height. A height counts as signed by a validator when the
//! network received a valid precommit from it for that height (at any time); it counts as
//! missed when it was committed without one. `missed_heights` keeps the most recent
//! [`MAX_MISSED_LISTED`] entries; `missed_count` is the total. Only external (genesis)
//! validators are listed; internal ones always sign.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::protocol::UpgradePlan;

/// Cap on `missed_heights` entries kept per validator.
pub const MAX_MISSED_LISTED: usize = 10_000;

/// The whole record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Chain ID.
    pub chain_id: String,
    /// Latest committed height.
    pub height: u64,
    /// External validators by genesis name.
    pub validators: BTreeMap<String, ValidatorRecord>,
    /// Every double sign observed.
    pub double_signs: Vec<DoubleSign>,
    /// Votes rejected (bad signature, unknown validator, malformed).
    pub invalid_votes: u64,
    /// Upgrade plans known to the chain.
    #[serde(default)]
    pub upgrade_plans: Vec<UpgradePlan>,
    /// The network's listeners (each a sentry with its own node ID).
    #[serde(default)]
    pub listeners: Vec<ListenerRecord>,
}

/// One listener of `simchain-net`: a sentry node the validators dial.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerRecord {
    /// Its name (`--listen NAME=ADDR`; `sentry-N` by default).
    pub name: String,
    /// The address it accepts on.
    pub listen_addr: String,
    /// Its node ID.
    pub node_id: String,
    /// Whether it accepts connections now (`POST /listeners/NAME/down` takes it down).
    pub up: bool,
    /// Sessions open through it now.
    pub sessions: u64,
}

/// One open session of a validator.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionRecord {
    /// The listener (sentry) it goes through.
    pub listener: String,
    /// That listener's node ID.
    pub listener_node_id: String,
    /// The node ID the validator's node announced.
    pub node_id: String,
    /// The connection's remote address as the network sees it.
    pub remote_addr: String,
    /// The height being voted on when it opened.
    pub since_height: u64,
}

/// One validator's signing history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatorRecord {
    /// Uppercase hex address.
    pub address: String,
    /// Voting power.
    pub power: u64,
    /// Number of distinct heights with a valid precommit.
    pub signed_heights: u64,
    /// Committed heights without its precommit (most recent [`MAX_MISSED_LISTED`]).
    pub missed_heights: Vec<u64>,
    /// Total missed heights.
    #[serde(default)]
    pub missed_count: u64,
    /// Lowest height with a valid precommit.
    pub first_signed_height: Option<u64>,
    /// Highest height with a valid precommit.
    pub last_signed_height: Option<u64>,
    /// Sessions open now.
    #[serde(default)]
    pub sessions: u64,
    /// Listeners (sentries) it is connected through now, sorted, each once.
    #[serde(default)]
    pub connected_via: Vec<String>,
    /// Every open session.
    #[serde(default)]
    pub connections: Vec<ConnectionRecord>,
    /// Sessions ever opened.
    #[serde(default)]
    pub sessions_opened: u64,
    /// Heights at which a vote of this validator with sign bytes not seen before came through
    /// a listener while earlier votes at that height came through another (the most recent
    /// [`MAX_MISSED_LISTED`]). Meaningful when each of the validator's nodes has sentries of
    /// its own: then it names a height two nodes signed at. A node connected to several
    /// sentries sends its votes through all of them and trips it. A test harness's record only
    /// (CometBFT keeps nothing like it); the double-sign rule stays `double_signs`'.
    #[serde(default)]
    pub multi_listener_heights: Vec<u64>,
    /// The height of the last valid vote of this validator that came through each listener.
    #[serde(default)]
    pub last_vote_via: BTreeMap<String, u64>,
}

/// Two different sign bytes from one key at the same (height, round, step).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoubleSign {
    /// Genesis name of the validator.
    pub validator: String,
    /// Height.
    pub height: u64,
    /// Round.
    pub round: u32,
    /// Step (2 prevote, 3 precommit).
    pub step: u8,
    /// Base64 of the first sign bytes seen.
    pub sign_bytes_a: String,
    /// Base64 of the conflicting sign bytes.
    pub sign_bytes_b: String,
}

impl Record {
    /// Heights in `range` that `validator` missed (inclusive bounds).
    pub fn missed_between(&self, validator: &str, from: u64, to: u64) -> Vec<u64> {
        self.validators
            .get(validator)
            .map(|v| {
                v.missed_heights
                    .iter()
                    .copied()
                    .filter(|h| (from..=to).contains(h))
                    .collect()
            })
            .unwrap_or_default()
    }
}
