//! Pre-upgrade data backup (reflink snapshot with copy fallback), skipped
//! only with `UNSAFE_SKIP_BACKUP`.
//!
//! The backup is `backup_root/data-backup-<label>-<YYYYMMDDTHHMMSSZ>`. It is
//! built as `<name>.partial` and renamed (no-replace) to the final name only
//! after every file is written and the filesystem is synced, so a directory
//! without `.partial` is always a complete backup. On any error the partial
//! directory is removed.
//!
//! Regular files are cloned with `FICLONE` (reflink: instant, copy-on-write,
//! no extra space until the new binary writes) where the filesystem supports
//! it (XFS with reflink=1, btrfs, bcachefs). After the first "not supported"
//! answer the rest of the run uses a byte copy, after checking that the
//! backup filesystem has room for it: filling the disk the node runs on
//! would be worse than failing the backup.
//!
//! Hard links are never used. They would make the backup share inodes with
//! the live data, and the upgraded binary modifies database files in place
//! (LevelDB/Pebble manifests, logs and WAL segments, `priv_validator_state.json`),
//! so a hard-linked "backup" would silently change with them — exactly the
//! state a rollback needs to be untouched.
//!
//! Symlinks are recreated as symlinks (never followed); sockets, fifos and
//! devices are skipped with a warning. Modes and mtimes are preserved.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use palisade_daemon::durable::{self, DurableError};
use tracing::{info, warn};

/// Progress is reported at most this often by time...
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// ...or after this many bytes, whichever comes first.
const PROGRESS_BYTES: u64 = 64 << 20;
/// Byte copies go in pieces of this size so progress stays live on large
/// database files.
const COPY_PIECE: u64 = 64 << 20;
/// Free space kept on top of the bytes still to copy.
const FREE_SPACE_MARGIN: u64 = 256 << 20;
/// Longest label kept in the directory name.
const MAX_LABEL_LEN: usize = 100;
/// Collision suffixes tried before giving up.
const MAX_SUFFIX: u32 = 1000;

/// Errors of the data backup; each names the path and the reason.
#[derive(Debug, thiserror::Error)]
pub enum DataBackupError {
    /// The data directory is not a directory.
    #[error("data directory {} is not a directory", .path.display())]
    DataDirNotDirectory { path: PathBuf },
    /// The backup would be written inside the tree it copies.
    #[error("backup root {} is inside the data directory {}", .backup_root.display(), .data_dir.display())]
    BackupRootInsideDataDir {
        data_dir: PathBuf,
        backup_root: PathBuf,
    },
    /// Every candidate name up to the suffix limit is taken.
    #[error("no free backup directory name for {} (tried suffixes up to -{MAX_SUFFIX})", .base.display())]
    NoFreeName { base: PathBuf },
    /// The final name appeared while the backup was being written.
    #[error("backup directory {} appeared while the backup was written; the backup was discarded", .path.display())]
    FinalNameTaken { path: PathBuf },
    /// A byte copy would not fit on the backup filesystem.
    #[error("not enough space for a byte copy in {}: {needed} bytes needed (incl. margin), {available} available", .path.display())]
    InsufficientSpace {
        path: PathBuf,
        needed: u64,
        available: u64,
    },
    /// A filesystem operation failed.
    #[error("cannot {operation} {}: {source}", .path.display())]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A failed durable step (rename, fsync), as every filesystem failure of a
/// data backup is reported.
impl From<DurableError> for DataBackupError {
    fn from(error: DurableError) -> Self {
        DataBackupError::Io {
            operation: error.step.action(),
            path: error.path,
            source: error.source,
        }
    }
}

fn io_error(operation: &'static str, path: &Path) -> impl FnOnce(io::Error) -> DataBackupError {
    let path = path.to_path_buf();
    move |source| DataBackupError::Io {
        operation,
        path,
        source,
    }
}

/// How the regular files were backed up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackupMethod {
    /// Every file was cloned with FICLONE.
    Reflink,
    /// Every file was byte-copied (also reported when there were no files).
    Copy,
    /// Cloning worked for some files, then the filesystem refused it.
    Mixed,
}

/// Progress of a running backup, totals from a first walk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupProgress {
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub files_done: u64,
    pub files_total: u64,
}

/// What [`backup_data_dir`] produced.
#[derive(Clone, Debug)]
pub struct DataBackupReport {
    /// The complete backup directory.
    pub path: PathBuf,
    pub method: BackupMethod,
    /// Regular files backed up.
    pub files: u64,
    pub files_reflinked: u64,
    pub files_copied: u64,
    /// Bytes of regular files backed up.
    pub bytes: u64,
    pub directories: u64,
    pub symlinks: u64,
    /// Sockets, fifos and devices, which are not backed up.
    pub skipped_special_files: u64,
    pub duration: Duration,
}

/// `data-backup-<label>-<YYYYMMDDTHHMMSSZ>` with the label made path-safe
/// (characters other than `A-Za-z0-9._-` become `_`).
pub fn backup_dir_name(label: &str, now: SystemTime) -> String {
    let mut safe_label: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(MAX_LABEL_LEN)
        .collect();
    if safe_label.is_empty() || safe_label.chars().all(|c| c == '.') {
        safe_label = "unnamed".to_owned();
    }
    format!("data-backup-{safe_label}-{}", utc_timestamp(now))
}

/// `YYYYMMDDTHHMMSSZ` in UTC (times before 1970 clamp to the epoch).
fn utc_timestamp(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time.max(UNIX_EPOCH))
        .to_string()
        .replace(['-', ':'], "")
}

/// Back up `data_dir` into a new directory under `backup_root` (created if
/// missing). Blocking: run it in `spawn_blocking`. `progress` is called at
/// most every second or 64 MiB, and once at the end.
pub fn backup_data_dir(
    data_dir: &Path,
    backup_root: &Path,
    label: &str,
    now: SystemTime,
    progress: &mut dyn FnMut(&BackupProgress),
) -> Result<DataBackupReport, DataBackupError> {
    let started = Instant::now();
    // The data dir itself may be a symlink (data -> /mnt/disk/data): follow
    // it; nothing below it is followed.
    let data_metadata = fs::metadata(data_dir).map_err(io_error("inspect", data_dir))?;
    if !data_metadata.is_dir() {
        return Err(DataBackupError::DataDirNotDirectory {
            path: data_dir.to_path_buf(),
        });
    }
    fs::create_dir_all(backup_root).map_err(io_error("create", backup_root))?;
    let data_canonical = fs::canonicalize(data_dir).map_err(io_error("resolve", data_dir))?;
    let root_canonical = fs::canonicalize(backup_root).map_err(io_error("resolve", backup_root))?;
    if root_canonical.starts_with(&data_canonical) {
        return Err(DataBackupError::BackupRootInsideDataDir {
            data_dir: data_dir.to_path_buf(),
            backup_root: backup_root.to_path_buf(),
        });
    }

    let totals = count_tree(data_dir)?;
    let (final_path, partial_path) = create_partial_dir(backup_root, &backup_dir_name(label, now))?;
    info!(
        data_dir = %data_dir.display(),
        backup = %final_path.display(),
        files = totals.files_total,
        bytes = totals.bytes_total,
        "backing up data directory"
    );

    let mut run = BackupRun {
        backup_root: backup_root.to_path_buf(),
        reflink: ReflinkState::Untried,
        progress: totals,
        last_report: (Instant::now(), 0),
        report: Counts::default(),
        progress_callback: progress,
    };
    let result = run
        .copy_tree(data_dir, &partial_path, &data_metadata)
        .and_then(|()| finish(&partial_path, &final_path, backup_root));
    if let Err(error) = result {
        remove_partial(&partial_path);
        return Err(error);
    }
    (run.progress_callback)(&run.progress);

    let counts = run.report;
    let method = match (counts.files_reflinked, counts.files_copied) {
        (0, _) => BackupMethod::Copy,
        (_, 0) => BackupMethod::Reflink,
        _ => BackupMethod::Mixed,
    };
    let report = DataBackupReport {
        path: final_path,
        method,
        files: counts.files_reflinked + counts.files_copied,
        files_reflinked: counts.files_reflinked,
        files_copied: counts.files_copied,
        bytes: run.progress.bytes_done,
        directories: counts.directories,
        symlinks: counts.symlinks,
        skipped_special_files: counts.skipped_special_files,
        duration: started.elapsed(),
    };
    info!(
        backup = %report.path.display(),
        method = ?report.method,
        files = report.files,
        bytes = report.bytes,
        elapsed = ?report.duration,
        "data directory backed up"
    );
    Ok(report)
}

/// First walk: regular files and their bytes, for progress totals.
fn count_tree(data_dir: &Path) -> Result<BackupProgress, DataBackupError> {
    let mut totals = BackupProgress {
        bytes_done: 0,
        bytes_total: 0,
        files_done: 0,
        files_total: 0,
    };
    let mut pending = vec![data_dir.to_path_buf()];
    while let Some(directory) = pending.pop() {
        for entry in fs::read_dir(&directory).map_err(io_error("list", &directory))? {
            let entry = entry.map_err(io_error("list", &directory))?;
            let metadata = entry
                .metadata()
                .map_err(io_error("inspect", &entry.path()))?;
            if metadata.is_dir() {
                pending.push(entry.path());
            } else if metadata.is_file() {
                totals.files_total += 1;
                totals.bytes_total += metadata.len();
            }
        }
    }
    Ok(totals)
}

/// Pick the first free `<base>`, `<base>-1`, ... and create its `.partial`
/// directory (0700 until finished, then the data dir's mode).
fn create_partial_dir(
    backup_root: &Path,
    base: &str,
) -> Result<(PathBuf, PathBuf), DataBackupError> {
    for suffix in 0..=MAX_SUFFIX {
        let name = if suffix == 0 {
            base.to_owned()
        } else {
            format!("{base}-{suffix}")
        };
        let final_path = backup_root.join(&name);
        match fs::symlink_metadata(&final_path) {
            Ok(_) => continue,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(io_error("inspect", &final_path)(error)),
        }
        let partial_path = backup_root.join(format!("{name}.partial"));
        match fs::DirBuilder::new().mode(0o700).create(&partial_path) {
            Ok(()) => return Ok((final_path, partial_path)),
            // A crashed earlier run's leftover: leave it for the operator.
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(io_error("create", &partial_path)(error)),
        }
    }
    Err(DataBackupError::NoFreeName {
        base: backup_root.join(base),
    })
}

/// Sync the backup filesystem, then rename the partial directory to its
/// final name without replacing anything, and sync the parent.
fn finish(
    partial_path: &Path,
    final_path: &Path,
    backup_root: &Path,
) -> Result<(), DataBackupError> {
    let partial = File::open(partial_path).map_err(io_error("open", partial_path))?;
    nix::unistd::syncfs(&partial)
        .map_err(|errno| io_error("sync filesystem of", partial_path)(errno.into()))?;
    durable::rename_no_replace(partial_path, final_path).map_err(|error| match error.kind() {
        io::ErrorKind::AlreadyExists => DataBackupError::FinalNameTaken {
            path: final_path.to_path_buf(),
        },
        _ => DataBackupError::from(error),
    })?;
    Ok(durable::fsync_dir(backup_root)?)
}

/// Remove a partial backup, making read-only directories writable first.
fn remove_partial(partial_path: &Path) {
    if fs::remove_dir_all(partial_path).is_ok() {
        return;
    }
    let mut pending = vec![partial_path.to_path_buf()];
    while let Some(directory) = pending.pop() {
        let _ = fs::set_permissions(&directory, fs::Permissions::from_mode(0o700));
        if let Ok(entries) = fs::read_dir(&directory) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|file_type| file_type.is_dir()) {
                    pending.push(entry.path());
                }
            }
        }
    }
    if let Err(error) = fs::remove_dir_all(partial_path) {
        warn!(path = %partial_path.display(), %error, "cannot remove partial data backup");
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ReflinkState {
    Untried,
    Works,
    /// The filesystem refused; byte-copy the rest (space already checked).
    Unsupported,
}

#[derive(Default)]
struct Counts {
    files_reflinked: u64,
    files_copied: u64,
    directories: u64,
    symlinks: u64,
    skipped_special_files: u64,
}

struct BackupRun<'a> {
    backup_root: PathBuf,
    reflink: ReflinkState,
    progress: BackupProgress,
    /// When and at how many bytes progress was last reported.
    last_report: (Instant, u64),
    report: Counts,
    progress_callback: &'a mut dyn FnMut(&BackupProgress),
}

impl BackupRun<'_> {
    /// Copy the tree; directory modes and mtimes are applied after their
    /// contents (a 0555 directory must still be written into).
    fn copy_tree(
        &mut self,
        source_root: &Path,
        dest_root: &Path,
        root_metadata: &fs::Metadata,
    ) -> Result<(), DataBackupError> {
        let mut directories = vec![(
            source_root.to_path_buf(),
            dest_root.to_path_buf(),
            root_metadata.clone(),
        )];
        let mut index = 0;
        while index < directories.len() {
            let (source_dir, dest_dir) =
                (directories[index].0.clone(), directories[index].1.clone());
            index += 1;
            let mut entries = fs::read_dir(&source_dir)
                .map_err(io_error("list", &source_dir))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(io_error("list", &source_dir))?;
            entries.sort_by_key(|entry| entry.file_name());
            for entry in entries {
                let source = entry.path();
                let destination = dest_dir.join(entry.file_name());
                let metadata =
                    fs::symlink_metadata(&source).map_err(io_error("inspect", &source))?;
                let file_type = metadata.file_type();
                if file_type.is_dir() {
                    fs::DirBuilder::new()
                        .mode(0o700)
                        .create(&destination)
                        .map_err(io_error("create", &destination))?;
                    self.report.directories += 1;
                    directories.push((source, destination, metadata));
                } else if file_type.is_file() {
                    self.copy_file(&source, &destination, &metadata)?;
                } else if file_type.is_symlink() {
                    let target =
                        fs::read_link(&source).map_err(io_error("read symlink", &source))?;
                    std::os::unix::fs::symlink(&target, &destination)
                        .map_err(io_error("create symlink", &destination))?;
                    self.report.symlinks += 1;
                } else {
                    let kind = if file_type.is_socket() {
                        "socket"
                    } else if file_type.is_fifo() {
                        "fifo"
                    } else {
                        "device"
                    };
                    warn!(path = %source.display(), kind, "skipping special file in data backup");
                    self.report.skipped_special_files += 1;
                }
            }
        }
        for (_, destination, metadata) in directories.iter().rev() {
            let directory = File::open(destination).map_err(io_error("open", destination))?;
            if let Ok(modified) = metadata.modified() {
                directory
                    .set_modified(modified)
                    .map_err(io_error("set mtime of", destination))?;
            }
            directory
                .set_permissions(fs::Permissions::from_mode(metadata.mode() & 0o7777))
                .map_err(io_error("chmod", destination))?;
        }
        Ok(())
    }

    fn copy_file(
        &mut self,
        source: &Path,
        destination: &Path,
        metadata: &fs::Metadata,
    ) -> Result<(), DataBackupError> {
        let mut source_file = File::open(source).map_err(io_error("open", source))?;
        let mut destination_file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(destination)
            .map_err(io_error("create", destination))?;

        let mut reflinked = false;
        if self.reflink != ReflinkState::Unsupported {
            match crate::sys::reflink_file(&source_file, &destination_file) {
                Ok(()) => {
                    self.reflink = ReflinkState::Works;
                    reflinked = true;
                }
                Err(error) if reflink_unsupported(&error) => {
                    info!(
                        path = %source.display(),
                        %error,
                        "reflink not supported here; byte-copying the rest of the data backup"
                    );
                    self.reflink = ReflinkState::Unsupported;
                    self.check_free_space()?;
                    // A failed clone leaves the destination untouched, but
                    // make the copy start from empty regardless.
                    destination_file
                        .set_len(0)
                        .map_err(io_error("truncate", destination))?;
                }
                Err(error) => return Err(io_error("clone (FICLONE) into", destination)(error)),
            }
        }

        if reflinked {
            self.report.files_reflinked += 1;
            self.progress.bytes_done += metadata.len();
        } else {
            loop {
                let copied = io::copy(
                    &mut (&mut source_file).take(COPY_PIECE),
                    &mut destination_file,
                )
                .map_err(io_error("copy", source))?;
                if copied == 0 {
                    break;
                }
                self.progress.bytes_done += copied;
                self.maybe_report_progress();
            }
            self.report.files_copied += 1;
        }
        self.progress.files_done += 1;

        if let Ok(modified) = metadata.modified() {
            destination_file
                .set_modified(modified)
                .map_err(io_error("set mtime of", destination))?;
        }
        destination_file
            .set_permissions(fs::Permissions::from_mode(metadata.mode() & 0o7777))
            .map_err(io_error("chmod", destination))?;
        self.maybe_report_progress();
        Ok(())
    }

    /// Refuse a byte copy that would not fit (plus a margin) on the backup
    /// filesystem.
    fn check_free_space(&self) -> Result<(), DataBackupError> {
        let stats = nix::sys::statvfs::statvfs(&self.backup_root)
            .map_err(|errno| io_error("statvfs", &self.backup_root)(errno.into()))?;
        #[allow(clippy::useless_conversion)] // the widths differ between targets
        let available =
            u64::from(stats.blocks_available()).saturating_mul(u64::from(stats.fragment_size()));
        let needed = (self
            .progress
            .bytes_total
            .saturating_sub(self.progress.bytes_done))
        .saturating_add(FREE_SPACE_MARGIN);
        if available < needed {
            return Err(DataBackupError::InsufficientSpace {
                path: self.backup_root.clone(),
                needed,
                available,
            });
        }
        Ok(())
    }

    fn maybe_report_progress(&mut self) {
        let (last_time, last_bytes) = self.last_report;
        if last_time.elapsed() >= PROGRESS_INTERVAL
            || self.progress.bytes_done - last_bytes >= PROGRESS_BYTES
        {
            (self.progress_callback)(&self.progress);
            self.last_report = (Instant::now(), self.progress.bytes_done);
        }
    }
}

/// Errors meaning "this filesystem (pair) cannot clone", as opposed to a
/// real I/O failure.
fn reflink_unsupported(error: &io::Error) -> bool {
    use nix::libc;
    matches!(
        error.raw_os_error(),
        Some(
            libc::EOPNOTSUPP
                | libc::EXDEV
                | libc::EINVAL
                | libc::ENOTTY
                | libc::EBADF
                | libc::ENOSYS
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_table() {
        for (seconds, expected) in [
            (0, "19700101T000000Z"),
            (951_782_400, "20000229T000000Z"),
            (1_700_000_000, "20231114T221320Z"),
            (4_102_444_799, "20991231T235959Z"),
        ] {
            assert_eq!(
                utc_timestamp(UNIX_EPOCH + Duration::from_secs(seconds)),
                expected
            );
        }
    }

    #[test]
    fn labels_are_made_path_safe() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for (label, expected) in [
            ("v2.0.0", "data-backup-v2.0.0-20231114T221320Z"),
            ("../etc/x y", "data-backup-.._etc_x_y-20231114T221320Z"),
            ("", "data-backup-unnamed-20231114T221320Z"),
            ("..", "data-backup-unnamed-20231114T221320Z"),
        ] {
            assert_eq!(backup_dir_name(label, now), expected, "{label:?}");
        }
    }
}
