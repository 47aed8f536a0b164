//! `palisade-supervisor restore-state`: with the supervisor stopped, write
//! the highest valid backup's sign state when the local one is behind it,
//! missing or unreadable — through the same path as the control RPC's
//! `backup.restore` ([`crate::backup::restore_sign_state`]), reading the
//! bastions' stores through tunnels of its own.

use std::path::Path;

use anyhow::Context;

use crate::backup::{RestoreChoice, ValidatorIdentity, describe_local, restore_sign_state};
use crate::config::{Config, TunnelSettings};
use crate::node::files::NodePaths;

/// The `[[bastion]]`s that hold backups, with every forward removed, so a
/// running supervisor's listeners and sockets are left alone.
fn backup_only_tunnels(config: &Config) -> Option<TunnelSettings> {
    let mut settings = config.tunnels.clone()?;
    settings
        .bastions
        .retain(|bastion| bastion.backup_command.is_some());
    for bastion in &mut settings.bastions {
        bastion.rpc_socket = None;
        bastion.local_forwards.clear();
        bastion.remote_forwards.clear();
    }
    (!settings.bastions.is_empty()).then_some(settings)
}

/// A running supervisor (its control socket accepts a connection) may have
/// gaiad running, which keeps its sign state in memory and would write it
/// back over the restored one: refuse, and name the way that works while
/// it runs.
fn refuse_while_supervised(socket: &Path) -> anyhow::Result<()> {
    if std::os::unix::net::UnixStream::connect(socket).is_ok() {
        anyhow::bail!(
            "a supervisor is running (its control socket {} answers): gaiad may be signing and \
             would overwrite a restored state with its own; either stop the node and restore \
             through the running supervisor (`palisade-ctl node stop`, then `palisade-ctl restore \
             STORE FILE`), or stop the supervisor (`systemctl stop palisade-supervisor`) and run \
             restore-state again; nothing was changed",
            socket.display()
        );
    }
    Ok(())
}

/// Unlock (passphrase from `passphrase_file`, `[vault] passphrase-file`, or
/// the terminal), gather every store and restore the highest backup.
pub fn run(config: &Config, passphrase_file: Option<&Path>) -> anyhow::Result<()> {
    refuse_while_supervised(&config.rpc.socket)?;
    let settings = super::vault_settings(config)?;
    let passphrase = match passphrase_file.or(settings.passphrase_file.as_deref()) {
        Some(file) => crate::passphrase::from_file(file)?,
        None => crate::passphrase::prompt("Vault passphrase: ", false)?,
    };
    let vault = crate::vault::unlock(&settings.dir, &passphrase)?;
    drop(passphrase);
    let validator = ValidatorIdentity::of(
        &vault,
        &config.daemon_home,
        settings.backup.chain_id.as_deref(),
    )?;
    let mut stores = crate::backup::open_dir_stores(&settings.backup)
        .context("cannot open the backup directories")?;
    let path = NodePaths::read(&config.daemon_home)?.state;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let restored = runtime.block_on(async {
        // The bastions' stores, through tunnels that carry nothing else.
        let tunnels = match backup_only_tunnels(config) {
            Some(settings) => {
                let shutdown = tokio_util::sync::CancellationToken::new();
                let mesh = crate::tunnel::TunnelMesh::start(
                    &settings,
                    &config.rpc.socket,
                    &crate::eip::saved_addresses(config),
                    &shutdown,
                )
                .await?;
                mesh.wait_for_backup_bastions().await;
                stores.extend(mesh.backup_stores(&config.rpc.name));
                Some(mesh)
            }
            None => None,
        };
        let restored = restore_sign_state(
            &stores,
            vault.age_identity(),
            &validator.expectations(vault.verifying_key()),
            &path,
            &crate::backup::high_water::path_in(&settings.dir),
            &RestoreChoice::Highest,
        )
        .await;
        if let Some(mesh) = tunnels {
            mesh.stop().await;
        }
        anyhow::Ok(restored)
    })??;
    println!(
        "restored {} to {} from {} (was: {})",
        restored.path.display(),
        restored.watermark,
        restored.source(),
        describe_local(&restored.previous)
    );
    Ok(())
}
