//! A shaped link for `tunnel_vote_*` ([`crate::votes`]): one network
//! namespace for the bastion side, a veth pair into it with `tc tbf` on both
//! ends' egress for the rate, and a userspace delay proxy inside the
//! namespace, after the shaped link, for the one-way delay (this machine has
//! no `netem`).
//!
//! ```text
//!  root namespace (bench, tunnel client, ssh)      namespace pvote-<pid>
//!  10.213.0.1 ── veth, tbf 50 Mbit/s each way ── 10.213.0.2:<proxy> ──(+10 ms)── 127.0.0.1:<sshd|echo|sink>
//! ```
//!
//! - [`Bastion`]: the namespace and the link; deleted on drop (processes
//!   inside killed first), on every path, panics included. Namespaces left by
//!   a benchmark that was SIGKILLed are removed the next time one is created.
//! - [`NsServer`]: a blocking TCP server bound inside the namespace (echo,
//!   counting sink, the delay proxy), one thread per connection.
//! - [`DelayProxy`]: `10.213.0.2:<port>` → `127.0.0.1:<target>` in the
//!   namespace, each direction through a delay line that writes a chunk once
//!   `now ≥ read time + delay`, in order, holding at most
//!   [`DELAY_LINE_BOUND`] bytes (it stops reading when full).
//!
//! Everything needs root (`ip netns`, `tc`, `setns`): [`require_root`] says
//! so clearly instead of skipping.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

/// The root namespace's end of the link.
pub const ROOT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 1);
/// The bastion namespace's end: where the delay proxies listen.
pub const NS_ADDR: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 2);
const PREFIX_LEN: u8 = 30;
/// The shaped rate, each direction.
pub const RATE_MBIT: u32 = 50;
/// `tc tbf` bucket: 4 KB, under three full-size frames, so that the rate
/// holds at millisecond scale (tbf schedules with hrtimers; a larger bucket
/// only lets bursts through at veth speed).
pub const TBF_BURST: &str = "32kbit";
/// `tc tbf` queue: what may wait for tokens, in time at the rate (≈ 66 KB
/// at 50 Mbit/s with the bucket); beyond it packets are dropped, as in a
/// modem's buffer. 10 ms rather than 50 ms: with a 50 ms queue, BBR (this
/// machine's congestion control) swings it by ~20 ms more with one bulk flow
/// than with two, so the limit would depend on how many flows carry the
/// bulk; at 10 ms one and two flows give the same p99 (docs/benchmarks.md).
pub const TBF_LATENCY: &str = "10ms";
/// Added by the delay proxy in each direction.
pub const ONE_WAY_DELAY: Duration = Duration::from_millis(10);
/// What one direction of one proxied connection may hold (bytes); reading
/// stops while it is full. Behind the 50 Mbit/s link it holds about
/// rate × delay ≈ 62 KB.
pub const DELAY_LINE_BOUND: usize = 4 << 20;

/// Every namespace this benchmark creates is named `pvote-<pid>`.
const NS_PREFIX: &str = "pvote-";
/// Accepting threads poll their (non-blocking) listener this often.
const ACCEPT_POLL: Duration = Duration::from_millis(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Fails unless this runs as root with `ip` and `tc` (iproute2) available.
pub fn require_root() -> anyhow::Result<()> {
    ensure!(
        nix::unistd::geteuid().is_root(),
        "the vote-latency benchmark builds a network namespace and shapes a veth with `tc`: \
         it must run as root (sudo, or a root container)"
    );
    for (tool, arg) in [("ip", "-V"), ("tc", "-V")] {
        let works = Command::new(tool)
            .arg(arg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        ensure!(
            works,
            "`{tool}` (iproute2) is missing or does not run: install the iproute2 package"
        );
    }
    Ok(())
}

/// Runs a command to completion; an error with its stderr unless it succeeds.
fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program} {}", args.join(" ")))?;
    ensure!(
        output.status.success(),
        "`{program} {}` failed ({}): {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs a command, ignoring how it ends (cleanup).
fn run_quietly(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// The bastion's network namespace and the shaped veth link into it (one
/// per process at a time: the names carry the pid).
pub struct Bastion {
    name: String,
    /// The veth end in the root namespace (deleting it deletes the pair).
    root_if: String,
    /// The veth end inside the namespace.
    ns_if: String,
}

impl Bastion {
    /// `pvote-<pid>` with `lo` up, `ROOT_ADDR/30` ↔ `NS_ADDR/30` over a veth
    /// pair, and `tc qdisc add dev <end> root tbf rate 50mbit burst …
    /// latency …` on both ends.
    pub fn create() -> anyhow::Result<Bastion> {
        require_root()?;
        remove_stale();
        check_addresses_free()?;
        let pid = std::process::id();
        let name = format!("{NS_PREFIX}{pid}");
        let (root_if, ns_if) = interface_names(pid);
        ensure!(root_if.len() <= 15, "interface name {root_if} is too long");
        run("ip", &["netns", "add", &name]).context("creating the bastion's network namespace")?;
        // From here on, Drop cleans up whatever the rest leaves behind.
        let bastion = Bastion {
            name,
            root_if,
            ns_if,
        };
        bastion.ip(&["link", "set", "dev", "lo", "up"])?;
        run(
            "ip",
            &[
                "link",
                "add",
                &bastion.root_if,
                "type",
                "veth",
                "peer",
                "name",
                &bastion.ns_if,
                "netns",
                &bastion.name,
            ],
        )
        .context("creating the veth pair")?;
        let root_cidr = format!("{ROOT_ADDR}/{PREFIX_LEN}");
        let ns_cidr = format!("{NS_ADDR}/{PREFIX_LEN}");
        run("ip", &["addr", "add", &root_cidr, "dev", &bastion.root_if])?;
        bastion.ip(&["addr", "add", &ns_cidr, "dev", &bastion.ns_if])?;
        run("ip", &["link", "set", "dev", &bastion.root_if, "up"])?;
        bastion.ip(&["link", "set", "dev", &bastion.ns_if, "up"])?;
        let rate = format!("{RATE_MBIT}mbit");
        let tbf = [
            "root",
            "tbf",
            "rate",
            &rate,
            "burst",
            TBF_BURST,
            "latency",
            TBF_LATENCY,
        ];
        let mut root_tc = vec!["qdisc", "add", "dev", &bastion.root_if];
        root_tc.extend(tbf);
        run("tc", &root_tc).context("shaping the root end with tc tbf")?;
        let mut ns_tc = vec!["-n", &bastion.name, "qdisc", "add", "dev", &bastion.ns_if];
        ns_tc.extend(tbf);
        run("tc", &ns_tc).context("shaping the namespace's end with tc tbf")?;
        Ok(bastion)
    }

    /// `pvote-<pid>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// `ip -n NAME args…`.
    fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// `ip netns exec NAME`, to run a program inside.
    pub fn exec_prefix(&self) -> Vec<String> {
        ["ip", "netns", "exec", &self.name]
            .map(String::from)
            .to_vec()
    }

    /// Spawns a thread that joins the namespace (`setns`) and runs `f`;
    /// sockets it (and threads it spawns) opens belong to the namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        label: &str,
        f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<JoinHandle<anyhow::Result<T>>> {
        let path = self.path();
        Ok(std::thread::Builder::new()
            .name(label.to_string())
            .spawn(move || {
                enter(&path)?;
                f()
            })?)
    }

    /// A probe for [`palisade_testkit::SshdOptions::probe`]: a TCP connect
    /// from a thread inside the namespace.
    pub fn probe(&self) -> palisade_testkit::Probe {
        let path = self.path();
        Box::new(move |host: &str, port: u16| {
            let (path, host) = (path.clone(), host.to_string());
            std::thread::spawn(move || {
                let Ok(addr) = format!("{host}:{port}").parse::<SocketAddr>() else {
                    return false;
                };
                enter(&path).is_ok()
                    && TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
            })
            .join()
            .unwrap_or(false)
        })
    }

    /// The `tc -s qdisc` counters of both ends (sent, dropped, overlimits),
    /// for the report.
    pub fn qdisc_stats(&self) -> String {
        let root = run("tc", &["-s", "qdisc", "show", "dev", &self.root_if]).unwrap_or_default();
        let ns = run(
            "tc",
            &["-n", &self.name, "-s", "qdisc", "show", "dev", &self.ns_if],
        )
        .unwrap_or_default();
        let summary = |text: &str| {
            text.lines()
                .map(str::trim)
                .find(|line| line.starts_with("Sent "))
                .unwrap_or("?")
                .to_string()
        };
        format!(
            "uplink (root egress): {}; downlink (bastion egress): {}",
            summary(&root),
            summary(&ns)
        )
    }
}

impl Drop for Bastion {
    fn drop(&mut self) {
        kill_inside(&self.name);
        // Deleting one end of a veth deletes both.
        run_quietly("ip", &["link", "del", &self.root_if]);
        for _ in 0..50 {
            if run_quietly("ip", &["netns", "del", &self.name]) || !self.path().exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "palisade-bench: warning: could not delete network namespace {}",
            self.name
        );
    }
}

/// The veth ends of the benchmark process `pid`: root side, namespace side.
fn interface_names(pid: u32) -> (String, String) {
    (format!("pvr{pid:x}"), format!("pvn{pid:x}"))
}

/// Moves the calling thread into the namespace mounted at `path`.
fn enter(path: &Path) -> anyhow::Result<()> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("setns into {}", path.display()))
}

/// `ip netns pids NAME`.
fn namespace_pids(name: &str) -> Vec<i32> {
    run("ip", &["netns", "pids", name])
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|pid| pid.parse().ok())
        .collect()
}

/// SIGKILLs every process inside `name` (never this one), until none is left
/// or 5 s have passed.
fn kill_inside(name: &str) {
    let own = std::process::id() as i32;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids: Vec<i32> = namespace_pids(name)
            .into_iter()
            .filter(|pid| *pid != own)
            .collect();
        if pids.is_empty() || Instant::now() >= deadline {
            return;
        }
        for pid in pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Deletes `pvote-<pid>` namespaces whose benchmark process is gone (it was
/// killed before its Drop ran), with whatever still runs inside them, and
/// their veth pairs.
fn remove_stale() {
    let listing = run("ip", &["netns", "list"]).unwrap_or_default();
    for line in listing.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(Ok(owner)) = name.strip_prefix(NS_PREFIX).map(str::parse::<u32>) else {
            continue;
        };
        // Ours can only be left from an earlier process with the same pid:
        // a process has one bastion at a time, and creates it after this.
        if owner != std::process::id() && Path::new(&format!("/proc/{owner}")).exists() {
            continue;
        }
        eprintln!("palisade-bench: removing stale namespace {name} and its link");
        kill_inside(name);
        // The namespace may outlive its name for a while; its link must not.
        run_quietly("ip", &["link", "del", &interface_names(owner).0]);
        run_quietly("ip", &["netns", "del", name]);
    }
}

/// Fails clearly if a route or address in the root namespace already covers
/// `10.213.0.0/30` (another run of this benchmark, or a real network).
fn check_addresses_free() -> anyhow::Result<()> {
    let routes = run("ip", &["-4", "route", "show", "table", "all"])?;
    let addresses = run("ip", &["-4", "-o", "addr", "show"])?;
    let covers = |prefix: &str| -> bool {
        let (net, len) = match prefix.split_once('/') {
            Some((net, len)) => (net, len.parse::<u32>().unwrap_or(32)),
            None => (prefix, 32),
        };
        let Ok(net) = net.parse::<Ipv4Addr>() else {
            return false;
        };
        if len == 0 || len > 32 {
            return false;
        }
        let mask = u32::MAX << (32 - len);
        [ROOT_ADDR, NS_ADDR]
            .iter()
            .any(|ip| u32::from(*ip) & mask == u32::from(net) & mask)
    };
    for line in routes.lines() {
        let mut words = line.split_whitespace();
        let mut first = words.next().unwrap_or_default();
        if matches!(
            first,
            "local"
                | "broadcast"
                | "unicast"
                | "anycast"
                | "multicast"
                | "unreachable"
                | "blackhole"
                | "prohibit"
                | "throw"
                | "nat"
        ) {
            first = words.next().unwrap_or_default();
        }
        if first != "default" && covers(first) {
            bail!(
                "the root namespace already routes {first} (`{line}`), which covers the \
                 benchmark's link {ROOT_ADDR}/{PREFIX_LEN}; is another run of the benchmark \
                 going on? Remove that route or run elsewhere"
            );
        }
    }
    for line in addresses.lines() {
        let mut words = line.split_whitespace();
        while let Some(word) = words.next() {
            if word == "inet"
                && let Some(cidr) = words.next()
                && covers(cidr)
            {
                bail!(
                    "an interface already has {cidr} (`{}`), which clashes with the \
                     benchmark's link {ROOT_ADDR}/{PREFIX_LEN}",
                    line.trim()
                );
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Servers inside the namespace

/// What a server does with each accepted connection (on its own thread);
/// other sockets it opens go to the [`Tracker`], so that they are shut
/// down with the server.
pub type Handler = Arc<dyn Fn(TcpStream, &Tracker) + Send + Sync>;

/// The sockets of a server's connections, shut down when it drops.
#[derive(Clone, Default)]
pub struct Tracker(Arc<Mutex<Vec<TcpStream>>>);

impl Tracker {
    pub fn track(&self, stream: &TcpStream) {
        if let Ok(clone) = stream.try_clone() {
            lock(&self.0).push(clone);
        }
    }

    fn shutdown_all(&self) {
        for stream in lock(&self.0).drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// A blocking TCP server bound inside the bastion's namespace; one thread
/// per connection. Dropping it stops accepting, shuts every connection down
/// and joins every thread.
pub struct NsServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<anyhow::Result<()>>>,
    streams: Tracker,
    workers: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl NsServer {
    pub fn start(
        bastion: &Bastion,
        label: &str,
        listen: SocketAddr,
        handler: Handler,
    ) -> anyhow::Result<NsServer> {
        let stop = Arc::new(AtomicBool::new(false));
        let streams = Tracker::default();
        let workers = Arc::new(Mutex::new(Vec::new()));
        let (bound, addr) = mpsc::channel();
        let acceptor = {
            let (stop, streams, workers) = (stop.clone(), streams.clone(), workers.clone());
            let label = label.to_string();
            bastion.spawn(&format!("ns-{label}"), move || {
                let listener = match TcpListener::bind(listen)
                    .and_then(|listener| listener.set_nonblocking(true).map(|()| listener))
                {
                    Ok(listener) => listener,
                    Err(error) => {
                        let _ = bound.send(Err(format!("binding {listen}: {error}")));
                        return Ok(());
                    }
                };
                let _ = bound.send(listener.local_addr().map_err(|error| error.to_string()));
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            stream.set_nonblocking(false)?;
                            streams.track(&stream);
                            let (handler, tracker) = (handler.clone(), streams.clone());
                            // Threads inherit the namespace of the thread
                            // that spawns them: this one.
                            let worker = std::thread::Builder::new()
                                .name(format!("ns-{label}-conn"))
                                .spawn(move || handler(stream, &tracker))?;
                            lock(&workers).push(worker);
                        }
                        Err(error) if error.kind() == ErrorKind::WouldBlock => {
                            std::thread::sleep(ACCEPT_POLL);
                        }
                        Err(error) if error.kind() == ErrorKind::Interrupted => {}
                        Err(error) => return Err(error.into()),
                    }
                }
                Ok(())
            })?
        };
        let addr = match addr.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(addr)) => addr,
            Ok(Err(error)) => bail!("{label} in the bastion's namespace: {error}"),
            Err(mpsc::RecvTimeoutError::Disconnected) => match acceptor.join() {
                Ok(Err(error)) => {
                    return Err(error.context(format!("{label} in the bastion's namespace")));
                }
                _ => bail!("{label} did not start in the bastion's namespace"),
            },
            Err(mpsc::RecvTimeoutError::Timeout) => {
                stop.store(true, Ordering::SeqCst);
                bail!("{label} did not start in the bastion's namespace within 5 s")
            }
        };
        Ok(NsServer {
            addr,
            stop,
            acceptor: Some(acceptor),
            streams,
            workers,
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for NsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        self.streams.shutdown_all();
        let workers: Vec<_> = lock(&self.workers).drain(..).collect();
        for worker in workers {
            let _ = worker.join();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Echoes everything back at once (`TCP_NODELAY`), until EOF.
pub fn echo_handler() -> Handler {
    Arc::new(|stream: TcpStream, _: &Tracker| {
        let _ = stream.set_nodelay(true);
        let Ok(mut reader) = stream.try_clone() else {
            return;
        };
        let mut writer = stream;
        let mut buffer = vec![0u8; 64 << 10];
        loop {
            match reader.read(&mut buffer) {
                Ok(0) => return,
                Ok(read) => {
                    if writer.write_all(&buffer[..read]).is_err() {
                        return;
                    }
                }
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    })
}

/// Reads until EOF, adding every byte to `received` as it arrives.
pub fn sink_handler(received: Arc<AtomicU64>) -> Handler {
    Arc::new(move |mut stream: TcpStream, _: &Tracker| {
        let mut buffer = vec![0u8; 256 << 10];
        loop {
            match stream.read(&mut buffer) {
                Ok(0) => return,
                Ok(read) => {
                    received.fetch_add(read as u64, Ordering::Relaxed);
                }
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    })
}

// ---------------------------------------------------------------------------
// The delay proxy

/// `NS_ADDR:<port>` → `127.0.0.1:<target>` inside the namespace, with
/// [`ONE_WAY_DELAY`] added in each direction.
pub struct DelayProxy {
    server: NsServer,
}

impl DelayProxy {
    pub fn start(bastion: &Bastion, label: &str, target_port: u16) -> anyhow::Result<DelayProxy> {
        let target = SocketAddr::from(([127, 0, 0, 1], target_port));
        let handler: Handler = Arc::new(move |client: TcpStream, tracker: &Tracker| {
            // This thread is in the namespace: 127.0.0.1 is its loopback.
            let Ok(upstream) = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) else {
                let _ = client.shutdown(Shutdown::Both);
                return;
            };
            tracker.track(&upstream);
            let _ = proxy(client, upstream);
        });
        let server = NsServer::start(
            bastion,
            &format!("delay-{label}"),
            SocketAddr::from((NS_ADDR, 0)),
            handler,
        )?;
        Ok(DelayProxy { server })
    }

    /// Where clients connect (`NS_ADDR:<port>`).
    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }
}

/// Both directions of one proxied connection through delay lines; returns
/// when both are done.
fn proxy(client: TcpStream, upstream: TcpStream) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    upstream.set_nodelay(true)?;
    let sockets = Arc::new([client.try_clone()?, upstream.try_clone()?]);
    let up = Arc::new(Line::default());
    let down = Arc::new(Line::default());
    let mut threads = Vec::new();
    for (line, from, to) in [
        (up.clone(), client.try_clone()?, upstream.try_clone()?),
        (down.clone(), upstream, client),
    ] {
        let (reader_line, reader_sockets) = (line.clone(), sockets.clone());
        let (lines, writer_sockets) = ([up.clone(), down.clone()], sockets.clone());
        let other_lines = [up.clone(), down.clone()];
        threads.push(std::thread::spawn(move || {
            read_into(from, &reader_line);
            if reader_line.is_closed() {
                close_all(&reader_sockets, &other_lines);
            }
        }));
        threads.push(std::thread::spawn(move || {
            if write_from(to, &line).is_err() {
                close_all(&writer_sockets, &lines);
            }
        }));
    }
    for thread in threads {
        let _ = thread.join();
    }
    Ok(())
}

/// On an error in any direction: everything stops.
fn close_all(sockets: &[TcpStream; 2], lines: &[Arc<Line>; 2]) {
    for line in lines {
        line.close();
    }
    for socket in sockets {
        let _ = socket.shutdown(Shutdown::Both);
    }
}

/// One direction's delay line: chunks stamped with their read time.
#[derive(Default)]
struct Line {
    state: Mutex<LineState>,
    changed: Condvar,
}

#[derive(Default)]
struct LineState {
    chunks: VecDeque<(Instant, Vec<u8>)>,
    bytes: usize,
    eof: bool,
    closed: bool,
}

impl Line {
    fn close(&self) {
        lock(&self.state).closed = true;
        self.changed.notify_all();
    }

    fn is_closed(&self) -> bool {
        lock(&self.state).closed
    }
}

/// Reads `from` into the line as data arrives (timestamp = read time),
/// pausing while the line holds [`DELAY_LINE_BOUND`] bytes; marks EOF, or
/// closes the line on an error.
fn read_into(mut from: TcpStream, line: &Line) {
    let mut buffer = vec![0u8; 64 << 10];
    loop {
        {
            let mut state = lock(&line.state);
            while state.bytes >= DELAY_LINE_BOUND && !state.closed {
                state = line
                    .changed
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            if state.closed {
                return;
            }
        }
        match from.read(&mut buffer) {
            Ok(0) => {
                lock(&line.state).eof = true;
                line.changed.notify_all();
                return;
            }
            Ok(read) => {
                let now = Instant::now();
                let mut state = lock(&line.state);
                state.chunks.push_back((now, buffer[..read].to_vec()));
                state.bytes += read;
                drop(state);
                line.changed.notify_all();
            }
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                line.close();
                return;
            }
        }
    }
}

/// Writes each chunk to `to` once `read time + ONE_WAY_DELAY` has passed,
/// in order (chunks due together go in one write); half-closes `to` after
/// the last chunk when the source ended.
fn write_from(mut to: TcpStream, line: &Line) -> std::io::Result<()> {
    let mut batch = Vec::with_capacity(256 << 10);
    loop {
        let due = {
            let mut state = lock(&line.state);
            loop {
                if state.closed {
                    return Ok(());
                }
                if let Some((read_at, _)) = state.chunks.front() {
                    break *read_at + ONE_WAY_DELAY;
                }
                if state.eof {
                    drop(state);
                    return to.shutdown(Shutdown::Write);
                }
                state = line
                    .changed
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
        };
        // Chunks are only appended behind this one, with later stamps.
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        {
            let now = Instant::now();
            let mut state = lock(&line.state);
            while let Some((read_at, _)) = state.chunks.front() {
                if *read_at + ONE_WAY_DELAY > now || batch.len() >= 256 << 10 {
                    break;
                }
                let Some((_, chunk)) = state.chunks.pop_front() else {
                    break;
                };
                state.bytes -= chunk.len();
                batch.extend_from_slice(&chunk);
            }
        }
        line.changed.notify_all();
        to.write_all(&batch)?;
        batch.clear();
    }
}
