//! `palisade-bastion run` end to end: the real binary with a temporary
//! configuration, validator sockets served by small fake supervisors (real
//! Unix sockets writing the real greeting, or misbehaving on purpose), the
//! status file and `status` command, systemd notifications on a real
//! datagram socket, and signals.

mod common;

use std::io::Write;
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use common::{BIN, Client, PATIENCE, mode, wait_for_socket, wait_until};
use palisade_wire::rpc::Greeting;
use serde_json::Value;

/// Probe settings for the tests: short, but with room for a loaded machine
/// (a healthy fake supervisor must never look slow).
const HEALTH: &str = "[health]\ninterval = \"300ms\"\ntimeout = \"300ms\"\n";

/// What a fake validator socket does with each connection.
#[derive(Clone)]
enum Behaviour {
    /// Writes these bytes, then closes.
    Reply(Vec<u8>),
    /// Writes these bytes, then keeps the connection open.
    ReplyAndHold(Vec<u8>),
    /// Closes at once.
    Close,
}

fn greeting(name: &str) -> Behaviour {
    Behaviour::Reply(Greeting::new(name, "0.1.0").to_line())
}

/// A fake supervisor (or impostor) behind a validator socket.
struct Peer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Peer {
    fn start(path: &Path, behaviour: Behaviour) -> Peer {
        let listener = UnixListener::bind(path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            let mut drained_after_stop = false;
            loop {
                let mut stream = match listener.accept() {
                    Ok((stream, _)) => stream,
                    // Stop only with an empty backlog: a probe that connected
                    // before the socket file was removed still gets its
                    // answer, instead of a reset when the listener closes.
                    // `stop` is set after the file is removed, so one more
                    // pass once it is seen catches every connection queued
                    // before the removal.
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                        if stopped.load(Ordering::Relaxed) {
                            if drained_after_stop {
                                break;
                            }
                            drained_after_stop = true;
                            continue;
                        }
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    Err(error) => panic!("accept: {error}"),
                };
                stream.set_nonblocking(false).unwrap();
                match &behaviour {
                    Behaviour::Reply(bytes) => {
                        let _ = stream.write_all(bytes);
                    }
                    Behaviour::ReplyAndHold(bytes) => {
                        let _ = stream.write_all(bytes);
                        held.push(stream);
                    }
                    Behaviour::Close => {}
                }
            }
        });
        Peer {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
        }
    }

    /// Stop answering: the socket file is removed first (as sshd does when
    /// the SSH session ends cleanly), then the listener is closed.
    fn stop_and_remove(mut self) {
        std::fs::remove_file(&self.path).unwrap();
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.halt();
    }
}

/// A `palisade-bastion run` process in its own temporary directory.
struct Daemon {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Daemon {
    /// A directory with `bastion.toml` for `validators` (sockets in
    /// `run/<name>.sock`) plus `extra` tables; nothing started yet.
    fn configure(validators: &[&str], extra: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("run")).unwrap();
        std::fs::set_permissions(
            dir.path().join("run"),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let mut config = format!(
            "listen-socket = \"{0}/run/bastion.sock\"\nbackup-dir = \"{0}/backups\"\n{HEALTH}{extra}\n",
            dir.path().display()
        );
        for name in validators {
            config.push_str(&format!(
                "[[validator]]\nname = \"{name}\"\nsocket = \"{}/run/{name}.sock\"\n",
                dir.path().display()
            ));
        }
        std::fs::write(dir.path().join("bastion.toml"), config).unwrap();
        Daemon { dir, child: None }
    }

    fn start(validators: &[&str], extra: &str) -> Daemon {
        let mut daemon = Daemon::configure(validators, extra);
        daemon.spawn(&[]);
        wait_for_socket(&daemon.listen_socket());
        daemon
    }

    fn spawn(&mut self, env: &[(&str, &Path)]) {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("stderr.log"))
            .unwrap();
        let child = Command::new(BIN)
            .arg("run")
            .arg("--config")
            .arg(self.config())
            .envs(env.iter().copied())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("bastion.toml")
    }

    fn socket(&self, validator: &str) -> PathBuf {
        self.dir.path().join(format!("run/{validator}.sock"))
    }

    fn listen_socket(&self) -> PathBuf {
        self.dir.path().join("run/bastion.sock")
    }

    fn status_file(&self) -> PathBuf {
        self.dir.path().join("run/status.json")
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// Log lines with `message` about `validator`.
    fn log_lines(&self, message: &str, validator: &str) -> Vec<String> {
        let field = format!("validator={validator} ");
        self.stderr()
            .lines()
            .filter(|line| line.contains(message) && line.contains(&field))
            .map(str::to_owned)
            .collect()
    }

    /// The status document, read directly.
    fn status(&self) -> Option<Value> {
        let bytes = std::fs::read(self.status_file()).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// One validator's entry in the status document.
    fn entry(&self, validator: &str) -> Option<Value> {
        let status = self.status()?;
        status["validators"]
            .as_array()?
            .iter()
            .find(|entry| entry["name"] == validator)
            .cloned()
    }

    /// Wait until `validator`'s entry satisfies `condition`; returns it.
    fn wait_for(&self, validator: &str, what: &str, condition: impl Fn(&Value) -> bool) -> Value {
        wait_until(&format!("{validator}: {what}\n{}", self.stderr()), || {
            self.entry(validator).is_some_and(|entry| condition(&entry))
        });
        self.entry(validator).unwrap()
    }

    fn wait_state(&self, validator: &str, state: &str) -> Value {
        self.wait_for(validator, state, |entry| entry["state"] == state)
    }

    /// `palisade-bastion status --config … [args]`.
    fn status_command(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("status")
            .arg("--config")
            .arg(self.config())
            .args(args)
            .output()
            .unwrap()
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        assert!(
            Command::new("kill")
                .args([signal, &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    fn wait_exit(&mut self) -> Option<i32> {
        self.child.take().unwrap().wait().unwrap().code()
    }

    fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| child.try_wait().unwrap().is_none())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn health_checks_follow_the_validators_and_log_only_changes() {
    let daemon = Daemon::configure(&["val-a", "val-b"], "");
    let peer_a = Peer::start(&daemon.socket("val-a"), greeting("val-a"));
    let mut daemon = daemon;
    daemon.spawn(&[]);

    let a = daemon.wait_state("val-a", "up");
    assert_eq!(a["supervisor"]["version"], "0.1.0");
    assert_eq!(a["supervisor"]["validator"], "val-a");
    assert_eq!(a["consecutive_failures"], 0);
    let b = daemon.wait_state("val-b", "down");
    assert_eq!(b["last_error"], "tunnel not established (no socket)");
    assert_eq!(b["supervisor"], Value::Null);
    assert!(b["consecutive_failures"].as_u64().unwrap() >= 1);
    assert_eq!(mode(&daemon.status_file()), 0o600);

    // `status`: a table and exit code 3 while a validator is down.
    let table = daemon.status_command(&[]);
    assert_eq!(table.status.code(), Some(3), "{table:?}");
    let stdout = text(&table.stdout);
    let row_b = stdout.lines().find(|l| l.starts_with("val-b")).unwrap();
    assert!(
        row_b.contains("down") && row_b.contains("tunnel not established"),
        "{stdout}"
    );
    assert!(
        text(&table.stderr).contains("1 of 2 validators not up"),
        "{table:?}"
    );
    let json = daemon.status_command(&["--json"]);
    assert_eq!(json.status.code(), Some(3), "{json:?}");
    let document: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(document["validators"][0]["state"], "up");
    assert_eq!(document["validators"][1]["state"], "down");
    assert_eq!(
        document["validators"][1]["last_error"],
        "tunnel not established (no socket)"
    );

    // val-b's tunnel comes up.
    let peer_b = Peer::start(&daemon.socket("val-b"), greeting("val-b"));
    let b = daemon.wait_state("val-b", "up");
    assert_eq!(b["consecutive_failures"], 0);
    assert_eq!(
        b["last_error"], "tunnel not established (no socket)",
        "kept"
    );
    wait_until("val-b's recovery in the log", || {
        daemon.log_lines("validator up", "val-b").len() == 1
    });
    let all_up = daemon.status_command(&[]);
    assert_eq!(all_up.status.code(), Some(0), "{all_up:?}");

    // val-a's tunnel goes away.
    peer_a.stop_and_remove();
    let a = daemon.wait_state("val-a", "down");
    assert_eq!(a["last_error"], "tunnel not established (no socket)");
    assert_eq!(
        a["supervisor"]["version"], "0.1.0",
        "last known supervisor kept"
    );
    daemon.wait_for("val-a", "three more failed checks", |entry| {
        entry["consecutive_failures"].as_u64() >= Some(4)
    });
    // One line per change, none per poll.
    assert_eq!(
        daemon.log_lines("validator down", "val-a").len(),
        1,
        "{}",
        daemon.stderr()
    );
    assert_eq!(
        daemon.log_lines("validator up", "val-a").len(),
        1,
        "{}",
        daemon.stderr()
    );
    assert_eq!(
        daemon.log_lines("validator down", "val-b").len(),
        1,
        "{}",
        daemon.stderr()
    );
    assert_eq!(
        daemon.log_lines("validator up", "val-b").len(),
        1,
        "{}",
        daemon.stderr()
    );
    let down_line = &daemon.log_lines("validator down", "val-a")[0];
    assert!(down_line.contains("WARN"), "{down_line}");
    assert!(
        down_line.contains("reason=tunnel not established (no socket)"),
        "{down_line}"
    );
    assert!(daemon.is_running());
    drop(peer_b);
}

#[test]
fn misbehaving_peers_are_down_with_clear_reasons_and_the_daemon_keeps_going() {
    let names = [
        "good", "garbage", "overlong", "silent", "closes", "stale", "impostor",
    ];
    let daemon = Daemon::configure(&names, "");
    let peers = [
        Peer::start(&daemon.socket("good"), greeting("good")),
        Peer::start(
            &daemon.socket("garbage"),
            Behaviour::Reply(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n".to_vec()),
        ),
        Peer::start(
            &daemon.socket("overlong"),
            Behaviour::ReplyAndHold(vec![b'{'; 4096]),
        ),
        Peer::start(
            &daemon.socket("silent"),
            Behaviour::ReplyAndHold(Vec::new()),
        ),
        Peer::start(&daemon.socket("closes"), Behaviour::Close),
        Peer::start(&daemon.socket("impostor"), greeting("val-x")),
    ];
    // What a vanished SSH session leaves behind: a socket nobody listens on.
    drop(UnixListener::bind(daemon.socket("stale")).unwrap());
    let mut daemon = daemon;
    daemon.spawn(&[]);

    // (validator, expected reason prefix)
    let expected = [
        ("garbage", "supervisor not answering: malformed greeting: "),
        (
            "overlong",
            "supervisor not answering: greeting longer than 1024 bytes",
        ),
        (
            "silent",
            "supervisor not answering: no greeting within 300ms",
        ),
        (
            "closes",
            "supervisor not answering: connection closed without a greeting",
        ),
        ("stale", "tunnel down (stale socket)"),
    ];
    for (validator, reason) in expected {
        let entry = daemon.wait_state(validator, "down");
        let error = entry["last_error"].as_str().unwrap();
        assert!(error.starts_with(reason), "{validator}: {error}");
        let logged = daemon.log_lines("validator down", validator);
        assert_eq!(logged.len(), 1, "{validator}: {}", daemon.stderr());
        assert!(logged[0].contains(reason), "{}", logged[0]);
    }
    let impostor = daemon.wait_state("impostor", "up");
    assert_eq!(impostor["supervisor"]["validator"], "val-x");
    wait_until("the impostor warning", || {
        daemon
            .log_lines("greeting names another validator", "impostor")
            .iter()
            .any(|line| line.contains("WARN") && line.contains("announced=val-x"))
    });

    // The daemon keeps checking: the good validator stays up and keeps
    // being probed while the others misbehave.
    let good = daemon.wait_state("good", "up");
    let first = good["last_checked"].as_str().unwrap().to_owned();
    let later = daemon.wait_for("good", "another check", |entry| {
        entry["last_checked"].as_str() != Some(first.as_str())
    });
    assert_eq!(later["state"], "up");
    assert_eq!(later["consecutive_failures"], 0);
    daemon.wait_for("silent", "another timed-out check", |entry| {
        entry["consecutive_failures"].as_u64() >= Some(3)
    });
    assert!(daemon.is_running());
    // The backup store answers meanwhile.
    assert!(
        Client::connect(&daemon.listen_socket())
            .list("good")
            .is_empty()
    );
    drop(peers);
}

#[test]
fn the_backup_store_serves_within_run_with_the_configured_tunables() {
    let daemon = Daemon::start(&["val-a"], "[backups]\nkeep = 2\n");
    assert_eq!(mode(&daemon.listen_socket()), 0o600);
    let mut client = Client::connect(&daemon.listen_socket());
    for name in ["1.age", "2.age", "3.age"] {
        assert!(client.put("val-a", name, name.as_bytes()).ok, "{name}");
        std::thread::sleep(Duration::from_millis(30));
    }
    assert_eq!(client.list("val-a"), ["2.age", "3.age"], "backups.keep = 2");
    assert_eq!(client.get("val-a", "3.age").unwrap(), b"3.age");
    assert_eq!(mode(&daemon.dir.path().join("backups/val-a")), 0o700);
    // The health checks run beside it.
    daemon.wait_state("val-a", "down");
}

#[test]
fn metrics_show_each_validators_health_its_store_and_the_sessions() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let daemon = Daemon::start(
        &["val-a", "val-b"],
        &format!("[metrics]\nlisten = \"{address}\"\n"),
    );
    let _peer = Peer::start(&daemon.socket("val-a"), greeting("val-a"));
    daemon.wait_state("val-a", "up");
    daemon.wait_state("val-b", "down");
    let scrape = || {
        let (status, body) =
            palisade_testkit::prometheus::http_get(address, "/metrics", "text/plain").unwrap();
        assert_eq!(status, 200, "{body}");
        body
    };

    let mut client = Client::connect(&daemon.listen_socket());
    assert!(client.put("val-a", "1.age", b"12345").ok);
    assert!(client.put("val-a", "2.age", b"678").ok);
    let text = scrape();
    for line in [
        format!(
            "palisade_bastion_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        ),
        "palisade_bastion_validator_up{validator=\"val-a\"} 1\n".into(),
        "palisade_bastion_validator_up{validator=\"val-b\"} 0\n".into(),
        "palisade_bastion_store_bytes{validator=\"val-a\",kind=\"backup\"} 8\n".into(),
        "palisade_bastion_store_objects{validator=\"val-a\",kind=\"backup\"} 2\n".into(),
        "palisade_bastion_store_bytes{validator=\"val-b\",kind=\"backup\"} 0\n".into(),
        "palisade_bastion_store_sessions_total{validator=\"val-a\"} 1\n".into(),
        "palisade_bastion_store_sessions_total{validator=\"val-b\"} 0\n".into(),
        "palisade_bastion_store_sessions_active 1\n".into(),
    ] {
        assert!(text.contains(&line), "{line}{text}");
    }
    palisade_testkit::prometheus::check_metrics(&text).unwrap();
    // The session ends with its connection.
    drop(client);
    wait_until("the session to end", || {
        scrape().contains("palisade_bastion_store_sessions_active 0\n")
    });
    // Only /metrics is served.
    let (status, _) =
        palisade_testkit::prometheus::http_get(address, "/status", "text/plain").unwrap();
    assert_eq!(status, 404);
}

#[test]
fn a_metrics_address_in_use_stops_the_start_and_leaves_nothing() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    let mut daemon = Daemon::configure(&["val-a"], &format!("[metrics]\nlisten = \"{address}\"\n"));
    daemon.spawn(&[]);
    assert_eq!(daemon.wait_exit(), Some(1));
    let stderr = daemon.stderr();
    assert!(
        stderr.contains(&format!("cannot listen on {address} for metrics")),
        "{stderr}"
    );
    assert!(!daemon.listen_socket().exists());
    assert!(!daemon.status_file().exists());
}

#[test]
fn a_bad_configuration_exits_1_listing_every_problem_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bastion.toml");
    std::fs::write(
        &config,
        format!(
            "listen-socket = \"relative.sock\"\n\
             backup-dir = \"{0}/backups\"\n\
             [backups]\nkeep = 0\n\
             [health]\ninterval = \"fast\"\n\
             [[validator]]\nname = \"val a\"\nsocket = \"{0}/run/val-a.sock\"\n\
             [[validator]]\nname = \"val-b\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    for command in ["run", "status", "check-config"] {
        let output = Command::new(BIN)
            .arg(command)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{command}: {output:?}");
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains("invalid configuration (5 problems):"),
            "{stderr}"
        );
        for key in [
            "key `listen-socket`: 'relative.sock' must be an absolute path",
            "key `backups.keep`: 0 must be between 1 and 4096",
            "key `health.interval`: 'fast' is not a duration",
            "key `validator[1].name`",
            "key `validator[2].socket`: is required",
        ] {
            assert!(
                stderr.contains(key),
                "{command}: missing {key:?} in {stderr}"
            );
        }
    }
    let entries: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(entries, ["bastion.toml"], "nothing created");

    // A typo is caught before any value.
    std::fs::write(
        &config,
        "listen-socket = \"/x.sock\"\n[health]\nintervall = \"1s\"\n",
    )
    .unwrap();
    let output = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("unknown field `intervall`"),
        "{output:?}"
    );
}

/// What systemd would receive on `NOTIFY_SOCKET`, line by line.
struct Notifications {
    socket: UnixDatagram,
    lines: Vec<String>,
}

impl Notifications {
    fn bind(path: &Path) -> Notifications {
        let socket = UnixDatagram::bind(path).unwrap();
        socket.set_read_timeout(Some(PATIENCE)).unwrap();
        Notifications {
            socket,
            lines: Vec::new(),
        }
    }

    /// Receive until `line` has arrived; returns everything so far.
    fn wait_for(&mut self, line: &str) -> &[String] {
        let mut buffer = [0u8; 4096];
        while !self.lines.iter().any(|received| received == line) {
            let length = self
                .socket
                .recv(&mut buffer)
                .unwrap_or_else(|e| panic!("no {line:?} notification ({e}); got {:?}", self.lines));
            self.lines
                .extend(text(&buffer[..length]).lines().map(str::to_owned));
        }
        &self.lines
    }
}

#[test]
fn sigterm_and_sigint_stop_cleanly_and_systemd_is_told() {
    for signal in ["-TERM", "-INT"] {
        let mut daemon = Daemon::configure(&["val-a"], "");
        let _peer = Peer::start(&daemon.socket("val-a"), greeting("val-a"));
        let notify_path = daemon.dir.path().join("notify.sock");
        let mut notify = Notifications::bind(&notify_path);
        daemon.spawn(&[("NOTIFY_SOCKET", &notify_path)]);

        let startup = notify.wait_for("READY=1").to_vec();
        assert_eq!(
            startup,
            [
                "READY=1",
                "STATUS=0/1 validators reachable; not checked yet: val-a"
            ],
            "READY first, with the status before any check"
        );
        notify.wait_for("STATUS=1/1 validators reachable");
        daemon.wait_state("val-a", "up");

        // A second instance must not displace the first, nor touch its
        // status file.
        let second = Command::new(BIN)
            .args(["run", "--config"])
            .arg(daemon.config())
            .output()
            .unwrap();
        assert_eq!(second.status.code(), Some(1), "{second:?}");
        assert!(
            text(&second.stderr).contains("another process is listening"),
            "{second:?}"
        );
        let pid = daemon.child.as_ref().unwrap().id();
        assert_eq!(daemon.status().unwrap()["pid"], pid);
        assert!(UnixStream::connect(daemon.listen_socket()).is_ok());

        daemon.signal(signal);
        notify.wait_for("STOPPING=1");
        assert_eq!(daemon.wait_exit(), Some(0), "{signal}: {}", daemon.stderr());
        assert!(!daemon.listen_socket().exists(), "listen socket removed");
        assert!(!daemon.status_file().exists(), "status file removed");
        assert!(
            daemon.socket("val-a").exists(),
            "validator sockets are not ours"
        );

        let status = daemon.status_command(&[]);
        assert_eq!(status.status.code(), Some(1), "{status:?}");
        assert!(
            text(&status.stderr).contains("cannot read status file"),
            "{status:?}"
        );
    }
}

/// What an attacker behind a validator's socket writes to reach the
/// operator's terminal and the bastion's log: an OSC title set, BEL, a
/// screen clear, bidi overrides, and a raw newline with a forged log line.
const HOSTILE: &str = "\u{1b}]0;pwned\u{7}\u{1b}[2J\u{202e}\u{2066}\u{9b}31m\nFORGED  INFO validator up validator=val-b";

/// No raw escape, bell, C1, bidi control or forged line in `text`.
fn assert_inert(what: &str, text: &str) {
    for c in ['\u{1b}', '\u{7}', '\u{9b}', '\u{202e}', '\u{2066}'] {
        assert!(!text.contains(c), "{what} holds {c:?}:\n{text}");
    }
    assert!(
        !text.lines().any(|line| line.starts_with("FORGED")),
        "{what} holds a forged line:\n{text}"
    );
}

/// Regression (hardening review, finding 15): the greeting's `version` and
/// `validator`, and serde's error text quoting a bad greeting, reached
/// `status`, the log and `status --json` raw. Now they are cleaned where
/// the greeting is parsed, and the renderers clean again.
#[test]
fn a_hostile_greeting_reaches_neither_the_terminal_nor_the_log() {
    let daemon = Daemon::configure(&["hostile", "garbled"], "");
    let mut greeting = Greeting::new(format!("val-x{HOSTILE}"), format!("6.6.6{HOSTILE}"));
    greeting.tls = None;
    let garbled = format!(
        "{{\"service\":\"palisade-supervisor\",\"protocol\":{},\"version\":\"1\",\"validator\":\"v\"}}\n",
        serde_json::to_string(HOSTILE).unwrap()
    );
    let _peers = [
        Peer::start(
            &daemon.socket("hostile"),
            Behaviour::Reply(greeting.to_line()),
        ),
        Peer::start(
            &daemon.socket("garbled"),
            Behaviour::Reply(garbled.into_bytes()),
        ),
    ];
    let mut daemon = daemon;
    daemon.spawn(&[]);
    let hostile = daemon.wait_state("hostile", "up");
    let version = hostile["supervisor"]["version"].as_str().unwrap();
    assert!(
        version.starts_with("6.6.6\\u{1b}]0;pwned\\u{7}"),
        "{version}"
    );
    let garbled = daemon.wait_state("garbled", "down");
    let error = garbled["last_error"].as_str().unwrap();
    assert!(error.contains("malformed greeting: "), "{error}");
    assert!(
        error.contains("\\u{1b}"),
        "the serde text, escaped: {error}"
    );
    wait_until("the name-mismatch warning", || {
        !daemon
            .log_lines("greeting names another validator", "hostile")
            .is_empty()
    });

    let table = daemon.status_command(&[]);
    assert_inert("status", &text(&table.stdout));
    assert_inert("status's stderr", &text(&table.stderr));
    assert!(
        text(&table.stdout).contains("\\u{202e}"),
        "{}",
        text(&table.stdout)
    );
    let json = daemon.status_command(&["--json"]);
    assert_inert("status --json", &text(&json.stdout));
    let parsed: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(parsed["validators"].as_array().unwrap().len(), 2);
    assert_inert("the log", &daemon.stderr());
}
