//! The sign-state watermark: CometBFT's `priv_validator_state.json` and the
//! rule that it never goes backwards (DESIGN.md, safety invariant 2).
//!
//! - [`file`]: parsing and writing the file exactly as CometBFT's FilePV does.
//! - [`decision`]: the pure rules — [`decision::check_advance`], the start rule
//!   [`start_decision`] and [`restore_decision`]. No I/O.
//! - [`io`]: the thin effects — [`read_local`] and [`write_atomic`]
//!   (temp file, fsync, rename, fsync the directory).
//! - [`follow`]: [`StateFollower`], which watches the file while gaiad runs.

use serde::{Deserialize, Serialize};

pub(crate) mod decision;
pub(crate) mod file;
pub(crate) mod follow;
pub(crate) mod io;

pub(crate) use decision::restore_decision;
pub use decision::{
    BackedUpSignature, KnownWatermark, LocalState, StartDecision, WatermarkSource,
    signbytes_conflict, start_decision,
};
pub use file::SignState;
pub use follow::StateFollower;
pub use io::{SignStateWriteError, read_local, read_local_state, write_atomic};

/// Parse `priv_validator_state.json` (same as [`SignState::parse`]).
pub fn parse(bytes: &[u8]) -> Result<SignState, SignStateError> {
    SignState::parse(bytes)
}

/// CometBFT's signing steps, as numbered in `priv_validator_state.json`.
/// `None` (0) is the state of a validator that has never signed
/// (`{"height":"0","round":0,"step":0}` after `init`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum Step {
    None = 0,
    Propose = 1,
    Prevote = 2,
    Precommit = 3,
}

impl TryFrom<u8> for Step {
    type Error = String;
    fn try_from(value: u8) -> Result<Step, String> {
        match value {
            0 => Ok(Step::None),
            1 => Ok(Step::Propose),
            2 => Ok(Step::Prevote),
            3 => Ok(Step::Precommit),
            other => Err(format!(
                "step {other} is not 0 (none), 1 (propose), 2 (prevote) or 3 (precommit)"
            )),
        }
    }
}

impl From<Step> for u8 {
    fn from(step: Step) -> u8 {
        step as u8
    }
}

/// The highest (height, round, step) a validator has signed at. Ordered
/// lexicographically, which is exactly CometBFT's double-sign order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Watermark {
    pub height: u64,
    pub round: u32,
    pub step: Step,
}

impl std::fmt::Display for Watermark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "height {} round {} step {}",
            self.height, self.round, self.step as u8
        )
    }
}

/// Why a sign state was rejected: a bad file, or a move that would go
/// backwards. Every message names what was found and, for the regression
/// kinds, both watermarks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignStateError {
    /// The file is zero bytes or only whitespace (e.g. a truncated write).
    #[error("the sign state is empty (zero bytes or only whitespace; a truncated write?)")]
    Empty,
    /// The JSON ends before the object is complete (a partial write).
    #[error("the sign state JSON is truncated (it ends before the object is complete)")]
    Truncated,
    /// Not JSON, not an object, or a required field missing.
    #[error("the sign state is malformed: {0}")]
    Malformed(String),
    /// `height` is not a JSON string (CometBFT always writes `"height": "123"`).
    #[error(
        "\"height\" must be a decimal string like \"123\" (CometBFT writes it quoted), not a JSON number or other type"
    )]
    HeightNotString,
    /// `height` is a string but not a decimal integer from 0 to 2^63-1.
    #[error("\"height\" {0:?} is not a decimal integer from 0 to 9223372036854775807")]
    BadHeight(String),
    /// `round` is negative, fractional, too large, or not a number.
    #[error("\"round\" must be an integer from 0 to 2147483647")]
    BadRound,
    /// `step` is a number outside 0..=3.
    #[error("\"step\" {0} is not 0 (none), 1 (propose), 2 (prevote) or 3 (precommit)")]
    BadStep(u8),
    /// `signature` is present but not a standard base64 string.
    #[error("\"signature\" is not standard base64: {0}")]
    BadSignature(String),
    /// `signbytes` is present but not a hex string.
    #[error("\"signbytes\" is not hex: {0}")]
    BadSignBytes(String),
    /// The file exists but could not be read (the message names the path).
    #[error("cannot read the sign state: {0}")]
    Read(String),
    /// The proposed height is below the current one.
    #[error("height regression: proposed {proposed} is below current {current}")]
    HeightRegression {
        current: Watermark,
        proposed: Watermark,
    },
    /// Same height, but the proposed round is below the current one.
    #[error("round regression: proposed {proposed} is below current {current}")]
    RoundRegression {
        current: Watermark,
        proposed: Watermark,
    },
    /// Same height and round, but the proposed step is below the current one.
    #[error("step regression: proposed {proposed} is below current {current}")]
    StepRegression {
        current: Watermark,
        proposed: Watermark,
    },
    /// A state would be written or restored below the highest known
    /// watermark; `origin` says where the proposed state came from
    /// (not named `source`: thiserror would treat that as the cause).
    #[error(
        "refusing to go backwards: {origin} is at {proposed}, below the highest known watermark {known}"
    )]
    BelowKnownWatermark {
        proposed: Watermark,
        known: Watermark,
        origin: String,
    },
    /// A restore candidate is above the "highest known" watermark it was
    /// checked against, so that highest was computed without it.
    #[error(
        "the restore candidate {candidate} is above the highest known watermark {known}, which must include it; recompute the highest known watermark"
    )]
    HighestKnownStale {
        candidate: Watermark,
        known: Watermark,
    },
    /// The local state is already at the candidate's watermark: restoring
    /// would change nothing.
    #[error(
        "nothing to restore: the local state is already at {local}, the same as the candidate {candidate}"
    )]
    RestoreNotNeeded {
        local: Watermark,
        candidate: Watermark,
    },
}
