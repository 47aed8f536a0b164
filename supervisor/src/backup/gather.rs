//! Fan-out over several stores: [`publish`] a bundle to all of them and
//! [`gather_and_verify`] the best bundle from all of them.
//!
//! One store down never fails the whole: each store gets its own timeout and
//! its own line in the report. Restoring trusts no store: every bundle goes
//! through [`open_bundle`], its file name must match its signed metadata,
//! and the winner is the highest watermark (then highest sequence) among the
//! bundles that pass, so a store that withholds or replays can only make the
//! result no better than what the other stores hold.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use super::bundle::{BackupFileName, file_name_for};
use super::open::{Expectations, OpenedBundle, Rejection, open_bundle};
use super::store::{BackupStore, StoreError};
use crate::sign_state::Watermark;

/// Most bundles fetched from one store per restore (the newest by name);
/// bounds the work a store stuffed with junk names can cause.
pub const MAX_BUNDLES_PER_STORE: usize = 32;

/// The outcome of [`publish`], one line per store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishReport {
    /// The file name published.
    pub file_name: String,
    /// Stores that now hold the bundle.
    pub stored: Vec<String>,
    /// Stores that failed, with the reason.
    pub failed: Vec<(String, String)>,
}

impl PublishReport {
    /// True when at least one store holds the bundle.
    pub fn stored_anywhere(&self) -> bool {
        !self.stored.is_empty()
    }

    /// True when every store holds the bundle.
    pub fn stored_everywhere(&self) -> bool {
        self.failed.is_empty()
    }
}

/// Puts `bytes` under `file_name` in every store concurrently, each bounded
/// by `timeout`. Never fails as a whole; see the report.
pub async fn publish(
    stores: &[Arc<dyn BackupStore>],
    file_name: &str,
    bytes: &[u8],
    timeout: Duration,
) -> PublishReport {
    let name: Arc<str> = Arc::from(file_name);
    let bytes: Arc<[u8]> = Arc::from(bytes);
    let mut tasks = JoinSet::new();
    for (index, store) in stores.iter().enumerate() {
        let (store, name, bytes) = (Arc::clone(store), Arc::clone(&name), Arc::clone(&bytes));
        tasks.spawn(async move {
            let outcome = match tokio::time::timeout(timeout, store.put(&name, &bytes)).await {
                Ok(result) => result,
                Err(_) => Err(StoreError::Timeout(timeout)),
            };
            (index, outcome)
        });
    }
    let mut outcomes: Vec<Option<Result<(), String>>> = vec![None; stores.len()];
    while let Some(joined) = tasks.join_next().await {
        if let Ok((index, outcome)) = joined {
            outcomes[index] = Some(outcome.map_err(|e| e.to_string()));
        }
    }
    let mut report = PublishReport {
        file_name: file_name.to_owned(),
        ..PublishReport::default()
    };
    for (store, outcome) in stores.iter().zip(outcomes) {
        let store_name = store.name().to_owned();
        match outcome.unwrap_or_else(|| Err("store task panicked".to_owned())) {
            Ok(()) => {
                tracing::debug!(store = %store_name, file = %file_name, "backup published");
                report.stored.push(store_name);
            }
            Err(reason) => {
                tracing::debug!(store = %store_name, file = %file_name, %reason, "backup not published");
                report.failed.push((store_name, reason));
            }
        }
    }
    report
}

/// A bundle that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedBundle {
    pub store: String,
    pub file_name: String,
    pub watermark: Watermark,
    pub sequence: u64,
    /// The host that wrote it (signed metadata).
    pub host_id: String,
    /// `signbytes` of the bundled sign state (empty when it has none).
    pub signbytes: Vec<u8>,
}

/// Why a bundle (or a whole store) could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RejectionReason {
    /// The bundle was read and failed verification.
    Bundle(Rejection),
    /// The store could not list or return it (down, timeout, too large…).
    Store(String),
}

impl std::fmt::Display for RejectionReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RejectionReason::Bundle(rejection) => rejection.fmt(f),
            RejectionReason::Store(reason) => write!(f, "store error: {reason}"),
        }
    }
}

/// A bundle, or a store, that was not used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedBundle {
    pub store: String,
    /// `None` when the store itself failed (its listing).
    pub file_name: Option<String>,
    pub reason: RejectionReason,
}

/// The best verified bundle and where it came from.
#[derive(Debug)]
pub struct BestBundle {
    pub store: String,
    pub file_name: String,
    pub bundle: OpenedBundle,
}

/// The outcome of [`gather_and_verify`].
#[derive(Debug, Default)]
pub struct RestoreReport {
    /// Highest watermark among the accepted bundles, ties broken by highest
    /// sequence, then by store order.
    pub best: Option<BestBundle>,
    /// Every bundle that passed (the same bundle may be on several stores).
    pub accepted: Vec<AcceptedBundle>,
    /// Every bundle or store that failed, with the reason.
    pub rejected: Vec<RejectedBundle>,
    /// The stores whose listing was read (each of their bundles then
    /// accepted or rejected), in configuration order.
    pub answered: Vec<String>,
    /// Valid bundles older than the caller's floor (`min_sequence`,
    /// `min_watermark`): superseded, not suspicious, so not in
    /// `rejected`; counted per store.
    pub superseded: Vec<(String, usize)>,
}

impl RestoreReport {
    /// Highest sequence among accepted bundles: the next backup must use a
    /// larger one.
    pub fn max_sequence(&self) -> Option<u64> {
        self.accepted.iter().map(|a| a.sequence).max()
    }

    /// The stores that could not be listed, with the reason.
    pub fn unreachable(&self) -> Vec<(String, String)> {
        self.rejected
            .iter()
            .filter(|rejected| rejected.file_name.is_none())
            .map(|rejected| (rejected.store.clone(), rejected.reason.to_string()))
            .collect()
    }
}

/// How long verifying one bundle may take, off the event loop. A real one
/// takes about a millisecond; one that takes longer is given up (its thread
/// finishes on its own, and [`open_bundle`]'s bounds keep that short).
pub const VERIFY_DEADLINE: Duration = Duration::from_secs(5);

/// What reading one store found.
struct StoreScan {
    name: String,
    /// `Err` when the store could not be listed.
    listed: Result<(), String>,
    /// The first bundle that passed (the newest by name), with its file.
    accepted: Option<(String, OpenedBundle)>,
    rejected: Vec<(String, RejectionReason)>,
    superseded: usize,
}

/// Lists this validator's bundles in every store concurrently (each
/// operation bounded by `timeout`) and, per store, fetches and verifies
/// them one at a time, newest first (by the height, then the sequence, in
/// the name), off the event loop with a deadline, stopping at the first
/// that passes. The best is the highest watermark (then sequence) among
/// the stores' newest valid bundles.
///
/// A hostile store can therefore cost at most [`MAX_BUNDLES_PER_STORE`]
/// bounded verifications ([`open_bundle`] bounds the ciphertext and the
/// age header before age parses it), one bundle in memory at a time, and
/// never the event loop.
pub async fn gather_and_verify(
    stores: &[Arc<dyn BackupStore>],
    identity: &age::x25519::Identity,
    expectations: &Expectations,
    timeout: Duration,
) -> RestoreReport {
    let mut tasks = JoinSet::new();
    for (index, store) in stores.iter().enumerate() {
        let store = Arc::clone(store);
        let identity = identity.clone();
        let expectations = expectations.clone();
        tasks.spawn(async move {
            let scan = scan_store(store.as_ref(), identity, expectations, timeout).await;
            (index, scan)
        });
    }
    let mut per_store: Vec<Option<StoreScan>> = (0..stores.len()).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        if let Ok((index, scan)) = joined {
            per_store[index] = Some(scan);
        }
    }

    let mut report = RestoreReport::default();
    for (store, scan) in stores.iter().zip(per_store) {
        let scan = scan.unwrap_or_else(|| StoreScan {
            name: store.name().to_owned(),
            listed: Err("store task panicked".to_owned()),
            accepted: None,
            rejected: Vec::new(),
            superseded: 0,
        });
        let store_name = scan.name;
        if let Err(reason) = scan.listed {
            tracing::warn!(store = %store_name, %reason, "backup store unavailable");
            report.rejected.push(RejectedBundle {
                store: store_name,
                file_name: None,
                reason: RejectionReason::Store(reason),
            });
            continue;
        }
        report.answered.push(store_name.clone());
        for (file_name, reason) in scan.rejected {
            tracing::warn!(store = %store_name, file = %file_name, %reason, "backup rejected");
            report.rejected.push(RejectedBundle {
                store: store_name.clone(),
                file_name: Some(file_name),
                reason,
            });
        }
        if scan.superseded > 0 {
            report
                .superseded
                .push((store_name.clone(), scan.superseded));
        }
        let Some((file_name, bundle)) = scan.accepted else {
            continue;
        };
        // The state parsed when the bundle was opened (its watermark had to
        // match the metadata's).
        let signbytes = crate::sign_state::SignState::parse(&bundle.state)
            .map(|state| state.signbytes)
            .unwrap_or_default();
        let accepted = AcceptedBundle {
            store: store_name.clone(),
            file_name: file_name.clone(),
            watermark: bundle.metadata.watermark,
            sequence: bundle.metadata.sequence,
            host_id: bundle.metadata.host_id.clone(),
            signbytes,
        };
        let rank = (accepted.watermark, accepted.sequence);
        let better = report.best.as_ref().is_none_or(|best| {
            rank > (
                best.bundle.metadata.watermark,
                best.bundle.metadata.sequence,
            )
        });
        if better {
            report.best = Some(BestBundle {
                store: store_name.clone(),
                file_name,
                bundle,
            });
        }
        report.accepted.push(accepted);
    }
    for (store, count) in &report.superseded {
        if !report
            .accepted
            .iter()
            .any(|accepted| accepted.store == *store)
        {
            tracing::warn!(
                store = %store,
                superseded = count,
                "this store holds no backup at or above what this host already knows: it missed the newest backups, or withholds them"
            );
        }
    }
    report
}

/// Verifies `bytes` as `file_name` off the event loop, within
/// [`VERIFY_DEADLINE`].
pub async fn verify_off_loop(
    bytes: Vec<u8>,
    file_name: String,
    identity: age::x25519::Identity,
    expectations: Expectations,
) -> Result<OpenedBundle, RejectionReason> {
    let task = tokio::task::spawn_blocking(move || {
        let bundle = open_bundle(&bytes, &identity, &expectations)?;
        let expected_name = file_name_for(&bundle.metadata).to_string();
        if expected_name != file_name {
            return Err(Rejection::NameMismatch {
                file_name,
                expected: expected_name,
            });
        }
        Ok(bundle)
    });
    match tokio::time::timeout(VERIFY_DEADLINE, task).await {
        Ok(Ok(outcome)) => outcome.map_err(RejectionReason::Bundle),
        Ok(Err(join)) => Err(RejectionReason::Store(format!(
            "the verification task failed: {join}"
        ))),
        Err(_) => Err(RejectionReason::Bundle(Rejection::Malformed(format!(
            "verification took longer than {}",
            humantime::format_duration(VERIFY_DEADLINE)
        )))),
    }
}

async fn scan_store(
    store: &dyn BackupStore,
    identity: age::x25519::Identity,
    expectations: Expectations,
    timeout: Duration,
) -> StoreScan {
    let mut scan = StoreScan {
        name: store.name().to_owned(),
        listed: Ok(()),
        accepted: None,
        rejected: Vec::new(),
        superseded: 0,
    };
    let timed = |_: tokio::time::error::Elapsed| StoreError::Timeout(timeout).to_string();
    let names = match tokio::time::timeout(timeout, store.list()).await {
        Ok(Ok(names)) => names,
        Ok(Err(error)) => {
            scan.listed = Err(error.to_string());
            return scan;
        }
        Err(elapsed) => {
            scan.listed = Err(timed(elapsed));
            return scan;
        }
    };
    let address = expectations.validator_address.to_ascii_uppercase();
    let mut ours: Vec<(u64, u64, String)> = names
        .into_iter()
        .filter_map(|name| {
            let parsed = BackupFileName::parse(&name)?;
            (parsed.chain_id == expectations.chain_id && parsed.validator_address == address)
                .then_some((parsed.height, parsed.sequence, name))
        })
        .collect();
    // Newest first: the highest height, then the highest sequence.
    ours.sort_by(|a, b| b.cmp(a));
    if ours.len() > MAX_BUNDLES_PER_STORE {
        tracing::warn!(
            store = store.name(),
            skipped = ours.len() - MAX_BUNDLES_PER_STORE,
            "too many backups; reading the newest only"
        );
        ours.truncate(MAX_BUNDLES_PER_STORE);
    }
    for (_, _, name) in ours {
        let bytes = match tokio::time::timeout(timeout, store.get(&name)).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(error)) => {
                scan.rejected
                    .push((name, RejectionReason::Store(error.to_string())));
                continue;
            }
            Err(elapsed) => {
                scan.rejected
                    .push((name, RejectionReason::Store(timed(elapsed))));
                continue;
            }
        };
        match verify_off_loop(bytes, name.clone(), identity.clone(), expectations.clone()).await {
            Ok(bundle) => {
                scan.accepted = Some((name, bundle));
                break;
            }
            Err(RejectionReason::Bundle(
                reason @ (Rejection::RolledBack { .. } | Rejection::BelowWatermark { .. }),
            )) => {
                tracing::debug!(store = store.name(), file = %name, %reason, "backup superseded");
                scan.superseded += 1;
            }
            Err(reason) => scan.rejected.push((name, reason)),
        }
    }
    scan
}
