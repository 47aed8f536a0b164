//! The AWS access key for rotations: by default sealed in the vault
//! (`aws-credentials.age`, age-encrypted to the vault's own recipient, so
//! importing needs no passphrase and only an unlocked vault reads it
//! back); the environment and a profile file are explicit opt-ins
//! (`eip.credentials`), since those keys sit on the host at rest.

use palisade_ec2::Credentials;

use crate::config::{CredentialSource, EipSettings};
use crate::vault::UnlockedVault;

/// The vault file that holds the access key.
pub const VAULT_FILE: &str = "aws-credentials.age";

/// Where `import-aws-credentials` reads the key from.
#[derive(Debug, Clone)]
pub enum ImportSource {
    Environment,
    Profile {
        file: std::path::PathBuf,
        name: String,
    },
}

/// Reads the key from `source` and seals it in the vault at `vault_dir`.
/// Returns the access key id (not a secret) and the file written.
pub fn import(
    vault_dir: &std::path::Path,
    source: &ImportSource,
) -> anyhow::Result<(String, std::path::PathBuf)> {
    let credentials = match source {
        ImportSource::Environment => Credentials::from_env()?,
        ImportSource::Profile { file, name } => Credentials::from_profile_file(file, name)?,
    };
    let stored = credentials.to_toml();
    let path = crate::vault::seal_file(vault_dir, VAULT_FILE, stored.as_bytes())?;
    Ok((credentials.access_key_id.clone(), path))
}

/// The key a rotation signs with, from the configured source. With
/// `"vault"` the vault must be unlocked.
pub fn load(settings: &EipSettings, vault: Option<&UnlockedVault>) -> anyhow::Result<Credentials> {
    match &settings.credentials {
        CredentialSource::Environment => Ok(Credentials::from_env()?),
        CredentialSource::Profile { file, name } => Ok(Credentials::from_profile_file(file, name)?),
        CredentialSource::Vault => {
            let vault = vault.ok_or_else(|| {
                anyhow::anyhow!(
                    "the vault is locked: the AWS access key is in the vault (unlock first)"
                )
            })?;
            let sealed = vault.open_sealed(VAULT_FILE)?.ok_or_else(|| {
                anyhow::anyhow!(
                    "no AWS access key in the vault: import one with `palisade-supervisor import-aws-credentials`"
                )
            })?;
            let text = std::str::from_utf8(&sealed)
                .map_err(|_| anyhow::anyhow!("{VAULT_FILE} does not hold text"))?;
            Ok(Credentials::from_toml(text)?)
        }
    }
}
