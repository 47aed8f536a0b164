//! The pure reader of CometBFT's `/commit` answer (v0.38 `rpc/core/blocks.go` `Commit`,
//! `rpc/core/types/responses.go` `ResultCommit`, `types/block.go` `Commit`, `CommitSig`).
//!
//! What counts (`types/block.go` `BlockIDFlag`): flag 2 (`Commit`) — the validator's
//! precommit for this block is in the commit: **signed**. Flag 3 (`Nil`) — it precommitted
//! nil: it did not sign *the block*, but its key did sign a vote at this height, so it is
//! listed apart in [`CommitView::nil_voted`] (x/slashing counts it as not missed, and a
//! failover guard must treat it as a live signer). Flag 1 (`Absent`) — no precommit; these
//! entries carry no address. Any other flag is refused.
//!
//! Strict on purpose: a missing field, a height that is not a decimal string, a commit whose
//! height differs from its header's, a signature entry whose fields disagree with its flag, or
//! an error answer (with its code, message and data) is an error naming what is wrong.

use serde::Deserialize;

/// The largest `/commit` body read: a commit of a few hundred validators is tens of KiB.
pub const MAX_COMMIT_BODY_BYTES: usize = 1024 * 1024;

/// What `/commit` says about one block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitView {
    /// The block's height.
    pub height: u64,
    /// The block's time, as the node wrote it (RFC 3339, UTC).
    pub time: String,
    /// Upper-case hex hash of the committed block.
    pub block_hash: String,
    /// Upper-case hex addresses with flag 2: their precommit for this block is in the commit.
    pub signed: Vec<String>,
    /// Upper-case hex addresses with flag 3: they precommitted nil at this height.
    pub nil_voted: Vec<String>,
    /// `false` for the node's latest block (its seen commit, which may still differ from the
    /// one block `H + 1` will carry).
    pub canonical: bool,
}

impl CommitView {
    /// Whether `address` (hex, any case) signed a precommit at this height: for the block or
    /// for nil.
    pub fn has_precommit_from(&self, address: &str) -> bool {
        self.signed
            .iter()
            .chain(&self.nil_voted)
            .any(|a| a.eq_ignore_ascii_case(address))
    }
}

/// Why a `/commit` answer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// The body is larger than [`MAX_COMMIT_BODY_BYTES`].
    #[error("/commit answer is over {limit} bytes")]
    TooLarge {
        /// The bound.
        limit: usize,
    },
    /// The node answered a JSON-RPC error (e.g. a height above its latest or pruned).
    #[error("/commit answered error {code} {message}: {data}")]
    Rpc {
        /// JSON-RPC error code (−32603 for `getHeight`'s refusals).
        code: i64,
        /// Its message (`Internal error`).
        message: String,
        /// Its data: the reason (`height 9 must be less than or equal to …`).
        data: String,
    },
    /// Not the JSON of a `/commit` answer: names the missing or mistyped field.
    #[error("/commit answer is malformed: {0}")]
    Malformed(String),
    /// A height that is not a decimal int64 string.
    #[error("/commit {field} is not a decimal height: {value:?}")]
    BadHeight {
        /// Which height (`header.height`, `commit.height`).
        field: &'static str,
        /// What it held.
        value: String,
    },
    /// The commit is for another height than its header.
    #[error("/commit commit.height {commit} differs from header.height {header}")]
    HeightMismatch {
        /// `header.height`.
        header: u64,
        /// `commit.height`.
        commit: u64,
    },
    /// A signature entry whose fields do not fit its flag, or an unknown flag.
    #[error("/commit signatures[{index}]: {reason}")]
    BadSignature {
        /// Position in `signatures`.
        index: usize,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Deserialize)]
struct Envelope {
    result: Option<ResultCommit>,
    error: Option<RpcErrorBody>,
}

#[derive(Deserialize)]
struct RpcErrorBody {
    code: i64,
    message: String,
    #[serde(default)]
    data: String,
}

#[derive(Deserialize)]
struct ResultCommit {
    signed_header: SignedHeader,
    canonical: bool,
}

#[derive(Deserialize)]
struct SignedHeader {
    header: Header,
    commit: Commit,
}

#[derive(Deserialize)]
struct Header {
    height: String,
    time: String,
}

#[derive(Deserialize)]
struct Commit {
    height: String,
    block_id: BlockId,
    signatures: Vec<CommitSig>,
}

#[derive(Deserialize)]
struct BlockId {
    hash: String,
}

#[derive(Deserialize)]
struct CommitSig {
    block_id_flag: u8,
    validator_address: String,
    timestamp: String,
    signature: Option<String>,
}

/// `libs/json` writes int64 as a decimal string.
fn height(field: &'static str, value: &str) -> Result<u64, CommitError> {
    let bad = || CommitError::BadHeight {
        field,
        value: value.to_string(),
    };
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    value
        .parse::<i64>()
        .ok()
        .and_then(|h| u64::try_from(h).ok())
        .ok_or_else(bad)
}

fn is_address(text: &str) -> bool {
    text.len() == 40 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Reads a `/commit` answer (the whole JSON-RPC envelope).
pub fn parse_commit(body: &[u8]) -> Result<CommitView, CommitError> {
    if body.len() > MAX_COMMIT_BODY_BYTES {
        return Err(CommitError::TooLarge {
            limit: MAX_COMMIT_BODY_BYTES,
        });
    }
    let envelope: Envelope =
        serde_json::from_slice(body).map_err(|e| CommitError::Malformed(e.to_string()))?;
    if let Some(error) = envelope.error {
        return Err(CommitError::Rpc {
            code: error.code,
            message: error.message,
            data: error.data,
        });
    }
    let result = envelope
        .result
        .ok_or_else(|| CommitError::Malformed("no result (null or missing)".to_string()))?;
    let header = &result.signed_header.header;
    let commit = &result.signed_header.commit;
    let header_height = height("header.height", &header.height)?;
    let commit_height = height("commit.height", &commit.height)?;
    if header_height != commit_height {
        return Err(CommitError::HeightMismatch {
            header: header_height,
            commit: commit_height,
        });
    }
    let mut signed = Vec::new();
    let mut nil_voted = Vec::new();
    for (index, sig) in commit.signatures.iter().enumerate() {
        let bad = |reason: &str| CommitError::BadSignature {
            index,
            reason: reason.to_string(),
        };
        match sig.block_id_flag {
            1 => {
                if !sig.validator_address.is_empty() || sig.signature.is_some() {
                    return Err(bad("absent (flag 1) but carries an address or signature"));
                }
            }
            2 | 3 => {
                if !is_address(&sig.validator_address) {
                    return Err(bad("validator_address is not 20 bytes of hex"));
                }
                if sig.signature.as_deref().is_none_or(str::is_empty) {
                    return Err(bad("flag 2 or 3 without a signature"));
                }
                if sig.timestamp.is_empty() {
                    return Err(bad("flag 2 or 3 without a timestamp"));
                }
                let address = sig.validator_address.to_ascii_uppercase();
                if sig.block_id_flag == 2 {
                    signed.push(address);
                } else {
                    nil_voted.push(address);
                }
            }
            flag => return Err(bad(&format!("unknown block_id_flag {flag}"))),
        }
    }
    Ok(CommitView {
        height: header_height,
        time: header.time.clone(),
        block_hash: commit.block_id.hash.clone(),
        signed,
        nil_voted,
        canonical: result.canonical,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADDRESS: &str = "E88187840CF563F6C0FB269BDF454EE054923426";

    fn body(height: &str, commit_height: &str, sigs: &str) -> String {
        format!(
            r#"{{"jsonrpc":"2.0","id":-1,"result":{{"signed_header":{{"header":{{"height":"{height}","time":"2024-01-01T00:00:00Z"}},"commit":{{"height":"{commit_height}","round":0,"block_id":{{"hash":"AB","parts":{{"total":1,"hash":"CD"}}}},"signatures":[{sigs}]}}}},"canonical":true}}}}"#
        )
    }

    fn sig(flag: u8, address: &str, signature: &str) -> String {
        format!(
            r#"{{"block_id_flag":{flag},"validator_address":"{address}","timestamp":"2024-01-01T00:00:01Z","signature":{signature}}}"#
        )
    }

    #[test]
    fn flags_sort_validators_into_signed_nil_and_absent() {
        let sigs = [
            sig(2, ADDRESS, "\"c2ln\""),
            sig(3, &ADDRESS.to_lowercase().replace('e', "f"), "\"c2ln\""),
            sig(1, "", "null"),
        ]
        .join(",");
        let view = parse_commit(body("7", "7", &sigs).as_bytes()).unwrap();
        assert_eq!(view.height, 7);
        assert_eq!(view.block_hash, "AB");
        assert_eq!(view.signed, vec![ADDRESS.to_string()]);
        assert_eq!(view.nil_voted.len(), 1);
        assert!(view.has_precommit_from(&ADDRESS.to_lowercase()));
        assert!(view.canonical);
    }

    #[test]
    fn bad_answers_are_refused_naming_the_problem() {
        let error_answer = r#"{"jsonrpc":"2.0","id":-1,"error":{"code":-32603,"message":"Internal error","data":"height 9 must be less than or equal to the current blockchain height 5"}}"#;
        let cases: Vec<(String, &str)> = vec![
            (
                error_answer.to_string(),
                "height 9 must be less than or equal to the current blockchain height 5",
            ),
            (
                r#"{"jsonrpc":"2.0","id":-1,"result":null}"#.to_string(),
                "no result",
            ),
            (
                body("7", "7", "").replace(r#""canonical":true"#, r#""canonical":1"#),
                "malformed",
            ),
            (
                body("7", "7", "").replace(r#","time":"2024-01-01T00:00:00Z""#, ""),
                "missing field `time`",
            ),
            (
                body("seven", "7", ""),
                "header.height is not a decimal height: \"seven\"",
            ),
            (
                body("-7", "-7", ""),
                "header.height is not a decimal height",
            ),
            (
                body("7", "8", ""),
                "commit.height 8 differs from header.height 7",
            ),
            (
                body("7", "7", &sig(2, "XYZ", "\"c2ln\"")),
                "signatures[0]: validator_address",
            ),
            (
                body("7", "7", &sig(2, ADDRESS, "null")),
                "signatures[0]: flag 2 or 3 without a signature",
            ),
            (
                body("7", "7", &sig(1, ADDRESS, "null")),
                "absent (flag 1) but carries",
            ),
            (
                body("7", "7", &sig(4, ADDRESS, "\"c2ln\"")),
                "unknown block_id_flag 4",
            ),
            (
                body("7", "7", "").replace(r#""height":"7","round""#, r#""height":7,"round""#),
                "malformed",
            ),
            ("not json".to_string(), "malformed"),
            (" ".repeat(MAX_COMMIT_BODY_BYTES + 1), "over 1048576 bytes"),
        ];
        for (input, expected) in cases {
            let error = parse_commit(input.as_bytes())
                .expect_err(expected)
                .to_string();
            assert!(error.contains(expected), "{expected:?} not in {error:?}");
        }
    }
}
