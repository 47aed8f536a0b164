//! The bastion's Prometheus metrics (`[metrics]` in bastion.toml,
//! `docs/metrics.md`): each validator's latest health probe, what its
//! backup store holds, and the store's sessions.
//!
//! Read at each scrape: the health table the reporter publishes
//! ([`HealthBoard`], written after every probe result), the validators'
//! store directories (at most `backups.keep` files each: a bounded
//! listing), and the store's session counters
//! ([`crate::backup_store::SessionCounts`]). Nothing here writes anything
//! the daemon reads.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use palisade_daemon::metrics::{Sample, encode_counter, encode_gauge};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;

use crate::backup_store::SessionCounts;
use crate::health_state::State;

/// The `kind` label of the backup store's backups.
pub const KIND_BACKUP: &str = "backup";
/// The `kind` label of its log segments (and their signatures).
pub const KIND_LOG: &str = "log";

/// Each validator's latest health state, by configuration index.
#[derive(Debug)]
pub struct HealthBoard {
    names: Vec<String>,
    states: Vec<AtomicU8>,
}

fn encode_state(state: State) -> u8 {
    match state {
        State::Unknown => 0,
        State::Up => 1,
        State::Down => 2,
    }
}

impl HealthBoard {
    /// Every validator unknown.
    pub fn new(names: Vec<String>) -> HealthBoard {
        let states = names.iter().map(|_| AtomicU8::new(0)).collect();
        HealthBoard { names, states }
    }

    /// Validator `index` is now in `state`.
    pub fn set(&self, index: usize, state: State) {
        if let Some(slot) = self.states.get(index) {
            slot.store(encode_state(state), Ordering::Relaxed);
        }
    }

    /// Validators probed at least once, with whether the latest probe was up.
    pub fn probed(&self) -> Vec<(String, bool)> {
        self.names
            .iter()
            .zip(&self.states)
            .filter_map(|(name, state)| match state.load(Ordering::Relaxed) {
                0 => None,
                value => Some((name.clone(), value == 1)),
            })
            .collect()
    }
}

/// Bytes and files in one validator's store directory (temporary files of
/// uploads in flight excluded); unreadable entries are skipped.
pub fn store_usage(dir: &std::path::Path) -> std::io::Result<(u64, u64)> {
    let mut bytes = 0;
    let mut objects = 0;
    for entry in std::fs::read_dir(dir)? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        if palisade_daemon::durable::is_temp_file_name(&name)
            || name.as_encoded_bytes().starts_with(b".")
        {
            continue;
        }
        let Ok(metadata) = entry.metadata() else {
            continue;
        };
        if metadata.is_file() {
            bytes += metadata.len();
            objects += 1;
        }
    }
    Ok((bytes, objects))
}

/// The catalogue's bastion metrics.
pub struct BastionCollector {
    pub health: Arc<HealthBoard>,
    pub sessions: Arc<SessionCounts>,
    pub backup_dir: PathBuf,
    pub validators: Vec<String>,
}

impl std::fmt::Debug for BastionCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BastionCollector").finish_non_exhaustive()
    }
}

impl Collector for BastionCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let e = &mut encoder;
        encode_gauge(
            e,
            "palisade_bastion_build_info",
            "The bastion daemon's release (the value is always 1).",
            &[(vec![("version", env!("CARGO_PKG_VERSION").to_string())], 1)],
        )?;
        encode_gauge(
            e,
            "palisade_bastion_validator_up",
            "Whether the validator's latest health probe succeeded (absent before the first).",
            &self
                .health
                .probed()
                .into_iter()
                .map(|(name, up)| (vec![("validator", name)], i64::from(up)))
                .collect::<Vec<_>>(),
        )?;
        let mut bytes: Vec<Sample<i64>> = Vec::new();
        let mut objects: Vec<Sample<i64>> = Vec::new();
        for validator in &self.validators {
            let backups = self.backup_dir.join(validator);
            let logs = backups.join(crate::backup_store::LOG_DIR_NAME);
            for (kind, dir) in [(KIND_BACKUP, backups), (KIND_LOG, logs)] {
                let labels = vec![("validator", validator.clone()), ("kind", kind.to_string())];
                if let Ok((size, count)) = store_usage(&dir) {
                    bytes.push((labels.clone(), i64::try_from(size).unwrap_or(i64::MAX)));
                    objects.push((labels, i64::try_from(count).unwrap_or(i64::MAX)));
                }
            }
        }
        encode_gauge(
            e,
            "palisade_bastion_store_bytes",
            "Bytes the store holds for the validator, by kind of object.",
            &bytes,
        )?;
        encode_gauge(
            e,
            "palisade_bastion_store_objects",
            "Objects (files) the store holds for the validator, by kind.",
            &objects,
        )?;
        encode_counter(
            e,
            "palisade_bastion_store_sessions",
            "Store connections that named the validator, since the daemon started.",
            &self
                .sessions
                .by_validator()
                .into_iter()
                .map(|(name, count)| (vec![("validator", name)], count))
                .collect::<Vec<_>>(),
        )?;
        encode_gauge(
            e,
            "palisade_bastion_store_sessions_active",
            "Store connections being served now.",
            &[(
                Vec::new(),
                i64::try_from(self.sessions.active()).unwrap_or(i64::MAX),
            )],
        )
    }
}

/// A registry of the bastion's metrics.
pub fn registry(collector: BastionCollector) -> Arc<Registry> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(collector));
    Arc::new(registry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validators_appear_once_probed_and_usage_skips_temporary_files() {
        let board = HealthBoard::new(vec!["a".into(), "b".into()]);
        assert_eq!(board.probed(), vec![]);
        board.set(1, State::Down);
        board.set(0, State::Up);
        board.set(7, State::Up);
        assert_eq!(
            board.probed(),
            vec![("a".to_string(), true), ("b".to_string(), false)]
        );

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("one"), b"12345").unwrap();
        std::fs::write(dir.path().join("two"), b"123").unwrap();
        std::fs::write(dir.path().join(".hidden-partial"), b"1234567").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        assert_eq!(store_usage(dir.path()).unwrap(), (8, 2));
        assert!(store_usage(&dir.path().join("missing")).is_err());
    }
}
