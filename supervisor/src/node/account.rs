//! Running the node under an account of its own (`[daemon] user`): what
//! the supervisor needs for it, checked once at start.
//!
//! The supervisor switches the child's uid and gid before exec
//! (`sys::child_in_own_group_killed_with_parent`) and keeps working on the
//! node's files: it reads `priv_validator_state.json`, which CometBFT
//! rewrites mode 0600 at every signature, writes it back (restore, raise)
//! and edits `config.toml` with their owner kept, gives the decrypted
//! keys in tmpfs to the node's group, and signals the node to stop. Hence
//! the five capabilities below;
//! as root it has them all (the unit never runs it as root).

use std::path::{Path, PathBuf};

use crate::config::NodeAccount;

/// Capabilities the supervisor needs to run the node as another account,
/// with their bit numbers (`linux/capability.h`) and why.
const NEEDED: [(u32, &str, &str); 5] = [
    (7, "CAP_SETUID", "to start the node as daemon.user"),
    (5, "CAP_KILL", "to stop the node, a process of another user"),
    (
        6,
        "CAP_SETGID",
        "to give the node daemon.group as its only group",
    ),
    (
        1,
        "CAP_DAC_OVERRIDE",
        "to read and write the node's sign state, which CometBFT keeps mode 0600",
    ),
    (
        0,
        "CAP_CHOWN",
        "to keep the node's files its own and give it the keys in tmpfs",
    ),
];

/// Refuses to start when the node's account cannot be used: it is the
/// supervisor's own, or the supervisor lacks a capability it needs.
pub fn check_can_run_as(account: &NodeAccount) -> anyhow::Result<()> {
    let own = nix::unistd::geteuid().as_raw();
    if own == 0 {
        return Ok(());
    }
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|error| anyhow::anyhow!("cannot read /proc/self/status: {error}"))?;
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .ok_or_else(|| anyhow::anyhow!("/proc/self/status has no CapEff line"))?;
    missing_for(account, own, effective)
}

fn missing_for(account: &NodeAccount, own: u32, effective: u64) -> anyhow::Result<()> {
    if account.uid == own {
        anyhow::bail!(
            "daemon.user {:?} (uid {}) is the supervisor's own user: leave daemon.user out, or run the supervisor as another account",
            account.user,
            account.uid
        );
    }
    let missing: Vec<String> = NEEDED
        .iter()
        .filter(|(bit, _, _)| effective & (1 << bit) == 0)
        .map(|(_, name, why)| format!("{name} ({why})"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "the supervisor (uid {own}) lacks {}. In its unit set \
         AmbientCapabilities=CAP_SETUID CAP_SETGID CAP_KILL CAP_CHOWN CAP_DAC_OVERRIDE and the same \
         CapabilityBoundingSet= (packaging/systemd/palisade-supervisor.service shows how), or leave \
         daemon.user out to run the node as the supervisor's user",
        missing.join(", ")
    )
}

/// Makes sure the node's account can reach and run `binary`: every
/// directory from `root` (the `cosmovisor/` directory) down to the binary,
/// and the binary itself, that the supervisor owns and the node could not
/// search (or run) is opened to group and others (`go+rx`; nothing in
/// `cosmovisor/` is secret, and the supervisor created those directories
/// under its private umask). Anything else the node cannot reach is an
/// error that names the path. Returns the paths whose mode was changed.
pub fn open_binary_path_for_node(
    binary: &Path,
    root: &Path,
    account: &NodeAccount,
) -> anyhow::Result<Vec<PathBuf>> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let own = nix::unistd::geteuid().as_raw();
    let resolved = std::fs::canonicalize(binary)
        .map_err(|error| anyhow::anyhow!("cannot resolve {}: {error}", binary.display()))?;
    let root = std::fs::canonicalize(root)
        .map_err(|error| anyhow::anyhow!("cannot resolve {}: {error}", root.display()))?;
    let mut opened = Vec::new();
    // Outermost first, the binary last.
    let mut paths: Vec<&Path> = resolved.ancestors().collect();
    paths.reverse();
    for path in paths {
        let metadata = std::fs::metadata(path)
            .map_err(|error| anyhow::anyhow!("cannot inspect {}: {error}", path.display()))?;
        let mode = metadata.mode() & 0o7777;
        if may_execute(account, metadata.uid(), metadata.gid(), mode) {
            continue;
        }
        if metadata.uid() == own && path.starts_with(&root) {
            let open = mode | 0o055;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(open)).map_err(
                |error| anyhow::anyhow!("cannot open {} to the node: {error}", path.display()),
            )?;
            tracing::info!(path = %path.display(), from = format!("{mode:04o}"), to = format!("{open:04o}"), "opened to the node's account");
            opened.push(path.to_path_buf());
            continue;
        }
        anyhow::bail!(
            "the node's account {:?} (uid {}, gid {}) cannot {} {} (owner uid {}, group {}, mode {mode:04o}); \
             give it access (e.g. chmod o+x, or chgrp {} and chmod g+x)",
            account.user,
            account.uid,
            account.gid,
            if metadata.is_dir() { "enter" } else { "run" },
            path.display(),
            metadata.uid(),
            metadata.gid(),
            account.gid,
        );
    }
    Ok(opened)
}

/// Whether `account` may search a directory or run a file with this owner,
/// group and mode (the kernel's check, without capabilities or ACLs).
fn may_execute(account: &NodeAccount, owner: u32, group: u32, mode: u32) -> bool {
    if owner == account.uid {
        mode & 0o100 != 0
    } else if group == account.gid {
        mode & 0o010 != 0
    } else {
        mode & 0o001 != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_supervisor_needs_to_switch_accounts() {
        let account = NodeAccount {
            user: "gaiad".into(),
            uid: 2000,
            gid: 2000,
        };
        let all = (1 << 0) | (1 << 1) | (1 << 5) | (1 << 6) | (1 << 7);
        let cases: [(u32, u64, Option<&str>); 6] = [
            (1000, all, None),
            (1000, u64::MAX, None),
            (1000, 0, Some("lacks CAP_SETUID")),
            (
                1000,
                all & !(1 << 1),
                Some("CAP_DAC_OVERRIDE (to read and write"),
            ),
            (1000, all & !(1 << 5), Some("lacks CAP_KILL")),
            (2000, all, Some("is the supervisor's own user")),
        ];
        for (own, effective, error) in cases {
            let result = missing_for(&account, own, effective);
            match error {
                None => assert!(result.is_ok(), "{own} {effective:x}: {result:?}"),
                Some(text) => {
                    let message = result.unwrap_err().to_string();
                    assert!(message.contains(text), "{own} {effective:x}: {message}");
                }
            }
        }
    }

    #[test]
    fn who_may_run_what() {
        let account = NodeAccount {
            user: "gaiad".into(),
            uid: 2000,
            gid: 3000,
        };
        let cases = [
            (2000, 1, 0o700, true),
            (2000, 3000, 0o070, false),
            (1, 3000, 0o750, true),
            (1, 3000, 0o705, false),
            (1, 1, 0o751, true),
            (1, 1, 0o750, false),
        ];
        for (owner, group, mode, expected) in cases {
            assert_eq!(
                may_execute(&account, owner, group, mode),
                expected,
                "{owner} {group} {mode:o}"
            );
        }
    }
}
