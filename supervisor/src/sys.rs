//! The only module allowed to use `unsafe`: thin wrappers around the few
//! syscalls Palisade needs that have no safe binding.
//!
//! Every `unsafe` block here is small, documented with the reason it is
//! sound, and exposed through a safe function.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::fs::File;
use std::io;
use std::marker::PhantomData;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::ptr::NonNull;

use nix::sys::mman::{MapFlags, MmapAdvise, ProtFlags};
use zeroize::Zeroize;

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

/// Lower the calling thread's scheduling priority to nice `increment`
/// (`setpriority(PRIO_PROCESS, gettid(), …)`, which on Linux applies to the
/// one thread): for work that must never compete with the node, such as the
/// log segment writer. Raising a priority needs privileges; lowering never
/// does.
pub fn lower_current_thread_priority(increment: i32) -> io::Result<()> {
    let thread = nix::unistd::gettid().as_raw();
    // SAFETY: setpriority takes plain integers and changes only the nice
    // value of the thread named by the id (this very thread).
    let result = unsafe {
        nix::libc::setpriority(
            nix::libc::PRIO_PROCESS,
            thread as nix::libc::id_t,
            increment,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Arrange for the child to run in its own process group and to receive
/// SIGKILL if the supervisor dies (`PR_SET_PDEATHSIG`), so a crashed
/// supervisor never leaves a second signer running unsupervised.
///
/// systemd's notification variables are removed: only the supervisor talks
/// to systemd.
///
/// With `account` (uid, gid), the child becomes that account before exec:
/// its only group is `gid` (the supervisor's supplementary groups are
/// dropped), real, effective and saved ids are switched, every capability
/// that let the supervisor switch is dropped (ambient ones would survive a
/// switch between two non-root uids and be inherited through exec, and the
/// inheritable set is inherited as it is), and `no_new_privs` is set so that no setuid or file-capability
/// program can raise them again. Any failure aborts the spawn: the node
/// never runs with the supervisor's identity by accident.
pub fn child_in_own_group_killed_with_parent(
    command: &mut std::process::Command,
    account: Option<(u32, u32)>,
) {
    command
        .process_group(0)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID");
    let parent_pid = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec; it only
    // calls async-signal-safe syscalls (prctl, getppid, setgroups,
    // setresgid, setresuid) and allocates nothing (errors are OS codes).
    unsafe {
        command.pre_exec(move || {
            // First: a change of credentials clears the death signal.
            if let Some((uid, gid)) = account {
                become_account(uid, gid)?;
            }
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

/// The account switch of [`child_in_own_group_killed_with_parent`], in the
/// forked child. Groups first: after the uid changes the process may no
/// longer change them. The caller arms `PR_SET_PDEATHSIG` afterwards (a
/// change of credentials clears it).
fn become_account(uid: u32, gid: u32) -> io::Result<()> {
    use nix::unistd::{Gid, Uid};
    let (uid, gid) = (Uid::from_raw(uid), Gid::from_raw(gid));
    nix::unistd::setgroups(&[gid])?;
    nix::unistd::setresgid(gid, gid, gid)?;
    nix::unistd::setresuid(uid, uid, uid)?;
    // SAFETY: prctl with integer arguments only.
    let cleared = unsafe {
        nix::libc::prctl(
            nix::libc::PR_CAP_AMBIENT,
            nix::libc::PR_CAP_AMBIENT_CLEAR_ALL as nix::libc::c_ulong,
            0 as nix::libc::c_ulong,
            0 as nix::libc::c_ulong,
            0 as nix::libc::c_ulong,
        )
    };
    if cleared != 0 {
        return Err(io::Error::last_os_error());
    }
    // And nothing in the permitted, effective or inheritable sets either
    // (capset v3: two 32-bit words per set; zero clears all of them).
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let none = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset reads one header and two data words, both live and
    // laid out as `linux/capability.h` declares them.
    let dropped =
        unsafe { nix::libc::syscall(nix::libc::SYS_capset, &raw const header, none.as_ptr()) };
    if dropped != 0 {
        return Err(io::Error::last_os_error());
    }
    nix::sys::prctl::set_no_new_privs()?;
    Ok(())
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

/// A value kept in anonymous pages of its own, which core dumps leave out
/// (`MADV_DONTDUMP`: neither the kernel's cores nor `gcore` copy them, even
/// where the process has been made dumpable again), which a forked child
/// sees as zeros (`MADV_WIPEONFORK`, Linux 4.14+) and which are locked in
/// RAM where the limit allows (`mlock`). On drop the value is dropped in
/// place (its own zeroizing `Drop` runs), then every byte of the pages is
/// overwritten with zeros and the pages are unmapped.
///
/// For the secrets that live as long as the vault is unlocked (the vault's
/// age identity and backup signing key, `vault::UnlockedVault`). Costs one
/// page per value.
pub struct SecretCell<T> {
    pages: SecretPages,
    _owns: PhantomData<T>,
}

// SAFETY: the cell owns its `T` exclusively (nothing else points into the
// pages), so it may cross or be shared between threads exactly as `T` may.
unsafe impl<T: Send> Send for SecretCell<T> {}
// SAFETY: as above; `&SecretCell<T>` gives only `&T`.
unsafe impl<T: Sync> Sync for SecretCell<T> {}

impl<T> SecretCell<T> {
    /// Moves `value` into fresh pages. Fails (and drops `value`) when the
    /// pages cannot be mapped or excluded from core dumps.
    pub fn new(value: T) -> io::Result<Self> {
        let page = page_size();
        assert!(
            std::mem::align_of::<T>() <= page,
            "over-aligned secret type"
        );
        let pages = SecretPages::map(std::mem::size_of::<T>().max(1).div_ceil(page) * page)?;
        // SAFETY: the mapping is at least `size_of::<T>()` bytes, page
        // aligned (so aligned for `T`), writable, and owned by `pages` alone.
        unsafe { pages.start.cast::<T>().as_ptr().write(value) };
        Ok(Self {
            pages,
            _owns: PhantomData,
        })
    }

    /// Start address and length of the pages (for the tests, which look the
    /// mapping up in `/proc/self/smaps`).
    #[cfg(test)]
    fn pages(&self) -> (usize, usize) {
        (self.pages.start.as_ptr() as usize, self.pages.length)
    }
}

impl<T> std::ops::Deref for SecretCell<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: `new` wrote a valid `T` there and only `Drop` removes it.
        unsafe { self.pages.start.cast::<T>().as_ref() }
    }
}

impl<T> Drop for SecretCell<T> {
    fn drop(&mut self) {
        // SAFETY: the `T` written by `new` is still there and is dropped
        // once; `SecretPages::drop` (after this) wipes and unmaps the bytes.
        unsafe { self.pages.start.cast::<T>().as_ptr().drop_in_place() }
    }
}

/// The mapping behind a [`SecretCell`]; wiped and unmapped on drop.
struct SecretPages {
    start: NonNull<c_void>,
    length: usize,
}

impl SecretPages {
    fn map(length: usize) -> io::Result<Self> {
        let size = NonZeroUsize::new(length).expect("a secret mapping is at least one page");
        // SAFETY: a new private anonymous mapping at an address the kernel
        // chooses: it aliases no memory Rust knows about.
        let start = unsafe {
            nix::sys::mman::mmap_anonymous(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE,
            )
        }?;
        let pages = Self { start, length };
        // SAFETY (all three): advice and locking on exactly the mapping
        // made above, which nothing else uses.
        unsafe { nix::sys::mman::madvise(start, length, MmapAdvise::MADV_DONTDUMP) }
            .map_err(|errno| io::Error::other(format!("madvise(MADV_DONTDUMP) failed: {errno}")))?;
        // Older kernels (EINVAL) keep the pages in a forked child until it
        // execs; the supervisor's children exec at once.
        let _ = unsafe { nix::sys::mman::madvise(start, length, MmapAdvise::MADV_WIPEONFORK) };
        // Already locked under `mlockall(MCL_FUTURE)`; otherwise best
        // effort within RLIMIT_MEMLOCK.
        let _ = unsafe { nix::sys::mman::mlock(start, length) };
        Ok(pages)
    }
}

impl Drop for SecretPages {
    fn drop(&mut self) {
        // SAFETY: the mapping is ours, `length` bytes long and writable; no
        // reference into it outlives the owning cell.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(self.start.cast::<u8>().as_ptr(), self.length)
        };
        bytes.zeroize();
        // SAFETY: unmapping exactly what `map` mapped, once. A failure
        // leaves zeroed pages mapped: nothing to report to.
        let _ = unsafe { nix::sys::mman::munmap(self.start, self.length) };
    }
}

/// Leaves the calling thread's stack out of core dumps (`MADV_DONTDUMP` on
/// the mapping that holds it, found in `/proc/self/maps`). The curve
/// arithmetic behind the vault's keys takes them by value, so copies land
/// on the stack of whichever thread used them, where nothing wipes them;
/// the supervisor calls this on its main thread and on every runtime
/// thread as it starts. The main thread's stack grows within the same
/// mapping, which keeps the flag.
pub fn exclude_current_stack_from_dumps() -> io::Result<()> {
    let marker = 0u8;
    let address = std::hint::black_box(&raw const marker) as usize;
    let (start, end) = mapping_of(address)?;
    let start = NonNull::new(start as *mut c_void)
        .ok_or_else(|| io::Error::other("a stack mapping at address 0"))?;
    // SAFETY: advice on a mapping that exists (listed, and holding a live
    // local); MADV_DONTDUMP changes only what a core dump copies.
    unsafe {
        nix::sys::mman::madvise(
            start,
            end - start.as_ptr() as usize,
            MmapAdvise::MADV_DONTDUMP,
        )
    }?;
    Ok(())
}

/// The mapping (start, end) of `/proc/self/maps` that holds `address`.
fn mapping_of(address: usize) -> io::Result<(usize, usize)> {
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    maps.lines()
        .filter_map(|line| {
            let (range, _) = line.split_once(' ')?;
            let (from, to) = range.split_once('-')?;
            Some((
                usize::from_str_radix(from, 16).ok()?,
                usize::from_str_radix(to, 16).ok()?,
            ))
        })
        .find(|(from, to)| (*from..*to).contains(&address))
        .ok_or_else(|| io::Error::other(format!("no mapping holds {address:x}")))
}

fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|size| usize::try_from(size).ok())
        .unwrap_or(4096)
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

    /// The flags `/proc/self/smaps` shows for the mapping that starts at `start`.
    fn vm_flags(start: usize) -> Vec<String> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let header = format!("{start:x}-");
        let mut lines = smaps.lines().skip_while(|line| !line.starts_with(&header));
        assert!(lines.next().is_some(), "no mapping at {start:x}");
        let flags = lines
            .find_map(|line| line.strip_prefix("VmFlags:"))
            .expect("VmFlags line");
        flags.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn a_secret_cell_lives_in_pages_core_dumps_leave_out() {
        let cell = super::SecretCell::new([7u8; 32]).unwrap();
        assert_eq!(*cell, [7u8; 32]);
        let (start, length) = cell.pages();
        assert_eq!(start % super::page_size(), 0);
        assert_eq!(length, super::page_size());
        let flags = vm_flags(start);
        assert!(
            flags.contains(&"dd".to_string()),
            "not excluded from dumps: {flags:?}"
        );
        assert!(
            flags.contains(&"wf".to_string()),
            "not wiped on fork: {flags:?}"
        );
        // An ordinary heap allocation is dumped: the check above can fail.
        let heap = Box::new([7u8; 1 << 20]);
        let (region, _) = super::mapping_of(heap.as_ptr() as usize).unwrap();
        assert!(!vm_flags(region).contains(&"dd".to_string()));
        drop(cell);
        // Unmapped on drop.
        assert!(
            !std::fs::read_to_string("/proc/self/smaps")
                .unwrap()
                .contains(&format!("\n{start:x}-"))
        );
    }

    /// The value's own `Drop` runs exactly once.
    #[test]
    fn a_secret_cell_drops_its_value() {
        let counter = std::sync::Arc::new(());
        let cell = super::SecretCell::new(counter.clone()).unwrap();
        assert_eq!(std::sync::Arc::strong_count(&counter), 2);
        drop(cell);
        assert_eq!(std::sync::Arc::strong_count(&counter), 1);
    }

    #[test]
    fn a_thread_stack_can_be_left_out_of_dumps() {
        std::thread::spawn(|| {
            let local = 0u8;
            let address = &raw const local as usize;
            super::exclude_current_stack_from_dumps().unwrap();
            let (start, _) = super::mapping_of(address).unwrap();
            assert!(vm_flags(start).contains(&"dd".to_string()));
        })
        .join()
        .unwrap();
    }
}
