//! The node's `config/config.toml` as a document to edit: read bounded,
//! parsed with `toml_edit` so that the operator's comments, order and
//! layout survive, values set only where they differ (each change kept to
//! be logged), and written back atomically keeping the file's mode and
//! owner (`palisade_daemon::durable`).
//!
//! Used by the vault (key paths pointed at tmpfs) and the peering (gaiad's
//! `[p2p]` from the bastion mesh). Nothing here decides what to write.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use palisade_daemon::durable::{AtomicWrite, Existing};

/// Largest `config.toml` accepted (CometBFT's own is about 20 KiB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Why `config.toml` could not be read, edited or written.
#[derive(Debug, thiserror::Error)]
pub enum ConfigTomlError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is larger than {MAX_CONFIG_BYTES} bytes", path.display())]
    TooLarge { path: PathBuf },
    #[error("{} is not valid TOML: {reason}", path.display())]
    Toml { path: PathBuf, reason: String },
    /// A key this edit sets exists with a shape it cannot replace (a table
    /// where a value belongs, or the other way round).
    #[error("{}: `{key}` is not a plain value", path.display())]
    NotAValue { path: PathBuf, key: String },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One value changed by an edit: what to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// `section.key`, or `key` at the top level.
    pub key: String,
    /// The value before (as written in the file), if there was one.
    pub from: Option<String>,
    pub to: String,
}

/// `config.toml`, open for editing.
pub struct ConfigToml {
    path: PathBuf,
    document: toml_edit::DocumentMut,
    write: AtomicWrite,
    changes: Vec<Change>,
}

impl ConfigToml {
    /// Read and parse `daemon_home/config/config.toml`.
    pub fn open(daemon_home: &Path) -> Result<ConfigToml, ConfigTomlError> {
        let path = daemon_home.join("config").join("config.toml");
        let read = |source| ConfigTomlError::Read {
            path: path.clone(),
            source,
        };
        let metadata = std::fs::metadata(&path).map_err(read)?;
        if metadata.len() > MAX_CONFIG_BYTES {
            return Err(ConfigTomlError::TooLarge { path });
        }
        let text = std::fs::read_to_string(&path).map_err(read)?;
        let document =
            text.parse::<toml_edit::DocumentMut>()
                .map_err(|error| ConfigTomlError::Toml {
                    path: path.clone(),
                    reason: error.to_string().trim_end().to_owned(),
                })?;
        let write = AtomicWrite::new(metadata.mode() & 0o7777, Existing::Replace)
            .owned_by(metadata.uid(), metadata.gid());
        Ok(ConfigToml {
            path,
            document,
            write,
            changes: Vec::new(),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The value of `key` in `table` (`None`: the top level), if it is a
    /// plain value.
    pub fn get(&self, table: Option<&str>, key: &str) -> Option<&toml_edit::Value> {
        let table = match table {
            Some(name) => self.document.get(name)?.as_table_like()?,
            None => self.document.as_table(),
        };
        table.get(key)?.as_value()
    }

    /// Set `key` in `table` (created if missing) to `value`, keeping the
    /// comments around an existing value. Returns whether it changed.
    pub fn set(
        &mut self,
        table: Option<&str>,
        key: &str,
        value: impl Into<toml_edit::Value>,
    ) -> Result<bool, ConfigTomlError> {
        let value: toml_edit::Value = value.into();
        let shown = |table: Option<&str>| match table {
            Some(table) => format!("{table}.{key}"),
            None => key.to_owned(),
        };
        let not_a_value = || ConfigTomlError::NotAValue {
            path: self.path.clone(),
            key: shown(table),
        };
        let target = match table {
            Some(name) => {
                let root = self.document.as_table_mut();
                if !root.contains_key(name) {
                    root.insert(name, toml_edit::Item::Table(toml_edit::Table::new()));
                }
                root.get_mut(name)
                    .and_then(toml_edit::Item::as_table_like_mut)
                    .ok_or_else(not_a_value)?
            }
            None => self.document.as_table_mut() as &mut dyn toml_edit::TableLike,
        };
        let from = match target.get_mut(key) {
            Some(item) => {
                let existing = item.as_value_mut().ok_or_else(not_a_value)?;
                if same_value(existing, &value) {
                    return Ok(false);
                }
                let mut bare = existing.clone();
                bare.decor_mut().clear();
                let before = bare.to_string().trim().to_owned();
                let decor = existing.decor().clone();
                *existing = value.clone();
                *existing.decor_mut() = decor;
                Some(before)
            }
            None => {
                target.insert(key, toml_edit::Item::Value(value.clone()));
                None
            }
        };
        self.changes.push(Change {
            key: shown(table),
            from,
            to: value.to_string().trim().to_owned(),
        });
        Ok(true)
    }

    /// Write the document back if anything changed (atomically, keeping
    /// mode and owner); the changes made.
    pub fn save(self) -> Result<Vec<Change>, ConfigTomlError> {
        if self.changes.is_empty() {
            return Ok(self.changes);
        }
        self.write
            .write(&self.path, self.document.to_string().as_bytes())
            .map_err(|error| ConfigTomlError::Write {
                path: self.path.clone(),
                source: error.into(),
            })?;
        Ok(self.changes)
    }
}

/// Equal as values, whatever their formatting.
fn same_value(a: &toml_edit::Value, b: &toml_edit::Value) -> bool {
    use toml_edit::Value;
    match (a, b) {
        (Value::String(a), Value::String(b)) => a.value() == b.value(),
        (Value::Integer(a), Value::Integer(b)) => a.value() == b.value(),
        (Value::Boolean(a), Value::Boolean(b)) => a.value() == b.value(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home_with(text: &str) -> tempfile::TempDir {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join("config")).unwrap();
        std::fs::write(home.path().join("config/config.toml"), text).unwrap();
        home
    }

    #[test]
    fn edits_keep_everything_else_as_written() {
        let text = "# top comment\nmoniker = \"val\"\n\n[p2p]\n# the sentries\npersistent_peers = \"\" # none yet\npex = true\nladdr = \"tcp://0.0.0.0:26656\"\n\n[consensus]\ntimeout_commit = \"5s\"\n";
        let home = home_with(text);
        let mut config = ConfigToml::open(home.path()).unwrap();
        assert!(
            config
                .set(Some("p2p"), "persistent_peers", "a@127.0.0.2:26756")
                .unwrap()
        );
        assert!(config.set(Some("p2p"), "pex", false).unwrap());
        assert!(!config.set(None, "moniker", "val").unwrap(), "unchanged");
        assert!(config.set(Some("statesync"), "enable", false).unwrap());
        assert!(
            config
                .set(Some("consensus"), "double_sign_check_height", 10)
                .unwrap()
        );
        let changes = config.save().unwrap();
        assert_eq!(
            changes
                .iter()
                .map(|c| (c.key.as_str(), c.from.as_deref(), c.to.as_str()))
                .collect::<Vec<_>>(),
            [
                (
                    "p2p.persistent_peers",
                    Some("\"\""),
                    "\"a@127.0.0.2:26756\""
                ),
                ("p2p.pex", Some("true"), "false"),
                ("statesync.enable", None, "false"),
                ("consensus.double_sign_check_height", None, "10"),
            ]
        );
        let written = std::fs::read_to_string(home.path().join("config/config.toml")).unwrap();
        for kept in [
            "# top comment",
            "# the sentries",
            "persistent_peers = \"a@127.0.0.2:26756\" # none yet",
            "laddr = \"tcp://0.0.0.0:26656\"",
            "timeout_commit = \"5s\"",
        ] {
            assert!(written.contains(kept), "{kept:?} lost:\n{written}");
        }
        // Nothing changed: nothing written.
        let before = std::fs::metadata(home.path().join("config/config.toml"))
            .unwrap()
            .modified()
            .unwrap();
        let mut again = ConfigToml::open(home.path()).unwrap();
        assert!(!again.set(Some("p2p"), "pex", false).unwrap());
        assert!(again.save().unwrap().is_empty());
        let after = std::fs::metadata(home.path().join("config/config.toml"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(before, after);
    }

    #[test]
    fn a_bad_file_or_shape_is_named_and_nothing_is_written() {
        let missing = tempfile::tempdir().unwrap();
        let error = ConfigToml::open(missing.path()).err().unwrap().to_string();
        assert!(
            error.contains("cannot read") && error.contains("config.toml"),
            "{error}"
        );
        let home = home_with("[p2p\n");
        let error = ConfigToml::open(home.path()).err().unwrap().to_string();
        assert!(error.contains("is not valid TOML"), "{error}");
        let text = "p2p = 5\n[consensus.pex]\nx = 1\n";
        let home = home_with(text);
        let mut config = ConfigToml::open(home.path()).unwrap();
        let error = config
            .set(Some("p2p"), "pex", false)
            .unwrap_err()
            .to_string();
        assert!(error.contains("`p2p.pex` is not a plain value"), "{error}");
        let error = config
            .set(Some("consensus"), "pex", false)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("`consensus.pex` is not a plain value"),
            "{error}"
        );
        drop(config);
        assert_eq!(
            std::fs::read_to_string(home.path().join("config/config.toml")).unwrap(),
            text
        );
    }
}
