//! File operations the vault needs beyond `palisade_daemon::durable` (which
//! does its atomic writes and directory fsyncs): private directories,
//! bounded reads of secrets into zeroizing buffers, and destruction of files
//! by overwriting them with zeros before unlinking.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use nix::fcntl::OFlag;
use palisade_daemon::durable;
use zeroize::Zeroizing;

use super::VaultError;

/// Mode of every directory the vault creates.
pub(super) const PRIVATE_DIR_MODE: u32 = 0o700;
/// Mode of every file the vault creates.
pub(super) const PRIVATE_FILE_MODE: u32 = 0o600;

/// The directory holding `path` ("." for a bare file name).
pub(super) fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Checks that `path` is a real directory (not a symlink) owned by the
/// effective user with no group/other permission bits.
pub(super) fn check_private_dir(path: &Path) -> Result<(), VaultError> {
    check_key_dir(path, None)
}

/// [`check_private_dir`], except that with `group` (the node's, when it runs
/// under its own account) the directory may also be 0750 with that group,
/// as [`share_with_group`] leaves it: the node may list and read it, never
/// write it.
pub(super) fn check_key_dir(path: &Path, group: Option<u32>) -> Result<(), VaultError> {
    let metadata = fs::symlink_metadata(path).map_err(VaultError::io("inspect", path))?;
    let insecure = |reason: String| VaultError::InsecureDirectory {
        path: path.to_path_buf(),
        reason,
    };
    if metadata.file_type().is_symlink() {
        return Err(insecure("it is a symlink; give the real directory".into()));
    }
    if !metadata.is_dir() {
        return Err(insecure("it is not a directory".into()));
    }
    let euid = nix::unistd::geteuid().as_raw();
    if metadata.uid() != euid {
        return Err(insecure(format!(
            "it is owned by uid {}, not by this process (uid {euid})",
            metadata.uid()
        )));
    }
    let mode = metadata.mode() & 0o7777;
    let shared = group.is_some_and(|gid| metadata.gid() == gid && mode & 0o7027 == 0);
    if mode & 0o077 != 0 && !shared {
        return Err(insecure(match group {
            None => {
                format!("its mode is {mode:04o}; group and other must have no access (chmod 700)")
            }
            Some(gid) => format!(
                "its mode is {mode:04o} with group {}; only the node's group ({gid}) may read it, \
                 and nobody else may have access (chmod 750, chgrp {gid})",
                metadata.gid()
            ),
        }));
    }
    Ok(())
}

/// Gives `group` read access to `file` (0640) or a directory (0750): the
/// node's group, when the node runs under its own account and must read
/// the keys the supervisor writes for it.
pub(super) fn share_with_group(
    path: &Path,
    file: &File,
    group: u32,
    mode: u32,
) -> Result<(), VaultError> {
    std::os::unix::fs::fchown(file, None, Some(group)).map_err(VaultError::io("chgrp", path))?;
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(VaultError::io("chmod", path))
}

/// Refuses a `path` whose nearest existing parent other users may write to
/// (group or other write, sticky or not) or that belongs to someone else
/// than this process's user or root: there, anyone could create `path`
/// (or replace a missing parent) before the supervisor does.
pub(super) fn check_parent_not_shared(path: &Path) -> Result<(), VaultError> {
    let mut parent = parent_of(path);
    while fs::symlink_metadata(parent).is_err() {
        match parent.parent() {
            Some(up) if !up.as_os_str().is_empty() => parent = up,
            _ => return Ok(()),
        }
    }
    let metadata = fs::metadata(parent).map_err(VaultError::io("inspect", parent))?;
    let euid = nix::unistd::geteuid().as_raw();
    let mode = metadata.mode() & 0o7777;
    let problem = if metadata.uid() != euid && metadata.uid() != 0 {
        Some(format!(
            "it is owned by uid {}, neither this process's user (uid {euid}) nor root",
            metadata.uid()
        ))
    } else if mode & 0o022 != 0 {
        Some(format!("other users can write to it (mode {mode:04o})"))
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(reason) => Err(VaultError::InsecureDirectory {
            path: parent.to_path_buf(),
            reason: format!(
                "{reason}: anyone could create {} before the supervisor and make every unlock \
                 fail; set vault.tmpfs-dir inside a directory only this user or root can write, \
                 such as the default /run/palisade/keys (the unit's RuntimeDirectory)",
                path.display()
            ),
        }),
    }
}

/// Creates `path` as a 0700 directory (parents with default modes) or, if it
/// exists, checks it with [`check_private_dir`].
pub(super) fn ensure_private_dir(path: &Path) -> Result<(), VaultError> {
    match fs::symlink_metadata(path) {
        Ok(_) => check_private_dir(path),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            let parent = parent_of(path);
            fs::create_dir_all(parent).map_err(VaultError::io("create directory", parent))?;
            fs::DirBuilder::new()
                .mode(PRIVATE_DIR_MODE)
                .create(path)
                .map_err(VaultError::io("create directory", path))?;
            // The umask may have removed bits we asked for; set the exact mode.
            fs::set_permissions(path, fs::Permissions::from_mode(PRIVATE_DIR_MODE))
                .map_err(VaultError::io("chmod", path))?;
            durable::fsync_dir(parent)?;
            check_private_dir(path)
        }
        Err(error) => Err(VaultError::io("inspect", path)(error)),
    }
}

/// Creates `path` (0600, must not exist, symlinks not followed) and writes
/// `bytes` into it with an fsync. Used inside the tmpfs directory, where a
/// rename buys nothing and a temp file would be one more copy to wipe.
pub(super) fn write_new_private_file(path: &Path, bytes: &[u8]) -> Result<(), VaultError> {
    write_new_key_file(path, bytes, None)
}

/// [`write_new_private_file`]; with `group`, the file is 0640 for that group
/// ([`share_with_group`]) before the first byte is written.
pub(super) fn write_new_key_file(
    path: &Path,
    bytes: &[u8],
    group: Option<u32>,
) -> Result<(), VaultError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_FILE_MODE)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(path)
        .map_err(VaultError::io("create", path))?;
    file.set_permissions(fs::Permissions::from_mode(PRIVATE_FILE_MODE))
        .map_err(VaultError::io("chmod", path))?;
    if let Some(group) = group {
        share_with_group(path, &file, group, 0o640)?;
    }
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(VaultError::io("write", path))
}

/// Reads a regular file (symlinks refused) of at most `limit` bytes into a
/// zeroizing buffer allocated once, so no reallocation leaves copies behind.
pub(super) fn read_bounded(path: &Path, limit: usize) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    let file = open_regular_file(path, OpenOptions::new().read(true))?;
    // Two spare bytes: one to detect "too long", one so read_to_end never
    // needs its probe read into a stack buffer.
    let mut buffer = Zeroizing::new(Vec::with_capacity(limit + 2));
    file.take(limit as u64 + 1)
        .read_to_end(&mut buffer)
        .map_err(VaultError::io("read", path))?;
    if buffer.len() > limit {
        return Err(VaultError::NotRegularFile {
            path: path.to_path_buf(),
            reason: format!("it is larger than {limit} bytes"),
        });
    }
    Ok(buffer)
}

/// Opens `path` without following a final symlink and checks it is a regular file.
fn open_regular_file(path: &Path, options: &mut OpenOptions) -> Result<File, VaultError> {
    let file = options
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(path)
        .map_err(|error| {
            // O_NOFOLLOW on a symlink fails with ELOOP.
            if error.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32) {
                VaultError::NotRegularFile {
                    path: path.to_path_buf(),
                    reason: "it is a symlink; give the real file".into(),
                }
            } else {
                VaultError::io("open", path)(error)
            }
        })?;
    let metadata = file.metadata().map_err(VaultError::io("inspect", path))?;
    if !metadata.is_file() {
        return Err(VaultError::NotRegularFile {
            path: path.to_path_buf(),
            reason: "it is not a regular file".into(),
        });
    }
    Ok(file)
}

/// Destroys a file holding secrets: overwrites every byte with zeros in
/// place, fsyncs, unlinks, and fsyncs the directory.
///
/// On tmpfs this really erases the data. On disk filesystems it is best
/// effort (journals, copy-on-write and SSD wear levelling may keep old blocks).
pub(super) fn destroy_file(path: &Path) -> Result<(), VaultError> {
    let mut file = open_regular_file(path, OpenOptions::new().write(true))?;
    let length = file
        .metadata()
        .map_err(VaultError::io("inspect", path))?
        .len();
    let zeros = [0u8; 8192];
    let mut remaining = length;
    while remaining > 0 {
        let chunk = remaining.min(zeros.len() as u64) as usize;
        file.write_all(&zeros[..chunk])
            .map_err(VaultError::io("overwrite", path))?;
        remaining -= chunk as u64;
    }
    file.sync_all().map_err(VaultError::io("fsync", path))?;
    drop(file);
    fs::remove_file(path).map_err(VaultError::io("remove", path))?;
    Ok(durable::fsync_dir(parent_of(path))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Finding 5 (issue 16): the key directory's parent must not be
    /// writable by others, or anyone could create the directory first.
    #[test]
    fn a_key_directory_in_a_shared_parent_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::Builder::new()
            .prefix("palisade-parent-")
            .tempdir_in("/dev/shm")
            .unwrap();
        let private = root.path().join("private");
        fs::create_dir(&private).unwrap();
        fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();
        let shared = root.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
        let group = root.path().join("group");
        fs::create_dir(&group).unwrap();
        fs::set_permissions(&group, fs::Permissions::from_mode(0o770)).unwrap();
        // (key directory, refused?, words)
        let mut table: Vec<(std::path::PathBuf, bool, &str)> = vec![
            (private.join("keys"), false, ""),
            // Missing levels: the nearest existing parent counts.
            (private.join("a/b/keys"), false, ""),
            (
                shared.join("keys"),
                true,
                "other users can write to it (mode 1777)",
            ),
            (group.join("keys"), true, "mode 0770"),
            (
                std::path::PathBuf::from("/dev/shm/palisade-keys"),
                true,
                "/run/palisade/keys",
            ),
        ];
        if nix::unistd::geteuid().is_root() {
            let foreign = root.path().join("foreign");
            fs::create_dir(&foreign).unwrap();
            fs::set_permissions(&foreign, fs::Permissions::from_mode(0o755)).unwrap();
            std::os::unix::fs::chown(&foreign, Some(65534), None).unwrap();
            table.push((foreign.join("keys"), true, "owned by uid 65534"));
        }
        for (dir, refused, words) in table {
            match check_parent_not_shared(&dir) {
                Ok(()) => assert!(!refused, "{} accepted", dir.display()),
                Err(error) => {
                    let message = error.to_string();
                    assert!(refused, "{}: {message}", dir.display());
                    assert!(message.contains(words), "{words:?} not in {message}");
                }
            }
        }
    }

    #[test]
    fn destroy_overwrites_then_unlinks_and_refuses_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("secret");
        fs::write(&target, b"secret bytes").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(
            destroy_file(&link),
            Err(VaultError::NotRegularFile { .. })
        ));
        assert_eq!(fs::read(&target).unwrap(), b"secret bytes");
        // A hard link lets the test see the bytes after the unlink.
        let witness = dir.path().join("witness");
        fs::hard_link(&target, &witness).unwrap();
        destroy_file(&target).unwrap();
        assert!(!target.exists());
        assert_eq!(fs::read(&witness).unwrap(), vec![0u8; 12]);
    }

    #[test]
    fn bounded_read_refuses_oversized_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        fs::write(&path, vec![b'x'; 11]).unwrap();
        assert!(matches!(
            read_bounded(&path, 10),
            Err(VaultError::NotRegularFile { .. })
        ));
        assert_eq!(read_bounded(&path, 11).unwrap().len(), 11);
    }

    #[test]
    fn private_dir_check_rejects_group_access_and_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("private");
        ensure_private_dir(&private).unwrap();
        assert_eq!(fs::metadata(&private).unwrap().mode() & 0o777, 0o700);
        fs::set_permissions(&private, fs::Permissions::from_mode(0o750)).unwrap();
        assert!(matches!(
            check_private_dir(&private),
            Err(VaultError::InsecureDirectory { .. })
        ));
        fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&private, &link).unwrap();
        assert!(matches!(
            ensure_private_dir(&link),
            Err(VaultError::InsecureDirectory { .. })
        ));
    }
}
