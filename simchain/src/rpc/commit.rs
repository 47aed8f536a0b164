//! `/commit` and `/commit?height=H` (`rpc/core/blocks.go` `Commit`, v0.38) and the bounded
//! history of commits behind it.
//!
//! The answer is `ResultCommit` (`rpc/core/types/responses.go`): `signed_header` — the block's
//! `header` and its `commit` (`types/block.go` `Header`, `Commit`, `CommitSig`) — and
//! `canonical`: `true` for a height below the latest (the commit stored in block `H + 1`),
//! `false` for the latest (the node's "seen commit"). 64-bit integers are strings, `round` and
//! `block_id_flag` numbers, times RFC 3339 in UTC with only significant fraction digits
//! (`libs/json/encoder.go`); an absent validator is `types.NewCommitSigAbsent()`: flag 1, empty
//! address, Go's zero time, `null` signature.
//!
//! Heights are checked as `getHeight` does (`rpc/core/env.go`): not above the latest
//! (`height X must be less than or equal to the current blockchain height Y`), not below the
//! store's base (`height X is not available, lowest height is Y`), greater than 0. The history
//! keeps the last [`COMMIT_HISTORY_HEIGHTS`] commits, so older heights get the pruned-height
//! error, as from a pruning node.
//!
//! What the header cannot know in a simulation — the parts hash, the last-commit, consensus
//! and results hashes, the app hash — is a deterministic SHA-256 of the chain ID, a label and
//! the height; `data_hash` and `evidence_hash` are the hash of nothing (`E3B0…`), as for a
//! block without transactions or evidence.

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::clock::rfc3339_go;
use crate::http::HttpResponse;
use crate::protocol::{BLOCK_ID_FLAG_ABSENT, BlockCommit, block_id};

use super::{internal_error, invalid_params, query_param, success};

/// Commits kept for `/commit` (the latest and the 999 before it).
pub const COMMIT_HISTORY_HEIGHTS: usize = 1000;

/// Go's zero `time.Time` as `libs/json` writes it: the timestamp of an absent signature.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// SHA-256 of nothing: the hash of empty data and empty evidence (`types/block.go`).
const EMPTY_HASH: &str = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855";

/// The last [`COMMIT_HISTORY_HEIGHTS`] commits, by height.
#[derive(Debug, Clone, Default)]
pub struct CommitHistory {
    commits: BTreeMap<u64, BlockCommit>,
}

impl CommitHistory {
    /// Stores a commit (again: replaced), dropping the oldest beyond the bound.
    pub fn insert(&mut self, commit: BlockCommit) {
        self.commits.insert(commit.height, commit);
        while self.commits.len() > COMMIT_HISTORY_HEIGHTS {
            self.commits.pop_first();
        }
    }

    /// The commit of `height`, if kept.
    pub fn get(&self, height: u64) -> Option<&BlockCommit> {
        self.commits.get(&height)
    }

    /// The lowest height kept: the store's base.
    pub fn base(&self) -> Option<u64> {
        self.commits.keys().next().copied()
    }

    /// The highest height kept.
    pub fn latest(&self) -> Option<u64> {
        self.commits.keys().next_back().copied()
    }
}

/// The `height` parameter as CometBFT's URI handler converts it to `*int64`
/// (`rpc/jsonrpc/server/http_uri_handler.go` `httpParamsToArgs`): absent or empty is `None`
/// (the latest); digits, or digits in quotes (`libs/json` reads an int64 from a string), are
/// the height; anything else is refused with the converter's message.
pub fn height_param(query: &str) -> Result<Option<i64>, String> {
    let Some(text) = query_param(query, "height").filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let refuse = |reason: String| format!("error converting http params to arguments: {reason}");
    let is_int = |t: &str| {
        let digits = t.strip_prefix('-').unwrap_or(t);
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
    };
    let number = if is_int(&text) {
        text.as_str()
    } else if let Some(inner) = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .filter(|t| is_int(t))
    {
        inner
    } else if text.to_ascii_lowercase().starts_with("0x") {
        return Err(refuse(
            "got a hex string arg, but expected 'int64'".to_string(),
        ));
    } else {
        let first = text.chars().next().unwrap_or(' ');
        return Err(refuse(format!(
            "invalid character '{first}' looking for beginning of value"
        )));
    };
    number.parse::<i64>().map(Some).map_err(|_| {
        refuse(format!(
            "strconv.ParseInt: parsing \"{number}\": value out of range"
        ))
    })
}

/// `getHeight` (`rpc/core/env.go`): the height to answer for, or its error message.
pub fn resolve_height(latest: u64, base: u64, requested: Option<i64>) -> Result<u64, String> {
    let Some(height) = requested else {
        return Ok(latest);
    };
    if height <= 0 {
        return Err(format!("height must be greater than 0, but got {height}"));
    }
    let height = height as u64;
    if height > latest {
        return Err(format!(
            "height {height} must be less than or equal to the current blockchain height {latest}"
        ));
    }
    if height < base {
        return Err(format!(
            "height {height} is not available, lowest height is {base}"
        ));
    }
    Ok(height)
}

/// The whole `/commit` answer for a server whose latest committed height is `latest`.
///
/// The store's base is the lowest kept commit (the latest when none is kept: a node that just
/// restarted has not stored a commit yet). A height in range whose commit is not kept (a gap
/// while the node was cut off) is answered with a `null` result, as CometBFT answers when
/// `LoadBlockMeta` finds nothing.
pub fn commit_response(
    chain_id: &str,
    history: &CommitHistory,
    latest: u64,
    query: &str,
) -> HttpResponse {
    let requested = match height_param(query) {
        Ok(requested) => requested,
        Err(message) => return invalid_params(message),
    };
    let base = history.base().unwrap_or(latest).min(latest.max(1));
    let height = match resolve_height(latest, base, requested) {
        Ok(height) => height,
        Err(message) => return internal_error(message),
    };
    match history.get(height) {
        Some(commit) => success(&render(chain_id, commit, height != latest)),
        None => success(&None::<()>),
    }
}

/// `ResultCommit`.
#[derive(Debug, Serialize)]
pub struct ResultCommit {
    signed_header: SignedHeader,
    canonical: bool,
}

#[derive(Debug, Serialize)]
struct SignedHeader {
    header: Header,
    commit: Commit,
}

/// `types.Header`; `version.app` is 0 and left out (`omitempty` on `Consensus.App`).
#[derive(Debug, Serialize)]
struct Header {
    version: Version,
    chain_id: String,
    height: String,
    time: String,
    last_block_id: BlockId,
    last_commit_hash: String,
    data_hash: String,
    validators_hash: String,
    next_validators_hash: String,
    consensus_hash: String,
    app_hash: String,
    last_results_hash: String,
    evidence_hash: String,
    proposer_address: String,
}

#[derive(Debug, Serialize)]
struct Version {
    block: String,
}

#[derive(Debug, Serialize)]
struct BlockId {
    hash: String,
    parts: PartSetHeader,
}

#[derive(Debug, Serialize)]
struct PartSetHeader {
    total: u32,
    hash: String,
}

#[derive(Debug, Serialize)]
struct Commit {
    height: String,
    round: u32,
    block_id: BlockId,
    signatures: Vec<CommitSig>,
}

#[derive(Debug, Serialize)]
struct CommitSig {
    block_id_flag: u8,
    validator_address: String,
    timestamp: String,
    signature: Option<String>,
}

fn derived_hash(chain_id: &str, label: &str, height: u64) -> String {
    hex::encode_upper(Sha256::digest(
        format!("{chain_id}/{label}/{height}").as_bytes(),
    ))
}

/// The block ID of `height` as a header or commit names it: one part, as a small block has.
fn full_block_id(chain_id: &str, height: u64) -> BlockId {
    BlockId {
        hash: block_id(chain_id, height),
        parts: PartSetHeader {
            total: 1,
            hash: derived_hash(chain_id, "parts", height),
        },
    }
}

/// Renders one commit (`ctypes.NewResultCommit`).
pub fn render(chain_id: &str, commit: &BlockCommit, canonical: bool) -> ResultCommit {
    let height = commit.height;
    let last_block_id = if height > 1 {
        full_block_id(chain_id, height - 1)
    } else {
        // The first block has no last block: an empty `BlockID`.
        BlockId {
            hash: String::new(),
            parts: PartSetHeader {
                total: 0,
                hash: String::new(),
            },
        }
    };
    let signatures = commit
        .signatures
        .iter()
        .map(|sig| {
            if sig.block_id_flag == BLOCK_ID_FLAG_ABSENT {
                CommitSig {
                    block_id_flag: BLOCK_ID_FLAG_ABSENT,
                    validator_address: String::new(),
                    timestamp: ZERO_TIME.to_string(),
                    signature: None,
                }
            } else {
                CommitSig {
                    block_id_flag: sig.block_id_flag,
                    validator_address: sig.validator_address.clone(),
                    timestamp: humantime::parse_rfc3339(&sig.timestamp)
                        .map(rfc3339_go)
                        .unwrap_or_else(|_| sig.timestamp.clone()),
                    signature: sig.signature.clone(),
                }
            }
        })
        .collect();
    ResultCommit {
        signed_header: SignedHeader {
            header: Header {
                version: Version {
                    block: "11".to_string(),
                },
                chain_id: chain_id.to_string(),
                height: height.to_string(),
                time: humantime::parse_rfc3339(&commit.time)
                    .map(rfc3339_go)
                    .unwrap_or_else(|_| commit.time.clone()),
                last_block_id,
                last_commit_hash: derived_hash(chain_id, "last_commit", height),
                data_hash: EMPTY_HASH.to_string(),
                validators_hash: commit.validators_hash.clone(),
                next_validators_hash: commit.validators_hash.clone(),
                consensus_hash: derived_hash(chain_id, "consensus_params", 0),
                app_hash: derived_hash(chain_id, "app", height),
                last_results_hash: derived_hash(chain_id, "results", height),
                evidence_hash: EMPTY_HASH.to_string(),
                proposer_address: commit.proposer_address.clone(),
            },
            commit: Commit {
                height: height.to_string(),
                round: commit.round,
                block_id: BlockId {
                    hash: commit.block_id.clone(),
                    parts: PartSetHeader {
                        total: 1,
                        hash: derived_hash(chain_id, "parts", height),
                    },
                },
                signatures,
            },
        },
        canonical,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{BLOCK_ID_FLAG_COMMIT, CommitSig as WireSig};

    fn commit(height: u64) -> BlockCommit {
        BlockCommit {
            height,
            round: 0,
            block_id: block_id("sim-1", height),
            time: "2024-02-29T15:04:05.120000000Z".into(),
            proposer_address: "AA".repeat(20),
            validators_hash: "BB".repeat(32),
            signatures: vec![
                WireSig {
                    block_id_flag: BLOCK_ID_FLAG_COMMIT,
                    validator_address: "AA".repeat(20),
                    timestamp: "2024-02-29T15:04:05.300000000Z".into(),
                    signature: Some("c2ln".into()),
                },
                WireSig::absent(),
            ],
        }
    }

    fn history(heights: std::ops::RangeInclusive<u64>) -> CommitHistory {
        let mut history = CommitHistory::default();
        for height in heights {
            history.insert(commit(height));
        }
        history
    }

    #[test]
    fn heights_are_checked_as_get_height_does() {
        let history = history(3..=10);
        let cases: [(&str, u16, &str); 9] = [
            ("", 200, r#""canonical":false"#),
            ("height=10", 200, r#""canonical":false"#),
            ("height=9", 200, r#""canonical":true"#),
            ("height=%229%22", 200, r#""height":"9""#),
            (
                "height=11",
                500,
                r#""data":"height 11 must be less than or equal to the current blockchain height 10""#,
            ),
            (
                "height=2",
                500,
                r#""data":"height 2 is not available, lowest height is 3""#,
            ),
            (
                "height=0",
                500,
                r#""data":"height must be greater than 0, but got 0""#,
            ),
            (
                "height=abc",
                500,
                r#""code":-32602,"message":"Invalid params","data":"error converting http params to arguments: invalid character 'a' looking for beginning of value""#,
            ),
            ("height=99999999999999999999", 500, r#""code":-32602"#),
        ];
        for (query, status, needle) in cases {
            let response = commit_response("sim-1", &history, 10, query);
            assert_eq!(response.status, status, "{query}: {}", response.body);
            assert!(response.body.contains(needle), "{query}: {}", response.body);
        }
    }

    #[test]
    fn history_is_bounded_and_gaps_answer_null() {
        let history = history(1..=(COMMIT_HISTORY_HEIGHTS as u64 + 5));
        assert_eq!(history.base(), Some(6));
        assert_eq!(history.latest(), Some(COMMIT_HISTORY_HEIGHTS as u64 + 5));
        let mut gappy = CommitHistory::default();
        gappy.insert(commit(3));
        gappy.insert(commit(5));
        assert_eq!(
            commit_response("sim-1", &gappy, 5, "height=4").body,
            r#"{"jsonrpc":"2.0","id":-1,"result":null}"#
        );
    }

    #[test]
    fn absent_signatures_and_times_render_as_libs_json_writes_them() {
        let body = commit_response("sim-1", &history(1..=2), 2, "height=1").body;
        assert!(
            body.contains(r#"{"block_id_flag":1,"validator_address":"","timestamp":"0001-01-01T00:00:00Z","signature":null}"#),
            "{body}"
        );
        assert!(
            body.contains(r#""timestamp":"2024-02-29T15:04:05.3Z","signature":"c2ln"}"#),
            "{body}"
        );
        assert!(
            body.contains(r#""time":"2024-02-29T15:04:05.12Z""#),
            "{body}"
        );
        assert!(
            body.contains(r#""last_block_id":{"hash":"","parts":{"total":0,"hash":""}}"#),
            "{body}"
        );
        assert!(body.starts_with(r#"{"jsonrpc":"2.0","id":-1,"result":{"signed_header":{"header":{"version":{"block":"11"},"chain_id":"sim-1","height":"1","#), "{body}");
    }
}
