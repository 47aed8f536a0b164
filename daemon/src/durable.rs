//! Durable file operations: the one place that knows how to make a file, or
//! a name in a directory, survive a crash.
//!
//! - [`fsync_dir`]: make the creations, renames and removals inside a
//!   directory durable;
//! - [`AtomicWrite`]: create or replace a file so that readers, and the disk
//!   after a crash, see the old content or the new, never a mix: a temp file
//!   beside the target, written, fsynced, renamed (or, with
//!   [`Existing::Refuse`], hard-linked) into place, then the directory
//!   fsynced. [`StagedFile`] is the same in two steps, for callers that
//!   stream the content;
//! - [`append`]: append to a file, fsync it, and its directory when the
//!   append created it;
//! - [`rename_no_replace`]: move a file or directory to a name that must not
//!   exist yet;
//! - [`remove_leftover_temp_files`] and [`is_temp_file_name`]: clean up after
//!   a crash between creating a temp file and moving it into place.
//!
//! Invariants:
//! - a temp file is `.<name>.palisade-<16 hex>.tmp` in the target's
//!   directory: hidden, unique (random), and on the target's filesystem, so
//!   the rename is atomic;
//! - it is created with `O_EXCL`, which never follows or reuses a planted
//!   file or symlink, and with the final mode, then set to exactly that mode
//!   (the umask can only have removed bits): it is never more accessible
//!   than the file it becomes, and the result does not depend on the umask;
//! - every error path removes it, a panic in a caller's writer included
//!   ([`StagedFile`]'s `Drop`);
//! - [`Existing::Refuse`] never replaces anything, not even a dangling
//!   symlink: `link(2)` fails when the name exists;
//! - errors ([`DurableError`]) name the step and the path, never the content.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What [`AtomicWrite`] does when its target already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Replace it atomically (`rename(2)` over it).
    Replace,
    /// Leave it alone and fail with [`io::ErrorKind::AlreadyExists`]
    /// (`link(2)` into place, which never clobbers).
    Refuse,
}

/// The step of a durable operation that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Listing a directory for leftover temp files.
    ListDir,
    /// Removing a leftover temp file.
    RemoveLeftover,
    /// Creating the temp file (or, for [`append`], the file).
    Create,
    /// Opening an existing file for [`append`].
    Open,
    /// Setting the exact mode of a new file.
    SetMode,
    /// Giving a new file its owner.
    SetOwner,
    /// Writing the content.
    Write,
    /// fsync of the file.
    SyncFile,
    /// Renaming into place; the path is the destination.
    Rename,
    /// Hard-linking into place ([`Existing::Refuse`]); the path is the
    /// destination.
    Link,
    /// fsync of the directory.
    SyncDir,
}

impl Step {
    /// The step as a verb for "cannot {action} {path}" messages.
    pub fn action(self) -> &'static str {
        match self {
            Step::ListDir => "list",
            Step::RemoveLeftover => "remove the leftover temp file",
            Step::Create => "create",
            Step::Open => "open",
            Step::SetMode => "set the mode of",
            Step::SetOwner => "set the owner of",
            Step::Write => "write",
            Step::SyncFile => "fsync",
            Step::Rename => "rename into",
            Step::Link => "link into",
            Step::SyncDir => "fsync the directory",
        }
    }
}

/// A failed durable operation: which step, on which path, and why. Callers
/// turn it into their own error kinds (`step.action()`, `path`, `source`),
/// or into an [`io::Error`] of the same kind.
#[derive(Debug, thiserror::Error)]
#[error("cannot {} {}: {source}", .step.action(), .path.display())]
pub struct DurableError {
    /// What was being done.
    pub step: Step,
    /// The file or directory involved.
    pub path: PathBuf,
    /// The underlying error.
    #[source]
    pub source: io::Error,
}

impl DurableError {
    /// The kind of the underlying error, e.g. `AlreadyExists` for a refused
    /// [`Existing::Refuse`] or [`rename_no_replace`].
    pub fn kind(&self) -> io::ErrorKind {
        self.source.kind()
    }

    fn at(step: Step, path: &Path) -> impl FnOnce(io::Error) -> DurableError + use<> {
        let path = path.to_path_buf();
        move |source| DurableError { step, path, source }
    }
}

impl From<DurableError> for io::Error {
    fn from(error: DurableError) -> io::Error {
        io::Error::new(error.kind(), error)
    }
}

/// The directory holding `path` ("." for a bare file name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// fsync a directory, so that creations, renames and removals inside it
/// survive a crash.
pub fn fsync_dir(dir: &Path) -> Result<(), DurableError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(DurableError::at(Step::SyncDir, dir))
}

/// How to write a file atomically and durably: its mode, its owner, and
/// what to do when it exists (see the module invariants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtomicWrite {
    mode: u32,
    existing: Existing,
    owner: Option<(u32, u32)>,
}

impl AtomicWrite {
    /// A file with exactly `mode` (e.g. `0o600`), owned by the writer.
    pub const fn new(mode: u32, existing: Existing) -> AtomicWrite {
        AtomicWrite {
            mode,
            existing,
            owner: None,
        }
    }

    /// Give the file this owner when it is not the writer's, as when the
    /// supervisor runs as root and rewrites a file owned by the node's user.
    pub const fn owned_by(self, uid: u32, gid: u32) -> AtomicWrite {
        AtomicWrite {
            owner: Some((uid, gid)),
            ..self
        }
    }

    /// Write `bytes` to `path`. On error `path` is as it was (but see
    /// [`StagedFile::commit`] for a failed directory fsync) and no temp file
    /// is left.
    pub fn write(&self, path: &Path, bytes: &[u8]) -> Result<(), DurableError> {
        let mut staged = self.stage(path)?;
        staged.write_all(bytes)?;
        staged.commit()
    }

    /// Create the temp file for `path`, with its final mode and owner, for
    /// the caller to fill and then [`StagedFile::commit`].
    pub fn stage(&self, path: &Path) -> Result<StagedFile, DurableError> {
        let Some(name) = path.file_name() else {
            return Err(DurableError {
                step: Step::Create,
                path: path.to_path_buf(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a file path"),
            });
        };
        let temp = parent_of(path).join(temp_name(name));
        // O_EXCL: never a planted file or symlink.
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(self.mode)
            .open(&temp)
            .map_err(DurableError::at(Step::Create, &temp))?;
        // From here on, dropping `staged` removes the temp file.
        let staged = StagedFile {
            file,
            temp: Some(temp.clone()),
            target: path.to_path_buf(),
            existing: self.existing,
        };
        staged
            .file
            .set_permissions(fs::Permissions::from_mode(self.mode))
            .map_err(DurableError::at(Step::SetMode, &temp))?;
        if let Some((uid, gid)) = self.owner {
            let metadata = staged
                .file
                .metadata()
                .map_err(DurableError::at(Step::SetOwner, &temp))?;
            if (metadata.uid(), metadata.gid()) != (uid, gid) {
                std::os::unix::fs::fchown(&staged.file, Some(uid), Some(gid))
                    .map_err(DurableError::at(Step::SetOwner, &temp))?;
            }
        }
        Ok(staged)
    }
}

/// A temp file on its way to becoming its target: created by
/// [`AtomicWrite::stage`], filled by the caller, moved into place by
/// [`StagedFile::commit`]. Dropped without a commit (an error, a panic, a
/// cancelled task), it removes its temp file.
#[derive(Debug)]
pub struct StagedFile {
    file: File,
    /// The temp file's path while it exists under that name.
    temp: Option<PathBuf>,
    target: PathBuf,
    existing: Existing,
}

impl StagedFile {
    /// The open temp file, for a caller that streams the content (e.g.
    /// through `try_clone` into an async file).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Where the temp file is, for the caller's own error messages.
    pub fn temp_path(&self) -> &Path {
        self.temp.as_deref().unwrap_or(&self.target)
    }

    /// Append `bytes` to the temp file.
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<(), DurableError> {
        let temp = self.temp_path().to_path_buf();
        self.file
            .write_all(bytes)
            .map_err(DurableError::at(Step::Write, &temp))
    }

    /// fsync the file, move it into place as the [`Existing`] policy says,
    /// and fsync the directory.
    ///
    /// A failure before the move leaves the target as it was. A failure of
    /// the final directory fsync is reported although the new file is
    /// already in place, because it may not survive a crash.
    pub fn commit(mut self) -> Result<(), DurableError> {
        let temp = self.temp_path().to_path_buf();
        self.file
            .sync_all()
            .map_err(DurableError::at(Step::SyncFile, &temp))?;
        match self.existing {
            Existing::Replace => {
                fs::rename(&temp, &self.target)
                    .map_err(DurableError::at(Step::Rename, &self.target))?;
                self.temp = None;
            }
            Existing::Refuse => {
                fs::hard_link(&temp, &self.target)
                    .map_err(DurableError::at(Step::Link, &self.target))?;
                // The file is in place; the temp name is only a second link
                // to it. Should this unlink fail, `Drop` tries once more.
                if fs::remove_file(&temp).is_ok() {
                    self.temp = None;
                }
            }
        }
        fsync_dir(parent_of(&self.target))
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take()
            && let Err(error) = fs::remove_file(&temp)
            && error.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(temp = %temp.display(), %error, "cannot remove a temp file");
        }
    }
}

/// Marks a temp file name as this module's, after the target's name.
const TEMP_MARK: &[u8] = b".palisade";
/// Hex digits of the random part of a temp file name.
const TEMP_RANDOM_DIGITS: usize = 16;
/// Suffix of every temp file name.
const TEMP_SUFFIX: &[u8] = b".tmp";
/// How much of the target's name a temp file name keeps, so that it stays
/// within NAME_MAX (255 bytes): ".", the name, ".palisade-", 16 hex, ".tmp".
const MAX_TEMP_STEM_BYTES: usize =
    255 - 1 - TEMP_MARK.len() - 1 - TEMP_RANDOM_DIGITS - TEMP_SUFFIX.len();

fn temp_stem(name: &OsStr) -> &[u8] {
    let bytes = name.as_bytes();
    &bytes[..bytes.len().min(MAX_TEMP_STEM_BYTES)]
}

/// `.<name>.palisade-<16 hex>.tmp`.
fn temp_name(name: &OsStr) -> OsString {
    let random: u64 = rand::random();
    let mut bytes = vec![b'.'];
    bytes.extend_from_slice(temp_stem(name));
    bytes.extend_from_slice(TEMP_MARK);
    bytes.extend_from_slice(format!("-{random:016x}").as_bytes());
    bytes.extend_from_slice(TEMP_SUFFIX);
    OsString::from_vec(bytes)
}

/// Whether `name` is a temp file name this module makes, for any target.
/// For a directory whose writer cleans up everything at start-up (a backup
/// store).
pub fn is_temp_file_name(name: &OsStr) -> bool {
    let bytes = name.as_bytes();
    let Some(rest) = bytes
        .strip_prefix(b".")
        .and_then(|rest| rest.strip_suffix(TEMP_SUFFIX))
    else {
        return false;
    };
    let Some(random_at) = rest.len().checked_sub(TEMP_RANDOM_DIGITS) else {
        return false;
    };
    let (before, random) = rest.split_at(random_at);
    random.iter().all(u8::is_ascii_hexdigit)
        && before.ends_with(b".palisade-")
        && before.len() > b".palisade-".len()
}

/// Whether `name` is a temp file left for the target whose name starts
/// `stem`: `.<stem>.palisade…tmp`, which covers this module's names and the
/// fixed `.<name>.palisade.tmp` that earlier writers used.
fn is_leftover_of(name: &[u8], stem: &[u8]) -> bool {
    name.strip_prefix(b".")
        .and_then(|rest| rest.strip_prefix(stem))
        .and_then(|rest| rest.strip_prefix(TEMP_MARK))
        .is_some_and(|rest| rest.ends_with(TEMP_SUFFIX))
}

/// Remove the temp files a crash may have left for `path` (symlinks are
/// removed, never followed) and return them. Only for a target with a single
/// writer: another writer's temp file in flight would be removed too.
pub fn remove_leftover_temp_files(path: &Path) -> Result<Vec<PathBuf>, DurableError> {
    let Some(name) = path.file_name() else {
        return Ok(Vec::new());
    };
    let stem = temp_stem(name);
    let dir = parent_of(path);
    let mut removed = Vec::new();
    for entry in fs::read_dir(dir).map_err(DurableError::at(Step::ListDir, dir))? {
        let entry = entry.map_err(DurableError::at(Step::ListDir, dir))?;
        if !is_leftover_of(entry.file_name().as_bytes(), stem) {
            continue;
        }
        let leftover = entry.path();
        match fs::remove_file(&leftover) {
            Ok(()) => removed.push(leftover),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(DurableError::at(Step::RemoveLeftover, &leftover)(error)),
        }
    }
    Ok(removed)
}

/// Append `bytes` to `path` and fsync it. A missing file is created with
/// exactly `mode`, and its directory fsynced so that the new name survives
/// a crash too. An existing file keeps its mode (and a symlink is followed,
/// as for any append).
pub fn append(path: &Path, mode: u32, bytes: &[u8]) -> Result<(), DurableError> {
    let created = OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(mode)
        .open(path);
    let (mut file, created) = match created {
        Ok(file) => {
            file.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(DurableError::at(Step::SetMode, path))?;
            (file, true)
        }
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
            let file = OpenOptions::new()
                .append(true)
                .open(path)
                .map_err(DurableError::at(Step::Open, path))?;
            (file, false)
        }
        Err(error) => return Err(DurableError::at(Step::Create, path)(error)),
    };
    file.write_all(bytes)
        .map_err(DurableError::at(Step::Write, path))?;
    file.sync_all()
        .map_err(DurableError::at(Step::SyncFile, path))?;
    if created {
        fsync_dir(parent_of(path))?;
    }
    Ok(())
}

/// Rename `from` (a file or a directory) to `to`, failing with
/// [`io::ErrorKind::AlreadyExists`] instead of replacing anything at `to`,
/// which plain `rename(2)` would do (even to an empty directory). The caller
/// fsyncs the directory when the move must be durable.
pub fn rename_no_replace(from: &Path, to: &Path) -> Result<(), DurableError> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
        renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE)
            .map_err(|errno| DurableError::at(Step::Rename, to)(io::Error::from(errno)))
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        // Without renameat2 a name created between the check and the rename
        // is replaced; no caller races another writer for these names.
        match fs::symlink_metadata(to) {
            Ok(_) => Err(DurableError::at(Step::Rename, to)(io::Error::from(
                io::ErrorKind::AlreadyExists,
            ))),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                fs::rename(from, to).map_err(DurableError::at(Step::Rename, to))
            }
            Err(error) => Err(DurableError::at(Step::Rename, to)(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// What is at the target before the write.
    #[derive(Debug, Clone, Copy)]
    enum Before {
        Nothing,
        File,
        Directory,
        DanglingSymlink,
    }

    /// What the write must do.
    #[derive(Debug)]
    enum Expect {
        /// The target is a regular file with the new content and this mode.
        Written(u32),
        /// It fails at this step with this kind; the target is as it was.
        Fails(Step, io::ErrorKind),
    }

    #[test]
    fn atomic_write_table() {
        use Before::*;
        use Existing::*;
        let cases = [
            ("new file", Nothing, Replace, 0o600, Expect::Written(0o600)),
            (
                "new file, refuse",
                Nothing,
                Refuse,
                0o640,
                Expect::Written(0o640),
            ),
            // 0o664 comes out 0o644 under the usual umask without the chmod.
            (
                "replace a file",
                File,
                Replace,
                0o664,
                Expect::Written(0o664),
            ),
            ("executable", File, Replace, 0o755, Expect::Written(0o755)),
            (
                "refuse a file",
                File,
                Refuse,
                0o600,
                Expect::Fails(Step::Link, io::ErrorKind::AlreadyExists),
            ),
            (
                "replace a directory",
                Directory,
                Replace,
                0o600,
                Expect::Fails(Step::Rename, io::ErrorKind::IsADirectory),
            ),
            (
                "refuse a directory",
                Directory,
                Refuse,
                0o600,
                Expect::Fails(Step::Link, io::ErrorKind::AlreadyExists),
            ),
            // The link itself is replaced; its target is never created.
            (
                "replace a dangling symlink",
                DanglingSymlink,
                Replace,
                0o600,
                Expect::Written(0o600),
            ),
            (
                "refuse a dangling symlink",
                DanglingSymlink,
                Refuse,
                0o600,
                Expect::Fails(Step::Link, io::ErrorKind::AlreadyExists),
            ),
        ];
        for (name, before, existing, file_mode, expect) in cases {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("target");
            let nowhere = dir.path().join("nowhere");
            match before {
                Nothing => {}
                File => fs::write(&path, b"old").unwrap(),
                Directory => fs::create_dir(&path).unwrap(),
                DanglingSymlink => std::os::unix::fs::symlink(&nowhere, &path).unwrap(),
            }
            let before_entries = entries(dir.path());

            let result = AtomicWrite::new(file_mode, existing).write(&path, b"new");
            match expect {
                Expect::Written(expected_mode) => {
                    result.unwrap_or_else(|error| panic!("{name}: {error}"));
                    assert!(fs::symlink_metadata(&path).unwrap().is_file(), "{name}");
                    assert_eq!(fs::read(&path).unwrap(), b"new", "{name}");
                    assert_eq!(mode(&path), expected_mode, "{name}");
                    assert!(!nowhere.exists(), "{name}: followed the symlink");
                    assert_eq!(entries(dir.path()), ["target"], "{name}: temp file left");
                }
                Expect::Fails(step, kind) => {
                    let error = result.expect_err(name);
                    assert_eq!((error.step, error.kind()), (step, kind), "{name}: {error}");
                    assert_eq!(error.path, path, "{name}");
                    assert!(
                        error.to_string().contains(&path.display().to_string()),
                        "{name}: {error}"
                    );
                    assert_eq!(
                        entries(dir.path()),
                        before_entries,
                        "{name}: temp file left"
                    );
                    if let File = before {
                        assert_eq!(fs::read(&path).unwrap(), b"old", "{name}");
                    }
                }
            }
        }
    }

    #[test]
    fn failures_before_the_move_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        // A missing directory: nothing to create the temp file in.
        let path = dir.path().join("missing").join("target");
        let error = AtomicWrite::new(0o600, Existing::Replace)
            .write(&path, b"x")
            .unwrap_err();
        assert_eq!(
            (error.step, error.kind()),
            (Step::Create, io::ErrorKind::NotFound)
        );
        assert!(
            error.path.starts_with(dir.path().join("missing")),
            "{error}"
        );

        // Not a file path.
        let error = AtomicWrite::new(0o600, Existing::Replace)
            .write(Path::new("/"), b"x")
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);

        // A read-only directory (root writes there anyway).
        if !nix::unistd::geteuid().is_root() {
            let read_only = dir.path().join("read-only");
            fs::create_dir(&read_only).unwrap();
            fs::set_permissions(&read_only, fs::Permissions::from_mode(0o500)).unwrap();
            let error = AtomicWrite::new(0o600, Existing::Replace)
                .write(&read_only.join("target"), b"x")
                .unwrap_err();
            assert_eq!(
                (error.step, error.kind()),
                (Step::Create, io::ErrorKind::PermissionDenied)
            );
            fs::set_permissions(&read_only, fs::Permissions::from_mode(0o700)).unwrap();
            assert!(entries(&read_only).is_empty());
        }
    }

    #[test]
    fn a_staged_file_is_hidden_private_and_removed_unless_committed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("target");
        let mut staged = AtomicWrite::new(0o600, Existing::Refuse)
            .stage(&path)
            .unwrap();
        let temp = staged.temp_path().to_path_buf();
        assert_eq!(temp.parent(), Some(dir.path()));
        let temp_name = temp.file_name().unwrap();
        assert!(is_temp_file_name(temp_name), "{temp_name:?}");
        // The final mode before the first byte.
        assert_eq!(mode(&temp), 0o600);
        staged.write_all(b"half").unwrap();
        drop(staged);
        assert!(entries(dir.path()).is_empty());

        // Two stagings of one target never share a temp file.
        let first = AtomicWrite::new(0o600, Existing::Replace)
            .stage(&path)
            .unwrap();
        let second = AtomicWrite::new(0o600, Existing::Replace)
            .stage(&path)
            .unwrap();
        assert_ne!(first.temp_path(), second.temp_path());
        drop((first, second));

        // Committed with Refuse: only the target remains.
        let mut staged = AtomicWrite::new(0o640, Existing::Refuse)
            .stage(&path)
            .unwrap();
        staged.write_all(b"whole").unwrap();
        staged.commit().unwrap();
        assert_eq!(entries(dir.path()), ["target"]);
        assert_eq!(fs::read(&path).unwrap(), b"whole");
        assert_eq!(mode(&path), 0o640);
    }

    #[test]
    fn a_panicking_writer_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("target");
        let outcome = std::panic::catch_unwind(|| {
            let mut staged = AtomicWrite::new(0o600, Existing::Replace)
                .stage(&path)
                .unwrap();
            staged.write_all(b"partial").unwrap();
            panic!("the writer failed");
        });
        assert!(outcome.is_err());
        assert!(entries(dir.path()).is_empty());
    }

    #[test]
    fn the_owner_is_set_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("target");
        let (uid, gid) = if nix::unistd::geteuid().is_root() {
            (4242, 4243)
        } else {
            let metadata = fs::metadata(dir.path()).unwrap();
            (metadata.uid(), metadata.gid())
        };
        AtomicWrite::new(0o644, Existing::Replace)
            .owned_by(uid, gid)
            .write(&path, b"config")
            .unwrap();
        let metadata = fs::metadata(&path).unwrap();
        assert_eq!((metadata.uid(), metadata.gid()), (uid, gid));
        assert_eq!(mode(&path), 0o644);
    }

    #[test]
    fn temp_file_names_table() {
        let cases: &[(&str, bool)] = &[
            (".state.json.palisade-0123456789abcdef.tmp", true),
            (".a.palisade-FFFFFFFFFFFFFFFF.tmp", true),
            (".palisade-0123456789abcdef.tmp", false),
            ("state.json.palisade-0123456789abcdef.tmp", false),
            (".state.json.palisade-0123456789abcdeg.tmp", false),
            (".state.json.palisade-0123456789abcde.tmp", false),
            (".state.json.palisade.tmp", false),
            (".tmp-1-0-backup.age", false),
            ("backup-1.age", false),
        ];
        for (name, expected) in cases {
            assert_eq!(is_temp_file_name(OsStr::new(name)), *expected, "{name}");
        }
        let long = "x".repeat(255);
        let name = temp_name(OsStr::new(&long));
        assert_eq!(name.len(), 255);
        assert!(is_temp_file_name(&name));
    }

    #[test]
    fn leftovers_of_one_target_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let victim = dir.path().join("victim");
        fs::write(&victim, b"do not touch").unwrap();
        fs::write(&path, b"current").unwrap();
        let leftovers = [
            ".state.json.palisade-0123456789abcdef.tmp",
            ".state.json.palisade.tmp",
        ];
        for name in leftovers {
            fs::write(dir.path().join(name), b"partial").unwrap();
        }
        let symlink = ".state.json.palisade-fedcba9876543210.tmp";
        std::os::unix::fs::symlink(&victim, dir.path().join(symlink)).unwrap();
        let others = [
            ".other.json.palisade-0123456789abcdef.tmp",
            "state.json.1234567",
            ".state.json.swp",
        ];
        for name in others {
            fs::write(dir.path().join(name), b"not ours").unwrap();
        }

        let mut removed: Vec<String> = remove_leftover_temp_files(&path)
            .unwrap()
            .iter()
            .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        removed.sort();
        let mut expected = vec![leftovers[0], leftovers[1], symlink];
        expected.sort();
        assert_eq!(removed, expected);
        let mut remaining = vec!["state.json", "victim"];
        remaining.extend(others);
        remaining.sort();
        assert_eq!(entries(dir.path()), remaining);
        assert_eq!(fs::read(&victim).unwrap(), b"do not touch");
    }

    #[test]
    fn append_creates_with_the_mode_and_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.jsonl");
        append(&path, 0o644, b"one\n").unwrap();
        assert_eq!(mode(&path), 0o644);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        append(&path, 0o644, b"two\n").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"one\ntwo\n");
        assert_eq!(mode(&path), 0o640, "an existing file keeps its mode");

        let error = append(&dir.path().join("missing/records.jsonl"), 0o644, b"x").unwrap_err();
        assert_eq!(
            (error.step, error.kind()),
            (Step::Create, io::ErrorKind::NotFound)
        );
    }

    #[test]
    fn rename_no_replace_table() {
        // (what is at the destination, renamed?)
        let cases = [
            ("nothing", None, true),
            ("an empty directory", Some(true), false),
            ("a file", Some(false), false),
        ];
        for (name, destination, renamed) in cases {
            let dir = tempfile::tempdir().unwrap();
            let from = dir.path().join("staging");
            fs::create_dir(&from).unwrap();
            fs::write(from.join("inside"), b"x").unwrap();
            let to = dir.path().join("final");
            match destination {
                Some(true) => fs::create_dir(&to).unwrap(),
                Some(false) => fs::write(&to, b"y").unwrap(),
                None => {}
            }
            let result = rename_no_replace(&from, &to);
            if renamed {
                result.unwrap_or_else(|error| panic!("{name}: {error}"));
                assert!(to.join("inside").exists(), "{name}");
                assert!(!from.exists(), "{name}");
            } else {
                let error = result.expect_err(name);
                assert_eq!(
                    (error.step, error.kind(), error.path.as_path()),
                    (Step::Rename, io::ErrorKind::AlreadyExists, to.as_path()),
                    "{name}"
                );
                assert!(from.join("inside").exists(), "{name}");
            }
        }
    }

    #[test]
    fn fsync_dir_names_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        fsync_dir(dir.path()).unwrap();
        let missing = dir.path().join("missing");
        let error = fsync_dir(&missing).unwrap_err();
        assert_eq!(
            (error.step, error.path.as_path()),
            (Step::SyncDir, missing.as_path())
        );
        assert_eq!(
            error.to_string(),
            format!(
                "cannot fsync the directory {}: {}",
                missing.display(),
                error.source
            )
        );
        let io_error = io::Error::from(error);
        assert_eq!(io_error.kind(), io::ErrorKind::NotFound);
        assert!(io_error.to_string().contains("missing"), "{io_error}");
    }
}
