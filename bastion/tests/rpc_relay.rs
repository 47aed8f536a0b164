//! `palisade-bastion rpc-relay` end to end: the relay spawned the way sshd
//! runs an operator key's forced command (the client's request in
//! `SSH_ORIGINAL_COMMAND`, the channel on stdin and stdout), against test
//! listeners at the validators' socket paths.

mod common;

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{BIN, PATIENCE, read_in_background, wait_for_exit, write_config};
use palisade_client::peer_text::is_unsafe;

const GREETING: &[u8] = b"palisade-supervisor 1 val-a tls=required\n";

/// A bastion configuration with val-a and val-b, whose sockets are in
/// `run/` (created, empty).
struct Bastion {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Bastion {
    fn new() -> Bastion {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), "");
        std::fs::create_dir(dir.path().join("run")).unwrap();
        Bastion { dir, config }
    }

    fn socket(&self, validator: &str) -> PathBuf {
        self.dir.path().join(format!("run/{validator}.sock"))
    }

    fn listen(&self, validator: &str) -> UnixListener {
        UnixListener::bind(self.socket(validator)).unwrap()
    }

    /// `rpc-relay` as sshd runs it: `original` in SSH_ORIGINAL_COMMAND
    /// (unset for `None`), stdin, stdout and stderr piped.
    fn spawn(&self, args: &[&str], original: Option<&OsStr>) -> Child {
        let mut command = Command::new(BIN);
        command
            .arg("rpc-relay")
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("SSH_ORIGINAL_COMMAND")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(original) = original {
            command.env("SSH_ORIGINAL_COMMAND", original);
        }
        command.spawn().unwrap()
    }

    /// Runs a relay that must end by itself, stdin held open as sshd
    /// would; returns its exit code, stdout and stderr.
    fn run(&self, args: &[&str], original: Option<&OsStr>) -> (Option<i32>, String, String) {
        let mut child = self.spawn(args, original);
        let _stdin = child.stdin.take();
        let status = wait_for_exit(&mut child, "rpc-relay");
        let read = |stream: &mut dyn Read| {
            let mut bytes = Vec::new();
            stream.read_to_end(&mut bytes).unwrap();
            String::from_utf8(bytes).unwrap()
        };
        let stdout = read(child.stdout.as_mut().unwrap());
        let stderr = read(child.stderr.as_mut().unwrap());
        (status.code(), stdout, stderr)
    }
}

/// A connection waiting on `listener`, if any (the relay has exited, so
/// any connection it made is queued by now).
fn connected(listener: &UnixListener) -> bool {
    listener.set_nonblocking(true).unwrap();
    match listener.accept() {
        Ok(_) => true,
        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(error) => panic!("{error}"),
    }
}

/// The relay's stdout, read by a thread so that every read can time out.
struct Output {
    chunks: mpsc::Receiver<Vec<u8>>,
    buffered: Vec<u8>,
}

impl Output {
    fn new(child: &mut Child) -> Output {
        Output {
            chunks: read_in_background(child.stdout.take().unwrap()),
            buffered: Vec::new(),
        }
    }

    /// Exactly `n` bytes; panics if the output ends or stalls first.
    fn read(&mut self, n: usize) -> Vec<u8> {
        while self.buffered.len() < n {
            match self.chunks.recv_timeout(PATIENCE) {
                Ok(chunk) => self.buffered.extend(chunk),
                Err(error) => panic!("{error:?} after {} of {n} bytes", self.buffered.len()),
            }
        }
        self.buffered.drain(..n).collect()
    }

    fn assert_ended(&mut self) {
        match self.chunks.recv_timeout(PATIENCE) {
            Err(mpsc::RecvTimeoutError::Disconnected) => assert!(self.buffered.is_empty()),
            other => panic!("output did not end: {other:?}"),
        }
    }
}

fn write_in_background(
    mut stdin: ChildStdin,
    bytes: Vec<u8>,
) -> std::thread::JoinHandle<ChildStdin> {
    std::thread::spawn(move || {
        stdin.write_all(&bytes).unwrap();
        stdin.flush().unwrap();
        stdin
    })
}

#[test]
fn relays_both_ways_and_half_closes_on_the_end_of_stdin() {
    let bastion = Bastion::new();
    let listener = bastion.listen("val-a");
    let (half_closed, half_close_seen) = mpsc::channel();
    // The supervisor's stand-in: the greeting, an echo until the relay's
    // input ends, then one more line after a pause (the relay must still
    // be relaying), then close.
    let server = std::thread::spawn(move || {
        let (mut connection, _) = listener.accept().unwrap();
        connection.write_all(GREETING).unwrap();
        let mut buffer = vec![0u8; 16 * 1024];
        let mut echoed = 0usize;
        loop {
            let n = connection.read(&mut buffer).unwrap();
            if n == 0 {
                break;
            }
            connection.write_all(&buffer[..n]).unwrap();
            echoed += n;
        }
        half_closed.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        connection.write_all(b"bye\n").unwrap();
        echoed
    });

    let mut relay = bastion.spawn(&[], Some(OsStr::new("palisade-rpc val-a")));
    let mut output = Output::new(&mut relay);
    assert_eq!(output.read(GREETING.len()), GREETING);

    let mut stdin = relay.stdin.take().unwrap();
    stdin.write_all(b"hello\n").unwrap();
    stdin.flush().unwrap();
    assert_eq!(output.read(6), b"hello\n");
    assert!(half_close_seen.try_recv().is_err());

    // More than the pipes and the relay's buffers hold, written while it
    // is read back: binary, every byte value.
    let bulk: Vec<u8> = (0..5 * 64 * 1024 + 17).map(|i| (i % 251) as u8).collect();
    let writer = write_in_background(stdin, bulk.clone());
    assert_eq!(output.read(bulk.len()), bulk);
    drop(writer.join().unwrap());

    // stdin closed: the server sees the end, and what it sends afterwards
    // still arrives before the relay exits 0.
    half_close_seen.recv_timeout(PATIENCE).unwrap();
    assert_eq!(output.read(4), b"bye\n");
    output.assert_ended();
    assert_eq!(server.join().unwrap(), 6 + bulk.len());
    let status = wait_for_exit(&mut relay, "rpc-relay");
    let mut stderr = String::new();
    relay
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    assert_eq!(stderr, "", "nothing is logged");
}

#[test]
fn the_relay_ends_when_the_validator_side_closes_with_stdin_still_open() {
    let bastion = Bastion::new();
    let listener = bastion.listen("val-b");
    let server = std::thread::spawn(move || {
        let (mut connection, _) = listener.accept().unwrap();
        connection.write_all(GREETING).unwrap();
    });
    let mut relay = bastion.spawn(
        &["--validator", "val-a", "--validator", "val-b"],
        Some(OsStr::new("palisade-rpc val-b")),
    );
    let _stdin = relay.stdin.take().unwrap();
    let mut output = Output::new(&mut relay);
    assert_eq!(output.read(GREETING.len()), GREETING);
    server.join().unwrap();
    output.assert_ended();
    assert_eq!(wait_for_exit(&mut relay, "rpc-relay").code(), Some(0));
}

#[test]
fn refusals_are_one_line_on_stdout_and_connect_nowhere() {
    struct Row {
        what: &'static str,
        args: &'static [&'static str],
        original: Option<&'static str>,
        /// Whether the validators' sockets are listening.
        listening: bool,
        expected: &'static [&'static str],
    }
    let rows = [
        Row {
            what: "no SSH_ORIGINAL_COMMAND",
            args: &[],
            original: None,
            listening: true,
            expected: &[
                "SSH_ORIGINAL_COMMAND is not set: rpc-relay is the forced command of an \
                 operator's key in authorized_keys",
                "not run by hand",
            ],
        },
        Row {
            what: "another command",
            args: &[],
            original: Some("ls -la"),
            listening: true,
            expected: &[
                "expected the command \"palisade-rpc VALIDATOR\" or \"palisade-log-archive VALIDATOR\", got \"ls -la\"",
            ],
        },
        Row {
            what: "no validator",
            args: &[],
            original: Some("palisade-rpc"),
            listening: true,
            expected: &[
                "expected the command \"palisade-rpc VALIDATOR\" or \"palisade-log-archive VALIDATOR\", got \"palisade-rpc\"",
            ],
        },
        Row {
            what: "three words",
            args: &[],
            original: Some("palisade-rpc val-a val-b"),
            listening: true,
            expected: &[
                "expected the command \"palisade-rpc VALIDATOR\" or \"palisade-log-archive VALIDATOR\", got \"palisade-rpc val-a val-b\"",
            ],
        },
        Row {
            what: "an unknown validator",
            args: &[],
            original: Some("palisade-rpc val-x"),
            listening: true,
            expected: &["unknown validator \"val-x\": the configured validators are val-a, val-b"],
        },
        Row {
            what: "a validator this key may not reach",
            args: &["--validator", "val-a"],
            original: Some("palisade-rpc val-b"),
            listening: true,
            expected: &["validator \"val-b\": this key may reach only val-a"],
        },
        Row {
            what: "an unknown validator for a restricted key",
            args: &["--validator", "val-a"],
            original: Some("palisade-rpc val-x"),
            listening: true,
            expected: &["validator \"val-x\": this key may reach only val-a"],
        },
        Row {
            what: "an unconfigured --validator",
            args: &["--validator", "val-a", "--validator", "val-z"],
            original: Some("palisade-rpc val-a"),
            listening: true,
            expected: &[
                "--validator \"val-z\" in this key's forced command is not a configured validator",
            ],
        },
        Row {
            what: "no socket",
            args: &[],
            original: Some("palisade-rpc val-a"),
            listening: false,
            expected: &[
                "cannot connect to val-a's socket ",
                "/run/val-a.sock: No such file or directory (os error 2): ",
                "is the validator's tunnel up?",
            ],
        },
    ];
    for row in rows {
        let bastion = Bastion::new();
        let listeners: Vec<UnixListener> = if row.listening {
            vec![bastion.listen("val-a"), bastion.listen("val-b")]
        } else {
            Vec::new()
        };
        let (code, stdout, stderr) = bastion.run(row.args, row.original.map(OsStr::new));
        let what = row.what;
        assert_eq!(code, Some(1), "{what}: {stdout} {stderr}");
        assert!(
            stdout.starts_with("palisade-bastion: "),
            "{what}: {stdout:?}"
        );
        assert!(stdout.ends_with('\n'), "{what}: {stdout:?}");
        assert_eq!(stdout.lines().count(), 1, "{what}: {stdout:?}");
        for fragment in row.expected {
            assert!(
                stdout.contains(fragment),
                "{what}: {stdout:?} lacks {fragment:?}"
            );
        }
        assert_eq!(stderr, stdout, "{what}: the same message on stderr");
        for listener in &listeners {
            assert!(!connected(listener), "{what}: the relay connected");
        }
    }
}

#[test]
fn a_socket_nobody_listens_on_and_a_bad_configuration_are_refused() {
    let bastion = Bastion::new();
    // A socket file left behind by a tunnel that is gone.
    drop(bastion.listen("val-a"));
    let (code, stdout, _) = bastion.run(&[], Some(OsStr::new("palisade-rpc val-a")));
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains("Connection refused") && stdout.contains("is the validator's tunnel up?"),
        "{stdout}"
    );

    std::fs::write(&bastion.config, "listen-socket = 7\n").unwrap();
    let (code, stdout, stderr) = bastion.run(&[], Some(OsStr::new("palisade-rpc val-a")));
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.starts_with("palisade-bastion: the bastion's configuration is unusable: "),
        "{stdout}"
    );
    assert_eq!(stdout.lines().count(), 1, "{stdout:?}");
    assert_eq!(stderr, stdout);
}

#[test]
fn hostile_commands_reach_neither_stdout_nor_stderr_raw() {
    let bastion = Bastion::new();
    let listener = bastion.listen("val-a");
    let long = "palisade-rpc \u{1b}[1m\u{202e}".repeat(500);
    let hostile: [(&[&str], &[u8]); 6] = [
        (&[], b"palisade-rpc val\x1b[2J\x07\xe2\x80\xaex"),
        (
            &[],
            b"ls\n\x1b]0;pwned\x07 \xe2\x81\xa6evil\xe2\x81\xa9\r\n",
        ),
        (&[], b"palisade-rpc\xe2\x80\xae val-a"),
        (&[], b"palisade-rpc \xff\x1b\x9b31m"),
        (
            &["--validator", "val-a"],
            b"palisade-rpc \x1b[31mval-b\xe2\x80\x8f",
        ),
        (&[], long.as_bytes()),
    ];
    for (args, original) in hostile {
        let (code, stdout, stderr) = bastion.run(args, Some(OsStr::from_bytes(original)));
        assert_eq!(code, Some(1), "{original:?}: {stdout}");
        for (name, text) in [("stdout", &stdout), ("stderr", &stderr)] {
            let line = text
                .strip_suffix('\n')
                .unwrap_or_else(|| panic!("{name} {text:?}"));
            assert!(
                !line.chars().any(is_unsafe),
                "{original:?}: raw control or bidi character on {name}: {line:?}"
            );
            assert!(line.starts_with("palisade-bastion: "), "{name}: {line:?}");
            assert!(
                text.len() <= palisade_wire::rpc::MAX_GREETING_BYTES,
                "{name}: {} bytes",
                text.len()
            );
        }
        // What was escaped is still there to see.
        assert!(stdout.contains("\\u{"), "{stdout}");
    }
    assert!(!connected(&listener));
}

#[test]
fn help_shows_the_authorized_keys_line_the_exec_command_and_exit_codes() {
    let output = Command::new(BIN)
        .args(["rpc-relay", "--help"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for fragment in [
        "\ncommand=\"/usr/bin/palisade-bastion rpc-relay --config \
         /etc/palisade-bastion/bastion.toml\",restrict ssh-ed25519 AAAA… alice@laptop\n",
        "--validator val-a",
        "\npalisade-rpc NAME\n",
        "palisade-bastion: MESSAGE",
        "Exit codes: 0 the validator's side closed the connection",
        "[default: /etc/palisade-bastion/bastion.toml]",
    ] {
        assert!(
            help.contains(fragment),
            "--help lacks {fragment:?}:\n{help}"
        );
    }
    let top = Command::new(BIN).arg("--help").output().unwrap();
    let top = String::from_utf8(top.stdout).unwrap();
    assert!(top.contains("palisade-bastion rpc-relay [--config FILE] [--validator NAME]..."));
    assert!(top.contains("`backup-session`, `rpc-relay`,"), "{top}");
}
