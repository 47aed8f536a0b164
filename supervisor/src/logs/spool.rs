//! The on-disk spool: sealed segments waiting for the bastions.
//!
//! A directory, 0700, of 0600 files: each segment's `.age` and `.sig`
//! (written in that order, each atomically with `palisade_daemon::durable`;
//! a `.sig` present means the segment is complete), and `sequence`, the
//! next sequence number, written before the segment that takes it, so a
//! restart never reuses a number.
//!
//! - **Bounded**: `logs.spool-bytes`. A segment that does not fit makes the
//!   oldest go first (counted in `segments_dropped`); the newest segment
//!   always stays.
//! - **Per-bastion delivery** is kept in memory: after a restart every
//!   spooled segment is offered to every bastion again, and one that a
//!   bastion already holds answers `already_exists`, which counts as
//!   delivered. A segment is removed once every bastion has it.
//! - Opening removes temporary files and incomplete segments (a `.age`
//!   without its `.sig`) left by a crash.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use palisade_daemon::durable::{self, AtomicWrite, Existing};
use palisade_wire::log_segment::{SegmentName, SegmentPart};

use super::LogStats;
use super::segment::Sealed;

/// The file holding the next sequence number.
const SEQUENCE_FILE: &str = "sequence";

/// One spooled segment.
#[derive(Debug)]
struct Entry {
    name: SegmentName,
    bytes: u64,
    /// Bit `i`: bastion `i` has it.
    delivered: u64,
}

#[derive(Debug, Default)]
struct Index {
    /// By sequence number.
    segments: BTreeMap<u64, Entry>,
    bytes: u64,
    /// Drops not yet logged, and when the last warning was (one per
    /// [`DROP_WARNING_INTERVAL`], so a long outage does not flood the log).
    unreported_drops: u64,
    last_drop_warning: Option<std::time::Instant>,
}

/// At most one "spool full" warning this often.
const DROP_WARNING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// The spool of one host's segments.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    limit: u64,
    /// Bastions that must each have a segment before it goes (at most 64).
    bastions: usize,
    index: Mutex<Index>,
    stats: Arc<LogStats>,
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

impl Spool {
    /// Open (creating) the spool at `dir` for `host`'s segments and
    /// `bastions` bastions; returns it and the next sequence number.
    pub fn open(
        dir: &Path,
        limit: u64,
        host: &str,
        bastions: usize,
        stats: Arc<LogStats>,
    ) -> io::Result<(Spool, u64)> {
        if bastions > 64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "at most 64 bastions receive logs",
            ));
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let metadata = fs::symlink_metadata(dir)?;
        if !metadata.is_dir() {
            return Err(invalid(format!("{} is not a directory", dir.display())));
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        let mut parts: BTreeMap<u64, (Option<u64>, Option<u64>)> = BTreeMap::new();
        let mut next = 0u64;
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let file_name = entry.file_name();
            if durable::is_temp_file_name(&file_name) {
                let _ = fs::remove_file(entry.path());
                continue;
            }
            let Some(name) = file_name.to_str() else {
                continue;
            };
            if name == SEQUENCE_FILE {
                let text = fs::read_to_string(entry.path())?;
                next = next.max(text.trim().parse().map_err(|_| {
                    invalid(format!("{}: not a sequence number", entry.path().display()))
                })?);
                continue;
            }
            let Some((segment, part)) = SegmentName::parse(name) else {
                continue;
            };
            if segment.host != host {
                // Another host's (a renamed host): not ours to ship.
                continue;
            }
            let size = entry.metadata()?.len();
            let slot = parts.entry(segment.sequence).or_default();
            match part {
                SegmentPart::Ciphertext => slot.0 = Some(size),
                SegmentPart::Signature => slot.1 = Some(size),
            }
        }
        let mut index = Index::default();
        for (sequence, sizes) in parts {
            let name = SegmentName {
                host: host.to_owned(),
                sequence,
            };
            next = next.max(sequence + 1);
            match sizes {
                (Some(ciphertext), Some(signature)) => {
                    index.bytes += ciphertext + signature;
                    index.segments.insert(
                        sequence,
                        Entry {
                            name,
                            bytes: ciphertext + signature,
                            delivered: 0,
                        },
                    );
                }
                _ => {
                    // Cut short by a crash between the two writes.
                    let _ = fs::remove_file(dir.join(name.ciphertext_file()));
                    let _ = fs::remove_file(dir.join(name.signature_file()));
                }
            }
        }
        stats.spool_bytes.store(index.bytes, Ordering::Relaxed);
        let spool = Spool {
            dir: dir.to_path_buf(),
            limit,
            bastions,
            index: Mutex::new(index),
            stats,
        };
        Ok((spool, next))
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Spool a sealed segment, first dropping the oldest ones it would not
    /// fit beside.
    pub fn add(&self, sealed: &Sealed) -> io::Result<()> {
        let write = AtomicWrite::new(0o600, Existing::Replace);
        let sequence = sealed.name.sequence;
        write
            .write(
                &self.dir.join(SEQUENCE_FILE),
                format!("{}\n", sequence + 1).as_bytes(),
            )
            .map_err(io::Error::from)?;
        let bytes = (sealed.ciphertext.len() + sealed.signature.len()) as u64;
        self.make_room(bytes);
        write
            .write(
                &self.dir.join(sealed.name.ciphertext_file()),
                &sealed.ciphertext,
            )
            .map_err(io::Error::from)?;
        if let Err(error) = write.write(
            &self.dir.join(sealed.name.signature_file()),
            &sealed.signature,
        ) {
            let _ = fs::remove_file(self.dir.join(sealed.name.ciphertext_file()));
            return Err(error.into());
        }
        let mut index = self.index();
        index.bytes += bytes;
        index.segments.insert(
            sequence,
            Entry {
                name: sealed.name.clone(),
                bytes,
                delivered: 0,
            },
        );
        self.stats.spool_bytes.store(index.bytes, Ordering::Relaxed);
        Ok(())
    }

    /// Drop the oldest segments until `incoming` more bytes fit.
    fn make_room(&self, incoming: u64) {
        let mut index = self.index();
        while index.bytes + incoming > self.limit {
            let Some((_, oldest)) = index.segments.pop_first() else {
                break;
            };
            index.bytes -= oldest.bytes;
            self.remove_files(&oldest.name);
            self.stats.segments_dropped.fetch_add(1, Ordering::Relaxed);
            index.unreported_drops += 1;
            let due = index
                .last_drop_warning
                .is_none_or(|at| at.elapsed() >= DROP_WARNING_INTERVAL);
            if due {
                tracing::warn!(
                    segment = %oldest.name.stem(),
                    dropped = index.unreported_drops,
                    limit = self.limit,
                    "log spool full: dropped the oldest segment(s) before every bastion had them"
                );
                index.unreported_drops = 0;
                index.last_drop_warning = Some(std::time::Instant::now());
            }
        }
        self.stats.spool_bytes.store(index.bytes, Ordering::Relaxed);
    }

    fn remove_files(&self, name: &SegmentName) {
        let _ = fs::remove_file(self.dir.join(name.ciphertext_file()));
        let _ = fs::remove_file(self.dir.join(name.signature_file()));
    }

    /// The oldest segment bastion `bastion` does not have yet.
    pub fn next_for(&self, bastion: usize) -> Option<SegmentName> {
        let bit = 1u64 << bastion;
        self.index()
            .segments
            .values()
            .find(|entry| entry.delivered & bit == 0)
            .map(|entry| entry.name.clone())
    }

    /// A spooled segment's two objects (`.age`, `.sig`); `NotFound` once it
    /// was dropped.
    pub fn read(&self, name: &SegmentName) -> io::Result<(Vec<u8>, Vec<u8>)> {
        let ciphertext = fs::read(self.dir.join(name.ciphertext_file()))?;
        let signature = fs::read(self.dir.join(name.signature_file()))?;
        Ok((ciphertext, signature))
    }

    /// Bastion `bastion` has segment `name`: removed once every bastion
    /// has it. True if it was still spooled.
    pub fn delivered(&self, name: &SegmentName, bastion: usize) -> bool {
        let all = if self.bastions == 64 {
            u64::MAX
        } else {
            (1u64 << self.bastions) - 1
        };
        let mut index = self.index();
        let Some(entry) = index.segments.get_mut(&name.sequence) else {
            return false;
        };
        entry.delivered |= 1 << bastion;
        if entry.delivered & all == all {
            let bytes = entry.bytes;
            index.segments.remove(&name.sequence);
            index.bytes -= bytes;
            self.remove_files(name);
            self.stats.spool_bytes.store(index.bytes, Ordering::Relaxed);
        }
        true
    }

    /// Segments spooled now.
    pub fn len(&self) -> usize {
        self.index().segments.len()
    }

    /// Whether nothing is spooled.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(sequence: u64, bytes: usize) -> Sealed {
        Sealed {
            name: SegmentName {
                host: "h".into(),
                sequence,
            },
            ciphertext: vec![b'c'; bytes],
            signature: vec![b's'; 10],
        }
    }

    fn open(dir: &Path, limit: u64, bastions: usize) -> (Spool, u64, Arc<LogStats>) {
        let stats = Arc::new(LogStats::default());
        let (spool, next) = Spool::open(dir, limit, "h", bastions, Arc::clone(&stats)).unwrap();
        (spool, next, stats)
    }

    #[test]
    fn a_full_spool_drops_the_oldest_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let spool_dir = dir.path().join("spool");
        // (limit, segment sizes in order, sequences left, dropped)
        let rows: &[(u64, &[usize], &[u64], u64)] = &[
            (1000, &[90, 90, 90], &[0, 1, 2], 0),
            (300, &[90, 90, 90, 90], &[1, 2, 3], 1),
            (250, &[190, 190, 40], &[1, 2], 1),
            (100, &[90, 90, 90], &[2], 2),
            // The newest always stays, even alone over the limit.
            (50, &[90, 90], &[1], 1),
        ];
        for (limit, sizes, left, dropped) in rows {
            let _ = fs::remove_dir_all(&spool_dir);
            let (spool, next, stats) = open(&spool_dir, *limit, 1);
            assert_eq!(next, 0);
            for (sequence, size) in sizes.iter().enumerate() {
                spool.add(&sealed(sequence as u64, *size)).unwrap();
            }
            let kept: Vec<u64> = spool.index().segments.keys().copied().collect();
            assert_eq!(kept, *left, "limit {limit} sizes {sizes:?}");
            assert_eq!(stats.segments_dropped.load(Ordering::Relaxed), *dropped);
            let on_disk = fs::read_dir(&spool_dir)
                .unwrap()
                .filter(|entry| {
                    entry.as_ref().unwrap().file_name().to_str().unwrap() != SEQUENCE_FILE
                })
                .count();
            assert_eq!(on_disk, left.len() * 2);
            let bytes: u64 = left
                .iter()
                .map(|sequence| sizes[*sequence as usize] as u64 + 10)
                .sum();
            assert_eq!(stats.spool_bytes.load(Ordering::Relaxed), bytes);
        }
    }

    #[test]
    fn segments_leave_once_every_bastion_has_them() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _, stats) = open(dir.path(), 10_000, 2);
        spool.add(&sealed(0, 100)).unwrap();
        spool.add(&sealed(1, 100)).unwrap();
        let first = spool.next_for(0).unwrap();
        assert_eq!(first.sequence, 0);
        assert!(spool.delivered(&first, 0));
        assert_eq!(spool.next_for(0).unwrap().sequence, 1);
        assert_eq!(spool.next_for(1).unwrap().sequence, 0);
        assert_eq!(spool.len(), 2);
        assert!(spool.delivered(&first, 1));
        assert_eq!(spool.len(), 1);
        assert!(!dir.path().join(first.ciphertext_file()).exists());
        assert_eq!(stats.spool_bytes.load(Ordering::Relaxed), 110);
        // A segment dropped meanwhile is simply gone.
        assert!(!spool.delivered(&first, 0));
    }

    #[test]
    fn a_restart_resumes_the_sequence_and_keeps_what_waits() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (spool, _, _) = open(dir.path(), 10_000, 1);
            for sequence in 0..3 {
                spool.add(&sealed(sequence, 100)).unwrap();
            }
            let first = spool.next_for(0).unwrap();
            spool.delivered(&first, 0);
        }
        // A crash between the two writes of segment 3, and a temp file.
        fs::write(
            dir.path().join("log-h-00000000000000000003.age"),
            b"partial",
        )
        .unwrap();
        fs::write(dir.path().join(".x.palisade-0123456789abcdef.tmp"), b"t").unwrap();
        let (spool, next, stats) = open(dir.path(), 10_000, 1);
        assert_eq!(next, 4);
        assert_eq!(spool.len(), 2);
        assert_eq!(spool.next_for(0).unwrap().sequence, 1);
        assert!(!dir.path().join("log-h-00000000000000000003.age").exists());
        assert_eq!(stats.spool_bytes.load(Ordering::Relaxed), 220);
        let mode = fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        for entry in fs::read_dir(dir.path()).unwrap() {
            let mode = entry.unwrap().metadata().unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        // The sequence survives an empty spool too.
        for sequence in [1, 2] {
            spool.delivered(
                &SegmentName {
                    host: "h".into(),
                    sequence,
                },
                0,
            );
        }
        assert!(spool.is_empty());
        drop(spool);
        let (_, next, _) = open(dir.path(), 10_000, 1);
        assert_eq!(next, 3);
    }
}
