//! The last backup each store took, for the metrics
//! (`palisade_backup_last_success_timestamp_seconds{store}`,
//! `palisade_backup_last_sequence{store}`).
//!
//! The backup worker announces each backup it wrote, with the stores that
//! took it, on its last-backup channel (the one `status` reads); a store
//! missing from one backup keeps the record of the last one it took. A
//! small task folds the channel into the table; stores appear once they
//! have taken a backup since the supervisor started.

use std::collections::BTreeMap;
use std::sync::Mutex;

use palisade_wire::rpc::results::LastBackup;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// One store's last backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreRecord {
    /// When it was written, Unix seconds.
    pub at: u64,
    pub sequence: u64,
}

/// The last backup of each store, by store name.
#[derive(Debug, Default)]
pub struct BackupsByStore(Mutex<BTreeMap<String, StoreRecord>>);

impl BackupsByStore {
    /// Folds in one announced backup.
    pub fn record(&self, backup: &LastBackup) {
        let mut table = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for store in &backup.stores {
            table.insert(
                store.clone(),
                StoreRecord {
                    at: backup.at,
                    sequence: backup.sequence,
                },
            );
        }
    }

    /// The table now.
    pub fn snapshot(&self) -> Vec<(String, StoreRecord)> {
        let table = self.0.lock().unwrap_or_else(|e| e.into_inner());
        table
            .iter()
            .map(|(store, record)| (store.clone(), *record))
            .collect()
    }
}

/// Follows `announced` into `table` until `shutdown` or the channel closes.
pub fn follow(
    mut announced: watch::Receiver<Option<LastBackup>>,
    table: std::sync::Arc<BackupsByStore>,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        loop {
            if let Some(backup) = announced.borrow_and_update().clone() {
                table.record(&backup);
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = announced.changed() => if changed.is_err() { return },
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(sequence: u64, at: u64, stores: &[&str]) -> LastBackup {
        LastBackup {
            file: format!("b-{sequence}"),
            sequence,
            watermark: "height 1 round 0 step 3".into(),
            stores: stores.iter().map(|s| s.to_string()).collect(),
            at,
        }
    }

    #[test]
    fn a_store_keeps_its_last_backup_when_a_later_one_misses_it() {
        let table = BackupsByStore::default();
        table.record(&backup(1, 100, &["local", "b1"]));
        table.record(&backup(2, 160, &["local"]));
        assert_eq!(
            table.snapshot(),
            vec![
                (
                    "b1".to_string(),
                    StoreRecord {
                        at: 100,
                        sequence: 1
                    }
                ),
                (
                    "local".to_string(),
                    StoreRecord {
                        at: 160,
                        sequence: 2
                    }
                ),
            ]
        );
    }
}
