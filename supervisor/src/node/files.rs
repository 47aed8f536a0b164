//! Where the node keeps the files the supervisor reads: the paths that
//! `config/config.toml` names (relative to the home unless absolute), with
//! CometBFT's defaults for keys it leaves out, and the chain id from
//! `config/genesis.json`.
//!
//! Read strictly: a `config.toml` or `genesis.json` that cannot be read or
//! parsed is an error naming the file and the problem, never a silent fall
//! back to the default paths — a supervisor guarding the wrong state file
//! would guard nothing. Read-only: nothing here writes a node file.

use std::fmt;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use serde::de::{self, IgnoredAny, MapAccess, Visitor};

use crate::vault::KeyKind;

/// Largest `config.toml` read (CometBFT's own is about 20 KiB).
pub const MAX_CONFIG_TOML_BYTES: u64 = 1 << 20;

/// Why a node file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum NodeFileError {
    /// The file could not be opened or read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Larger than the node would ever write.
    #[error("{} is larger than {limit} bytes; is it the node's config.toml?", path.display())]
    TooLarge { path: PathBuf, limit: u64 },
    /// Not valid TOML.
    #[error("{} is not valid TOML: {reason}", path.display())]
    Toml { path: PathBuf, reason: String },
    /// A path key that is not a string.
    #[error("{}: `{key}` must be a string (a file path)", path.display())]
    NotAPath { path: PathBuf, key: &'static str },
    /// `genesis.json` is not valid JSON, or its `chain_id` not a string.
    #[error("{} is not a genesis file: {reason}", path.display())]
    Genesis { path: PathBuf, reason: String },
    /// `genesis.json` has no `chain_id`.
    #[error("{} has no chain_id; set backup.chain-id", path.display())]
    NoChainId { path: PathBuf },
}

/// The node's files, as its `config.toml` names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePaths {
    /// `priv_validator_state_file`.
    pub state: PathBuf,
    /// `priv_validator_key_file`.
    pub priv_validator_key: PathBuf,
    /// `node_key_file`.
    pub node_key: PathBuf,
}

impl NodePaths {
    /// Read `daemon_home/config/config.toml`.
    pub fn read(daemon_home: &Path) -> Result<NodePaths, NodeFileError> {
        let path = config_toml(daemon_home);
        let table = read_config_table(&path)?;
        let file = |key: &'static str, default: &str| -> Result<PathBuf, NodeFileError> {
            let configured = match table.get(key) {
                None => PathBuf::from(default),
                Some(value) => {
                    PathBuf::from(value.as_str().ok_or_else(|| NodeFileError::NotAPath {
                        path: path.clone(),
                        key,
                    })?)
                }
            };
            Ok(if configured.is_absolute() {
                configured
            } else {
                daemon_home.join(configured)
            })
        };
        Ok(NodePaths {
            // CometBFT's defaults (`config/config.go`, `DefaultBaseConfig`).
            state: file(
                "priv_validator_state_file",
                "data/priv_validator_state.json",
            )?,
            priv_validator_key: file("priv_validator_key_file", "config/priv_validator_key.json")?,
            node_key: file("node_key_file", "config/node_key.json")?,
        })
    }

    /// Where the key file of `kind` is.
    pub fn key(&self, kind: KeyKind) -> &Path {
        match kind {
            KeyKind::PrivValidatorKey => &self.priv_validator_key,
            KeyKind::NodeKey => &self.node_key,
        }
    }
}

/// `daemon_home/config/config.toml`.
pub fn config_toml(daemon_home: &Path) -> PathBuf {
    daemon_home.join("config").join("config.toml")
}

/// `config.toml` parsed, bounded in size.
fn read_config_table(path: &Path) -> Result<toml::Table, NodeFileError> {
    let read = |source| NodeFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let length = std::fs::metadata(path).map_err(read)?.len();
    if length > MAX_CONFIG_TOML_BYTES {
        return Err(NodeFileError::TooLarge {
            path: path.to_path_buf(),
            limit: MAX_CONFIG_TOML_BYTES,
        });
    }
    let text = std::fs::read_to_string(path).map_err(read)?;
    text.parse::<toml::Table>()
        .map_err(|error| NodeFileError::Toml {
            path: path.to_path_buf(),
            reason: error.to_string().trim_end().to_owned(),
        })
}

/// The chain id: `configured` (`[backup] chain-id`) if set, else
/// `config/genesis.json`'s `chain_id`, read by streaming until that field:
/// a genesis file of gigabytes costs neither their memory nor the time to
/// parse what follows.
pub fn chain_id(daemon_home: &Path, configured: Option<&str>) -> Result<String, NodeFileError> {
    if let Some(chain_id) = configured {
        return Ok(chain_id.to_owned());
    }
    let path = daemon_home.join("config/genesis.json");
    let file = File::open(&path).map_err(|source| NodeFileError::Read {
        path: path.clone(),
        source,
    })?;
    read_chain_id(BufReader::with_capacity(64 * 1024, file), &path)
}

/// Stop the parse with this once the chain id is found: what follows it
/// is never read.
const FOUND: &str = "palisade: chain_id found";

fn read_chain_id(reader: impl std::io::Read, path: &Path) -> Result<String, NodeFileError> {
    let mut found = None;
    let mut deserializer = serde_json::Deserializer::from_reader(reader);
    let outcome =
        de::Deserializer::deserialize_map(&mut deserializer, ChainIdVisitor { found: &mut found });
    match (found, outcome) {
        (Some(chain_id), _) => Ok(chain_id),
        (None, Ok(())) => Err(NodeFileError::NoChainId {
            path: path.to_path_buf(),
        }),
        (None, Err(error)) => Err(NodeFileError::Genesis {
            path: path.to_path_buf(),
            reason: error.to_string(),
        }),
    }
}

/// Walks the top-level object, skipping every value (without keeping it)
/// until `chain_id`.
struct ChainIdVisitor<'a> {
    found: &'a mut Option<String>,
}

impl<'de> Visitor<'de> for ChainIdVisitor<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a genesis object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == "chain_id" {
                let chain_id: String = map.next_value()?;
                *self.found = Some(chain_id);
                // Found: abandon the rest of the file.
                return Err(de::Error::custom(FOUND));
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_are_read_up_to_their_field() {
        let path = Path::new("genesis.json");
        let cases: &[(&str, Result<&str, &str>)] = &[
            (
                r#"{"genesis_time":"x","chain_id":"cosmoshub-4","app_state":{}}"#,
                Ok("cosmoshub-4"),
            ),
            // What follows the field is never read: not even its syntax.
            (r#"{"chain_id":"sim-1", this is not JSON"#, Ok("sim-1")),
            (
                r#"{"app_state":{"accounts":[1,2,{"a":"b"}]},"chain_id":"late-1"}"#,
                Ok("late-1"),
            ),
            (r#"{"genesis_time":"x"}"#, Err("has no chain_id")),
            (r#"{"chain_id":7}"#, Err("not a genesis file")),
            (r#"[1,2]"#, Err("not a genesis file")),
            (r#"{"app_state":{"#, Err("not a genesis file")),
            ("", Err("not a genesis file")),
        ];
        for (text, expected) in cases {
            let got = read_chain_id(text.as_bytes(), path);
            match (got, expected) {
                (Ok(chain_id), Ok(want)) => assert_eq!(chain_id, *want, "{text}"),
                (Err(error), Err(words)) => {
                    let message = error.to_string();
                    assert!(message.contains(words), "{text}: {message}");
                    assert!(message.contains("genesis.json"), "{message}");
                }
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn a_large_genesis_is_not_read_past_the_chain_id() {
        // A reader that fails after the first 64 KiB: the chain id comes
        // first, so it is found without ever reaching the failure.
        struct Limited(Vec<u8>, usize);
        impl std::io::Read for Limited {
            fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
                if self.1 >= 64 * 1024 {
                    return Err(std::io::Error::other("read past the chain id"));
                }
                let n = buffer.len().min(self.0.len() - self.1).min(4096);
                buffer[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
                self.1 += n;
                Ok(n)
            }
        }
        let mut text =
            br#"{"genesis_time":"2019-12-11T16:11:34Z","chain_id":"big-1","app_state":{"x":""#
                .to_vec();
        text.extend(std::iter::repeat_n(b'a', 1 << 20));
        text.extend_from_slice(br#""}}"#);
        assert_eq!(
            read_chain_id(Limited(text, 0), Path::new("genesis.json")).unwrap(),
            "big-1"
        );
    }

    #[test]
    fn config_toml_problems_are_named_and_never_fall_back() {
        let home = tempfile::tempdir().unwrap();
        let missing = NodePaths::read(home.path()).unwrap_err().to_string();
        assert!(missing.contains("config.toml"), "{missing}");
        assert!(missing.contains("cannot read"), "{missing}");
        std::fs::create_dir(home.path().join("config")).unwrap();
        let write = |text: &str| std::fs::write(config_toml(home.path()), text).unwrap();
        write("priv_validator_state_file = [1]\n");
        let error = NodePaths::read(home.path()).unwrap_err().to_string();
        assert!(
            error.contains("`priv_validator_state_file` must be a string"),
            "{error}"
        );
        write("moniker = \"a\"\n[p2p\n");
        let error = NodePaths::read(home.path()).unwrap_err().to_string();
        assert!(error.contains("is not valid TOML"), "{error}");
        write(
            "priv_validator_state_file = \"/var/state.json\"\nnode_key_file = \"keys/nk.json\"\n",
        );
        let paths = NodePaths::read(home.path()).unwrap();
        assert_eq!(paths.state, Path::new("/var/state.json"));
        assert_eq!(paths.node_key, home.path().join("keys/nk.json"));
        assert_eq!(
            paths.priv_validator_key,
            home.path().join("config/priv_validator_key.json")
        );
    }
}
