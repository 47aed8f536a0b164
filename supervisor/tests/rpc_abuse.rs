//! The control RPC under abuse, against the real `palisade-supervisor` on
//! the simulated chain: floods of malformed lines, oversized frames,
//! seeded random garbage, slowloris connections, TLS ClientHellos, 1000
//! idle connections held open and connections closed mid-line, all at once
//! for [`ABUSE`]. Meanwhile the real `palisade-ctl status --json` keeps
//! answering, and afterwards the chain's record shows that the validator
//! missed no block and signed nothing twice, the supervisor still runs and
//! answers, and its memory stayed bounded.
//!
//! The test runs as root, so every connection it makes is a trusted local
//! user's (`docs/rpc.md` §1): plaintext is allowed and no login is needed.
//! That is the harshest case for the server — every frame reaches the
//! JSON-RPC layer and valid ones reach the dispatcher — and the transport
//! limits (slots, idle timeout, line limit) apply to it all the same.
//!
//! The idle timeout is lowered to [`IDLE`] (the default is 60 s): it is the
//! server's only defence against idle and slow connections, and at most
//! 64 connections are served at once, so a legitimate call waits behind
//! every connection queued before it, each holding a slot for up to the
//! idle timeout. The bound on a legitimate call is computed from that
//! ([`legit_bound`]). With the default timeout the same 1000 idle
//! connections would hold a legitimate call for about 1000 / 64 × 60 s ≈
//! 16 min, far past `palisade-ctl`'s 10 s connect bound: a limit of the
//! server's design (one slot per connection, one timeout for the first
//! byte and for a whole line), not of this test.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::timing::{LONG, SLOW_BLOCK};
use common::{RawRpc, VaultRpc};
use palisade_wire::rpc::{MAX_LINE_BYTES, Response, code};
use serde_json::{Value, json};

const PASSPHRASE: &str = "rpc abuse passphrase";
/// `[rpc] idle-timeout` for this test (see the module comment).
const IDLE: Duration = Duration::from_millis(300);
/// How long the abuse lasts.
const ABUSE: Duration = Duration::from_secs(12);
/// Idle connections held open (reopened as soon as the server closes one).
const IDLE_CONNECTIONS: usize = 1000;
/// The server's connection slots (`palisade_supervisor::rpc::MAX_CONNECTIONS`).
const SLOTS: usize = palisade_supervisor::rpc::MAX_CONNECTIONS;
/// Seed of the random garbage: a failure reproduces with the same bytes.
const SEED: u64 = 0x5eed_ab05e;
/// Allowed growth of the supervisor's resident memory over its unlocked,
/// idle baseline while under abuse. At most 64 connections are served at
/// once (the rest wait in the kernel's listen backlog, which costs the
/// process nothing); each holds at most a 64 KiB line buffer, a 4 KiB read
/// chunk, one response being written (≤ 64 KiB) and, while handshaking, a
/// TLS session (tens of KiB): about 64 × 180 KiB ≈ 11.5 MiB. Doubled for
/// allocator slack: 24 MiB. Tens of thousands of frames and thousands of
/// connections pass during the test, so a leak per connection or per
/// frame of even a few hundred bytes would exceed it.
const RSS_GROWTH_BOUND_KIB: u64 = 24 * 1024;

/// The longest a legitimate call may take while the abuse runs: one slot
/// turn per 64 connections queued before it (the idle holders and every
/// other abuser), each turn up to the idle timeout, plus slack for the
/// process start of `palisade-ctl` and a loaded 2-core machine.
fn legit_bound() -> Duration {
    let queued = IDLE_CONNECTIONS + 64;
    IDLE * (queued.div_ceil(SLOTS) as u32 + 2) + Duration::from_secs(2)
}

/// What the abusers saw; checked once they have all stopped.
#[derive(Default)]
struct Tally {
    failures: Mutex<Vec<String>>,
    malformed_sent: AtomicU64,
    malformed_answered: AtomicU64,
    valid_answered: AtomicU64,
    oversized_closed: AtomicU64,
    garbage_lines: AtomicU64,
    garbage_answered: AtomicU64,
    slowloris_cut: AtomicU64,
    slowloris_longest_ms: AtomicU64,
    tls_server_hellos: AtomicU64,
    tls_midsession: AtomicU64,
    closed_mid_line: AtomicU64,
    idle_opened: AtomicU64,
    idle_closed_by_server: AtomicU64,
    idle_held_max: AtomicU64,
    longest_response_line: AtomicU64,
}

impl Tally {
    fn fail(&self, message: String) {
        let mut failures = self.failures.lock().unwrap();
        if failures.len() < 20 {
            failures.push(message);
        }
    }

    /// Parse a response line and check it is JSON-RPC 2.0 with exactly one
    /// of result and error, the error carrying a documented code.
    fn response(&self, line: &str, context: &str) -> Option<Response> {
        self.longest_response_line
            .fetch_max(line.len() as u64 + 1, Ordering::Relaxed);
        let response: Response = match serde_json::from_str(line) {
            Ok(response) => response,
            Err(error) => {
                self.fail(format!(
                    "{context}: not a JSON-RPC response ({error}): {:?}",
                    clip(line)
                ));
                return None;
            }
        };
        if response.jsonrpc != "2.0" || response.result.is_some() == response.error.is_some() {
            self.fail(format!("{context}: malformed response {:?}", clip(line)));
            return None;
        }
        if let Some(error) = &response.error
            && !code::ALL.contains(&error.code)
        {
            self.fail(format!(
                "{context}: undocumented code {}: {:?}",
                error.code,
                clip(line)
            ));
        }
        Some(response)
    }
}

fn clip(text: &str) -> String {
    text.chars().take(200).collect()
}

/// A connection that has read its greeting, or `None` (counted as a
/// failure) when the server does not greet within `wait`.
fn greeted(socket: &Path, wait: Duration, tally: &Tally, who: &str) -> Option<RawRpc> {
    match RawRpc::connect(socket, wait) {
        Ok(connection) => Some(connection),
        Err(error) => {
            tally.fail(format!("{who}: no greeting within {wait:?}: {error}"));
            None
        }
    }
}

/// How long an abuser waits for its greeting: it queues behind the idle
/// connections like everyone else.
fn greeting_wait() -> Duration {
    legit_bound() + Duration::from_secs(5)
}

// ------------------------------------------------------------ the frames

/// What the server must answer to one malformed (or valid) line.
struct Frame {
    line: Vec<u8>,
    /// `None`: a result; `Some(code)`: that error.
    code: Option<i64>,
    /// `None`: any id; `Some(id)`: exactly this id (`null` for frames that
    /// are not valid requests).
    id: Option<Value>,
}

fn frame(line: impl Into<Vec<u8>>, code: Option<i64>, id: Option<Value>) -> Frame {
    Frame {
        line: line.into(),
        code,
        id,
    }
}

/// Lines that are not JSON, have wrong types or unknown fields, huge ids,
/// deep nesting, invalid UTF-8 or NUL bytes — plus calls with bad params to
/// methods that would change something if the params were not refused,
/// and a valid read-only call to prove the connection still works. No line
/// contains a newline; every one gets one answer and none closes the
/// connection.
fn malformed_frames() -> Vec<Frame> {
    let null = Some(Value::Null);
    let parse = Some(code::PARSE_ERROR);
    let invalid = Some(code::INVALID_REQUEST);
    let params = Some(code::INVALID_PARAMS);
    let long_id = "i".repeat(30_000);
    let too_long_id = "j".repeat(65_470);
    let mut frames = vec![
        frame("not json", parse, null.clone()),
        frame("{", parse, null.clone()),
        frame("", parse, null.clone()),
        frame("   \t ", parse, null.clone()),
        frame("[1,2,3]", invalid, null.clone()),
        frame("null", invalid, null.clone()),
        frame("\"status\"", invalid, null.clone()),
        frame("{}", invalid, null.clone()),
        frame(
            r#"{"jsonrpc":"2.0","id":1,"method":7}"#,
            invalid,
            null.clone(),
        ),
        frame(
            r#"{"jsonrpc":2,"id":1,"method":"status"}"#,
            invalid,
            null.clone(),
        ),
        frame(
            r#"{"jsonrpc":"1.0","id":1,"method":"status"}"#,
            invalid,
            null.clone(),
        ),
        frame(
            r#"{"jsonrpc":"2.0","id":true,"method":"status"}"#,
            invalid,
            null.clone(),
        ),
        frame(
            r#"{"jsonrpc":"2.0","id":null,"method":"status"}"#,
            invalid,
            null.clone(),
        ),
        frame(
            r#"{"jsonrpc":"2.0","id":{"deep":[1]},"method":"status"}"#,
            invalid,
            null.clone(),
        ),
        frame(
            r#"{"jsonrpc":"2.0","id":1,"method":"status","extra":true}"#,
            invalid,
            null.clone(),
        ),
        frame(
            r#"{"jsonrpc":"2.0","method":"tunnel.list"}"#,
            invalid,
            null.clone(),
        ),
        // Numbers serde cannot hold.
        frame(
            r#"{"jsonrpc":"2.0","id":1e400,"method":"status"}"#,
            parse,
            null.clone(),
        ),
        frame(
            r#"{"jsonrpc":"2.0","id":4,"method":"logs.tail","params":{"lines":1e400}}"#,
            parse,
            null.clone(),
        ),
        // Huge ids are echoed.
        frame(
            r#"{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"no.such.method"}"#,
            Some(code::METHOD_NOT_FOUND),
            None,
        ),
        frame(
            format!(r#"{{"jsonrpc":"2.0","id":"{long_id}","method":"no.such.method"}}"#),
            Some(code::METHOD_NOT_FOUND),
            Some(json!(long_id)),
        ),
        // A request just under the line limit whose answer (echoing the
        // id) would be over it: replaced by −32010 with id null, the only
        // answer that fits the limit (§1).
        frame(
            format!(r#"{{"jsonrpc":"2.0","id":"{too_long_id}","method":"no.such.method"}}"#),
            Some(code::INTERNAL),
            Some(Value::Null),
        ),
        frame(
            r#"{"jsonrpc":"2.0","id":-0.0,"method":"failover.start"}"#,
            Some(code::METHOD_NOT_FOUND),
            None,
        ),
        // Nesting past serde's recursion limit, and within it.
        frame(
            format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
            parse,
            null.clone(),
        ),
        frame(
            format!(
                r#"{{"jsonrpc":"2.0","id":2,"method":"logs.tail","params":{}1{}}}"#,
                r#"{"a":"#.repeat(100),
                "}".repeat(100)
            ),
            params,
            Some(json!(2)),
        ),
        // Wrong types and unknown fields in params.
        frame(
            r#"{"jsonrpc":"2.0","id":3,"method":"logs.tail","params":{"lines":"many"}}"#,
            params,
            Some(json!(3)),
        ),
        frame(
            r#"{"jsonrpc":"2.0","id":5,"method":"logs.tail","params":{"lines":-1}}"#,
            params,
            Some(json!(5)),
        ),
        frame(
            r#"{"jsonrpc":"2.0","id":6,"method":"status","params":[1]}"#,
            params,
            Some(json!(6)),
        ),
        // Would stop the node or lock the vault if bad params got through:
        // the missed-block check below would see it.
        frame(
            r#"{"jsonrpc":"2.0","id":7,"method":"node.stop","params":{"force":true}}"#,
            params,
            Some(json!(7)),
        ),
        frame(
            r#"{"jsonrpc":"2.0","id":8,"method":"vault.lock","params":[true]}"#,
            params,
            Some(json!(8)),
        ),
        frame(
            r#"{"jsonrpc":"2.0","id":9,"method":"tunnel.reconnect","params":{"bastion":7}}"#,
            params,
            Some(json!(9)),
        ),
        // Invalid UTF-8, a byte-order mark, lone surrogates, NUL bytes.
        frame(b"\xff\xfe\xfd".to_vec(), parse, null.clone()),
        frame(
            b"{\"jsonrpc\":\"2.0\",\"id\":10,\"method\":\"st\xffatus\"}".to_vec(),
            parse,
            null.clone(),
        ),
        frame(
            b"\xef\xbb\xbf{\"jsonrpc\":\"2.0\",\"id\":11,\"method\":\"tunnel.list\"}".to_vec(),
            parse,
            null.clone(),
        ),
        frame(
            r#"{"jsonrpc":"2.0","id":"\ud800","method":"tunnel.list"}"#,
            parse,
            null.clone(),
        ),
        frame(b"\0\0\0".to_vec(), parse, null.clone()),
        frame(
            b"{\"jsonrpc\":\"2.0\",\"id\":12,\"method\":\"status\0\"}".to_vec(),
            parse,
            null.clone(),
        ),
        frame(
            b"{\"jsonrpc\":\"2.0\",\"id\":13,\"method\":\"tunnel.list\"}\0".to_vec(),
            parse,
            null.clone(),
        ),
        frame(
            r#"{"jsonrpc":"2.0","id":14,"method":"\u0000"}"#,
            Some(code::METHOD_NOT_FOUND),
            Some(json!(14)),
        ),
    ];
    // Valid read-only calls between the bad ones: still answered.
    frames.push(frame(
        r#"{"jsonrpc":"2.0","id":15,"method":"tunnel.list"}"#,
        None,
        Some(json!(15)),
    ));
    frames.push(frame(
        "{\"jsonrpc\":\"2.0\",\"id\":16,\"method\":\"logs.tail\",\"params\":{\"lines\":1}}\r",
        None,
        Some(json!(16)),
    ));
    for frame in &frames {
        assert!(!frame.line.contains(&b'\n'));
        assert!(frame.line.len() < MAX_LINE_BYTES, "{}", frame.line.len());
    }
    frames
}

/// Reproducible pseudo-random bytes (SplitMix64).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// A real TLS 1.3 ClientHello (rustls), as a client that wants TLS sends.
fn client_hello() -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("palisade-supervisor").unwrap();
    let mut connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut hello = Vec::new();
    while connection.wants_write() {
        connection.write_tls(&mut hello).unwrap();
    }
    assert_eq!(hello[0], 0x16, "a handshake record");
    hello
}

// ---------------------------------------------------------- the abusers

struct Abuse {
    socket: PathBuf,
    tally: Arc<Tally>,
    deadline: Instant,
}

impl Abuse {
    fn running(&self) -> bool {
        Instant::now() < self.deadline
    }

    /// One long-lived connection sending the malformed frames over and
    /// over (pipelined, paced), a reader checking every answer in order.
    fn malformed_flood(&self, who: &str) {
        let frames = Arc::new(malformed_frames());
        let Some(connection) = greeted(&self.socket, greeting_wait(), &self.tally, who) else {
            return;
        };
        let mut writer = connection.stream().try_clone().unwrap();
        let (expect, expected) = mpsc::channel::<usize>();
        let reader = {
            let tally = self.tally.clone();
            let frames = frames.clone();
            let who = who.to_string();
            let mut connection = connection;
            std::thread::spawn(move || {
                for index in expected {
                    let frame = &frames[index];
                    let shown = String::from_utf8_lossy(&frame.line);
                    let context = format!("{who}, frame {:?}", clip(&shown));
                    let line = match connection.read_line() {
                        Ok(Some(line)) => line,
                        Ok(None) | Err(_) => {
                            tally.fail(format!("{context}: the server closed or went silent"));
                            return;
                        }
                    };
                    let Some(response) = tally.response(&line, &context) else {
                        continue;
                    };
                    let got = response.error.as_ref().map(|error| error.code);
                    if got != frame.code {
                        tally.fail(format!(
                            "{context}: expected code {:?}, got {:?}",
                            frame.code,
                            clip(&line)
                        ));
                    }
                    if let Some(id) = &frame.id
                        && &response.id != id
                    {
                        tally.fail(format!(
                            "{context}: expected id {}, got {:?}",
                            clip(&id.to_string()),
                            clip(&line)
                        ));
                    }
                    match got {
                        None => tally.valid_answered.fetch_add(1, Ordering::Relaxed),
                        Some(_) => tally.malformed_answered.fetch_add(1, Ordering::Relaxed),
                    };
                }
                // Everything answered: then the server closes after our
                // write side does.
                if !matches!(connection.read_line(), Ok(None)) {
                    tally.fail(format!("{who}: more answers than frames"));
                }
            })
        };
        let mut index = 0;
        while self.running() {
            // A batch, then a pause well under the idle timeout.
            for _ in 0..16 {
                let frame = &frames[index % frames.len()];
                let mut line = frame.line.clone();
                line.push(b'\n');
                if let Err(error) = writer.write_all(&line) {
                    self.tally.fail(format!(
                        "{who}: the server closed a flood connection: {error}"
                    ));
                    drop(expect);
                    let _ = reader.join();
                    return;
                }
                expect.send(index % frames.len()).unwrap();
                self.tally.malformed_sent.fetch_add(1, Ordering::Relaxed);
                index += 1;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(expect);
        let _ = writer.shutdown(std::net::Shutdown::Write);
        if reader.join().is_err() {
            self.tally.fail(format!("{who}: reader panicked"));
        }
    }

    /// Lines longer than the limit: −32005 with id null, then closed.
    fn oversized(&self) {
        let mut round = 0u64;
        while self.running() {
            round += 1;
            let Some(mut connection) =
                greeted(&self.socket, greeting_wait(), &self.tally, "oversized")
            else {
                return;
            };
            let mut frame = Vec::new();
            if round.is_multiple_of(2) {
                // After a valid call on the same connection.
                frame.extend_from_slice(
                    b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tunnel.list\"}\n",
                );
            }
            let filler = if round.is_multiple_of(3) {
                b'\xff'
            } else {
                b'a'
            };
            frame.extend(std::iter::repeat_n(
                filler,
                MAX_LINE_BYTES + 4096 * (round % 4 + 1) as usize,
            ));
            // The server stops reading at the limit: the rest may not be
            // written.
            let _ = connection.send(&frame);
            if round.is_multiple_of(2) {
                match connection.read_line() {
                    Ok(Some(line)) => {
                        if let Some(response) = self.tally.response(&line, "oversized, valid call")
                            && response.result.is_none()
                        {
                            self.tally
                                .fail(format!("oversized: the valid call failed: {}", clip(&line)));
                        }
                    }
                    _ => self
                        .tally
                        .fail("oversized: no answer to the valid call".into()),
                }
            }
            match connection.read_line() {
                Ok(Some(line)) => {
                    if let Some(response) = self.tally.response(&line, "oversized")
                        && (response.error.as_ref().map(|e| e.code) != Some(code::LINE_TOO_LONG)
                            || response.id != Value::Null)
                    {
                        self.tally.fail(format!(
                            "oversized: expected −32005 with id null, got {}",
                            clip(&line)
                        ));
                    }
                }
                other => self
                    .tally
                    .fail(format!("oversized: no −32005 answer: {other:?}")),
            }
            // Closed: EOF, or a reset when the server closed with our
            // excess bytes still unread (Linux, Unix sockets).
            match connection.read_line() {
                Ok(None) => {
                    self.tally.oversized_closed.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {
                    self.tally.oversized_closed.fetch_add(1, Ordering::Relaxed);
                }
                other => self.tally.fail(format!(
                    "oversized: the connection stayed open after −32005: {other:?}"
                )),
            }
        }
    }

    /// Seeded random bytes, newline-terminated most of the time, after one
    /// valid call (so the session is plaintext JSON lines, not TLS). Every
    /// complete line gets exactly one answer.
    fn garbage(&self, seed: u64) {
        let mut random = SplitMix(seed);
        while self.running() {
            let Some(mut connection) =
                greeted(&self.socket, greeting_wait(), &self.tally, "garbage")
            else {
                return;
            };
            let mut writer = connection.stream().try_clone().unwrap();
            let tally = self.tally.clone();
            let reader = std::thread::spawn(move || {
                let mut answered = 0u64;
                loop {
                    match connection.read_line() {
                        Ok(Some(line)) => {
                            tally.response(&line, "garbage");
                            answered += 1;
                        }
                        Ok(None) => return answered,
                        Err(error) => {
                            tally.fail(format!("garbage: read failed: {error}"));
                            return answered;
                        }
                    }
                }
            });
            let mut lines = 1u64;
            if writer
                .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tunnel.list\"}\n")
                .is_err()
            {
                lines = 0;
            }
            let until = Instant::now() + Duration::from_secs(2);
            while self.running() && Instant::now() < until && lines > 0 {
                let length = 1 + random.below(300) as usize;
                let mut chunk: Vec<u8> = (0..length).map(|_| random.next() as u8).collect();
                if random.below(10) < 7 {
                    chunk.push(b'\n');
                }
                if writer.write_all(&chunk).is_err() {
                    self.tally
                        .fail("garbage: the server closed a garbage connection".into());
                    break;
                }
                lines += chunk.iter().filter(|byte| **byte == b'\n').count() as u64;
                std::thread::sleep(Duration::from_millis(2));
            }
            let _ = writer.shutdown(std::net::Shutdown::Write);
            let answered = reader.join().unwrap();
            if answered != lines {
                self.tally.fail(format!(
                    "garbage (seed {seed:#x}): {lines} complete lines, {answered} answers"
                ));
            }
            self.tally.garbage_lines.fetch_add(lines, Ordering::Relaxed);
            self.tally
                .garbage_answered
                .fetch_add(answered, Ordering::Relaxed);
        }
    }

    /// A valid request dribbled one byte every 150 ms: never completed
    /// within the idle timeout, so the connection must be cut within it
    /// (the whole line must arrive within the timeout, not each byte).
    fn slowloris(&self) {
        let request = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tunnel.list\"}\n";
        while self.running() {
            let Some(connection) = greeted(&self.socket, greeting_wait(), &self.tally, "slowloris")
            else {
                return;
            };
            let mut stream = connection.stream().try_clone().unwrap();
            drop(connection);
            stream.set_nonblocking(true).unwrap();
            let greeted_at = Instant::now();
            let mut cut = false;
            for byte in request {
                if stream.write_all(&[*byte]).is_err() {
                    cut = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(150));
                let mut buffer = [0u8; 256];
                match stream.read(&mut buffer) {
                    Ok(0) => {
                        cut = true;
                        break;
                    }
                    Ok(n) => {
                        self.tally.fail(format!(
                            "slowloris: answered before the line was complete: {:?}",
                            String::from_utf8_lossy(&buffer[..n])
                        ));
                        break;
                    }
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => {
                        cut = true;
                        break;
                    }
                }
            }
            let took = greeted_at.elapsed();
            if !cut {
                self.tally.fail(format!(
                    "slowloris: a {}-byte request dribbled over {took:?} was never cut",
                    request.len()
                ));
                continue;
            }
            self.tally.slowloris_cut.fetch_add(1, Ordering::Relaxed);
            self.tally
                .slowloris_longest_ms
                .fetch_max(took.as_millis() as u64, Ordering::Relaxed);
            if took > IDLE + Duration::from_millis(1500) {
                self.tally.fail(format!(
                    "slowloris: cut only after {took:?} (idle timeout {IDLE:?})"
                ));
            }
        }
    }

    /// A TLS ClientHello as the first bytes (the server answers with its
    /// handshake, then cuts the stalled handshake), and one sent in the
    /// middle of a plaintext session (garbage lines, answered as such).
    fn tls_hellos(&self) {
        let hello = client_hello();
        let mut round = 0u64;
        while self.running() {
            round += 1;
            let Some(mut connection) = greeted(&self.socket, greeting_wait(), &self.tally, "tls")
            else {
                return;
            };
            if round % 2 == 1 {
                if connection.send(&hello).is_err() {
                    self.tally
                        .fail("tls: the server closed before the ClientHello".into());
                    continue;
                }
                let mut stream = connection.stream().try_clone().unwrap();
                let mut first = [0u8; 1];
                match stream.read(&mut first) {
                    Ok(1) if first[0] == 0x16 => {
                        self.tally.tls_server_hellos.fetch_add(1, Ordering::Relaxed);
                    }
                    other => self.tally.fail(format!(
                        "tls: expected a handshake record after a ClientHello, got {other:?} {first:?}"
                    )),
                }
                // Stall: the handshake must be cut within the idle timeout.
                let stalled = Instant::now();
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest);
                if stalled.elapsed() > IDLE + Duration::from_millis(1500) {
                    self.tally.fail(format!(
                        "tls: a stalled handshake lasted {:?}",
                        stalled.elapsed()
                    ));
                }
            } else {
                let mut bytes =
                    b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tunnel.list\"}\n".to_vec();
                bytes.extend_from_slice(&hello);
                bytes.extend_from_slice(
                    b"\n{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tunnel.list\"}\n",
                );
                if connection.send(&bytes).is_err() {
                    self.tally
                        .fail("tls: the server closed a plaintext session".into());
                    continue;
                }
                let garbage_lines = hello.iter().filter(|b| **b == b'\n').count() + 1;
                let mut answers = Vec::new();
                for _ in 0..garbage_lines + 2 {
                    match connection.read_line() {
                        Ok(Some(line)) => answers.push(line),
                        other => {
                            self.tally
                                .fail(format!("tls mid-session: missing answers: {other:?}"));
                            break;
                        }
                    }
                }
                if answers.len() == garbage_lines + 2 {
                    for (index, line) in answers.iter().enumerate() {
                        let Some(response) = self.tally.response(line, "tls mid-session") else {
                            continue;
                        };
                        let valid_call = index == 0 || index == answers.len() - 1;
                        let ok = if valid_call {
                            response.result.is_some()
                        } else {
                            response.error.is_some() && response.id == Value::Null
                        };
                        if !ok {
                            self.tally
                                .fail(format!("tls mid-session: answer {index}: {}", clip(line)));
                        }
                    }
                    self.tally.tls_midsession.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Connections that send part of a request and close, some before the
    /// server even greeted them.
    fn closed_mid_line(&self) {
        let request = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"node.stop\"}\n";
        let mut random = SplitMix(SEED ^ 0xc105e);
        while self.running() {
            let cut = 1 + random.below(request.len() as u64 - 2) as usize;
            if random.below(2) == 0 {
                // Without waiting for the greeting.
                if let Ok(mut stream) = UnixStream::connect(&self.socket) {
                    let _ = stream.write_all(&request[..cut]);
                    self.tally.closed_mid_line.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(5));
            } else if let Some(mut connection) =
                greeted(&self.socket, greeting_wait(), &self.tally, "mid-line")
            {
                let _ = connection.send(&request[..cut]);
                self.tally.closed_mid_line.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// [`IDLE_CONNECTIONS`] connections that never send a byte, each
    /// reopened as soon as the server closes it.
    fn idle_holder(&self) {
        let open = |tally: &Tally| -> Option<UnixStream> {
            match UnixStream::connect(&self.socket) {
                Ok(stream) => {
                    stream.set_nonblocking(true).unwrap();
                    tally.idle_opened.fetch_add(1, Ordering::Relaxed);
                    Some(stream)
                }
                Err(error) => {
                    tally.fail(format!("idle: connect failed: {error}"));
                    None
                }
            }
        };
        let mut connections: Vec<Option<UnixStream>> =
            (0..IDLE_CONNECTIONS).map(|_| open(&self.tally)).collect();
        let mut buffer = [0u8; 1024];
        while self.running() {
            let held = connections.iter().filter(|c| c.is_some()).count();
            self.tally
                .idle_held_max
                .fetch_max(held as u64, Ordering::Relaxed);
            for slot in connections.iter_mut() {
                let closed = match slot {
                    None => true,
                    Some(stream) => match stream.read(&mut buffer) {
                        // The greeting: read and ignored.
                        Ok(n) if n > 0 => false,
                        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => false,
                        Ok(_) | Err(_) => {
                            self.tally
                                .idle_closed_by_server
                                .fetch_add(1, Ordering::Relaxed);
                            true
                        }
                    },
                };
                if closed {
                    *slot = open(&self.tally);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

// ------------------------------------------------------------- helpers

/// Raise this process's open-file limit to at least `needed` (the idle
/// connections alone take 1000 descriptors).
fn raise_open_files(needed: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft >= needed {
        return;
    }
    let hard = hard.max(needed);
    if let Err(error) = setrlimit(Resource::RLIMIT_NOFILE, needed, hard) {
        panic!(
            "this test holds {IDLE_CONNECTIONS} connections open and needs {needed} open files, \
             but RLIMIT_NOFILE is {soft} and cannot be raised ({error}); run it with \
             `ulimit -n {needed}` or as root"
        );
    }
}

fn status_with_ctl(fixture: &VaultRpc, timeout: Duration) -> Result<Value, String> {
    let output = fixture.ctl(
        &[
            "--timeout",
            &timeout.as_secs().max(1).to_string(),
            "--json",
            "status",
        ],
        None,
    );
    if !output.status.success() {
        return Err(format!(
            "exit {:?}: {}",
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    serde_json::from_slice(&output.stdout).map_err(|error| format!("not JSON: {error}"))
}

/// Heights the validator missed in `from..=to`, and its total missed
/// count: a node that is not signing (stopped, locked, starved, wedged
/// on a blocked pipe) leaves every height the chain commits without it
/// here — the three internal validators keep committing without it.
fn missed(fixture: &VaultRpc, from: u64, to: u64) -> (Vec<u64>, u64) {
    let record = fixture.chain.network.record().unwrap();
    (
        record.missed_between("val1", from, to),
        record.validators["val1"].missed_count,
    )
}

#[test]
fn abuse_of_the_control_socket_leaves_the_supervisor_supervising() {
    let fixture = VaultRpc::setup(
        SLOW_BLOCK,
        PASSPHRASE,
        &format!("idle-timeout = \"{}ms\"", IDLE.as_millis()),
        "",
    );
    // A TLS identity, so that a ClientHello gets a real handshake.
    fixture.init_rpc();
    let supervisor = fixture.run();
    common::wait_until(LONG, "the control socket", || fixture.socket.exists());
    fixture.unlock();
    fixture.chain.wait_signing(3, LONG);
    let pid = supervisor.child.id();
    raise_open_files(IDLE_CONNECTIONS as u64 + 512);

    // Baseline: unlocked, signing, nobody connected.
    std::thread::sleep(Duration::from_millis(500));
    let rss_baseline = common::proc_status_kib(pid, "VmRSS").unwrap();
    let before = fixture.chain.network.record().unwrap();
    let start_height = before.height;
    let missed_before = before.validators["val1"].missed_count;

    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let abuse = Arc::new(Abuse {
        socket: fixture.socket.clone(),
        tally: tally.clone(),
        deadline: started + ABUSE,
    });
    let done = Arc::new(AtomicBool::new(false));
    let rss_peak = Arc::new(AtomicU64::new(rss_baseline));
    let sampler = {
        let done = done.clone();
        let rss_peak = rss_peak.clone();
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Some(rss) = common::proc_status_kib(pid, "VmRSS") {
                    rss_peak.fetch_max(rss, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let mut abusers: Vec<(&str, JoinHandle<()>)> = Vec::new();
    let mut spawn = |name: &'static str, job: Box<dyn FnOnce(&Abuse) + Send>| {
        let abuse = abuse.clone();
        abusers.push((name, std::thread::spawn(move || job(&abuse))));
    };
    spawn(
        "malformed 1",
        Box::new(|a| a.malformed_flood("malformed 1")),
    );
    spawn(
        "malformed 2",
        Box::new(|a| a.malformed_flood("malformed 2")),
    );
    spawn("oversized", Box::new(|a| a.oversized()));
    for index in 0..2u64 {
        spawn("garbage", Box::new(move |a| a.garbage(SEED + index)));
    }
    for _ in 0..8 {
        spawn("slowloris", Box::new(|a| a.slowloris()));
    }
    spawn("tls", Box::new(|a| a.tls_hellos()));
    spawn("mid-line", Box::new(|a| a.closed_mid_line()));
    // The long-lived floods are in; now the idle connections fill the
    // queue behind them.
    std::thread::sleep(Duration::from_millis(300));
    spawn("idle", Box::new(|a| a.idle_holder()));

    // The legitimate operator, meanwhile.
    let bound = legit_bound();
    let mut legit = Vec::new();
    while started.elapsed() < ABUSE {
        let asked = Instant::now();
        let answer = status_with_ctl(&fixture, bound + Duration::from_secs(10));
        legit.push((asked.elapsed(), answer));
        std::thread::sleep(Duration::from_millis(200));
    }
    let end_height = fixture.chain.network.record().unwrap().height;
    for (name, abuser) in abusers {
        if abuser.join().is_err() {
            tally.fail(format!("the {name} abuser panicked"));
        }
    }
    let abuse_took = started.elapsed();
    // Votes for the last heights of the window are in once a few more
    // blocks are committed.
    fixture
        .chain
        .network
        .wait_for(LONG, |record| record.height >= end_height + 3)
        .unwrap();
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let rss_peak = rss_peak.load(Ordering::Relaxed);
    let rss_after = common::proc_status_kib(pid, "VmRSS").unwrap();

    let count = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let latencies: Vec<Duration> = legit.iter().map(|(took, _)| *took).collect();
    eprintln!(
        "abuse for {abuse_took:?}, heights {start_height}..{end_height}: \
         malformed sent {} answered {} (+{} valid), oversized closed {}, \
         garbage lines {} answered {}, slowloris cut {} (longest {} ms), \
         TLS handshakes {} mid-session {}, closed mid-line {}, \
         idle opened {} closed by the server {} held at most {}, \
         longest response line {} bytes; \
         legit status calls {} (bound {bound:?}), latencies {latencies:?}; \
         VmRSS baseline {rss_baseline} KiB, peak {rss_peak} KiB, after {rss_after} KiB",
        count(&tally.malformed_sent),
        count(&tally.malformed_answered),
        count(&tally.valid_answered),
        count(&tally.oversized_closed),
        count(&tally.garbage_lines),
        count(&tally.garbage_answered),
        count(&tally.slowloris_cut),
        count(&tally.slowloris_longest_ms),
        count(&tally.tls_server_hellos),
        count(&tally.tls_midsession),
        count(&tally.closed_mid_line),
        count(&tally.idle_opened),
        count(&tally.idle_closed_by_server),
        count(&tally.idle_held_max),
        count(&tally.longest_response_line),
        legit.len(),
    );

    // Every abuser got exactly the answers the spec gives.
    let failures = tally.failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "the server misanswered the abuse:\n{}",
        failures.join("\n")
    );
    // And every kind of abuse actually happened (nothing vacuous).
    assert!(
        count(&tally.malformed_answered) >= 1000,
        "too few malformed frames answered"
    );
    assert!(count(&tally.valid_answered) >= 20);
    assert!(count(&tally.oversized_closed) >= 1);
    assert!(count(&tally.garbage_answered) >= 100);
    assert!(count(&tally.slowloris_cut) >= 8);
    assert!(count(&tally.tls_server_hellos) >= 1);
    assert!(count(&tally.tls_midsession) >= 1);
    assert!(count(&tally.closed_mid_line) >= 10);
    assert_eq!(count(&tally.idle_held_max), IDLE_CONNECTIONS as u64);
    assert!(
        count(&tally.idle_closed_by_server) >= IDLE_CONNECTIONS as u64,
        "the idle connections were not even reached"
    );

    // The operator was answered every time, within the bound.
    assert!(legit.len() >= 2, "only {} status calls", legit.len());
    for (took, answer) in &legit {
        let status = answer
            .as_ref()
            .unwrap_or_else(|error| panic!("a status call failed after {took:?}: {error}"));
        assert_eq!(status["node"]["state"], "running", "{status}");
        assert!(
            *took <= bound,
            "a status call took {took:?} (bound {bound:?})"
        );
    }

    // The node signed every block of the window, and nothing twice.
    let heights = end_height - start_height;
    let expected = ABUSE.as_millis() as u64 / SLOW_BLOCK.as_millis() as u64;
    assert!(
        heights >= expected / 2,
        "the chain committed only {heights} blocks in {abuse_took:?} (expected ~{expected})"
    );
    let (missed_heights, missed_total) = missed(&fixture, start_height + 1, end_height + 2);
    assert!(
        missed_heights.is_empty() && missed_total == missed_before,
        "the validator missed heights {missed_heights:?} during the abuse \
         ({missed_before} missed before, {missed_total} after)"
    );
    fixture.chain.assert_no_double_sign();

    // Memory stayed bounded.
    assert!(
        rss_peak <= rss_baseline + RSS_GROWTH_BOUND_KIB,
        "VmRSS peaked at {rss_peak} KiB under abuse, baseline {rss_baseline} KiB \
         (bound: +{RSS_GROWTH_BOUND_KIB} KiB)"
    );

    // Still running and answering.
    assert!(
        common::process_alive(pid),
        "the supervisor died:\n{}",
        common::tail(&supervisor.output(), 40)
    );
    let status = status_with_ctl(&fixture, Duration::from_secs(10)).unwrap();
    assert_eq!(status["node"]["state"], "running", "{status}");
    assert_eq!(status["vault"]["locked"], false, "{status}");

    // The block check can fail: stop the node and the same check sees the
    // heights it misses.
    let stop = fixture.ctl(&["node", "stop"], None);
    assert!(stop.status.success(), "{stop:?}");
    let stopped_at = fixture.chain.network.record().unwrap().height;
    fixture
        .chain
        .network
        .wait_for(LONG, |record| record.height >= stopped_at + 4)
        .unwrap();
    let (missed_heights, missed_total) = missed(&fixture, stopped_at + 1, stopped_at + 4);
    assert!(
        !missed_heights.is_empty() && missed_total > missed_before,
        "a stopped node should show missed heights"
    );

    supervisor.stop();
}
