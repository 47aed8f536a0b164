//! Cosmovisor's folder layout under `$DAEMON_HOME/cosmovisor`:
//!
//! ```text
//! current -> genesis | upgrades/<name>      (relative symlink)
//! genesis/bin/$DAEMON_NAME
//! upgrades/<name>/bin/$DAEMON_NAME
//! upgrades/<name>/upgrade-info.json         (the plan that activated it)
//! ```
//!
//! Invariant: `current` is only ever replaced by renaming a fully formed new
//! symlink over it, so a crash at any instant leaves either the old or the
//! new target — never a missing or half-written link (Cosmovisor removes
//! the link and then creates a new one, which can leave no `current` at all).

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use palisade_daemon::durable::{self, AtomicWrite, DurableError, Existing};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::config::UpgradeNameCase;

/// Errors of layout operations; each names the path involved.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// An I/O operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// An atomic write or a directory fsync failed (the message names the
    /// step and the path).
    #[error(transparent)]
    Durable(#[from] DurableError),
    /// An upgrade name that cannot be a directory name.
    #[error("upgrade name {0:?} is not usable as a directory name")]
    BadUpgradeName(String),
    /// The daemon binary is missing from a version directory.
    #[error("binary {} does not exist", .0.display())]
    BinaryMissing(PathBuf),
    /// The daemon binary is not a regular file.
    #[error("{} is not a regular file", .0.display())]
    BinaryNotRegularFile(PathBuf),
    /// The daemon binary has no execute bit.
    #[error("binary {} is not executable (mode {mode:o})", path.display())]
    BinaryNotExecutable { path: PathBuf, mode: u32 },
    /// `add-upgrade` without `--force` on an existing upgrade.
    #[error("upgrade binary {} already exists; pass --force to replace it", .0.display())]
    UpgradeExists(PathBuf),
    /// `current` points somewhere Palisade does not manage.
    #[error("{} points to {}, which is neither genesis nor upgrades/<name>", link.display(), target.display())]
    CurrentOutsideLayout { link: PathBuf, target: PathBuf },
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> LayoutError + use<> {
    let path = path.to_path_buf();
    move |source| LayoutError::Io {
        action,
        path,
        source,
    }
}

/// Characters Go's `url.PathEscape` escapes: everything but ASCII
/// alphanumerics, `-_.~` and the sub-delimiters `$&+:=@`.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b':')
    .remove(b'=')
    .remove(b'@');

/// The directory name for an upgrade, as Cosmovisor computes it: optional
/// lower-casing, then `url.PathEscape`. Names that would escape `upgrades/`
/// (`.`/`..`) or are empty are refused.
pub fn upgrade_dir_name(name: &str, case: UpgradeNameCase) -> Result<String, LayoutError> {
    let name = match case {
        UpgradeNameCase::Lower => name.to_lowercase(),
        UpgradeNameCase::AsIs => name.to_string(),
    };
    let escaped = utf8_percent_encode(&name, PATH_SEGMENT).to_string();
    if escaped.is_empty() || escaped == "." || escaped == ".." {
        return Err(LayoutError::BadUpgradeName(name));
    }
    Ok(escaped)
}

/// Which version directory a path denotes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Version {
    Genesis,
    /// The escaped directory name under `upgrades/`.
    Upgrade(String),
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Version::Genesis => write!(f, "genesis"),
            Version::Upgrade(name) => write!(f, "upgrades/{name}"),
        }
    }
}

/// The layout of one `$DAEMON_HOME/cosmovisor` directory.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
    daemon_name: String,
}

impl Layout {
    pub fn new(daemon_home: &Path, daemon_name: &str) -> Layout {
        Layout {
            root: daemon_home.join("cosmovisor"),
            daemon_name: daemon_name.to_string(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn upgrades_dir(&self) -> PathBuf {
        self.root.join("upgrades")
    }

    pub fn current_link(&self) -> PathBuf {
        self.root.join("current")
    }

    /// The directory of a version.
    pub fn version_dir(&self, version: &Version) -> PathBuf {
        match version {
            Version::Genesis => self.root.join("genesis"),
            Version::Upgrade(name) => self.upgrades_dir().join(name),
        }
    }

    /// `<version dir>/bin/$DAEMON_NAME`.
    pub fn binary(&self, version: &Version) -> PathBuf {
        self.version_dir(version)
            .join("bin")
            .join(&self.daemon_name)
    }

    /// The version `current` points to. A missing `current` is created
    /// pointing at `genesis` (Cosmovisor does the same on first start).
    pub fn current_version(&self) -> Result<Version, LayoutError> {
        let link = self.current_link();
        let target = match fs::read_link(&link) {
            Ok(target) => target,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                self.switch_current(&Version::Genesis)?;
                return Ok(Version::Genesis);
            }
            Err(error) => return Err(io_error("cannot read symlink", &link)(error)),
        };
        // Older Cosmovisor versions wrote absolute targets; accept both.
        let relative = target
            .strip_prefix(&self.root)
            .map(Path::to_path_buf)
            .unwrap_or_else(|_| target.clone());
        let parts: Vec<Component<'_>> = relative.components().collect();
        match parts.as_slice() {
            [Component::Normal(genesis)] if *genesis == "genesis" => Ok(Version::Genesis),
            [Component::Normal(upgrades), Component::Normal(name)] if *upgrades == "upgrades" => {
                Ok(Version::Upgrade(name.to_string_lossy().into_owned()))
            }
            _ => Err(LayoutError::CurrentOutsideLayout { link, target }),
        }
    }

    /// Point `current` at `version` atomically: build a new relative
    /// symlink beside it, rename it over `current`, fsync the directory.
    pub fn switch_current(&self, version: &Version) -> Result<(), LayoutError> {
        let link = self.current_link();
        let target = match version {
            Version::Genesis => PathBuf::from("genesis"),
            Version::Upgrade(name) => Path::new("upgrades").join(name),
        };
        let staging = self
            .root
            .join(format!(".current.{}.tmp", std::process::id()));
        match fs::remove_file(&staging) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(io_error("cannot remove stale", &staging)(error)),
        }
        std::os::unix::fs::symlink(&target, &staging)
            .map_err(io_error("cannot create symlink", &staging))?;
        if let Err(error) = fs::rename(&staging, &link) {
            let _ = fs::remove_file(&staging);
            return Err(io_error("cannot rename symlink over", &link)(error));
        }
        fsync_dir(&self.root)
    }

    /// Check that a version's binary exists, is a regular file and is
    /// executable.
    pub fn check_binary(&self, version: &Version) -> Result<PathBuf, LayoutError> {
        let path = self.binary(version);
        check_executable(&path)?;
        Ok(path)
    }

    /// `init <binary>`: install the genesis binary and point `current` at
    /// it. Idempotent when the same binary is already installed.
    pub fn init(&self, binary: &Path) -> Result<InitOutcome, LayoutError> {
        check_executable(binary)?;
        let destination = self.binary(&Version::Genesis);
        let outcome = if destination.exists() {
            if same_contents(binary, &destination)? {
                InitOutcome::AlreadyInstalled
            } else {
                return Err(LayoutError::UpgradeExists(destination));
            }
        } else {
            install_binary(binary, &destination)?;
            InitOutcome::Installed
        };
        fs::create_dir_all(self.upgrades_dir())
            .map_err(io_error("cannot create", &self.upgrades_dir()))?;
        if fs::symlink_metadata(self.current_link()).is_err() {
            self.switch_current(&Version::Genesis)?;
        }
        Ok(outcome)
    }

    /// `add-upgrade <name> <binary> [--force]`: install an upgrade binary.
    pub fn add_upgrade(
        &self,
        dir_name: &str,
        binary: &Path,
        replace: ReplaceExisting,
    ) -> Result<PathBuf, LayoutError> {
        check_executable(binary)?;
        let destination = self.binary(&Version::Upgrade(dir_name.to_string()));
        if destination.exists() && replace == ReplaceExisting::No {
            return Err(LayoutError::UpgradeExists(destination));
        }
        install_binary(binary, &destination)?;
        Ok(destination)
    }
}

/// Result of [`Layout::init`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitOutcome {
    Installed,
    AlreadyInstalled,
}

/// Whether `add-upgrade` may replace an existing binary (`--force`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplaceExisting {
    No,
    Yes,
}

/// The binary must exist, be a regular file (symlinks are followed) and
/// carry an execute bit.
pub fn check_executable(path: &Path) -> Result<(), LayoutError> {
    let metadata = match fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return Err(LayoutError::BinaryMissing(path.to_path_buf()));
        }
        Err(error) => return Err(io_error("cannot stat", path)(error)),
    };
    if !metadata.is_file() {
        return Err(LayoutError::BinaryNotRegularFile(path.to_path_buf()));
    }
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o111 == 0 {
        return Err(LayoutError::BinaryNotExecutable {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

fn same_contents(a: &Path, b: &Path) -> Result<bool, LayoutError> {
    let left = fs::read(a).map_err(io_error("cannot read", a))?;
    let right = fs::read(b).map_err(io_error("cannot read", b))?;
    Ok(left == right)
}

/// Copy a binary into place atomically and durably, mode 0755.
fn install_binary(source: &Path, destination: &Path) -> Result<(), LayoutError> {
    let dir = destination.parent().expect("binary path has a parent");
    fs::create_dir_all(dir).map_err(io_error("cannot create", dir))?;
    let bytes = fs::read(source).map_err(io_error("cannot read", source))?;
    AtomicWrite::new(0o755, Existing::Replace).write(destination, &bytes)?;
    Ok(())
}

/// fsync a directory so a rename inside it is durable.
pub fn fsync_dir(dir: &Path) -> Result<(), LayoutError> {
    Ok(durable::fsync_dir(dir)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_names_are_escaped_like_go_path_escape() {
        let cases = [
            ("v2", UpgradeNameCase::Lower, Ok("v2")),
            ("V2-Gaia", UpgradeNameCase::Lower, Ok("v2-gaia")),
            ("V2-Gaia", UpgradeNameCase::AsIs, Ok("V2-Gaia")),
            ("a b/c?d", UpgradeNameCase::AsIs, Ok("a%20b%2Fc%3Fd")),
            ("x$&+:=@~._-", UpgradeNameCase::AsIs, Ok("x$&+:=@~._-")),
            ("semi;comma,", UpgradeNameCase::AsIs, Ok("semi%3Bcomma%2C")),
            ("ünï", UpgradeNameCase::AsIs, Ok("%C3%BCn%C3%AF")),
            ("..", UpgradeNameCase::AsIs, Err(())),
            (".", UpgradeNameCase::AsIs, Err(())),
            ("", UpgradeNameCase::AsIs, Err(())),
        ];
        for (name, case, expected) in cases {
            let got = upgrade_dir_name(name, case).map_err(|_| ());
            assert_eq!(got.as_deref(), expected.as_ref().map(|s| *s), "{name:?}");
        }
    }

    #[test]
    fn current_switch_is_relative_and_replaces_atomically() {
        let home = tempfile::tempdir().unwrap();
        let layout = Layout::new(home.path(), "gaiad");
        fs::create_dir_all(layout.version_dir(&Version::Genesis)).unwrap();
        assert_eq!(layout.current_version().unwrap(), Version::Genesis);
        assert_eq!(
            fs::read_link(layout.current_link()).unwrap(),
            PathBuf::from("genesis")
        );
        layout
            .switch_current(&Version::Upgrade("v2".into()))
            .unwrap();
        assert_eq!(
            fs::read_link(layout.current_link()).unwrap(),
            PathBuf::from("upgrades/v2")
        );
        assert_eq!(
            layout.current_version().unwrap(),
            Version::Upgrade("v2".into())
        );
        // No staging links left behind.
        let leftovers: Vec<_> = fs::read_dir(layout.root())
            .unwrap()
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn absolute_current_from_old_cosmovisor_is_understood() {
        let home = tempfile::tempdir().unwrap();
        let layout = Layout::new(home.path(), "gaiad");
        fs::create_dir_all(layout.upgrades_dir().join("v3")).unwrap();
        std::os::unix::fs::symlink(layout.upgrades_dir().join("v3"), layout.current_link())
            .unwrap();
        assert_eq!(
            layout.current_version().unwrap(),
            Version::Upgrade("v3".into())
        );
        fs::remove_file(layout.current_link()).unwrap();
        std::os::unix::fs::symlink("/usr/bin", layout.current_link()).unwrap();
        assert!(matches!(
            layout.current_version(),
            Err(LayoutError::CurrentOutsideLayout { .. })
        ));
    }

    #[test]
    fn binary_checks_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        assert!(matches!(
            check_executable(&missing),
            Err(LayoutError::BinaryMissing(_))
        ));
        let plain = dir.path().join("plain");
        fs::write(&plain, b"x").unwrap();
        fs::set_permissions(&plain, fs::Permissions::from_mode(0o644)).unwrap();
        let error = check_executable(&plain).unwrap_err().to_string();
        assert!(error.contains("is not executable (mode 644)"), "{error}");
        assert!(matches!(
            check_executable(dir.path()),
            Err(LayoutError::BinaryNotRegularFile(_))
        ));
    }

    #[test]
    fn init_and_add_upgrade() {
        let home = tempfile::tempdir().unwrap();
        let layout = Layout::new(home.path(), "gaiad");
        let binary = home.path().join("gaiad-src");
        fs::write(&binary, b"#!/bin/sh\n").unwrap();
        fs::set_permissions(&binary, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(layout.init(&binary).unwrap(), InitOutcome::Installed);
        assert_eq!(layout.init(&binary).unwrap(), InitOutcome::AlreadyInstalled);
        assert_eq!(layout.current_version().unwrap(), Version::Genesis);
        layout.check_binary(&Version::Genesis).unwrap();

        layout
            .add_upgrade("v2", &binary, ReplaceExisting::No)
            .unwrap();
        assert!(matches!(
            layout.add_upgrade("v2", &binary, ReplaceExisting::No),
            Err(LayoutError::UpgradeExists(_))
        ));
        layout
            .add_upgrade("v2", &binary, ReplaceExisting::Yes)
            .unwrap();
        layout.check_binary(&Version::Upgrade("v2".into())).unwrap();
    }
}
