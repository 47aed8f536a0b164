//! Fixtures shared by Palisade's integration tests and benchmarks (never shipped).
//!
//! [`Sshd`] is a throwaway OpenSSH sshd set up as `docs/bastion-sshd.md` describes: its own
//! host key, the caller's `authorized_keys`, `UsePAM no`, `StrictModes no`, forwarding allowed.
//! It listens on loopback, or anywhere a command prefix can put it (`ip netns exec NAME`, see
//! [`SshdOptions::exec_prefix`] and [`SshdOptions::probe`]). Around it: [`ssh_keygen`],
//! [`ssh_fingerprint`], [`kill_tree`], [`run`] and [`current_user`]; [`SshAgent`] and
//! [`encrypted_copy`] for keys that have a passphrase.
//!
//! [`EtcdCluster`] runs a real etcd cluster (3 members by default) on loopback for the failover
//! tests: kill, stop and restart members, wait for a linearizable read.
//!
//! [`moto::Moto`] runs moto in server mode (a stand-in for the EC2 API) on a free loopback port.
//!
//! [`alertmanager::Alertmanager`] runs the real Debian `prometheus-alertmanager` on a free
//! loopback port with the caller's configuration.
//!
//! [`http_receiver::HttpReceiver`] records the HTTP requests sent to it on a free loopback port
//! and answers from a script: the stand-in for alert services and webhook receivers.
//!
//! [`prometheus::Prometheus`] runs Debian's Prometheus server on a free loopback port and queries
//! it over its HTTP API; [`prometheus::promtool`] and [`prometheus::check_metrics`] lint an
//! exposition.
//!
//! Everything fallible returns [`Error`], whose `Debug` is its plain message: tests `unwrap()`
//! and still panic readably, the benchmarks report it with `?`.
//!
//! sshd must be installed at [`SSHD`] (`scripts/test.sh` and `scripts/bench.sh` install
//! openssh-server), etcd at [`ETCD`] (`scripts/test.sh` installs etcd-server); a missing one is
//! an error, never a skipped test.
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::fmt;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

pub mod alertmanager;
mod etcd_cluster;
pub mod failover;
pub mod http_receiver;
pub mod loopback_cloud;
pub mod moto;
pub mod prometheus;
pub use etcd_cluster::{ETCD, ETCD_WAIT, EtcdCluster};

/// Where sshd is expected.
pub const SSHD: &str = "/usr/sbin/sshd";
/// How long sshd gets to accept connections after it was started.
pub const SSHD_WAIT: Duration = Duration::from_secs(15);
/// Interval between [`Sshd::accepts`] probes while waiting.
const POLL: Duration = Duration::from_millis(20);
/// Lines of sshd's log quoted in an error.
const LOG_TAIL: usize = 50;

/// A failure, as one readable message (also its `Debug` form).
pub struct Error(String);

impl Error {
    fn new(message: impl Into<String>) -> Error {
        Error(message.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The last `count` lines of `text`, joined by newlines (a log's tail for an error message).
/// A free TCP port on 127.0.0.1 (bound, then released for the service about to take it).
pub fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|e| Error::new(format!("finding a free port: {e}")))
}

/// The status of an HTTP/1.0 `GET path` to 127.0.0.1:`port`, each step bounded by `timeout`;
/// `None` when nothing answers HTTP there (the readiness probe of the services started here).
pub fn http_status(port: u16, path: &str, timeout: Duration) -> Option<u16> {
    use std::io::{Read, Write};
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&address, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    // "HTTP/1.x NNN"
    let mut head = [0u8; 12];
    let mut read = 0;
    while read < head.len() {
        match stream.read(&mut head[read..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => read += n,
        }
    }
    if read < head.len() || !head.starts_with(b"HTTP/1.") {
        return None;
    }
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

pub fn last_lines(text: &str, count: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(count)..].join("\n")
}

/// Runs `command` (stdin from `/dev/null`) to completion; its stdout if it succeeded, else an
/// error with its status, stdout and stderr.
pub fn run(command: &mut Command) -> Result<String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::new(format!("cannot run {command:?}: {e}")))?;
    if !output.status.success() {
        return Err(Error::new(format!(
            "{command:?} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `path` + `.pub`, where `ssh-keygen` puts the public half of the key at `path`.
fn public_key_path(path: &Path) -> PathBuf {
    let mut public = OsString::from(path.as_os_str());
    public.push(".pub");
    PathBuf::from(public)
}

/// `ssh-keygen -t ed25519` without passphrase or comment at `path` (public key at
/// `path.pub`); returns the public key line, `ssh-ed25519 AAAA…`.
pub fn ssh_keygen(path: &Path) -> Result<String> {
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "", "-f"])
        .arg(path))?;
    let public = public_key_path(path);
    std::fs::read_to_string(&public)
        .map(|line| line.trim().to_string())
        .map_err(|e| Error::new(format!("reading {}: {e}", public.display())))
}

/// The fingerprint of a public key file, `SHA256:…`, as `ssh-keygen -lf` prints it.
pub fn ssh_fingerprint(public_key: &Path) -> Result<String> {
    let listing = run(Command::new("ssh-keygen").arg("-lf").arg(public_key))?;
    listing
        .split_whitespace()
        .nth(1)
        .map(str::to_string)
        .ok_or_else(|| {
            Error::new(format!(
                "no fingerprint in `ssh-keygen -lf` output {listing:?}"
            ))
        })
}

/// Sends `signal` to every descendant of `root` (deepest first, found through the parent pids
/// in `/proc`), then to `root`; never to this process. sshd's per-connection processes run in
/// their own sessions, so a process-group kill would miss them. Pids that are gone are skipped.
pub fn kill_tree(root: u32, signal: Signal) {
    let own = std::process::id();
    for pid in process_tree(root)
        .into_iter()
        .rev()
        .filter(|&pid| pid != own)
    {
        if let Ok(raw) = i32::try_from(pid) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), signal);
        }
    }
}

/// `root` and its descendants (found through the parent pids in `/proc`), parents before their
/// children.
pub fn process_tree(root: u32) -> Vec<u32> {
    let mut tree = vec![root];
    let mut index = 0;
    while index < tree.len() {
        let parent = tree[index];
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
            if ppid == Some(parent) && !tree.contains(&pid) {
                tree.push(pid);
            }
        }
        index += 1;
    }
    tree
}

/// Whether `pid` is a live process (a zombie is not).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let after_comm = stat.rsplit(')').next().unwrap_or_default();
            !after_comm.trim_start().starts_with('Z')
        }
        Err(_) => false,
    }
}

/// The name of the effective user (whom sshd lets in with the authorized key).
pub fn current_user() -> Result<String> {
    nix::unistd::User::from_uid(nix::unistd::geteuid())
        .map_err(|e| Error::new(format!("looking up the current user: {e}")))?
        .map(|user| user.name)
        .ok_or_else(|| Error::new("the current user has no passwd entry (sshd needs one)"))
}

/// Tells whether a TCP connection to `(ip, port)` succeeds, for [`SshdOptions::probe`].
pub type Probe = Box<dyn Fn(&str, u16) -> bool + Send + Sync>;

/// How to set up and run an [`Sshd`]; [`SshdOptions::new`] fills in the defaults.
pub struct SshdOptions {
    /// `ListenAddress`.
    pub listen_ip: String,
    /// `Port` (e.g. a free port from the caller).
    pub port: u16,
    /// The whole `authorized_keys` file (a trailing newline is added), e.g.
    /// `restrict,port-forwarding,permitopen="127.0.0.1:80" ssh-ed25519 AAAA…`.
    pub authorized_keys: String,
    /// sshd_config lines placed before the defaults, so they override them (sshd keeps the
    /// first value of a keyword), e.g. `"ClientAliveInterval 1\n"`. Default: none.
    pub extra_config: String,
    /// `LogLevel` (`VERBOSE`, `DEBUG1`, …); `None` (default) keeps sshd's `INFO`.
    pub log_level: Option<String>,
    /// Program and arguments sshd runs under, e.g. `["ip", "netns", "exec", NAME]`. It must
    /// exec sshd (so that the spawned process is sshd and [`Sshd::kill`] finds its children).
    /// Default: none, sshd is started directly.
    pub exec_prefix: Vec<String>,
    /// How to check that sshd accepts connections, e.g. from inside its network namespace.
    /// Default (`None`): a TCP connect from this process.
    pub probe: Option<Probe>,
    /// Where sshd's private directory is created (created if missing). Default: the system's
    /// temporary directory.
    pub dir_in: Option<PathBuf>,
    /// sshd_config lines placed after the defaults: `Match` blocks, which run to the end of
    /// the file. Default: none.
    pub trailing_config: String,
    /// One `authorized_keys` file per user name, `(user, whole file)`, for an sshd that lets
    /// several accounts in (sshd reads the file as that user: they go to `keys/USER` in a
    /// world-readable directory, and the private directory becomes mode 0711). When not
    /// empty, [`SshdOptions::authorized_keys`] is not used. Default: none.
    pub per_user_authorized_keys: Vec<(String, String)>,
}

impl SshdOptions {
    /// sshd on `listen_ip:port` letting in whoever `authorized_keys` (the whole file) allows;
    /// everything else default.
    pub fn new(
        listen_ip: impl Into<String>,
        port: u16,
        authorized_keys: impl Into<String>,
    ) -> SshdOptions {
        SshdOptions {
            listen_ip: listen_ip.into(),
            port,
            authorized_keys: authorized_keys.into(),
            extra_config: String::new(),
            log_level: None,
            exec_prefix: Vec::new(),
            probe: None,
            dir_in: None,
            trailing_config: String::new(),
            per_user_authorized_keys: Vec::new(),
        }
    }
}

/// A throwaway OpenSSH sshd; killed (listener and per-connection processes) on drop.
///
/// It owns a private temporary directory: `host_ed25519` (and `.pub`), `sshd_config`,
/// `authorized_keys`, `sshd.pid` and `sshd.log` (`sshd -D -e`: stderr, appended across
/// restarts). Other files may be put there through [`Sshd::path`] (e.g. reverse-forwarded
/// Unix sockets); they go with it.
pub struct Sshd {
    child: Option<Child>,
    listen_ip: String,
    port: u16,
    host_public_key: String,
    host_fingerprint: String,
    exec_prefix: Vec<String>,
    probe: Option<Probe>,
    dir: tempfile::TempDir,
}

impl Sshd {
    /// Writes the host key, `authorized_keys` and `sshd_config`, starts sshd and waits (up to
    /// [`SSHD_WAIT`]) until it accepts connections.
    ///
    /// The sshd_config: [`SshdOptions::extra_config`], then `Port`, `ListenAddress`, `HostKey`,
    /// `AuthorizedKeysFile`, `PidFile` (all in the private directory),
    /// `PasswordAuthentication no`, `KbdInteractiveAuthentication no`, `UsePAM no`,
    /// `StrictModes no`, `AllowTcpForwarding yes`, `AllowStreamLocalForwarding yes`,
    /// `StreamLocalBindUnlink yes`, `ClientAliveInterval 5`, `ClientAliveCountMax 3` (sshd's
    /// default, spelled out) and [`SshdOptions::log_level`] if any. Creates `/run/sshd`, sshd's
    /// privilege-separation directory.
    pub fn start(options: SshdOptions) -> Result<Sshd> {
        if !Path::new(SSHD).exists() {
            return Err(Error::new(format!(
                "{SSHD} is missing: install openssh-server (scripts/test.sh and scripts/bench.sh do)"
            )));
        }
        let io = |what: &str, path: &Path| {
            let what = format!("{what} {}", path.display());
            move |e: std::io::Error| Error::new(format!("{what}: {e}"))
        };
        let mut builder = tempfile::Builder::new();
        builder.prefix("sshd-");
        let dir = match &options.dir_in {
            Some(parent) => {
                std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
                builder
                    .tempdir_in(parent)
                    .map_err(io("creating a directory in", parent))?
            }
            None => builder
                .tempdir()
                .map_err(io("creating a directory in", &std::env::temp_dir()))?,
        };
        let host_key = dir.path().join("host_ed25519");
        let host_public_key = ssh_keygen(&host_key)?;
        let host_fingerprint = ssh_fingerprint(&public_key_path(&host_key))?;
        let authorized_keys = if options.per_user_authorized_keys.is_empty() {
            let authorized_keys = dir.path().join("authorized_keys");
            std::fs::write(
                &authorized_keys,
                format!("{}\n", options.authorized_keys.trim_end()),
            )
            .map_err(io("writing", &authorized_keys))?;
            authorized_keys
        } else {
            use std::os::unix::fs::PermissionsExt;
            let keys = dir.path().join("keys");
            std::fs::create_dir(&keys).map_err(io("creating", &keys))?;
            for (path, mode) in [(dir.path(), 0o711), (keys.as_path(), 0o755)] {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                    .map_err(io("setting the mode of", path))?;
            }
            for (user, lines) in &options.per_user_authorized_keys {
                let file = keys.join(user);
                std::fs::write(&file, format!("{}\n", lines.trim_end()))
                    .map_err(io("writing", &file))?;
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))
                    .map_err(io("setting the mode of", &file))?;
            }
            keys.join("%u")
        };

        let mut config = options.extra_config.trim_end().to_string();
        if !config.is_empty() {
            config.push('\n');
        }
        config.push_str(&format!(
            "Port {port}\n\
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
             ClientAliveCountMax 3\n",
            port = options.port,
            listen_ip = options.listen_ip,
            host_key = host_key.display(),
            authorized_keys = authorized_keys.display(),
            pid_file = dir.path().join("sshd.pid").display(),
        ));
        if let Some(level) = &options.log_level {
            config.push_str(&format!("LogLevel {level}\n"));
        }
        if !options.trailing_config.is_empty() {
            config.push_str(options.trailing_config.trim_end());
            config.push('\n');
        }
        let config_file = dir.path().join("sshd_config");
        std::fs::write(&config_file, config).map_err(io("writing", &config_file))?;
        // sshd's privilege-separation directory.
        std::fs::create_dir_all("/run/sshd").map_err(io("creating", Path::new("/run/sshd")))?;

        let mut sshd = Sshd {
            child: None,
            listen_ip: options.listen_ip,
            port: options.port,
            host_public_key,
            host_fingerprint,
            exec_prefix: options.exec_prefix,
            probe: options.probe,
            dir,
        };
        sshd.spawn()?;
        sshd.wait_listening()?;
        Ok(sshd)
    }

    /// Starts the sshd process (after [`Sshd::kill`]) without waiting for it to listen: see
    /// [`Sshd::wait_listening`], or poll [`Sshd::accepts`] and [`Sshd::check_running`].
    pub fn spawn(&mut self) -> Result<()> {
        if self.child.is_some() {
            return Err(Error::new("sshd is already running"));
        }
        let log_path = self.path("sshd.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| Error::new(format!("opening {}: {e}", log_path.display())))?;
        // The whole chain, `exec_prefix` then sshd, each exec'ing the next.
        let mut chain: Vec<String> = self.exec_prefix.clone();
        chain.push(SSHD.to_string());
        if nix::unistd::geteuid().is_root() {
            // sshd runs every session through the user's shell, and Debian's
            // bash reads ~/.bashrc for commands sshd runs. A developer's or a
            // CI image's root .bashrc (pyenv's `eval "$(pyenv init -)"`, say)
            // then runs on every session the tests open, and a session killed
            // when a test ends can leave a lock behind (pyenv's rehash lock)
            // that stalls every later session for a minute. Production tunnel
            // users have `/bin/sh` and no startup files (docs/bastion.md); so
            // in a private mount namespace, root's .bashrc is empty for sshd.
            let mut wrapped: Vec<String> = [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                "if [ -f \"$HOME/.bashrc\" ]; then mount --bind /dev/null \"$HOME/.bashrc\"; fi; exec \"$@\"",
                "palisade-sshd",
            ]
            .iter()
            .map(|part| part.to_string())
            .collect();
            wrapped.append(&mut chain);
            chain = wrapped;
        }
        let (program, args) = chain.split_first().expect("sshd at least");
        let mut command = Command::new(program);
        command.args(args);
        command
            .args(["-D", "-e", "-f"])
            .arg(self.path("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = command
            .spawn()
            .map_err(|e| Error::new(format!("cannot start {command:?}: {e}")))?;
        self.child = Some(child);
        Ok(())
    }

    /// Polls [`Sshd::accepts`] every 20 ms until it holds; an error if sshd exits or
    /// [`SSHD_WAIT`] passes first.
    pub fn wait_listening(&mut self) -> Result<()> {
        let deadline = Instant::now() + SSHD_WAIT;
        while !self.accepts() {
            self.check_running()?;
            if Instant::now() >= deadline {
                return Err(Error::new(format!(
                    "sshd did not listen on {}:{} within {SSHD_WAIT:?}:\n{}",
                    self.listen_ip,
                    self.port,
                    self.log_tail(LOG_TAIL)
                )));
            }
            std::thread::sleep(POLL);
        }
        Ok(())
    }

    /// Whether sshd accepts a connection now ([`SshdOptions::probe`], by default a TCP
    /// connect from this process).
    pub fn accepts(&self) -> bool {
        match &self.probe {
            Some(probe) => probe(&self.listen_ip, self.port),
            None => TcpStream::connect((self.listen_ip.as_str(), self.port)).is_ok(),
        }
    }

    /// An error (with the end of the log) unless the sshd process is running.
    pub fn check_running(&mut self) -> Result<()> {
        let Some(child) = &mut self.child else {
            return Err(Error::new("sshd is not running"));
        };
        let status = match child.try_wait() {
            Ok(None) => return Ok(()),
            Ok(Some(status)) => status.to_string(),
            Err(e) => format!("an unknown status ({e})"),
        };
        self.child = None;
        Err(Error::new(format!(
            "sshd exited with {status}:\n{}",
            self.log_tail(LOG_TAIL)
        )))
    }

    /// SIGKILLs the listener and every per-connection sshd it forked (see [`kill_tree`]) and
    /// reaps it: the server vanishes as in a crash. Nothing if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_tree(child.id(), Signal::SIGKILL);
            let _ = child.wait();
        }
    }

    /// [`Sshd::kill`], then starts sshd again (same host key and config) and waits until it
    /// listens.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()?;
        self.wait_listening()
    }

    /// The sshd process's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
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
    /// `[127.0.0.1]:2222 ssh-ed25519 AAAA…` otherwise.
    pub fn known_hosts_line(&self) -> String {
        let host = if self.port == 22 {
            self.listen_ip.clone()
        } else {
            format!("[{}]:{}", self.listen_ip, self.port)
        };
        format!("{host} {}", self.host_public_key)
    }

    /// sshd's log so far (empty if unreadable).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("sshd.log")).unwrap_or_default()
    }

    /// The last `lines` lines of [`Sshd::log`].
    pub fn log_tail(&self, lines: usize) -> String {
        last_lines(&self.log(), lines)
    }

    /// A path in sshd's private directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl fmt::Debug for Sshd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sshd")
            .field("listen_ip", &self.listen_ip)
            .field("port", &self.port)
            .field("fingerprint", &self.host_fingerprint)
            .field("dir", &self.dir.path())
            .field("pid", &self.pid())
            .finish_non_exhaustive()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A throwaway OpenSSH `ssh-agent` in the foreground (`-D`) on its own socket, killed on drop.
/// Keys are added with the real `ssh-add`, a passphrase answered through `SSH_ASKPASS`.
pub struct SshAgent {
    child: Child,
    dir: tempfile::TempDir,
    socket: PathBuf,
}

impl SshAgent {
    /// Starts `ssh-agent -D -a SOCKET` and waits until the socket exists.
    pub fn start() -> Result<SshAgent> {
        let dir = tempfile::tempdir().map_err(|e| Error::new(format!("tempdir: {e}")))?;
        let socket = dir.path().join("agent.sock");
        let mut child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::new(format!("cannot run ssh-agent (openssh-client): {e}")))?;
        let deadline = Instant::now() + SSHD_WAIT;
        while !socket.exists() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(Error::new(format!("ssh-agent exited at start: {status}")));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(Error::new("ssh-agent did not create its socket"));
            }
            std::thread::sleep(POLL);
        }
        Ok(SshAgent { child, dir, socket })
    }

    /// The value for `SSH_AUTH_SOCK`.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `ssh-add KEY`, typing `passphrase` (if any) through an `SSH_ASKPASS` script.
    pub fn add(&self, key: &Path, passphrase: Option<&str>) -> Result<()> {
        let mut command = Command::new("ssh-add");
        command
            .arg(key)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("SSH_AUTH_SOCK", &self.socket);
        if let Some(passphrase) = passphrase {
            use std::os::unix::fs::PermissionsExt;
            // The passphrase sits in a file (no shell quoting), and is given once: ssh-add
            // asks again after a wrong one, and must then get a refusal, not a loop.
            let secret = self.dir.path().join("passphrase");
            let asked = self.dir.path().join("asked");
            let askpass = self.dir.path().join("askpass");
            let _ = std::fs::remove_file(&asked);
            let script = format!(
                "#!/bin/sh\n[ -e '{asked}' ] && exit 1\n: > '{asked}'\ncat '{secret}'\n",
                asked = asked.display(),
                secret = secret.display()
            );
            std::fs::write(&secret, format!("{passphrase}\n"))
                .and_then(|()| std::fs::write(&askpass, script))
                .and_then(|()| {
                    std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o700))
                })
                .map_err(|e| Error::new(format!("writing the askpass helper: {e}")))?;
            command
                .env("SSH_ASKPASS", &askpass)
                .env("SSH_ASKPASS_REQUIRE", "force")
                .env("DISPLAY", ":0");
        }
        run(&mut command).map(drop)
    }
}

impl fmt::Debug for SshAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshAgent")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

impl Drop for SshAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A copy of the key at `from` at `to` (with `to.pub`), encrypted with `passphrase`
/// (`ssh-keygen -p`): the same key pair, now needing the passphrase or an agent.
pub fn encrypted_copy(from: &Path, to: &Path, passphrase: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let copy = |from: &Path, to: &Path| {
        std::fs::copy(from, to).map(drop).map_err(|e| {
            Error::new(format!(
                "copying {} to {}: {e}",
                from.display(),
                to.display()
            ))
        })
    };
    copy(from, to)?;
    copy(&public_key_path(from), &public_key_path(to))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::new(format!("chmod {}: {e}", to.display())))?;
    run(Command::new("ssh-keygen")
        .args(["-q", "-p", "-P", "", "-N", passphrase, "-f"])
        .arg(to))
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_path_appends_pub() {
        assert_eq!(
            public_key_path(Path::new("/tmp/dir/key.old")),
            Path::new("/tmp/dir/key.old.pub")
        );
    }

    #[test]
    fn errors_debug_as_their_message() {
        let error = run(&mut Command::new("false")).unwrap_err();
        assert!(
            format!("{error:?}").starts_with("\"false\" failed ("),
            "{error:?}"
        );
        assert_eq!(format!("{error:?}"), error.to_string());
    }

    /// The fixture itself, on loopback: keys, kill and restart.
    #[test]
    fn sshd_starts_dies_and_comes_back() {
        let client_key = tempfile::tempdir().unwrap();
        let client_public = ssh_keygen(&client_key.path().join("client_ed25519")).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .unwrap()
            .port();
        let mut options = SshdOptions::new("127.0.0.1", port, format!("restrict {client_public}"));
        options.extra_config = "ClientAliveInterval 1".into();
        let mut sshd = Sshd::start(options).unwrap();
        assert!(sshd.accepts());
        assert!(sshd.fingerprint().starts_with("SHA256:"), "{sshd:?}");
        assert_eq!(
            sshd.known_hosts_line(),
            format!("[127.0.0.1]:{port} {}", sshd.host_public_key())
        );
        let config = std::fs::read_to_string(sshd.path("sshd_config")).unwrap();
        assert!(
            config.starts_with("ClientAliveInterval 1\nPort "),
            "{config}"
        );
        assert!(!config.contains("LogLevel"), "{config}");
        assert_eq!(
            std::fs::read_to_string(sshd.path("authorized_keys")).unwrap(),
            format!("restrict {client_public}\n")
        );

        // Gone means the process is gone: the port itself may already be
        // taken by a parallel test (ports come from the same free pool).
        let killed = sshd.pid().unwrap();
        sshd.kill();
        assert!(sshd.pid().is_none());
        assert!(
            !Path::new(&format!("/proc/{killed}")).exists(),
            "sshd {killed} survived"
        );
        assert!(sshd.check_running().is_err());
        sshd.restart().unwrap();
        assert!(sshd.accepts() && sshd.pid().is_some());
        assert!(sshd.spawn().is_err(), "a second sshd while one runs");
        let dir = sshd.path("");
        let restarted = sshd.pid().unwrap();
        drop(sshd);
        assert!(!dir.exists());
        assert!(
            !Path::new(&format!("/proc/{restarted}")).exists(),
            "sshd {restarted} survived drop"
        );
    }
}
