//! The start rule at run time: the local `priv_validator_state.json`
//! against every verified backup in every store reachable now, decided by
//! the pure [`crate::sign_state::start_decision`].
//!
//! Residual risk (named in `ARCHITECTURE.md`): a store that cannot be
//! reached, or one that withholds its newest bundles, is not consulted;
//! only the reachable stores' valid bundles count.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::gather::{RestoreReport, gather_and_verify};
use super::identity::ValidatorIdentity;
use super::store::BackupStore;
use crate::sign_state::{
    KnownWatermark, StartDecision, WatermarkSource, read_local, start_decision,
};
use crate::vault::UnlockedVault;

/// How long one store may take to list, fetch or store.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(10);

/// The result of the start rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartCheck {
    pub decision: StartDecision,
    /// The next backup sequence number (above every accepted backup).
    pub next_sequence: u64,
}

/// Log every bundle a gather rejected, with its store and reason.
pub fn log_rejections(report: &RestoreReport) {
    for rejected in &report.rejected {
        tracing::warn!(
            store = %rejected.store,
            file = rejected.file_name.as_deref().unwrap_or("-"),
            reason = %rejected.reason,
            "backup rejected"
        );
    }
}

/// The start rule: the state file at `state_path` against every
/// reachable backup of `validator`.
pub async fn start_check(
    state_path: &Path,
    vault: &UnlockedVault,
    validator: &ValidatorIdentity,
    stores: &[Arc<dyn BackupStore>],
) -> StartCheck {
    let report = gather_and_verify(
        stores,
        vault.age_identity(),
        &validator.expectations(vault.verifying_key()),
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
    let local = read_local(state_path);
    StartCheck {
        decision: start_decision(&local, state_path, &backups),
        next_sequence: report.max_sequence().map_or(1, |sequence| sequence + 1),
    }
}
