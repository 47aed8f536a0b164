//! One benchmark result, as appended to `target/bench/results.jsonl`.

use serde::{Deserialize, Serialize};

/// A single measured figure. Names are stable so results can be compared
/// across runs; `peer`/`peer_value` hold the same figure measured for a
/// reference implementation (e.g. OpenSSH) in the same run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchResult {
    /// Stable name, e.g. `upgrade_switch_ms`.
    pub name: String,
    /// The measured value.
    pub value: f64,
    /// Unit of `value` (`ms`, `s`, `MiB`, `pct`, `MiB/s`).
    pub unit: String,
    /// The project's target for this figure, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<f64>,
    /// Name of the peer implementation measured in the same run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// The peer's value for the same figure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_value: Option<f64>,
}
