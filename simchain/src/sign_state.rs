//! FilePV double-sign protection: `priv_validator_state.json` and its rules.
//!
//! Format, exactly as CometBFT's FilePV writes it (height is a string; `signature` and
//! `signbytes` are omitted while empty):
//!
//! ```json
//! {"height":"120","round":0,"step":3,"signature":"<b64>","signbytes":"<UPPERHEX>"}
//! ```
//!
//! Steps: 1 propose, 2 prevote, 3 precommit. [`check`] is the pure decision (no I/O), mirroring
//! CometBFT's `checkHRS` + `signVote`; [`SignState::save`] persists atomically (temp file in the
//! same directory, fsync, rename, fsync directory). Callers must save *before* releasing a
//! signature.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::vote::{CanonicalVote, only_differ_by_timestamp};

/// Why a signature was refused. Each is a distinct FilePV failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignStateError {
    /// Height below the last signed height.
    #[error("height regression. Got {got}, last height {last}")]
    HeightRegression {
        /// Requested height.
        got: u64,
        /// Last signed height.
        last: u64,
    },
    /// Same height, round below the last signed round.
    #[error("round regression at height {height} got {got}, last round {last}")]
    RoundRegression {
        /// Height.
        height: u64,
        /// Requested round.
        got: u32,
        /// Last signed round.
        last: u32,
    },
    /// Same height and round, step below the last signed step.
    #[error("step regression at height {height} round {round}. Got {got}, last step {last}")]
    StepRegression {
        /// Height.
        height: u64,
        /// Round.
        round: u32,
        /// Requested step.
        got: u8,
        /// Last signed step.
        last: u8,
    },
    /// Same height/round/step but the state file holds no sign bytes to compare with.
    #[error("no SignBytes found")]
    MissingSignBytes,
    /// Same height/round/step with different content: signing would be a double sign.
    #[error("conflicting data")]
    ConflictingData,
}

/// Errors reading or writing the state file.
#[derive(Debug, thiserror::Error)]
pub enum SignStateFileError {
    /// I/O on the state file or its directory.
    #[error("{path}: {source}")]
    Io {
        /// File involved.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The file is not valid FilePV state JSON. The text is CometBFT's (`privval/file.go`
    /// `loadFilePV`), which names the file.
    #[error("Error reading PrivValidator state from {}: {source}", path.display())]
    Json {
        /// File involved.
        path: PathBuf,
        /// Underlying error.
        source: serde_json::Error,
    },
}

/// Contents of `priv_validator_state.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignState {
    /// Last signed height (a decimal string on disk; a JSON number is refused, as CometBFT does).
    #[serde(
        default,
        serialize_with = "height_to_string",
        deserialize_with = "height_from_string"
    )]
    pub height: u64,
    /// Last signed round.
    pub round: u32,
    /// Last signed step.
    pub step: u8,
    /// Base64 signature of the last signature, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// Uppercase hex sign bytes of the last signature, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signbytes: Option<String>,
}

fn height_to_string<S: Serializer>(height: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&height.to_string())
}

/// CometBFT reads this file with its Amino-compatible JSON decoder (`privval/file.go`
/// `loadFilePV` → `libs/json/decoder.go`, v0.38), which insists that 64-bit integers are
/// strings: `"height": 120` is refused with `invalid 64-bit integer encoding "120", expected
/// string` (and so is `null`), and the node exits at start. A missing field decodes to zero.
fn height_from_string<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    use serde::de::Error;
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(text) => {
            let height: i64 = text.parse().map_err(|e| {
                D::Error::custom(format!("strconv.ParseInt: parsing {text:?}: {e}"))
            })?;
            u64::try_from(height).map_err(|_| {
                // FilePV would load a negative height and sign anything above it; refusing is
                // the safe reading of a file no CometBFT ever writes.
                D::Error::custom(format!("negative height {height}"))
            })
        }
        other => Err(D::Error::custom(format!(
            "invalid 64-bit integer encoding {:?}, expected string",
            other.to_string()
        ))),
    }
}

/// What to do with a signing request that passed the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignDecision {
    /// New height/round/step: sign, record, persist, then release.
    SignNew,
    /// Same vote already signed: release the cached signature with these sign bytes (which may
    /// carry the earlier timestamp, as CometBFT does).
    ReuseCached {
        /// Cached signature.
        signature: Vec<u8>,
        /// Cached sign bytes.
        sign_bytes: Vec<u8>,
    },
}

/// CometBFT FilePV decision for signing `sign_bytes` at (height, round, step). Pure.
pub fn check(
    state: &SignState,
    height: u64,
    round: u32,
    step: u8,
    sign_bytes: &[u8],
) -> Result<SignDecision, SignStateError> {
    if height < state.height {
        return Err(SignStateError::HeightRegression {
            got: height,
            last: state.height,
        });
    }
    if height > state.height {
        return Ok(SignDecision::SignNew);
    }
    if round < state.round {
        return Err(SignStateError::RoundRegression {
            height,
            got: round,
            last: state.round,
        });
    }
    if round > state.round {
        return Ok(SignDecision::SignNew);
    }
    if step < state.step {
        return Err(SignStateError::StepRegression {
            height,
            round,
            got: step,
            last: state.step,
        });
    }
    if step > state.step {
        return Ok(SignDecision::SignNew);
    }
    let cached_bytes = state
        .signbytes
        .as_deref()
        .and_then(|h| hex::decode(h).ok())
        .ok_or(SignStateError::MissingSignBytes)?;
    let cached_signature = state
        .signature
        .as_deref()
        .and_then(|s| B64.decode(s).ok())
        .ok_or(SignStateError::MissingSignBytes)?;
    if cached_bytes == sign_bytes || only_differ_by_timestamp(&cached_bytes, sign_bytes).is_some() {
        return Ok(SignDecision::ReuseCached {
            signature: cached_signature,
            sign_bytes: cached_bytes,
        });
    }
    Err(SignStateError::ConflictingData)
}

impl SignState {
    /// The state after signing `sign_bytes` at (height, round, step).
    pub fn after_signing(
        height: u64,
        round: u32,
        step: u8,
        sign_bytes: &[u8],
        signature: &[u8],
    ) -> Self {
        Self {
            height,
            round,
            step,
            signature: Some(B64.encode(signature)),
            signbytes: Some(hex::encode_upper(sign_bytes)),
        }
    }

    /// (height, round, step), ordered lexicographically.
    pub fn watermark(&self) -> (u64, u32, u8) {
        (self.height, self.round, self.step)
    }

    /// The vote cached in `signbytes`, when it parses.
    pub fn cached_vote(&self) -> Option<CanonicalVote> {
        let bytes = hex::decode(self.signbytes.as_deref()?).ok()?;
        CanonicalVote::parse(&bytes)
    }

    /// Reads a state file. Empty `signature`/`signbytes` strings are treated as absent.
    pub fn load(path: &Path) -> Result<Self, SignStateFileError> {
        let text = fs::read_to_string(path).map_err(|source| SignStateFileError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut state: SignState =
            serde_json::from_str(&text).map_err(|source| SignStateFileError::Json {
                path: path.to_path_buf(),
                source,
            })?;
        state.signature = state.signature.filter(|s| !s.is_empty());
        state.signbytes = state.signbytes.filter(|s| !s.is_empty());
        Ok(state)
    }

    /// Atomically replaces the state file: temp file in the same directory, fsync, rename,
    /// fsync the directory. On return the new state is durable.
    pub fn save(&self, path: &Path) -> Result<(), SignStateFileError> {
        let json = serde_json::to_vec_pretty(self).expect("sign state serializes");
        write_atomically(path, &json, 0o600).map_err(|source| SignStateFileError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// Durable atomic replace: temp file beside `path`, fsync, rename, fsync directory.
pub fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{file_name}.tmp.{}.{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vote::VoteType;

    fn bytes(height: u64, vote_type: VoteType, block: &str, timestamp: &str) -> Vec<u8> {
        CanonicalVote {
            block_id: block.into(),
            chain_id: "sim-1".into(),
            height,
            round: 0,
            timestamp: timestamp.into(),
            vote_type,
        }
        .sign_bytes()
    }

    fn signed_state(height: u64, round: u32, step: u8, sign_bytes: &[u8]) -> SignState {
        SignState::after_signing(height, round, step, sign_bytes, &[9u8; 64])
    }

    /// (name, state, height, round, step, sign bytes, expected decision)
    type Case<'a> = (
        &'a str,
        &'a SignState,
        u64,
        u32,
        u8,
        Vec<u8>,
        Result<SignDecision, SignStateError>,
    );

    #[test]
    fn filepv_rules_table() {
        use SignStateError::*;
        let cached = bytes(10, VoteType::Precommit, "AA", "t1");
        let state = signed_state(10, 1, 3, &cached);
        let bare = SignState {
            height: 10,
            round: 1,
            step: 3,
            signature: None,
            signbytes: None,
        };
        let fresh = SignState::default();
        let reuse = Ok(SignDecision::ReuseCached {
            signature: vec![9u8; 64],
            sign_bytes: cached.clone(),
        });
        let cases: Vec<Case<'_>> = vec![
            (
                "higher height",
                &state,
                11,
                0,
                2,
                bytes(11, VoteType::Prevote, "AA", "t"),
                Ok(SignDecision::SignNew),
            ),
            (
                "lower height",
                &state,
                9,
                5,
                3,
                bytes(9, VoteType::Precommit, "AA", "t"),
                Err(HeightRegression { got: 9, last: 10 }),
            ),
            (
                "lower round",
                &state,
                10,
                0,
                3,
                cached.clone(),
                Err(RoundRegression {
                    height: 10,
                    got: 0,
                    last: 1,
                }),
            ),
            (
                "higher round",
                &state,
                10,
                2,
                2,
                cached.clone(),
                Ok(SignDecision::SignNew),
            ),
            (
                "lower step",
                &state,
                10,
                1,
                2,
                bytes(10, VoteType::Prevote, "AA", "t"),
                Err(StepRegression {
                    height: 10,
                    round: 1,
                    got: 2,
                    last: 3,
                }),
            ),
            ("same vote", &state, 10, 1, 3, cached.clone(), reuse.clone()),
            (
                "timestamp only",
                &state,
                10,
                1,
                3,
                bytes(10, VoteType::Precommit, "AA", "t2"),
                reuse,
            ),
            (
                "other block",
                &state,
                10,
                1,
                3,
                bytes(10, VoteType::Precommit, "BB", "t1"),
                Err(ConflictingData),
            ),
            (
                "same hrs, no sign bytes",
                &bare,
                10,
                1,
                3,
                cached.clone(),
                Err(MissingSignBytes),
            ),
            (
                "watermark without bytes, below",
                &bare,
                10,
                1,
                2,
                cached.clone(),
                Err(StepRegression {
                    height: 10,
                    round: 1,
                    got: 2,
                    last: 3,
                }),
            ),
            (
                "fresh state",
                &fresh,
                1,
                0,
                2,
                cached.clone(),
                Ok(SignDecision::SignNew),
            ),
        ];
        for (name, state, height, round, step, sign_bytes, expected) in cases {
            assert_eq!(
                check(state, height, round, step, &sign_bytes),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn file_format_matches_cometbft() {
        let fresh = SignState::default();
        assert_eq!(
            serde_json::to_string(&fresh).unwrap(),
            r#"{"height":"0","round":0,"step":0}"#
        );
        let signed = signed_state(120, 0, 3, b"ab");
        let json: serde_json::Value = serde_json::to_value(&signed).unwrap();
        assert_eq!(json["height"], "120");
        assert_eq!(json["signbytes"], "6162");
        let parsed: SignState =
            serde_json::from_str(r#"{"height":"7","round":1,"step":2}"#).unwrap();
        assert_eq!(parsed.watermark(), (7, 1, 2));
        let missing: SignState = serde_json::from_str(r#"{"round":0,"step":0}"#).unwrap();
        assert_eq!(missing.height, 0);
    }

    #[test]
    fn numeric_or_null_height_is_refused_as_cometbft_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("priv_validator_state.json");
        for (text, expected) in [
            (
                r#"{"height":120,"round":0,"step":3}"#,
                r#"invalid 64-bit integer encoding "120", expected string"#,
            ),
            (
                r#"{"height":null,"round":0,"step":3}"#,
                r#"invalid 64-bit integer encoding "null", expected string"#,
            ),
            (r#"{"height":"12x","round":0,"step":3}"#, "parsing \"12x\""),
            (
                r#"{"height":"-1","round":0,"step":3}"#,
                "negative height -1",
            ),
            (r#"{"height":"1","round":"0","step":3}"#, "invalid type"),
        ] {
            fs::write(&path, text).unwrap();
            let message = SignState::load(&path).unwrap_err().to_string();
            assert!(
                message.starts_with(&format!(
                    "Error reading PrivValidator state from {}: ",
                    path.display()
                )) && message.contains(expected),
                "{text}: {message}"
            );
        }
    }

    #[test]
    fn save_is_atomic_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("priv_validator_state.json");
        let state = signed_state(3, 0, 2, b"x");
        state.save(&path).unwrap();
        state.save(&path).unwrap();
        assert_eq!(SignState::load(&path).unwrap(), state);
        let leftovers = fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1, "no temp files left behind");
        fs::write(
            &path,
            r#"{"height":"5","round":0,"step":3,"signature":"","signbytes":""}"#,
        )
        .unwrap();
        let loaded = SignState::load(&path).unwrap();
        assert_eq!(loaded.signature, None);
        assert_eq!(loaded.signbytes, None);
    }
}
