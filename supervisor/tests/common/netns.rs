//! Linux network namespaces as separate "hosts" for multi-host tests.
//!
//! - [`Netns`]: a namespace named `pal-<pid>-<n>` with `lo` up and IP forwarding off. Dropping
//!   it kills every process still inside it and deletes it, so a panicking test leaves nothing
//!   behind. Namespaces left by a test process that died without unwinding (SIGKILL) are
//!   removed the next time a namespace is created (their owner pid is gone).
//! - [`link`]: a veth pair between two namespaces, with addresses; [`Link::set_down`] /
//!   [`Link::set_up`] cut and restore it for real. No default routes are added and forwarding
//!   stays off, so a namespace reaches only its directly linked neighbours.
//! - [`NsSshd`]: OpenSSH sshd inside a namespace (own host key, caller's `authorized_keys`),
//!   with the same settings as `tunnel_sshd.rs` (docs/bastion-sshd.md).
//! - [`Netns::can_reach`] and friends: TCP reachability probes from inside a namespace.
//! - [`Netns::in_netns`]: run Rust code (a blocking client, a tokio runtime) inside a namespace.
//!
//! Everything needs root (`ip netns`, `setns`); [`require_root`] fails loudly otherwise — CI
//! runs as root, so these tests are never skipped silently.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Every namespace this harness creates is named `pal-<pid>-<counter>`.
pub const NAME_PREFIX: &str = "pal-";
/// How long one reachability probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
const SSHD: &str = "/usr/sbin/sshd";
const SSHD_WAIT: Duration = Duration::from_secs(15);

static NAMESPACES: AtomicU32 = AtomicU32::new(0);
static LINKS: AtomicU32 = AtomicU32::new(0);
static STALE_CLEANUP: std::sync::Once = std::sync::Once::new();

/// Fails the test with a clear message unless it runs as root with `ip` available.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test builds network namespaces (`ip netns`) and must run as root; \
         CI runs as root — run it with sudo or in a root container"
    );
    assert!(
        Command::new("ip")
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success()),
        "`ip` (iproute2) is missing: install the iproute2 package"
    );
}

/// Runs a command to completion; panics with its output unless it succeeds. Returns stdout.
pub fn run_ok(command: &mut Command) -> String {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn ip(args: &[&str]) -> Output {
    Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip {args:?}: {e}"))
}

fn ip_ok(args: &[&str]) -> String {
    run_ok(Command::new("ip").args(args))
}

/// A network namespace, deleted (with every process inside it) on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
    label: String,
    /// Pids started through [`Netns::spawn`], killed first on drop.
    spawned: Mutex<Vec<u32>>,
}

impl Netns {
    /// Creates `pal-<pid>-<n>` with `lo` up and IPv4/IPv6 forwarding off. `label` ("val",
    /// "ba", …) only appears in messages.
    pub fn new(label: &str) -> Netns {
        require_root();
        STALE_CLEANUP.call_once(remove_stale_namespaces);
        let name = format!(
            "{NAME_PREFIX}{}-{}",
            std::process::id(),
            NAMESPACES.fetch_add(1, Ordering::Relaxed)
        );
        ip_ok(&["netns", "add", &name]);
        // From here on, Drop cleans up even if the rest panics.
        let netns = Netns {
            name,
            label: label.to_string(),
            spawned: Mutex::new(Vec::new()),
        };
        netns.ip(&["link", "set", "dev", "lo", "up"]);
        // Off by default in a new namespace; made explicit because the isolation of the
        // validator depends on it.
        run_ok(netns.command("sysctl").args([
            "-q",
            "-w",
            "net.ipv4.ip_forward=0",
            "net.ipv6.conf.all.forwarding=0",
        ]));
        netns
    }

    /// `pal-<pid>-<n>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The label given to [`Netns::new`].
    pub fn label(&self) -> &str {
        &self.label
    }

    /// `ip netns exec NAME program`: add arguments, then run or spawn it. Processes started this
    /// way live in the namespace and are killed when it drops (whoever spawned them).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// `ip -n NAME args…`, asserting success; returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        ip_ok(&full)
    }

    /// Runs `program args…` inside the namespace to completion, asserting success.
    pub fn run(&self, program: &str, args: &[&str]) -> String {
        run_ok(self.command(program).args(args))
    }

    /// Spawns a command built with [`Netns::command`] and tracks it; the returned handle kills
    /// it on drop, and the namespace kills it (and anything it forked) when it drops.
    pub fn spawn(&self, command: &mut Command) -> NsProcess {
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {command:?} in {}: {e}", self.label));
        self.spawned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(child.id());
        NsProcess { child }
    }

    /// Pids of every process inside the namespace (`ip netns pids`).
    pub fn pids(&self) -> Vec<u32> {
        namespace_pids(&self.name)
    }

    /// Connects to `host:port` from inside the namespace (bash `/dev/tcp` under `timeout`):
    /// `Ok` when a TCP connection was established, else why not ("Connection refused",
    /// "Network is unreachable", "timed out").
    pub fn probe(&self, host: &str, port: u16) -> Result<(), String> {
        let output = self
            .command("timeout")
            .arg(format!("{}", PROBE_TIMEOUT.as_secs_f64()))
            .args(["bash", "-c", &format!("exec 3<>/dev/tcp/{host}/{port}")])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run the probe in {}: {e}", self.label));
        if output.status.success() {
            return Ok(());
        }
        if output.status.code() == Some(124) {
            return Err(format!("timed out after {PROBE_TIMEOUT:?}"));
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(stderr
            .lines()
            .last()
            .map(|l| l.rsplit(": ").next().unwrap_or(l).to_string())
            .unwrap_or_else(|| output.status.to_string()))
    }

    /// Whether a TCP connection to `host:port` succeeds from inside the namespace.
    pub fn can_reach(&self, host: &str, port: u16) -> bool {
        self.probe(host, port).is_ok()
    }

    /// Asserts `host:port` is reachable from here.
    pub fn assert_reachable(&self, host: &str, port: u16) {
        if let Err(why) = self.probe(host, port) {
            panic!(
                "{host}:{port} should be reachable from {}: {why}",
                self.label
            );
        }
    }

    /// Asserts `host:port` is not reachable from here.
    pub fn assert_unreachable(&self, host: &str, port: u16) {
        assert!(
            self.probe(host, port).is_err(),
            "{host}:{port} should NOT be reachable from {}",
            self.label
        );
    }

    /// Waits until `host:port` is reachable (or panics after `timeout`).
    pub fn wait_reachable(&self, host: &str, port: u16, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            match self.probe(host, port) {
                Ok(()) => return,
                Err(why) if Instant::now() >= deadline => panic!(
                    "{host}:{port} not reachable from {} within {timeout:?}: {why}",
                    self.label
                ),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Runs `f` on a thread that has joined this namespace (`setns`), and returns its result.
    /// Sockets opened there belong to the namespace — also those of a tokio runtime built
    /// inside `f`, whose threads inherit it. The calling thread is not affected; a panic in
    /// `f` propagates.
    pub fn in_netns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = Path::new("/run/netns").join(&self.name);
        std::thread::scope(|scope| {
            let handle = scope.spawn(|| {
                enter_netns(&path).unwrap_or_else(|e| panic!("setns into {}: {e}", path.display()));
                f()
            });
            match handle.join() {
                Ok(value) => value,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    fn kill_everything(&self) {
        let own = std::process::id();
        let spawned = std::mem::take(&mut *self.spawned.lock().unwrap_or_else(|p| p.into_inner()));
        let inode = namespace_inode(&self.name);
        for pid in spawned {
            // Only while it is still inside this namespace (the pid may have been reused).
            if pid != own && inode.is_some() && process_netns(pid) == inode {
                kill_pid(pid);
            }
        }
        // Anything else inside (forked children, processes started with `command`).
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let pids: Vec<u32> = namespace_pids(&self.name)
                .into_iter()
                .filter(|&p| p != own)
                .collect();
            if pids.is_empty() || Instant::now() >= deadline {
                return;
            }
            for pid in pids {
                kill_pid(pid);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.kill_everything();
        for _ in 0..50 {
            let deleted = Command::new("ip")
                .args(["netns", "del", &self.name])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if deleted || !Path::new("/run/netns").join(&self.name).exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("warning: could not delete network namespace {}", self.name);
    }
}

/// A process spawned inside a namespace; SIGKILLed and reaped on drop.
#[derive(Debug)]
pub struct NsProcess {
    /// The process (`ip netns exec` execs the program, so this is the program itself).
    pub child: Child,
}

impl NsProcess {
    /// Process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL it and every descendant, and reap it.
    pub fn kill(&mut self) {
        kill_tree(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NsProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One end of a [`Link`].
#[derive(Debug, Clone)]
pub struct LinkEnd {
    /// Namespace name.
    pub netns: String,
    /// Interface name inside it (unique, ≤ 15 characters).
    pub ifname: String,
    /// Address with prefix, e.g. `10.77.1.2/24`.
    pub cidr: String,
}

impl LinkEnd {
    /// The address without its prefix length.
    pub fn ip(&self) -> &str {
        self.cidr.split('/').next().unwrap_or(&self.cidr)
    }

    fn set(&self, state: &str) {
        ip_ok(&["-n", &self.netns, "link", "set", "dev", &self.ifname, state]);
    }
}

/// A veth pair between two namespaces; deleted on drop (deleting either namespace deletes it
/// too).
#[derive(Debug)]
pub struct Link {
    /// The end in the first namespace.
    pub a: LinkEnd,
    /// The end in the second namespace.
    pub b: LinkEnd,
}

/// Connects `a` (address `a_addr`, e.g. `"10.77.1.2/24"`) and `b` (`b_addr`) with a veth pair
/// created directly inside the two namespaces, both ends up. Only the connected subnet's route
/// exists: no default route.
pub fn link(a: &Netns, a_addr: &str, b: &Netns, b_addr: &str) -> Link {
    let n = LINKS.fetch_add(1, Ordering::Relaxed);
    let ifname = |side: char| {
        let name = format!("pv{:x}-{n:x}{side}", std::process::id());
        assert!(name.len() <= 15, "interface name {name} is too long");
        name
    };
    let link = Link {
        a: LinkEnd {
            netns: a.name.clone(),
            ifname: ifname('a'),
            cidr: a_addr.to_string(),
        },
        b: LinkEnd {
            netns: b.name.clone(),
            ifname: ifname('b'),
            cidr: b_addr.to_string(),
        },
    };
    ip_ok(&[
        "link",
        "add",
        &link.a.ifname,
        "netns",
        &link.a.netns,
        "type",
        "veth",
        "peer",
        "name",
        &link.b.ifname,
        "netns",
        &link.b.netns,
    ]);
    for end in [&link.a, &link.b] {
        ip_ok(&[
            "-n",
            &end.netns,
            "addr",
            "add",
            &end.cidr,
            "dev",
            &end.ifname,
        ]);
    }
    link.set_up();
    link
}

impl Link {
    /// Cuts the link: `ip link set dev X down` on both ends. Packets are dropped from now on
    /// and the subnet's route disappears; established TCP connections are not reset (they see
    /// a dead peer, as with a real cable cut).
    pub fn set_down(&self) {
        self.a.set("down");
        self.b.set("down");
    }

    /// Restores the link (both ends up; addresses and the subnet route come back).
    pub fn set_up(&self) {
        self.a.set("up");
        self.b.set("up");
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["-n", &self.a.netns, "link", "del", &self.a.ifname])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `ssh-keygen -t ed25519` without passphrase at `path`; returns the public key line.
pub fn ssh_keygen(path: &Path) -> String {
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "", "-f"])
            .arg(path),
    );
    std::fs::read_to_string(path.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string()
}

/// `SHA256:…` as `ssh-keygen -lf` prints it.
pub fn ssh_fingerprint(public_key: &Path) -> String {
    let listing = run_ok(Command::new("ssh-keygen").arg("-lf").arg(public_key));
    listing.split_whitespace().nth(1).unwrap().to_string()
}

/// OpenSSH sshd running inside a namespace, killed (listener and per-connection processes)
/// on drop.
#[derive(Debug)]
pub struct NsSshd {
    dir: tempfile::TempDir,
    netns: String,
    label: String,
    listen_ip: String,
    port: u16,
    host_public_key: String,
    host_fingerprint: String,
    process: Option<NsProcess>,
}

impl NsSshd {
    /// Starts sshd in `netns` on `listen_ip:port` with its own host key and `authorized_keys`
    /// as the whole authorized_keys file (e.g.
    /// `restrict,port-forwarding,permitopen="10.77.3.2:26600" ssh-ed25519 AAAA…`), and waits
    /// until it accepts connections from inside the namespace.
    pub fn start(netns: &Netns, listen_ip: &str, port: u16, authorized_keys: &str) -> NsSshd {
        Self::start_with(netns, listen_ip, port, authorized_keys, "")
    }

    /// As [`NsSshd::start`], with extra sshd_config lines. They come first, so they override
    /// the defaults (sshd keeps the first value of a keyword), e.g. `"ClientAliveInterval 1\n"`.
    pub fn start_with(
        netns: &Netns,
        listen_ip: &str,
        port: u16,
        authorized_keys: &str,
        extra_config: &str,
    ) -> NsSshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: install openssh-server (scripts/test.sh does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let host_key = dir.path().join("host_ed25519");
        let host_public_key = ssh_keygen(&host_key);
        let authorized_keys_file = dir.path().join("authorized_keys");
        let mut keys = authorized_keys.trim_end().to_string();
        keys.push('\n');
        std::fs::write(&authorized_keys_file, keys).unwrap();
        let mut extra = extra_config.trim_end().to_string();
        if !extra.is_empty() {
            extra.push('\n');
        }
        std::fs::write(
            dir.path().join("sshd_config"),
            format!(
                "{extra}\
                 Port {port}\n\
                 ListenAddress {listen_ip}\n\
                 HostKey {host_key}\n\
                 AuthorizedKeysFile {authorized_keys}\n\
                 PidFile {pid_file}\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 UsePAM no\n\
                 StrictModes no\n\
                 AllowTcpForwarding yes\n\
                 AllowStreamLocalForwarding yes\n\
                 StreamLocalBindUnlink yes\n\
                 ClientAliveInterval 5\n\
                 ClientAliveCountMax 3\n\
                 LogLevel VERBOSE\n",
                host_key = host_key.display(),
                authorized_keys = authorized_keys_file.display(),
                pid_file = dir.path().join("sshd.pid").display(),
            ),
        )
        .unwrap();
        // sshd's privilege-separation directory.
        std::fs::create_dir_all("/run/sshd").unwrap();
        let mut sshd = NsSshd {
            host_fingerprint: ssh_fingerprint(&host_key.with_extension("pub")),
            host_public_key,
            dir,
            netns: netns.name.clone(),
            label: format!("sshd in {}", netns.label),
            listen_ip: listen_ip.to_string(),
            port,
            process: None,
        };
        sshd.spawn(netns);
        sshd
    }

    /// Starts sshd again after [`NsSshd::kill`], same host key and config.
    pub fn restart(&mut self, netns: &Netns) {
        assert_eq!(netns.name, self.netns, "restart in the namespace it ran in");
        self.kill();
        self.spawn(netns);
    }

    fn spawn(&mut self, netns: &Netns) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("sshd.log"))
            .unwrap();
        let mut process = netns.spawn(
            netns
                .command(SSHD)
                .args(["-D", "-e", "-f"])
                .arg(self.dir.path().join("sshd_config"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log),
        );
        let deadline = Instant::now() + SSHD_WAIT;
        while !netns.can_reach(&self.listen_ip, self.port) {
            if let Ok(Some(status)) = process.child.try_wait() {
                panic!("{} exited with {status}: {}", self.label, self.log());
            }
            assert!(
                Instant::now() < deadline,
                "{} did not listen on {}:{} within {SSHD_WAIT:?}: {}",
                self.label,
                self.listen_ip,
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.process = Some(process);
    }

    /// SIGKILLs the listener and every per-connection sshd it forked: the bastion vanishes as
    /// in a crash. [`NsSshd::restart`] brings it back.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Listen address.
    pub fn ip(&self) -> &str {
        &self.listen_ip
    }

    /// Listen port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Host key fingerprint, `SHA256:…` (`ssh-keygen -lf`), for pinning.
    pub fn fingerprint(&self) -> &str {
        &self.host_fingerprint
    }

    /// Host public key line, `ssh-ed25519 AAAA…`.
    pub fn host_public_key(&self) -> &str {
        &self.host_public_key
    }

    /// A known_hosts line for this server: `10.77.1.1 ssh-ed25519 AAAA…` on port 22,
    /// `[10.77.1.1]:2222 ssh-ed25519 AAAA…` otherwise.
    pub fn known_hosts_line(&self) -> String {
        let host = if self.port == 22 {
            self.listen_ip.clone()
        } else {
            format!("[{}]:{}", self.listen_ip, self.port)
        };
        format!("{host} {}", self.host_public_key)
    }

    /// sshd's log (`-e`, LogLevel VERBOSE).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// A path in sshd's private directory (e.g. for reverse-forwarded Unix sockets).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for NsSshd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `ip netns pids NAME`.
fn namespace_pids(name: &str) -> Vec<u32> {
    let Ok(output) = Command::new("ip")
        .args(["netns", "pids", name])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn namespace_inode(name: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(Path::new("/run/netns").join(name))
        .ok()
        .map(|m| m.ino())
}

fn process_netns(pid: u32) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|m| m.ino())
}

fn kill_pid(pid: u32) {
    let Ok(raw) = i32::try_from(pid) else { return };
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(raw),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// SIGKILLs `root`'s descendants (deepest first), then `root`. sshd's per-connection processes
/// run in their own sessions, so a process-group kill would miss them.
fn kill_tree(root: u32) {
    let mut doomed = vec![root];
    let mut index = 0;
    while index < doomed.len() {
        let parent = doomed[index];
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // Fields after the `(comm)`: state, ppid, …
            let after_comm = stat.rsplit(')').next().unwrap_or_default();
            let ppid = after_comm
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(parent) && !doomed.contains(&pid) {
                doomed.push(pid);
            }
        }
        index += 1;
    }
    let own = std::process::id();
    for pid in doomed.iter().rev().filter(|&&p| p != own) {
        kill_pid(*pid);
    }
}

/// Deletes `pal-<pid>-<n>` namespaces whose creating test process no longer exists (it was
/// SIGKILLed before its Drop ran), killing whatever still runs inside them. Namespaces of
/// live processes — other tests running in parallel — are left alone.
fn remove_stale_namespaces() {
    let Ok(output) = Command::new("ip")
        .args(["netns", "list"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    else {
        return;
    };
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some((owner, counter)) = name
            .strip_prefix(NAME_PREFIX)
            .and_then(|rest| rest.split_once('-'))
        else {
            continue;
        };
        let (Ok(owner), Ok(_)) = (owner.parse::<u32>(), counter.parse::<u32>()) else {
            continue;
        };
        if owner == std::process::id() || Path::new(&format!("/proc/{owner}")).exists() {
            continue;
        }
        for pid in namespace_pids(name) {
            kill_pid(pid);
        }
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Moves the calling thread into the namespace mounted at `path`.
fn enter_netns(path: &Path) -> std::io::Result<()> {
    let file = std::fs::File::open(path)?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
}
