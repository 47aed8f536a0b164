//! A throwaway OpenSSH sshd on 127.0.0.1 for the tunnel benchmarks: the
//! supervisor's integration tests' fixture ([`palisade_testkit::Sshd`],
//! `docs/bastion-sshd.md`) with one client key restricted to forwarding and
//! to `permitopen="127.0.0.1:<port>"`.
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
use palisade_testkit::{Probe, SshdOptions, current_user, ssh_keygen};

/// How long sshd gets to listen, and a forward to come up.
pub const WAIT: Duration = Duration::from_secs(15);

/// The bench's sshd ([`palisade_testkit::Sshd`], logging at DEBUG1) with the
/// client's side: its key, a known_hosts file and the user. Running, or,
/// between [`Sshd::kill`] and [`Sshd::spawn`], dead.
pub struct Sshd {
    sshd: palisade_testkit::Sshd,
    pub port: u16,
    /// Holds the client key and known_hosts.
    _client_dir: tempfile::TempDir,
    client_key: PathBuf,
    known_hosts: PathBuf,
    user: String,
    /// Where clients connect: `127.0.0.1:port` unless [`Sshd::reach_via`]
    /// says otherwise (e.g. a proxy in front of an sshd in a namespace).
    connect_host: String,
    connect_port: u16,
}

/// Where [`Sshd::start_placed`] runs sshd: under a program such as
/// `ip netns exec NAME`, checked with a probe that connects from there.
#[derive(Default)]
pub struct Placement {
    /// Program and arguments sshd runs under (it must exec sshd).
    pub exec_prefix: Vec<String>,
    /// How to check that sshd accepts connections (default: a TCP connect
    /// from this process).
    pub probe: Option<Probe>,
    /// The port sshd listens on, on 127.0.0.1 where it runs (default: a
    /// free port here).
    pub port: Option<u16>,
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
    /// Keys, config, and a listening sshd on 127.0.0.1; the client key may
    /// open `127.0.0.1:<port>` for each of `allowed_ports` and nothing else.
    pub fn start(scratch: &Path, allowed_ports: &[u16]) -> anyhow::Result<Sshd> {
        Sshd::start_placed(scratch, allowed_ports, Placement::default())
    }

    /// As [`Sshd::start`], run as `placement` says (e.g. inside a network
    /// namespace, where `127.0.0.1` is the namespace's loopback).
    pub fn start_placed(
        scratch: &Path,
        allowed_ports: &[u16],
        placement: Placement,
    ) -> anyhow::Result<Sshd> {
        openssh_version()?;
        std::fs::create_dir_all(scratch)
            .with_context(|| format!("creating {}", scratch.display()))?;
        let client_dir = tempfile::Builder::new()
            .prefix("ssh-client-")
            .tempdir_in(scratch)?;
        let client_key = client_dir.path().join("client_ed25519");
        let client_public = ssh_keygen(&client_key)?;
        let permitopen: Vec<String> = allowed_ports
            .iter()
            .map(|port| format!("permitopen=\"127.0.0.1:{port}\""))
            .collect();
        let port = placement.port.unwrap_or_else(free_port);
        let mut options = SshdOptions::new(
            "127.0.0.1",
            port,
            format!(
                "restrict,port-forwarding,{} {client_public}",
                permitopen.join(",")
            ),
        );
        // The algorithms each client negotiated are read back from the log.
        options.log_level = Some("DEBUG1".into());
        options.dir_in = Some(scratch.to_path_buf());
        options.exec_prefix = placement.exec_prefix;
        options.probe = placement.probe;
        let sshd = palisade_testkit::Sshd::start(options)
            .context("starting sshd for the tunnel benchmarks")?;
        // For the OpenSSH client: the same pinned key, nothing else trusted.
        let known_hosts = client_dir.path().join("known_hosts");
        std::fs::write(&known_hosts, format!("{}\n", sshd.known_hosts_line()))?;
        Ok(Sshd {
            sshd,
            port,
            _client_dir: client_dir,
            client_key,
            known_hosts,
            user: current_user()?,
            connect_host: "127.0.0.1".into(),
            connect_port: port,
        })
    }

    /// Clients ([`Sshd::config`], [`Sshd::client`]) connect to
    /// `host:port` from now on, e.g. a proxy that forwards to this sshd;
    /// the OpenSSH client's known_hosts names that address.
    pub fn reach_via(&mut self, host: &str, port: u16) -> anyhow::Result<()> {
        std::fs::write(
            &self.known_hosts,
            format!("[{host}]:{port} {}\n", self.sshd.host_public_key()),
        )
        .with_context(|| format!("writing {}", self.known_hosts.display()))?;
        self.connect_host = host.to_string();
        self.connect_port = port;
        Ok(())
    }

    /// Start the sshd process again after [`Sshd::kill`] (see
    /// [`Sshd::wait_listening`]).
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        Ok(self.sshd.spawn()?)
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
            self.sshd.check_running()?;
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

    /// SIGKILL the listener and every per-connection sshd it forked: the
    /// bastion vanishes as in a crash.
    pub fn kill(&mut self) {
        self.sshd.kill();
    }

    /// A file in this sshd's private directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.sshd.path(name)
    }

    fn log(&self) -> String {
        self.sshd.log()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.sshd.log_tail(lines)
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
            self.connect_host.clone(),
            self.connect_port,
            self.user.clone(),
            &self.client_key,
            HostKeyPolicy {
                pinned_fingerprints: vec![self.sshd.fingerprint().to_string()],
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
                self.connect_port.to_string(),
                "-l".to_string(),
                self.user.clone(),
            ]
            .map(OsString::from),
        );
        SshClient {
            args: all,
            host: self.connect_host.clone(),
        }
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
    /// `127.0.0.1` unless [`Sshd::reach_via`] changed it.
    host: String,
}

impl SshClient {
    /// `ssh <options> <extra> 127.0.0.1` (or the host of [`Sshd::reach_via`]).
    pub fn command(&self, extra: &[&str]) -> Command {
        let mut command = Command::new("ssh");
        command
            .args(&self.args)
            .args(extra)
            .arg(&self.host)
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
