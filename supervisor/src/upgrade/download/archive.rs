//! Format detection and safe unpacking of a downloaded, already verified
//! artifact into the staging tree (blocking; runs in `spawn_blocking`).
//!
//! Safety rules for archive entries:
//! - paths must be relative and free of `..`; absolute paths, backslashes
//!   and NUL are refused rather than sanitised;
//! - device files, fifos and sparse entries are refused;
//! - symlinks may not be absolute or contain `..`, so every link resolves
//!   at or below its own directory; they are created only after all files
//!   are written, so no write can ever follow a symlink out of the tree
//!   (files are also opened `O_NOFOLLOW | O_EXCL`);
//! - tar hard links must name a regular file already unpacked in the tree;
//! - total unpacked bytes and entry count are capped (zip/gzip bombs);
//! - modes are taken from the archive with setuid/setgid/sticky and
//!   group/other write removed; missing executable bits are never added.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use palisade_daemon::durable;

use super::{DownloadError, io_error};

/// What the downloaded artifact was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArtifactFormat {
    /// A bare executable, installed as `bin/$DAEMON_NAME` with mode 0755.
    Raw,
    Zip,
    TarGz,
}

impl fmt::Display for ArtifactFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ArtifactFormat::Raw => "raw",
            ArtifactFormat::Zip => "zip",
            ArtifactFormat::TarGz => "tar.gz",
        })
    }
}

/// Everything the blocking unpack step needs.
pub(super) struct UnpackRequest {
    pub artifact: PathBuf,
    /// Must not exist yet; becomes `upgrades/<name>`.
    pub tree: PathBuf,
    pub daemon_name: String,
    /// Redacted, for error messages.
    pub url: String,
    pub max_unpacked_bytes: u64,
    pub max_entries: u64,
}

/// Mode bits an unpacked file may keep: no setuid/setgid/sticky, no
/// group/other write.
const MODE_MASK: u32 = 0o755;
const DIR_MODE: u32 = 0o755;
/// Longest symlink target read from a zip entry.
const MAX_SYMLINK_TARGET: u64 = 4096;

/// Unpack `request.artifact` into `request.tree`, place the binary at
/// `bin/$DAEMON_NAME`, check it, and fsync the tree.
pub(super) fn unpack_and_check(request: &UnpackRequest) -> Result<ArtifactFormat, DownloadError> {
    let format = detect_format(&request.artifact, &request.url)?;
    unpack_as(request, format)?;
    Ok(format)
}

/// [`unpack_and_check`] with the format decided by the caller (a local
/// binary staged by path is installed as [`ArtifactFormat::Raw`], whatever
/// its first bytes look like).
pub(super) fn unpack_as(
    request: &UnpackRequest,
    format: ArtifactFormat,
) -> Result<(), DownloadError> {
    fs::DirBuilder::new()
        .mode(DIR_MODE)
        .create(&request.tree)
        .map_err(io_error("create", &request.tree))?;
    let bin_dir = request.tree.join("bin");
    match format {
        ArtifactFormat::Raw => {
            fs::DirBuilder::new()
                .mode(DIR_MODE)
                .create(&bin_dir)
                .map_err(io_error("create", &bin_dir))?;
            let binary = bin_dir.join(&request.daemon_name);
            fs::rename(&request.artifact, &binary).map_err(io_error("move into place", &binary))?;
            // A raw download is the binary itself: there is no archive mode
            // to respect, so it gets the usual 0755.
            fs::set_permissions(&binary, fs::Permissions::from_mode(0o755))
                .map_err(io_error("chmod", &binary))?;
        }
        ArtifactFormat::Zip | ArtifactFormat::TarGz => {
            let mut extractor = Extractor::new(request);
            if format == ArtifactFormat::Zip {
                extractor.unpack_zip(&request.artifact)?;
            } else {
                extractor.unpack_tar_gz(&request.artifact)?;
            }
            extractor.create_deferred_symlinks()?;
            move_root_binary_into_bin(&request.tree, &request.daemon_name)?;
        }
    }
    check_binary(&request.tree, &request.daemon_name)?;
    sync_tree(&request.tree)
}

fn detect_format(artifact: &Path, url: &str) -> Result<ArtifactFormat, DownloadError> {
    let mut head = Vec::with_capacity(512);
    File::open(artifact)
        .and_then(|file| file.take(512).read_to_end(&mut head))
        .map_err(io_error("read", artifact))?;
    let unsupported = |format| {
        Err(DownloadError::UnsupportedFormat {
            url: url.to_owned(),
            format,
        })
    };
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        Ok(ArtifactFormat::Zip)
    } else if head.starts_with(&[0x1f, 0x8b]) {
        Ok(ArtifactFormat::TarGz)
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        unsupported("xz")
    } else if head.starts_with(b"BZh") {
        unsupported("bzip2")
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        unsupported("zstd")
    } else if head.get(257..262) == Some(b"ustar") {
        unsupported("uncompressed tar")
    } else if head.is_empty() {
        Err(DownloadError::CorruptArchive {
            url: url.to_owned(),
            reason: "the download is empty".to_owned(),
        })
    } else {
        Ok(ArtifactFormat::Raw)
    }
}

/// Validate an archive entry path: relative, no `..`, no NUL or backslash.
/// Returns `None` for the archive root itself (`./`).
fn safe_relative_path(path: &Path) -> Result<Option<PathBuf>, String> {
    let text = path.to_string_lossy();
    if text.contains('\\') {
        return Err("contains a backslash".to_owned());
    }
    if text.contains('\0') {
        return Err("contains NUL".to_owned());
    }
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err("is an absolute path".to_owned());
            }
            Component::ParentDir => return Err("contains a '..' component".to_owned()),
        }
    }
    Ok(if clean.as_os_str().is_empty() {
        None
    } else {
        Some(clean)
    })
}

/// Symlink targets may only point at or below the link's own directory.
fn safe_symlink_target(target: &Path) -> Result<(), String> {
    if target.as_os_str().is_empty() {
        return Err("has an empty symlink target".to_owned());
    }
    if target.is_absolute() {
        return Err(format!(
            "is a symlink to the absolute path {}",
            target.display()
        ));
    }
    if target
        .components()
        .any(|component| component == Component::ParentDir)
    {
        return Err(format!(
            "is a symlink whose target {} contains '..'",
            target.display()
        ));
    }
    Ok(())
}

struct Extractor<'a> {
    request: &'a UnpackRequest,
    entries: u64,
    bytes: u64,
    /// (link path relative to the tree, target), created last.
    deferred_symlinks: Vec<(PathBuf, PathBuf)>,
}

enum EntryKind {
    Directory,
    File,
    Symlink(PathBuf),
    HardLink(PathBuf),
}

impl<'a> Extractor<'a> {
    fn new(request: &'a UnpackRequest) -> Self {
        Extractor {
            request,
            entries: 0,
            bytes: 0,
            deferred_symlinks: Vec::new(),
        }
    }

    fn corrupt(&self, reason: impl fmt::Display) -> DownloadError {
        DownloadError::CorruptArchive {
            url: self.request.url.clone(),
            reason: reason.to_string(),
        }
    }

    fn count_entry(&mut self) -> Result<(), DownloadError> {
        self.entries += 1;
        if self.entries > self.request.max_entries {
            return Err(DownloadError::ArchiveLimit {
                what: "entries",
                limit: self.request.max_entries,
            });
        }
        Ok(())
    }

    fn unpack_zip(&mut self, artifact: &Path) -> Result<(), DownloadError> {
        let file = File::open(artifact).map_err(io_error("open", artifact))?;
        let mut archive =
            zip::ZipArchive::new(BufReader::new(file)).map_err(|error| self.corrupt(error))?;
        if archive.len() as u64 > self.request.max_entries {
            return Err(DownloadError::ArchiveLimit {
                what: "entries",
                limit: self.request.max_entries,
            });
        }
        for index in 0..archive.len() {
            self.count_entry()?;
            let mut entry = archive
                .by_index(index)
                .map_err(|error| self.corrupt(error))?;
            let name = entry.name().to_owned();
            let unix_mode = entry.unix_mode();
            let file_type = unix_mode.map(|mode| mode & 0o170_000).unwrap_or(0);
            let kind = if entry.is_dir() {
                EntryKind::Directory
            } else if entry.is_symlink() {
                let mut target = Vec::new();
                (&mut entry)
                    .take(MAX_SYMLINK_TARGET)
                    .read_to_end(&mut target)
                    .map_err(|error| self.corrupt(format!("{name}: {error}")))?;
                EntryKind::Symlink(PathBuf::from(String::from_utf8_lossy(&target).into_owned()))
            } else if file_type == 0 || file_type == 0o100_000 {
                EntryKind::File
            } else {
                return Err(unsafe_entry(&name, "is a device file, fifo or socket"));
            };
            // Zip entries without Unix attributes (made on Windows) carry no
            // executable bit; 0644 makes the binary check refuse them.
            let mode = unix_mode.map(|mode| mode & 0o7777).unwrap_or(0o644);
            self.extract_entry(Path::new(&name), &name, kind, mode, &mut entry)?;
        }
        Ok(())
    }

    fn unpack_tar_gz(&mut self, artifact: &Path) -> Result<(), DownloadError> {
        let file = File::open(artifact).map_err(io_error("open", artifact))?;
        let mut archive =
            tar::Archive::new(flate2::read::MultiGzDecoder::new(BufReader::new(file)));
        for entry in archive.entries().map_err(|error| self.corrupt(error))? {
            let mut entry = entry.map_err(|error| self.corrupt(error))?;
            let entry_type = entry.header().entry_type();
            if entry_type == tar::EntryType::XGlobalHeader {
                continue;
            }
            self.count_entry()?;
            let path = entry
                .path()
                .map_err(|error| self.corrupt(error))?
                .into_owned();
            let name = path.to_string_lossy().into_owned();
            let link_name = || -> Result<PathBuf, DownloadError> {
                Ok(entry
                    .link_name()
                    .map_err(|error| self.corrupt(format!("{name}: {error}")))?
                    .ok_or_else(|| self.corrupt(format!("{name}: link without a target")))?
                    .into_owned())
            };
            let kind = match entry_type {
                tar::EntryType::Regular | tar::EntryType::Continuous => EntryKind::File,
                tar::EntryType::Directory => EntryKind::Directory,
                tar::EntryType::Symlink => EntryKind::Symlink(link_name()?),
                tar::EntryType::Link => EntryKind::HardLink(link_name()?),
                tar::EntryType::Char | tar::EntryType::Block => {
                    return Err(unsafe_entry(&name, "is a device file"));
                }
                tar::EntryType::Fifo => return Err(unsafe_entry(&name, "is a fifo")),
                other => {
                    return Err(unsafe_entry(
                        &name,
                        &format!("has unsupported tar entry type {other:?}"),
                    ));
                }
            };
            let mode = entry
                .header()
                .mode()
                .map_err(|error| self.corrupt(format!("{name}: {error}")))?;
            self.extract_entry(&path, &name, kind, mode, &mut entry)?;
        }
        Ok(())
    }

    fn extract_entry(
        &mut self,
        path: &Path,
        name: &str,
        kind: EntryKind,
        mode: u32,
        contents: &mut dyn Read,
    ) -> Result<(), DownloadError> {
        let relative =
            match safe_relative_path(path).map_err(|reason| unsafe_entry(name, &reason))? {
                Some(relative) => relative,
                None if matches!(kind, EntryKind::Directory) => return Ok(()),
                None => return Err(unsafe_entry(name, "names the archive root")),
            };
        let destination = self.request.tree.join(&relative);
        match kind {
            EntryKind::Directory => {
                create_dirs(&destination)?;
                fs::set_permissions(
                    &destination,
                    fs::Permissions::from_mode((mode & MODE_MASK) | 0o700),
                )
                .map_err(io_error("chmod", &destination))?;
            }
            EntryKind::File => {
                if let Some(parent) = destination.parent() {
                    create_dirs(parent)?;
                }
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(nix::libc::O_NOFOLLOW)
                    .open(&destination)
                    .map_err(|error| match error.kind() {
                        io::ErrorKind::AlreadyExists => {
                            unsafe_entry(name, "appears more than once")
                        }
                        _ => io_error("create", &destination)(error),
                    })?;
                self.copy_contents(name, contents, &mut file, &destination)?;
                file.set_permissions(fs::Permissions::from_mode(mode & MODE_MASK))
                    .map_err(io_error("chmod", &destination))?;
            }
            EntryKind::Symlink(target) => {
                safe_symlink_target(&target).map_err(|reason| unsafe_entry(name, &reason))?;
                self.deferred_symlinks.push((relative, target));
            }
            EntryKind::HardLink(target) => {
                let target_relative = safe_relative_path(&target)
                    .map_err(|reason| {
                        unsafe_entry(name, &format!("is a hard link whose target {reason}"))
                    })?
                    .ok_or_else(|| unsafe_entry(name, "is a hard link to the archive root"))?;
                let source = self.request.tree.join(target_relative);
                // No symlinks exist yet, so this cannot be redirected.
                match fs::symlink_metadata(&source) {
                    Ok(metadata) if metadata.is_file() => {}
                    _ => {
                        return Err(unsafe_entry(
                            name,
                            &format!(
                                "is a hard link to {}, which is not a file unpacked earlier",
                                target.display()
                            ),
                        ));
                    }
                }
                if let Some(parent) = destination.parent() {
                    create_dirs(parent)?;
                }
                fs::hard_link(&source, &destination)
                    .map_err(io_error("hard-link", &destination))?;
            }
        }
        Ok(())
    }

    /// Copy an entry's bytes, counting them against the unpacked-size cap
    /// as they are written (declared sizes are not trusted).
    fn copy_contents(
        &mut self,
        name: &str,
        contents: &mut dyn Read,
        file: &mut File,
        destination: &Path,
    ) -> Result<(), DownloadError> {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let read = match contents.read(&mut buffer) {
                Ok(0) => return Ok(()),
                Ok(read) => read,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(self.corrupt(format!("{name}: {error}"))),
            };
            self.bytes += read as u64;
            if self.bytes > self.request.max_unpacked_bytes {
                return Err(DownloadError::ArchiveLimit {
                    what: "unpacked bytes",
                    limit: self.request.max_unpacked_bytes,
                });
            }
            file.write_all(&buffer[..read])
                .map_err(io_error("write", destination))?;
        }
    }

    fn create_deferred_symlinks(&mut self) -> Result<(), DownloadError> {
        for (relative, target) in std::mem::take(&mut self.deferred_symlinks) {
            let destination = self.request.tree.join(&relative);
            if let Some(parent) = destination.parent() {
                create_dirs(parent)?;
            }
            std::os::unix::fs::symlink(&target, &destination).map_err(|error| {
                match error.kind() {
                    io::ErrorKind::AlreadyExists => {
                        unsafe_entry(&relative.to_string_lossy(), "appears more than once")
                    }
                    _ => io_error("create symlink", &destination)(error),
                }
            })?;
        }
        Ok(())
    }
}

fn unsafe_entry(name: &str, reason: &str) -> DownloadError {
    DownloadError::UnsafeArchiveEntry {
        entry: name.to_owned(),
        reason: reason.to_owned(),
    }
}

fn create_dirs(path: &Path) -> Result<(), DownloadError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
        .map_err(io_error("create", path))
}

/// Accept `$DAEMON_NAME` at the archive root as `bin/$DAEMON_NAME`.
fn move_root_binary_into_bin(tree: &Path, daemon_name: &str) -> Result<(), DownloadError> {
    let in_bin = tree.join("bin").join(daemon_name);
    let at_root = tree.join(daemon_name);
    if fs::symlink_metadata(&in_bin).is_ok() || fs::symlink_metadata(&at_root).is_err() {
        return Ok(());
    }
    let bin_dir = tree.join("bin");
    match fs::DirBuilder::new().mode(DIR_MODE).create(&bin_dir) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists && bin_dir.is_dir() => {}
        Err(error) => return Err(io_error("create", &bin_dir)(error)),
    }
    fs::rename(&at_root, &in_bin).map_err(io_error("move into bin/", &at_root))
}

fn check_binary(tree: &Path, daemon_name: &str) -> Result<(), DownloadError> {
    let binary = tree.join("bin").join(daemon_name);
    let metadata = match fs::symlink_metadata(&binary) {
        Ok(metadata) => metadata,
        Err(error)
            if error.kind() == io::ErrorKind::NotFound
                || error.raw_os_error() == Some(nix::libc::ENOTDIR) =>
        {
            let mut top_level: Vec<String> = fs::read_dir(tree)
                .map_err(io_error("list", tree))?
                .filter_map(|entry| {
                    entry
                        .ok()
                        .map(|entry| entry.file_name().to_string_lossy().into_owned())
                })
                .collect();
            top_level.sort();
            top_level.truncate(20);
            return Err(DownloadError::BinaryMissing {
                daemon_name: daemon_name.to_owned(),
                top_level,
            });
        }
        Err(error) => return Err(io_error("inspect", &binary)(error)),
    };
    let file_type = metadata.file_type();
    if !file_type.is_file() {
        let kind = if file_type.is_dir() {
            "directory"
        } else if file_type.is_symlink() {
            "symlink"
        } else {
            "special file"
        };
        return Err(DownloadError::BinaryNotRegularFile {
            daemon_name: daemon_name.to_owned(),
            kind,
        });
    }
    let mode = metadata.mode() & 0o7777;
    if mode & 0o111 == 0 {
        return Err(DownloadError::BinaryNotExecutable {
            daemon_name: daemon_name.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// fsync every file and directory of the tree (symlinks are not followed),
/// children before parents.
fn sync_tree(root: &Path) -> Result<(), DownloadError> {
    let mut directories = vec![root.to_path_buf()];
    let mut index = 0;
    while index < directories.len() {
        let directory = directories[index].clone();
        index += 1;
        for entry in fs::read_dir(&directory).map_err(io_error("list", &directory))? {
            let entry = entry.map_err(io_error("list", &directory))?;
            let file_type = entry
                .file_type()
                .map_err(io_error("inspect", &entry.path()))?;
            if file_type.is_dir() {
                directories.push(entry.path());
            } else if file_type.is_file() {
                let path = entry.path();
                File::open(&path)
                    .and_then(|file| file.sync_all())
                    .map_err(io_error("fsync", &path))?;
            }
        }
    }
    for directory in directories.iter().rev() {
        durable::fsync_dir(directory)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_path_validation_table() {
        let cases: &[(&str, Result<Option<&str>, &str>)] = &[
            ("bin/gaiad", Ok(Some("bin/gaiad"))),
            ("./bin/gaiad", Ok(Some("bin/gaiad"))),
            ("./", Ok(None)),
            ("/etc/passwd", Err("absolute")),
            ("bin/../../x", Err("'..'")),
            ("..", Err("'..'")),
            ("bin\\gaiad", Err("backslash")),
        ];
        for (input, expected) in cases {
            let result = safe_relative_path(Path::new(input));
            match (result, expected) {
                (Ok(got), Ok(want)) => assert_eq!(got, want.map(PathBuf::from), "{input}"),
                (Err(got), Err(fragment)) => assert!(got.contains(fragment), "{input}: {got}"),
                (got, want) => panic!("{input}: got {got:?}, expected {want:?}"),
            }
        }
    }

    #[test]
    fn symlink_target_validation_table() {
        for (target, ok) in [
            ("gaiad-v2", true),
            ("sub/gaiad", true),
            ("./gaiad", true),
            ("/usr/bin/gaiad", false),
            ("../x", false),
            ("a/../../x", false),
            ("", false),
        ] {
            assert_eq!(
                safe_symlink_target(Path::new(target)).is_ok(),
                ok,
                "{target:?}"
            );
        }
    }
}
