//! `palisade-bastion serve-backups` end to end: the real binary, a temporary
//! configuration, and raw protocol frames written by hand the way a client
//! (or an attacker with the validator's tunnel) would.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Client, kind, mode, wait_for_socket};
use palisade_wire::backup_store::{ErrorKind, MAX_PAYLOAD_BYTES};

struct Bastion {
    dir: tempfile::TempDir,
    child: Child,
}

impl Bastion {
    fn start(extra: &[&str]) -> Bastion {
        let dir = tempfile::tempdir().unwrap();
        let bastion = Bastion {
            child: spawn(dir.path(), extra),
            dir,
        };
        wait_for_socket(&bastion.socket());
        bastion
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("run/bastion.sock")
    }

    fn backups(&self) -> PathBuf {
        self.dir.path().join("backups")
    }

    fn client(&self) -> Client {
        Client::connect(&self.socket())
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }
}

impl Drop for Bastion {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(dir: &Path, extra: &[&str]) -> Child {
    let config = dir.join("bastion.toml");
    std::fs::write(
        &config,
        format!(
            "listen-socket = \"{0}/run/bastion.sock\"\n\
             backup-dir = \"{0}/backups\"\n\
             [[validator]]\nname = \"val-a\"\nsocket = \"{0}/run/val-a.sock\"\n\
             [[validator]]\nname = \"val-b\"\nsocket = \"{0}/run/val-b.sock\"\n",
            dir.display()
        ),
    )
    .unwrap();
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("stderr.log"))
        .unwrap();
    Command::new(BIN)
        .arg("serve-backups")
        .arg("--config")
        .arg(&config)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

#[test]
fn put_list_get_remove_round_trip() {
    let bastion = Bastion::start(&[]);
    assert_eq!(mode(&bastion.socket()), 0o600);
    assert_eq!(mode(bastion.socket().parent().unwrap()), 0o700);

    let mut client = bastion.client();
    assert!(client.put("val-a", "b.age", b"second").ok);
    assert!(client.put("val-a", "a.age", b"first").ok);
    let empty: &[u8] = b"";
    assert!(client.put("val-a", "empty.age", empty).ok);
    assert_eq!(client.list("val-a"), ["a.age", "b.age", "empty.age"]);
    assert!(client.list("val-b").is_empty(), "validators are separate");
    assert_eq!(client.get("val-a", "a.age").unwrap(), b"first");
    assert_eq!(client.get("val-a", "empty.age").unwrap(), empty);
    assert_eq!(client.get("val-b", "a.age"), Err(ErrorKind::NotFound));

    let dir = bastion.backups().join("val-a");
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("a.age")), 0o600);
    assert_eq!(std::fs::read(dir.join("b.age")).unwrap(), b"second");

    // A fresh connection sees the same store.
    let mut other = bastion.client();
    assert!(other.remove("val-a", "a.age").ok);
    assert_eq!(kind(&other.remove("val-a", "a.age")), ErrorKind::NotFound);
    assert_eq!(other.get("val-a", "a.age"), Err(ErrorKind::NotFound));
    assert_eq!(client.list("val-a"), ["b.age", "empty.age"]);
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn overwrite_is_refused_and_the_original_kept() {
    let bastion = Bastion::start(&[]);
    let mut client = bastion.client();
    assert!(client.put("val-a", "x.age", b"original").ok);
    let refused = client.put("val-a", "x.age", b"forgery");
    assert_eq!(kind(&refused), ErrorKind::AlreadyExists);
    // The connection is still in step.
    assert_eq!(client.get("val-a", "x.age").unwrap(), b"original");
}

#[test]
fn bad_names_are_refused_and_nothing_escapes() {
    let bastion = Bastion::start(&[]);
    let mut client = bastion.client();
    let long = "a".repeat(256);
    for name in [
        "",
        ".hidden",
        "a/b",
        "../escape",
        "..",
        "a\\b",
        "tab\there",
        &long,
    ] {
        let response = client.put("val-a", name, b"payload");
        assert_eq!(kind(&response), ErrorKind::InvalidName, "{name:?}");
    }
    assert_eq!(client.get("val-a", "../val-b"), Err(ErrorKind::InvalidName));
    assert_eq!(kind(&client.remove("val-a", ".")), ErrorKind::InvalidName);
    assert!(client.list("val-a").is_empty());
    assert!(!bastion.backups().join("escape").exists());
    assert!(client.put("val-a", &"a".repeat(255), b"ok").ok);
}

#[test]
fn unknown_validators_are_refused() {
    let bastion = Bastion::start(&[]);
    let mut client = bastion.client();
    for validator in ["val-c", "", "..", "../backups", "val-a/..", "VAL-A"] {
        let response = client.put(validator, "x.age", b"payload");
        assert_eq!(
            kind(&response),
            ErrorKind::UnknownValidator,
            "{validator:?}"
        );
    }
    client.send_json(r#"{"op":"list","validator":"nobody"}"#);
    assert_eq!(kind(&client.response()), ErrorKind::UnknownValidator);
    assert_eq!(
        client.get("nobody", "x.age"),
        Err(ErrorKind::UnknownValidator)
    );
    let entries: Vec<_> = std::fs::read_dir(bastion.backups())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut entries = entries;
    entries.sort();
    assert_eq!(entries, ["val-a", "val-b"]);
}

#[test]
fn oversized_header_and_payload_are_refused_and_the_server_keeps_serving() {
    let bastion = Bastion::start(&[]);

    let mut client = bastion.client();
    client.send_raw(&(9 * 1024u32).to_be_bytes());
    assert_eq!(kind(&client.response()), ErrorKind::TooLarge);
    assert!(client.is_closed());

    let mut client = bastion.client();
    client.send_raw(&u32::MAX.to_be_bytes());
    assert_eq!(kind(&client.response()), ErrorKind::TooLarge);

    let mut client = bastion.client();
    client.send_json(&format!(
        r#"{{"op":"put","validator":"val-a","file":"big.age","bytes":{}}}"#,
        MAX_PAYLOAD_BYTES + 1
    ));
    assert_eq!(kind(&client.response()), ErrorKind::TooLarge);
    assert!(client.is_closed());

    // A payload frame longer than announced.
    let mut client = bastion.client();
    client.send_json(r#"{"op":"put","validator":"val-a","file":"liar.age","bytes":3}"#);
    client.send_payload(b"more than three");
    assert_eq!(kind(&client.response()), ErrorKind::BadFrame);

    // The largest allowed payload is accepted.
    let mut client = bastion.client();
    let big = vec![0x5a; MAX_PAYLOAD_BYTES];
    assert!(client.put("val-a", "max.age", &big).ok);
    assert_eq!(
        client.get("val-a", "max.age").unwrap().len(),
        MAX_PAYLOAD_BYTES
    );
    assert_eq!(client.list("val-a"), ["max.age"]);
}

#[test]
fn garbage_frames_are_bad_frames() {
    let bastion = Bastion::start(&[]);
    for garbage in [
        "not json at all",
        r#"{"op":"list","validator":"val-a","extra":true}"#,
        r#"{"op":"format","validator":"val-a"}"#,
        r#"{"op":"get","validator":"val-a"}"#,
        r#"["list"]"#,
        "",
    ] {
        let mut client = bastion.client();
        client.send_json(garbage);
        assert_eq!(kind(&client.response()), ErrorKind::BadFrame, "{garbage:?}");
        assert!(client.is_closed(), "{garbage:?}");
    }
    // An absurd length prefix: the store answers too_large and closes, so
    // the rest of the bytes may meet a closed socket (EPIPE) — that is the
    // expected outcome, not a test failure.
    let mut client = bastion.client();
    client.send_raw(&[0xff, 0xfe, 0, 0]);
    assert_eq!(kind(&client.response()), ErrorKind::TooLarge);
    assert!(client.is_closed());
    drop(client);
    assert!(bastion.client().list("val-a").is_empty(), "still serving");
}

#[test]
fn a_slowloris_client_is_cut_off_while_others_are_served() {
    let bastion = Bastion::start(&["--idle-timeout-ms", "500", "--header-timeout-ms", "500"]);
    let mut slow = bastion.client();
    let header = br#"{"op":"list","validator":"val-a"}"#;
    slow.send_raw(&(header.len() as u32).to_be_bytes());
    slow.send_raw(&header[..10]);

    let started = Instant::now();
    let mut other = bastion.client();
    assert!(other.put("val-a", "x.age", b"served").ok);
    assert!(started.elapsed() < Duration::from_millis(450));

    assert!(slow.is_closed());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    // An idle connection between requests is closed too.
    let mut idle = bastion.client();
    assert_eq!(idle.list("val-a"), ["x.age"]);
    assert!(idle.is_closed());
}

#[test]
fn retention_keeps_the_newest_files() {
    let bastion = Bastion::start(&["--keep", "3"]);
    let mut client = bastion.client();
    // Arrival order, not name order, decides what is newest.
    for name in ["e.age", "d.age", "c.age", "b.age", "a.age"] {
        assert!(client.put("val-a", name, name.as_bytes()).ok, "{name}");
        std::thread::sleep(Duration::from_millis(30));
    }
    assert_eq!(client.list("val-a"), ["a.age", "b.age", "c.age"]);
    assert!(client.put("val-b", "z.age", b"z").ok, "per validator");
    assert_eq!(client.list("val-a").len(), 3);
}

#[test]
fn quota_refuses_what_retention_cannot_make_room_for() {
    let bastion = Bastion::start(&["--keep", "2", "--quota-bytes", "1000"]);
    let mut client = bastion.client();
    let chunk = vec![1u8; 400];
    for name in ["1.age", "2.age", "3.age"] {
        assert!(client.put("val-a", name, &chunk).ok, "{name}");
        std::thread::sleep(Duration::from_millis(30));
    }
    // Retention dropped 1.age; 2 + 3 = 800 bytes.
    assert_eq!(client.list("val-a"), ["2.age", "3.age"]);
    // Retention would drop 2.age, but 3 + 4 = 1300 > 1000.
    let refused = client.put("val-a", "4.age", &vec![2u8; 900]);
    assert_eq!(kind(&refused), ErrorKind::Quota);
    assert_eq!(client.list("val-a"), ["2.age", "3.age"], "nothing changed");
    let refused = client.put("val-a", "huge.age", &vec![3u8; 1001]);
    assert_eq!(kind(&refused), ErrorKind::Quota);
    // A file that fits after retention is accepted.
    assert!(client.put("val-a", "5.age", &vec![4u8; 600]).ok);
    assert_eq!(client.list("val-a"), ["3.age", "5.age"]);
}

#[test]
fn sigterm_shuts_down_cleanly_and_a_stale_socket_is_replaced() {
    let mut bastion = Bastion::start(&[]);
    assert!(bastion.client().put("val-a", "kept.age", b"x").ok);

    // A second instance must not steal a live socket.
    let second = Command::new(BIN)
        .arg("serve-backups")
        .arg("--config")
        .arg(bastion.dir.path().join("bastion.toml"))
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another process is listening"),
        "{second:?}"
    );

    let pid = bastion.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = bastion.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", bastion.stderr());
    assert!(!bastion.socket().exists(), "socket removed on shutdown");

    // Killed hard, the socket stays behind; the next start replaces it.
    bastion.child = spawn(bastion.dir.path(), &[]);
    wait_for_socket(&bastion.socket());
    bastion.child.kill().unwrap();
    bastion.child.wait().unwrap();
    assert!(bastion.socket().exists());
    bastion.child = spawn(bastion.dir.path(), &[]);
    wait_for_socket(&bastion.socket());
    assert_eq!(bastion.client().list("val-a"), ["kept.age"]);
}

#[test]
fn a_second_instance_leaves_the_running_ones_uploads_alone() {
    let bastion = Bastion::start(&[]);
    // An upload in flight in the running instance.
    let in_flight = bastion.backups().join("val-a/.tmp-4242-0");
    std::fs::write(&in_flight, b"half a bundle").unwrap();

    for command in ["serve-backups", "run"] {
        let second = Command::new(BIN)
            .arg(command)
            .arg("--config")
            .arg(bastion.dir.path().join("bastion.toml"))
            .output()
            .unwrap();
        assert_eq!(second.status.code(), Some(1), "{command}: {second:?}");
        assert!(
            in_flight.exists(),
            "{command} removed the first one's temporary file"
        );
    }
    assert!(
        bastion.client().put("val-a", "x.age", b"x").ok,
        "still serving"
    );
}

/// Regression (hardening review, finding 14): connections were taken before
/// any header arrived and kept for the idle timeout, so connections that
/// sent nothing filled the pool. Now a connection's first header must
/// arrive within the (short) header timeout, or it is closed and its slot
/// freed for the next client.
#[test]
fn a_connection_that_never_sends_its_header_is_closed_after_the_header_timeout() {
    let bastion = Bastion::start(&[
        "--max-connections",
        "2",
        "--idle-timeout-ms",
        "30000",
        "--header-timeout-ms",
        "300",
    ]);
    let started = Instant::now();
    let mut silent: Vec<Client> = (0..2).map(|_| bastion.client()).collect();
    // The pool is full of silent connections; the next client waits in the
    // backlog until the header timeout frees a slot.
    let mut next = bastion.client();
    assert!(next.list("val-a").is_empty());
    let served = started.elapsed();
    for client in &mut silent {
        assert!(client.is_closed());
    }
    assert!(
        served >= Duration::from_millis(250) && served < Duration::from_secs(3),
        "served after {served:?}: silent connections kept their slots"
    );
    assert!(bastion.stderr().contains("sent no request in time"));
}

/// The daemon's memory, from /proc: (VmRSS, VmHWM) in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Regression (hardening review, finding 14): `get` read the whole bundle
/// into memory, so slow readers raised the daemon's RSS by a bundle each
/// (8 MB to 74 MB with four). Now a `get` streams the file in 64 KiB
/// chunks: 32 readers that never read the payload cost far less than one
/// bundle each.
#[test]
fn slow_gets_do_not_hold_whole_bundles_in_memory() {
    const READERS: usize = 32;
    let bastion = Bastion::start(&[
        "--max-connections",
        "64",
        "--max-connections-per-validator",
        "64",
    ]);
    let big = vec![0x42; MAX_PAYLOAD_BYTES];
    let mut client = bastion.client();
    assert!(client.put("val-a", "big.age", &big).ok);
    // Warm up every path once (a complete get) before measuring.
    assert_eq!(client.get("val-a", "big.age").unwrap(), big);
    drop(client);
    let pid = bastion.child.id();
    let (rss_before, hwm_before) = memory_kib(pid);

    let mut readers: Vec<Client> = (0..READERS).map(|_| bastion.client()).collect();
    for reader in &mut readers {
        reader.send_json(r#"{"op":"get","validator":"val-a","file":"big.age"}"#);
    }
    // Every response header is out, so the store has opened (or, before
    // the fix, read) the bundle for every reader; none reads the payload.
    for reader in &mut readers {
        let response = reader.response();
        assert_eq!(response.bytes, Some(MAX_PAYLOAD_BYTES as u64));
    }
    std::thread::sleep(Duration::from_millis(500));
    let (rss_during, hwm_during) = memory_kib(pid);
    let grown_kib = (rss_during.saturating_sub(rss_before)).max(hwm_during - hwm_before);
    let bundle_kib = (MAX_PAYLOAD_BYTES / 1024) as u64;
    assert!(
        grown_kib < bundle_kib * READERS as u64 / 4,
        "{READERS} stalled gets of a {bundle_kib} KiB bundle grew the store by {grown_kib} KiB \
         (RSS {rss_before} -> {rss_during} KiB, peak {hwm_before} -> {hwm_during} KiB)"
    );
    // The readers still get the whole bundle, streamed.
    for reader in &mut readers {
        assert_eq!(reader.read_frame(), big);
    }
}
