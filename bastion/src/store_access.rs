//! Who may reach the backup store, and where its files may live
//! (hardening finding 16.13 and 16.16, `docs/threat-model.md`).
//!
//! Two layouts (docs/bastion.md, "Separate users"):
//!
//! - **Separate users** (`tunnel-user` set): the validators' SSH keys log in
//!   as the tunnel user, operators as another account, and this daemon runs
//!   as a third. The store's socket is given to the tunnel user's primary
//!   group (mode 0660, in a directory others cannot enter), and a
//!   connection is served only when its `SO_PEERCRED` uid is the tunnel
//!   user's, root's or this process's. The tunnel user cannot write where
//!   the bundles live, so sshd's `StreamLocalBindUnlink`, which runs as that
//!   user, cannot delete one; this is checked at start: the daemon refuses
//!   to run as the tunnel user, and refuses a `backup-dir` or socket
//!   directory that the tunnel user owns or may rename (a directory on the
//!   way that it owns or may write without the sticky bit).
//! - **Log archive readers** (`logs.archive-users`, either layout): the
//!   operators' account, which `rpc-relay` runs as, may connect too (given
//!   the socket's group), but is served only `list` and `get` of log
//!   segments ([`SessionAccess::LogReader`]), whatever its requests say.
//! - **One account** (`tunnel-user` unset): the daemon runs as the tunnel
//!   user, the socket is mode 0600, and only this uid and root are served.
//!   Every key of that account can reach the store through sshd; the start
//!   logs a warning that says so.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use tokio::net::UnixListener;

use palisade_wire::backup_store::{ObjectKind, Request};

use crate::config::BastionConfig;

/// The account the validators' keys log in as, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelAccount {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// What a session may ask of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionAccess {
    /// A validator's own key (`backup-session`): every request about its
    /// validator.
    Validator,
    /// An operator's key through `rpc-relay` (`palisade-log-archive`), or
    /// an account of `logs.archive-users` at the store: `list` and `get`
    /// of log segments only.
    LogReader,
}

impl SessionAccess {
    /// Why `request` is refused under this access, or `None`.
    pub fn refusal(self, request: &Request) -> Option<String> {
        match self {
            SessionAccess::Validator => None,
            SessionAccess::LogReader => {
                let read = matches!(request, Request::List { .. } | Request::Get { .. });
                (!read || request.kind() != ObjectKind::Log).then(|| {
                    format!(
                        "a log archive session may only list and get log objects, not {} {}",
                        request.op(),
                        request.kind()
                    )
                })
            }
        }
    }
}

/// The store's access rule, resolved once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreAccess {
    own_uid: u32,
    tunnel: Option<TunnelAccount>,
    /// `logs.archive-users`, resolved: served log reads only.
    log_readers: Vec<TunnelAccount>,
}

impl StoreAccess {
    /// Resolve `tunnel-user` and check the layout against the file system
    /// (see the module documentation). Logs the one-account warning.
    pub fn resolve(config: &BastionConfig) -> anyhow::Result<StoreAccess> {
        let own_uid = nix::unistd::geteuid().as_raw();
        let log_readers = config
            .logs
            .archive_users
            .iter()
            .map(|user| lookup(user, "logs.archive-users"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let Some(user) = &config.tunnel_user else {
            tracing::warn!(
                uid = own_uid,
                "tunnel-user is not set: the validators' SSH keys are expected to log in as \
                 this daemon's own user, so every key of that account (and any operator key \
                 given to it) can reach the backup store and, through sshd's \
                 StreamLocalBindUnlink, delete files in backup-dir; see docs/bastion.md, \
                 \"Separate users\""
            );
            return Ok(StoreAccess {
                own_uid,
                tunnel: None,
                log_readers,
            });
        };
        let tunnel = lookup(user, "tunnel-user")?;
        let access = StoreAccess {
            own_uid,
            tunnel: Some(tunnel),
            log_readers,
        };
        access.check_layout(config)?;
        Ok(access)
    }

    #[cfg(test)]
    fn new(own_uid: u32, tunnel: Option<TunnelAccount>) -> StoreAccess {
        StoreAccess {
            own_uid,
            tunnel,
            log_readers: Vec::new(),
        }
    }

    /// Refuse to run as the tunnel user, and refuse directories it controls.
    fn check_layout(&self, config: &BastionConfig) -> anyhow::Result<()> {
        let Some(tunnel) = &self.tunnel else {
            return Ok(());
        };
        if tunnel.uid == self.own_uid {
            bail!(
                "palisade-bastion runs as the tunnel user {} (uid {}): with tunnel-user set it \
                 must run as an account of its own (User=palisade-bastion in the unit), or \
                 the validators' keys could delete backups through sshd",
                tunnel.name,
                tunnel.uid
            );
        }
        let socket_dir = config
            .listen_socket
            .parent()
            .unwrap_or(Path::new("/"))
            .to_path_buf();
        for (what, path) in [
            ("backup-dir", &config.backup_dir),
            ("listen-socket's directory", &socket_dir),
        ] {
            if let Some((dir, reason)) = controlled_by(path, tunnel)? {
                bail!(
                    "{what} {}: {} {reason}, so the tunnel user {} could replace or delete \
                     what is there (sshd's StreamLocalBindUnlink runs as that user); \
                     use a directory only root and this daemon's user may change \
                     (e.g. /var/lib/palisade-bastion)",
                    path.display(),
                    dir.display(),
                    tunnel.name
                );
            }
        }
        Ok(())
    }

    /// Bind the store's socket: mode 0600 in the one-account layout; given
    /// to the tunnel user's group (0660) with separate users.
    pub fn bind(&self, path: &Path) -> anyhow::Result<UnixListener> {
        match &self.tunnel {
            None => palisade_daemon::socket::bind_private(
                path,
                "listen-socket",
                palisade_daemon::socket::DirAccess::Owner,
            ),
            Some(tunnel) => {
                palisade_daemon::socket::bind_for_group(path, "listen-socket", tunnel.gid)
            }
        }
    }

    /// Whether a peer with this uid is served (fully).
    pub fn allows(&self, uid: u32) -> bool {
        uid == 0
            || uid == self.own_uid
            || self.tunnel.as_ref().is_some_and(|tunnel| tunnel.uid == uid)
    }

    /// What a peer with this uid may ask, or `None` when it is not served:
    /// everything for root, this daemon and the tunnel user; log reads for
    /// `logs.archive-users`.
    pub fn session_access(&self, uid: u32) -> Option<SessionAccess> {
        if self.allows(uid) {
            Some(SessionAccess::Validator)
        } else if self.log_readers.iter().any(|reader| reader.uid == uid) {
            Some(SessionAccess::LogReader)
        } else {
            None
        }
    }

    /// For the start log line.
    pub fn describe(&self) -> String {
        let mut text = match &self.tunnel {
            None => format!("uid {} and root (one account)", self.own_uid),
            Some(tunnel) => format!(
                "tunnel user {} (uid {}), uid {} and root",
                tunnel.name, tunnel.uid, self.own_uid
            ),
        };
        for reader in &self.log_readers {
            text.push_str(&format!(
                "; log archive reads for {} (uid {})",
                reader.name, reader.uid
            ));
        }
        text
    }
}

/// Resolve a user name or numeric uid (of the setting `key`) through the
/// passwd database.
fn lookup(user: &str, key: &str) -> anyhow::Result<TunnelAccount> {
    let found = if user.bytes().all(|byte| byte.is_ascii_digit()) {
        let uid: u32 = user.parse().with_context(|| format!("{key}: not a uid"))?;
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
    } else {
        nix::unistd::User::from_name(user)
    }
    .with_context(|| format!("looking up {key} {user:?}"))?;
    let Some(found) = found else {
        bail!(
            "{key} {user:?} has no passwd entry on this host: create it (docs/bastion.md, \
             \"Separate users\") or fix the name"
        );
    };
    Ok(TunnelAccount {
        name: found.name,
        uid: found.uid.as_raw(),
        gid: found.gid.as_raw(),
    })
}

/// The first existing directory on the way to `path` (`path` included)
/// that `tunnel` could change: owned by it, or writable by it (through its
/// primary group or by everyone) without the sticky bit. Missing ones are
/// skipped: the daemon creates them, owned by itself, mode 0700.
fn controlled_by(
    path: &Path,
    tunnel: &TunnelAccount,
) -> anyhow::Result<Option<(PathBuf, &'static str)>> {
    for dir in path.ancestors() {
        let metadata = match fs::metadata(dir) {
            Ok(metadata) => metadata,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => {
                return Err(error).with_context(|| format!("inspecting {}", dir.display()));
            }
        };
        let mode = metadata.mode();
        let sticky = mode & 0o1000 != 0;
        let reason = if metadata.uid() == tunnel.uid {
            Some("is owned by the tunnel user")
        } else if !sticky && mode & 0o020 != 0 && metadata.gid() == tunnel.gid {
            Some("is writable by the tunnel user's group")
        } else if !sticky && mode & 0o002 != 0 {
            Some("is writable by everyone")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Ok(Some((dir.to_path_buf(), reason)));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const TUNNEL_UID: u32 = 64_999;
    const TUNNEL_GID: u32 = 64_998;

    fn tunnel() -> TunnelAccount {
        TunnelAccount {
            name: "pt-tunnel".into(),
            uid: TUNNEL_UID,
            gid: TUNNEL_GID,
        }
    }

    #[test]
    fn archive_readers_are_served_log_reads_only() {
        let mut access = StoreAccess::new(1001, Some(tunnel()));
        access.log_readers.push(TunnelAccount {
            name: "pt-ops".into(),
            uid: 64_997,
            gid: 64_997,
        });
        assert_eq!(access.session_access(0), Some(SessionAccess::Validator));
        assert_eq!(access.session_access(1001), Some(SessionAccess::Validator));
        assert_eq!(
            access.session_access(TUNNEL_UID),
            Some(SessionAccess::Validator)
        );
        assert_eq!(
            access.session_access(64_997),
            Some(SessionAccess::LogReader)
        );
        assert_eq!(access.session_access(1234), None);
        assert!(!access.allows(64_997));
        assert!(
            access
                .describe()
                .contains("log archive reads for pt-ops (uid 64997)")
        );
        let read =
            |json: &str| palisade_wire::backup_store::decode_request(json.as_bytes()).unwrap();
        let reader = SessionAccess::LogReader;
        assert_eq!(
            reader.refusal(&read(r#"{"op":"list","validator":"v","kind":"log"}"#)),
            None
        );
        for refused in [
            r#"{"op":"list","validator":"v"}"#,
            r#"{"op":"remove","validator":"v","file":"log-h-00000000000000000001.age","kind":"log"}"#,
            r#"{"op":"put","validator":"v","file":"log-h-00000000000000000001.age","bytes":1,"kind":"log"}"#,
        ] {
            assert!(reader.refusal(&read(refused)).is_some(), "{refused}");
            assert_eq!(SessionAccess::Validator.refusal(&read(refused)), None);
        }
    }

    #[test]
    fn peers_served_in_each_layout() {
        let one = StoreAccess::new(1000, None);
        let separate = StoreAccess::new(1001, Some(tunnel()));
        // (uid, one account, separate users)
        let rows = [
            (0, true, true),
            (1000, true, false),
            (1001, false, true),
            (TUNNEL_UID, false, true),
            (TUNNEL_GID, false, false),
            (65_534, false, false),
        ];
        for (uid, in_one, in_separate) in rows {
            assert_eq!(one.allows(uid), in_one, "one account, uid {uid}");
            assert_eq!(
                separate.allows(uid),
                in_separate,
                "separate users, uid {uid}"
            );
        }
    }

    /// (mode, owner uid, owner gid) of the backup directory's parent → the
    /// reason it is refused, or `None`. Needs root for the ownership rows
    /// (CI runs as root); as another user only the mode rows run.
    #[test]
    fn directories_the_tunnel_user_could_change_are_refused() {
        let root = nix::unistd::geteuid().is_root();
        let me = (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        );
        let rows: Vec<(u32, (u32, u32), Option<&str>)> = vec![
            (0o755, me, None),
            (0o700, me, None),
            (0o1777, me, None),
            (0o777, me, Some("is writable by everyone")),
            (
                0o775,
                (me.0, TUNNEL_GID),
                Some("is writable by the tunnel user's group"),
            ),
            (0o3775, (me.0, TUNNEL_GID), None),
            (0o755, (me.0, TUNNEL_GID), None),
            (
                0o700,
                (TUNNEL_UID, me.1),
                Some("is owned by the tunnel user"),
            ),
            (
                0o1777,
                (TUNNEL_UID, me.1),
                Some("is owned by the tunnel user"),
            ),
        ];
        let mut checked = 0;
        for (mode, (uid, gid), expected) in rows {
            if !root && (uid, gid) != me {
                continue;
            }
            let dir = tempfile::tempdir().unwrap();
            let parent = dir.path().join("parent");
            fs::create_dir(&parent).unwrap();
            std::os::unix::fs::chown(&parent, Some(uid), Some(gid)).unwrap();
            fs::set_permissions(&parent, fs::Permissions::from_mode(mode)).unwrap();
            let backups = parent.join("backups");
            let found = controlled_by(&backups, &tunnel()).unwrap();
            assert_eq!(
                found.as_ref().map(|(_, reason)| *reason),
                expected,
                "mode {mode:o} owner {uid}:{gid}"
            );
            if let Some((at, _)) = found {
                assert_eq!(at, parent);
            }
            checked += 1;
        }
        assert!(checked >= 4);
    }

    #[test]
    fn running_as_the_tunnel_user_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = BastionConfig::parse(
            &format!(
                "listen-socket = \"{0}/run/b.sock\"\nbackup-dir = \"{0}/backups\"\n\
                 tunnel-user = \"x\"\n[[validator]]\nname = \"a\"\nsocket = \"{0}/a.sock\"\n",
                dir.path().display()
            ),
            Path::new("bastion.toml"),
        )
        .unwrap();
        let own = nix::unistd::geteuid().as_raw();
        let same = StoreAccess::new(
            own,
            Some(TunnelAccount {
                name: "x".into(),
                uid: own,
                gid: 1,
            }),
        );
        let error = same.check_layout(&config).unwrap_err().to_string();
        assert!(error.contains("runs as the tunnel user x"), "{error}");
        // Another account, and directories it cannot change: accepted.
        StoreAccess::new(own, Some(tunnel()))
            .check_layout(&config)
            .unwrap();
    }

    #[test]
    fn an_unknown_tunnel_user_is_a_clear_error() {
        let error = lookup("no-such-user-palisade", "tunnel-user")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("tunnel-user \"no-such-user-palisade\" has no passwd entry"),
            "{error}"
        );
        let error = lookup("no-such-user-palisade", "logs.archive-users")
            .unwrap_err()
            .to_string();
        assert!(error.contains("logs.archive-users"), "{error}");
        let root = lookup("0", "tunnel-user").unwrap();
        assert_eq!((root.uid, root.name.as_str()), (0, "root"));
    }
}
