//! Node ↔ network wire protocol: one JSON object per line over TCP.
//!
//! Node → network:
//! - `{"type":"hello","address":"HEX"}` once after connecting; answered with the current
//!   `new_height`.
//! - `{"type":"vote","address":"HEX","height":H,"round":R,"step":2|3,"sign_bytes":"<b64>","signature":"<b64>"}`
//!
//! Network → node:
//! - `{"type":"new_height","chain_id":..,"height":H,"round":0,"block_id":"<hex>","time":"<RFC3339>","upgrade_plans":[{"name","height","info"}]}`
//!   where `height` is the height to vote on now (the previous one was just committed).
//!
//! Lines longer than [`MAX_LINE_BYTES`] are a protocol violation and close the connection.

use serde::{Deserialize, Serialize};

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

/// Messages a node sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NodeMessage {
    /// Identifies the validator behind this connection.
    Hello {
        /// Uppercase hex validator address.
        address: String,
    },
    /// A signed vote.
    Vote(SignedVote),
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
    /// A new height begins (the previous one was committed).
    NewHeight(NewHeight),
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
    /// Every upgrade plan known to the chain.
    #[serde(default)]
    pub upgrade_plans: Vec<UpgradePlan>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_use_documented_shapes() {
        let hello: NodeMessage =
            serde_json::from_str(r#"{"type":"hello","address":"AB"}"#).unwrap();
        assert_eq!(
            hello,
            NodeMessage::Hello {
                address: "AB".into()
            }
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
            upgrade_plans: vec![],
        });
        let json: serde_json::Value = serde_json::to_value(&new_height).unwrap();
        assert_eq!(json["type"], "new_height");
        assert_eq!(json["upgrade_plans"], serde_json::json!([]));
    }
}
