//! The backup stores a supervisor writes to and reads from, and their names
//! — in one place, so that the backup worker, the start rule, `backup.list`,
//! `backup.restore` and `restore-state` all call a store the same thing:
//!
//! - `local`: `[backup] dir`;
//! - `dir<N>:<path>`: the N-th of `[backup] extra-dirs` (from 1);
//! - `bastion:<name>`: a bastion's store, reached through its tunnel.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::store::{BackupStore, LocalDirStore, StoreError};
use crate::config::BackupSettings;

/// The name of the store in `[backup] dir`.
pub const LOCAL_STORE: &str = "local";

/// The name of the `index`-th directory store (0 is `[backup] dir`).
pub fn dir_store_name(index: usize, dir: &Path) -> String {
    if index == 0 {
        LOCAL_STORE.to_owned()
    } else {
        format!("dir{index}:{}", dir.display())
    }
}

/// The name of a bastion's store.
pub fn bastion_store_name(bastion: &str) -> String {
    format!("bastion:{bastion}")
}

/// The configured directory stores, named, in configuration order:
/// `[backup] dir` first, then `extra-dirs`.
pub fn dir_stores(settings: &BackupSettings) -> Vec<(String, PathBuf)> {
    std::iter::once(&settings.dir)
        .chain(&settings.extra_dirs)
        .enumerate()
        .map(|(index, dir)| (dir_store_name(index, dir), dir.clone()))
        .collect()
}

/// Open every configured directory store (creating its directory 0700 if
/// needed and removing temporary files a killed write left behind).
pub fn open_dir_stores(settings: &BackupSettings) -> Result<Vec<Arc<dyn BackupStore>>, StoreError> {
    dir_stores(settings)
        .into_iter()
        .map(|(name, dir)| {
            LocalDirStore::new(dir, name).map(|store| Arc::new(store) as Arc<dyn BackupStore>)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn stores_are_named_in_configuration_order() {
        let dir = tempfile::tempdir().unwrap();
        let settings = BackupSettings {
            dir: dir.path().join("b0"),
            extra_dirs: vec![dir.path().join("b1"), dir.path().join("b2")],
            retention: 10,
            debounce: Duration::from_millis(100),
            chain_id: None,
            start_quorum: crate::config::StartQuorum::All,
            start_quorum_wait: std::time::Duration::from_secs(60),
        };
        let named: Vec<String> = dir_stores(&settings)
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        let opened: Vec<String> = open_dir_stores(&settings)
            .unwrap()
            .iter()
            .map(|store| store.name().to_owned())
            .collect();
        assert_eq!(named, opened);
        assert_eq!(
            named,
            [
                "local".to_string(),
                format!("dir1:{}", dir.path().join("b1").display()),
                format!("dir2:{}", dir.path().join("b2").display()),
            ]
        );
        assert_eq!(bastion_store_name("b1"), "bastion:b1");
    }
}
