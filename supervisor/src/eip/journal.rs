//! The rotation journal: one JSON line per step (`EipJournalRecord`),
//! appended durably (`durable::append`: write, fsync, the directory fsynced
//! on creation), so that a supervisor killed mid-rotation finds where it
//! stopped. `$DAEMON_HOME/palisade/eip/journal.jsonl`, mode 0600.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use palisade_daemon::durable;
use palisade_wire::rpc::results::EipJournalRecord;

/// Largest journal read back (a rotation writes about six short lines).
const MAX_JOURNAL_BYTES: u64 = 8 << 20;

/// Steps after which nothing is left to do.
pub const TERMINAL_STEPS: [&str; 3] = ["done", "rolled-back", "failed"];

/// The journal file.
#[derive(Debug, Clone)]
pub struct Journal {
    path: PathBuf,
}

/// A rotation whose last record is not terminal: what it recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfinished {
    pub rotation: String,
    pub bastion: String,
    /// Its records, oldest first.
    pub records: Vec<EipJournalRecord>,
}

impl Unfinished {
    /// The last step recorded.
    pub fn last_step(&self) -> &str {
        self.records
            .last()
            .map_or("started", |record| record.step.as_str())
    }

    /// The first record of `step`, if there is one.
    pub fn step(&self, step: &str) -> Option<&EipJournalRecord> {
        self.records.iter().find(|record| record.step == step)
    }
}

impl Journal {
    /// The journal in `dir` (created on the first append).
    pub fn new(dir: &Path) -> Journal {
        Journal {
            path: dir.join("journal.jsonl"),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record durably.
    pub fn append(&self, record: &EipJournalRecord) -> anyhow::Result<()> {
        if let Some(dir) = self.path.parent() {
            private_dir(dir)?;
        }
        let mut line = serde_json::to_vec(record).expect("a journal record serializes");
        line.push(b'\n');
        durable::append(&self.path, 0o600, &line)
            .map_err(|error| anyhow::anyhow!("cannot append to the rotation journal: {error}"))
    }

    /// Every record. A line that does not parse (a write torn by a crash)
    /// is skipped with a warning; a missing file is an empty journal.
    pub fn read(&self) -> anyhow::Result<Vec<EipJournalRecord>> {
        let text = match std::fs::metadata(&self.path) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => anyhow::bail!("cannot read {}: {error}", self.path.display()),
            Ok(metadata) if metadata.len() > MAX_JOURNAL_BYTES => anyhow::bail!(
                "{} is larger than {MAX_JOURNAL_BYTES} bytes: move it aside",
                self.path.display()
            ),
            Ok(_) => std::fs::read_to_string(&self.path)
                .map_err(|error| anyhow::anyhow!("cannot read {}: {error}", self.path.display()))?,
        };
        Ok(text
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .filter_map(|(index, line)| match serde_json::from_str(line) {
                Ok(record) => Some(record),
                Err(error) => {
                    tracing::warn!(
                        journal = %self.path.display(),
                        line = index + 1,
                        %error,
                        "skipping an unreadable rotation journal line"
                    );
                    None
                }
            })
            .collect())
    }

    /// The last `count` records.
    pub fn tail(&self, count: usize) -> anyhow::Result<Vec<EipJournalRecord>> {
        let records = self.read()?;
        let skip = records.len().saturating_sub(count);
        Ok(records.into_iter().skip(skip).collect())
    }

    /// The last rotation, if its last record is not terminal.
    pub fn unfinished(&self) -> anyhow::Result<Option<Unfinished>> {
        Ok(unfinished_of(self.read()?))
    }
}

/// The last rotation of `records` unless it finished.
fn unfinished_of(records: Vec<EipJournalRecord>) -> Option<Unfinished> {
    let last = records.last()?;
    if TERMINAL_STEPS.contains(&last.step.as_str()) {
        return None;
    }
    let rotation = last.rotation.clone();
    let bastion = last.bastion.clone();
    let records = records
        .into_iter()
        .filter(|record| record.rotation == rotation)
        .collect();
    Some(Unfinished {
        rotation,
        bastion,
        records,
    })
}

/// Creates `dir` (and its parents) if missing; `dir` itself 0700, since
/// the journal and the address book name the account's addresses.
pub(super) fn private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|error| anyhow::anyhow!("cannot create {}: {error}", parent.display()))?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|error| anyhow::anyhow!("cannot chmod {}: {error}", dir.display())),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(anyhow::anyhow!("cannot create {}: {error}", dir.display())),
    }
}

/// Now, Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(rotation: &str, step: &str) -> EipJournalRecord {
        EipJournalRecord {
            at_ms: 1,
            rotation: rotation.into(),
            bastion: "b1".into(),
            step: step.into(),
            public_ip: None,
            allocation_id: None,
            association_id: None,
            detail: None,
            took_ms: None,
        }
    }

    #[test]
    fn which_rotation_is_unfinished() {
        /// (rotation, step) records → (the unfinished rotation, its record count).
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<(&'a str, usize)>);
        let cases: [Case; 6] = [
            (&[], None),
            (&[("r1", "started")], Some(("r1", 1))),
            (&[("r1", "started"), ("r1", "allocated")], Some(("r1", 2))),
            (&[("r1", "started"), ("r1", "done")], None),
            (
                &[("r1", "started"), ("r1", "rolled-back"), ("r2", "started")],
                Some(("r2", 1)),
            ),
            (
                &[("r1", "started"), ("r1", "associated"), ("r1", "failed")],
                None,
            ),
        ];
        for (records, expected) in cases {
            let records: Vec<_> = records.iter().map(|(r, s)| record(r, s)).collect();
            let found = unfinished_of(records.clone());
            assert_eq!(
                found
                    .as_ref()
                    .map(|u| (u.rotation.as_str(), u.records.len())),
                expected,
                "{records:?}"
            );
        }
    }

    #[test]
    fn appended_records_read_back_and_a_torn_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(&dir.path().join("eip"));
        assert!(journal.read().unwrap().is_empty());
        journal.append(&record("r1", "started")).unwrap();
        journal.append(&record("r1", "allocated")).unwrap();
        // A crash in the middle of a write.
        std::fs::OpenOptions::new()
            .append(true)
            .open(journal.path())
            .and_then(|mut file| std::io::Write::write_all(&mut file, b"{\"at_ms\":3,\"rot"))
            .unwrap();
        let unfinished = journal.unfinished().unwrap().unwrap();
        assert_eq!(unfinished.last_step(), "allocated");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(journal.path())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(dir.path().join("eip"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
        assert_eq!(journal.tail(1).unwrap()[0].step, "allocated");
    }
}
