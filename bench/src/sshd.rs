//! A throwaway OpenSSH sshd on 127.0.0.1 for the tunnel benchmarks, set up
//! exactly as the supervisor's integration tests do it
//! (`supervisor/tests/tunnel_sshd.rs`, `docs/bastion-sshd.md`): its own host
//! key, one client key restricted to forwarding and to
//! `permitopen="127.0.0.1:<port>"`, `UsePAM no`, `StrictModes no`.
//!
//! sshd logs at `DEBUG1` so the algorithms each client negotiated can be
//! read back from its log ([`Sshd::negotiated_since`]): the OpenSSH peer is
//! then forced to the very algorithms russh chose.
//!
//! Also the OpenSSH client side ([`SshClient`]) and small blocking TCP
//! servers (sink, echo) that the forwards point at.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use palisade_simchain::testkit::free_port;
use palisade_supervisor::tunnel::{BastionConfig, HostKeyPolicy};

pub const SSHD: &str = "/usr/sbin/sshd";
/// How long sshd gets to listen, and a forward to come up.
pub const WAIT: Duration = Duration::from_secs(15);

/// A running (or, between [`Sshd::kill`] and [`Sshd::spawn`], dead) sshd.
pub struct Sshd {
    dir: tempfile::TempDir,
    pub port: u16,
    host_fingerprint: String,
    client_key: PathBuf,
    known_hosts: PathBuf,
    user: String,
    child: Option<Child>,
}

fn run(command: &mut Command) -> anyhow::Result<String> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn keygen(path: &Path) -> anyhow::Result<()> {
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "", "-f"])
        .arg(path))
    .map(drop)
}

fn current_user() -> anyhow::Result<String> {
    Ok(nix::unistd::User::from_uid(nix::unistd::geteuid())?
        .context("the current user has no passwd entry (sshd needs one)")?
        .name)
}

/// `OpenSSH_9.2p1` from `ssh -V`.
pub fn openssh_version() -> anyhow::Result<String> {
    let output = Command::new("ssh")
        .arg("-V")
        .output()
        .context("running `ssh -V`: is openssh-client installed?")?;
    let text = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    text.split_whitespace()
        .next()
        .map(|version| version.trim_end_matches(',').to_string())
        .filter(|version| version.starts_with("OpenSSH"))
        .with_context(|| format!("unexpected `ssh -V` output: {text:?}"))
}

impl Sshd {
    /// Keys, config, and a listening sshd; the client key may open
    /// `127.0.0.1:<port>` for each of `allowed_ports` and nothing else.
    pub async fn start(scratch: &Path, allowed_ports: &[u16]) -> anyhow::Result<Sshd> {
        if !Path::new(SSHD).exists() {
            bail!(
                "{SSHD} is missing: install openssh-server (scripts/bench.sh does) to run the tunnel benchmarks"
            );
        }
        openssh_version()?;
        std::fs::create_dir_all(scratch)
            .with_context(|| format!("creating {}", scratch.display()))?;
        let dir = tempfile::Builder::new()
            .prefix("sshd-")
            .tempdir_in(scratch)?;
        let host_key = dir.path().join("host_ed25519");
        let client_key = dir.path().join("client_ed25519");
        keygen(&host_key)?;
        keygen(&client_key)?;
        let client_public = std::fs::read_to_string(client_key.with_extension("pub"))?;
        let host_public = std::fs::read_to_string(host_key.with_extension("pub"))?;
        let permitopen: Vec<String> = allowed_ports
            .iter()
            .map(|port| format!("permitopen=\"127.0.0.1:{port}\""))
            .collect();
        let authorized_keys = dir.path().join("authorized_keys");
        std::fs::write(
            &authorized_keys,
            format!(
                "restrict,port-forwarding,{} {}\n",
                permitopen.join(","),
                client_public.trim()
            ),
        )?;
        let port = free_port();
        // For the OpenSSH client: the same pinned key, nothing else trusted.
        let known_hosts = dir.path().join("known_hosts");
        let mut host_key_fields = host_public.split_whitespace();
        let (Some(kind), Some(blob)) = (host_key_fields.next(), host_key_fields.next()) else {
            bail!("unexpected host public key {host_public:?}");
        };
        std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {kind} {blob}\n"))?;
        std::fs::write(
            dir.path().join("sshd_config"),
            format!(
                "Port {port}\n\
                 ListenAddress 127.0.0.1\n\
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
                 LogLevel DEBUG1\n",
                host_key = host_key.display(),
                authorized_keys = authorized_keys.display(),
                pid_file = dir.path().join("sshd.pid").display(),
            ),
        )?;
        // sshd's privilege-separation directory.
        std::fs::create_dir_all("/run/sshd").context("creating /run/sshd")?;
        let host_fingerprint = run(Command::new("ssh-keygen")
            .arg("-lf")
            .arg(host_key.with_extension("pub")))?
        .split_whitespace()
        .nth(1)
        .context("no fingerprint in `ssh-keygen -lf` output")?
        .to_string();
        let mut sshd = Sshd {
            dir,
            port,
            host_fingerprint,
            client_key,
            known_hosts,
            user: current_user()?,
            child: None,
        };
        sshd.spawn()?;
        sshd.wait_listening().await?;
        Ok(sshd)
    }

    /// Start the sshd process (see [`Sshd::wait_listening`]).
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("sshd is already running");
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(self.dir.path().join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {SSHD}"))?;
        self.child = Some(child);
        Ok(())
    }

    /// Poll (every 2 ms) until sshd accepts a TCP connection; returns the
    /// instant it first did.
    pub async fn wait_listening(&mut self) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + WAIT;
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(Instant::now());
            }
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                bail!("sshd exited with {status}:\n{}", self.log_tail(20));
            }
            if Instant::now() >= deadline {
                bail!(
                    "sshd did not listen on 127.0.0.1:{} within {WAIT:?}:\n{}",
                    self.port,
                    self.log_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// SIGKILL the listener and every per-connection sshd it forked (they
    /// run in their own sessions, so a process-group kill would miss them):
    /// the bastion vanishes as in a crash.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let mut doomed = vec![child.id() as i32];
        let mut index = 0;
        while index < doomed.len() {
            let parent = doomed[index];
            for entry in std::fs::read_dir("/proc")?.flatten() {
                let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
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
                    .and_then(|p| p.parse().ok());
                if ppid == Some(parent) && !doomed.contains(&pid) {
                    doomed.push(pid);
                }
            }
            index += 1;
        }
        for pid in doomed.iter().rev() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        child.wait()?;
        Ok(())
    }

    /// A file in this sshd's private directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn log_path(&self) -> PathBuf {
        self.path("sshd.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Current length of the log, to read what a client negotiated after it.
    pub fn log_len(&self) -> usize {
        self.log().len()
    }

    /// The algorithms of the first client that connected after `offset` (a
    /// [`Sshd::log_len`]), from sshd's DEBUG1 log.
    pub fn negotiated_since(&self, offset: usize) -> anyhow::Result<Negotiated> {
        let log = self.log();
        let segment = log.get(offset..).unwrap_or_default();
        Negotiated::parse(segment).with_context(|| {
            format!(
                "sshd's log does not show the negotiated algorithms:\n{}",
                self.log_tail(30)
            )
        })
    }

    /// A palisade tunnel config for this sshd: pinned host key, default
    /// timeouts, keepalive and backoff.
    pub fn config(&self) -> BastionConfig {
        BastionConfig::new(
            "bench-bastion",
            "127.0.0.1",
            self.port,
            self.user.clone(),
            &self.client_key,
            HostKeyPolicy {
                pinned_fingerprints: vec![self.host_fingerprint.clone()],
                ..HostKeyPolicy::default()
            },
        )
    }

    /// The OpenSSH client for this sshd, limited to `algorithms`.
    pub fn client(&self, algorithms: &Negotiated) -> SshClient {
        let mut args: Vec<OsString> = Vec::new();
        let mut option = |key: &str, value: &dyn AsRef<std::ffi::OsStr>| {
            let mut joined = OsString::from(format!("{key}="));
            joined.push(value.as_ref());
            args.push("-o".into());
            args.push(joined);
        };
        // No user or system config, agent or other identities: only what is
        // given here (the palisade client has exactly the same inputs).
        option("IdentityFile", &self.client_key);
        option("IdentitiesOnly", &"yes");
        option("IdentityAgent", &"none");
        option("BatchMode", &"yes");
        option("UserKnownHostsFile", &self.known_hosts);
        option("GlobalKnownHostsFile", &"/dev/null");
        option("StrictHostKeyChecking", &"yes");
        option("UpdateHostKeys", &"no");
        option("CheckHostIP", &"no");
        option("ControlMaster", &"no");
        option("ControlPath", &"none");
        option("Compression", &"no");
        option("ConnectTimeout", &"10");
        // Same keepalive as the palisade defaults (10 s, 3 unanswered).
        option("ServerAliveInterval", &"10");
        option("ServerAliveCountMax", &"3");
        option("ExitOnForwardFailure", &"yes");
        option("KexAlgorithms", &algorithms.kex);
        option("HostKeyAlgorithms", &algorithms.host_key);
        option("PubkeyAcceptedAlgorithms", &"ssh-ed25519");
        option("Ciphers", &algorithms.cipher);
        if algorithms.mac != "<implicit>" {
            option("MACs", &algorithms.mac);
        }
        let mut all: Vec<OsString> = vec!["-F".into(), "/dev/null".into()];
        all.extend(args);
        all.extend(
            [
                "-p".to_string(),
                self.port.to_string(),
                "-l".to_string(),
                self.user.clone(),
            ]
            .map(OsString::from),
        );
        SshClient { args: all }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// What one SSH connection negotiated (sshd's `kex:` debug lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Client software version, e.g. `russh_0.65.1`, `OpenSSH_9.2p1 …`.
    pub client: String,
    pub kex: String,
    pub host_key: String,
    /// client→server cipher (the direction of the throughput benchmark).
    pub cipher: String,
    pub mac: String,
}

impl Negotiated {
    fn parse(log: &str) -> Option<Negotiated> {
        let after = |marker: &str| -> Option<&str> {
            log.lines()
                .find_map(|line| line.split_once(marker).map(|(_, rest)| rest))
                .map(|rest| rest.trim_end_matches(" [preauth]").trim())
        };
        let client = after("remote software version ")?.to_string();
        let kex = after("kex: algorithm: ")?.to_string();
        let host_key = after("kex: host key algorithm: ")?.to_string();
        // "chacha20-poly1305@openssh.com MAC: <implicit> compression: none"
        let line = after("kex: client->server cipher: ")?;
        let mut words = line.split_whitespace();
        let cipher = words.next()?.to_string();
        let mac = match (words.next(), words.next()) {
            (Some("MAC:"), Some(mac)) => mac.to_string(),
            _ => return None,
        };
        Some(Negotiated {
            client,
            kex,
            host_key,
            cipher,
            mac,
        })
    }

    /// Same algorithms (the client software may differ).
    pub fn same_algorithms(&self, other: &Negotiated) -> bool {
        (&self.kex, &self.host_key, &self.cipher, &self.mac)
            == (&other.kex, &other.host_key, &other.cipher, &other.mac)
    }

    /// `curve25519-sha256, ssh-ed25519, chacha20-poly1305@openssh.com`.
    pub fn summary(&self) -> String {
        let mut text = format!("{}, {}, {}", self.kex, self.host_key, self.cipher);
        if self.mac != "<implicit>" {
            text.push_str(&format!(" + {}", self.mac));
        }
        text
    }
}

/// The stock OpenSSH client with fixed options, pointed at one [`Sshd`].
#[derive(Debug, Clone)]
pub struct SshClient {
    args: Vec<OsString>,
}

impl SshClient {
    /// `ssh <options> <extra> 127.0.0.1`.
    pub fn command(&self, extra: &[&str]) -> Command {
        let mut command = Command::new("ssh");
        command
            .args(&self.args)
            .args(extra)
            .arg("127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        command
    }
}

/// A blocking TCP server on 127.0.0.1, one thread per connection; stops
/// accepting when dropped.
pub struct TcpServer {
    pub port: u16,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl TcpServer {
    pub fn start(handler: fn(TcpStream)) -> anyhow::Result<TcpServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let acceptor = std::thread::Builder::new()
            .name(format!("bench-server-{port}"))
            .spawn(move || {
                for stream in listener.incoming() {
                    if stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    if let Ok(stream) = stream {
                        let _ = std::thread::Builder::new().spawn(move || handler(stream));
                    }
                }
            })?;
        Ok(TcpServer {
            port,
            stop,
            acceptor: Some(acceptor),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect(self.addr());
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// Reads until EOF, then answers the byte count (u64, little endian).
pub fn sink(mut stream: TcpStream) {
    let mut buffer = vec![0u8; 256 << 10];
    let mut received = 0u64;
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => received += read as u64,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
    let _ = stream.write_all(&received.to_le_bytes());
}

/// Echoes every byte back until EOF.
pub fn echo(stream: TcpStream) {
    let Ok(mut reader) = stream.try_clone() else {
        return;
    };
    let mut writer = stream;
    let _ = std::io::copy(&mut reader, &mut writer);
}

/// A child process killed (SIGTERM, then reaped) when dropped.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.0.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiated_algorithms_are_read_from_sshd_debug_lines() {
        let log = "\
debug1: Remote protocol version 2.0, remote software version russh_0.65.1
debug1: kex: algorithm: curve25519-sha256 [preauth]
debug1: kex: host key algorithm: ssh-ed25519 [preauth]
debug1: kex: client->server cipher: chacha20-poly1305@openssh.com MAC: <implicit> compression: none [preauth]
debug1: kex: server->client cipher: chacha20-poly1305@openssh.com MAC: <implicit> compression: none [preauth]
";
        let negotiated = Negotiated::parse(log).unwrap();
        assert_eq!(
            negotiated,
            Negotiated {
                client: "russh_0.65.1".into(),
                kex: "curve25519-sha256".into(),
                host_key: "ssh-ed25519".into(),
                cipher: "chacha20-poly1305@openssh.com".into(),
                mac: "<implicit>".into(),
            }
        );
        assert_eq!(
            negotiated.summary(),
            "curve25519-sha256, ssh-ed25519, chacha20-poly1305@openssh.com"
        );
        assert!(Negotiated::parse("debug1: nothing").is_none());
    }
}
