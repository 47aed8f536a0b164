//! Linux network namespaces as separate "hosts" for multi-host tests.
//!
//! - [`Netns`]: a namespace named `pal-<pid>-<n>` with `lo` up and IP forwarding off. Dropping
//!   it kills every process still inside it and deletes it, so a panicking test leaves nothing
//!   behind. Namespaces left by a test process that died without unwinding (SIGKILL) are
//!   removed the next time a namespace is created (their owner pid is gone).
//! - [`link`]: a veth pair between two namespaces, with addresses; [`Link::set_down`] /
//!   [`Link::set_up`] cut and restore it for real. No default routes are added and forwarding
//!   stays off, so a namespace reaches only its directly linked neighbours.
//! - [`NsSshd`]: OpenSSH sshd inside a namespace (own host key, caller's `authorized_keys`):
//!   the shared fixture [`palisade_testkit::Sshd`] (docs/bastion-sshd.md), run through
//!   `ip netns exec` and probed from inside the namespace.
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

use palisade_testkit::{Sshd, SshdOptions};

/// Every namespace this harness creates is named `pal-<pid>-<counter>`.
pub const NAME_PREFIX: &str = "pal-";
/// How long one reachability probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

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
    palisade_testkit::run(command).unwrap_or_else(|e| panic!("{e}"))
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
        self.track(child.id());
        NsProcess { child }
    }

    /// Kills `pid` first when the namespace drops (if it is still inside).
    fn track(&self, pid: u32) {
        self.spawned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(pid);
    }

    /// Pids of every process inside the namespace (`ip netns pids`).
    pub fn pids(&self) -> Vec<u32> {
        namespace_pids(&self.name)
    }

    /// Connects to `host:port` from inside the namespace (bash `/dev/tcp` under `timeout`):
    /// `Ok` when a TCP connection was established, else why not ("Connection refused",
    /// "Network is unreachable", "timed out").
    pub fn probe(&self, host: &str, port: u16) -> Result<(), String> {
        probe_in(&self.name, &self.label, host, port)
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
        palisade_testkit::kill_tree(self.child.id(), nix::sys::signal::Signal::SIGKILL);
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

    /// Shapes both directions like an uplink of `rate` (tc's syntax, e.g. `"4mbit"`): a token
    /// bucket (`tc qdisc replace … root tbf`) on each end's egress with a 32 kbit burst and a
    /// queue of at most 200 ms (a modem's buffer; a shorter one drops a packet of every flow,
    /// votes' too, whenever bulk fills it), so the link, not a buffer, is the bottleneck.
    pub fn shape(&self, rate: &str) {
        for end in [&self.a, &self.b] {
            run_ok(Command::new("ip").args([
                "netns",
                "exec",
                &end.netns,
                "tc",
                "qdisc",
                "replace",
                "dev",
                &end.ifname,
                "root",
                "tbf",
                "rate",
                rate,
                "burst",
                "32kbit",
                "latency",
                "200ms",
            ]));
        }
    }
}

impl LinkEnd {
    /// Makes this end's egress a slow uplink with a long queue (`tc qdisc replace … root tbf`,
    /// `rate`, 32 kbit burst, up to `queue` of waiting — tc's syntax, e.g. `"256kbit"`,
    /// `"1500ms"`): a flood through it makes every packet behind it wait about `queue`,
    /// as a flooded bastion's uplink does. [`LinkEnd::clear_shaping`] undoes it.
    pub fn congest(&self, rate: &str, queue: &str) {
        run_ok(Command::new("ip").args([
            "netns",
            "exec",
            &self.netns,
            "tc",
            "qdisc",
            "replace",
            "dev",
            &self.ifname,
            "root",
            "tbf",
            "rate",
            rate,
            "burst",
            "32kbit",
            "latency",
            queue,
        ]));
    }

    /// Back to the default queueing discipline.
    pub fn clear_shaping(&self) {
        run_ok(Command::new("ip").args([
            "netns",
            "exec",
            &self.netns,
            "tc",
            "qdisc",
            "del",
            "dev",
            &self.ifname,
            "root",
        ]));
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
    palisade_testkit::ssh_keygen(path).unwrap_or_else(|e| panic!("{e}"))
}

/// `SHA256:…` as `ssh-keygen -lf` prints it.
pub fn ssh_fingerprint(public_key: &Path) -> String {
    palisade_testkit::ssh_fingerprint(public_key).unwrap_or_else(|e| panic!("{e}"))
}

/// OpenSSH sshd running inside a namespace ([`palisade_testkit::Sshd`] under `ip netns exec`,
/// LogLevel VERBOSE), killed (listener and per-connection processes) on drop.
#[derive(Debug)]
pub struct NsSshd {
    sshd: Sshd,
    netns: String,
    label: String,
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
        let label = format!("sshd in {}", netns.label);
        let mut options = SshdOptions::new(listen_ip, port, authorized_keys);
        options.extra_config = extra_config.to_string();
        options.log_level = Some("VERBOSE".into());
        options.exec_prefix = ["ip", "netns", "exec", &netns.name]
            .map(String::from)
            .to_vec();
        let (name, netns_label) = (netns.name.clone(), netns.label.clone());
        options.probe = Some(Box::new(move |host, port| {
            probe_in(&name, &netns_label, host, port).is_ok()
        }));
        let sshd = Sshd::start(options).unwrap_or_else(|e| panic!("{label}: {e}"));
        let sshd = NsSshd {
            sshd,
            netns: netns.name.clone(),
            label,
        };
        sshd.track(netns);
        sshd
    }

    /// Starts sshd again after [`NsSshd::kill`], same host key and config.
    pub fn restart(&mut self, netns: &Netns) {
        assert_eq!(netns.name, self.netns, "restart in the namespace it ran in");
        let label = &self.label;
        self.sshd
            .restart()
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        self.track(netns);
    }

    /// The namespace kills sshd first when it drops.
    fn track(&self, netns: &Netns) {
        if let Some(pid) = self.sshd.pid() {
            netns.track(pid);
        }
    }

    /// SIGKILLs the listener and every per-connection sshd it forked: the bastion vanishes as
    /// in a crash. [`NsSshd::restart`] brings it back.
    pub fn kill(&mut self) {
        self.sshd.kill();
    }

    /// Listen address.
    pub fn ip(&self) -> &str {
        self.sshd.ip()
    }

    /// Listen port.
    pub fn port(&self) -> u16 {
        self.sshd.port()
    }

    /// Host key fingerprint, `SHA256:…` (`ssh-keygen -lf`), for pinning.
    pub fn fingerprint(&self) -> &str {
        self.sshd.fingerprint()
    }

    /// Host public key line, `ssh-ed25519 AAAA…`.
    pub fn host_public_key(&self) -> &str {
        self.sshd.host_public_key()
    }

    /// A known_hosts line for this server: `10.77.1.1 ssh-ed25519 AAAA…` on port 22,
    /// `[10.77.1.1]:2222 ssh-ed25519 AAAA…` otherwise.
    pub fn known_hosts_line(&self) -> String {
        self.sshd.known_hosts_line()
    }

    /// sshd's log (`-e`, LogLevel VERBOSE).
    pub fn log(&self) -> String {
        self.sshd.log()
    }

    /// A path in sshd's private directory (e.g. for reverse-forwarded Unix sockets).
    pub fn path(&self, name: &str) -> PathBuf {
        self.sshd.path(name)
    }
}

/// [`Netns::probe`] by namespace name (for closures that outlive the borrow of a [`Netns`]).
fn probe_in(netns: &str, label: &str, host: &str, port: u16) -> Result<(), String> {
    let output = Command::new("ip")
        .args(["netns", "exec", netns, "timeout"])
        .arg(format!("{}", PROBE_TIMEOUT.as_secs_f64()))
        .args(["bash", "-c", &format!("exec 3<>/dev/tcp/{host}/{port}")])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run the probe in {label}: {e}"));
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
