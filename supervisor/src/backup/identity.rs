//! Whose backups these are: the chain and the validator's consensus
//! address, and what a bundle must carry to be accepted as theirs.

use std::path::Path;

use anyhow::Context;
use ed25519_dalek::VerifyingKey;

use super::open::Expectations;
use crate::vault::UnlockedVault;

/// The validator a vault belongs to, for bundle metadata and checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatorIdentity {
    pub chain_id: String,
    /// Consensus address, uppercase hex.
    pub address: String,
}

impl ValidatorIdentity {
    /// The unlocked vault's validator: the address from its
    /// `priv_validator_key.json` (read through the vault's key-file types,
    /// which keep the private key in zeroizing memory), the chain id as
    /// configured (`[backup] chain-id`) or from `config/genesis.json`.
    pub fn of(
        vault: &UnlockedVault,
        daemon_home: &Path,
        configured_chain_id: Option<&str>,
    ) -> anyhow::Result<ValidatorIdentity> {
        let address = vault.validator_address().context(
            "the vault holds no usable priv_validator_key.json: run init-vault with the key file present",
        )?;
        Ok(ValidatorIdentity {
            chain_id: crate::node::files::chain_id(daemon_home, configured_chain_id)?,
            address,
        })
    }

    /// What a bundle must satisfy to be this validator's, signed by
    /// `verifying_key`. No floor on sequence or watermark: the callers
    /// compare watermarks themselves.
    pub fn expectations(&self, verifying_key: VerifyingKey) -> Expectations {
        Expectations {
            verifying_key,
            chain_id: self.chain_id.clone(),
            validator_address: self.address.clone(),
            min_sequence: None,
            min_watermark: None,
        }
    }
}

/// `/etc/machine-id`, else the host name: which host wrote a bundle.
pub(crate) fn host_id() -> String {
    std::fs::read_to_string("/etc/machine-id")
        .ok()
        .map(|id| id.trim().to_string())
        .filter(|id| !id.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|name| name.trim().to_string())
        })
        .unwrap_or_else(|| "unknown-host".into())
}
