//! Where each bastion answers now: the public address a rotation moved it
//! to, kept as dynamic state (the config file is never rewritten).
//! `$DAEMON_HOME/palisade/eip/addresses.json`, written atomically, mode 0600:
//! `{"b1": {"public_ip": "…", "allocation_id": "…"}}`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use palisade_daemon::durable::{AtomicWrite, Existing};
use serde::{Deserialize, Serialize};

/// Largest file read back.
const MAX_BYTES: u64 = 1 << 20;

/// A bastion's current Elastic IP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Current {
    pub public_ip: String,
    pub allocation_id: String,
}

/// The file.
#[derive(Debug, Clone)]
pub struct AddressBook {
    path: PathBuf,
}

impl AddressBook {
    pub fn new(dir: &Path) -> AddressBook {
        AddressBook {
            path: dir.join("addresses.json"),
        }
    }

    /// Every bastion's current address (empty when no rotation happened).
    pub fn load(&self) -> anyhow::Result<BTreeMap<String, Current>> {
        match std::fs::metadata(&self.path) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(error) => anyhow::bail!("cannot read {}: {error}", self.path.display()),
            Ok(metadata) if metadata.len() > MAX_BYTES => {
                anyhow::bail!("{} is larger than {MAX_BYTES} bytes", self.path.display())
            }
            Ok(_) => {
                let text = std::fs::read_to_string(&self.path).map_err(|error| {
                    anyhow::anyhow!("cannot read {}: {error}", self.path.display())
                })?;
                let book: BTreeMap<String, Current> =
                    serde_json::from_str(&text).map_err(|error| {
                        anyhow::anyhow!(
                            "{} is not a bastion address file: {error}",
                            self.path.display()
                        )
                    })?;
                for (bastion, current) in &book {
                    if current.public_ip.parse::<std::net::IpAddr>().is_err() {
                        anyhow::bail!(
                            "{}: bastion {bastion}: {:?} is not an IP address",
                            self.path.display(),
                            current.public_ip
                        );
                    }
                }
                Ok(book)
            }
        }
    }

    /// Records `bastion`'s address (`None`: back to the configured host).
    pub fn set(&self, bastion: &str, current: Option<Current>) -> anyhow::Result<()> {
        let mut book = self.load()?;
        match current {
            Some(current) => book.insert(bastion.to_string(), current),
            None => book.remove(bastion),
        };
        if let Some(dir) = self.path.parent() {
            super::journal::private_dir(dir)?;
        }
        let mut json = serde_json::to_vec_pretty(&book).expect("addresses serialize");
        json.push(b'\n');
        AtomicWrite::new(0o600, Existing::Replace)
            .write(&self.path, &json)
            .map_err(|error| anyhow::anyhow!("cannot write the bastion addresses: {error}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_and_bad_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let book = AddressBook::new(dir.path());
        assert!(book.load().unwrap().is_empty());
        let current = Current {
            public_ip: "54.1.2.3".into(),
            allocation_id: "eipalloc-1".into(),
        };
        book.set("b1", Some(current.clone())).unwrap();
        assert_eq!(book.load().unwrap()["b1"], current);
        book.set("b1", None).unwrap();
        assert!(book.load().unwrap().is_empty());
        for bad in [
            "not json",
            r#"{"b1": {"public_ip": "nowhere", "allocation_id": "x"}}"#,
            r#"{"b1": {"public_ip": "1.2.3.4", "allocation_id": "x", "extra": 1}}"#,
        ] {
            std::fs::write(dir.path().join("addresses.json"), bad).unwrap();
            assert!(book.load().is_err(), "{bad}");
        }
    }
}
