//! Fixture for end-to-end tests: a simulated chain, a validator home in
//! Cosmovisor layout, and the real `palisade-supervisor` binary.
#![allow(dead_code)]
pub mod cloud_shim;
pub mod netns;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use palisade_simchain::protocol::UpgradePlan;
use palisade_simchain::testkit::{
    SimNetwork, SimNetworkOptions, ValidatorKeyInfo, free_port, write_validator_home,
    write_versioned_binary,
};

pub const SUPERVISOR: &str = env!("CARGO_BIN_EXE_palisade-supervisor");

/// The tests' timing, in one place: every integration test of the
/// supervisor takes its block times, waits and bounds from here, so that
/// one change (a slower CI machine, say) is made once. A file keeps a
/// duration of its own only when it is a parameter of its scenario (an
/// idle timeout it configures, how long its abuse lasts), not a wait.
pub mod timing {
    use std::time::Duration;

    /// Block time of the simulated chain in most tests: fast enough that a
    /// test sees many blocks, slow enough for 2 loaded cores.
    pub const BLOCK: Duration = Duration::from_millis(150);
    /// Block time where many processes share the cores (the RPC abuse
    /// test's flood of connections), so that the chain still commits every
    /// block on time and a missed block means the supervisor was at fault.
    pub const SLOW_BLOCK: Duration = Duration::from_millis(300);
    /// Block time in the network-namespace mesh, where sshd, the bastions'
    /// daemons and the tunnels share the cores with the chain and the
    /// supervisor; what its failover test counts in blocks (misses while
    /// both bastions are cut, recovery) is tuned to it.
    pub const MESH_BLOCK: Duration = Duration::from_millis(200);
    /// Block time while the daemon floods the supervisor with output
    /// (hundreds of MB): slower still, so that a missed block is the
    /// supervisor's fault, not the starvation of 2 cores.
    pub const FLOOD_BLOCK: Duration = Duration::from_millis(400);
    /// The longest wait for something that normally takes seconds (a
    /// supervisor starting, a chain reaching a height, an upgrade
    /// completing): generous, because a timeout only fails a test that is
    /// already wrong.
    pub const LONG: Duration = Duration::from_secs(40);
    /// The wait for an answer that must come at once (a refusal, a
    /// listing): far below the supervisor's own 60 s bound on commands.
    pub const PROMPT: Duration = Duration::from_secs(2);
    /// The wait for an SSH tunnel to a bastion (real sshd, or one in the
    /// network-namespace mesh) to connect, reconnect, notice a cut link or
    /// carry a forward, and for what follows from it at once (a bastion's
    /// health check, a backup reaching it, the mesh's chain answering).
    /// Tighter than [`LONG`]: these tests configure reconnect delays and
    /// keepalives of at most a few seconds, so a tunnel that takes longer
    /// has not healed (or noticed the cut) as promised.
    pub const TUNNEL: Duration = Duration::from_secs(15);
    /// The bound on one operation that waits on nothing slow: a call
    /// through the control RPC's dispatcher answered by an in-process
    /// stand-in, or one backup-store operation over a local socket (also
    /// the store's own timeout there, so a dead store must fail within
    /// it). Seconds here mean a hang, not a slow machine.
    pub const OPERATION: Duration = Duration::from_secs(5);
    /// The longest a test waits for one control-RPC answer (an unlock runs
    /// the start rule first): above the supervisor's own 60 s bound on a
    /// command, so that a command the loop never answers shows as the
    /// supervisor's error, not as the test's read timeout.
    pub const ANSWER: Duration = Duration::from_secs(90);
}

/// The binaries the failover fixture (`palisade_testkit::failover`) runs: this build's
/// supervisor, and `palisade-ctl`, `simd` and `simchain-net` from the workspace build.
pub fn failover_binaries() -> palisade_testkit::failover::Binaries {
    palisade_testkit::failover::Binaries {
        supervisor: SUPERVISOR.into(),
        ctl: workspace_binary("palisade-ctl"),
        simd: simd(),
        simchain_net: workspace_binary("simchain-net"),
    }
}

/// `target/<profile>/<name>`: the simulated chain's binaries are built by
/// `cargo build --workspace` (the README's test command does that first).
pub fn workspace_binary(name: &str) -> PathBuf {
    let path = Path::new(SUPERVISOR).with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` before the supervisor's integration tests",
        path.display()
    );
    path
}

pub fn simd() -> PathBuf {
    workspace_binary("simd")
}

/// Poll `condition` until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Check `condition` at every poll for `duration`, failing at once when it
/// does not hold: for what must *not* happen within a window (a restart
/// after a stop, an unlock from a replay), where there is no event to wait
/// for. Polling, unlike one look after a sleep, also catches a change that
/// came and went within the window.
pub fn holds_for(duration: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let end = Instant::now() + duration;
    loop {
        assert!(condition(), "{what} stopped holding within {duration:?}");
        if Instant::now() >= end {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `palisade-supervisor` with a clean Cosmovisor environment for `home`
/// and `daemon_name` (PATH kept, fast polling, a short shutdown grace).
pub fn supervisor_command_for(home: &Path, daemon_name: &str) -> Command {
    let mut command = Command::new(SUPERVISOR);
    supervisor_env(&mut command, home, daemon_name);
    command
}

/// The environment of [`supervisor_command_for`] on any command (one run
/// inside a network namespace, say).
pub fn supervisor_env(command: &mut Command, home: &Path, daemon_name: &str) {
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DAEMON_HOME", home)
        .env("DAEMON_NAME", daemon_name)
        .env("DAEMON_POLL_INTERVAL", "50ms")
        .env("DAEMON_SHUTDOWN_GRACE", "5s")
        .env("PALISADE_LOG", "info");
}

pub struct Chain {
    pub dir: tempfile::TempDir,
    pub home: PathBuf,
    pub validator: ValidatorKeyInfo,
    pub network: SimNetwork,
}

impl Chain {
    /// A chain with one external validator whose home is `DAEMON_HOME`,
    /// `genesis` installed from a v1 binary (no upgrade handlers).
    pub fn start(upgrades: &[(&str, u64)], block_time: Duration) -> Chain {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let validator =
            write_validator_home(&home, "val1", "sim-1", "127.0.0.1:1", free_port()).unwrap();
        let network = SimNetwork::spawn(
            &workspace_binary("simchain-net"),
            std::slice::from_ref(&validator),
            &SimNetworkOptions {
                block_time,
                upgrades: upgrades
                    .iter()
                    .map(|(name, height)| UpgradePlan {
                        name: name.to_string(),
                        height: *height,
                        info: String::new(),
                    })
                    .collect(),
                log_file: Some(dir.path().join("network.log")),
                ..SimNetworkOptions::default()
            },
        )
        .unwrap();
        network.attach_home(&home).unwrap();
        let chain = Chain {
            dir,
            home,
            validator,
            network,
        };
        let genesis = chain.version_binary("v1", &[]);
        let output = chain
            .supervisor_command(&[])
            .args(["init"])
            .arg(&genesis)
            .output()
            .unwrap();
        assert!(output.status.success(), "init failed: {output:?}");
        chain
    }

    /// Write a "binary" (a script exec'ing simd with an identity).
    pub fn version_binary(&self, version: &str, handlers: &[&str]) -> PathBuf {
        let path = self.dir.path().join("binaries").join(version).join("simd");
        write_versioned_binary(&path, &simd(), version, handlers).unwrap();
        path
    }

    /// `palisade-supervisor` with the Cosmovisor environment for this home.
    pub fn supervisor_command(&self, env: &[(&str, &str)]) -> Command {
        let mut command = supervisor_command_for(&self.home, "simd");
        for (key, value) in env {
            command.env(key, value);
        }
        command
    }

    pub fn add_upgrade(&self, name: &str, binary: &Path, env: &[(&str, &str)]) {
        let output = self
            .supervisor_command(env)
            .args(["add-upgrade", name])
            .arg(binary)
            .output()
            .unwrap();
        assert!(output.status.success(), "add-upgrade failed: {output:?}");
    }

    /// Start `palisade-supervisor run start --home HOME`.
    pub fn run_supervisor(&self, env: &[(&str, &str)]) -> Supervisor {
        let mut command = self.supervisor_command(env);
        command
            .args(["run", "start", "--home"])
            .arg(&self.home)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Supervisor::spawn(command)
    }

    pub fn cosmovisor(&self) -> PathBuf {
        self.home.join("cosmovisor")
    }

    pub fn current_target(&self) -> PathBuf {
        std::fs::read_link(self.cosmovisor().join("current")).unwrap()
    }

    /// The entries of `cosmovisor/palisade-upgrades.jsonl`, oldest first
    /// (a last line still being appended, without its newline, is left
    /// out).
    pub fn upgrade_records(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.cosmovisor().join("palisade-upgrades.jsonl"))
            .unwrap_or_default();
        text.split_inclusive('\n')
            .filter(|line| line.ends_with('\n'))
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// Wait until the upgrade record holds an entry for upgrade `name` (as
    /// the plan names it); the newest such entry. The supervisor writes it
    /// when the upgrade ends, before it logs the outcome: at the new
    /// binary's start (`completed`), when it gives up (`failed`, with the
    /// reason), or when it exits after the switch
    /// (`switched_not_restarted`).
    pub fn wait_for_upgrade_record(&self, name: &str, timeout: Duration) -> serde_json::Value {
        let mut found = None;
        wait_until(timeout, &format!("the upgrade record of {name}"), || {
            found = self
                .upgrade_records()
                .into_iter()
                .rev()
                .find(|record| record["name"] == name);
            found.is_some()
        });
        found.unwrap()
    }

    /// Wait until upgrade `name` has completed: the new binary runs and the
    /// record says so (what the "upgrade completed; new binary running"
    /// line reports). Fails at once, with the entry, when the upgrade ended
    /// otherwise. The entry.
    pub fn wait_for_upgrade_completed(&self, name: &str, timeout: Duration) -> serde_json::Value {
        let record = self.wait_for_upgrade_record(name, timeout);
        assert_eq!(
            record["outcome"]["status"], "completed",
            "upgrade {name} did not complete: {record}"
        );
        record
    }

    /// Wait until the validator has signed `count` more heights.
    pub fn wait_signing(&self, count: u64, timeout: Duration) -> u64 {
        let start = self.network.record().unwrap().validators["val1"].signed_heights;
        let record = self
            .network
            .wait_for(timeout, |record| {
                record.validators["val1"].signed_heights >= start + count
            })
            .unwrap();
        record.validators["val1"].last_signed_height.unwrap()
    }

    pub fn assert_no_double_sign(&self) {
        let record = self.network.record().unwrap();
        assert!(
            record.double_signs.is_empty(),
            "double signs: {:?}",
            record.double_signs
        );
    }
}

/// A running supervisor whose output is collected line by line.
pub struct Supervisor {
    pub child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    /// How many of the two output readers reached the end of their pipe.
    drained: Arc<std::sync::atomic::AtomicUsize>,
}

impl Supervisor {
    pub fn spawn(mut command: Command) -> Supervisor {
        let mut child = command.spawn().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let drained = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let lines = lines.clone();
            let drained = drained.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    // The simulated node's flood lines are only load; keep
                    // everything else (bounded) for assertions.
                    if line.contains(" DBG flood ") {
                        continue;
                    }
                    let mut lines = lines.lock().unwrap();
                    if lines.len() < 200_000 {
                        lines.push(line);
                    }
                }
                drained.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
        Supervisor {
            child,
            lines,
            drained,
        }
    }

    pub fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    pub fn has_line(&self, needle: &str) -> bool {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .any(|line| line.contains(needle))
    }

    pub fn count_lines(&self, needle: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line.contains(needle))
            .count()
    }

    pub fn wait_for_line(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.has_line(needle) {
            if Instant::now() > deadline {
                panic!(
                    "no line containing {needle:?} within {timeout:?}; output:\n{}",
                    tail(&self.output(), 60)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Wait for the supervisor to exit, then for its last output lines to
    /// be read (so that a log check right after sees everything it wrote).
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // A process the supervisor left behind could hold the
                // pipes open: bounded.
                let read_all = Instant::now() + Duration::from_secs(5);
                while self.drained.load(std::sync::atomic::Ordering::SeqCst) < 2
                    && Instant::now() < read_all
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "supervisor did not exit within {timeout:?}; output:\n{}",
                    tail(&self.output(), 60)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Pids of processes whose parent is the supervisor.
    pub fn children(&self) -> Vec<u32> {
        children_of(self.child.id())
    }

    /// SIGTERM and wait; asserts a clean exit and no leftover children.
    pub fn stop(mut self) -> String {
        let pid = self.child.id();
        let children = all_descendants(pid);
        self.signal("TERM");
        let status = self.wait_exit(Duration::from_secs(20));
        assert!(
            status.success(),
            "supervisor exit {status:?}:\n{}",
            tail(&self.output(), 60)
        );
        for child in children {
            assert!(
                !process_alive(child),
                "process {child} outlived the supervisor"
            );
        }
        self.output()
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Throwaway ed25519 SSH keys (`ssh-keygen`, no passphrase), by name: the
/// private key's path and the public key's authorized_keys line.
pub struct SshKeys {
    dir: tempfile::TempDir,
    public: std::collections::HashMap<String, String>,
}

impl SshKeys {
    pub fn new(names: &[&str]) -> SshKeys {
        let dir = tempfile::tempdir().unwrap();
        let public = names
            .iter()
            .map(|name| {
                let line = palisade_testkit::ssh_keygen(&dir.path().join(name)).unwrap();
                (name.to_string(), line.trim().to_string())
            })
            .collect();
        SshKeys { dir, public }
    }

    /// The private key file of `name`.
    pub fn path(&self, name: &str) -> PathBuf {
        assert!(self.public.contains_key(name), "no key {name}");
        self.dir.path().join(name)
    }

    /// The public key line of `name` (`ssh-ed25519 AAAA… comment`).
    pub fn public(&self, name: &str) -> &str {
        &self.public[name]
    }
}

/// A child process killed (and reaped) when the test ends, pass or fail.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn tail(text: &str, lines: usize) -> String {
    palisade_testkit::last_lines(text, lines)
}

pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // A zombie ('Z') is dead for our purposes but means nobody reaped it.
        Ok(stat) => !stat[stat.rfind(')').unwrap() + 2..].starts_with('Z'),
        Err(_) => false,
    }
}

pub fn children_of(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        if after.split(' ').nth(1).and_then(|p| p.parse::<u32>().ok()) == Some(parent) {
            out.push(pid);
        }
    }
    out
}

pub fn all_descendants(root: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut queue = vec![root];
    while let Some(pid) = queue.pop() {
        for child in children_of(pid) {
            out.push(child);
            queue.push(child);
        }
    }
    out
}

/// An HTTP/1.1 server on 127.0.0.1 until the test ends: each connection's
/// request head is read, then `respond` gets the request path (without the
/// query) and the stream, on a thread of its own. Returns `http://ADDRESS`.
pub fn serve_http(respond: impl Fn(&str, std::net::TcpStream) + Send + Sync + 'static) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let respond = Arc::new(respond);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let respond = respond.clone();
            std::thread::spawn(move || {
                use std::io::Read;
                let mut request = Vec::new();
                let mut buffer = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&request);
                let path = text.split_whitespace().nth(1).unwrap_or("/");
                let path = path.split('?').next().unwrap_or("/").to_string();
                respond(&path, stream);
            });
        }
    });
    format!("http://{address}")
}

/// Serve `files` over HTTP/1.1 on 127.0.0.1 until the test ends (404 for
/// any other path).
pub fn serve_files(files: Vec<(String, Vec<u8>)>) -> String {
    serve_http(move |path, mut stream| {
        use std::io::Write;
        match files.iter().find(|(name, _)| name == path) {
            Some((_, body)) => {
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(body);
            }
            None => {
                let _ = write!(
                    stream,
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        }
    })
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A chain whose supervisor has a vault (so it starts locked) and a
/// control socket; see [`VaultRpc::setup`].
pub struct VaultRpc {
    pub chain: Chain,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub tmpfs: PathBuf,
    pub passphrase: String,
    /// The tmpfs dir's private parent (0700): the supervisor refuses a
    /// key directory in a directory others may write (/dev/shm itself).
    _shm: tempfile::TempDir,
}

/// A private (0700) directory on tmpfs for a test's key directory: the
/// supervisor refuses a key directory whose parent others may write.
pub fn private_shm_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("palisade-test-")
        .tempdir_in("/dev/shm")
        .unwrap()
}

impl Drop for VaultRpc {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.tmpfs);
    }
}

impl VaultRpc {
    /// A chain with block time `block`, `init-vault` with `passphrase`, and
    /// a config file with `[vault]`, `[backup]` and `[rpc]` (socket in the
    /// test's directory, name `val1`). `rpc_extra` is written inside
    /// `[rpc]` (e.g. `idle-timeout = "1s"`), `extra` after it (whole
    /// sections).
    pub fn setup(block: Duration, passphrase: &str, rpc_extra: &str, extra: &str) -> VaultRpc {
        use std::os::unix::fs::PermissionsExt;
        let chain = Chain::start(&[], block);
        let dir = chain.dir.path();
        let passphrase_file = dir.join("passphrase");
        std::fs::write(&passphrase_file, format!("{passphrase}\n")).unwrap();
        std::fs::set_permissions(&passphrase_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let shm = private_shm_dir();
        let tmpfs = shm.path().join("keys");
        let socket = dir.join("run").join("supervisor.sock");
        let config = dir.join("palisade.toml");
        std::fs::write(
            &config,
            format!(
                "[vault]\nswap = \"warn\"\ntmpfs-dir = {tmpfs:?}\nscrypt-work-factor = 10\n\
                 [backup]\ndebounce = \"100ms\"\nchain-id = \"sim-1\"\n\
                 [rpc]\nsocket = {socket:?}\nname = \"val1\"\n{rpc_extra}\n{extra}\n"
            ),
        )
        .unwrap();
        let fixture = VaultRpc {
            chain,
            config,
            socket,
            tmpfs,
            passphrase: passphrase.to_string(),
            _shm: shm,
        };
        let output = fixture
            .command()
            .args(["init-vault", "--passphrase-file"])
            .arg(&passphrase_file)
            .output()
            .unwrap();
        assert!(output.status.success(), "init-vault: {output:?}");
        fixture
    }

    /// `palisade-supervisor init-rpc`: the TLS identity; returns the
    /// certificate pin it prints (`sha256:…`).
    pub fn init_rpc(&self) -> String {
        let output = self.command().arg("init-rpc").output().unwrap();
        assert!(output.status.success(), "init-rpc: {output:?}");
        let pin = String::from_utf8(output.stdout).unwrap().trim().to_string();
        assert!(pin.starts_with("sha256:"), "{pin}");
        pin
    }

    /// `palisade-supervisor` with this fixture's environment and config.
    pub fn command(&self) -> Command {
        self.chain
            .supervisor_command(&[("PALISADE_CONFIG", self.config.to_str().unwrap())])
    }

    /// `palisade-supervisor run start`, locked until an unlock.
    pub fn run(&self) -> Supervisor {
        self.chain
            .run_supervisor(&[("PALISADE_CONFIG", self.config.to_str().unwrap())])
    }

    /// `palisade-ctl --socket SOCKET ARGS…` with `stdin`.
    pub fn ctl(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        let socket = self.socket.to_str().unwrap();
        let all: Vec<&str> = ["--socket", socket].iter().chain(args).copied().collect();
        run_ctl(self.chain.dir.path(), &all, stdin)
    }

    /// Unlock with `palisade-ctl unlock --passphrase-stdin`.
    pub fn unlock(&self) {
        let output = self.ctl(
            &["unlock", "--passphrase-stdin"],
            Some(&format!("{}\n", self.passphrase)),
        );
        assert!(output.status.success(), "unlock: {output:?}");
    }
}

/// The real `palisade-ctl` with `args`, `stdin` written then closed, a
/// clean environment (PATH only) and `home` as HOME (no config file there).
pub fn run_ctl(home: &Path, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    run_ctl_env(home, args, stdin, &[])
}

/// [`run_ctl`] with `env` added to the cleared environment (e.g.
/// `SSH_AUTH_SOCK`).
pub fn run_ctl_env(
    home: &Path,
    args: &[&str],
    stdin: Option<&str>,
    env: &[(&str, &Path)],
) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(workspace_binary("palisade-ctl"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
    }
    child.wait_with_output().unwrap()
}

/// A raw control-RPC connection over the Unix socket, in plaintext: the
/// tests run as root, so the supervisor treats them as trusted local users
/// (`docs/rpc.md` §1) and needs neither TLS nor a login.
pub struct RawRpc {
    reader: BufReader<std::os::unix::net::UnixStream>,
    /// The greeting line, parsed.
    pub greeting: serde_json::Value,
}

impl RawRpc {
    /// Connect and read the greeting; every later read waits at most
    /// `timeout`.
    pub fn connect(socket: &Path, timeout: Duration) -> std::io::Result<RawRpc> {
        let stream = std::os::unix::net::UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed before the greeting",
            ));
        }
        let greeting = serde_json::from_str(&line).map_err(|error| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("greeting {line:?}: {error}"),
            )
        })?;
        Ok(RawRpc { reader, greeting })
    }

    /// Write `bytes` as they are.
    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        let stream = self.reader.get_mut();
        stream.write_all(bytes)?;
        stream.flush()
    }

    /// The next line without its newline; `None` when the server closed.
    pub fn read_line(&mut self) -> std::io::Result<Option<String>> {
        let mut line = String::new();
        match self.reader.read_line(&mut line)? {
            0 => Ok(None),
            _ => Ok(Some(line.trim_end_matches('\n').to_string())),
        }
    }

    /// The underlying socket.
    pub fn stream(&self) -> &std::os::unix::net::UnixStream {
        self.reader.get_ref()
    }
}

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`, …).
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// A stand-in for systemd's notification socket: every datagram the
/// supervisor sends (`READY=1`, `STATUS=…`, `STOPPING=1`, `WATCHDOG=1`) is
/// kept with the time it arrived. Pass [`FakeSystemd::env`] to the
/// supervisor.
pub struct FakeSystemd {
    path: PathBuf,
    messages: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl FakeSystemd {
    /// Listen on `dir/notify.sock`.
    pub fn start(dir: &Path) -> FakeSystemd {
        let path = dir.join("notify.sock");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let kept = messages.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(length) = socket.recv(&mut buffer) {
                let text = String::from_utf8_lossy(&buffer[..length]).into_owned();
                kept.lock().unwrap().push((Instant::now(), text));
            }
        });
        FakeSystemd { path, messages }
    }

    /// `NOTIFY_SOCKET` and `WATCHDOG_USEC` (systemd's `WatchdogSec=`).
    pub fn env(&self, watchdog: Duration) -> Vec<(&'static str, String)> {
        vec![
            ("NOTIFY_SOCKET", self.path.display().to_string()),
            ("WATCHDOG_USEC", watchdog.as_micros().to_string()),
        ]
    }

    /// Every message so far, with its arrival time.
    pub fn messages(&self) -> Vec<(Instant, String)> {
        self.messages.lock().unwrap().clone()
    }

    /// How many messages contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.messages()
            .iter()
            .filter(|(_, text)| text.contains(needle))
            .count()
    }

    /// Wait for a message containing `needle`; its arrival time.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Instant {
        let mut found = None;
        wait_until(timeout, &format!("a notification with {needle:?}"), || {
            found = self
                .messages()
                .iter()
                .find(|(_, text)| text.contains(needle))
                .map(|(at, _)| *at);
            found.is_some()
        });
        found.unwrap()
    }

    /// The watchdog pings between `from` and `to`.
    pub fn pings(&self, from: Instant, to: Instant) -> Vec<Instant> {
        self.messages()
            .into_iter()
            .filter(|(at, text)| *at >= from && *at <= to && text.contains("WATCHDOG=1"))
            .map(|(at, _)| at)
            .collect()
    }
}

/// The longest time without a ping in `[from, to]`, counting the edges.
pub fn longest_silence(pings: &[Instant], from: Instant, to: Instant) -> Duration {
    let mut edges = vec![from];
    edges.extend_from_slice(pings);
    edges.push(to);
    edges
        .windows(2)
        .map(|pair| pair[1].saturating_duration_since(pair[0]))
        .max()
        .unwrap_or_default()
}

/// One call over a fresh plaintext connection (tests run as root, a trusted
/// local user): the response and how long it took to come.
pub fn rpc_call(
    socket: &Path,
    method: &str,
    params: Option<serde_json::Value>,
    secret: Option<&str>,
) -> (serde_json::Value, Duration) {
    let mut rpc = RawRpc::connect(socket, timing::ANSWER).unwrap();
    let mut request = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method});
    if let Some(params) = params {
        request["params"] = params;
    }
    let mut bytes = serde_json::to_vec(&request).unwrap();
    bytes.push(b'\n');
    if let Some(secret) = secret {
        bytes.extend_from_slice(secret.as_bytes());
        bytes.push(b'\n');
    }
    let sent = Instant::now();
    rpc.send(&bytes).unwrap();
    let line = rpc.read_line().unwrap().expect("an answer");
    (serde_json::from_str(&line).unwrap(), sent.elapsed())
}

/// The control socket a supervisor binds when `[rpc] socket` is not set:
/// `$DAEMON_HOME/palisade/run/supervisor.sock`.
pub fn default_socket(home: &Path) -> PathBuf {
    home.join("palisade").join("run").join("supervisor.sock")
}

/// `status`'s result over `socket`, as a trusted local user (`None` while
/// the socket does not answer: not bound yet, or its supervisor gone).
pub fn status(socket: &Path) -> Option<serde_json::Value> {
    if !socket.exists() {
        return None;
    }
    let mut rpc = RawRpc::connect(socket, Duration::from_secs(10)).ok()?;
    rpc.send(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"status\"}\n")
        .ok()?;
    let line = rpc.read_line().ok()??;
    let mut answer: serde_json::Value = serde_json::from_str(&line).ok()?;
    answer.get_mut("result").map(serde_json::Value::take)
}

/// `status`'s `node.state` over `socket` (`None` while the socket does not
/// answer yet).
pub fn node_state(socket: &Path) -> Option<String> {
    status(socket)?["node"]["state"].as_str().map(str::to_owned)
}

/// Poll `status` over `socket` until `condition` holds; that status. The
/// failure names `what` and shows the last status seen.
pub fn wait_for_status(
    socket: &Path,
    timeout: Duration,
    what: &str,
    mut condition: impl FnMut(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        if let Some(status) = status(socket) {
            if condition(&status) {
                return status;
            }
            last = Some(status);
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; last status: {}",
            last.map_or_else(
                || "none (the socket did not answer)".to_owned(),
                |s| s.to_string()
            )
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait until `status` shows the node in `state` (`starting`, `locked`,
/// `running`, `stopped`, `restarting`, `halted`, `upgrading`,
/// `stopping`); that status.
pub fn wait_for_node_state(socket: &Path, state: &str, timeout: Duration) -> serde_json::Value {
    wait_for_status(
        socket,
        timeout,
        &format!("node state {state:?}"),
        |status| status["node"]["state"] == state,
    )
}

/// Wait until `status` lists at least one bastion tunnel and every one is
/// connected; that status.
pub fn wait_for_all_tunnels_up(socket: &Path, timeout: Duration) -> serde_json::Value {
    wait_for_every_tunnel(socket, timeout, "every bastion tunnel up", true)
}

/// Wait until `status` lists at least one bastion tunnel and none is
/// connected; that status.
pub fn wait_for_all_tunnels_down(socket: &Path, timeout: Duration) -> serde_json::Value {
    wait_for_every_tunnel(socket, timeout, "every bastion tunnel down", false)
}

fn wait_for_every_tunnel(
    socket: &Path,
    timeout: Duration,
    what: &str,
    connected: bool,
) -> serde_json::Value {
    wait_for_status(socket, timeout, what, |status| {
        status["tunnels"].as_array().is_some_and(|tunnels| {
            !tunnels.is_empty()
                && tunnels
                    .iter()
                    .all(|tunnel| tunnel["connected"] == connected)
        })
    })
}
