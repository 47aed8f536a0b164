//! `palisade-supervisor init-vault`: create the vault and import the node's
//! key files into it (`docs/vault.md`). The plaintext originals are
//! destroyed only after their encrypted copies verify.

use std::path::{Path, PathBuf};

use anyhow::bail;

use crate::config::Config;
use crate::node::files::NodePaths;
use crate::vault::{KeyKind, WorkFactor};

/// Create the vault in `[vault] dir` under a new passphrase (from
/// `passphrase_file`, else asked twice on the terminal) and, with
/// `import`, move the key files into it.
pub fn run(config: &Config, passphrase_file: Option<&Path>, import: bool) -> anyhow::Result<()> {
    let settings = super::vault_settings(config)?;
    // The key files config.toml names, read before anything is created: a
    // config.toml that cannot be read stops here with nothing changed.
    let paths = if import {
        Some(NodePaths::read(&config.daemon_home)?)
    } else {
        None
    };
    // An explicit --passphrase-file only: a new passphrase is never taken
    // from the unattended-unlock file by accident.
    let passphrase = match passphrase_file {
        Some(file) => crate::passphrase::from_file(file)?,
        None => crate::passphrase::prompt("New vault passphrase: ", true)?,
    };
    let work_factor = WorkFactor::new(settings.scrypt_work_factor)?;
    let info = crate::vault::init_vault(
        &settings.dir,
        &passphrase,
        work_factor,
        &settings.recovery_recipients,
    )?;
    println!("created the vault in {}", settings.dir.display());
    println!("  vault recipient:     {}", info.age_recipient);
    println!("  backup signing key:  {}", info.backup_verifying_key);
    if !settings.recovery_recipients.is_empty() {
        println!(
            "  recovery recipients: {}",
            settings.recovery_recipients.len()
        );
    }
    let Some(paths) = paths else {
        return Ok(());
    };
    let mut vault = crate::vault::unlock(&settings.dir, &passphrase)?;
    let files: Vec<(KeyKind, PathBuf)> = KeyKind::ALL
        .into_iter()
        .map(|kind| (kind, paths.key(kind).to_path_buf()))
        .filter(|(kind, path)| {
            let present = path.exists();
            if !present {
                println!("  {kind}: {} not found; not imported", path.display());
            }
            present
        })
        .collect();
    if files.is_empty() {
        bail!("no key file found to import; the vault was created without keys");
    }
    let report = crate::vault::import_key_files(&mut vault, &files)?;
    print!("{report}");
    tracing::info!(
        imported = report.imported.len(),
        "key files imported into the vault; plaintext originals removed"
    );
    Ok(())
}
