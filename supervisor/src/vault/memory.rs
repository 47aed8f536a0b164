//! Keeping decrypted keys out of swap: a best-effort `mlockall`, and a
//! report of active swap devices for the operator.
//!
//! Both only *report*; the caller decides how loudly to log. Locking is
//! attempted only when it can succeed (CAP_IPC_LOCK, root, or an unlimited
//! RLIMIT_MEMLOCK), because a partial lock under a small limit would make
//! later allocations fail instead.

use std::fs;

use nix::sys::mman::{MlockAllFlags, mlockall};
use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit};

/// Bit of `CAP_IPC_LOCK` in the capability sets of `/proc/self/status`.
const CAP_IPC_LOCK_BIT: u32 = 14;

/// Outcome of [`lock_memory`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemoryLock {
    /// All current and future pages are locked in RAM.
    Locked,
    /// The process may not lock all its memory; the reason says why and how to allow it.
    NotPermitted(String),
    /// Locking was permitted but `mlockall` failed.
    Failed(String),
}

/// Swap state of the host, from `/proc/swaps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwapStatus {
    /// No active swap.
    Disabled,
    /// Active swap devices or files: memory not locked may be written to them.
    Enabled {
        /// Device or file names, as listed.
        devices: Vec<String>,
    },
    /// `/proc/swaps` could not be read.
    Unknown(String),
}

/// Locks the process's memory (`mlockall(MCL_CURRENT | MCL_FUTURE |
/// MCL_ONFAULT)`) if it
/// is permitted to lock all of it. Best effort: never fails, reports.
pub fn lock_memory() -> MemoryLock {
    let status = fs::read_to_string("/proc/self/status").ok();
    let is_root = nix::unistd::geteuid().is_root();
    let has_cap_ipc_lock = status
        .as_deref()
        .and_then(effective_capabilities)
        .map(|caps| caps & (1 << CAP_IPC_LOCK_BIT) != 0);
    let memlock_unlimited = getrlimit(Resource::RLIMIT_MEMLOCK)
        .ok()
        .map(|(soft, _hard)| soft == RLIM_INFINITY);
    if let Err(reason) = lock_permitted(is_root, has_cap_ipc_lock, memlock_unlimited) {
        return MemoryLock::NotPermitted(reason);
    }
    match mlockall_current_and_future() {
        Ok(()) => MemoryLock::Locked,
        Err(reason) => MemoryLock::Failed(reason),
    }
}

/// `MCL_ONFAULT` (Linux 4.4+): lock future pages as they are touched
/// instead of faulting whole mappings in. Without it, `MCL_FUTURE` commits
/// every thread's full stack and every reserved arena at once, which would
/// multiply the supervisor's resident memory. nix does not expose the flag.
const MCL_ONFAULT: i32 = if cfg!(any(
    target_arch = "powerpc",
    target_arch = "powerpc64",
    target_arch = "sparc",
    target_arch = "sparc64"
)) {
    0x8000
} else {
    4
};

fn mlockall_current_and_future() -> Result<(), String> {
    let on_fault = MlockAllFlags::from_bits_retain(MCL_ONFAULT);
    let flags = MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE;
    match mlockall(flags | on_fault) {
        Ok(()) => Ok(()),
        // An older kernel without MCL_ONFAULT: lock eagerly.
        Err(nix::errno::Errno::EINVAL) => mlockall(flags),
        Err(errno) => Err(errno),
    }
    .map_err(|errno| format!("mlockall failed: {}", errno.desc()))
}

/// Decides from the process's credentials whether to try locking.
fn lock_permitted(
    is_root: bool,
    has_cap_ipc_lock: Option<bool>,
    memlock_unlimited: Option<bool>,
) -> Result<(), String> {
    if is_root || has_cap_ipc_lock == Some(true) || memlock_unlimited == Some(true) {
        return Ok(());
    }
    Err(format!(
        "needs CAP_IPC_LOCK or an unlimited RLIMIT_MEMLOCK (capability: {}, memlock limit: {}); \
         with systemd set AmbientCapabilities=CAP_IPC_LOCK or LimitMEMLOCK=infinity",
        match has_cap_ipc_lock {
            Some(_) => "absent",
            None => "unknown",
        },
        match memlock_unlimited {
            Some(_) => "limited",
            None => "unknown",
        }
    ))
}

/// `CapEff` from `/proc/self/status`.
fn effective_capabilities(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// Reads `/proc/swaps`.
pub fn swap_status() -> SwapStatus {
    match fs::read_to_string("/proc/swaps") {
        Ok(text) => parse_swaps(&text),
        Err(error) => SwapStatus::Unknown(format!("cannot read /proc/swaps: {error}")),
    }
}

fn parse_swaps(text: &str) -> SwapStatus {
    let devices: Vec<String> = text
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().next())
        .map(|device| device.replace("\\040", " "))
        .collect();
    if devices.is_empty() {
        SwapStatus::Disabled
    } else {
        SwapStatus::Enabled { devices }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swaps_are_parsed() {
        let header = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n";
        assert_eq!(parse_swaps(header), SwapStatus::Disabled);
        assert_eq!(parse_swaps(""), SwapStatus::Disabled);
        let text = format!(
            "{header}/dev/sda2                               partition\t8388604\t\t0\t\t-2\n/swap\\040file                              file\t\t1048572\t\t0\t\t-3\n"
        );
        assert_eq!(
            parse_swaps(&text),
            SwapStatus::Enabled {
                devices: vec!["/dev/sda2".into(), "/swap file".into()]
            }
        );
    }

    #[test]
    fn lock_permission_table() {
        let cases = [
            (true, Some(false), Some(false), true),
            (false, Some(true), Some(false), true),
            (false, Some(false), Some(true), true),
            (false, Some(false), Some(false), false),
            (false, None, None, false),
        ];
        for (root, cap, unlimited, permitted) in cases {
            assert_eq!(
                lock_permitted(root, cap, unlimited).is_ok(),
                permitted,
                "{root} {cap:?} {unlimited:?}"
            );
        }
    }

    #[test]
    fn proc_files_are_parsed() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(effective_capabilities(status), Some(0x1ff_ffff_ffff));
        assert_eq!(effective_capabilities("Name:\tx\n"), None);
    }
}

/// The swap rule, at start and again before every unlock puts keys in
/// tmpfs (swap may have been turned on since): refused under
/// `vault.swap = "refuse"`, a warning under `"warn"`.
pub fn check_swap(swap: crate::config::SwapPolicy, status: SwapStatus) -> anyhow::Result<()> {
    if let SwapStatus::Enabled { devices } = status {
        match swap {
            crate::config::SwapPolicy::Refuse => anyhow::bail!(
                "swap is enabled ({}): decrypted keys could be written to disk. Disable swap, or set vault.swap = \"warn\" to accept the risk",
                devices.join(", ")
            ),
            crate::config::SwapPolicy::Warn => tracing::warn!(
                ?devices,
                "swap is enabled: decrypted keys could be written to disk (vault.swap = \"warn\")"
            ),
        }
    }
    Ok(())
}

/// Keeps this process's memory (the passphrase, the vault's keys, the
/// decrypted validator key) out of core dumps and away from other processes
/// of the same user: `RLIMIT_CORE` 0 (soft and hard; children such as gaiad
/// inherit it) and `PR_SET_DUMPABLE` 0, which also forbids ptrace and
/// `/proc/PID/mem` to same-uid processes without `CAP_SYS_PTRACE`. Called
/// first thing by every command, before a secret is read.
pub fn deny_core_dumps() -> Result<(), String> {
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0)
        .map_err(|error| format!("cannot set RLIMIT_CORE to 0: {error}"))?;
    nix::sys::prctl::set_dumpable(false)
        .map_err(|error| format!("cannot clear the dumpable flag (PR_SET_DUMPABLE): {error}"))
}

/// Leaves the calling thread's stack out of core dumps, where copies of the
/// vault's keys land when they are used (`sys::exclude_current_stack_from_dumps`).
/// Called on the main thread and on every runtime thread as it starts.
pub fn exclude_thread_stack_from_dumps() -> Result<(), String> {
    crate::sys::exclude_current_stack_from_dumps()
        .map_err(|error| format!("cannot leave this thread's stack out of core dumps: {error}"))
}

#[cfg(test)]
mod dump_tests {
    /// Runs in its own process (nextest): afterwards no core can be written
    /// and the process is not dumpable (issue 16, finding 4).
    #[test]
    fn core_dumps_are_denied() {
        super::deny_core_dumps().unwrap();
        assert_eq!(
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_CORE).unwrap(),
            (0, 0)
        );
        assert!(!nix::sys::prctl::get_dumpable().unwrap());
    }
}

#[cfg(test)]
mod swap_rule_tests {
    use super::*;
    use crate::config::SwapPolicy;

    /// The swap rule (checked at start and before every unlock).
    #[test]
    fn swap_rule_table() {
        let on = || SwapStatus::Enabled {
            devices: vec!["/dev/sda2".into()],
        };
        assert!(check_swap(SwapPolicy::Refuse, SwapStatus::Disabled).is_ok());
        assert!(check_swap(SwapPolicy::Warn, SwapStatus::Disabled).is_ok());
        assert!(check_swap(SwapPolicy::Warn, on()).is_ok());
        let error = check_swap(SwapPolicy::Refuse, on())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("/dev/sda2") && error.contains("vault.swap"),
            "{error}"
        );
    }
}
