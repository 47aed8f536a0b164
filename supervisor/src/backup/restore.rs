//! Restoring the sign state from a backup: the one path behind both
//! `palisade-supervisor restore-state` (the highest valid backup of every
//! store) and the control RPC's `backup.restore` (one backup the operator
//! names).
//!
//! Checks, in order: the backup is fetched and verified (decryption with
//! the vault's age identity, the signature of the validator's backup key,
//! chain, validator, the name against the signed metadata, the watermark
//! inside against the metadata); it must be above the local sign state; no
//! other valid backup in any store reachable now may be higher; then the
//! sign-state rule ([`restore_decision`]) and the sign state's atomic
//! writer ([`write_atomic`]). It never lowers the sign state: every
//! refusal leaves the file as it was.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::gather::{
    AcceptedBundle, RejectionReason, RestoreReport, gather_and_verify, verify_off_loop,
};
use super::identity::ValidatorIdentity;
use super::open::{Expectations, Rejection};
use super::start_check::{STORE_TIMEOUT, log_rejections};
use super::store::{BackupStore, StoreError};
use crate::sign_state::{
    KnownWatermark, LocalState, SignState, SignStateError, SignStateWriteError, Watermark,
    WatermarkSource, read_local, restore_decision, write_atomic,
};
use crate::vault::UnlockedVault;

/// Bound on reading every store for the highest valid backup during a
/// restore; with the fetch of the backup itself this stays below the
/// control RPC's wait for a command's answer (60 s), so an answer is never "busy"
/// while the restore goes on behind it.
pub const GATHER_TIMEOUT: Duration = Duration::from_secs(40);

/// Which backup to restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreChoice {
    /// The highest valid backup in every store (`restore-state`).
    Highest,
    /// One file in one store, as `backup.list` names them
    /// (`backup.restore`).
    Named { store: String, file: String },
}

/// Why a restore did not happen. Every variant leaves the sign state as it
/// was.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// No store of that name.
    #[error("no backup store named {store}")]
    UnknownStore { store: String, known: Vec<String> },
    /// The store does not hold the file.
    #[error("{file} is not in store {store}; nothing was changed")]
    NotInStore { store: String, file: String },
    /// The store could not return the file.
    #[error("cannot read {file} from store {store}: {reason}; nothing was changed")]
    Store {
        store: String,
        file: String,
        reason: String,
    },
    /// The backup failed verification (not ours, forged, damaged, renamed…).
    #[error("backup {file} in store {store} is rejected: {reason}; nothing was changed")]
    Rejected {
        store: String,
        file: String,
        reason: Rejection,
    },
    /// No store holds a valid backup.
    #[error("no valid backup found in {stores} store(s); nothing restored")]
    NoValidBackup { stores: usize },
    /// The backup is not above the local sign state.
    #[error(
        "backup {file} is at {backup}, not above the local sign state at {local}: a restore \
         never lowers or rewrites the sign state; nothing was changed"
    )]
    NotAbove {
        file: String,
        backup: Watermark,
        local: Watermark,
    },
    /// Another valid backup is higher: restoring this one could let the
    /// node sign again what was already signed.
    #[error(
        "backup {file} is at {backup}, but backup {} in store {} is higher at {}: never \
         restore below the highest known backup (restore that one); nothing was changed",
        higher.file_name, higher.store, higher.watermark
    )]
    HigherBackupExists {
        file: String,
        backup: Watermark,
        higher: AcceptedBundle,
    },
    /// The stores could not all be read in time, so the highest valid
    /// backup is unknown.
    #[error(
        "the backup stores did not all answer within {}; the highest valid backup is \
         unknown; nothing was changed",
        humantime::format_duration(*.0)
    )]
    StoresTooSlow(Duration),
    /// This host's high-water record cannot be read.
    #[error("{0}; nothing was changed")]
    HighWater(String),
    /// The sign-state rules refused the move.
    #[error("{0}; nothing was changed")]
    Decision(SignStateError),
    /// Writing the state file failed; [`write_atomic`] left it as it was.
    #[error("{0}; the sign state file was left as it was")]
    Write(SignStateWriteError),
}

/// A restore that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub store: String,
    pub file: String,
    pub sequence: u64,
    pub watermark: Watermark,
    /// What the state file held before.
    pub previous: LocalState,
    pub path: PathBuf,
}

impl Restored {
    /// Where the restored state came from.
    pub fn source(&self) -> WatermarkSource {
        WatermarkSource::Backup {
            store: self.store.clone(),
            name: self.file.clone(),
            sequence: self.sequence,
        }
    }
}

/// What a state file held, in words: a watermark, `missing`, or
/// `unreadable (why)`.
pub fn describe_local(local: &LocalState) -> String {
    match local {
        LocalState::Present(watermark) => watermark.to_string(),
        LocalState::Missing => "missing".into(),
        LocalState::Unreadable(error) => format!("unreadable ({error})"),
    }
}

/// Every store's valid backups, bounded by [`GATHER_TIMEOUT`].
async fn gather(
    stores: &[Arc<dyn BackupStore>],
    identity: &age::x25519::Identity,
    expectations: &Expectations,
) -> Result<RestoreReport, RestoreError> {
    let report = tokio::time::timeout(
        GATHER_TIMEOUT,
        gather_and_verify(stores, identity, expectations, STORE_TIMEOUT),
    )
    .await
    .map_err(|_| RestoreError::StoresTooSlow(GATHER_TIMEOUT))?;
    log_rejections(&report);
    Ok(report)
}

/// A verified backup chosen for restoring: where it is, what it holds.
struct Candidate {
    store: String,
    file: String,
    sequence: u64,
    watermark: Watermark,
    state: Vec<u8>,
}

/// Fetch and verify `file` from `store`.
async fn fetch_named(
    stores: &[Arc<dyn BackupStore>],
    identity: &age::x25519::Identity,
    expectations: &Expectations,
    store: &str,
    file: &str,
) -> Result<Candidate, RestoreError> {
    let Some(source) = stores.iter().find(|s| s.name() == store) else {
        return Err(RestoreError::UnknownStore {
            store: store.to_owned(),
            known: stores.iter().map(|s| s.name().to_owned()).collect(),
        });
    };
    let store_error = |reason: String| RestoreError::Store {
        store: store.to_owned(),
        file: file.to_owned(),
        reason,
    };
    let bytes = match tokio::time::timeout(STORE_TIMEOUT, source.get(file)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(StoreError::NotFound(_))) => {
            return Err(RestoreError::NotInStore {
                store: store.to_owned(),
                file: file.to_owned(),
            });
        }
        Ok(Err(error)) => return Err(store_error(error.to_string())),
        Err(_) => return Err(store_error(StoreError::Timeout(STORE_TIMEOUT).to_string())),
    };
    let rejected = |reason| RestoreError::Rejected {
        store: store.to_owned(),
        file: file.to_owned(),
        reason,
    };
    let bundle = verify_off_loop(
        bytes,
        file.to_owned(),
        identity.clone(),
        expectations.clone(),
    )
    .await
    .map_err(|reason| match reason {
        RejectionReason::Bundle(rejection) => rejected(rejection),
        RejectionReason::Store(reason) => store_error(reason),
    })?;
    Ok(Candidate {
        store: store.to_owned(),
        file: file.to_owned(),
        sequence: bundle.metadata.sequence,
        watermark: bundle.metadata.watermark,
        state: bundle.state,
    })
}

/// Restore the sign state at `state_path` from the backup `choice` names,
/// verified against `expectations` with `identity`. See the module docs
/// for the checks.
///
/// `record_path` is this host's high-water record
/// ([`super::high_water`]): nothing below its watermark is restored, a
/// bundle older than its sequence is a rollback, and a restore raises it.
pub async fn restore_sign_state(
    stores: &[Arc<dyn BackupStore>],
    identity: &age::x25519::Identity,
    expectations: &Expectations,
    state_path: &Path,
    record_path: &Path,
    choice: &RestoreChoice,
) -> Result<Restored, RestoreError> {
    let record = super::high_water::load(record_path)
        .map_err(|error| RestoreError::HighWater(error.to_string()))?
        .unwrap_or_default();
    let mut floors = expectations.clone();
    floors.min_watermark = floors.min_watermark.max(record.watermark);
    if record.sequence > 0 {
        floors.min_sequence = floors.min_sequence.max(Some(record.sequence));
    }
    let (candidate, report) = match choice {
        RestoreChoice::Named { store, file } => {
            // The floors are checked below, after the plainer "not above
            // the local state".
            let candidate = fetch_named(stores, identity, expectations, store, file).await?;
            (candidate, None)
        }
        RestoreChoice::Highest => {
            let report = gather(stores, identity, &floors).await?;
            let Some(best) = &report.best else {
                return Err(RestoreError::NoValidBackup {
                    stores: stores.len(),
                });
            };
            let candidate = Candidate {
                store: best.store.clone(),
                file: best.file_name.clone(),
                sequence: best.bundle.metadata.sequence,
                watermark: best.bundle.metadata.watermark,
                state: best.bundle.state.clone(),
            };
            (candidate, Some(report))
        }
    };

    let local = read_local(state_path);
    if let LocalState::Present(local) = local
        && candidate.watermark <= local
    {
        return Err(RestoreError::NotAbove {
            file: candidate.file,
            backup: candidate.watermark,
            local,
        });
    }

    let report = match report {
        Some(report) => report,
        None => gather(stores, identity, &floors).await?,
    };
    if let Some(higher) = report
        .accepted
        .iter()
        .filter(|accepted| accepted.watermark > candidate.watermark)
        .max_by_key(|accepted| (accepted.watermark, accepted.sequence))
    {
        return Err(RestoreError::HigherBackupExists {
            file: candidate.file,
            backup: candidate.watermark,
            higher: higher.clone(),
        });
    }
    // This host's high-water record is a floor, as the metadata checks of
    // `open_bundle` apply it.
    let floor = if let Some(min) = floors.min_sequence
        && candidate.sequence < min
    {
        Some(Rejection::RolledBack {
            sequence: candidate.sequence,
            min,
        })
    } else if let Some(min) = floors.min_watermark
        && candidate.watermark < min
    {
        Some(Rejection::BelowWatermark {
            found: candidate.watermark,
            min,
        })
    } else {
        None
    };
    if let Some(reason) = floor {
        return Err(RestoreError::Rejected {
            store: candidate.store,
            file: candidate.file,
            reason,
        });
    }
    let known = KnownWatermark {
        watermark: candidate.watermark,
        source: WatermarkSource::Backup {
            store: candidate.store.clone(),
            name: candidate.file.clone(),
            sequence: candidate.sequence,
        },
    };
    let highest_known = match local {
        LocalState::Present(local) => local.max(candidate.watermark),
        _ => candidate.watermark,
    }
    .max(record.watermark.unwrap_or(candidate.watermark));
    restore_decision(&local, &known, highest_known).map_err(RestoreError::Decision)?;
    let state = SignState::parse(&candidate.state).map_err(RestoreError::Decision)?;
    write_atomic(state_path, &state, Some(highest_known)).map_err(RestoreError::Write)?;
    if let Err(error) = super::high_water::raise(
        record_path,
        super::high_water::HighWater {
            watermark: Some(candidate.watermark),
            sequence: candidate.sequence,
        },
    ) {
        // The state file is restored; the record catches up at the next
        // start check or backup.
        tracing::error!(%error, "the high-water record was not raised after the restore");
    }
    let restored = Restored {
        store: candidate.store,
        file: candidate.file,
        sequence: candidate.sequence,
        watermark: candidate.watermark,
        previous: local,
        path: state_path.to_path_buf(),
    };
    tracing::warn!(
        from = %describe_local(&restored.previous),
        to = %restored.watermark,
        source = %known.source,
        path = %state_path.display(),
        "sign state restored from a backup"
    );
    Ok(restored)
}

/// What the supervisor needs to restore while the vault is unlocked: the
/// vault (for its age identity and backup key), who the validator is,
/// every store (the same objects the backup worker writes to) and the
/// state file. Dropped when the vault is locked, with the vault's last
/// handle.
#[derive(Clone)]
pub struct RestoreKit {
    vault: Arc<UnlockedVault>,
    validator: ValidatorIdentity,
    stores: Vec<Arc<dyn BackupStore>>,
    state_path: PathBuf,
    /// This host's high-water record.
    record_path: PathBuf,
}

impl RestoreKit {
    pub fn new(
        vault: Arc<UnlockedVault>,
        validator: ValidatorIdentity,
        stores: Vec<Arc<dyn BackupStore>>,
        state_path: PathBuf,
        record_path: PathBuf,
    ) -> RestoreKit {
        RestoreKit {
            vault,
            validator,
            stores,
            state_path,
            record_path,
        }
    }

    /// The stores it reads.
    pub fn stores(&self) -> Vec<Arc<dyn BackupStore>> {
        self.stores.clone()
    }

    /// [`restore_sign_state`] with the vault's identity and expectations.
    pub async fn restore(&self, choice: &RestoreChoice) -> Result<Restored, RestoreError> {
        restore_sign_state(
            &self.stores,
            self.vault.age_identity(),
            &self.validator.expectations(self.vault.verifying_key()),
            &self.state_path,
            &self.record_path,
            choice,
        )
        .await
    }
}

/// Names the stores, never the vault's secrets.
impl std::fmt::Debug for RestoreKit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let stores: Vec<&str> = self.stores.iter().map(|s| s.name()).collect();
        f.debug_struct("RestoreKit")
            .field("vault", &"REDACTED")
            .field("validator", &self.validator)
            .field("stores", &stores)
            .field("state_path", &self.state_path)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::backup::test_support::{ADDRESS, CHAIN, Scripted, name};
    use crate::backup::{BundleInput, LocalDirStore, create_bundle};
    use crate::sign_state::Step;

    /// A validator's keys, and bundles made with them.
    struct Fixture {
        signing_key: SigningKey,
        identity: age::x25519::Identity,
        dir: tempfile::TempDir,
        store: Arc<LocalDirStore>,
    }

    fn wm(height: u64, round: u32, step: Step) -> Watermark {
        Watermark {
            height,
            round,
            step,
        }
    }

    fn state_json(watermark: Watermark) -> Vec<u8> {
        SignState::from_watermark(watermark).to_json()
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("data")).unwrap();
            std::fs::create_dir(dir.path().join("vault")).unwrap();
            let store = Arc::new(LocalDirStore::new(dir.path().join("store"), "local").unwrap());
            Fixture {
                signing_key: SigningKey::from_bytes(&rand::random()),
                identity: age::x25519::Identity::generate(),
                dir,
                store,
            }
        }

        fn expectations(&self) -> Expectations {
            Expectations {
                verifying_key: self.signing_key.verifying_key(),
                chain_id: CHAIN.into(),
                validator_address: ADDRESS.into(),
                min_sequence: None,
                min_watermark: None,
            }
        }

        fn bundle_with(&self, key: &SigningKey, sequence: u64, watermark: Watermark) -> Vec<u8> {
            let input = BundleInput {
                chain_id: CHAIN.into(),
                validator_address: ADDRESS.into(),
                watermark,
                sequence,
                host_id: "host-a".into(),
                created_at: SystemTime::now(),
                software_version: "test".into(),
                priv_validator_state: state_json(watermark),
                priv_validator_key: None,
                node_key: None,
            };
            let recipients: Vec<Box<dyn age::Recipient + Send>> =
                vec![Box::new(self.identity.to_public())];
            create_bundle(&input, key, &recipients).unwrap()
        }

        /// Publishes a genuine backup and returns its name.
        async fn publish(&self, sequence: u64, watermark: Watermark) -> String {
            let file = name(sequence, watermark.height);
            let bytes = self.bundle_with(&self.signing_key, sequence, watermark);
            self.store.put(&file, &bytes).await.unwrap();
            file
        }

        fn state_path(&self) -> PathBuf {
            self.dir.path().join("data/priv_validator_state.json")
        }

        fn record_path(&self) -> PathBuf {
            self.dir.path().join("vault/high-water.json")
        }

        fn write_local(&self, watermark: Watermark) {
            std::fs::write(self.state_path(), state_json(watermark)).unwrap();
        }

        fn local_bytes(&self) -> Option<Vec<u8>> {
            std::fs::read(self.state_path()).ok()
        }

        async fn restore(
            &self,
            extra: Vec<Arc<dyn BackupStore>>,
            store: &str,
            file: &str,
        ) -> Result<Restored, RestoreError> {
            let mut stores: Vec<Arc<dyn BackupStore>> = vec![self.store.clone()];
            stores.extend(extra);
            restore_sign_state(
                &stores,
                &self.identity,
                &self.expectations(),
                &self.state_path(),
                &self.record_path(),
                &RestoreChoice::Named {
                    store: store.into(),
                    file: file.into(),
                },
            )
            .await
        }
    }

    #[tokio::test]
    async fn restores_raise_the_sign_state_and_nothing_else_changes_it() {
        let low = wm(10, 0, Step::Precommit);
        let mid = wm(20, 1, Step::Prevote);
        let high = wm(30, 0, Step::Precommit);

        // Local state lost: the highest backup restores it.
        let fixture = Fixture::new();
        let older = fixture.publish(1, mid).await;
        let newest = fixture.publish(2, high).await;
        let restored = fixture.restore(vec![], "local", &newest).await.unwrap();
        assert_eq!(restored.watermark, high);
        assert_eq!(restored.previous, LocalState::Missing);
        assert_eq!(fixture.local_bytes().unwrap(), state_json(high));
        assert_eq!(restored.sequence, 2);
        assert_eq!(describe_local(&restored.previous), "missing");

        // At or below the local state: refused, file untouched.
        for file in [&older, &newest] {
            let before = fixture.local_bytes();
            let error = fixture.restore(vec![], "local", file).await.unwrap_err();
            assert!(matches!(error, RestoreError::NotAbove { .. }), "{error}");
            let message = error.to_string();
            assert!(message.contains("never lowers"), "{message}");
            assert!(message.contains("nothing was changed"), "{message}");
            assert_eq!(fixture.local_bytes(), before);
        }

        // Local lagging: an older backup above it is still refused while a
        // higher valid one exists — in any store.
        let fixture = Fixture::new();
        fixture.write_local(low);
        let older = fixture.publish(1, mid).await;
        let bastion_only = fixture.bundle_with(&fixture.signing_key, 2, high);
        let bastion: Arc<dyn BackupStore> = Arc::new(Scripted {
            name: "bastion:b1".into(),
            files: Some(vec![(name(2, high.height), bastion_only)]),
        });
        let error = fixture
            .restore(vec![bastion.clone()], "local", &older)
            .await
            .unwrap_err();
        match &error {
            RestoreError::HigherBackupExists { higher, .. } => {
                assert_eq!(higher.store, "bastion:b1");
                assert_eq!(higher.watermark, high);
            }
            other => panic!("{other}"),
        }
        assert_eq!(fixture.local_bytes().unwrap(), state_json(low));
        // The highest one, from the bastion, restores; a down store does
        // not stop it.
        let down: Arc<dyn BackupStore> = Arc::new(Scripted {
            name: "bastion:down".into(),
            files: None,
        });
        let restored = fixture
            .restore(vec![bastion, down], "bastion:b1", &name(2, high.height))
            .await
            .unwrap();
        assert_eq!(restored.previous, LocalState::Present(low));
        assert_eq!(fixture.local_bytes().unwrap(), state_json(high));

        // An unreadable local state is replaced by the highest backup.
        let fixture = Fixture::new();
        std::fs::write(fixture.state_path(), b"{\"height\":").unwrap();
        let file = fixture.publish(1, mid).await;
        let restored = fixture.restore(vec![], "local", &file).await.unwrap();
        assert!(matches!(restored.previous, LocalState::Unreadable(_)));
        assert_eq!(fixture.local_bytes().unwrap(), state_json(mid));
    }

    #[tokio::test]
    async fn bad_backups_and_bad_stores_are_refused_and_change_nothing() {
        let low = wm(10, 0, Step::Precommit);
        let high = wm(30, 0, Step::Precommit);
        let fixture = Fixture::new();
        fixture.write_local(low);
        let genuine = fixture.publish(1, high).await;
        let genuine_bytes = fixture.store.get(&genuine).await.unwrap();

        // Forged: our chain and validator, encrypted to us, signed by another key.
        let forger = SigningKey::from_bytes(&rand::random());
        let forged = name(5, 40);
        let bytes = fixture.bundle_with(&forger, 5, wm(40, 0, Step::Precommit));
        fixture.store.put(&forged, &bytes).await.unwrap();
        // Renamed: a genuine bundle under a name claiming a higher height.
        let renamed = name(6, 50);
        fixture.store.put(&renamed, &genuine_bytes).await.unwrap();
        // Garbage under a backup name.
        let garbage = name(7, 60);
        fixture.store.put(&garbage, b"not age").await.unwrap();
        let down: Arc<dyn BackupStore> = Arc::new(Scripted {
            name: "bastion:down".into(),
            files: None,
        });

        // (store, file, words in the message, whether the store is unknown)
        let cases: Vec<(&str, String, &str, bool)> = vec![
            (
                "nowhere",
                genuine.clone(),
                "no backup store named nowhere",
                true,
            ),
            ("local", name(9, 99), "is not in store local", false),
            ("bastion:down", genuine.clone(), "cannot read", false),
            ("local", forged, "signature is bad", false),
            (
                "local",
                renamed,
                "does not match its signed metadata",
                false,
            ),
            ("local", garbage, "cannot be decrypted", false),
        ];
        for (store, file, words, unknown_store) in cases {
            let error = fixture
                .restore(vec![down.clone()], store, &file)
                .await
                .unwrap_err();
            let message = error.to_string();
            assert!(message.contains(words), "{store} {file}: {message}");
            match error {
                RestoreError::UnknownStore { known, .. } => {
                    assert!(unknown_store, "{message}");
                    assert_eq!(known, ["local", "bastion:down"]);
                }
                _ => {
                    assert!(!unknown_store, "{message}");
                    assert!(message.contains("nothing was changed"), "{message}");
                }
            }
            assert_eq!(
                fixture.local_bytes().unwrap(),
                state_json(low),
                "{store} {file}"
            );
        }
        // The genuine one still works afterwards (the junk is skipped).
        let restored = fixture
            .restore(vec![down], "local", &genuine)
            .await
            .unwrap();
        assert_eq!(restored.watermark, high);
    }

    #[tokio::test]
    async fn a_bundle_of_another_validator_is_refused() {
        let fixture = Fixture::new();
        let mut expectations = fixture.expectations();
        expectations.validator_address = "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF".into();
        let file = fixture.publish(1, wm(5, 0, Step::Precommit)).await;
        let stores: Vec<Arc<dyn BackupStore>> = vec![fixture.store.clone()];
        let error = restore_sign_state(
            &stores,
            &fixture.identity,
            &expectations,
            &fixture.state_path(),
            &fixture.record_path(),
            &RestoreChoice::Named {
                store: "local".into(),
                file,
            },
        )
        .await
        .unwrap_err();
        assert!(error.to_string().contains("is for validator"), "{error}");
        assert_eq!(fixture.local_bytes(), None);
    }

    #[tokio::test]
    async fn the_highest_choice_restores_the_best_backup_of_every_store() {
        let low = wm(10, 0, Step::Precommit);
        let high = wm(30, 0, Step::Precommit);
        let fixture = Fixture::new();
        let stores = |extra: Vec<Arc<dyn BackupStore>>| {
            let mut stores: Vec<Arc<dyn BackupStore>> = vec![fixture.store.clone()];
            stores.extend(extra);
            stores
        };
        let highest = |stores: Vec<Arc<dyn BackupStore>>| {
            let expectations = fixture.expectations();
            let identity = fixture.identity.clone();
            let path = fixture.state_path();
            let record = fixture.record_path();
            async move {
                restore_sign_state(
                    &stores,
                    &identity,
                    &expectations,
                    &path,
                    &record,
                    &RestoreChoice::Highest,
                )
                .await
            }
        };

        // No backup anywhere: refused, nothing written.
        let error = highest(stores(vec![])).await.unwrap_err();
        assert!(
            matches!(error, RestoreError::NoValidBackup { stores: 1 }),
            "{error}"
        );
        assert_eq!(fixture.local_bytes(), None);

        // The best backup is the bastion's; a down store does not stop it.
        fixture.publish(1, low).await;
        let bastion: Arc<dyn BackupStore> = Arc::new(Scripted {
            name: "bastion:b1".into(),
            files: Some(vec![(
                name(2, high.height),
                fixture.bundle_with(&fixture.signing_key, 2, high),
            )]),
        });
        let down: Arc<dyn BackupStore> = Arc::new(Scripted {
            name: "bastion:down".into(),
            files: None,
        });
        let restored = highest(stores(vec![bastion.clone(), down])).await.unwrap();
        assert_eq!(
            (restored.store.as_str(), restored.watermark),
            ("bastion:b1", high)
        );
        assert_eq!(fixture.local_bytes().unwrap(), state_json(high));
        assert_eq!(
            restored.source().to_string(),
            format!("backup {} (sequence 2) in store bastion:b1", name(2, 30))
        );

        // Already at the best backup: refused, nothing rewritten.
        let error = highest(stores(vec![bastion])).await.unwrap_err();
        assert!(matches!(error, RestoreError::NotAbove { .. }), "{error}");
        assert_eq!(fixture.local_bytes().unwrap(), state_json(high));
    }

    /// The high-water record is a floor: nothing below its watermark is
    /// restored, a bundle below its sequence is a rollback, and a restore
    /// raises it. A damaged record stops the restore.
    #[tokio::test]
    async fn the_high_water_record_is_a_floor_for_restores() {
        use super::super::high_water::{HighWater, load, raise};
        let fixture = Fixture::new();
        let below = fixture.publish(3, wm(10, 0, Step::Precommit)).await;
        let old_sequence = fixture.publish(4, wm(40, 0, Step::Precommit)).await;
        raise(
            &fixture.record_path(),
            HighWater {
                watermark: Some(wm(20, 0, Step::Precommit)),
                sequence: 5,
            },
        )
        .unwrap();
        for (file, words) in [
            (&below, "sequence 3 is older than the known sequence 5"),
            (
                &old_sequence,
                "sequence 4 is older than the known sequence 5",
            ),
        ] {
            let error = fixture.restore(vec![], "local", file).await.unwrap_err();
            assert!(error.to_string().contains(words), "{error}");
            assert_eq!(fixture.local_bytes(), None);
        }
        let above = fixture.publish(6, wm(30, 0, Step::Precommit)).await;
        let restored = fixture.restore(vec![], "local", &above).await.unwrap();
        assert_eq!(restored.watermark, wm(30, 0, Step::Precommit));
        assert_eq!(
            load(&fixture.record_path()).unwrap(),
            Some(HighWater {
                watermark: Some(wm(30, 0, Step::Precommit)),
                sequence: 6,
            })
        );
        // Below the record's watermark, whatever the sequence, even with
        // the local state and the higher backup lost: the record knows.
        std::fs::remove_file(fixture.state_path()).unwrap();
        fixture.store.remove(&above).await.unwrap();
        let low_again = fixture.publish(7, wm(25, 0, Step::Precommit)).await;
        let error = fixture
            .restore(vec![], "local", &low_again)
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("below the known watermark"),
            "{error}"
        );

        std::fs::write(fixture.record_path(), b"{").unwrap();
        let error = fixture
            .restore(vec![], "local", &low_again)
            .await
            .unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("high-water.json") && message.contains("nothing was changed"),
            "{message}"
        );
    }
}
