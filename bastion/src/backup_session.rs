//! `palisade-bastion backup-session --config FILE --validator NAME`: one
//! validator's SSH session to the backup store.
//!
//! OpenSSH refuses `direct-streamlocal` (Unix-socket) channels for a key
//! that carries any `permitopen=` restriction, and validators' keys need
//! `permitopen` for their P2P forwards. So the validator reaches the store
//! the way borg and rsync reach their servers: sshd runs this command as the
//! key's **forced command** for every session channel the validator opens,
//!
//! ```text
//! command="/usr/bin/palisade-bastion backup-session --config /etc/palisade-bastion/bastion.toml --validator val-a",restrict,port-forwarding,permitopen="10.0.0.5:26656" ssh-ed25519 AAAA… val-a
//! ```
//!
//! with stdin and stdout connected to the channel, and it relays the
//! [`palisade_wire::backup_store`] protocol between them and the running
//! store (`listen-socket`).
//!
//! - **Requests** (stdin → store) are parsed frame by frame: every header is
//!   bounded ([`MAX_REQUEST_HEADER_BYTES`]) and decoded, and its validator
//!   must be `--validator`: a key can touch only its own validator's
//!   backups. A refused request is not forwarded; the relay lets the store
//!   answer what it already forwarded, then writes its own error response
//!   and exits 1. A `put`'s payload frame is checked against the announced
//!   size ([`max_payload_bytes`] of its kind at most) and streamed through in 64 KiB
//!   pieces, never buffered whole.
//! - **Responses** (store → stdout) are copied through unchanged; the store
//!   bounds them.
//! - End of stdin between requests half-closes the store connection; the
//!   relay finishes copying responses and exits 0. End of stdin inside a
//!   payload leaves the store with an incomplete upload, which it discards
//!   (and answers `bad_frame`); the relay exits 1.
//! - The store is connected to only once the first request header has
//!   arrived whole: a session that sends nothing holds none of the store's
//!   connections (they are counted per validator from the first request,
//!   so the store can bound each validator's share). A session that sends
//!   nothing at all ends after `backups.header-timeout` plus
//!   [`IDLE_GRACE`]; input that ends before any request ends it at once
//!   (exit 0).
//! - Bounds: the session ends (exit 1) when no byte has moved in either
//!   direction for `backups.idle-timeout` plus [`IDLE_GRACE`], and after
//!   [`SESSION_LIMIT`] in any case.
//! - Before any request: an unconfigured `--validator` is answered with one
//!   `unknown_validator` response and an unusable configuration with one
//!   `internal` response; after the first one, an unreachable store is
//!   answered with one `internal` response; each exits 1 with the reason on
//!   stderr.
//!
//! The same relay serves an operator's read-only **log archive** session
//! ([`run_log_archive`], reached through `rpc-relay` when the client asks
//! for `palisade-log-archive VALIDATOR`): there only `list` and `get` of
//! objects of kind `log` pass; anything else is refused like a request for
//! another validator.
//!
//! stdout carries protocol frames only; logs go to stderr (`RUST_LOG`,
//! default `warn`), which sshd passes to the client. Payloads are never
//! logged.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use palisade_wire::backup_store::{
    ErrorKind, MAX_REQUEST_HEADER_BYTES, Request, Response, decode_request, encode_header,
    max_payload_bytes,
};

use crate::config::BastionConfig;
pub use crate::store_access::SessionAccess;

/// Longest a session may last, whatever it does: more than one maximal
/// upload needs at the store's own pace (idle timeout + 1 s per 64 KiB).
pub const SESSION_LIMIT: Duration = Duration::from_secs(10 * 60);

/// Added to `backups.idle-timeout` for the relay's own idle bound, so that
/// the store, which closes idle connections cleanly, normally acts first.
pub const IDLE_GRACE: Duration = Duration::from_secs(2);

/// Bytes moved per read/write.
const CHUNK: usize = 64 * 1024;

/// How often the watchdog looks at the clock.
const WATCHDOG_TICK: Duration = Duration::from_millis(100);

/// Runs one session on this process's stdin and stdout. Returns when the
/// session is over; `Err` means exit 1 (the message is for stderr).
///
/// The idle and session bounds end the process directly
/// (`std::process::exit(1)`): a relay blocked on a pipe cannot be woken
/// otherwise, and this command is one process per session.
pub fn run(config_path: &Path, validator: &str) -> anyhow::Result<()> {
    run_with(config_path, validator, SessionAccess::Validator)
}

/// Runs an operator's read-only log archive session for `validator` (the
/// caller checked that the operator's key may reach it); as [`run`]
/// otherwise.
pub fn run_log_archive(config_path: &Path, validator: &str) -> anyhow::Result<()> {
    run_with(config_path, validator, SessionAccess::LogReader)
}

fn run_with(config_path: &Path, validator: &str, access: SessionAccess) -> anyhow::Result<()> {
    let mut stdout = File::from(
        io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .context("stdout")?,
    );
    let config = match BastionConfig::load_skipping_key(config_path) {
        Ok(config) => config,
        Err(error) => {
            reply(
                &mut stdout,
                ErrorKind::Internal,
                "the bastion's configuration is unusable (details on its stderr)",
            );
            return Err(anyhow!(error));
        }
    };
    if !config.validators.iter().any(|v| v.name == validator) {
        let message = format!("validator {validator:?} is not configured on this bastion");
        reply(&mut stdout, ErrorKind::UnknownValidator, &message);
        bail!("--validator: {message}");
    }

    let activity = Arc::new(Activity::new());
    watchdog(
        Arc::clone(&activity),
        Bounds {
            first_request: config.backups.header_timeout + IDLE_GRACE,
            idle: config.backups.idle_timeout + IDLE_GRACE,
            session: SESSION_LIMIT,
        },
    );

    let mut stdin = BufReader::with_capacity(
        CHUNK,
        File::from(io::stdin().as_fd().try_clone_to_owned().context("stdin")?),
    );
    let first = read_first_request(&mut stdin, &activity).context("reading the first request")?;
    if first.is_empty() {
        return Ok(());
    }
    activity.first_request_read();

    let store = match UnixStream::connect(&config.listen_socket) {
        Ok(store) => store,
        Err(error) => {
            let message = format!(
                "backup store not running on this bastion: {}: {error}",
                config.listen_socket.display()
            );
            reply(&mut stdout, ErrorKind::Internal, &message);
            bail!("{message}");
        }
    };
    relay(
        io::Cursor::new(first).chain(stdin),
        stdout,
        store,
        validator,
        access,
        activity,
    )
}

/// The bytes of the first request frame (length prefix and header), read
/// before the store is connected to; fewer when the input ends or the
/// prefix announces more than a header may hold (the relay then refuses
/// them as it refuses any bad frame). Empty: the input ended at once.
fn read_first_request(input: &mut impl Read, activity: &Activity) -> io::Result<Vec<u8>> {
    let mut prefix = [0u8; 4];
    let read = read_full(input, &mut prefix, activity)?;
    let mut first = prefix[..read].to_vec();
    if read < 4 {
        return Ok(first);
    }
    let length = u32::from_be_bytes(prefix) as usize;
    if length > MAX_REQUEST_HEADER_BYTES {
        return Ok(first);
    }
    let mut header = vec![0u8; length];
    let read = read_full(input, &mut header, activity)?;
    first.extend_from_slice(&header[..read]);
    Ok(first)
}

/// Relays requests (a thread) and responses (this thread) until the store
/// closes the connection, then decides the outcome.
fn relay(
    input: impl Read + Send + 'static,
    mut output: impl Write,
    store: UnixStream,
    validator: &str,
    access: SessionAccess,
    activity: Arc<Activity>,
) -> anyhow::Result<()> {
    let (done, outcome) = mpsc::channel();
    let mut to_store = store.try_clone().context("cloning the store connection")?;
    let bound = validator.to_owned();
    let requests_activity = Arc::clone(&activity);
    // Not joined: when the store closes first this thread may still be
    // blocked on stdin, and it ends with the process.
    std::thread::spawn(move || {
        let mut input = input;
        let end = relay_requests(
            &mut input,
            &mut to_store,
            &bound,
            access,
            &requests_activity,
        );
        // Report before half-closing: the store closes only after seeing
        // the half-close, so the report is there when the responses end.
        let _ = done.send(end);
        let _ = to_store.shutdown(Shutdown::Write);
    });

    let mut from_store = store;
    relay_responses(&mut from_store, &mut output, &activity)
        .context("relaying the backup store's responses")?;

    match outcome.try_recv() {
        Ok(RequestsEnd::Finished) => Ok(()),
        Ok(RequestsEnd::Refused(response)) => {
            let message = response
                .error
                .as_ref()
                .map(|e| format!("{}: {}", e.kind, e.message))
                .unwrap_or_default();
            write_response(&mut output, &response).context("writing the refusal")?;
            bail!("request refused: {message}")
        }
        Ok(RequestsEnd::Truncated) => {
            bail!("the client's input ended inside a payload; the upload was discarded")
        }
        Ok(RequestsEnd::Failed(error)) => bail!("{error}"),
        Err(_) => bail!("the backup store closed the connection before the client finished"),
    }
}

/// Why the request direction stopped.
#[derive(Debug)]
enum RequestsEnd {
    /// The client's input ended between requests: the normal end.
    Finished,
    /// The relay refused a request (not forwarded); this response goes out
    /// after the store's responses to the requests before it.
    Refused(Response),
    /// The input ended inside a forwarded payload; the store answers that
    /// itself (`bad_frame`) and discards the upload.
    Truncated,
    /// Reading the input or writing to the store failed.
    Failed(String),
}

fn refused(kind: ErrorKind, message: impl Into<String>) -> RequestsEnd {
    RequestsEnd::Refused(Response::error(kind, message))
}

/// Reads request frames from `input`, checks them and forwards them to the
/// store, until the input ends or a request is refused.
fn relay_requests(
    input: &mut impl Read,
    store: &mut impl Write,
    validator: &str,
    access: SessionAccess,
    activity: &Activity,
) -> RequestsEnd {
    let forward_failed =
        |error: io::Error| RequestsEnd::Failed(format!("forwarding to the backup store: {error}"));
    loop {
        let mut prefix = [0u8; 4];
        match read_full(input, &mut prefix, activity) {
            Ok(0) => return RequestsEnd::Finished,
            Ok(4) => {}
            Ok(_) => return refused(ErrorKind::BadFrame, "request frame incomplete"),
            Err(error) => return RequestsEnd::Failed(format!("reading the request: {error}")),
        }
        let length = u32::from_be_bytes(prefix) as usize;
        if length > MAX_REQUEST_HEADER_BYTES {
            return refused(
                ErrorKind::TooLarge,
                format!(
                    "header frame of {length} bytes exceeds the {MAX_REQUEST_HEADER_BYTES}-byte limit"
                ),
            );
        }
        let mut header = vec![0u8; length];
        match read_full(input, &mut header, activity) {
            Ok(n) if n == length => {}
            Ok(_) => return refused(ErrorKind::BadFrame, "request frame incomplete"),
            Err(error) => return RequestsEnd::Failed(format!("reading the request: {error}")),
        }
        let request = match decode_request(&header) {
            Ok(request) => request,
            Err(message) => return refused(ErrorKind::BadFrame, message),
        };
        if request.validator() != validator {
            return refused(
                ErrorKind::UnknownValidator,
                format!("this key may only access the backups of {validator}"),
            );
        }
        if let Some(reason) = access.refusal(&request) {
            return refused(ErrorKind::UnknownValidator, reason);
        }
        tracing::debug!(op = request.op(), kind = %request.kind(), "relaying request");

        let limit = max_payload_bytes(request.kind());
        let Request::Put { bytes, .. } = request else {
            if let Err(error) = store
                .write_all(&prefix)
                .and_then(|()| store.write_all(&header))
            {
                return forward_failed(error);
            }
            continue;
        };
        if bytes > limit as u64 {
            return refused(
                ErrorKind::TooLarge,
                format!("{bytes} bytes exceeds the {limit}-byte limit"),
            );
        }
        // The payload's length prefix is checked before anything of this
        // request is forwarded, so that a refusal leaves the store between
        // requests.
        let mut payload_prefix = [0u8; 4];
        match read_full(input, &mut payload_prefix, activity) {
            Ok(4) => {}
            Ok(_) => return refused(ErrorKind::BadFrame, "payload frame missing or incomplete"),
            Err(error) => return RequestsEnd::Failed(format!("reading the payload: {error}")),
        }
        let announced = u32::from_be_bytes(payload_prefix);
        if u64::from(announced) != bytes {
            return refused(
                ErrorKind::BadFrame,
                format!("payload frame of {announced} bytes, but the header announced {bytes}"),
            );
        }
        let forwarded = store
            .write_all(&prefix)
            .and_then(|()| store.write_all(&header))
            .and_then(|()| store.write_all(&payload_prefix));
        if let Err(error) = forwarded {
            return forward_failed(error);
        }
        let mut remaining = bytes as usize;
        let mut buffer = vec![0u8; CHUNK.min(remaining)];
        while remaining > 0 {
            let want = remaining.min(buffer.len());
            let n = match input.read(&mut buffer[..want]) {
                Ok(0) => return RequestsEnd::Truncated,
                Ok(n) => n,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return RequestsEnd::Failed(format!("reading the payload: {error}")),
            };
            activity.touch();
            if let Err(error) = store.write_all(&buffer[..n]) {
                return forward_failed(error);
            }
            remaining -= n;
        }
    }
}

/// Copies the store's responses to `output` until the store closes.
fn relay_responses(
    store: &mut impl Read,
    output: &mut impl Write,
    activity: &Activity,
) -> io::Result<()> {
    let mut buffer = vec![0u8; CHUNK];
    loop {
        let n = match store.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        activity.touch();
        output.write_all(&buffer[..n])?;
        output.flush()?;
        activity.touch();
    }
}

/// Fills `buffer` unless the input ends first; returns how many bytes were
/// read (0: the input ended before the first byte).
fn read_full(input: &mut impl Read, buffer: &mut [u8], activity: &Activity) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match input.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => {
                filled += n;
                activity.touch();
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

fn write_response(output: &mut impl Write, response: &Response) -> io::Result<()> {
    output.write_all(&encode_header(response))?;
    output.flush()
}

/// Best effort: the client may already be gone.
fn reply(output: &mut impl Write, kind: ErrorKind, message: &str) {
    let _ = write_response(output, &Response::error(kind, message));
}

/// When the session started, when a byte last moved, and whether the first
/// request has arrived.
struct Activity {
    started: Instant,
    /// Milliseconds since `started`.
    last: AtomicU64,
    first_request: AtomicBool,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            started: Instant::now(),
            last: AtomicU64::new(0),
            first_request: AtomicBool::new(false),
        }
    }

    fn first_request_read(&self) {
        self.first_request.store(true, Ordering::Relaxed);
    }

    fn touch(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last.store(now, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }
}

/// The watchdog's limits.
struct Bounds {
    /// From the start until the first request header is in.
    first_request: Duration,
    /// Without a byte moving.
    idle: Duration,
    /// The whole session.
    session: Duration,
}

/// Ends the process (exit 1) when the first request has not arrived within
/// its bound, nothing moved for the idle bound, or the session is older than
/// its limit.
fn watchdog(activity: Arc<Activity>, bounds: Bounds) {
    let Bounds {
        first_request,
        idle,
        session: limit,
    } = bounds;
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(WATCHDOG_TICK);
            let reason = if activity.started.elapsed() >= limit {
                format!(
                    "backup session longer than {}; closing",
                    humantime::format_duration(limit)
                )
            } else if !activity.first_request.load(Ordering::Relaxed)
                && activity.started.elapsed() >= first_request
            {
                format!(
                    "backup session sent no request within {}; closing",
                    humantime::format_duration(first_request)
                )
            } else if activity.idle_for() >= idle {
                format!(
                    "backup session idle for {}; closing",
                    humantime::format_duration(idle)
                )
            } else {
                continue;
            };
            eprintln!("palisade-bastion: {reason}");
            std::process::exit(crate::exit_code::ERROR);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_wire::backup_store::decode_response;

    fn frame(json: &str) -> Vec<u8> {
        let mut frame = (json.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(json.as_bytes());
        frame
    }

    fn run_requests(input: &[u8]) -> (RequestsEnd, Vec<u8>) {
        let mut forwarded = Vec::new();
        let end = relay_requests(
            &mut &input[..],
            &mut forwarded,
            "val-a",
            SessionAccess::Validator,
            &Activity::new(),
        );
        (end, forwarded)
    }

    #[test]
    fn a_log_archive_session_may_only_list_and_get_log_objects() {
        let allowed = [
            r#"{"op":"list","validator":"val-a","kind":"log"}"#,
            r#"{"op":"list","validator":"val-a","kind":"log","after":"x"}"#,
            r#"{"op":"get","validator":"val-a","file":"log-h-00000000000000000001.age","kind":"log"}"#,
        ];
        for request in allowed {
            let input = frame(request);
            let mut forwarded = Vec::new();
            let end = relay_requests(
                &mut &input[..],
                &mut forwarded,
                "val-a",
                SessionAccess::LogReader,
                &Activity::new(),
            );
            assert!(matches!(end, RequestsEnd::Finished), "{request}: {end:?}");
            assert_eq!(forwarded, input, "{request}");
        }
        let refused_requests = [
            r#"{"op":"list","validator":"val-a"}"#,
            r#"{"op":"get","validator":"val-a","file":"backup-x.age"}"#,
            r#"{"op":"remove","validator":"val-a","file":"log-h-00000000000000000001.age","kind":"log"}"#,
            r#"{"op":"put","validator":"val-a","file":"log-h-00000000000000000001.age","bytes":1,"kind":"log"}"#,
            r#"{"op":"list","validator":"val-b","kind":"log"}"#,
        ];
        for request in refused_requests {
            let mut input = frame(request);
            input.push(0);
            let mut forwarded = Vec::new();
            let end = relay_requests(
                &mut &input[..],
                &mut forwarded,
                "val-a",
                SessionAccess::LogReader,
                &Activity::new(),
            );
            assert_eq!(refusal(end), ErrorKind::UnknownValidator, "{request}");
            assert!(forwarded.is_empty(), "{request}");
        }
    }

    fn refusal(end: RequestsEnd) -> ErrorKind {
        match end {
            RequestsEnd::Refused(response) => response.error.unwrap().kind,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn requests_for_the_bound_validator_are_forwarded_verbatim() {
        let mut input = frame(r#"{"op":"list","validator":"val-a"}"#);
        input.extend(frame(
            r#"{"op":"put","validator":"val-a","file":"x.age","bytes":3}"#,
        ));
        input.extend(frame("abc"));
        input.extend(frame(r#"{"op":"get","validator":"val-a","file":"x.age"}"#));
        let (end, forwarded) = run_requests(&input);
        assert!(matches!(end, RequestsEnd::Finished), "{end:?}");
        assert_eq!(forwarded, input);
    }

    #[test]
    fn a_request_for_another_validator_is_refused_and_not_forwarded() {
        let list = frame(r#"{"op":"list","validator":"val-a"}"#);
        let mut input = list.clone();
        input.extend(frame(
            r#"{"op":"put","validator":"val-b","file":"x.age","bytes":3}"#,
        ));
        input.extend(frame("abc"));
        let (end, forwarded) = run_requests(&input);
        let RequestsEnd::Refused(response) = end else {
            panic!("{end:?}");
        };
        let error = response.error.unwrap();
        assert_eq!(error.kind, ErrorKind::UnknownValidator);
        assert_eq!(
            error.message,
            "this key may only access the backups of val-a"
        );
        assert_eq!(forwarded, list, "only the allowed request went through");
    }

    #[test]
    fn malformed_frames_are_refused_before_reaching_the_store() {
        let put = |bytes: u64| {
            frame(&format!(
                r#"{{"op":"put","validator":"val-a","file":"x.age","bytes":{bytes}}}"#
            ))
        };
        let mut wrong_length = put(3);
        wrong_length.extend(frame("four"));
        let mut short_prefix = put(3);
        short_prefix.extend([0, 0]);
        let rows: Vec<(Vec<u8>, ErrorKind)> = vec![
            ((9 * 1024u32).to_be_bytes().to_vec(), ErrorKind::TooLarge),
            (u32::MAX.to_be_bytes().to_vec(), ErrorKind::TooLarge),
            (frame("not json"), ErrorKind::BadFrame),
            (frame(""), ErrorKind::BadFrame),
            (
                frame(r#"{"op":"list","validator":"val-a","x":1}"#),
                ErrorKind::BadFrame,
            ),
            (vec![0, 0], ErrorKind::BadFrame),
            (vec![0, 0, 0, 9, b'{'], ErrorKind::BadFrame),
            (
                put(palisade_wire::backup_store::MAX_PAYLOAD_BYTES as u64 + 1),
                ErrorKind::TooLarge,
            ),
            (put(3), ErrorKind::BadFrame),
            (short_prefix, ErrorKind::BadFrame),
            (wrong_length, ErrorKind::BadFrame),
        ];
        for (input, kind) in rows {
            let (end, forwarded) = run_requests(&input);
            assert_eq!(refusal(end), kind, "{input:?}");
            assert!(forwarded.is_empty(), "{input:?}");
        }
    }

    #[test]
    fn a_payload_cut_short_is_truncated() {
        let mut input = frame(r#"{"op":"put","validator":"val-a","file":"x.age","bytes":10}"#);
        input.extend(10u32.to_be_bytes());
        input.extend(b"12345");
        let (end, forwarded) = run_requests(&input);
        assert!(matches!(end, RequestsEnd::Truncated), "{end:?}");
        assert_eq!(forwarded, input, "streamed as far as it came");
    }

    #[test]
    fn refusals_are_protocol_responses() {
        let mut out = Vec::new();
        reply(&mut out, ErrorKind::Internal, "x");
        let length = u32::from_be_bytes(out[..4].try_into().unwrap()) as usize;
        assert_eq!(length, out.len() - 4);
        let response = decode_response(&out[4..]).unwrap();
        assert_eq!(response.error.unwrap().kind, ErrorKind::Internal);
    }
}
