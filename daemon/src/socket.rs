//! Binding a private Unix socket: the supervisor's control socket and the
//! bastion's backup-store socket.
//!
//! Invariants:
//! - the socket is mode 0600, in a directory that is created 0700 when
//!   missing and is refused when others (or, with [`DirAccess::Owner`],
//!   the group too) can reach it;
//! - a leftover socket nobody listens on is replaced; a live socket (another
//!   instance) or a file that is not a socket is never touched;
//! - [`bind_for_group`] alone opens a socket to one group (mode 0660), in a
//!   directory others cannot reach.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, bail};
use tokio::net::UnixListener;

/// Who besides the owner may reach the socket's directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirAccess {
    /// Nobody: the directory must not be accessible to group or others.
    Owner,
    /// The directory's group too (e.g. an operators' group); never others.
    OwnerAndGroup,
}

impl DirAccess {
    fn forbidden_bits(self) -> u32 {
        match self {
            DirAccess::Owner => 0o077,
            DirAccess::OwnerAndGroup => 0o007,
        }
    }

    fn forbidden_to(self) -> &'static str {
        match self {
            DirAccess::Owner => "group or others (chmod 0700",
            DirAccess::OwnerAndGroup => "others (chmod o-rwx",
        }
    }
}

/// Bind `path` as a private socket (see the module invariants). `what`
/// names it in errors and logs, e.g. "control socket".
pub fn bind_private(path: &Path, what: &str, access: DirAccess) -> anyhow::Result<UnixListener> {
    let parent = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .with_context(|| format!("the {what} {} has no parent directory", path.display()))?;
    if !parent.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .with_context(|| format!("creating directory {}", parent.display()))?;
    }
    let metadata =
        std::fs::metadata(parent).with_context(|| format!("inspecting {}", parent.display()))?;
    if !metadata.is_dir() {
        bail!("{} is not a directory", parent.display());
    }
    let mode = metadata.permissions().mode();
    if mode & access.forbidden_bits() != 0 {
        bail!(
            "the {what}'s directory {} has mode {:o}: it must not be accessible to {}, or \
             RuntimeDirectoryMode=0700 under systemd)",
            parent.display(),
            mode & 0o7777,
            access.forbidden_to()
        );
    }
    match std::fs::symlink_metadata(path) {
        Ok(metadata) if metadata.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => bail!(
                    "another process is listening on {}: is another instance already running? \
                     Not replacing the {what}",
                    path.display()
                ),
                Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {
                    tracing::info!(socket = %path.display(), "replacing a stale {what}");
                    std::fs::remove_file(path)
                        .with_context(|| format!("removing stale socket {}", path.display()))?;
                }
                Err(error) => {
                    return Err(error)
                        .with_context(|| format!("probing existing socket {}", path.display()));
                }
            }
        }
        Ok(_) => bail!(
            "{} exists and is not a socket; not replacing it",
            path.display()
        ),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(error).with_context(|| format!("inspecting {}", path.display())),
    }
    let listener = std::os::unix::net::UnixListener::bind(path)
        .with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("setting mode 0600 on {}", path.display()))?;
    listener.set_nonblocking(true)?;
    Ok(UnixListener::from_std(listener)?)
}

/// Bind `path` like [`bind_private`] (its directory reachable by owner and
/// group only), then give it to group `gid` with mode 0660: for a socket
/// that exactly one other account, whose primary group is `gid`, must
/// reach (the bastion's backup store and the tunnel user's sessions).
///
/// When the directory is setgid and owned by `gid`, the socket inherits
/// the group and nothing is changed; otherwise the group is changed, which
/// works when this process is a member of `gid` (or root). When it fails,
/// the socket is removed and the error says how to set the directory up.
pub fn bind_for_group(path: &Path, what: &str, gid: u32) -> anyhow::Result<UnixListener> {
    use std::os::unix::fs::MetadataExt;
    let listener = bind_private(path, what, DirAccess::OwnerAndGroup)?;
    // Inherited from a setgid directory: no chown at all (the bastion's unit
    // filters @privileged system calls, chown among them).
    let inherited = std::fs::metadata(path).is_ok_and(|metadata| metadata.gid() == gid);
    let changed = if inherited {
        Ok(())
    } else {
        std::os::unix::fs::chown(path, None, Some(gid))
    };
    let shared = changed
        .with_context(|| {
            format!(
                "giving the {what} {} to group {gid}: make its directory setgid and owned by \
                 that group (chgrp {gid} DIR && chmod 2750 DIR; the packaged tmpfiles.d line \
                 does this), or run as a member of the group",
                path.display()
            )
        })
        .and_then(|()| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
                .with_context(|| format!("setting mode 0660 on {}", path.display()))
        });
    match shared {
        Ok(()) => Ok(listener),
        Err(error) => {
            drop(listener);
            let _ = std::fs::remove_file(path);
            Err(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    /// (directory mode, access, binds?) — a refused bind creates nothing.
    #[tokio::test]
    async fn directory_modes_table() {
        let cases = [
            (0o700, DirAccess::Owner, true),
            (0o750, DirAccess::Owner, false),
            (0o705, DirAccess::Owner, false),
            (0o700, DirAccess::OwnerAndGroup, true),
            (0o750, DirAccess::OwnerAndGroup, true),
            (0o770, DirAccess::OwnerAndGroup, true),
            (0o751, DirAccess::OwnerAndGroup, false),
            (0o755, DirAccess::OwnerAndGroup, false),
        ];
        for (dir_mode, access, binds) in cases {
            let dir = tempfile::tempdir().unwrap();
            let run = dir.path().join("run");
            std::fs::DirBuilder::new().mode(0o700).create(&run).unwrap();
            std::fs::set_permissions(&run, std::fs::Permissions::from_mode(dir_mode)).unwrap();
            let socket = run.join("test.sock");
            let outcome = bind_private(&socket, "test socket", access);
            assert_eq!(
                outcome.is_ok(),
                binds,
                "{dir_mode:o} {access:?}: {:?}",
                outcome.as_ref().err()
            );
            match outcome {
                Ok(_) => assert_eq!(mode(&socket), 0o600),
                Err(error) => {
                    let error = error.to_string();
                    assert!(
                        error.contains("test socket's directory")
                            && error.contains(&format!("{dir_mode:o}")),
                        "{error}"
                    );
                    assert!(!socket.exists());
                }
            }
        }
    }

    #[tokio::test]
    async fn a_group_socket_is_0660_for_that_group_only() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        std::fs::DirBuilder::new().mode(0o750).create(&run).unwrap();
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o750)).unwrap();
        let socket = run.join("group.sock");
        // Our own group: always allowed.
        let gid = nix::unistd::getegid().as_raw();
        let _listener = bind_for_group(&socket, "test socket", gid).unwrap();
        assert_eq!(mode(&socket), 0o660);
        assert_eq!(std::fs::metadata(&socket).unwrap().gid(), gid);
        drop(_listener);
        std::fs::remove_file(&socket).unwrap();

        // A directory others can enter is refused before anything is bound.
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
        let error = bind_for_group(&socket, "test socket", gid)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("must not be accessible to others"),
            "{error}"
        );
        assert!(!socket.exists());

        // A setgid directory of another group: the socket inherits it.
        if nix::unistd::geteuid().is_root() {
            std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o750)).unwrap();
            std::os::unix::fs::chown(&run, None, Some(64_998)).unwrap();
            std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o2750)).unwrap();
            let _listener = bind_for_group(&socket, "test socket", 64_998).unwrap();
            assert_eq!(std::fs::metadata(&socket).unwrap().gid(), 64_998);
            assert_eq!(mode(&socket), 0o660);
        }
        // A group this process may not give files to (only root may): the
        // socket does not stay behind.
        if !nix::unistd::geteuid().is_root() {
            std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o750)).unwrap();
            let error = format!(
                "{:#}",
                bind_for_group(&socket, "test socket", 0).unwrap_err()
            );
            assert!(error.contains("make its directory setgid"), "{error}");
            assert!(!socket.exists());
        }
    }

    #[tokio::test]
    async fn a_missing_directory_is_created_private() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("a").join("b").join("test.sock");
        let _listener = bind_private(&socket, "test socket", DirAccess::Owner).unwrap();
        assert_eq!(mode(socket.parent().unwrap()), 0o700);
        assert_eq!(mode(&socket), 0o600);
    }

    #[tokio::test]
    async fn stale_sockets_are_replaced_live_ones_and_other_files_never() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("test.sock");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();

        // Stale: bound then dropped, the file stays behind.
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
        let live = bind_private(&socket, "test socket", DirAccess::Owner).unwrap();

        let error = bind_private(&socket, "test socket", DirAccess::Owner)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("another process is listening") && error.contains("test socket"),
            "{error}"
        );
        // The live one still answers.
        let (accepted, connected) =
            tokio::join!(live.accept(), tokio::net::UnixStream::connect(&socket));
        accepted.unwrap();
        connected.unwrap();
        drop(live);

        std::fs::remove_file(&socket).unwrap();
        std::fs::write(&socket, b"not a socket").unwrap();
        let error = bind_private(&socket, "test socket", DirAccess::Owner)
            .unwrap_err()
            .to_string();
        assert!(error.contains("is not a socket"), "{error}");
        assert_eq!(std::fs::read(&socket).unwrap(), b"not a socket");
    }
}
