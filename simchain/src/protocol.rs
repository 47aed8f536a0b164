//! Node ↔ network wire protocol: one JSON object per line over TCP.
//!
//! A session opens with a handshake standing in for CometBFT's secret connection and NodeInfo
//! exchange (`p2p/transport.go` `upgrade`, v0.38): the node proves nothing, the network proves
//! its node key, so the node can check the ID it dialed.
//!
//! Node → network:
//! - `{"type":"hello","address":"HEX","node_id":"<hex>","moniker":"val1","nonce":"<b64 32 bytes>"}`
//!   once after connecting.
//! - `{"type":"vote","address":"HEX","height":H,"round":R,"step":2|3,"sign_bytes":"<b64>","signature":"<b64>"}`
//! - `{"type":"ping"}` (MConnection's keep-alive); answered with `{"type":"pong"}`.
//!
//! Network → node:
//! - `{"type":"node_info","id":"<hex>","pub_key":"<b64>","signature":"<b64>","listen_addr":"IP:PORT","network":"<chain id>","moniker":"sentry-1","version":"0.38.17"}`
//!   first, answering `hello`: `pub_key` is the listener's node key, `signature` its ed25519
//!   signature over [`auth_message`] of the hello's nonce, and `id` the node ID derived from the
//!   key (`p2p/key.go` `PubKeyToID`). Then the current `new_height`.
//! - `{"type":"new_height","chain_id":..,"height":H,"round":0,"block_id":"<hex>","time":"<RFC3339>","last_block_time":"<RFC3339>","upgrade_plans":[{"name","height","info"}],"last_commit":{…}}`
//!   where `height` is the height to vote on now (the previous one was just committed, at
//!   `last_block_time`). `last_commit` ([`BlockCommit`]) is the commit of `H - 1`, as CometBFT's
//!   block `H` carries `LastCommit` (`types/block.go`): which validators' precommits made it in,
//!   with their timestamps and signatures. Absent before the first commit; a node that does
//!   not know the field ignores it.
//! - `{"type":"pong"}`.
//!
//! Lines longer than [`MAX_LINE_BYTES`] are a protocol violation and close the connection.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// CometBFT version the simulation reports (`/status`, NodeInfo).
pub const COMETBFT_VERSION: &str = "0.38.17";

/// Upper bound on one protocol line.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// An upgrade plan, as a passed software-upgrade proposal stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradePlan {
    /// Upgrade name (the handler name and the Cosmovisor directory name).
    pub name: String,
    /// Height at which the chain halts for the upgrade.
    pub height: u64,
    /// Free-form info (often JSON with binary URLs).
    #[serde(default)]
    pub info: String,
}

/// Deterministic upper-case hex block hash of a height: what the network, every node and
/// every RPC call the block at `height` of `chain_id`.
pub fn block_id(chain_id: &str, height: u64) -> String {
    hex::encode_upper(Sha256::digest(
        format!("{chain_id}/block/{height}").as_bytes(),
    ))
}

/// Domain separation for the network's handshake signature.
pub const AUTH_DOMAIN: &[u8] = b"palisade-simchain/p2p-auth/v1:";

/// What the network signs with its node key to prove it holds the key behind its node ID.
pub fn auth_message(nonce: &[u8]) -> Vec<u8> {
    let mut message = AUTH_DOMAIN.to_vec();
    message.extend_from_slice(nonce);
    message
}

/// The node's greeting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Uppercase hex validator address.
    pub address: String,
    /// The node's own node ID (lowercase hex), as CometBFT's NodeInfo carries it.
    #[serde(default)]
    pub node_id: String,
    /// The node's moniker.
    #[serde(default)]
    pub moniker: String,
    /// Base64 random challenge the network must sign.
    #[serde(default)]
    pub nonce: String,
}

/// Messages a node sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NodeMessage {
    /// Identifies the validator behind this connection.
    Hello(Hello),
    /// A signed vote.
    Vote(SignedVote),
    /// Keep-alive.
    Ping,
}

/// The network's NodeInfo, with the proof of its node key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Node ID: lowercase hex of the first 20 bytes of SHA-256 of `pub_key`.
    pub id: String,
    /// Base64 ed25519 node public key.
    pub pub_key: String,
    /// Base64 ed25519 signature over [`auth_message`] of the hello's nonce.
    pub signature: String,
    /// The address this listener accepts on.
    pub listen_addr: String,
    /// Chain ID.
    pub network: String,
    /// The listener's name.
    pub moniker: String,
    /// CometBFT version.
    pub version: String,
}

/// A signed prevote or precommit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedVote {
    /// Uppercase hex validator address.
    pub address: String,
    /// Height.
    pub height: u64,
    /// Round.
    pub round: u32,
    /// 2 prevote, 3 precommit.
    pub step: u8,
    /// Base64 sign bytes (canonical vote JSON).
    pub sign_bytes: String,
    /// Base64 ed25519 signature over the sign bytes.
    pub signature: String,
}

/// Messages the network sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NetworkMessage {
    /// Answer to `hello`: who the node is talking to.
    NodeInfo(NodeInfo),
    /// A new height begins (the previous one was committed).
    NewHeight(NewHeight),
    /// Answer to a ping.
    Pong,
}

/// Start of a height.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewHeight {
    /// Chain ID.
    pub chain_id: String,
    /// Height to vote on.
    pub height: u64,
    /// Round (always 0 in the simulation).
    pub round: u32,
    /// Hex block hash for this height.
    pub block_id: String,
    /// Block time, RFC 3339.
    pub time: String,
    /// Time of the block just committed (`height - 1`), RFC 3339; empty before the first.
    #[serde(default)]
    pub last_block_time: String,
    /// Every upgrade plan known to the chain.
    #[serde(default)]
    pub upgrade_plans: Vec<UpgradePlan>,
    /// The commit of `height - 1`; `None` before the first commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_commit: Option<BlockCommit>,
}

/// `BlockIDFlag` of a commit signature (`types/block.go`, v0.38): the validator's precommit is
/// not in the commit.
pub const BLOCK_ID_FLAG_ABSENT: u8 = 1;
/// The validator precommitted the committed block.
pub const BLOCK_ID_FLAG_COMMIT: u8 = 2;
/// The validator precommitted nil (signed, but not for this block).
pub const BLOCK_ID_FLAG_NIL: u8 = 3;

/// A committed block as the network decided it: its header's facts and the commit's
/// signatures, one per validator of the set in the set's order (`types/validator_set.go`:
/// voting power descending, then address ascending). What the RPC renders as `/commit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockCommit {
    /// Height of the committed block.
    pub height: u64,
    /// Round it was committed in.
    pub round: u32,
    /// Upper-case hex block hash (what the precommits signed).
    pub block_id: String,
    /// Block time, RFC 3339.
    pub time: String,
    /// Upper-case hex address of the block's proposer.
    pub proposer_address: String,
    /// Upper-case hex hash standing for the validator set.
    pub validators_hash: String,
    /// One entry per validator of the set, in the set's order.
    pub signatures: Vec<CommitSig>,
}

/// One validator's entry in a commit (`types/block.go` `CommitSig`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitSig {
    /// [`BLOCK_ID_FLAG_ABSENT`], [`BLOCK_ID_FLAG_COMMIT`] or [`BLOCK_ID_FLAG_NIL`].
    pub block_id_flag: u8,
    /// Upper-case hex address; empty when absent.
    #[serde(default)]
    pub validator_address: String,
    /// The precommit's timestamp exactly as in its sign bytes; empty when absent.
    #[serde(default)]
    pub timestamp: String,
    /// Base64 ed25519 signature over the precommit's sign bytes; `None` when absent.
    #[serde(default)]
    pub signature: Option<String>,
}

impl CommitSig {
    /// `types.NewCommitSigAbsent`.
    pub fn absent() -> Self {
        Self {
            block_id_flag: BLOCK_ID_FLAG_ABSENT,
            validator_address: String::new(),
            timestamp: String::new(),
            signature: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_use_documented_shapes() {
        let hello: NodeMessage = serde_json::from_str(
            r#"{"type":"hello","address":"AB","node_id":"ab","moniker":"m","nonce":"bm9uY2U="}"#,
        )
        .unwrap();
        assert_eq!(
            hello,
            NodeMessage::Hello(Hello {
                address: "AB".into(),
                node_id: "ab".into(),
                moniker: "m".into(),
                nonce: "bm9uY2U=".into(),
            })
        );
        assert_eq!(
            serde_json::to_string(&NodeMessage::Ping).unwrap(),
            r#"{"type":"ping"}"#
        );
        assert_eq!(
            serde_json::from_str::<NetworkMessage>(r#"{"type":"pong"}"#).unwrap(),
            NetworkMessage::Pong
        );
        let vote = NodeMessage::Vote(SignedVote {
            address: "AB".into(),
            height: 3,
            round: 0,
            step: 2,
            sign_bytes: "e30=".into(),
            signature: "c2ln".into(),
        });
        let json: serde_json::Value = serde_json::to_value(&vote).unwrap();
        assert_eq!(json["type"], "vote");
        assert_eq!(json["step"], 2);
        let new_height = NetworkMessage::NewHeight(NewHeight {
            chain_id: "c".into(),
            height: 2,
            round: 0,
            block_id: "00".into(),
            time: "t".into(),
            last_block_time: String::new(),
            upgrade_plans: vec![],
            last_commit: None,
        });
        let json: serde_json::Value = serde_json::to_value(&new_height).unwrap();
        assert_eq!(json["type"], "new_height");
        assert_eq!(json["upgrade_plans"], serde_json::json!([]));
        assert!(json.get("last_commit").is_none(), "left out when unknown");
        let old: NetworkMessage = serde_json::from_str(
            r#"{"type":"new_height","chain_id":"c","height":2,"round":0,"block_id":"00","time":"t"}"#,
        )
        .unwrap();
        assert!(matches!(old, NetworkMessage::NewHeight(h) if h.last_commit.is_none()));
    }
}
