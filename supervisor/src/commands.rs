//! The one-off commands that work on the vault and the sign state while
//! the supervisor is not running: `init-vault` and `restore-state`. The
//! smaller commands (`init`, `add-upgrade`, `config`, …) are in
//! [`crate::cli`].

pub mod init_vault;
pub mod restore_state;

use anyhow::Context;

use crate::config::{Config, VaultSettings};

fn vault_settings(config: &Config) -> anyhow::Result<&VaultSettings> {
    config
        .vault
        .as_ref()
        .context("no [vault] section in the configuration file (see docs/vault.md)")
}
