//! The takeover rule (`docs/failover.md` §3): what a host that has just
//! taken the leadership does before its node may start.
//!
//! After a verified handoff record: restore the highest backup (the old
//! primary's final one) and raise the sign state to at least the record's
//! watermark. Otherwise — the old primary's lease expired, or there was
//! none:
//!
//! 1. through this host's own view of the chain (`[failover] chain-rpc`, a
//!    sentry's RPC through its tunnel), see a block committed after the
//!    leadership was taken: the old primary fenced itself before its lease
//!    expired, so it signed nothing above the height that block ends;
//! 2. the chain guard: the validator's key is absent from the last K
//!    commits (`chain-guard-blocks`), so no other signer is at work, even
//!    if etcd misbehaved;
//! 3. restore the highest backup, and raise the sign state's floor to two
//!    heights above the latest committed one seen, so that the first vote
//!    can only be above anything the old primary could have signed, with
//!    one height to spare for a view of the chain that lags.
//!
//! Nothing here starts the node; a failure leaves the sign state as the
//! restore left it (never lower) and the machine gives the leadership up.

use std::path::PathBuf;
use std::time::Duration;

use super::HandoffGrant;
use crate::backup::{RestoreChoice, RestoreError, RestoreKit};
use crate::node::rpc::{ChainRpc, signed_in_last};
use crate::sign_state::{LocalState, SignState, Step, Watermark, read_local, write_atomic};

/// What the takeover needs.
#[derive(Clone)]
pub struct TakeoverKit {
    pub restore: RestoreKit,
    pub state_path: PathBuf,
    /// `[failover] chain-rpc`: tried in order, the first that answers is used.
    pub chain_rpc: Vec<String>,
    /// K: `[failover] chain-guard-blocks`.
    pub guard_blocks: u64,
    /// The validator's consensus address, upper-case hex.
    pub validator_address: String,
    /// How often to look again.
    pub poll: Duration,
}

/// How long a handoff's target looks for the final backup before it
/// relies on the record's watermark alone.
const FINAL_BACKUP_WAIT: Duration = Duration::from_secs(5);

/// Apply the takeover rule; the sign state's watermark (at least the
/// floor) when the node may start. `note` reports what it waits for.
pub async fn take_over(
    kit: &TakeoverKit,
    grant: Option<&HandoffGrant>,
    note: &dyn Fn(String),
) -> Result<Watermark, String> {
    let floor = match grant {
        Some(grant) => {
            restore_until(kit, grant.watermark, note).await?;
            grant.watermark
        }
        None => {
            let latest = observe_chain(kit, note).await;
            restore_until(kit, None, note).await?;
            Some(Watermark {
                height: latest.saturating_add(2),
                round: 0,
                step: Step::None,
            })
        }
    };
    raise_to(&kit.state_path, floor)
}

/// §3.1 and §3.2: a block after the leadership was taken, then K commits
/// without the validator's key. Waits as long as it takes (the machine
/// cancels it on a shutdown, a lock or a lost lease).
async fn observe_chain(kit: &TakeoverKit, note: &dyn Fn(String)) -> u64 {
    let first = loop {
        match latest_height(&kit.chain_rpc).await {
            Ok(height) => break height,
            Err(error) => note(format!(
                "takeover: waiting for this host's view of the chain ({error})"
            )),
        }
        tokio::time::sleep(kit.poll).await;
    };
    note(format!(
        "takeover: waiting for a block committed after the leadership was taken (the chain is at {first})"
    ));
    let after = loop {
        tokio::time::sleep(kit.poll).await;
        match latest_height(&kit.chain_rpc).await {
            Ok(height) if height > first => break height,
            Ok(_) => {}
            Err(error) => note(format!(
                "takeover: waiting for this host's view of the chain ({error})"
            )),
        }
    };
    let k = kit.guard_blocks;
    loop {
        match guard_window(&kit.chain_rpc, &kit.validator_address, k).await {
            Ok(window) if !window.key_active() && window.latest >= after => {
                tracing::info!(
                    latest = window.latest,
                    k,
                    "chain guard: the validator's key is absent from the last {k} commits"
                );
                return window.latest;
            }
            Ok(window) if window.key_active() => note(format!(
                "takeover: the validator's key signed at heights {:?} within the last {k} commits (to {}): another signer may be at work; waiting until {k} commits pass without it",
                window
                    .signed_heights
                    .iter()
                    .chain(&window.nil_heights)
                    .collect::<Vec<_>>(),
                window.latest
            )),
            Ok(_) => {}
            Err(error) => note(format!(
                "takeover: the chain guard cannot read the last {k} commits ({error})"
            )),
        }
        tokio::time::sleep(kit.poll).await;
    }
}

/// The latest height from the first of `urls` that answers.
async fn latest_height(urls: &[String]) -> Result<u64, String> {
    let mut errors = Vec::new();
    for url in urls {
        match ChainRpc::new(url).latest_height().await {
            Ok(height) => return Ok(height),
            Err(error) => errors.push(error.to_string()),
        }
    }
    Err(errors.join("; "))
}

/// The last K commits from the first of `urls` that can read them all.
async fn guard_window(
    urls: &[String],
    address: &str,
    k: u64,
) -> Result<crate::node::rpc::SignedWindow, String> {
    let mut errors = Vec::new();
    for url in urls {
        match signed_in_last(url, address, k).await {
            Ok(window) => return Ok(window),
            Err(error) => errors.push(error.to_string()),
        }
    }
    Err(errors.join("; "))
}

/// Restore the highest backup; with `at_least`, look again for a while
/// until the local state reaches it (the old primary's final backup).
async fn restore_until(
    kit: &TakeoverKit,
    at_least: Option<Watermark>,
    note: &dyn Fn(String),
) -> Result<(), String> {
    let started = tokio::time::Instant::now();
    loop {
        match kit.restore.restore(&RestoreChoice::Highest).await {
            Ok(restored) => tracing::info!(
                watermark = %restored.watermark,
                store = %restored.store,
                file = %restored.file,
                "takeover: restored the highest backup"
            ),
            Err(RestoreError::NotAbove { .. } | RestoreError::NoValidBackup { .. }) => {}
            Err(error) => return Err(format!("restoring the highest backup: {error}")),
        }
        let local = match read_local(&kit.state_path) {
            LocalState::Present(watermark) => Some(watermark),
            _ => None,
        };
        let Some(wanted) = at_least else {
            return Ok(());
        };
        if local >= Some(wanted) {
            return Ok(());
        }
        if started.elapsed() >= FINAL_BACKUP_WAIT {
            note(format!(
                "takeover: no store shows the final backup at {wanted} yet; the sign state is raised to the record's watermark instead"
            ));
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Raise the sign state to `floor` if it is below (never lower it).
fn raise_to(state_path: &std::path::Path, floor: Option<Watermark>) -> Result<Watermark, String> {
    let local = match read_local(state_path) {
        LocalState::Present(watermark) => Some(watermark),
        LocalState::Missing => None,
        LocalState::Unreadable(reason) => {
            return Err(format!(
                "the sign state {} is unreadable ({reason}); fix or restore it by hand",
                state_path.display()
            ));
        }
    };
    match (local, floor) {
        (Some(local), Some(floor)) if local >= floor => Ok(local),
        (_, Some(floor)) => {
            write_atomic(state_path, &SignState::from_watermark(floor), local)
                .map_err(|error| format!("raising the sign state to {floor}: {error}"))?;
            tracing::warn!(from = ?local.map(|w| w.to_string()), to = %floor, "takeover: sign state raised to the floor");
            Ok(floor)
        }
        (Some(local), None) => Ok(local),
        (None, None) => Ok(Watermark {
            height: 0,
            round: 0,
            step: Step::None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_only_ever_raises_the_sign_state() {
        // Table: the local state, the floor, what the file holds after.
        let w = |height, round, step| Watermark {
            height,
            round,
            step,
        };
        let cases: Vec<(Option<Watermark>, Option<Watermark>, Option<Watermark>)> = vec![
            (None, None, None),
            (None, Some(w(12, 0, Step::None)), Some(w(12, 0, Step::None))),
            (
                Some(w(9, 0, Step::Precommit)),
                Some(w(12, 0, Step::None)),
                Some(w(12, 0, Step::None)),
            ),
            (
                Some(w(12, 1, Step::Prevote)),
                Some(w(12, 0, Step::None)),
                Some(w(12, 1, Step::Prevote)),
            ),
            (
                Some(w(20, 0, Step::Precommit)),
                Some(w(12, 0, Step::None)),
                Some(w(20, 0, Step::Precommit)),
            ),
            (
                Some(w(5, 0, Step::Precommit)),
                None,
                Some(w(5, 0, Step::Precommit)),
            ),
        ];
        for (local, floor, expected) in cases {
            let dir = tempfile::tempdir().unwrap();
            let state_path = dir.path().join("priv_validator_state.json");
            if let Some(local) = local {
                write_atomic(&state_path, &SignState::from_watermark(local), None).unwrap();
            }
            let result = raise_to(&state_path, floor);
            let after = match read_local(&state_path) {
                LocalState::Present(watermark) => Some(watermark),
                _ => None,
            };
            assert_eq!(after, expected, "{local:?} {floor:?}");
            if let Some(expected) = expected {
                assert_eq!(result.unwrap(), expected);
            }
        }
        // An unreadable file is not overwritten.
        let dir = tempfile::tempdir().unwrap();
        let state_path = dir.path().join("priv_validator_state.json");
        std::fs::write(&state_path, b"{not json").unwrap();
        let error = raise_to(&state_path, Some(w(12, 0, Step::None))).unwrap_err();
        assert!(error.contains("unreadable"), "{error}");
        assert_eq!(std::fs::read(&state_path).unwrap(), b"{not json");
    }
}
