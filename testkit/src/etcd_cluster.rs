//! [`EtcdCluster`]: a throwaway etcd cluster of real `/usr/bin/etcd` members on loopback.

use std::fmt;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::Signal;

use crate::{Error, LOG_TAIL, POLL, Result};

/// Where etcd is expected (Debian package `etcd-server`).
pub const ETCD: &str = "/usr/bin/etcd";
/// How long a cluster (or a restarted member) gets to answer a linearizable read.
pub const ETCD_WAIT: Duration = Duration::from_secs(20);
/// How long [`EtcdCluster::stop`] waits after SIGTERM before it SIGKILLs.
const STOP_WAIT: Duration = Duration::from_secs(10);
/// How long one readiness probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// One member: its name, ports and process.
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

/// A throwaway etcd cluster of `n` members on 127.0.0.1 (client and peer port each, free
/// ports picked at start and kept across restarts), killed on drop.
///
/// It owns a temporary directory holding each member's data directory (`m0.etcd`, …) and
/// log (`m0.log`: etcd's stderr, appended across restarts). The cluster token is unique,
/// so members of clusters of parallel tests never join each other even if a port is reused.
/// Timing is etcd's default (heartbeat 100 ms, election timeout 1 s), so leases have a
/// minimum TTL of 2 s.
pub struct EtcdCluster {
    members: Vec<Member>,
    token: String,
    dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// Starts `n` members (`--initial-cluster-state new`) and waits (up to [`ETCD_WAIT`])
    /// until every one answers a linearizable read.
    pub fn start(n: usize) -> Result<EtcdCluster> {
        if !std::path::Path::new(ETCD).exists() {
            return Err(Error::new(format!(
                "{ETCD} is missing: install the Debian package etcd-server (scripts/test.sh does)"
            )));
        }
        if n == 0 {
            return Err(Error::new("an etcd cluster needs at least one member"));
        }
        let dir = tempfile::Builder::new()
            .prefix("etcd-")
            .tempdir()
            .map_err(|e| Error::new(format!("creating a temporary directory: {e}")))?;
        let ports = free_ports(2 * n)?;
        let members = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                child: None,
            })
            .collect();
        static CLUSTERS: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let token = format!(
            "palisade-test-{}-{nanos}-{}",
            std::process::id(),
            CLUSTERS.fetch_add(1, Ordering::Relaxed)
        );
        let mut cluster = EtcdCluster {
            members,
            token,
            dir,
        };
        for i in 0..n {
            cluster.spawn(i)?;
        }
        for i in 0..n {
            cluster.wait_member_ready(i)?;
        }
        Ok(cluster)
    }

    /// `start(3)`.
    pub fn start_three() -> Result<EtcdCluster> {
        EtcdCluster::start(3)
    }

    /// Number of members (running or not).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the cluster has no members (never, once started).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Every member's client URL, `http://127.0.0.1:PORT`, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    /// Member `i`'s client URL.
    pub fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].client_port)
    }

    /// Member `i`'s client port.
    pub fn client_port(&self, i: usize) -> u16 {
        self.members[i].client_port
    }

    /// Which member serves `endpoint`, if any.
    pub fn member_of(&self, endpoint: &str) -> Option<usize> {
        let endpoint = endpoint.trim_end_matches('/');
        (0..self.members.len()).find(|&i| self.endpoint(i) == endpoint)
    }

    /// Member `i`'s pid while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(Child::id)
    }

    /// SIGKILLs member `i` and reaps it: it vanishes as in a crash. Nothing if not running.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERMs member `i` and waits for it to exit (SIGKILL after 10 s).
    pub fn stop(&mut self, i: usize) {
        let Some(mut child) = self.members[i].child.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + STOP_WAIT;
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Kills member `i` if it runs, starts it again (same name, data directory and ports)
    /// and waits until it answers a linearizable read (which needs a quorum).
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.kill(i);
        self.spawn(i)?;
        self.wait_member_ready(i)
    }

    /// Whether member `i` answers a linearizable read now (its range request went through
    /// the Raft leader's read index, so a quorum is up).
    pub fn member_ready(&self, i: usize) -> bool {
        linearizable_read(self.members[i].client_port)
    }

    /// Polls [`EtcdCluster::member_ready`] until it holds; an error (with the end of the
    /// member's log) if the member exits or [`ETCD_WAIT`] passes first.
    pub fn wait_member_ready(&mut self, i: usize) -> Result<()> {
        let deadline = Instant::now() + ETCD_WAIT;
        loop {
            if self.member_ready(i) {
                return Ok(());
            }
            self.check_running(i)?;
            if Instant::now() >= deadline {
                return Err(Error::new(format!(
                    "etcd member {} ({}) gave no linearizable read within {ETCD_WAIT:?}:\n{}",
                    self.members[i].name,
                    self.endpoint(i),
                    self.log_tail(i, LOG_TAIL)
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    /// An error (with the end of its log) unless member `i` is running.
    pub fn check_running(&mut self, i: usize) -> Result<()> {
        let name = self.members[i].name.clone();
        let Some(child) = &mut self.members[i].child else {
            return Err(Error::new(format!("etcd member {name} is not running")));
        };
        let status = match child.try_wait() {
            Ok(None) => return Ok(()),
            Ok(Some(status)) => status.to_string(),
            Err(e) => format!("an unknown status ({e})"),
        };
        self.members[i].child = None;
        Err(Error::new(format!(
            "etcd member {name} exited with {status}:\n{}",
            self.log_tail(i, LOG_TAIL)
        )))
    }

    /// Member `i`'s log so far (empty if unreadable).
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.path(&format!("{}.log", self.members[i].name)))
            .unwrap_or_default()
    }

    /// The last `lines` lines of [`EtcdCluster::log`].
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        crate::last_lines(&self.log(i), lines)
    }

    /// A path in the cluster's temporary directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        if self.members[i].child.is_some() {
            return Err(Error::new(format!(
                "etcd member {} is already running",
                self.members[i].name
            )));
        }
        let initial_cluster = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let member = &self.members[i];
        let client_url = format!("http://127.0.0.1:{}", member.client_port);
        let peer_url = format!("http://127.0.0.1:{}", member.peer_port);
        let log_path = self.path(&format!("{}.log", member.name));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| Error::new(format!("opening {}: {e}", log_path.display())))?;
        let mut command = Command::new(ETCD);
        command
            .arg("--name")
            .arg(&member.name)
            .arg("--data-dir")
            .arg(self.path(&format!("{}.etcd", member.name)))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &initial_cluster])
            // Ignored on a restart: the data directory already holds the membership.
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &self.token])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            // A stray ETCD_* variable in the test's environment would change the flags.
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        let child = command
            .spawn()
            .map_err(|e| Error::new(format!("cannot start {command:?}: {e}")))?;
        self.members[i].child = Some(child);
        Ok(())
    }
}

impl fmt::Debug for EtcdCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let members: Vec<String> = self
            .members
            .iter()
            .map(|m| {
                format!(
                    "{} client {} peer {} pid {:?}",
                    m.name,
                    m.client_port,
                    m.peer_port,
                    m.child.as_ref().map(Child::id)
                )
            })
            .collect();
        f.debug_struct("EtcdCluster")
            .field("members", &members)
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// `count` distinct free TCP ports on 127.0.0.1: all bound at once (so none repeats), then
/// released for etcd.
fn free_ports(count: usize) -> Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| Error::new(format!("finding free ports: {e}")))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| Error::new(format!("finding free ports: {e}")))
}

/// A v3 range of the key `health` (linearizable, etcd's default) over a plain HTTP/1.0
/// exchange; whether etcd answered 200 with a header.
fn linearizable_read(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        PROBE_TIMEOUT,
    ) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(PROBE_TIMEOUT));
    let _ = stream.set_write_timeout(Some(PROBE_TIMEOUT));
    let body = r#"{"key":"aGVhbHRo"}"#;
    let request = format!(
        "POST /v3/kv/range HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = Vec::new();
    // HTTP/1.0: the server closes after the answer; a few KiB at most are read.
    let _ = stream.take(64 * 1024).read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    let status_line = answer.lines().next().unwrap_or_default();
    status_line.starts_with("HTTP/1.")
        && status_line.contains(" 200 ")
        && answer.contains("\"header\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixture itself: three members, a crash, a stop and restarts.
    #[test]
    fn etcd_cluster_starts_loses_members_and_gets_them_back() {
        let mut cluster = EtcdCluster::start(3).unwrap();
        assert_eq!(cluster.endpoints().len(), 3);
        assert_eq!(cluster.member_of(&cluster.endpoint(2)), Some(2));
        assert!((0..3).all(|i| cluster.member_ready(i)), "{cluster:?}");

        let killed = cluster.pid(0).unwrap();
        cluster.kill(0);
        assert!(cluster.pid(0).is_none() && !cluster.member_ready(0));
        assert!(!std::path::Path::new(&format!("/proc/{killed}")).exists());
        // Two of three still make a quorum (after an election when the
        // killed member led: wait, do not sample once).
        cluster.wait_member_ready(1).unwrap();
        cluster.stop(1);
        assert!(cluster.check_running(1).is_err());
        // One of three does not: the survivor refuses linearizable reads.
        assert!(!cluster.member_ready(2), "{}", cluster.log_tail(2, 20));

        cluster.restart(0).unwrap();
        assert!(cluster.member_ready(0) && cluster.member_ready(2));
        cluster.restart(1).unwrap();
        assert!(cluster.log(0).contains("m0"), "the log names the member");
        let dir = cluster.path("");
        let pids: Vec<u32> = (0..3).filter_map(|i| cluster.pid(i)).collect();
        assert_eq!(pids.len(), 3);
        drop(cluster);
        assert!(!dir.exists());
        for pid in pids {
            assert!(
                !std::path::Path::new(&format!("/proc/{pid}")).exists(),
                "etcd {pid} survived drop"
            );
        }
    }
}
