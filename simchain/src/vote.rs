//! Canonical vote sign bytes.
//!
//! The real chain signs protobuf-encoded `CanonicalVote`s; the simulation signs the equivalent
//! canonical JSON with sorted keys and no whitespace:
//!
//! ```json
//! {"block_id":"<hex>","chain_id":"test-1","height":12,"round":0,"timestamp":"<RFC3339>","type":"prevote"}
//! ```
//!
//! As in CometBFT the timestamp is the signer's local clock, so two signers of the same vote
//! produce different sign bytes: that is exactly how a double sign becomes visible.

use serde::{Deserialize, Serialize};

/// Consensus step of a signature, numbered as in CometBFT's FilePV.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VoteType {
    /// Step 2.
    Prevote,
    /// Step 3.
    Precommit,
}

impl VoteType {
    /// FilePV step number (1 propose, 2 prevote, 3 precommit).
    pub fn step(self) -> u8 {
        match self {
            VoteType::Prevote => 2,
            VoteType::Precommit => 3,
        }
    }

    /// Inverse of [`VoteType::step`]; proposals are not simulated.
    pub fn from_step(step: u8) -> Option<Self> {
        match step {
            2 => Some(VoteType::Prevote),
            3 => Some(VoteType::Precommit),
            _ => None,
        }
    }
}

/// The signed content of a vote. Field order is alphabetical so that serde's output is the
/// canonical (sorted-key) encoding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanonicalVote {
    /// Hex block hash the vote is for.
    pub block_id: String,
    /// Chain the vote belongs to.
    pub chain_id: String,
    /// Height voted on.
    pub height: u64,
    /// Round voted on.
    pub round: u32,
    /// Signer's local time, RFC 3339.
    pub timestamp: String,
    /// Prevote or precommit.
    #[serde(rename = "type")]
    pub vote_type: VoteType,
}

impl CanonicalVote {
    /// Canonical sign bytes.
    pub fn sign_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("canonical vote serializes")
    }

    /// Parses sign bytes produced by [`CanonicalVote::sign_bytes`].
    pub fn parse(sign_bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(sign_bytes).ok()
    }
}

/// The precommit behind a commit signature (`types/block.go` `Commit.GetVote`, v0.38: the
/// vote is rebuilt from the commit's height, round and block ID and the signature's
/// timestamp). `timestamp` may be in any RFC 3339 form — the RPC's (`libs/json`, trailing
/// zeros dropped) or the signed one — and is re-encoded the way sign bytes carry it; a nil
/// vote (`block_id_flag` 3) signs an empty `block_id`. `None` when the timestamp is not
/// RFC 3339.
pub fn commit_precommit(
    chain_id: &str,
    height: u64,
    round: u32,
    block_id: &str,
    timestamp: &str,
) -> Option<CanonicalVote> {
    let time = humantime::parse_rfc3339(timestamp).ok()?;
    Some(CanonicalVote {
        block_id: block_id.to_string(),
        chain_id: chain_id.to_string(),
        height,
        round,
        timestamp: crate::clock::rfc3339(time),
        vote_type: VoteType::Precommit,
    })
}

/// If two sign bytes encode votes that differ only in their timestamp, returns the first one's
/// timestamp (CometBFT's `checkVotesOnlyDifferByTimestamp`).
pub fn only_differ_by_timestamp(last: &[u8], new: &[u8]) -> Option<String> {
    let last_vote = CanonicalVote::parse(last)?;
    let mut new_vote = CanonicalVote::parse(new)?;
    new_vote.timestamp.clone_from(&last_vote.timestamp);
    (new_vote == last_vote).then_some(last_vote.timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vote(timestamp: &str, vote_type: VoteType) -> CanonicalVote {
        CanonicalVote {
            block_id: "AB".into(),
            chain_id: "sim-1".into(),
            height: 5,
            round: 0,
            timestamp: timestamp.into(),
            vote_type,
        }
    }

    #[test]
    fn sign_bytes_are_sorted_compact_and_deterministic() {
        let bytes = vote("2024-01-01T00:00:00Z", VoteType::Prevote).sign_bytes();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            r#"{"block_id":"AB","chain_id":"sim-1","height":5,"round":0,"timestamp":"2024-01-01T00:00:00Z","type":"prevote"}"#
        );
        assert_eq!(
            bytes,
            vote("2024-01-01T00:00:00Z", VoteType::Prevote).sign_bytes()
        );
        let via_value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(serde_json::to_vec(&via_value).unwrap(), bytes);
    }

    #[test]
    fn commit_precommits_re_encode_the_rpc_timestamp() {
        let signed = "2024-02-29T15:04:05.120000000Z";
        let from_rpc = commit_precommit("sim-1", 5, 0, "AB", "2024-02-29T15:04:05.12Z").unwrap();
        assert_eq!(from_rpc.timestamp, signed);
        assert_eq!(
            from_rpc,
            commit_precommit("sim-1", 5, 0, "AB", signed).unwrap()
        );
        assert_eq!(from_rpc.vote_type, VoteType::Precommit);
        assert!(commit_precommit("sim-1", 5, 0, "AB", "yesterday").is_none());
    }

    #[test]
    fn timestamp_only_difference_is_detected() {
        let a = vote("t1", VoteType::Precommit).sign_bytes();
        let b = vote("t2", VoteType::Precommit).sign_bytes();
        let c = vote("t2", VoteType::Prevote).sign_bytes();
        assert_eq!(only_differ_by_timestamp(&a, &b), Some("t1".into()));
        assert_eq!(only_differ_by_timestamp(&a, &c), None);
        assert_eq!(only_differ_by_timestamp(b"garbage", &b), None);
    }
}
