//! Decrypted keys in a private tmpfs directory, for exactly as long as gaiad
//! runs.
//!
//! [`materialize`] writes each imported key (0600) into a 0700 directory on
//! tmpfs or ramfs — never a disk filesystem — and points the daemon's
//! `config.toml` (`priv_validator_key_file`, `node_key_file`) at them.
//! [`TmpfsKeys::wipe`] (or its `Drop`) overwrites them with zeros and removes
//! them; [`wipe_leftovers`] does the same at start-up after a crash.
//!
//! `config.toml` is deliberately **left pointing at the tmpfs paths** after a
//! wipe: a gaiad started without Palisade then fails to find its keys instead
//! of silently using a stale plaintext copy from `config/`.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sys::statfs::{self, FsType};
use palisade_daemon::durable;

use crate::node::config_toml::ConfigToml;

use super::secure_fs;
use super::{KeyKind, UnlockedVault, VaultError};

/// Marker written into a tmpfs directory created by [`materialize`]. Its
/// presence tells [`wipe_leftovers`] that every file there is ours to wipe;
/// without it only the known key file names are touched, so a misconfigured
/// path (say, a shared runtime directory) never loses unrelated files.
pub const TMPFS_MARKER_FILE: &str = ".palisade-tmpfs-keys";

/// Decrypted key files in a tmpfs directory. Wiped by [`TmpfsKeys::wipe`], or
/// on drop as a fallback (errors then only logged).
pub struct TmpfsKeys {
    dir: PathBuf,
    files: Vec<(KeyKind, PathBuf)>,
    wiped: bool,
}

impl fmt::Debug for TmpfsKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Paths only: the contents never leave the files.
        f.debug_struct("TmpfsKeys")
            .field("dir", &self.dir)
            .field("files", &self.files)
            .field("wiped", &self.wiped)
            .finish()
    }
}

impl TmpfsKeys {
    /// The tmpfs directory (absolute).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The decrypted file of `kind`, if materialized.
    pub fn path(&self, kind: KeyKind) -> Option<&Path> {
        self.files
            .iter()
            .find(|(candidate, _)| *candidate == kind)
            .map(|(_, path)| path.as_path())
    }

    /// Every decrypted file.
    pub fn files(&self) -> impl Iterator<Item = (KeyKind, &Path)> {
        self.files
            .iter()
            .map(|(kind, path)| (*kind, path.as_path()))
    }

    /// Overwrites every file written by [`materialize`] with zeros, fsyncs,
    /// unlinks, and removes the directory (left in place, with a warning, if
    /// it holds entries Palisade did not write). Returns the wiped key files. `config.toml` keeps pointing
    /// at the (now missing) tmpfs paths.
    pub fn wipe(mut self) -> Result<Vec<PathBuf>, VaultError> {
        self.wiped = true;
        self.wipe_own_files()
    }

    fn wipe_own_files(&self) -> Result<Vec<PathBuf>, VaultError> {
        let files: Vec<PathBuf> = self.files.iter().map(|(_, path)| path.clone()).collect();
        wipe_directory(&self.dir, WipeScope::Files(&files))
    }
}

impl Drop for TmpfsKeys {
    fn drop(&mut self) {
        if self.wiped {
            return;
        }
        self.wiped = true;
        match self.wipe_own_files() {
            Ok(wiped) => tracing::warn!(
                dir = %self.dir.display(),
                files = wiped.len(),
                "decrypted keys wiped on drop (wipe() was not called)"
            ),
            Err(error) => tracing::error!(
                dir = %self.dir.display(),
                error = %error,
                "failed to wipe decrypted keys on drop"
            ),
        }
    }
}

/// Decrypts every key in `vault` into `tmpfs_dir` and points
/// `daemon_home/config/config.toml` at them.
///
/// Refuses unless `tmpfs_dir` is (or would be created) on tmpfs or ramfs.
/// The directory is created 0700; an existing one must be a directory owned
/// by this user with no group/other access. Key files are created 0600 and
/// must not already exist (run [`wipe_leftovers`] first after a crash).
/// `config.toml` is parsed before any key is written; its comments, layout,
/// mode and owner are preserved, and it is replaced atomically.
///
/// With `node_group` (the node runs under its own account, `[daemon] user`)
/// the directory is 0750 and the key files 0640 for that group: the node
/// reads them and can change none of them.
pub fn materialize(
    vault: &UnlockedVault,
    tmpfs_dir: &Path,
    daemon_home: &Path,
    node_group: Option<u32>,
) -> Result<TmpfsKeys, VaultError> {
    let kinds: Vec<KeyKind> = KeyKind::ALL
        .into_iter()
        .filter(|kind| vault.info().has_key(*kind))
        .collect();
    if kinds.is_empty() {
        return Err(VaultError::NoKeysImported {
            dir: vault.dir().to_path_buf(),
        });
    }

    check_ram_filesystem(nearest_existing(tmpfs_dir))?;
    // A directory that others may write to (/dev/shm, /tmp) lets any local
    // user create the key directory first and make every unlock fail.
    secure_fs::check_parent_not_shared(tmpfs_dir)?;
    // Fail on a bad config.toml before a single key is decrypted.
    let mut config = ConfigToml::open(daemon_home)?;

    match fs::symlink_metadata(tmpfs_dir) {
        Ok(_) => secure_fs::check_key_dir(tmpfs_dir, node_group)?,
        Err(_) => secure_fs::ensure_private_dir(tmpfs_dir)?,
    }
    let dir = fs::canonicalize(tmpfs_dir).map_err(VaultError::io("resolve", tmpfs_dir))?;
    // A mount point at tmpfs_dir itself, or a symlinked parent, is checked here.
    check_ram_filesystem(&dir)?;
    secure_fs::check_key_dir(&dir, node_group)?;
    if let Some(group) = node_group {
        let handle = fs::File::open(&dir).map_err(VaultError::io("open", &dir))?;
        secure_fs::share_with_group(&dir, &handle, group, 0o750)?;
    }

    // Leftovers from a crash are refused before anything is written, so the
    // wipe-on-error below only ever touches files this call created.
    for kind in &kinds {
        let path = dir.join(kind.file_name());
        if fs::symlink_metadata(&path).is_ok() {
            return Err(VaultError::TmpfsFileExists { path });
        }
    }
    let mut keys = TmpfsKeys {
        dir: dir.clone(),
        files: Vec::with_capacity(kinds.len()),
        wiped: false,
    };
    let marker = dir.join(TMPFS_MARKER_FILE);
    if fs::symlink_metadata(&marker).is_err() {
        secure_fs::write_new_private_file(
            &marker,
            b"Palisade: decrypted validator keys; wiped when the node stops.\n",
        )?;
    }
    for kind in kinds {
        let path = dir.join(kind.file_name());
        let plaintext = vault.decrypt_key(kind)?;
        secure_fs::write_new_key_file(&path, &plaintext, node_group).map_err(
            |error| match error {
                VaultError::Io { source, .. } if source.kind() == io::ErrorKind::AlreadyExists => {
                    VaultError::TmpfsFileExists { path: path.clone() }
                }
                other => other,
            },
        )?;
        keys.files.push((kind, path));
    }
    durable::fsync_dir(&dir)?;

    for (kind, path) in &keys.files {
        let Some(path) = path.to_str() else {
            return Err(VaultError::NotRegularFile {
                path: path.clone(),
                reason: "the path is not UTF-8, so config.toml cannot name it".into(),
            });
        };
        config.set(None, kind.config_key(), path)?;
    }
    let config_path = config.path().to_path_buf();
    config.save()?;
    tracing::info!(
        dir = %dir.display(),
        files = keys.files.len(),
        config = %config_path.display(),
        "decrypted keys placed in tmpfs"
    );
    Ok(keys)
}

/// Start-up cleanup after a crash or SIGKILL: wipes decrypted keys left in
/// `tmpfs_dir` (zeros, fsync, unlink) and removes the directory. Returns the
/// files wiped; a missing directory is not an error.
///
/// In a directory carrying [`TMPFS_MARKER_FILE`] every regular file is wiped
/// and symlinks are unlinked; without the marker only `priv_validator_key.json`
/// and `node_key.json` are. Subdirectories are never entered; if anything
/// remains, the directory is left in place (and logged).
pub fn wipe_leftovers(tmpfs_dir: &Path) -> Result<Vec<PathBuf>, VaultError> {
    // A directory others could have created first is refused with the way
    // out, before its owner is even looked at.
    secure_fs::check_parent_not_shared(tmpfs_dir)?;
    match fs::symlink_metadata(tmpfs_dir) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(VaultError::io("inspect", tmpfs_dir)(error)),
        Ok(metadata) if metadata.file_type().is_symlink() || !metadata.is_dir() => {
            return Err(VaultError::InsecureDirectory {
                path: tmpfs_dir.to_path_buf(),
                reason: "it is not a directory (or is a symlink); refusing to wipe through it"
                    .into(),
            });
        }
        Ok(metadata) if metadata.uid() != nix::unistd::geteuid().as_raw() => {
            return Err(VaultError::InsecureDirectory {
                path: tmpfs_dir.to_path_buf(),
                reason: format!("it is owned by uid {}, not by this process", metadata.uid()),
            });
        }
        Ok(_) => {}
    }
    let wiped = wipe_directory(tmpfs_dir, WipeScope::Leftovers)?;
    if !wiped.is_empty() {
        tracing::warn!(
            dir = %tmpfs_dir.display(),
            files = ?wiped,
            "wiped decrypted keys left over from a previous run"
        );
    }
    Ok(wiped)
}

/// Which entries of the tmpfs directory a wipe destroys.
#[derive(Debug, Clone, Copy)]
enum WipeScope<'a> {
    /// Exactly these files (what one [`TmpfsKeys`] wrote).
    Files(&'a [PathBuf]),
    /// Everything if the marker is present, else only known key file names.
    Leftovers,
}

/// Wipes the entries of `dir` selected by `scope` (zeros, fsync, unlink;
/// symlinks only unlinked, subdirectories never entered), then removes the
/// marker and the directory if nothing else is left. Returns the wiped files.
fn wipe_directory(dir: &Path, scope: WipeScope<'_>) -> Result<Vec<PathBuf>, VaultError> {
    let marker = dir.join(TMPFS_MARKER_FILE);
    let ours_entirely = fs::symlink_metadata(&marker).is_ok();
    let mut wiped = Vec::new();
    let mut first_error = None;
    for (path, file_type) in list_entries(dir)? {
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("");
        let selected = match scope {
            WipeScope::Files(files) => files.contains(&path),
            WipeScope::Leftovers => {
                ours_entirely || KeyKind::ALL.iter().any(|kind| kind.file_name() == name)
            }
        };
        if name == TMPFS_MARKER_FILE || !selected {
            continue;
        }
        let result = if file_type.is_file() {
            secure_fs::destroy_file(&path).map(|()| wiped.push(path.clone()))
        } else if file_type.is_symlink() {
            fs::remove_file(&path).map_err(VaultError::io("remove", &path))
        } else {
            Ok(())
        };
        // Keep wiping the others; report the first failure.
        if let Err(error) = result {
            first_error.get_or_insert(error);
        }
    }
    if let Some(error) = first_error {
        return Err(error);
    }
    let remaining: Vec<PathBuf> = list_entries(dir)?
        .into_iter()
        .map(|(path, _)| path)
        .filter(|path| *path != marker)
        .collect();
    if remaining.is_empty() {
        if ours_entirely {
            fs::remove_file(&marker).map_err(VaultError::io("remove", &marker))?;
        }
        fs::remove_dir(dir).map_err(VaultError::io("remove directory", dir))?;
        durable::fsync_dir(secure_fs::parent_of(dir))?;
    } else {
        tracing::warn!(
            dir = %dir.display(),
            remaining = ?remaining,
            "tmpfs key directory left in place: it holds entries Palisade did not write"
        );
    }
    Ok(wiped)
}

/// The entries of `dir`, sorted by path.
fn list_entries(dir: &Path) -> Result<Vec<(PathBuf, fs::FileType)>, VaultError> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(VaultError::io("list", dir))? {
        let entry = entry.map_err(VaultError::io("list", dir))?;
        let file_type = entry
            .file_type()
            .map_err(VaultError::io("inspect", &entry.path()))?;
        entries.push((entry.path(), file_type));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(entries)
}

/// The closest ancestor of `path` (or `path` itself) that exists.
fn nearest_existing(path: &Path) -> &Path {
    path.ancestors()
        .find(|candidate| !candidate.as_os_str().is_empty() && candidate.exists())
        .unwrap_or(Path::new("."))
}

/// Refuses unless `path` is on tmpfs or ramfs.
fn check_ram_filesystem(path: &Path) -> Result<(), VaultError> {
    let stat = statfs::statfs(path)
        .map_err(|errno| VaultError::io("statfs", path)(io::Error::from(errno)))?;
    let filesystem = stat.filesystem_type();
    if [TMPFS_MAGIC, RAMFS_MAGIC].contains(&magic_number(filesystem)) {
        Ok(())
    } else {
        Err(VaultError::NotTmpfs {
            path: path.to_path_buf(),
            filesystem: filesystem_name(filesystem),
        })
    }
}

/// `TMPFS_MAGIC` from `linux/magic.h`.
const TMPFS_MAGIC: u64 = 0x0102_1994;
/// `RAMFS_MAGIC` from `linux/magic.h` (nix has no constant for it).
const RAMFS_MAGIC: u64 = 0x8584_58F6;

/// The 32-bit magic number, whatever the width and signedness of `f_type`.
fn magic_number(filesystem: FsType) -> u64 {
    #[allow(clippy::unnecessary_cast)] // the field's type differs across targets
    let raw = filesystem.0 as u64;
    raw & 0xFFFF_FFFF
}

/// A human name for common filesystem magic numbers.
fn filesystem_name(filesystem: FsType) -> String {
    let magic = magic_number(filesystem);
    let name = match magic {
        0xEF53 => "ext2/ext3/ext4",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x794C_7630 => "overlayfs",
        0x2FC1_2FC1 => "zfs",
        0x6969 => "nfs",
        0xFF53_4D42 | 0xFE53_4D42 => "cifs/smb",
        0x6573_5546 => "fuse",
        0xF15F => "ecryptfs",
        0x4D44 => "vfat",
        0x5346_544E => "ntfs",
        0xCA45_1A4E => "bcachefs",
        TMPFS_MAGIC => "tmpfs",
        RAMFS_MAGIC => "ramfs",
        _ => return format!("filesystem type {magic:#x}"),
    };
    format!("{name} (type {magic:#x})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_edit_keeps_comments_and_layout() {
        let text = "# top comment\nmoniker = \"val\"\n\n# key file, relative to home\npriv_validator_key_file = \"config/priv_validator_key.json\"   # trailing\n\n[p2p]\n# p2p comment\nladdr = \"tcp://0.0.0.0:26656\"\n";
        let home = tempfile::tempdir().unwrap();
        fs::create_dir(home.path().join("config")).unwrap();
        fs::write(home.path().join("config/config.toml"), text).unwrap();
        let mut config = ConfigToml::open(home.path()).unwrap();
        let pv = "/dev/shm/keys/priv_validator_key.json";
        let nk = "/dev/shm/keys/node_key.json";
        assert!(config.set(None, "priv_validator_key_file", pv).unwrap());
        assert!(config.set(None, "node_key_file", nk).unwrap());
        assert!(!config.set(None, "node_key_file", nk).unwrap());
        config.save().unwrap();
        assert_eq!(
            fs::read_to_string(home.path().join("config/config.toml")).unwrap(),
            "# top comment\nmoniker = \"val\"\n\n# key file, relative to home\npriv_validator_key_file = \"/dev/shm/keys/priv_validator_key.json\"   # trailing\nnode_key_file = \"/dev/shm/keys/node_key.json\"\n\n[p2p]\n# p2p comment\nladdr = \"tcp://0.0.0.0:26656\"\n"
        );
        // A table where a path belongs is refused, not replaced.
        fs::write(
            home.path().join("config/config.toml"),
            "[node_key_file]\na = 1\n",
        )
        .unwrap();
        let mut config = ConfigToml::open(home.path()).unwrap();
        assert!(config.set(None, "node_key_file", nk).is_err());
    }

    #[test]
    fn filesystem_names() {
        assert_eq!(
            filesystem_name(statfs::TMPFS_MAGIC),
            "tmpfs (type 0x1021994)"
        );
        assert!(filesystem_name(statfs::EXT4_SUPER_MAGIC).starts_with("ext2/ext3/ext4"));
    }

    #[test]
    fn nearest_existing_ancestor() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        assert_eq!(nearest_existing(&deep), dir.path());
    }
}
