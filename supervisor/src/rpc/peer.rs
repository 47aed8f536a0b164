//! Who is on the other end of a control-socket connection, and whether it
//! is a trusted local user (`docs/rpc.md` §1).
//!
//! Trusted: the peer's `SO_PEERCRED` uid is 0 or one of ours, and its pid is
//! not our own. Connections that a bastion forwards through our SSH tunnel
//! are opened by this very process, so they carry our uid *and* our pid:
//! the pid rule is what keeps a bastion from ever being trusted. The rule
//! is data ([`TrustPolicy`]) so tests can reach every branch while running
//! as root; production uses [`TrustPolicy::for_this_process`].

use std::os::fd::AsFd;

use nix::sys::socket::{getsockopt, sockopt};

/// The kernel's record of a connected peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCredentials {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// Read `SO_PEERCRED`; `None` when the kernel does not say (never trusted).
pub fn peer_credentials(socket: &impl AsFd) -> Option<PeerCredentials> {
    let credentials = getsockopt(socket, sockopt::PeerCredentials).ok()?;
    Some(PeerCredentials {
        pid: credentials.pid(),
        uid: credentials.uid(),
        gid: credentials.gid(),
    })
}

/// How one connection is treated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerTrust {
    /// A trusted local user: TLS optional, acts as `local:<user>` (admin).
    TrustedLocal { user: String },
    /// Anyone else: TLS, then operator login.
    Remote,
}

/// The trust rule's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustPolicy {
    /// `(uid, user name)` of the uids that are trusted.
    trusted_users: Vec<(u32, String)>,
    /// A peer with this pid is never trusted (our own process: the tunnel).
    tunnel_pid: Option<i32>,
}

impl TrustPolicy {
    /// The rule of `docs/rpc.md` §1: uid 0 or this process's uid, and not
    /// this process. Names are resolved once here, not per connection (a
    /// passwd lookup may block).
    pub fn for_this_process() -> TrustPolicy {
        let own_uid = nix::unistd::geteuid().as_raw();
        let mut uids = vec![0, own_uid];
        uids.dedup();
        TrustPolicy::for_uids(&uids)
    }

    /// `[rpc] trusted-uids` (`docs/rpc.md` §1): these uids, and never this
    /// process.
    pub fn for_uids(uids: &[u32]) -> TrustPolicy {
        TrustPolicy {
            trusted_users: uids.iter().map(|&uid| (uid, user_name(uid))).collect(),
            tunnel_pid: Some(nix::unistd::getpid().as_raw()),
        }
    }

    /// Trust nobody: every connection needs TLS and a login.
    pub fn nobody() -> TrustPolicy {
        TrustPolicy {
            trusted_users: Vec::new(),
            tunnel_pid: None,
        }
    }

    /// An explicit rule (tests reach the trusted path from inside the
    /// serving process with `tunnel_pid: None`).
    pub fn new(trusted_users: Vec<(u32, String)>, tunnel_pid: Option<i32>) -> TrustPolicy {
        TrustPolicy {
            trusted_users,
            tunnel_pid,
        }
    }

    /// Classify a peer. Unknown credentials are never trusted.
    pub fn classify(&self, peer: Option<PeerCredentials>) -> PeerTrust {
        let Some(peer) = peer else {
            return PeerTrust::Remote;
        };
        if self.tunnel_pid == Some(peer.pid) {
            return PeerTrust::Remote;
        }
        match self.trusted_users.iter().find(|(uid, _)| *uid == peer.uid) {
            Some((_, name)) => PeerTrust::TrustedLocal { user: name.clone() },
            None => PeerTrust::Remote,
        }
    }
}

fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(user)) => user.name,
        _ => format!("uid{uid}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_needs_a_trusted_uid_and_another_process() {
        let policy = TrustPolicy::new(vec![(0, "root".into()), (1000, "gaia".into())], Some(42));
        let peer = |pid, uid| Some(PeerCredentials { pid, uid, gid: 0 });
        let cases = [
            (
                peer(7, 0),
                PeerTrust::TrustedLocal {
                    user: "root".into(),
                },
            ),
            (
                peer(7, 1000),
                PeerTrust::TrustedLocal {
                    user: "gaia".into(),
                },
            ),
            // Another local user.
            (peer(7, 1001), PeerTrust::Remote),
            // Our own tunnel, even with a trusted uid.
            (peer(42, 0), PeerTrust::Remote),
            (peer(42, 1000), PeerTrust::Remote),
            // The kernel did not say.
            (None, PeerTrust::Remote),
        ];
        for (credentials, expected) in cases {
            assert_eq!(policy.classify(credentials), expected, "{credentials:?}");
        }
        assert_eq!(
            TrustPolicy::nobody().classify(peer(7, 0)),
            PeerTrust::Remote
        );
    }

    #[test]
    fn this_process_is_never_trusted_by_the_production_rule() {
        let policy = TrustPolicy::for_this_process();
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let credentials = peer_credentials(&theirs).unwrap();
        assert_eq!(credentials.pid, std::process::id() as i32);
        assert_eq!(policy.classify(Some(credentials)), PeerTrust::Remote);
        drop(ours);
        let other_process = PeerCredentials {
            pid: credentials.pid + 1,
            ..credentials
        };
        assert!(matches!(
            policy.classify(Some(other_process)),
            PeerTrust::TrustedLocal { .. }
        ));
    }
}
