//! `/status` (`rpc/core/status.go`, `rpc/core/types/responses.go` `ResultStatus`, v0.38):
//! 64-bit integers as strings, hashes as upper-case hex (empty when there is none), times per
//! [`rpc_time`]. `earliest_*` is the block store's base: the first block the server stored.
//! Rendered for `simd` (its own chain view) and for a `simchain-net` sentry (the network's).

use serde::{Deserialize, Serialize};

use crate::clock::rfc3339_go;
use crate::key::PUB_KEY_TYPE;
use crate::protocol::COMETBFT_VERSION;

/// `latest_block_time` and `earliest_block_time` before any block: CometBFT's `/status` takes
/// `time.Unix(0, 0)` (`rpc/core/status.go`).
const NO_BLOCK_TIME: &str = "1970-01-01T00:00:00Z";

/// What `/status` shows of a stored block.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockMeta {
    /// Height.
    pub height: u64,
    /// Upper-case hex block hash.
    pub hash: String,
    /// Upper-case hex app hash.
    pub app_hash: String,
    /// Block time, RFC 3339.
    pub time: String,
}

/// A server's view of the chain, for `/status`.
#[derive(Debug, Clone, Default)]
pub struct NodeStatus {
    /// Chain ID.
    pub chain_id: String,
    /// Latest committed height known.
    pub latest_height: u64,
    /// Hex hash of that block.
    pub latest_block_hash: String,
    /// Hex app hash.
    pub latest_app_hash: String,
    /// RFC 3339 time of the latest block (empty: none yet).
    pub latest_block_time: String,
    /// The block store's first block, if any.
    pub earliest: Option<BlockMeta>,
    /// Whether the node halted for an upgrade.
    pub halted: bool,
}

/// Who answers: the `node_info` and `validator_info` of `/status`.
#[derive(Debug, Clone)]
pub struct RpcIdentity {
    /// Moniker (a sentry's: its listener name).
    pub moniker: String,
    /// Node ID, lower-case hex.
    pub node_id: String,
    /// Upper-case hex address of the node's validator key.
    pub address: String,
    /// Base64 public key of the node's validator key.
    pub pub_key: String,
    /// Voting power (0 for a sentry).
    pub voting_power: u64,
    /// `node_info.listen_addr` (`tcp://IP:PORT`).
    pub p2p_laddr: String,
    /// `[p2p] external_address` (shown by `/net_info`).
    pub external_address: String,
    /// `node_info.other.rpc_address` (`tcp://IP:PORT`).
    pub rpc_laddr: String,
}

/// A block time as CometBFT's RPC writes it: UTC, RFC 3339 with only the significant fraction
/// digits; the Unix epoch when there is no block (`rpc/core/status.go` takes
/// `time.Unix(0, 0)`).
pub fn rpc_time(time: &str) -> String {
    if time.is_empty() {
        return NO_BLOCK_TIME.to_string();
    }
    humantime::parse_rfc3339(time)
        .map(rfc3339_go)
        .unwrap_or_else(|_| time.to_string())
}

/// The `/status` result.
pub fn status_result(identity: &RpcIdentity, status: &NodeStatus) -> serde_json::Value {
    let earliest = status.earliest.clone().unwrap_or_default();
    serde_json::json!({
        "node_info": {
            "protocol_version": {"p2p": "8", "block": "11", "app": "0"},
            "id": identity.node_id,
            "listen_addr": identity.p2p_laddr,
            "network": status.chain_id,
            "version": COMETBFT_VERSION,
            "channels": "40202122233038606100",
            "moniker": identity.moniker,
            "other": {"tx_index": "on", "rpc_address": identity.rpc_laddr},
        },
        "sync_info": {
            "latest_block_hash": status.latest_block_hash,
            "latest_app_hash": status.latest_app_hash,
            "latest_block_height": status.latest_height.to_string(),
            "latest_block_time": rpc_time(&status.latest_block_time),
            "earliest_block_hash": earliest.hash,
            "earliest_app_hash": earliest.app_hash,
            "earliest_block_height": earliest.height.to_string(),
            "earliest_block_time": rpc_time(&earliest.time),
            "catching_up": false,
        },
        "validator_info": {
            "address": identity.address,
            "pub_key": {"type": PUB_KEY_TYPE, "value": identity.pub_key},
            "voting_power": identity.voting_power.to_string(),
        },
    })
}
