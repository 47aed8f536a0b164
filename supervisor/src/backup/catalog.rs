//! The control RPC's `backup.list`: every store's listing — the local
//! directories and each bastion's store reachable now — per store, its
//! backups newest first (bounded), or why the store could not be read.
//!
//! It needs no secret: what a name carries (sequence, height), the file
//! time of a local store, and the full watermark of the last backup this
//! supervisor wrote. Round and step of the others are inside the encrypted
//! bundle and shown as unknown. Directory stores are read directly and
//! read-only (opening a store object would clean up the backup worker's
//! temporary files).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use palisade_wire::rpc::results::{BackupListResult, ListedBackup, StoreListing};
use tokio::task::JoinSet;

use super::bundle::BackupFileName;
use super::start_check::STORE_TIMEOUT;
use super::store::{BackupStore, StoreError, validate_file_name};
use super::stores::dir_stores;
use super::worker::LastBackup;
use crate::config::VaultSettings;

/// Most backups listed in one answer, all stores together, so that the
/// answer stays well within the RPC's line limit.
pub const MAX_LISTED_TOTAL: usize = 200;

/// One backup as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    file: String,
    sequence: u64,
    height: u64,
    /// Unix seconds, when known.
    at: Option<u64>,
}

/// Every store `backup.list` reads.
#[derive(Clone, Default)]
pub struct BackupCatalog {
    /// Directory stores, read directly (read-only: no store object is
    /// opened, which would clean up the backup worker's temporary files).
    local: Vec<(String, PathBuf)>,
    /// The bastions' stores.
    remote: Vec<Arc<dyn BackupStore>>,
}

impl BackupCatalog {
    /// The directory stores of `vault` (none without a vault).
    pub fn new(vault: Option<&VaultSettings>) -> BackupCatalog {
        BackupCatalog {
            local: vault
                .map(|vault| dir_stores(&vault.backup))
                .unwrap_or_default(),
            remote: Vec::new(),
        }
    }

    /// Also list these (the bastions' stores, through the tunnels).
    pub fn with_remote(mut self, stores: Vec<Arc<dyn BackupStore>>) -> BackupCatalog {
        self.remote = stores;
        self
    }

    /// The names of every store, in order.
    pub fn store_names(&self) -> Vec<String> {
        self.local
            .iter()
            .map(|(name, _)| name.clone())
            .chain(self.remote.iter().map(|store| store.name().to_owned()))
            .collect()
    }

    /// `backup.list`: every store, concurrently, each bounded by
    /// [`STORE_TIMEOUT`]; `last` fills in what this supervisor knows of
    /// the backup it wrote last.
    pub async fn list(&self, limit: usize, last: Option<&LastBackup>) -> BackupListResult {
        let mut tasks = JoinSet::new();
        for (index, (_, dir)) in self.local.iter().enumerate() {
            let dir = dir.clone();
            tasks.spawn(async move {
                let listed = tokio::task::spawn_blocking(move || list_dir(&dir))
                    .await
                    .unwrap_or_else(|join| Err(format!("listing task failed: {join}")));
                (index, listed)
            });
        }
        for (offset, store) in self.remote.iter().enumerate() {
            let store = Arc::clone(store);
            let index = self.local.len() + offset;
            tasks.spawn(async move {
                let listed = match tokio::time::timeout(STORE_TIMEOUT, store.list()).await {
                    Ok(Ok(names)) => Ok(names
                        .into_iter()
                        .filter_map(|name| listed(name, None))
                        .collect()),
                    Ok(Err(error)) => Err(error.to_string()),
                    Err(_) => Err(StoreError::Timeout(STORE_TIMEOUT).to_string()),
                };
                (index, listed)
            });
        }
        let names = self.store_names();
        let mut results: Vec<Option<Result<Vec<Listed>, String>>> = vec![None; names.len()];
        while let Some(joined) = tasks.join_next().await {
            if let Ok((index, listed)) = joined {
                results[index] = Some(listed);
            }
        }
        let mut budget = MAX_LISTED_TOTAL;
        let stores = names
            .into_iter()
            .zip(results)
            .map(|(name, result)| {
                match result.unwrap_or_else(|| Err("listing task failed".into())) {
                    Ok(backups) => store_listing(name, backups, limit, &mut budget, last),
                    Err(error) => StoreListing::Unreachable { store: name, error },
                }
            })
            .collect();
        BackupListResult { stores }
    }
}

/// A store's answer: its backups newest first, at most `limit` (and what
/// is left of the answer's `budget`).
fn store_listing(
    store: String,
    mut backups: Vec<Listed>,
    limit: usize,
    budget: &mut usize,
    last: Option<&LastBackup>,
) -> StoreListing {
    backups.sort_by(|a, b| (b.sequence, &b.file).cmp(&(a.sequence, &a.file)));
    let total = backups.len();
    let shown = total.min(limit).min(*budget);
    *budget -= shown;
    let entries = backups
        .into_iter()
        .take(shown)
        .map(|backup| {
            let known = last.filter(|last| last.file == backup.file);
            ListedBackup {
                watermark: known.map(|last| last.watermark.clone()),
                at: backup.at.or(known.map(|last| last.at)),
                file: backup.file,
                sequence: backup.sequence,
                height: backup.height,
            }
        })
        .collect();
    StoreListing::Reachable {
        store,
        total: total as u64,
        truncated: shown < total,
        backups: entries,
    }
}

fn listed(file: String, at: Option<u64>) -> Option<Listed> {
    let parsed = BackupFileName::parse(&file)?;
    Some(Listed {
        file,
        sequence: parsed.sequence,
        height: parsed.height,
        at,
    })
}

/// The backups in a directory store, with their file times. Hidden and
/// non-backup files are not part of the store; a directory not created
/// yet (no unlock since `init-vault`) holds none.
fn list_dir(dir: &Path) -> Result<Vec<Listed>, String> {
    let cannot = |error: std::io::Error| format!("cannot list {}: {error}", dir.display());
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(cannot(error)),
    };
    let mut backups = Vec::new();
    for entry in entries {
        let entry = entry.map_err(cannot)?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let Ok(metadata) = entry.metadata() else {
            continue;
        };
        if !metadata.is_file() || validate_file_name(&name).is_err() {
            continue;
        }
        let at = metadata
            .modified()
            .ok()
            .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
            .map(|elapsed| elapsed.as_secs());
        backups.extend(listed(name, at));
    }
    Ok(backups)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::backup::test_support::{Scripted, name};

    fn json_of(value: impl serde::Serialize) -> Value {
        serde_json::to_value(value).unwrap()
    }

    fn listed_entry(sequence: u64, height: u64) -> Listed {
        Listed {
            file: name(sequence, height),
            sequence,
            height,
            at: Some(1_700_000_000 + sequence),
        }
    }

    #[test]
    fn listings_are_newest_first_and_bounded() {
        let backups = vec![listed_entry(2, 5), listed_entry(9, 30), listed_entry(5, 12)];
        let last = LastBackup {
            file: name(9, 30),
            sequence: 9,
            watermark: "height 30 round 1 step 3".into(),
            stores: vec!["local".into()],
            at: 1_800_000_000,
        };
        let mut budget = 100;
        let all = json_of(store_listing(
            "local".into(),
            backups.clone(),
            10,
            &mut budget,
            Some(&last),
        ));
        assert_eq!(budget, 97);
        let sequences: Vec<u64> = all["backups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["sequence"].as_u64().unwrap())
            .collect();
        assert_eq!(sequences, [9, 5, 2]);
        assert_eq!(all["total"], 3);
        assert_eq!(all["truncated"], false);
        // The last backup written has its full watermark; the others have
        // only what their name says.
        assert_eq!(all["backups"][0]["watermark"], "height 30 round 1 step 3");
        assert_eq!(all["backups"][0]["height"], 30);
        assert_eq!(all["backups"][0]["at"], 1_700_000_009u64);
        assert_eq!(all["backups"][1]["watermark"], Value::Null);

        let limited = json_of(store_listing(
            "local".into(),
            backups.clone(),
            2,
            &mut budget,
            None,
        ));
        assert_eq!(limited["backups"].as_array().unwrap().len(), 2);
        assert_eq!(limited["total"], 3);
        assert_eq!(limited["truncated"], true);
        let mut small = 1;
        let budgeted = json_of(store_listing("b".into(), backups, 10, &mut small, None));
        assert_eq!(budgeted["backups"].as_array().unwrap().len(), 1);
        assert_eq!(budgeted["truncated"], true);
        assert_eq!(small, 0);
    }

    #[tokio::test]
    async fn list_reports_each_store_and_never_fails_as_a_whole() {
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().join("backups");
        std::fs::create_dir(&local).unwrap();
        for (sequence, height) in [(1, 3), (2, 7)] {
            std::fs::write(local.join(name(sequence, height)), b"ciphertext").unwrap();
        }
        // Not backups: ignored.
        std::fs::write(local.join(".tmp-1-0-x"), b"").unwrap();
        std::fs::write(local.join("README"), b"").unwrap();
        std::fs::create_dir(local.join(name(3, 9))).unwrap();
        let catalog = BackupCatalog {
            local: vec![
                ("local".into(), local.clone()),
                ("dir1:/missing".into(), dir.path().join("missing")),
                ("dir2:/a-file".into(), local.join("README")),
            ],
            remote: vec![
                Arc::new(Scripted {
                    name: "bastion:down".into(),
                    files: None,
                }),
                Arc::new(Scripted {
                    name: "bastion:up".into(),
                    files: Some(vec![(name(2, 7), vec![]), ("junk".into(), vec![])]),
                }),
            ],
        };
        let listing = json_of(catalog.list(20, None).await);
        let stores = listing["stores"].as_array().unwrap();
        let names: Vec<&str> = stores
            .iter()
            .map(|s| s["store"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "local",
                "dir1:/missing",
                "dir2:/a-file",
                "bastion:down",
                "bastion:up"
            ]
        );
        assert_eq!(stores[0]["reachable"], true);
        assert_eq!(stores[0]["total"], 2);
        assert_eq!(stores[0]["backups"][0]["file"], name(2, 7));
        assert!(stores[0]["backups"][0]["at"].as_u64().unwrap() > 1_600_000_000);
        // Not created yet: empty. Not a directory: an error.
        assert_eq!(stores[1]["reachable"], true);
        assert_eq!(stores[1]["total"], 0);
        assert_eq!(stores[2]["reachable"], false);
        assert!(
            stores[2]["error"].as_str().unwrap().contains("cannot list"),
            "{listing}"
        );
        assert_eq!(stores[3]["reachable"], false);
        assert!(
            stores[3]["error"]
                .as_str()
                .unwrap()
                .contains("bastion down"),
            "{listing}"
        );
        assert_eq!(stores[4]["total"], 1);
        assert_eq!(stores[4]["backups"][0]["at"], Value::Null);
    }
}
