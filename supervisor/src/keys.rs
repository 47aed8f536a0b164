//! The vault, the sign-state watermark and backups at run time: what the
//! supervisor does with [`crate::vault`], [`crate::sign_state`] and
//! [`crate::backup`].
//!
//! - [`unlock`] is the one unlock path: local sources (descriptor, systemd
//!   credential, opted-in file) call it now, the RPC unlock will too.
//! - [`start_check`] is the start rule: the local state file against every
//!   reachable backup, decided by [`crate::sign_state::start_decision`].
//! - [`BackupWorker`] follows the state file while the daemon runs and
//!   publishes a signed, encrypted bundle on every watermark change
//!   (debounced), and once more on stop.
//! - The `init-vault` and `restore-state` commands.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use secrecy::SecretString;
use tokio::sync::{mpsc, oneshot};
use zeroize::Zeroizing;

use crate::backup::{
    BackupScheduler, BackupStore, BundleInput, Expectations, LocalDirStore, RestoreReport,
    StoreFanout, apply_retention, create_bundle, gather_and_verify,
};
use crate::config::{Config, VaultSettings};
use crate::sign_state::{
    KnownWatermark, LocalState, SignState, StartDecision, StateFollower, Watermark,
    WatermarkSource, read_local, restore_decision, start_decision, write_atomic,
};
use crate::vault::{KeyKind, UnlockedVault, VaultError, WorkFactor};

/// The reason logged for the debounced backups.
const WATERMARK_CHANGED: &str = "watermark changed";

/// How long one store may take to list, fetch or store.
const STORE_TIMEOUT: Duration = Duration::from_secs(10);

/// The validator a vault belongs to, for bundle metadata and checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatorIdentity {
    pub chain_id: String,
    /// Consensus address, uppercase hex.
    pub address: String,
}

/// Unlock the vault. The single entry point for every unlock source.
pub fn unlock(
    settings: &VaultSettings,
    passphrase: &SecretString,
) -> Result<UnlockedVault, VaultError> {
    crate::vault::unlock(&settings.dir, passphrase)
}

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

/// The chain id: `[backup] chain-id`, else `config/genesis.json`.
pub fn chain_id(config: &Config, settings: &VaultSettings) -> anyhow::Result<String> {
    if let Some(chain_id) = &settings.backup.chain_id {
        return Ok(chain_id.clone());
    }
    let path = config.daemon_home.join("config/genesis.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read {} for the chain id; set backup.chain-id",
            path.display()
        )
    })?;
    let genesis: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    genesis["chain_id"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("{} has no chain_id; set backup.chain-id", path.display()))
}

/// Chain id and consensus address (from the vault's validator key).
pub fn identity(
    config: &Config,
    settings: &VaultSettings,
    vault: &UnlockedVault,
) -> anyhow::Result<ValidatorIdentity> {
    let key = vault.decrypt_key(KeyKind::PrivValidatorKey).context(
        "the vault holds no priv_validator_key.json: run init-vault with the key file present",
    )?;
    let json: serde_json::Value =
        serde_json::from_slice(&key).context("the vault's priv_validator_key.json is not JSON")?;
    let address = json["address"]
        .as_str()
        .context("the vault's priv_validator_key.json has no address")?
        .to_ascii_uppercase();
    Ok(ValidatorIdentity {
        chain_id: chain_id(config, settings)?,
        address,
    })
}

/// Every configured store: `backup.dir` first, then `backup.extra-dirs`.
pub fn stores(settings: &VaultSettings) -> anyhow::Result<Vec<Arc<dyn BackupStore>>> {
    let mut stores: Vec<Arc<dyn BackupStore>> = Vec::new();
    for (index, dir) in std::iter::once(&settings.backup.dir)
        .chain(&settings.backup.extra_dirs)
        .enumerate()
    {
        let name = if index == 0 {
            "local".to_string()
        } else {
            format!("dir{index}:{}", dir.display())
        };
        let store = LocalDirStore::new(dir.clone(), name)
            .with_context(|| format!("backup store {}", dir.display()))?;
        stores.push(Arc::new(store));
    }
    Ok(stores)
}

fn expectations(vault: &UnlockedVault, validator: &ValidatorIdentity) -> Expectations {
    Expectations {
        verifying_key: vault.verifying_key(),
        chain_id: validator.chain_id.clone(),
        validator_address: validator.address.clone(),
        min_sequence: None,
        min_watermark: None,
    }
}

fn log_rejections(report: &RestoreReport) {
    for rejected in &report.rejected {
        tracing::warn!(
            store = %rejected.store,
            file = rejected.file_name.as_deref().unwrap_or("-"),
            reason = %rejected.reason,
            "backup rejected"
        );
    }
}

/// The result of the start rule.
pub struct StartCheck {
    pub decision: StartDecision,
    /// The next backup sequence number (above every accepted backup).
    pub next_sequence: u64,
}

/// The start rule: local state against every reachable backup.
pub async fn start_check(
    daemon_home: &Path,
    vault: &UnlockedVault,
    validator: &ValidatorIdentity,
    stores: &[Arc<dyn BackupStore>],
) -> StartCheck {
    let report = gather_and_verify(
        stores,
        vault.age_identity(),
        &expectations(vault, validator),
        STORE_TIMEOUT,
    )
    .await;
    log_rejections(&report);
    let backups: Vec<KnownWatermark> = report
        .accepted
        .iter()
        .map(|accepted| KnownWatermark {
            watermark: accepted.watermark,
            source: WatermarkSource::Backup {
                store: accepted.store.clone(),
                name: accepted.file_name.clone(),
                sequence: accepted.sequence,
            },
        })
        .collect();
    let path = state_file(daemon_home);
    let local = read_local(&path);
    StartCheck {
        decision: start_decision(&local, &path, &backups),
        next_sequence: report.max_sequence().map_or(1, |sequence| sequence + 1),
    }
}

/// A request to the worker: back up now, then acknowledge.
struct BackupRequest {
    reason: &'static str,
    done: oneshot::Sender<()>,
}

/// Publishes bundles as the sign state moves, and on request.
pub struct BackupWorker {
    requests: mpsc::Sender<BackupRequest>,
    task: tokio::task::JoinHandle<()>,
}

/// Asks a running [`BackupWorker`] for a backup now (SIGUSR1; the RPC's
/// "backup now" later).
#[derive(Clone, Debug)]
pub struct BackupTrigger {
    requests: mpsc::Sender<BackupRequest>,
}

impl BackupTrigger {
    /// Back up the current state now and wait until it is published.
    pub async fn backup_now(&self, reason: &'static str) {
        let (done, wait) = oneshot::channel();
        if self
            .requests
            .send(BackupRequest { reason, done })
            .await
            .is_ok()
        {
            let _ = tokio::time::timeout(STORE_TIMEOUT * 2, wait).await;
        }
    }
}

/// What a backup needs, owned by the worker task. The key files and the
/// recipients are decrypted and parsed once, not on every backup (one per
/// block); the key bytes stay in zeroizing buffers.
struct BackupJob {
    vault: Arc<UnlockedVault>,
    priv_validator_key: Option<Zeroizing<Vec<u8>>>,
    node_key: Option<Zeroizing<Vec<u8>>>,
    recipients: Vec<Box<dyn age::Recipient + Send>>,
    validator: ValidatorIdentity,
    stores: StoreFanout,
    state_path: PathBuf,
    retention: usize,
    next_sequence: u64,
    host_id: String,
    last_published: Option<Watermark>,
    /// Where the control RPC reads the last backup written.
    board: Option<crate::control::SharedBoard>,
}

/// How long a backup waits for its puts; slower ones (a bastion that died
/// silently) finish in the background, see [`StoreFanout`].
const PUBLISH_WAIT: Duration = Duration::from_secs(2);

/// Retention runs after every this many watermark-driven backups (and after
/// every requested one): each run lists every store, which for a bastion is
/// an SSH session.
const RETENTION_EVERY: u64 = 10;

impl BackupJob {
    async fn back_up(&mut self, reason: &str) {
        let bytes = match std::fs::read(&self.state_path) {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::error!(path = %self.state_path.display(), %error, "cannot read the sign state for a backup");
                return;
            }
        };
        let state = match SignState::parse(&bytes) {
            Ok(state) => state,
            Err(error) => {
                // CometBFT writes atomically; a bad read is retried at the
                // next change.
                tracing::warn!(%error, "sign state unreadable; backup skipped");
                return;
            }
        };
        let watermark = state.watermark();
        if self.last_published == Some(watermark) && reason == WATERMARK_CHANGED {
            return;
        }
        let input = BundleInput {
            chain_id: self.validator.chain_id.clone(),
            validator_address: self.validator.address.clone(),
            watermark,
            sequence: self.next_sequence,
            host_id: self.host_id.clone(),
            created_at: SystemTime::now(),
            software_version: env!("CARGO_PKG_VERSION").to_string(),
            priv_validator_state: bytes,
            priv_validator_key: self.priv_validator_key.clone(),
            node_key: self.node_key.clone(),
        };
        let started = Instant::now();
        let ciphertext = match create_bundle(&input, self.vault.signing_key(), &self.recipients) {
            Ok(ciphertext) => ciphertext,
            Err(error) => {
                tracing::error!(%error, "cannot create a backup bundle");
                return;
            }
        };
        let file_name = input.file_name().to_string();
        let stored = self
            .stores
            .publish(&file_name, &ciphertext, PUBLISH_WAIT)
            .await;
        if !stored.is_empty() {
            self.next_sequence += 1;
            self.last_published = Some(watermark);
            tracing::info!(%watermark, sequence = input.sequence, file = %file_name, stores = ?stored, reason, took_ms = started.elapsed().as_millis() as u64, "backup written");
            if let Some(board) = &self.board {
                crate::control::board(board).last_backup = Some(crate::control::LastBackup {
                    file: file_name.clone(),
                    sequence: input.sequence,
                    watermark: watermark.to_string(),
                    stores: stored.clone(),
                    at: SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map(|elapsed| elapsed.as_secs())
                        .unwrap_or(0),
                });
            }
            if reason != WATERMARK_CHANGED || input.sequence.is_multiple_of(RETENTION_EVERY) {
                for store in self.stores.stores() {
                    if !stored.iter().any(|name| name == store.name()) {
                        continue;
                    }
                    if let Err(error) = apply_retention(store.as_ref(), self.retention).await {
                        tracing::warn!(store = store.name(), %error, "backup retention failed");
                    }
                }
            }
        }
    }
}

/// Where a [`BackupWorker`] follows the sign state from.
pub struct FollowFrom {
    /// CometBFT's `priv_validator_state.json`.
    pub state_path: PathBuf,
    /// The sequence number of the first backup (above every accepted one).
    pub next_sequence: u64,
    /// Polling interval of the state follower (inotify is used too).
    pub poll_interval: Duration,
    /// Where the control RPC reads the last backup written, if anywhere.
    pub board: Option<crate::control::SharedBoard>,
}

impl BackupWorker {
    /// Start following `from.state_path`.
    pub fn spawn(
        vault: Arc<UnlockedVault>,
        validator: ValidatorIdentity,
        stores: Vec<Arc<dyn BackupStore>>,
        settings: &VaultSettings,
        from: FollowFrom,
    ) -> Result<BackupWorker, VaultError> {
        let FollowFrom {
            state_path,
            next_sequence,
            poll_interval,
            board,
        } = from;
        let (requests, mut incoming) = mpsc::channel::<BackupRequest>(4);
        let debounce = settings.backup.debounce;
        let recipients = vault.backup_recipients()?;
        let mut job = BackupJob {
            priv_validator_key: vault.decrypt_key(KeyKind::PrivValidatorKey).ok(),
            node_key: vault.decrypt_key(KeyKind::NodeKey).ok(),
            recipients,
            vault,
            validator,
            stores: StoreFanout::new(stores, STORE_TIMEOUT),
            state_path: state_path.clone(),
            retention: settings.backup.retention,
            next_sequence,
            host_id: host_id(),
            last_published: None,
            board,
        };
        let task = tokio::spawn(async move {
            let mut follower = StateFollower::new(state_path, poll_interval);
            let mut scheduler = BackupScheduler::new(debounce);
            loop {
                let deadline = scheduler.next_deadline();
                tokio::select! {
                    watermark = follower.next() => {
                        scheduler.on_watermark(watermark, Instant::now());
                    }
                    () = async {
                        match deadline {
                            Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
                            None => std::future::pending().await,
                        }
                    } => {
                        if scheduler.due(Instant::now()).is_some() {
                            job.back_up(WATERMARK_CHANGED).await;
                        }
                    }
                    request = incoming.recv() => {
                        let Some(request) = request else { break };
                        job.back_up(request.reason).await;
                        let _ = request.done.send(());
                    }
                }
            }
        });
        Ok(BackupWorker { requests, task })
    }

    /// A handle that requests backups from elsewhere.
    pub fn trigger(&self) -> BackupTrigger {
        BackupTrigger {
            requests: self.requests.clone(),
        }
    }

    /// Take a last backup (the final sign state after the daemon stopped)
    /// and stop the worker.
    pub async fn finish(self) {
        self.trigger().backup_now("final backup on stop").await;
        self.task.abort();
    }
}

/// `/etc/machine-id`, else the host name: which host wrote a bundle.
fn host_id() -> String {
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

fn vault_settings(config: &Config) -> anyhow::Result<&VaultSettings> {
    config
        .vault
        .as_ref()
        .context("no [vault] section in the configuration file (see docs/vault.md)")
}

fn passphrase_for_command(
    settings: &VaultSettings,
    file: Option<&Path>,
    confirm: bool,
) -> anyhow::Result<SecretString> {
    use crate::passphrase;
    if let Some(file) = file.or(settings.passphrase_file.as_deref()) {
        return Ok(passphrase::from_file(file)?);
    }
    Ok(passphrase::prompt("Vault passphrase: ", confirm)?)
}

/// `init-vault`: create the vault and import the key files.
pub fn init_vault_command(
    config: &Config,
    passphrase_file: Option<&Path>,
    import: bool,
) -> anyhow::Result<()> {
    let settings = vault_settings(config)?;
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
    if !import {
        return Ok(());
    }
    let mut vault = crate::vault::unlock(&settings.dir, &passphrase)?;
    let files: Vec<(KeyKind, PathBuf)> = KeyKind::ALL
        .into_iter()
        .map(|kind| (kind, key_file(&config.daemon_home, kind)))
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

/// The `[[bastion]]`s that hold backups, with every forward removed.
fn backup_only_tunnels(config: &Config) -> Option<crate::config::TunnelSettings> {
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

/// `restore-state`: write the highest valid backup's state when the local
/// one is behind it or missing.
pub fn restore_state_command(
    config: &Config,
    passphrase_file: Option<&Path>,
) -> anyhow::Result<()> {
    let settings = vault_settings(config)?;
    let passphrase = passphrase_for_command(settings, passphrase_file, false)?;
    let vault = unlock(settings, &passphrase)?;
    let validator = identity(config, settings, &vault)?;
    let mut stores = stores(settings)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        // The bastions' stores, through tunnels of their own that carry
        // nothing else: no forwards, so a running supervisor's listeners
        // and sockets are left alone.
        let tunnels = match backup_only_tunnels(config) {
            Some(settings) => {
                let shutdown = tokio_util::sync::CancellationToken::new();
                let mesh =
                    crate::tunnel::TunnelMesh::start(&settings, &config.rpc.socket, &shutdown)
                        .await?;
                mesh.wait_for_backup_bastions().await;
                stores.extend(mesh.backup_stores(&config.rpc.name));
                Some(mesh)
            }
            None => None,
        };
        let report = gather_and_verify(
            &stores,
            vault.age_identity(),
            &expectations(&vault, &validator),
            STORE_TIMEOUT,
        )
        .await;
        if let Some(mesh) = tunnels {
            mesh.stop().await;
        }
        anyhow::Ok(report)
    })?;
    for rejected in &report.rejected {
        println!(
            "rejected {} in store {}: {}",
            rejected.file_name.as_deref().unwrap_or("(listing)"),
            rejected.store,
            rejected.reason
        );
    }
    log_rejections(&report);
    let Some(best) = report.best else {
        bail!(
            "no valid backup found in {} store(s); nothing restored",
            stores.len()
        );
    };
    let path = state_file(&config.daemon_home);
    let local = read_local(&path);
    let candidate = KnownWatermark {
        watermark: best.bundle.metadata.watermark,
        source: WatermarkSource::Backup {
            store: best.store.clone(),
            name: best.file_name.clone(),
            sequence: best.bundle.metadata.sequence,
        },
    };
    let highest_known = match &local {
        LocalState::Present(local) => (*local).max(candidate.watermark),
        _ => candidate.watermark,
    };
    restore_decision(&local, &candidate, highest_known)?;
    let state =
        SignState::parse(&best.bundle.state).context("the backup's sign state does not parse")?;
    write_atomic(&path, &state, Some(highest_known))?;
    let previous = match &local {
        LocalState::Present(watermark) => watermark.to_string(),
        LocalState::Missing => "missing".into(),
        LocalState::Unreadable(error) => format!("unreadable ({error})"),
    };
    tracing::warn!(from = %previous, to = %candidate.watermark, source = %candidate.source, path = %path.display(), "sign state restored from backup");
    println!(
        "restored {} to {} from {} (was: {previous})",
        path.display(),
        candidate.watermark,
        candidate.source
    );
    Ok(())
}
