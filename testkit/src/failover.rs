//! Two validator hosts for one validator, on loopback, and a fault-injection harness over them
//! (issue 13, `docs/failover.md`).
//!
//! [`Cluster`]: a real 3-member etcd ([`EtcdCluster`]), the simulated chain with one sentry per
//! host (each serving CometBFT's RPC, the host's view of the chain), and two real
//! `palisade-supervisor`s with one shared vault and one shared backup directory, each with its
//! own node home for the same validator key. Each host reaches etcd through TCP proxies the
//! harness can cut (its link to etcd), and the chain through its own sentry, which the harness
//! can take down (its link to the chain).
//!
//! [`Schedule`]: a JSON list of timed [`Fault`]s — SIGKILL of a supervisor, a node or a whole
//! host; SIGSTOP/SIGCONT of a supervisor or a whole host; cut and heal a host's etcd or chain
//! link; kill and restart an etcd member; planned handoffs, also from two ctl clients at once.
//! [`random_schedule`] makes one from a seed. [`run_schedule`] runs it, heals everything, waits
//! for the validator to sign again and checks the chain's record: no double sign, no height
//! signed through both hosts' sentries, no sign-state file going backwards on either host
//! ([`Report`]).
//!
//! Test traffic stays on loopback.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use palisade_simchain::testkit::{
    ListenerOptions, SimNetwork, SimNetworkOptions, free_port, write_validator_home,
    write_versioned_binary,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Error, EtcdCluster, Result, kill_tree, process_alive, process_tree};

/// The binaries a cluster runs.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub supervisor: PathBuf,
    pub ctl: PathBuf,
    pub simd: PathBuf,
    pub simchain_net: PathBuf,
}

/// How a [`Cluster`] is set up.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub block: Duration,
    /// `[failover] lease-ttl`, whole seconds.
    pub lease_ttl_s: u64,
    /// `[failover] fence-margin`.
    pub fence_margin: String,
    /// `[failover] chain-guard-blocks`.
    pub guard_blocks: u64,
    /// `[failover] poll-interval`.
    pub poll_interval: String,
}

impl Default for ClusterOptions {
    fn default() -> ClusterOptions {
        ClusterOptions {
            block: Duration::from_millis(300),
            lease_ttl_s: 3,
            fence_margin: "1s".into(),
            guard_blocks: 3,
            poll_interval: "200ms".into(),
        }
    }
}

/// The vault's passphrase on both hosts.
pub const PASSPHRASE: &str = "correct horse battery staple";
/// The etcd prefix both hosts use.
pub const KEY_PREFIX: &str = "/palisade/test";
/// The longest wait for anything that normally takes seconds.
pub const WAIT: Duration = Duration::from_secs(60);

/// A TCP proxy to one target that can be cut (every connection closed, new ones refused) and
/// healed.
pub struct Proxy {
    pub addr: String,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    pub fn start(target: String) -> Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .map_err(|e| Error::new(format!("binding a proxy: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::new(format!("a proxy's address: {e}")))?
            .to_string();
        let cut = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::<TcpStream>::new()));
        let (cut2, open2) = (cut.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if cut2.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                {
                    let mut open = open2.lock().unwrap_or_else(|p| p.into_inner());
                    open.retain(|stream| stream.peer_addr().is_ok());
                    if let (Ok(a), Ok(b)) = (client.try_clone(), server.try_clone()) {
                        open.push(a);
                        open.push(b);
                    }
                }
                for (from, to) in [(client2, server2), (server, client)] {
                    std::thread::spawn(move || pump(from, to));
                }
            }
        });
        Ok(Proxy { addr, cut, open })
    }

    pub fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
        if cut {
            for stream in self
                .open
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .drain(..)
            {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buffer = [0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buffer) {
        if n == 0 || to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

/// One validator host.
pub struct Host {
    /// `val-a`, `val-b`.
    pub id: String,
    pub home: PathBuf,
    pub config: PathBuf,
    pub socket: PathBuf,
    /// Its sentry (its link to the chain).
    pub sentry: String,
    log: PathBuf,
    etcd: Vec<Proxy>,
    supervisor: Option<Child>,
    bins: Binaries,
    _shm: tempfile::TempDir,
}

impl Host {
    /// `palisade-supervisor` with this host's environment.
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.bins.supervisor);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("DAEMON_HOME", &self.home)
            .env("DAEMON_NAME", "simd")
            .env("DAEMON_POLL_INTERVAL", "50ms")
            .env("DAEMON_SHUTDOWN_GRACE", "5s")
            .env("PALISADE_LOG", "info")
            .env("PALISADE_CONFIG", &self.config);
        command
    }

    /// Start the supervisor (locked); wait for its control socket.
    pub fn start(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| Error::new(format!("{}: {e}", self.log.display())))?;
        let err = log
            .try_clone()
            .map_err(|e| Error::new(format!("{}: {e}", self.log.display())))?;
        let child = self
            .command()
            .args(["run", "start", "--home"])
            .arg(&self.home)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| Error::new(format!("starting {}'s supervisor: {e}", self.id)))?;
        self.supervisor = Some(child);
        self.wait_status("the control socket", WAIT, |_| true)
            .map(drop)
    }

    /// Whether the supervisor process is alive.
    pub fn supervisor_alive(&mut self) -> bool {
        match &mut self.supervisor {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The supervisor's pid, if it was started.
    pub fn supervisor_pid(&self) -> Option<u32> {
        self.supervisor.as_ref().map(Child::id)
    }

    /// Reap the supervisor after it was killed.
    pub fn reap(&mut self) {
        if let Some(mut child) = self.supervisor.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `palisade-ctl --socket SOCKET ARGS…` with `stdin`.
    pub fn ctl(&self, args: &[&str], stdin: Option<&str>) -> Result<Output> {
        let mut child = Command::new(&self.bins.ctl)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.parent().unwrap_or(&self.home))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::new(format!("palisade-ctl: {e}")))?;
        if let Some(mut input) = child.stdin.take()
            && let Some(text) = stdin
        {
            let _ = input.write_all(text.as_bytes());
        }
        child
            .wait_with_output()
            .map_err(|e| Error::new(format!("palisade-ctl: {e}")))
    }

    /// `palisade-ctl unlock --passphrase-stdin`.
    pub fn unlock(&self) -> Result<()> {
        let output = self.ctl(
            &["unlock", "--passphrase-stdin"],
            Some(&format!("{PASSPHRASE}\n")),
        )?;
        if output.status.success() {
            Ok(())
        } else {
            Err(Error::new(format!(
                "{} unlock: {}",
                self.id,
                String::from_utf8_lossy(&output.stderr).trim()
            )))
        }
    }

    /// `status`'s result, as a trusted local user (`None` while the socket does not answer).
    pub fn status(&self) -> Option<Value> {
        let stream = UnixStream::connect(&self.socket).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).ok()?; // the greeting
        reader
            .get_mut()
            .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"status\"}\n")
            .ok()?;
        line.clear();
        reader.read_line(&mut line).ok()?;
        let mut answer: Value = serde_json::from_str(&line).ok()?;
        answer.get_mut("result").map(Value::take)
    }

    /// The node state `status` shows.
    pub fn node_state(&self) -> Option<String> {
        self.status()?["node"]["state"].as_str().map(str::to_owned)
    }

    /// Poll `status` until `condition` holds.
    pub fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        mut condition: impl FnMut(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Some(status) = self.status() {
                if condition(&status) {
                    return Ok(status);
                }
                last = Some(status);
            }
            if Instant::now() >= deadline {
                return Err(Error::new(format!(
                    "{}: timed out after {timeout:?} waiting for {what}; last status: {}\n{}",
                    self.id,
                    last.map_or_else(|| "none".to_owned(), |s| s.to_string()),
                    self.log_tail(30)
                )));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Wait until the node state is `state`.
    pub fn wait_state(&self, state: &str) -> Result<Value> {
        self.wait_status(&format!("node state {state}"), WAIT, |s| {
            s["node"]["state"] == state
        })
    }

    /// The supervisor's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its last `lines` lines.
    pub fn log_tail(&self, lines: usize) -> String {
        crate::last_lines(&self.log(), lines)
    }

    /// The supervisor and everything under it.
    pub fn processes(&self) -> Vec<u32> {
        self.supervisor_pid().map(process_tree).unwrap_or_default()
    }

    /// The node's pid while it runs, from `status`.
    pub fn node_pid(&self) -> Option<u32> {
        self.status()?["node"]["pid"]
            .as_u64()
            .and_then(|pid| u32::try_from(pid).ok())
    }

    /// `signal` to every process of the host, children before parents (so a SIGCONT resumes
    /// the node before its supervisor: the worst order).
    pub fn signal_host(&self, signal: Signal) {
        if let Some(pid) = self.supervisor_pid() {
            kill_tree(pid, signal);
        }
    }

    /// `signal` to the supervisor alone.
    pub fn signal_supervisor(&self, signal: Signal) {
        if let Some(pid) = self
            .supervisor_pid()
            .and_then(|pid| i32::try_from(pid).ok())
        {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
        }
    }

    /// Cut (or heal) this host's links to etcd.
    pub fn set_etcd_cut(&self, cut: bool) {
        for proxy in &self.etcd {
            proxy.set_cut(cut);
        }
    }

    /// The sign state's (height, round, step), if the file reads.
    pub fn watermark(&self) -> Option<(u64, u32, u8)> {
        let text =
            std::fs::read_to_string(self.home.join("data/priv_validator_state.json")).ok()?;
        let value: Value = serde_json::from_str(&text).ok()?;
        let height = value["height"].as_str()?.parse().ok()?;
        let round = u32::try_from(value["round"].as_u64()?).ok()?;
        let step = u8::try_from(value["step"].as_u64()?).ok()?;
        Some((height, round, step))
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(pid) = self.supervisor_pid() {
            kill_tree(pid, Signal::SIGCONT);
            kill_tree(pid, Signal::SIGKILL);
        }
        self.reap();
    }
}

/// Two hosts of one validator, etcd and the chain.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub network: SimNetwork,
    pub etcd: EtcdCluster,
    pub hosts: Vec<Host>,
    /// The validator's genesis name in the chain's record.
    pub validator: String,
}

impl Cluster {
    /// Everything set up, nothing of Palisade running yet.
    pub fn start(bins: &Binaries, options: &ClusterOptions) -> Result<Cluster> {
        let dir = tempfile::tempdir().map_err(|e| Error::new(format!("tempdir: {e}")))?;
        let etcd = EtcdCluster::start(3)?;
        let err = |what: &'static str| move |e: anyhow::Error| Error::new(format!("{what}: {e:#}"));
        let home_a = dir.path().join("a").join("home");
        let home_b = dir.path().join("b").join("home");
        let validator = write_validator_home(&home_a, "val1", "sim-1", "", free_port())
            .map_err(err("home a"))?;
        // The same validator key on host b (`write_validator_home` keeps a key it finds).
        std::fs::create_dir_all(home_b.join("config"))
            .map_err(|e| Error::new(format!("home b: {e}")))?;
        std::fs::copy(
            home_a.join("config/priv_validator_key.json"),
            home_b.join("config/priv_validator_key.json"),
        )
        .map_err(|e| Error::new(format!("copying the validator key: {e}")))?;
        let validator_b = write_validator_home(&home_b, "val1", "sim-1", "", free_port())
            .map_err(err("home b"))?;
        if validator.address != validator_b.address {
            return Err(Error::new("host b did not keep the validator key"));
        }
        let network = SimNetwork::spawn(
            &bins.simchain_net,
            std::slice::from_ref(&validator),
            &SimNetworkOptions {
                block_time: options.block,
                log_file: Some(dir.path().join("network.log")),
                listeners: ["sentry-a", "sentry-b"]
                    .into_iter()
                    .map(|name| ListenerOptions {
                        name: Some(name.into()),
                        addr: "127.0.0.1:0".into(),
                        node_key: None,
                        rpc_addr: Some("127.0.0.1:0".into()),
                    })
                    .collect(),
                ..SimNetworkOptions::default()
            },
        )
        .map_err(err("simchain-net"))?;
        let genesis = dir.path().join("binaries/v1/simd");
        write_versioned_binary(&genesis, &bins.simd, "v1", &[])
            .map_err(err("the genesis binary"))?;
        let shared = dir.path().join("shared-backups");
        let passphrase_file = dir.path().join("passphrase");
        write_private(&passphrase_file, format!("{PASSPHRASE}\n").as_bytes())?;
        let mut hosts = Vec::new();
        for (id, peer, home, sentry) in [
            ("val-a", "val-b", &home_a, "sentry-a"),
            ("val-b", "val-a", &home_b, "sentry-b"),
        ] {
            let listener = network
                .listener(sentry)
                .ok_or_else(|| Error::new(format!("no listener {sentry}")))?
                .clone();
            palisade_simchain::testkit::set_persistent_peers(home, &listener.peer())
                .map_err(err("persistent_peers"))?;
            palisade_simchain::testkit::set_simchain_option(
                home,
                "p2p_time_scale",
                palisade_simchain::testkit::TEST_P2P_TIME_SCALE,
            )
            .map_err(err("p2p_time_scale"))?;
            let chain_rpc = listener
                .rpc_url()
                .ok_or_else(|| Error::new(format!("{sentry} serves no RPC")))?;
            let shm = tempfile::Builder::new()
                .prefix("palisade-failover-")
                .tempdir_in("/dev/shm")
                .map_err(|e| Error::new(format!("/dev/shm: {e}")))?;
            let parent = home.parent().unwrap_or(home);
            let socket = parent.join("run/supervisor.sock");
            let config = parent.join("palisade.toml");
            let proxies = etcd
                .endpoints()
                .iter()
                .map(|endpoint| Proxy::start(endpoint.trim_start_matches("http://").to_string()))
                .collect::<Result<Vec<_>>>()?;
            let endpoints: Vec<String> = proxies
                .iter()
                .map(|proxy| format!("\"http://{}\"", proxy.addr))
                .collect();
            let text = format!(
                "[vault]\nswap = \"warn\"\ntmpfs-dir = {:?}\nscrypt-work-factor = 10\n\
                 [backup]\ndebounce = \"100ms\"\nchain-id = \"sim-1\"\nextra-dirs = [{shared:?}]\n\
                 [rpc]\nsocket = {socket:?}\nname = \"val1\"\n\
                 [failover]\nhost-id = \"{id}\"\npeers = [\"{peer}\"]\n\
                 etcd-endpoints = [{}]\nchain-rpc = \"{chain_rpc}\"\nkey-prefix = \"{KEY_PREFIX}\"\n\
                 lease-ttl = \"{}s\"\nfence-margin = \"{}\"\npoll-interval = \"{}\"\n\
                 chain-guard-blocks = {}\nhandoff-timeout = \"30s\"\n",
                shm.path().join("keys"),
                endpoints.join(", "),
                options.lease_ttl_s,
                options.fence_margin,
                options.poll_interval,
                options.guard_blocks,
            );
            std::fs::write(&config, text)
                .map_err(|e| Error::new(format!("{}: {e}", config.display())))?;
            let host = Host {
                id: id.into(),
                home: home.clone(),
                config,
                socket,
                sentry: sentry.into(),
                log: parent.join("supervisor.log"),
                etcd: proxies,
                supervisor: None,
                bins: bins.clone(),
                _shm: shm,
            };
            let output = host
                .command()
                .arg("init")
                .arg(&genesis)
                .output()
                .map_err(|e| Error::new(format!("{id} init: {e}")))?;
            check(&output, &format!("{id} init"))?;
            hosts.push(host);
        }
        // One vault for both hosts: made on a, copied to b; b's plaintext keys removed as
        // init-vault removed a's.
        let output = hosts[0]
            .command()
            .args(["init-vault", "--passphrase-file"])
            .arg(&passphrase_file)
            .output()
            .map_err(|e| Error::new(format!("init-vault: {e}")))?;
        check(&output, "init-vault")?;
        std::fs::create_dir_all(home_b.join("palisade"))
            .map_err(|e| Error::new(format!("home b: {e}")))?;
        let output = Command::new("cp")
            .arg("-a")
            .arg(home_a.join("palisade/vault"))
            .arg(home_b.join("palisade/"))
            .output()
            .map_err(|e| Error::new(format!("cp: {e}")))?;
        check(&output, "copying the vault")?;
        for file in ["config/priv_validator_key.json", "config/node_key.json"] {
            let _ = std::fs::remove_file(home_b.join(file));
        }
        Ok(Cluster {
            dir,
            network,
            etcd,
            hosts,
            validator: "val1".into(),
        })
    }

    /// Host `i` (0: `val-a`, 1: `val-b`).
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// Both supervisors started and unlocked; `primary` signing, the other a standby.
    pub fn start_with_primary(&mut self, primary: usize) -> Result<()> {
        for host in &mut self.hosts {
            host.start()?;
        }
        self.hosts[primary].unlock()?;
        self.hosts[primary].wait_state("running")?;
        self.wait_signing(3, WAIT)?;
        let standby = 1 - primary;
        self.hosts[standby].unlock()?;
        self.hosts[standby].wait_state("standby")?;
        Ok(())
    }

    /// Wait until the validator signed `blocks` more heights; the last signed height.
    pub fn wait_signing(&self, blocks: u64, timeout: Duration) -> Result<u64> {
        let record = self
            .network
            .record()
            .map_err(|e| Error::new(format!("the chain's record: {e}")))?;
        let start = record.validators[&self.validator].signed_heights;
        let record = self
            .network
            .wait_for(timeout, |record| {
                record.validators[&self.validator].signed_heights >= start + blocks
            })
            .map_err(|e| Error::new(format!("{e}\n{}", self.tails())))?;
        Ok(record.validators[&self.validator]
            .last_signed_height
            .unwrap_or_default())
    }

    /// The last lines of both supervisors' logs.
    pub fn tails(&self) -> String {
        self.hosts
            .iter()
            .map(|host| format!("--- {}:\n{}", host.id, host.log_tail(30)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Double signs and heights signed through both sentries, from the chain's record.
    pub fn violations(&self) -> Result<(usize, Vec<u64>)> {
        let record = self
            .network
            .record()
            .map_err(|e| Error::new(format!("the chain's record: {e}")))?;
        Ok((
            record.double_signs.len(),
            record.validators[&self.validator]
                .multi_listener_heights
                .clone(),
        ))
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, bytes).map_err(|e| Error::new(format!("{}: {e}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::new(format!("{}: {e}", path.display())))
}

fn check(output: &Output, what: &str) -> Result<()> {
    if output.status.success() {
        Ok(())
    } else {
        Err(Error::new(format!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )))
    }
}

// ----------------------------------------------------------------- faults

/// One fault. Hosts are `a` and `b`; etcd members 0–2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// SIGKILL the supervisor (its node dies with it: `PR_SET_PDEATHSIG`).
    KillSupervisor {
        host: HostName,
    },
    /// SIGKILL the node only (a primary's supervisor restarts it after its backoff).
    KillNode {
        host: HostName,
    },
    /// SIGKILL every process of the host.
    KillHost {
        host: HostName,
    },
    /// Start a killed host's supervisor again and unlock it.
    RestartHost {
        host: HostName,
    },
    /// SIGSTOP every process of the host (a stalled host).
    StopHost {
        host: HostName,
    },
    /// SIGCONT every process of the host, the node first.
    ContHost {
        host: HostName,
    },
    /// SIGSTOP the supervisor alone; its node runs on.
    StopSupervisor {
        host: HostName,
    },
    ContSupervisor {
        host: HostName,
    },
    /// Cut the host's links to every etcd member.
    CutEtcd {
        host: HostName,
    },
    HealEtcd {
        host: HostName,
    },
    /// Take the host's sentry down: its node's peering and its view of the chain.
    CutChain {
        host: HostName,
    },
    HealChain {
        host: HostName,
    },
    /// SIGKILL etcd member `member`.
    KillEtcd {
        member: usize,
    },
    RestartEtcd {
        member: usize,
    },
    /// `palisade-ctl failover handoff --to <other>` on `host` (in the background).
    Handoff {
        host: HostName,
    },
    /// The same from two ctl clients at once, one on each host.
    HandoffBoth,
}

/// `a` or `b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostName {
    A,
    B,
}

impl HostName {
    fn index(self) -> usize {
        match self {
            HostName::A => 0,
            HostName::B => 1,
        }
    }
}

/// A fault at a time: `{"at_ms": 0, "action": "cut_etcd", "host": "a"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// Milliseconds after the schedule starts.
    pub at_ms: u64,
    #[serde(flatten)]
    pub fault: Fault,
}

impl<'de> Deserialize<'de> for Step {
    // By hand: serde's `flatten` cannot refuse unknown members, and a typo in a schedule
    // must not turn into a fault silently left out.
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Step, D::Error> {
        use serde::de::Error as _;
        let mut map = serde_json::Map::deserialize(deserializer)?;
        let at_ms = map
            .remove("at_ms")
            .ok_or_else(|| D::Error::missing_field("at_ms"))?
            .as_u64()
            .ok_or_else(|| D::Error::custom("at_ms must be a whole number of milliseconds"))?;
        let fault = Fault::deserialize(Value::Object(map)).map_err(D::Error::custom)?;
        Ok(Step { at_ms, fault })
    }
}

/// A named list of steps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    pub name: String,
    pub steps: Vec<Step>,
}

impl Schedule {
    /// A schedule from its JSON.
    pub fn parse(text: &str) -> Result<Schedule> {
        let schedule: Schedule = serde_json::from_str(text)
            .map_err(|e| Error::new(format!("not a fault schedule: {e}")))?;
        for step in &schedule.steps {
            if let Fault::KillEtcd { member } | Fault::RestartEtcd { member } = step.fault
                && member > 2
            {
                return Err(Error::new(format!(
                    "etcd member {member} does not exist (0-2)"
                )));
            }
            if step.at_ms > 120_000 {
                return Err(Error::new(format!(
                    "a step at {} ms: schedules last at most two minutes",
                    step.at_ms
                )));
            }
        }
        Ok(schedule)
    }
}

/// splitmix64: a tiny deterministic generator, so that a seed names one schedule forever.
struct Seeded(u64);

impl Seeded {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A schedule of 2–4 faults (each with its heal) within about ten seconds, from `seed`.
pub fn random_schedule(seed: u64) -> Schedule {
    let mut rng = Seeded(seed);
    let mut steps = Vec::new();
    let faults = 2 + rng.below(3);
    for _ in 0..faults {
        let at = rng.below(8_000);
        let lasts = 1_000 + rng.below(6_000);
        let host = if rng.below(2) == 0 {
            HostName::A
        } else {
            HostName::B
        };
        let member = rng.below(3) as usize;
        let pair: Vec<(u64, Fault)> = match rng.below(9) {
            0 => vec![
                (at, Fault::KillHost { host }),
                (at + lasts, Fault::RestartHost { host }),
            ],
            1 => vec![
                (at, Fault::KillSupervisor { host }),
                (at + lasts, Fault::RestartHost { host }),
            ],
            2 => vec![(at, Fault::KillNode { host })],
            3 => vec![
                (at, Fault::StopHost { host }),
                (at + lasts, Fault::ContHost { host }),
            ],
            4 => vec![
                (at, Fault::StopSupervisor { host }),
                (at + lasts, Fault::ContSupervisor { host }),
            ],
            5 => vec![
                (at, Fault::CutEtcd { host }),
                (at + lasts, Fault::HealEtcd { host }),
            ],
            6 => vec![
                (at, Fault::CutChain { host }),
                (at + lasts, Fault::HealChain { host }),
            ],
            7 => vec![
                (at, Fault::KillEtcd { member }),
                (at + lasts, Fault::RestartEtcd { member }),
            ],
            _ => vec![(
                at,
                if rng.below(2) == 0 {
                    Fault::Handoff { host }
                } else {
                    Fault::HandoffBoth
                },
            )],
        };
        steps.extend(pair.into_iter().map(|(at_ms, fault)| Step { at_ms, fault }));
    }
    steps.sort_by_key(|step| step.at_ms);
    Schedule {
        name: format!("seed-{seed}"),
        steps,
    }
}

/// What a schedule did to the validator.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub name: String,
    /// Double signs the chain recorded during the schedule and the recovery.
    pub double_signs: usize,
    /// Heights signed through both hosts' sentries.
    pub multi_signer_heights: Vec<u64>,
    /// A host's sign-state file seen going backwards.
    pub regressions: Vec<String>,
    /// Heights the validator missed from the first fault to the recovery.
    pub missed_blocks: u64,
    /// From the heal to the first new signed height (`None`: it never signed again).
    pub recovery_ms: Option<u64>,
    /// Steps that could not be carried out (not failures of Palisade: e.g. a handoff refused).
    pub notes: Vec<String>,
}

impl Report {
    /// No double sign, no height signed by two hosts, no regression, and signing again.
    pub fn safe(&self) -> bool {
        self.double_signs == 0
            && self.multi_signer_heights.is_empty()
            && self.regressions.is_empty()
    }
}

/// What the harness changed, to heal afterwards.
#[derive(Default)]
struct Damage {
    stopped_hosts: Vec<usize>,
    stopped_supervisors: Vec<usize>,
    etcd_cut: Vec<usize>,
    chain_cut: Vec<usize>,
    dead_hosts: Vec<usize>,
    dead_members: Vec<usize>,
}

/// Run `schedule` on a cluster whose two hosts run (one primary); heal; wait for signing;
/// check. The cluster is left healed, with both hosts running and unlocked, for the next one.
pub fn run_schedule(cluster: &mut Cluster, schedule: &Schedule) -> Result<Report> {
    let before = cluster
        .network
        .record()
        .map_err(|e| Error::new(format!("the chain's record: {e}")))?;
    let validator = cluster.validator.clone();
    let missed_before = before.validators[&validator].missed_count;
    let (double_before, multi_before) = (
        before.double_signs.len(),
        before.validators[&validator].multi_listener_heights.len(),
    );
    let mut report = Report {
        name: schedule.name.clone(),
        ..Report::default()
    };

    // Watch both sign-state files for regressions while the schedule runs.
    let homes: Vec<(String, PathBuf)> = cluster
        .hosts
        .iter()
        .map(|host| (host.id.clone(), host.home.clone()))
        .collect();
    let watching = Arc::new(AtomicBool::new(true));
    let regressions = Arc::new(Mutex::new(Vec::new()));
    let watcher = {
        let (watching, regressions) = (watching.clone(), regressions.clone());
        std::thread::spawn(move || {
            let mut highest: BTreeMap<String, (u64, u32, u8)> = BTreeMap::new();
            while watching.load(Ordering::SeqCst) {
                for (id, home) in &homes {
                    let Some(now) = read_watermark(home) else {
                        continue;
                    };
                    match highest.get(id) {
                        Some(high) if now < *high => regressions
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(format!("{id}: sign state went from {high:?} to {now:?}")),
                        Some(high) if now == *high => {}
                        _ => {
                            highest.insert(id.clone(), now);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let started = Instant::now();
    let mut damage = Damage::default();
    let mut handoffs = Vec::new();
    for step in &schedule.steps {
        let at = started + Duration::from_millis(step.at_ms);
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        apply(
            cluster,
            &step.fault,
            &mut damage,
            &mut handoffs,
            &mut report,
        );
    }
    // Let the last fault act for a moment before healing.
    std::thread::sleep(Duration::from_millis(1_000));
    heal(cluster, &mut damage, &mut report);
    let healed = Instant::now();
    for handoff in handoffs {
        let _ = handoff.join();
    }
    let signed_before = cluster
        .network
        .record()
        .map_err(|e| Error::new(format!("the chain's record: {e}")))?
        .validators[&validator]
        .signed_heights;
    let recovered = cluster.network.wait_for(Duration::from_secs(90), |record| {
        record.validators[&validator].signed_heights > signed_before
    });
    if recovered.is_ok() {
        report.recovery_ms = Some(healed.elapsed().as_millis() as u64);
    }
    // Both hosts back to work for the next schedule: every supervisor up and unlocked.
    settle(cluster, &mut report);
    let _ = cluster.wait_signing(2, WAIT);
    watching.store(false, Ordering::SeqCst);
    let _ = watcher.join();

    let after = cluster
        .network
        .record()
        .map_err(|e| Error::new(format!("the chain's record: {e}")))?;
    report.double_signs = after.double_signs.len() - double_before;
    report.multi_signer_heights =
        after.validators[&validator].multi_listener_heights[multi_before..].to_vec();
    report.missed_blocks = after.validators[&validator].missed_count - missed_before;
    report.regressions =
        std::mem::take(&mut *regressions.lock().unwrap_or_else(|p| p.into_inner()));
    if recovered.is_err() {
        report.notes.push(format!(
            "the validator did not sign again within 90 s\n{}",
            cluster.tails()
        ));
    }
    Ok(report)
}

fn read_watermark(home: &Path) -> Option<(u64, u32, u8)> {
    let text = std::fs::read_to_string(home.join("data/priv_validator_state.json")).ok()?;
    let value: Value = serde_json::from_str(&text).ok()?;
    Some((
        value["height"].as_str()?.parse().ok()?,
        u32::try_from(value["round"].as_u64()?).ok()?,
        u8::try_from(value["step"].as_u64()?).ok()?,
    ))
}

fn apply(
    cluster: &mut Cluster,
    fault: &Fault,
    damage: &mut Damage,
    handoffs: &mut Vec<std::thread::JoinHandle<()>>,
    report: &mut Report,
) {
    let handoff = |host: &Host| {
        let (ctl, socket, home) = (
            host.bins.ctl.clone(),
            host.socket.clone(),
            host.home.clone(),
        );
        let to = if host.id == "val-a" { "val-b" } else { "val-a" };
        std::thread::spawn(move || {
            let _ = Command::new(ctl)
                .env_clear()
                .env("HOME", home)
                .arg("--socket")
                .arg(socket)
                .args(["failover", "handoff", "--to", to])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        })
    };
    match *fault {
        Fault::KillSupervisor { host } => {
            let i = host.index();
            cluster.hosts[i].signal_supervisor(Signal::SIGKILL);
            if !damage.dead_hosts.contains(&i) {
                damage.dead_hosts.push(i);
            }
        }
        Fault::KillNode { host } => {
            if let Some(pid) = cluster.hosts[host.index()].node_pid()
                && let Ok(raw) = i32::try_from(pid)
            {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), Signal::SIGKILL);
            }
        }
        Fault::KillHost { host } => {
            let i = host.index();
            cluster.hosts[i].signal_host(Signal::SIGKILL);
            damage.stopped_hosts.retain(|&h| h != i);
            damage.stopped_supervisors.retain(|&h| h != i);
            if !damage.dead_hosts.contains(&i) {
                damage.dead_hosts.push(i);
            }
        }
        Fault::RestartHost { host } => {
            let i = host.index();
            if damage.dead_hosts.contains(&i) {
                restart(cluster, i, report);
                damage.dead_hosts.retain(|&h| h != i);
            }
        }
        Fault::StopHost { host } => {
            let i = host.index();
            if !damage.dead_hosts.contains(&i) {
                cluster.hosts[i].signal_host(Signal::SIGSTOP);
                damage.stopped_hosts.push(i);
            }
        }
        Fault::ContHost { host } => {
            let i = host.index();
            cluster.hosts[i].signal_host(Signal::SIGCONT);
            damage.stopped_hosts.retain(|&h| h != i);
            damage.stopped_supervisors.retain(|&h| h != i);
        }
        Fault::StopSupervisor { host } => {
            let i = host.index();
            if !damage.dead_hosts.contains(&i) {
                cluster.hosts[i].signal_supervisor(Signal::SIGSTOP);
                damage.stopped_supervisors.push(i);
            }
        }
        Fault::ContSupervisor { host } => {
            let i = host.index();
            cluster.hosts[i].signal_supervisor(Signal::SIGCONT);
            damage.stopped_supervisors.retain(|&h| h != i);
        }
        Fault::CutEtcd { host } => {
            cluster.hosts[host.index()].set_etcd_cut(true);
            damage.etcd_cut.push(host.index());
        }
        Fault::HealEtcd { host } => {
            cluster.hosts[host.index()].set_etcd_cut(false);
            damage.etcd_cut.retain(|&h| h != host.index());
        }
        Fault::CutChain { host } => {
            let sentry = cluster.hosts[host.index()].sentry.clone();
            if let Err(e) = cluster.network.set_listener_up(&sentry, false) {
                report.notes.push(format!("cut_chain: {e}"));
            }
            damage.chain_cut.push(host.index());
        }
        Fault::HealChain { host } => {
            let sentry = cluster.hosts[host.index()].sentry.clone();
            if let Err(e) = cluster.network.set_listener_up(&sentry, true) {
                report.notes.push(format!("heal_chain: {e}"));
            }
            damage.chain_cut.retain(|&h| h != host.index());
        }
        Fault::KillEtcd { member } => {
            cluster.etcd.kill(member);
            if !damage.dead_members.contains(&member) {
                damage.dead_members.push(member);
            }
        }
        Fault::RestartEtcd { member } => {
            if damage.dead_members.contains(&member) {
                if let Err(e) = cluster.etcd.restart(member) {
                    report.notes.push(format!("restart_etcd {member}: {e:?}"));
                }
                damage.dead_members.retain(|&m| m != member);
            }
        }
        Fault::Handoff { host } => handoffs.push(handoff(&cluster.hosts[host.index()])),
        Fault::HandoffBoth => {
            handoffs.push(handoff(&cluster.hosts[0]));
            handoffs.push(handoff(&cluster.hosts[1]));
        }
    }
}

/// Undo every fault still in effect.
fn heal(cluster: &mut Cluster, damage: &mut Damage, report: &mut Report) {
    for i in damage.stopped_hosts.drain(..) {
        cluster.hosts[i].signal_host(Signal::SIGCONT);
    }
    for i in damage.stopped_supervisors.drain(..) {
        cluster.hosts[i].signal_supervisor(Signal::SIGCONT);
    }
    for i in damage.etcd_cut.drain(..) {
        cluster.hosts[i].set_etcd_cut(false);
    }
    for i in damage.chain_cut.drain(..) {
        let sentry = cluster.hosts[i].sentry.clone();
        if let Err(e) = cluster.network.set_listener_up(&sentry, true) {
            report.notes.push(format!("heal_chain: {e}"));
        }
    }
    for member in damage.dead_members.drain(..) {
        if let Err(e) = cluster.etcd.restart(member) {
            report.notes.push(format!("restart_etcd {member}: {e:?}"));
        }
    }
    for i in damage.dead_hosts.drain(..) {
        restart(cluster, i, report);
    }
}

/// Every supervisor alive and unlocked (one that died on its own is started again).
fn settle(cluster: &mut Cluster, report: &mut Report) {
    for i in 0..cluster.hosts.len() {
        if !cluster.hosts[i].supervisor_alive() {
            report
                .notes
                .push(format!("{} exited on its own", cluster.hosts[i].id));
            restart(cluster, i, report);
        }
        let host = &cluster.hosts[i];
        if host.node_state().as_deref() == Some("locked")
            && let Err(e) = host.unlock()
        {
            report.notes.push(e.to_string());
        }
    }
    let _ = (
        cluster.hosts[0].wait_status("settled", WAIT, |s| s["node"]["state"] != "locked"),
        cluster.hosts[1].wait_status("settled", WAIT, |s| s["node"]["state"] != "locked"),
    );
}

fn restart(cluster: &mut Cluster, i: usize, report: &mut Report) {
    let host = &mut cluster.hosts[i];
    if let Some(pid) = host.supervisor_pid() {
        kill_tree(pid, Signal::SIGKILL);
    }
    host.reap();
    // Its node may outlive it for a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while host.processes().iter().any(|&pid| process_alive(pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Err(e) = host.start().and_then(|()| host.unlock()) {
        report.notes.push(format!("restarting {}: {e:?}", host.id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_name_schedules_and_schedules_round_trip_through_json() {
        assert_eq!(random_schedule(7), random_schedule(7));
        assert_ne!(random_schedule(7), random_schedule(8));
        for seed in 0..200 {
            let schedule = random_schedule(seed);
            assert!((2..=8).contains(&schedule.steps.len()), "{schedule:?}");
            assert!(schedule.steps.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
            let text = serde_json::to_string(&schedule).unwrap();
            assert_eq!(Schedule::parse(&text).unwrap(), schedule);
        }
        let text = r#"{"name":"x","steps":[{"at_ms":0,"action":"cut_etcd","host":"a"},
            {"at_ms":3000,"action":"heal_etcd","host":"a"},{"at_ms":10,"action":"handoff_both"}]}"#;
        assert_eq!(Schedule::parse(text).unwrap().steps.len(), 3);
        for bad in [
            r#"{"name":"x","steps":[{"at_ms":0,"action":"explode","host":"a"}]}"#,
            r#"{"name":"x","steps":[{"at_ms":0,"action":"cut_etcd","host":"c"}]}"#,
            r#"{"name":"x","steps":[{"at_ms":0,"action":"kill_etcd","member":3}]}"#,
            r#"{"name":"x","steps":[{"at_ms":999999,"action":"handoff_both"}]}"#,
            r#"{"name":"x","steps":[{"at_ms":0,"action":"cut_etcd","host":"a","extra":1}]}"#,
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
    }
}
