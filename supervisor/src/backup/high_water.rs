//! This host's high-water record: the highest sign-state watermark and the
//! highest backup sequence it has ever seen, kept beside the vault
//! (`<vault dir>/high-water.json`).
//!
//! The stores can be unreachable, and a store can withhold its newest
//! bundles, but this file is the host's own memory. The start rule refuses
//! a local `priv_validator_state.json` below its watermark (a state file
//! restored from an old snapshot), restores never write below it, and the
//! next backup's sequence is always above its sequence, so a sequence never
//! starts over when the stores are out of reach (`docs/backup-format.md`).
//!
//! The record only rises: [`raise`] takes the maximum of each field with
//! what is on disk and writes atomically (temp file, fsync, rename, fsync
//! the directory) only when something rose. A record that exists but
//! cannot be read is an error that names the file: never a silent reset.

use std::path::{Path, PathBuf};

use palisade_daemon::durable::{AtomicWrite, Existing};
use serde::{Deserialize, Serialize};

use crate::sign_state::{Step, Watermark};

/// The record's file name inside the vault directory.
pub const FILE_NAME: &str = "high-water.json";
/// The only version this build writes and reads.
const VERSION: u32 = 1;
/// A real record is about 100 bytes.
const MAX_BYTES: u64 = 4096;

/// What the host has seen at most.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HighWater {
    /// The highest watermark signed or backed up here; `None` before the
    /// first one.
    pub watermark: Option<Watermark>,
    /// The highest backup sequence written or accepted here (0: none).
    pub sequence: u64,
}

impl HighWater {
    /// Each field the larger of the two.
    pub fn max(self, other: HighWater) -> HighWater {
        HighWater {
            watermark: self.watermark.max(other.watermark),
            sequence: self.sequence.max(other.sequence),
        }
    }
}

/// Why the record cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HighWaterError {
    #[error(
        "cannot read the high-water record {}: {source}; it guards against a state file that went back: fix its permissions, or see docs/backup-format.md \"High-water record\"", path.display()
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the high-water record {} is damaged ({reason}); the supervisor will not guess the highest watermark: see docs/backup-format.md \"High-water record\" for how to rebuild it", path.display()
    )]
    Invalid { path: PathBuf, reason: String },
    #[error("cannot write the high-water record {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: palisade_daemon::durable::DurableError,
    },
}

/// The file's shape: CometBFT's field names and types for the watermark
/// (height as a string), so an operator reads it like the state file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDisk {
    version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    height: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    round: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    step: Option<u8>,
    sequence: String,
}

/// `<vault dir>/high-water.json`.
pub fn path_in(vault_dir: &Path) -> PathBuf {
    vault_dir.join(FILE_NAME)
}

/// The record at `path`; `Ok(None)` when there is none yet.
pub fn load(path: &Path) -> Result<Option<HighWater>, HighWaterError> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(HighWaterError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let mut bytes = Vec::new();
    file.take(MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| HighWaterError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    parse(&bytes)
        .map(Some)
        .map_err(|reason| HighWaterError::Invalid {
            path: path.to_path_buf(),
            reason,
        })
}

fn parse(bytes: &[u8]) -> Result<HighWater, String> {
    if bytes.len() as u64 > MAX_BYTES {
        return Err(format!("larger than {MAX_BYTES} bytes"));
    }
    let disk: OnDisk = serde_json::from_slice(bytes).map_err(|error| error.to_string())?;
    if disk.version != VERSION {
        return Err(format!(
            "version {} (this build reads version {VERSION})",
            disk.version
        ));
    }
    let sequence = disk
        .sequence
        .parse::<u64>()
        .map_err(|_| format!("sequence {:?} is not a number", disk.sequence))?;
    let watermark = match (disk.height, disk.round, disk.step) {
        (None, None, None) => None,
        (Some(height), Some(round), Some(step)) => Some(Watermark {
            height: height
                .parse()
                .map_err(|_| format!("height {height:?} is not a number"))?,
            round,
            step: Step::try_from(step)?,
        }),
        _ => return Err("height, round and step must be present together".into()),
    };
    Ok(HighWater {
        watermark,
        sequence,
    })
}

fn render(record: HighWater) -> Vec<u8> {
    let disk = OnDisk {
        version: VERSION,
        height: record.watermark.map(|w| w.height.to_string()),
        round: record.watermark.map(|w| w.round),
        step: record.watermark.map(|w| u8::from(w.step)),
        sequence: record.sequence.to_string(),
    };
    let mut bytes = serde_json::to_vec_pretty(&disk).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// Raises the record at `path` to at least `seen` (field by field) and
/// returns the record now on disk. Writes only when a field rose; never
/// lowers anything. A damaged record is an error and is left as it is.
pub fn raise(path: &Path, seen: HighWater) -> Result<HighWater, HighWaterError> {
    let current = load(path)?;
    let raised = current.unwrap_or_default().max(seen);
    if current == Some(raised) {
        return Ok(raised);
    }
    AtomicWrite::new(0o600, Existing::Replace)
        .write(path, &render(raised))
        .map_err(|source| HighWaterError::Write {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(raised)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mark(height: u64, round: u32, step: Step) -> Option<Watermark> {
        Some(Watermark {
            height,
            round,
            step,
        })
    }

    #[test]
    fn raise_takes_the_maximum_of_each_field_and_never_lowers() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_in(dir.path());
        // (what is seen, what the record must then be)
        let table = [
            (
                HighWater {
                    watermark: None,
                    sequence: 0,
                },
                HighWater {
                    watermark: None,
                    sequence: 0,
                },
            ),
            (
                HighWater {
                    watermark: mark(10, 0, Step::Prevote),
                    sequence: 3,
                },
                HighWater {
                    watermark: mark(10, 0, Step::Prevote),
                    sequence: 3,
                },
            ),
            // Lower watermark, higher sequence: only the sequence rises.
            (
                HighWater {
                    watermark: mark(9, 5, Step::Precommit),
                    sequence: 7,
                },
                HighWater {
                    watermark: mark(10, 0, Step::Prevote),
                    sequence: 7,
                },
            ),
            // Same height, later step; lower sequence: only the watermark.
            (
                HighWater {
                    watermark: mark(10, 0, Step::Precommit),
                    sequence: 1,
                },
                HighWater {
                    watermark: mark(10, 0, Step::Precommit),
                    sequence: 7,
                },
            ),
            // Nothing seen: nothing changes.
            (
                HighWater::default(),
                HighWater {
                    watermark: mark(10, 0, Step::Precommit),
                    sequence: 7,
                },
            ),
        ];
        for (seen, expected) in table {
            assert_eq!(raise(&path, seen).unwrap(), expected, "after {seen:?}");
            assert_eq!(
                load(&path).unwrap(),
                Some(expected),
                "on disk after {seen:?}"
            );
        }
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_missing_record_is_none_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_in(dir.path());
        assert_eq!(load(&path).unwrap(), None);
        let record = HighWater {
            watermark: mark(u64::MAX, u32::MAX, Step::None),
            sequence: u64::MAX,
        };
        raise(&path, record).unwrap();
        assert_eq!(load(&path).unwrap(), Some(record));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("\"height\": \"18446744073709551615\""),
            "{text}"
        );
    }

    #[test]
    fn a_damaged_record_is_an_error_naming_the_file_and_is_left_alone() {
        let cases: [(&[u8], &str); 8] = [
            (b"", "EOF"),
            (b"{", "EOF"),
            (b"{\"version\":2,\"sequence\":\"1\"}", "version 2"),
            (b"{\"version\":1,\"sequence\":1}", "invalid type"),
            (b"{\"version\":1,\"sequence\":\"x\"}", "sequence \"x\""),
            (
                b"{\"version\":1,\"height\":\"5\",\"sequence\":\"1\"}",
                "present together",
            ),
            (
                b"{\"version\":1,\"height\":\"5\",\"round\":0,\"step\":4,\"sequence\":\"1\"}",
                "step 4",
            ),
            (
                b"{\"version\":1,\"sequence\":\"1\",\"extra\":0}",
                "unknown field",
            ),
        ];
        for (bytes, words) in cases {
            let dir = tempfile::tempdir().unwrap();
            let path = path_in(dir.path());
            std::fs::write(&path, bytes).unwrap();
            let error = load(&path).unwrap_err().to_string();
            assert!(error.contains("high-water.json"), "{error}");
            assert!(error.contains(words), "{words:?} not in {error}");
            let raised = raise(
                &path,
                HighWater {
                    watermark: mark(1, 0, Step::None),
                    sequence: 1,
                },
            );
            assert!(raised.is_err());
            assert_eq!(std::fs::read(&path).unwrap(), bytes, "the file changed");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = path_in(dir.path());
        std::fs::write(&path, vec![b' '; MAX_BYTES as usize + 1]).unwrap();
        assert!(load(&path).unwrap_err().to_string().contains("larger than"));
    }
}
