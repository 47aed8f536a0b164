//! The start rule at run time, fail-closed: the local
//! `priv_validator_state.json` against this host's high-water record and
//! every verified backup of a quorum of stores, decided by the pure rules
//! in [`crate::sign_state`] ([`start_decision`], [`signbytes_conflict`]).
//!
//! - **Quorum.** gaiad starts only after the listings of `[backup]
//!   start-quorum` stores (default: all configured) were read and their
//!   bundles verified. Stores that cannot be listed are retried (backoff
//!   with jitter) for `start-quorum-wait`; then the start is refused,
//!   unless an operator accepted the unreachable stores for this start
//!   (`run --accept-unreachable-stores`, or `vault.unlock` with
//!   `accept_unreachable_stores`, admin only), which is logged and recorded
//!   in `<vault dir>/start-overrides.jsonl`.
//! - **High-water record** ([`super::high_water`]): a local state below it
//!   is refused like one below a backup; the next backup sequence is above
//!   both the record's and every accepted bundle's, so it never starts over.
//! - **Two signers.** A backup at the local state's height, round and step
//!   with other sign bytes refuses the start.
//! - **Other hosts.** Bundles written by another host are named in the log:
//!   one validator key should have one writer.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::gather::{RestoreReport, gather_and_verify};
use super::high_water::{self, HighWater};
use super::identity::ValidatorIdentity;
use super::store::BackupStore;
use crate::config::StartQuorum;
use crate::sign_state::{
    BackedUpSignature, KnownWatermark, StartDecision, WatermarkSource, read_local_state,
    signbytes_conflict, start_decision,
};
use crate::vault::UnlockedVault;

/// How long one store may take to list, fetch or store.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(10);

/// First pause between two reads of the stores while the quorum is missing;
/// it doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// The audit file of accepted unreachable stores, in the vault directory.
pub const OVERRIDES_FILE: &str = "start-overrides.jsonl";

/// The result of the start rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartCheck {
    pub decision: StartDecision,
    /// The next backup sequence number (above every accepted backup and
    /// the high-water record).
    pub next_sequence: u64,
}

/// What the start rule needs besides the vault and the stores.
#[derive(Debug, Clone)]
pub struct StartRule {
    /// CometBFT's `priv_validator_state.json`.
    pub state_path: PathBuf,
    /// `<vault dir>`: the high-water record and the overrides file.
    pub vault_dir: PathBuf,
    pub quorum: StartQuorum,
    /// How long unreachable stores are retried before the start is refused.
    pub quorum_wait: Duration,
    /// Who accepted unreachable stores for this start, if anyone.
    pub accept_unreachable_by: Option<String>,
}

/// Why the start rule did not decide.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartCheckError {
    /// Too few stores could be read, and nobody accepted that.
    #[error("{0}")]
    QuorumMissing(String),
    /// The rule could not run (the high-water record is unreadable…).
    #[error("{0}")]
    Failed(String),
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

/// How many stores must answer: all, or at most as many as there are.
pub fn required_stores(quorum: StartQuorum, total: usize) -> usize {
    match quorum {
        StartQuorum::All => total,
        StartQuorum::AtLeast(count) => count.min(total),
    }
}

/// The operator's reason when the quorum is missing, naming the stores
/// and the ways out.
pub fn quorum_message(
    required: usize,
    total: usize,
    unreachable: &[(String, String)],
    waited: Duration,
) -> String {
    let missing = unreachable
        .iter()
        .map(|(store, reason)| format!("{store} ({reason})"))
        .collect::<Vec<_>>()
        .join("; ");
    format!(
        "only {} of {total} backup stores could be read within {} and the start needs {required} \
         (start-quorum): unreachable: {missing}; an unreachable store may hold a newer sign state \
         than this host knows, so gaiad could sign twice; bring the stores back and unlock again \
         (`palisade-ctl unlock`), or accept the unreachable stores for this start \
         (`palisade-ctl unlock --accept-unreachable-stores`, or `palisade-supervisor run \
         --accept-unreachable-stores`), which is recorded",
        total - unreachable.len(),
        humantime::format_duration(Duration::from_secs(waited.as_secs())),
    )
}

/// The start rule: the state file against the high-water record and every
/// backup of a quorum of `stores`. `waiting` is told what is awaited.
pub async fn start_check(
    rule: &StartRule,
    vault: &UnlockedVault,
    validator: &ValidatorIdentity,
    stores: &[Arc<dyn BackupStore>],
    waiting: &(dyn Fn(&str) + Sync),
) -> Result<StartCheck, StartCheckError> {
    let record_path = high_water::path_in(&rule.vault_dir);
    let record = high_water::load(&record_path)
        .map_err(|error| StartCheckError::Failed(error.to_string()))?;
    let expectations = validator.expectations(vault.verifying_key());
    let required = required_stores(rule.quorum, stores.len());
    let started = Instant::now();
    let mut pause = RETRY_FIRST;
    let report = loop {
        let report =
            gather_and_verify(stores, vault.age_identity(), &expectations, STORE_TIMEOUT).await;
        let unreachable = report.unreachable();
        if report.answered.len() >= required {
            break report;
        }
        let waited = started.elapsed();
        if waited >= rule.quorum_wait {
            let message = quorum_message(required, stores.len(), &unreachable, waited);
            let Some(by) = &rule.accept_unreachable_by else {
                return Err(StartCheckError::QuorumMissing(message));
            };
            tracing::warn!(
                accepted_by = %by,
                answered = ?report.answered,
                unreachable = ?unreachable,
                "starting without the store quorum: an operator accepted the unreachable stores"
            );
            record_override(
                &rule.vault_dir,
                by,
                required,
                &report.answered,
                &unreachable,
            )
            .map_err(StartCheckError::Failed)?;
            break report;
        }
        let status = format!(
            "waiting for backup stores: {} of {required} needed answered; unreachable: {}",
            report.answered.len(),
            unreachable
                .iter()
                .map(|(store, _)| store.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        tracing::warn!(unreachable = ?unreachable, "{status}");
        waiting(&status);
        let jittered = pause.mul_f64(0.5 + rand::random::<f64>() / 2.0);
        tokio::time::sleep(jittered.min(rule.quorum_wait.saturating_sub(waited))).await;
        pause = (pause * 2).min(RETRY_MAX);
    };
    log_rejections(&report);
    log_other_hosts(&report);

    let mut known: Vec<KnownWatermark> = report
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
    if let Some(watermark) = record.and_then(|record| record.watermark) {
        known.push(KnownWatermark {
            watermark,
            source: WatermarkSource::HighWaterRecord(record_path.clone()),
        });
    }
    let (local, parsed) = read_local_state(&rule.state_path);
    let mut decision = start_decision(&local, &rule.state_path, &known);
    if let (StartDecision::Start { .. }, Some(state)) = (&decision, &parsed) {
        let signed: Vec<BackedUpSignature> = report
            .accepted
            .iter()
            .map(|accepted| BackedUpSignature {
                known: KnownWatermark {
                    watermark: accepted.watermark,
                    source: WatermarkSource::Backup {
                        store: accepted.store.clone(),
                        name: accepted.file_name.clone(),
                        sequence: accepted.sequence,
                    },
                },
                signbytes: accepted.signbytes.clone(),
                host_id: accepted.host_id.clone(),
            })
            .collect();
        if let Some(reason) = signbytes_conflict(&rule.state_path, state, &signed) {
            decision = StartDecision::Refuse {
                reason,
                local: Some(KnownWatermark {
                    watermark: state.watermark(),
                    source: WatermarkSource::LocalFile(rule.state_path.clone()),
                }),
                highest: None,
            };
        }
    }
    let record_sequence = record.map_or(0, |record| record.sequence);
    let highest_sequence = report.max_sequence().unwrap_or(0).max(record_sequence);
    if let StartDecision::Start { watermark } = &decision {
        // What this host now knows: its record rises to it before gaiad
        // signs anything more.
        high_water::raise(
            &record_path,
            HighWater {
                watermark: watermark.as_ref().map(|known| known.watermark),
                sequence: highest_sequence,
            },
        )
        .map_err(|error| StartCheckError::Failed(error.to_string()))?;
    }
    Ok(StartCheck {
        decision,
        next_sequence: highest_sequence + 1,
    })
}

/// Names the other hosts whose bundles are in the stores, newest first.
fn log_other_hosts(report: &RestoreReport) {
    let own = super::identity::host_id();
    let mut others: Vec<(&str, u64)> = Vec::new();
    for accepted in &report.accepted {
        if accepted.host_id == own {
            continue;
        }
        match others
            .iter_mut()
            .find(|(host, _)| *host == accepted.host_id)
        {
            Some((_, sequence)) => *sequence = (*sequence).max(accepted.sequence),
            None => others.push((&accepted.host_id, accepted.sequence)),
        }
    }
    for (host, sequence) in others {
        tracing::warn!(
            host,
            newest_sequence = sequence,
            "backups written by another host: one validator key must have one signer; if that host still runs a supervisor with this key, stop one of them"
        );
    }
}

/// Appends the accepted override to `<vault dir>/start-overrides.jsonl`.
fn record_override(
    vault_dir: &Path,
    by: &str,
    required: usize,
    answered: &[String],
    unreachable: &[(String, String)],
) -> Result<(), String> {
    let line = serde_json::json!({
        "at": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        "accepted_by": by,
        "required": required,
        "answered": answered,
        "unreachable": unreachable
            .iter()
            .map(|(store, reason)| serde_json::json!({ "store": store, "reason": reason }))
            .collect::<Vec<_>>(),
    });
    let mut bytes = line.to_string().into_bytes();
    bytes.push(b'\n');
    let path = vault_dir.join(OVERRIDES_FILE);
    palisade_daemon::durable::append(&path, 0o600, &bytes).map_err(|error| {
        format!(
            "cannot record the accepted override in {}: {error}",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_stores_table() {
        // (quorum, configured stores, required)
        let table = [
            (StartQuorum::All, 0, 0),
            (StartQuorum::All, 3, 3),
            (StartQuorum::AtLeast(1), 3, 1),
            (StartQuorum::AtLeast(2), 3, 2),
            (StartQuorum::AtLeast(5), 3, 3),
        ];
        for (quorum, total, required) in table {
            assert_eq!(
                required_stores(quorum, total),
                required,
                "{quorum:?} of {total}"
            );
        }
    }

    #[test]
    fn the_quorum_message_names_the_stores_and_both_ways_out() {
        let message = quorum_message(
            3,
            3,
            &[("bastion-b".into(), "store error: connection refused".into())],
            Duration::from_millis(60_400),
        );
        for words in [
            "only 2 of 3",
            "within 1m",
            "needs 3",
            "bastion-b (store error: connection refused)",
            "palisade-ctl unlock --accept-unreachable-stores",
            "palisade-supervisor run --accept-unreachable-stores",
            "recorded",
        ] {
            assert!(message.contains(words), "{words:?} not in {message}");
        }
    }
}
