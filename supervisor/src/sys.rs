//! The only module allowed to use `unsafe`: thin wrappers around the few
//! syscalls Palisade needs that have no safe binding.
//!
//! Every `unsafe` block here is small, documented with the reason it is
//! sound, and exposed through a safe function.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;

nix::ioctl_write_int!(ficlone_ioctl, 0x94, 9);

/// Clone `source`'s extents into `destination` (`ioctl(FICLONE)`): a
/// copy-on-write copy that shares blocks on btrfs, XFS (reflink=1), bcachefs
/// and similar. Fails with `EOPNOTSUPP`/`EXDEV`/`EINVAL` where the filesystem
/// cannot do it; callers fall back to a byte copy.
pub fn reflink_file(source: &File, destination: &File) -> io::Result<()> {
    // SAFETY: FICLONE takes the source fd as its integer argument and only
    // reads kernel state; both descriptors are owned, open `File`s for the
    // duration of the call.
    unsafe {
        ficlone_ioctl(
            destination.as_raw_fd(),
            source.as_raw_fd() as nix::sys::ioctl::ioctl_param_type,
        )
    }
    .map(|_| ())
    .map_err(io::Error::from)
}

/// Arrange for the child to run in its own process group and to receive
/// SIGKILL if the supervisor dies (`PR_SET_PDEATHSIG`), so a crashed
/// supervisor never leaves a second signer running unsupervised.
///
/// systemd's notification variables are removed: only the supervisor talks
/// to systemd.
pub fn child_in_own_group_killed_with_parent(command: &mut std::process::Command) {
    command
        .process_group(0)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID");
    let parent_pid = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec; it only
    // calls async-signal-safe syscalls (prctl, getppid) and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(io::Error::from)?;
            // The parent may have died between fork and prctl: then the death
            // signal was never armed, so leave now instead of running orphaned.
            if nix::unistd::getppid() != parent_pid {
                return Err(orphaned());
            }
            Ok(())
        });
    }
}

/// The error a child reports when the supervisor died between fork and
/// exec: `ESRCH`, an OS error code held inline. The child of a
/// multi-threaded process must not allocate before exec (another thread may
/// have held the allocator's lock at fork), so no message is built here;
/// the parent is gone and would not read one anyway.
fn orphaned() -> io::Error {
    io::Error::from(nix::errno::Errno::ESRCH)
}

/// Take ownership of a descriptor inherited from the parent process (e.g.
/// `--passphrase-fd 3`). Fails with `EBADF` when it is not open.
///
/// Must be called at most once per descriptor, before the process opens
/// descriptors of its own, so the number cannot refer to one it owns.
pub fn take_inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: the borrow lives only for the F_GETFD probe, which reads
    // descriptor flags and fails cleanly (EBADF) on a closed number.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    nix::fcntl::fcntl(borrowed, nix::fcntl::FcntlArg::F_GETFD).map_err(io::Error::from)?;
    // SAFETY: the descriptor is open and, per this function's contract, was
    // passed by the parent for us to consume and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    /// `io::Error::other` would box its message: an allocation in the
    /// forked child. An OS error carries only its code.
    #[test]
    fn the_orphaned_child_error_does_not_allocate() {
        let error = super::orphaned();
        assert_eq!(error.raw_os_error(), Some(nix::libc::ESRCH));
        assert!(error.get_ref().is_none(), "a boxed payload was allocated");
    }
}
