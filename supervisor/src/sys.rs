//! The only module allowed to use `unsafe`: thin wrappers around the few
//! syscalls Palisade needs that have no safe binding.
//!
//! Every `unsafe` block here is small, documented with the reason it is
//! sound, and exposed through a safe function.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
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

/// Keep at most `bytes` of not-yet-sent data in a TCP socket's send
/// buffer (`TCP_NOTSENT_LOWAT`): a write waits (and the socket does not
/// poll writable) while more than that is queued unsent. The tunnels set
/// it on their SSH connections so that bulk data waits in the tunnel,
/// where it is bounded, instead of in a send buffer of megabytes that every
/// later vote would queue behind (docs/benchmarks.md, "Votes first").
pub fn set_tcp_notsent_lowat(socket: &impl AsFd, bytes: u32) -> io::Result<()> {
    let value = nix::libc::c_int::try_from(bytes)
        .map_err(|_| io::Error::from(nix::errno::Errno::EINVAL))?;
    // SAFETY: setsockopt reads exactly `size_of::<c_int>()` bytes from a
    // pointer to a live local `c_int`; the descriptor is borrowed from an
    // open socket for the duration of the call.
    let result = unsafe {
        nix::libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            nix::libc::IPPROTO_TCP,
            nix::libc::TCP_NOTSENT_LOWAT,
            (&raw const value).cast::<nix::libc::c_void>(),
            std::mem::size_of::<nix::libc::c_int>() as nix::libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Read back `TCP_NOTSENT_LOWAT` (for the test).
#[cfg(test)]
fn tcp_notsent_lowat(socket: &impl AsFd) -> io::Result<u32> {
    let mut value: nix::libc::c_int = 0;
    let mut length = std::mem::size_of::<nix::libc::c_int>() as nix::libc::socklen_t;
    // SAFETY: getsockopt writes at most `length` bytes into the live local
    // `value` and updates `length`; the descriptor is borrowed for the call.
    let result = unsafe {
        nix::libc::getsockopt(
            socket.as_fd().as_raw_fd(),
            nix::libc::IPPROTO_TCP,
            nix::libc::TCP_NOTSENT_LOWAT,
            (&raw mut value).cast::<nix::libc::c_void>(),
            &raw mut length,
        )
    };
    if result == 0 {
        Ok(value as u32)
    } else {
        Err(io::Error::last_os_error())
    }
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

    #[test]
    fn notsent_lowat_is_set_on_a_tcp_socket_and_refused_elsewhere() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        super::set_tcp_notsent_lowat(&stream, 16 * 1024).unwrap();
        assert_eq!(super::tcp_notsent_lowat(&stream).unwrap(), 16 * 1024);
        // Not a TCP socket: an error, not a silent no-op.
        let (unix, _) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(super::set_tcp_notsent_lowat(&unix, 16 * 1024).is_err());
        assert!(super::set_tcp_notsent_lowat(&stream, u32::MAX).is_err());
    }
}
