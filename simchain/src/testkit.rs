//! Helpers for integration tests (this crate's and other crates'): create validator homes,
//! run `simchain-net` and `simd` as real processes, and query the record.
//!
//! Everything here is blocking (std threads and sockets) so callers need no runtime.
//! Processes are killed when their handle drops.
//!
//! ```no_run
//! use palisade_simchain::testkit::*;
//! # fn main() -> anyhow::Result<()> {
//! let home = std::path::Path::new("/tmp/val1");
//! let val1 = write_validator_home(home, "val1", "sim-1", "127.0.0.1:1", free_port())?;
//! let net = SimNetwork::spawn("target/debug/simchain-net".as_ref(), &[val1.clone()],
//!                             &SimNetworkOptions::default())?;
//! net.attach_home(home)?; // persistent_peers = this network's listener(s)
//! let node = SimdProcess::start("target/debug/simd".as_ref(), home, &[], &[])?;
//! net.wait_for(std::time::Duration::from_secs(10), |r| r.validators["val1"].signed_heights > 3)?;
//! # Ok(()) }
//! ```

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::http;
use crate::key::{PUB_KEY_TYPE, TypedKey, ValidatorKey};
use crate::network::{Genesis, GenesisValidator};
use crate::node::{InitOptions, init_home};
use crate::node_config::{set_config_value, set_simchain_value};
use crate::protocol::UpgradePlan;
use crate::record::Record;

/// `[simchain] p2p_time_scale` that [`SimNetwork::attach_home`] sets: CometBFT's redial and
/// keep-alive waits at a tenth (a node's first dial waits 0–0.3 s instead of 0–3 s).
pub const TEST_P2P_TIME_SCALE: &str = "0.1";

const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_CAPTURED_LINES: usize = 20_000;

/// A validator home created by [`write_validator_home`].
#[derive(Debug, Clone)]
pub struct ValidatorKeyInfo {
    /// Moniker, also the validator's name in the genesis and record.
    pub moniker: String,
    /// Home directory.
    pub home: PathBuf,
    /// Uppercase hex address.
    pub address: String,
    /// Base64 ed25519 public key.
    pub pub_key: String,
    /// Voting power to put in the genesis (10).
    pub power: u64,
    /// RPC address, `tcp://127.0.0.1:PORT`.
    pub rpc_laddr: String,
}

/// A free TCP port on 127.0.0.1 (bound and released; fine for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// Creates (or refreshes) a node home like `simd init`: config.toml with RPC on
/// `127.0.0.1:rpc_port` and `[simchain] network = network_addr`. An existing key and sign state
/// are kept, so calling it again only rewrites the configuration.
pub fn write_validator_home(
    home: &Path,
    moniker: &str,
    chain_id: &str,
    network_addr: &str,
    rpc_port: u16,
) -> anyhow::Result<ValidatorKeyInfo> {
    let rpc_laddr = format!("tcp://127.0.0.1:{rpc_port}");
    let output = init_home(&InitOptions {
        home: home.to_path_buf(),
        moniker: moniker.to_string(),
        chain_id: chain_id.to_string(),
        network: network_addr.to_string(),
        rpc_laddr: rpc_laddr.clone(),
        p2p_laddr: format!("tcp://127.0.0.1:{}", free_port()),
        overwrite: true,
        genesis_size: 0,
    })?;
    Ok(ValidatorKeyInfo {
        moniker: moniker.to_string(),
        home: home.to_path_buf(),
        address: output.validator_address,
        pub_key: output.pub_key,
        power: 10,
        rpc_laddr,
    })
}

/// Points a home's `[simchain] network` (the older, single-session peering) at `network_addr`
/// and clears `[p2p] persistent_peers`, leaving the rest of config.toml alone.
pub fn set_network_address(home: &Path, network_addr: &str) -> anyhow::Result<()> {
    set_config_value(home, Some("p2p"), "persistent_peers", "\"\"")?;
    set_simchain_value(home, "network", &format!("{network_addr:?}"))?;
    Ok(())
}

/// Sets `[p2p] persistent_peers` (`id@host:port,…`) and clears the older `[simchain] network`.
pub fn set_persistent_peers(home: &Path, peers: &str) -> anyhow::Result<()> {
    set_simchain_value(home, "network", "\"\"")?;
    set_config_value(home, Some("p2p"), "persistent_peers", &format!("{peers:?}"))?;
    Ok(())
}

/// Sets any `[p2p]` key (e.g. `allow_duplicate_ip`) to a TOML literal.
pub fn set_p2p_option(home: &Path, key: &str, toml_value: &str) -> anyhow::Result<()> {
    set_config_value(home, Some("p2p"), key, toml_value)?;
    Ok(())
}

/// Sets a top-level config.toml key (e.g. `log_format`, `log_no_color`) to a TOML literal.
pub fn set_base_option(home: &Path, key: &str, toml_value: &str) -> anyhow::Result<()> {
    set_config_value(home, None, key, toml_value)?;
    Ok(())
}

/// Writes a fresh `node_key.json` at `path` (mode 0600) and returns its node ID: give it to
/// `simchain-net --node-key` to know a listener's ID before the network starts.
pub fn write_node_key(path: &Path) -> anyhow::Result<String> {
    let key = ValidatorKey::generate();
    key.save_as_node_key(path)?;
    Ok(key.node_id())
}

/// Replaces a home's `config/genesis.json` with a generated one of about `bytes` bytes
/// ([`crate::genesis`]).
pub fn write_large_genesis(home: &Path, chain_id: &str, bytes: u64) -> anyhow::Result<u64> {
    let accounts = crate::genesis::write_genesis(
        &home.join("config").join("genesis.json"),
        &crate::genesis::GenesisSpec {
            chain_id: chain_id.to_string(),
            app_version: "v1.0.0".into(),
            genesis_time: std::time::SystemTime::now(),
            target_bytes: bytes,
        },
    )?;
    Ok(accounts)
}

/// Sets any `[simchain]` key (e.g. `log_flood`, `write_upgrade_info`) to a TOML literal.
pub fn set_simchain_option(home: &Path, key: &str, toml_value: &str) -> anyhow::Result<()> {
    set_simchain_value(home, key, toml_value)?;
    Ok(())
}

/// Options for [`SimNetwork::spawn`].
#[derive(Debug, Clone)]
pub struct SimNetworkOptions {
    /// Chain ID.
    pub chain_id: String,
    /// Block time.
    pub block_time: Duration,
    /// Always-signing internal validators.
    pub internal_validators: u32,
    /// Power of each internal validator.
    pub internal_power: u64,
    /// Upgrade plans known from the start.
    pub upgrades: Vec<UpgradePlan>,
    /// `--record FILE`.
    pub record_file: Option<PathBuf>,
    /// Where the network's stderr log goes (discarded when `None`).
    pub log_file: Option<PathBuf>,
    /// The listeners (sentries); empty: one on `127.0.0.1:0`.
    pub listeners: Vec<ListenerOptions>,
}

/// One `--listen` of [`SimNetwork::spawn`].
#[derive(Debug, Clone, Default)]
pub struct ListenerOptions {
    /// Its name (`sentry-N` when `None`).
    pub name: Option<String>,
    /// `IP:PORT` to listen on (port 0: a free one).
    pub addr: String,
    /// Its `node_key.json` (see [`write_node_key`]); a fresh key when `None`.
    pub node_key: Option<PathBuf>,
    /// `IP:PORT` where this sentry serves CometBFT's RPC (`--rpc NAME=ADDR`; port 0: a free
    /// one); none when `None`. See [`Listener::rpc_url`].
    pub rpc_addr: Option<String>,
}

/// A listener of a running network, from its ready line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Name.
    pub name: String,
    /// Address it accepts on.
    pub addr: String,
    /// Node ID.
    pub node_id: String,
    /// Where it serves CometBFT's RPC (`IP:PORT`), if it does.
    pub rpc_addr: Option<String>,
}

impl Listener {
    /// `id@ip:port`, a `persistent_peers` entry.
    pub fn peer(&self) -> String {
        format!("{}@{}", self.node_id, self.addr)
    }

    /// `http://IP:PORT` of its CometBFT RPC (`/status`, `/commit`), if it serves one.
    pub fn rpc_url(&self) -> Option<String> {
        self.rpc_addr.as_ref().map(|addr| format!("http://{addr}"))
    }
}

/// A blocking `GET` of a CometBFT RPC path (`/commit?height=5`) at `IP:PORT`, `tcp://IP:PORT`
/// or `http://IP:PORT`: HTTP status and body.
pub fn rpc_get(addr: &str, path_and_query: &str) -> anyhow::Result<(u16, String)> {
    Ok(http::request(
        addr,
        "GET",
        path_and_query,
        None,
        HTTP_TIMEOUT,
    )?)
}

impl Default for SimNetworkOptions {
    fn default() -> Self {
        Self {
            chain_id: "sim-1".into(),
            block_time: Duration::from_millis(150),
            internal_validators: 3,
            internal_power: 100,
            upgrades: Vec::new(),
            record_file: None,
            log_file: None,
            listeners: Vec::new(),
        }
    }
}

/// A running `simchain-net`, killed on drop.
#[derive(Debug)]
pub struct SimNetwork {
    child: Child,
    node_addr: String,
    http_addr: String,
    listeners: Vec<Listener>,
    genesis_path: PathBuf,
}

impl SimNetwork {
    /// Spawns `bin` with a genesis holding `validators` (name = moniker) and waits for its
    /// ready line.
    pub fn spawn(
        bin: &Path,
        validators: &[ValidatorKeyInfo],
        options: &SimNetworkOptions,
    ) -> anyhow::Result<Self> {
        let genesis = Genesis {
            chain_id: Some(options.chain_id.clone()),
            validators: validators
                .iter()
                .map(|v| GenesisValidator {
                    name: v.moniker.clone(),
                    pub_key: TypedKey {
                        key_type: PUB_KEY_TYPE.into(),
                        value: v.pub_key.clone(),
                    },
                    power: v.power,
                })
                .collect(),
        };
        let genesis_path = std::env::temp_dir().join(format!(
            "simchain-genesis-{}-{:016x}.json",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::write(&genesis_path, serde_json::to_vec_pretty(&genesis)?)?;
        let mut command = Command::new(bin);
        command
            .arg("--genesis")
            .arg(&genesis_path)
            .arg("--chain-id")
            .arg(&options.chain_id)
            .arg("--block-time")
            .arg(format!("{}ms", options.block_time.as_millis()))
            .arg("--internal-validators")
            .arg(options.internal_validators.to_string())
            .arg("--internal-power")
            .arg(options.internal_power.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        for plan in &options.upgrades {
            command
                .arg("--upgrade")
                .arg(format!("{}:{}:{}", plan.name, plan.height, plan.info));
        }
        if let Some(record) = &options.record_file {
            command.arg("--record").arg(record);
        }
        // Keys pair with listeners by position, so a listener without one gets a throwaway
        // key file when a later listener has one.
        let keyed = options.listeners.iter().rposition(|l| l.node_key.is_some());
        for (index, listener) in options.listeners.iter().enumerate() {
            let spec = match &listener.name {
                Some(name) => format!("{name}={}", listener.addr),
                None => listener.addr.clone(),
            };
            command.arg("--listen").arg(spec);
            if let Some(rpc) = &listener.rpc_addr {
                let name = listener
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("sentry-{}", index + 1));
                command.arg("--rpc").arg(format!("{name}={rpc}"));
            }
            if keyed.is_some_and(|last| index <= last) {
                let key = match &listener.node_key {
                    Some(key) => key.clone(),
                    None => genesis_path.with_extension(format!("node-key-{index}.json")),
                };
                command.arg("--node-key").arg(key);
            }
        }
        match &options.log_file {
            Some(path) => command.stderr(std::fs::File::create(path)?),
            None => command.stderr(Stdio::null()),
        };
        let mut child = command
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let stdout = child.stdout.take().expect("stdout piped");
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let read = reader.read_line(&mut line);
        // Keep draining stdout so the network can never block on it.
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let parsed = read.ok().and_then(|_| parse_ready_line(&line));
        let Some(ready) = parsed else {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(&genesis_path);
            bail!("simchain-net did not print its ready line (got {line:?})");
        };
        Ok(Self {
            child,
            node_addr: ready.nodes,
            http_addr: ready.http,
            listeners: ready.listeners,
            genesis_path,
        })
    }

    /// Address(es) nodes connect to (`host:port[,host:port…]`, one per listener).
    pub fn node_addr(&self) -> &str {
        &self.node_addr
    }

    /// The listeners (sentries), in `--listen` order.
    pub fn listeners(&self) -> &[Listener] {
        &self.listeners
    }

    /// `[p2p] persistent_peers` reaching every listener: `id@addr,…`.
    pub fn persistent_peers(&self) -> String {
        self.listeners
            .iter()
            .map(Listener::peer)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Takes a listener down (its port closes, its sessions drop) or brings it back on the
    /// same address (`POST /listeners/NAME/down|up`).
    pub fn set_listener_up(&self, name: &str, up: bool) -> anyhow::Result<()> {
        let path = format!("/listeners/{name}/{}", if up { "up" } else { "down" });
        let (status, body) = http::request(&self.http_addr, "POST", &path, None, HTTP_TIMEOUT)?;
        if status != 200 {
            bail!("POST {path}: HTTP {status}: {body}");
        }
        Ok(())
    }

    /// The listener named `name`.
    pub fn listener(&self, name: &str) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.name == name)
    }

    /// HTTP query address (`host:port`).
    pub fn http_addr(&self) -> &str {
        &self.http_addr
    }

    /// Process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Points a node home at this network the way gaiad peers: `[p2p] persistent_peers` with
    /// every listener's `id@addr` (the older `[simchain] network` is cleared), and
    /// `[simchain] p2p_time_scale` = [`TEST_P2P_TIME_SCALE`].
    pub fn attach_home(&self, home: &Path) -> anyhow::Result<()> {
        set_persistent_peers(home, &self.persistent_peers())?;
        set_simchain_value(home, "p2p_time_scale", TEST_P2P_TIME_SCALE)?;
        Ok(())
    }

    /// `GET /record`.
    pub fn record(&self) -> anyhow::Result<Record> {
        let (status, body) = http::request(&self.http_addr, "GET", "/record", None, HTTP_TIMEOUT)?;
        if status != 200 {
            bail!("GET /record: HTTP {status}: {body}");
        }
        Ok(serde_json::from_str(&body)?)
    }

    /// Latest committed height (`GET /status`).
    pub fn height(&self) -> anyhow::Result<u64> {
        let (status, body) = http::request(&self.http_addr, "GET", "/status", None, HTTP_TIMEOUT)?;
        if status != 200 {
            bail!("GET /status: HTTP {status}: {body}");
        }
        let value: serde_json::Value = serde_json::from_str(&body)?;
        value["height"]
            .as_u64()
            .context("GET /status: no height in response")
    }

    /// `POST /upgrade`: schedules a plan as if a governance proposal passed.
    pub fn schedule_upgrade(&self, name: &str, height: u64, info: &str) -> anyhow::Result<()> {
        let body = serde_json::json!({"name": name, "height": height, "info": info}).to_string();
        let (status, response) = http::request(
            &self.http_addr,
            "POST",
            "/upgrade",
            Some(&body),
            HTTP_TIMEOUT,
        )?;
        if status != 200 {
            bail!("POST /upgrade: HTTP {status}: {response}");
        }
        Ok(())
    }

    /// Polls the record until `condition` holds; returns that record.
    pub fn wait_for(
        &self,
        timeout: Duration,
        mut condition: impl FnMut(&Record) -> bool,
    ) -> anyhow::Result<Record> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Ok(record) = self.record() {
                if condition(&record) {
                    return Ok(record);
                }
                last = Some(record);
            }
            if Instant::now() >= deadline {
                bail!("condition not met within {timeout:?}; last record: {last:?}");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits until the committed height is at least `height`.
    pub fn wait_for_height(&self, height: u64, timeout: Duration) -> anyhow::Result<u64> {
        Ok(self.wait_for(timeout, |r| r.height >= height)?.height)
    }

    /// Stops the network with SIGTERM (it writes its record file) and waits for it.
    pub fn stop(mut self) -> anyhow::Result<ExitStatus> {
        send_signal(self.child.id(), "TERM")?;
        let status = wait_child(&mut self.child, Duration::from_secs(5))?;
        Ok(status)
    }
}

impl Drop for SimNetwork {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.genesis_path);
    }
}

struct Ready {
    nodes: String,
    http: String,
    listeners: Vec<Listener>,
}

/// `simchain-net listening nodes=A[,B] node_ids=I[,J] names=N[,M] http=H[ rpc=R|-[,…]]`.
fn parse_ready_line(line: &str) -> Option<Ready> {
    let rest = line.trim().strip_prefix("simchain-net listening ")?;
    let mut nodes = None;
    let mut http = None;
    let mut ids = "";
    let mut names = "";
    let mut rpcs = "";
    for part in rest.split_whitespace() {
        if let Some(v) = part.strip_prefix("nodes=") {
            nodes = Some(v.to_string());
        } else if let Some(v) = part.strip_prefix("http=") {
            http = Some(v.to_string());
        } else if let Some(v) = part.strip_prefix("node_ids=") {
            ids = v;
        } else if let Some(v) = part.strip_prefix("names=") {
            names = v;
        } else if let Some(v) = part.strip_prefix("rpc=") {
            rpcs = v;
        }
    }
    let nodes = nodes?;
    let ids: Vec<&str> = ids.split(',').collect();
    let names: Vec<&str> = names.split(',').collect();
    let rpcs: Vec<&str> = rpcs.split(',').collect();
    let listeners = nodes
        .split(',')
        .enumerate()
        .map(|(i, addr)| Listener {
            name: names.get(i).unwrap_or(&"").to_string(),
            addr: addr.to_string(),
            node_id: ids.get(i).unwrap_or(&"").to_string(),
            rpc_addr: rpcs
                .get(i)
                .filter(|r| !r.is_empty() && **r != "-")
                .map(|r| r.to_string()),
        })
        .collect();
    Some(Ready {
        nodes,
        http: http?,
        listeners,
    })
}

fn send_signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .context("running kill")?;
    anyhow::ensure!(status.success(), "kill -{signal} {pid} failed");
    Ok(())
}

fn wait_child(child: &mut Child, timeout: Duration) -> anyhow::Result<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            bail!("process {} still running after {timeout:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A running `simd` with its stdout and stderr captured line by line (the most recent
/// 20 000 lines are kept). Killed on drop.
#[derive(Debug)]
pub struct SimdProcess {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl SimdProcess {
    /// Runs `bin [global_args] start --home HOME` with extra environment variables.
    pub fn start(
        bin: &Path,
        home: &Path,
        global_args: &[&str],
        envs: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let mut args: Vec<String> = global_args.iter().map(|s| s.to_string()).collect();
        args.push("start".into());
        args.push("--home".into());
        args.push(home.display().to_string());
        Self::spawn(bin, &args, envs)
    }

    /// Runs `bin args...` with extra environment variables.
    pub fn spawn(bin: &Path, args: &[String], envs: &[(&str, &str)]) -> anyhow::Result<Self> {
        let mut command = Command::new(bin);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in envs {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("stdout piped");
        let stderr = child.stderr.take().expect("stderr piped");
        for stream in [Box::new(stdout) as Box<dyn Read + Send>, Box::new(stderr)] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    let mut lines = lines.lock().unwrap_or_else(|p| p.into_inner());
                    if lines.len() >= MAX_CAPTURED_LINES {
                        lines.drain(..MAX_CAPTURED_LINES / 2);
                    }
                    lines.push(line);
                }
            });
        }
        Ok(Self { child, lines })
    }

    /// Process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Captured output so far, one line per entry.
    pub fn output(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits until a captured line contains `needle`; returns that line.
    pub fn wait_for_output(&self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self
                .lines
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .find(|l| l.contains(needle))
            {
                return Ok(line.clone());
            }
            if Instant::now() >= deadline {
                bail!(
                    "no output line containing {needle:?} within {timeout:?}; last lines:\n{}",
                    self.tail(20)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last `n` captured lines, joined.
    pub fn tail(&self, n: usize) -> String {
        let lines = self.output();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        wait_child(&mut self.child, timeout)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) -> anyhow::Result<()> {
        send_signal(self.child.id(), "TERM")
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SimdProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Writes an executable shell script `path` that `exec`s `simd` with a fixed identity, the way
/// tests install per-version "binaries" (e.g. in a Cosmovisor layout).
pub fn write_versioned_binary(
    path: &Path,
    simd: &Path,
    version: &str,
    upgrade_handlers: &[&str],
) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut script = format!(
        "#!/bin/sh\nexec '{}' --sim-version '{version}'",
        simd.display()
    );
    for handler in upgrade_handlers {
        script.push_str(&format!(" --sim-upgrade-handler '{handler}'"));
    }
    script.push_str(" \"$@\"\n");
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, script)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_parses() {
        let ready = parse_ready_line(
            "simchain-net listening nodes=127.0.0.2:1,127.0.0.3:2 node_ids=aa,bb names=a,b http=127.0.0.1:2 rpc=-,127.0.0.1:7\n",
        )
        .unwrap();
        assert_eq!(ready.listeners[0].rpc_url(), None);
        assert_eq!(ready.nodes, "127.0.0.2:1,127.0.0.3:2");
        assert_eq!(ready.http, "127.0.0.1:2");
        assert_eq!(
            ready.listeners[1],
            Listener {
                name: "b".into(),
                addr: "127.0.0.3:2".into(),
                node_id: "bb".into(),
                rpc_addr: Some("127.0.0.1:7".into()),
            }
        );
        assert_eq!(
            ready.listeners[1].rpc_url().as_deref(),
            Some("http://127.0.0.1:7")
        );
        let old =
            parse_ready_line("simchain-net listening nodes=127.0.0.1:1 http=127.0.0.1:2").unwrap();
        assert_eq!(old.listeners[0].rpc_addr, None);
        assert_eq!(ready.listeners[1].peer(), "bb@127.0.0.3:2");
        assert!(parse_ready_line("hello").is_none());
    }
}
