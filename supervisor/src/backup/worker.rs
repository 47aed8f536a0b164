//! The backup worker: while the vault is unlocked it follows the sign state
//! file and publishes a signed, encrypted bundle on every watermark change
//! (debounced by [`BackupScheduler`]), on request ([`BackupTrigger`]:
//! `backup.now`, SIGUSR1), and once more when the node has stopped
//! ([`BackupWorker::finish`]).
//!
//! It holds the unlocked vault for the signing key and the recipients; key
//! files go into bundles from zeroizing buffers decrypted once. The last
//! backup written is published on a `watch` channel for the control RPC.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};
use zeroize::Zeroizing;

use super::bundle::{BundleInput, create_bundle};
use super::fanout::StoreFanout;
use super::identity::ValidatorIdentity;
use super::scheduler::BackupScheduler;
use super::start_check::STORE_TIMEOUT;
use super::store::{BackupStore, apply_retention};
use crate::config::BackupSettings;
use crate::sign_state::{SignState, StateFollower, Watermark};
use crate::vault::{KeyKind, UnlockedVault, VaultError};

/// The reason logged for the debounced backups.
const WATERMARK_CHANGED: &str = "watermark changed";

/// How long a backup waits for its puts; slower ones (a bastion that died
/// silently) finish in the background, see [`StoreFanout`].
const PUBLISH_WAIT: Duration = Duration::from_secs(2);

/// Retention runs after every this many watermark-driven backups (and after
/// every requested one): each run lists every store, which for a bastion is
/// an SSH session.
const RETENTION_EVERY: u64 = 10;

/// The last backup written, as the worker reports it (the contract's
/// type: `status` and `backup.now` show it as is).
pub use palisade_wire::rpc::results::LastBackup;

/// Why a requested backup was not written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackupNowError {
    /// The worker has stopped (the vault was locked meanwhile).
    #[error("the backup worker has stopped (the vault is locked)")]
    Stopped,
    /// The backup did not finish in time.
    #[error("the backup did not finish within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// The sign state could not be read or packed, or no store took it;
    /// the reason names the stores and what they said.
    #[error("{0}")]
    Failed(String),
}

/// A request to the worker: back up now, then answer.
struct BackupRequest {
    reason: &'static str,
    done: oneshot::Sender<Result<LastBackup, String>>,
}

/// Publishes bundles as the sign state moves, and on request.
pub struct BackupWorker {
    requests: mpsc::Sender<BackupRequest>,
    task: tokio::task::JoinHandle<()>,
}

/// Asks a running [`BackupWorker`] for a backup now.
#[derive(Clone, Debug)]
pub struct BackupTrigger {
    requests: mpsc::Sender<BackupRequest>,
}

impl BackupTrigger {
    /// Back up the current state now; the answer is the backup written, or
    /// why none was.
    pub async fn backup_now(&self, reason: &'static str) -> Result<LastBackup, BackupNowError> {
        let (done, answer) = oneshot::channel();
        let bound = STORE_TIMEOUT * 2;
        tokio::time::timeout(bound, async {
            self.requests
                .send(BackupRequest { reason, done })
                .await
                .map_err(|_| BackupNowError::Stopped)?;
            answer
                .await
                .map_err(|_| BackupNowError::Stopped)?
                .map_err(BackupNowError::Failed)
        })
        .await
        .map_err(|_| BackupNowError::Timeout(bound))?
    }
}

/// What a backup needs, owned by the worker task. The recipients are
/// parsed once; the key files are decrypted from the vault for each backup
/// and wiped when it is written (issue 16, finding 4): the plaintext keys
/// live in this process only while a bundle is being made, not for the
/// whole session (decrypting two small age files costs well under a
/// millisecond against a block time).
struct BackupJob {
    vault: Arc<UnlockedVault>,
    recipients: Vec<Box<dyn age::Recipient + Send>>,
    validator: ValidatorIdentity,
    stores: StoreFanout,
    state_path: PathBuf,
    retention: usize,
    next_sequence: u64,
    host_id: String,
    /// This host's high-water record, raised after every backup.
    record_path: PathBuf,
    /// The highest watermark backed up (the record's, then each backup's):
    /// a state below it is not backed up.
    floor: Option<Watermark>,
    last_published: Option<Watermark>,
    /// Where the control RPC reads the last backup written.
    last_backup: watch::Sender<Option<LastBackup>>,
}

impl BackupJob {
    /// The plaintext of a key file the vault holds, for one bundle; `None`
    /// when the vault has none of this kind. A key the vault holds but
    /// cannot decrypt is left out, loudly: the sign state is what a backup
    /// must never fail to carry.
    fn key_file(&self, kind: KeyKind) -> Option<Zeroizing<Vec<u8>>> {
        if !self.vault.info().has_key(kind) {
            return None;
        }
        match self.vault.decrypt_key(kind) {
            Ok(bytes) => Some(bytes),
            Err(error) => {
                tracing::error!(
                    %error,
                    "cannot decrypt {} for a backup; this backup goes out without it",
                    kind.file_name()
                );
                None
            }
        }
    }

    /// One backup. `Ok(None)`: skipped, because a watermark-driven backup
    /// found the watermark already published.
    async fn back_up(&mut self, reason: &str) -> Result<Option<LastBackup>, String> {
        let bytes = std::fs::read(&self.state_path).map_err(|error| {
            let message = format!(
                "cannot read the sign state {} for a backup: {error}",
                self.state_path.display()
            );
            tracing::error!("{message}");
            message
        })?;
        let state = SignState::parse(&bytes).map_err(|error| {
            // CometBFT writes atomically; a bad read is retried at the
            // next change.
            tracing::warn!(%error, "sign state unreadable; backup skipped");
            format!("the sign state is unreadable: {error}; no backup written")
        })?;
        let watermark = state.watermark();
        if self.last_published == Some(watermark) && reason == WATERMARK_CHANGED {
            return Ok(None);
        }
        // A state below what was already backed up went back (an old file
        // copied in): backing it up would give a lower watermark a newer
        // sequence. Restore it instead.
        if let Some(floor) = self.floor
            && watermark < floor
        {
            let message = format!(
                "the sign state {} is at {watermark}, below the last backed-up {floor}: it went \
                 back; not backing it up (restore the newest backup with `palisade-ctl restore`)",
                self.state_path.display()
            );
            tracing::error!("{message}");
            return Err(message);
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
            priv_validator_key: self.key_file(KeyKind::PrivValidatorKey),
            node_key: self.key_file(KeyKind::NodeKey),
        };
        let started = Instant::now();
        let ciphertext = create_bundle(&input, self.vault.signing_key(), &self.recipients)
            .map_err(|error| {
                tracing::error!(%error, "cannot create a backup bundle");
                format!("cannot create a backup bundle: {error}")
            })?;
        let file_name = input.file_name().to_string();
        let stored = self
            .stores
            .publish(&file_name, &ciphertext, PUBLISH_WAIT)
            .await;
        if stored.is_empty() {
            return Err(format!(
                "no store took backup {file_name} within {}; see the supervisor log for each store's error",
                humantime::format_duration(PUBLISH_WAIT)
            ));
        }
        self.next_sequence += 1;
        self.last_published = Some(watermark);
        self.floor = self.floor.max(Some(watermark));
        if let Err(error) = super::high_water::raise(
            &self.record_path,
            super::high_water::HighWater {
                watermark: Some(watermark),
                sequence: input.sequence,
            },
        ) {
            // The backup is out; the next start takes the stores' sequence
            // and the local state into account as well.
            tracing::error!(%error, "the high-water record was not raised after a backup");
        }
        tracing::info!(%watermark, sequence = input.sequence, file = %file_name, stores = ?stored, reason, took_ms = started.elapsed().as_millis() as u64, "backup written");
        let written = LastBackup {
            file: file_name,
            sequence: input.sequence,
            watermark: watermark.to_string(),
            stores: stored,
            at: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|elapsed| elapsed.as_secs())
                .unwrap_or(0),
        };
        self.last_backup.send_replace(Some(written.clone()));
        if reason != WATERMARK_CHANGED || input.sequence.is_multiple_of(RETENTION_EVERY) {
            for store in self.stores.stores() {
                if !written.stores.iter().any(|name| name == store.name()) {
                    continue;
                }
                if let Err(error) = apply_retention(store.as_ref(), self.retention).await {
                    tracing::warn!(store = store.name(), %error, "backup retention failed");
                }
            }
        }
        Ok(Some(written))
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
    /// Where the last backup written is published.
    pub last_backup: watch::Sender<Option<LastBackup>>,
    /// This host's high-water record ([`super::high_water`]).
    pub record_path: PathBuf,
}

impl BackupWorker {
    /// Start following `from.state_path`.
    pub fn spawn(
        vault: Arc<UnlockedVault>,
        validator: ValidatorIdentity,
        stores: Vec<Arc<dyn BackupStore>>,
        settings: &BackupSettings,
        from: FollowFrom,
    ) -> Result<BackupWorker, VaultError> {
        let FollowFrom {
            state_path,
            next_sequence,
            poll_interval,
            last_backup,
            record_path,
        } = from;
        let (requests, mut incoming) = mpsc::channel::<BackupRequest>(4);
        let debounce = settings.debounce;
        let recipients = vault.backup_recipients()?;
        let mut job = BackupJob {
            recipients,
            vault,
            validator,
            stores: StoreFanout::new(stores, STORE_TIMEOUT),
            state_path: state_path.clone(),
            retention: settings.retention,
            next_sequence,
            host_id: super::identity::host_id(),
            floor: super::high_water::load(&record_path)
                .ok()
                .flatten()
                .and_then(|record| record.watermark),
            record_path,
            last_published: None,
            last_backup,
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
                            // Failures are logged where they happen and
                            // retried at the next change.
                            let _ = job.back_up(WATERMARK_CHANGED).await;
                        }
                    }
                    request = incoming.recv() => {
                        let Some(request) = request else { break };
                        // Only watermark-driven backups are ever skipped.
                        let answer = job.back_up(request.reason).await.and_then(|written| {
                            written.ok_or_else(|| "the backup was skipped".to_owned())
                        });
                        let _ = request.done.send(answer);
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
    pub async fn finish(self) -> Result<LastBackup, BackupNowError> {
        let outcome = self.trigger().backup_now("final backup on stop").await;
        if let Err(error) = &outcome {
            tracing::error!(%error, "the final backup on stop was not written");
        }
        self.task.abort();
        outcome
    }
}
