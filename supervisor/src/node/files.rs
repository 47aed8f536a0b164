//! Where the node keeps the files the supervisor reads: the paths that
//! `config/config.toml` names (relative to the home unless absolute), with
//! CometBFT's defaults, and the chain id from `config/genesis.json`.
//!
//! Read-only: nothing here writes a node file (the sign state is written
//! only by [`crate::sign_state::write_atomic`], the keys only by
//! [`crate::vault`]).

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::vault::KeyKind;

/// A path from `config.toml` (relative to the home unless absolute), or
/// the CometBFT default.
fn node_file(daemon_home: &Path, key: &str, default: &str) -> PathBuf {
    let configured = std::fs::read_to_string(daemon_home.join("config/config.toml"))
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .and_then(|table| table.get(key)?.as_str().map(PathBuf::from));
    let path = configured.unwrap_or_else(|| PathBuf::from(default));
    if path.is_absolute() {
        path
    } else {
        daemon_home.join(path)
    }
}

/// `priv_validator_state_file` from `config.toml`.
pub fn state_file(daemon_home: &Path) -> PathBuf {
    node_file(
        daemon_home,
        "priv_validator_state_file",
        "data/priv_validator_state.json",
    )
}

/// Where gaiad's key files are (before import, or their tmpfs copies).
pub fn key_file(daemon_home: &Path, kind: KeyKind) -> PathBuf {
    match kind {
        KeyKind::PrivValidatorKey => node_file(
            daemon_home,
            "priv_validator_key_file",
            "config/priv_validator_key.json",
        ),
        KeyKind::NodeKey => node_file(daemon_home, "node_key_file", "config/node_key.json"),
    }
}

/// The chain id: `configured` (`[backup] chain-id`) if set, else
/// `config/genesis.json`'s `chain_id`.
pub fn chain_id(daemon_home: &Path, configured: Option<&str>) -> anyhow::Result<String> {
    if let Some(chain_id) = configured {
        return Ok(chain_id.to_owned());
    }
    let path = daemon_home.join("config/genesis.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read {} for the chain id; set backup.chain-id",
            path.display()
        )
    })?;
    #[derive(serde::Deserialize)]
    struct Genesis {
        chain_id: Option<String>,
    }
    let genesis: Genesis = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    genesis
        .chain_id
        .with_context(|| format!("{} has no chain_id; set backup.chain-id", path.display()))
}
