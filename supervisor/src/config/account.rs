//! `[daemon] user` / `group`: the account the node (gaiad) and the
//! pre-upgrade scripts run under, when it is not the supervisor's own.
//!
//! ```toml
//! [daemon]
//! user = "gaiad"        # a name or a numeric uid; never root
//! group = "gaiad"       # default: the user's primary group
//! ```
//!
//! A node under its own uid cannot use the supervisor's control socket as
//! a trusted local user, read the vault or the tunnel key, trace the
//! supervisor, or change the upgrade binaries it runs. See
//! `docs/supervisor.md` ("The node's own account") for the file layout and
//! the capabilities the supervisor then needs.

use super::Resolver;

/// The node's account, resolved to numbers once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAccount {
    /// `daemon.user` as written (for messages).
    pub user: String,
    pub uid: u32,
    pub gid: u32,
}

/// Resolves `daemon.user` and `daemon.group`, reporting a name that does
/// not exist, root, or a group without a user.
pub(super) fn resolve_account(
    r: &mut Resolver<'_>,
    user: Option<&str>,
    group: Option<&str>,
) -> Option<NodeAccount> {
    let Some(user) = user else {
        if group.is_some() {
            let origin = r.file_origin("daemon.group");
            r.report(
                origin,
                "needs daemon.user (the node runs as the supervisor's user otherwise)",
            );
        }
        return None;
    };
    let found = match user.parse::<u32>() {
        Ok(uid) => Ok((uid, nix::unistd::User::from_uid(uid.into()).ok().flatten())),
        Err(_) => match nix::unistd::User::from_name(user) {
            Ok(Some(entry)) => Ok((entry.uid.as_raw(), Some(entry))),
            Ok(None) => Err(format!("no user named {user:?} on this host")),
            Err(error) => Err(format!("cannot look up user {user:?}: {error}")),
        },
    };
    let (uid, entry) = match found {
        Ok(found) => found,
        Err(reason) => {
            let origin = r.file_origin("daemon.user");
            r.report(origin, reason);
            return None;
        }
    };
    if uid == 0 {
        let origin = r.file_origin("daemon.user");
        r.report(
            origin,
            "must not be root: the node is the part exposed to the network",
        );
        return None;
    }
    let gid = match group {
        Some(group) => match group.parse::<u32>() {
            Ok(gid) => Some(gid),
            Err(_) => match nix::unistd::Group::from_name(group) {
                Ok(Some(entry)) => Some(entry.gid.as_raw()),
                Ok(None) => {
                    let origin = r.file_origin("daemon.group");
                    r.report(origin, format!("no group named {group:?} on this host"));
                    None
                }
                Err(error) => {
                    let origin = r.file_origin("daemon.group");
                    r.report(origin, format!("cannot look up group {group:?}: {error}"));
                    None
                }
            },
        },
        None => match entry {
            Some(entry) => Some(entry.gid.as_raw()),
            None => {
                let origin = r.file_origin("daemon.group");
                r.report(
                    origin,
                    format!("uid {uid} has no passwd entry, so its group must be given"),
                );
                None
            }
        },
    }?;
    if gid == 0 {
        let origin = r.file_origin("daemon.group");
        r.report(origin, "must not be root's group");
        return None;
    }
    Some(NodeAccount {
        user: user.to_string(),
        uid,
        gid,
    })
}
