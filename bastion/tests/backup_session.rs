//! `palisade-bastion backup-session` end to end: a real `serve-backups`
//! process, and the relay spawned the way sshd runs a forced command, with
//! the protocol spoken over its piped stdin and stdout.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{BIN, PATIENCE, kind, wait_for_socket, write_config};
use palisade_wire::backup_store::{
    ErrorKind, MAX_PAYLOAD_BYTES, Request, Response, decode_response, encode_header,
};

/// A temporary bastion configuration, with the store running or not.
struct Bastion {
    dir: tempfile::TempDir,
    config: PathBuf,
    store: Option<Child>,
}

impl Bastion {
    /// The configuration only; no store running.
    fn configured(extra: &str) -> Bastion {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), extra);
        Bastion {
            dir,
            config,
            store: None,
        }
    }

    /// The configuration and a running `serve-backups`.
    fn start(extra: &str) -> Bastion {
        let mut bastion = Bastion::configured(extra);
        let stderr = std::fs::File::create(bastion.dir.path().join("store.log")).unwrap();
        bastion.store = Some(
            Command::new(BIN)
                .arg("serve-backups")
                .arg("--config")
                .arg(&bastion.config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .unwrap(),
        );
        wait_for_socket(&bastion.dir.path().join("run/bastion.sock"));
        bastion
    }

    fn backups(&self, validator: &str) -> PathBuf {
        self.dir.path().join("backups").join(validator)
    }

    /// Names in a validator's backup directory, temporary files included.
    /// The validator's stored backups (its `logs/` directory of log
    /// segments is another kind's).
    fn stored(&self, validator: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.backups(validator))
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| !(e.file_name() == "logs" && e.file_type().unwrap().is_dir()))
            .map(|e| e.file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    /// `backup-session --validator NAME`, as sshd would run it.
    fn session(&self, validator: &str) -> Session {
        Session::spawn(&self.config, validator, self.dir.path())
    }
}

impl Drop for Bastion {
    fn drop(&mut self) {
        if let Some(store) = &mut self.store {
            let _ = store.kill();
            let _ = store.wait();
        }
    }
}

/// A running `backup-session`: stdin, and stdout collected by a thread so
/// that every read can time out.
struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    chunks: mpsc::Receiver<Vec<u8>>,
    buffered: Vec<u8>,
    stderr: PathBuf,
}

impl Session {
    fn spawn(config: &Path, validator: &str, dir: &Path) -> Session {
        let stderr = dir.join(format!("session-{}.log", next_id()));
        let mut child = Command::new(BIN)
            .arg("backup-session")
            .arg("--config")
            .arg(config)
            .arg("--validator")
            .arg(validator)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let (sender, chunks) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buffer = vec![0u8; 64 * 1024];
            while let Ok(n) = stdout.read(&mut buffer) {
                if n == 0 || sender.send(buffer[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Session {
            stdin: child.stdin.take(),
            child,
            chunks,
            buffered: Vec::new(),
            stderr,
        }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin.write_all(bytes).unwrap();
        stdin.flush().unwrap();
    }

    fn send_json(&mut self, json: &str) {
        let mut frame = (json.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(json.as_bytes());
        self.send_raw(&frame);
    }

    /// End of the client's input (the SSH channel's EOF).
    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Exactly `n` bytes of output; `None` if the output ends first.
    fn read_bytes(&mut self, n: usize) -> Option<Vec<u8>> {
        self.read_bytes_within(n, PATIENCE)
    }

    /// Exactly `n` bytes of output within `limit`; `None` if the output
    /// ends first.
    fn read_bytes_within(&mut self, n: usize, limit: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + limit;
        while self.buffered.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.chunks.recv_timeout(left) {
                Ok(chunk) => self.buffered.extend(chunk),
                Err(mpsc::RecvTimeoutError::Disconnected) => return None,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("no output within {limit:?}"),
            }
        }
        Some(self.buffered.drain(..n).collect())
    }

    fn read_frame(&mut self) -> Vec<u8> {
        let prefix = self.read_bytes(4).expect("output ended before a frame");
        let length = u32::from_be_bytes(prefix.try_into().unwrap()) as usize;
        self.read_bytes(length)
            .expect("output ended inside a frame")
    }

    fn response(&mut self) -> Response {
        decode_response(&self.read_frame()).unwrap()
    }

    /// The output has ended with nothing more in it.
    fn assert_output_ended(&mut self) {
        assert_eq!(self.read_bytes(1), None, "unexpected output after the end");
    }

    fn put(&mut self, validator: &str, file: &str, payload: &[u8]) -> Response {
        let header = Request::Put {
            validator: validator.into(),
            file: file.into(),
            bytes: payload.len() as u64,
            kind: Default::default(),
        };
        // One write: a relay that refuses the header may exit before a
        // second write would reach it.
        let mut bytes = encode_header(&header);
        bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        bytes.extend_from_slice(payload);
        self.send_raw(&bytes);
        self.response()
    }

    fn list(&mut self, validator: &str) -> Vec<String> {
        self.send_json(&format!(r#"{{"op":"list","validator":"{validator}"}}"#));
        let response = self.response();
        assert!(response.ok, "{response:?}");
        response.files.unwrap()
    }

    fn get(&mut self, validator: &str, file: &str) -> Result<Vec<u8>, ErrorKind> {
        self.send_raw(&encode_header(&Request::Get {
            validator: validator.into(),
            file: file.into(),
            kind: Default::default(),
        }));
        let response = self.response();
        if !response.ok {
            return Err(response.error.unwrap().kind);
        }
        let payload = self.read_frame();
        assert_eq!(Some(payload.len() as u64), response.bytes);
        Ok(payload)
    }

    fn remove(&mut self, validator: &str, file: &str) -> Response {
        self.send_raw(&encode_header(&Request::Remove {
            validator: validator.into(),
            file: file.into(),
            kind: Default::default(),
        }));
        self.response()
    }

    /// Waits for the process to exit (killing it after [`PATIENCE`]).
    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("backup-session did not exit; stderr: {}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn next_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn error_message(response: &Response) -> &str {
    &response.error.as_ref().unwrap().message
}

#[test]
fn put_list_get_remove_through_the_relay_on_one_session() {
    let bastion = Bastion::start("");
    let mut session = bastion.session("val-a");
    assert!(session.put("val-a", "b.age", b"second").ok);
    assert!(session.put("val-a", "a.age", b"first").ok);
    // Several 64 KiB pieces, and the largest payload allowed.
    let big: Vec<u8> = (0..MAX_PAYLOAD_BYTES / 2 + 17).map(|i| i as u8).collect();
    assert!(session.put("val-a", "big.age", &big).ok);
    let max = vec![0x5a; MAX_PAYLOAD_BYTES];
    assert!(session.put("val-a", "max.age", &max).ok);
    assert_eq!(
        session.list("val-a"),
        ["a.age", "b.age", "big.age", "max.age"]
    );
    assert_eq!(session.get("val-a", "a.age").unwrap(), b"first");
    assert_eq!(session.get("val-a", "big.age").unwrap(), big);
    assert_eq!(session.get("val-a", "max.age").unwrap(), max);
    assert_eq!(session.get("val-a", "nope.age"), Err(ErrorKind::NotFound));
    // The store's refusals that keep the connection open keep the session
    // open too.
    assert_eq!(
        kind(&session.put("val-a", "a.age", b"forgery")),
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        kind(&session.put("val-a", "../escape", b"x")),
        ErrorKind::InvalidName
    );
    assert!(session.remove("val-a", "max.age").ok);
    assert_eq!(session.list("val-a"), ["a.age", "b.age", "big.age"]);
    session.close_stdin();
    assert_eq!(session.wait().code(), Some(0), "{}", session.stderr());
    session.assert_output_ended();
    assert_eq!(
        std::fs::read(bastion.backups("val-a").join("b.age")).unwrap(),
        b"second"
    );

    // A fresh session (one per operation, as the supervisor does) sees the
    // same store; a session without requests ends cleanly.
    let mut session = bastion.session("val-a");
    assert_eq!(session.get("val-a", "b.age").unwrap(), b"second");
    session.close_stdin();
    assert_eq!(session.wait().code(), Some(0), "{}", session.stderr());
    let mut session = bastion.session("val-a");
    session.close_stdin();
    assert_eq!(session.wait().code(), Some(0), "{}", session.stderr());
    session.assert_output_ended();
    assert!(session.stderr().is_empty(), "{}", session.stderr());
}

#[test]
fn a_request_for_another_validator_is_refused_and_ends_the_session() {
    let bastion = Bastion::start("");
    let mut session = bastion.session("val-a");
    assert!(session.list("val-a").is_empty());
    let refused = session.put("val-b", "planted.age", b"payload");
    assert_eq!(kind(&refused), ErrorKind::UnknownValidator);
    assert_eq!(
        error_message(&refused),
        "this key may only access the backups of val-a"
    );
    assert!(!session.wait().success());
    session.assert_output_ended();
    assert!(
        session
            .stderr()
            .contains("may only access the backups of val-a"),
        "{}",
        session.stderr()
    );
    assert!(
        bastion.stored("val-b").is_empty(),
        "nothing stored for val-b"
    );

    // Reading or deleting another validator's backups is refused the same
    // way, whatever comes first.
    let mut as_b = bastion.session("val-b");
    assert!(as_b.put("val-b", "real.age", b"b's own").ok);
    as_b.close_stdin();
    assert_eq!(as_b.wait().code(), Some(0), "{}", as_b.stderr());
    let intrusions = [
        Request::List {
            validator: "val-b".into(),
            kind: Default::default(),
            after: None,
        },
        Request::Get {
            validator: "val-b".into(),
            file: "real.age".into(),
            kind: Default::default(),
        },
        Request::Remove {
            validator: "val-b".into(),
            file: "real.age".into(),
            kind: Default::default(),
        },
    ];
    for request in intrusions {
        let mut session = bastion.session("val-a");
        session.send_raw(&encode_header(&request));
        let response = session.response();
        assert_eq!(kind(&response), ErrorKind::UnknownValidator, "{request:?}");
        assert_eq!(session.wait().code(), Some(1), "{request:?}");
        session.assert_output_ended();
    }
    assert_eq!(bastion.stored("val-b"), ["real.age"]);
}

#[test]
fn an_unconfigured_validator_gets_an_error_response_and_exit_1() {
    let bastion = Bastion::start("");
    let mut session = bastion.session("val-z");
    let response = session.response();
    assert_eq!(kind(&response), ErrorKind::UnknownValidator);
    assert!(error_message(&response).contains("val-z"), "{response:?}");
    assert_eq!(session.wait().code(), Some(1));
    session.assert_output_ended();
    assert!(
        session
            .stderr()
            .contains("validator \"val-z\" is not configured on this bastion"),
        "{}",
        session.stderr()
    );
}

#[test]
fn a_store_that_is_not_running_gets_an_internal_error_and_exit_1() {
    let bastion = Bastion::configured("");
    let mut session = bastion.session("val-a");
    // The relay connects to the store once it holds the first request.
    session.send_json(r#"{"op":"list","validator":"val-a"}"#);
    let response = session.response();
    assert_eq!(kind(&response), ErrorKind::Internal);
    assert!(
        error_message(&response).starts_with("backup store not running on this bastion: "),
        "{response:?}"
    );
    assert_eq!(session.wait().code(), Some(1));
    session.assert_output_ended();
    assert!(
        session.stderr().contains("backup store not running"),
        "{}",
        session.stderr()
    );
}

#[test]
fn an_unusable_configuration_gets_an_internal_error_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bastion.toml");
    std::fs::write(&config, "listen-socket = \"relative.sock\"\n").unwrap();
    let mut session = Session::spawn(&config, "val-a", dir.path());
    assert_eq!(kind(&session.response()), ErrorKind::Internal);
    assert_eq!(session.wait().code(), Some(1));
    assert!(
        session.stderr().contains("invalid configuration"),
        "{}",
        session.stderr()
    );
}

#[test]
fn malformed_and_oversized_frames_are_refused_and_end_the_session() {
    let bastion = Bastion::start("");
    let put = |bytes: usize| {
        encode_header(&Request::Put {
            validator: "val-a".into(),
            file: "x.age".into(),
            bytes: bytes as u64,
            kind: Default::default(),
        })
    };
    let mut wrong_length = put(3);
    wrong_length.extend(4u32.to_be_bytes());
    wrong_length.extend(b"four");
    let frame = |json: &str| {
        let mut frame = (json.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(json.as_bytes());
        frame
    };
    let rows: Vec<(&str, Vec<u8>, ErrorKind)> = vec![
        (
            "9 KiB header",
            (9 * 1024u32).to_be_bytes().to_vec(),
            ErrorKind::TooLarge,
        ),
        (
            "4 GiB header",
            u32::MAX.to_be_bytes().to_vec(),
            ErrorKind::TooLarge,
        ),
        (
            "payload over the limit",
            put(MAX_PAYLOAD_BYTES + 1),
            ErrorKind::TooLarge,
        ),
        ("garbage", frame("not json at all"), ErrorKind::BadFrame),
        (
            "unknown op",
            frame(r#"{"op":"format","validator":"val-a"}"#),
            ErrorKind::BadFrame,
        ),
        (
            "unknown field",
            frame(r#"{"op":"list","validator":"val-a","extra":true}"#),
            ErrorKind::BadFrame,
        ),
        ("payload length differs", wrong_length, ErrorKind::BadFrame),
    ];
    for (what, bytes, expected) in rows {
        let mut session = bastion.session("val-a");
        session.send_raw(&bytes);
        assert_eq!(kind(&session.response()), expected, "{what}");
        assert_eq!(session.wait().code(), Some(1), "{what}");
        session.assert_output_ended();
    }
    assert!(bastion.stored("val-a").is_empty());
}

#[test]
fn input_ending_inside_a_request_stores_nothing() {
    let bastion = Bastion::start("");

    // Inside a payload: the store gets an incomplete upload and discards it.
    let mut session = bastion.session("val-a");
    assert!(session.put("val-a", "kept.age", b"complete").ok);
    session.send_raw(&encode_header(&Request::Put {
        validator: "val-a".into(),
        file: "partial.age".into(),
        bytes: 200_000,
        kind: Default::default(),
    }));
    session.send_raw(&200_000u32.to_be_bytes());
    session.send_raw(&vec![7u8; 100_000]);
    session.close_stdin();
    assert_eq!(kind(&session.response()), ErrorKind::BadFrame);
    assert_eq!(session.wait().code(), Some(1));
    session.assert_output_ended();
    assert_eq!(
        bastion.stored("val-a"),
        ["kept.age"],
        "no partial or temporary file"
    );

    // Inside a header, or before the payload frame: nothing is forwarded.
    let header = encode_header(&Request::Put {
        validator: "val-a".into(),
        file: "partial.age".into(),
        bytes: 10,
        kind: Default::default(),
    });
    for cut in [&header[..2], &header[..header.len() - 1], &header[..]] {
        let mut session = bastion.session("val-a");
        session.send_raw(cut);
        session.close_stdin();
        assert_eq!(kind(&session.response()), ErrorKind::BadFrame);
        assert_eq!(session.wait().code(), Some(1));
        session.assert_output_ended();
    }
    assert_eq!(bastion.stored("val-a"), ["kept.age"]);
}

#[test]
fn a_silent_or_stalled_client_is_cut_off() {
    let bastion =
        Bastion::start("[backups]\nidle-timeout = \"300ms\"\nheader-timeout = \"300ms\"\n");

    let started = Instant::now();
    let mut silent = bastion.session("val-a");
    assert_eq!(silent.wait().code(), Some(1));
    silent.assert_output_ended();

    let mut stalled = bastion.session("val-a");
    assert!(stalled.list("val-a").is_empty());
    let header = br#"{"op":"list","validator":"val-a"}"#;
    stalled.send_raw(&(header.len() as u32).to_be_bytes());
    stalled.send_raw(&header[..10]);
    assert_eq!(stalled.wait().code(), Some(1));
    stalled.assert_output_ended();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_client_that_stops_reading_is_cut_off_by_the_relay() {
    let bastion = Bastion::start("[backups]\nidle-timeout = \"300ms\"\n");
    let big = vec![1u8; MAX_PAYLOAD_BYTES];
    let mut direct = common::Client::connect(&bastion.dir.path().join("run/bastion.sock"));
    assert!(direct.put("val-a", "big.age", &big).ok);
    drop(direct);

    // stdout is a pipe nobody reads: the relay blocks writing the response,
    // nothing moves, and its own idle bound (idle-timeout + 2 s) ends it.
    let mut child = Command::new(BIN)
        .arg("backup-session")
        .arg("--config")
        .arg(&bastion.config)
        .arg("--validator")
        .arg("val-a")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(&encode_header(&Request::Get {
            validator: "val-a".into(),
            file: "big.age".into(),
            kind: Default::default(),
        }))
        .unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > PATIENCE {
            let _ = child.kill();
            panic!("backup-session did not give up on a client that does not read");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let waited = started.elapsed();
    assert_eq!(status.code(), Some(1));
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(stderr.contains("backup session idle"), "{stderr}");
}

/// Regression (hardening review, finding 14): one validator's key held
/// every store connection (sessions that sent nothing, idle sessions, slow
/// `get`s), and another validator's backups timed out. Now a session holds
/// a store connection only from its first request, each validator holds at
/// most `max-connections-per-validator`, and the other validator's `list`
/// answers at once.
#[test]
fn one_validator_holding_every_connection_it_can_does_not_starve_another() {
    let bastion =
        Bastion::start("[backups]\nmax-connections = 6\nmax-connections-per-validator = 2\n");
    let big = vec![7u8; MAX_PAYLOAD_BYTES];
    let socket = bastion.dir.path().join("run/bastion.sock");
    assert!(
        common::Client::connect(&socket)
            .put("val-a", "big.age", &big)
            .ok
    );

    // val-a's key, as hard as it can: sessions that made a request and then
    // idle, holding their connection (those beyond the cap are refused
    // `busy`) ...
    let mut idle = Vec::new();
    let mut busy = 0;
    for _ in 0..6 {
        let mut session = bastion.session("val-a");
        session.send_json(r#"{"op":"list","validator":"val-a"}"#);
        let response = session.response();
        if response.ok {
            idle.push(session);
        } else {
            assert_eq!(kind(&response), ErrorKind::Busy, "{response:?}");
            busy += 1;
        }
    }
    // ... sessions that send nothing ...
    let silent: Vec<Session> = (0..6).map(|_| bastion.session("val-a")).collect();
    std::thread::sleep(Duration::from_millis(200));
    // ... and slow `get`s that never read the bundle.
    let slow: Vec<common::Client> = (0..6)
        .map(|_| {
            let mut client = common::Client::connect(&socket);
            client.send_raw(&encode_header(&Request::Get {
                validator: "val-a".into(),
                file: "big.age".into(),
                kind: Default::default(),
            }));
            client
        })
        .collect();

    let started = Instant::now();
    let mut other = bastion.session("val-b");
    other.send_json(r#"{"op":"list","validator":"val-b"}"#);
    let prefix = other.read_bytes_within(4, Duration::from_secs(1)).unwrap();
    let length = u32::from_be_bytes(prefix.try_into().unwrap()) as usize;
    let body = other.read_bytes(length).unwrap();
    assert!(decode_response(&body).unwrap().ok);
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(1), "val-b waited {waited:?}");
    assert_eq!((idle.len(), busy), (2, 4), "two connections per validator");
    drop((silent, idle, slow));
}
