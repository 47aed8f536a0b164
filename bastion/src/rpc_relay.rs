//! `palisade-bastion rpc-relay --config FILE [--validator NAME]...`: an
//! operator's SSH session to one validator's supervisor, the forced command
//! of the operators' keys.
//!
//! Operators reach a supervisor through a bastion with `palisade-ctl --via`.
//! A key with `port-forwarding` could do that with a `direct-streamlocal`
//! channel, but OpenSSH keeps one permission list for `direct-tcpip` and
//! `direct-streamlocal`, so the same key could open TCP connections from the
//! bastion to anything it reaches, and any Unix socket its account may use.
//! So the operators' keys get no forwarding at all:
//!
//! ```text
//! command="/usr/bin/palisade-bastion rpc-relay --config /etc/palisade-bastion/bastion.toml",restrict ssh-ed25519 AAAA… alice@laptop
//! ```
//!
//! The client opens a session and asks to run `palisade-rpc VALIDATOR`;
//! sshd runs this command instead, with that request in
//! `SSH_ORIGINAL_COMMAND` and stdin/stdout connected to the channel.
//!
//! - The request must be exactly two ASCII-whitespace-separated words,
//!   [`COMMAND_WORD`] and a configured `[[validator]]` name; with
//!   `--validator` (repeatable) in the key's line, also one of those, so an
//!   admin can limit one key to some validators. Every `--validator` must
//!   itself be configured.
//! - The relay connects to that validator's `socket` (within
//!   [`CONNECT_TIMEOUT`]) and copies bytes both ways, [`CHUNK`] at a time,
//!   without looking at them: the supervisor's greeting, then TLS with the
//!   pinned certificate and the operator's login, end to end. Relayed bytes
//!   are never logged or printed.
//! - End of stdin half-closes the socket; the relay goes on copying the
//!   supervisor's answers and exits 0 when the socket side closes (whether
//!   or not stdin has ended). There is no time limit of its own: an
//!   interactive `palisade-ctl` shell may stay open for hours.
//! - A refusal (no or malformed `SSH_ORIGINAL_COMMAND`, an unknown validator
//!   or one the key may not reach, an unusable configuration, an unreachable
//!   socket) is one line on stdout, [`REFUSAL_PREFIX`] and the message, where
//!   the client expects the supervisor's greeting, and the same line on
//!   stderr (by `main`); exit 1. Text from the client is cleaned
//!   ([`palisade_client::peer_text::clean`]) and shortened before it is
//!   shown, and the line fits in a greeting
//!   ([`palisade_wire::rpc::MAX_GREETING_BYTES`]).
//! - Once relaying has begun stdout is the supervisor's: a failure then
//!   (a broken pipe, a reset) goes to stderr only, exit 1.
//!
//! The same key may read the validator's **log archive**: the command
//! [`LOG_ARCHIVE_WORD`]` VALIDATOR` (`palisade-ctl logs --archive`), checked
//! by the same rules, runs a read-only store session instead
//! ([`crate::backup_session::run_log_archive`]: `list` and `get` of that
//! validator's log segments, nothing else). The segments are signed and
//! encrypted to the operators, so the bastion serves ciphertext it cannot
//! read. The store must let this account connect: the one-account layout,
//! or, with `tunnel-user`, an operators' account given access
//! (docs/bastion.md).

use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::pin::pin;
use std::time::Duration;

use palisade_client::peer_text::clean;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::config::{BastionConfig, Validator};

/// The variable in which sshd hands a forced command what the client asked
/// to run.
pub const ORIGINAL_COMMAND_VAR: &str = "SSH_ORIGINAL_COMMAND";

/// The first word of the command a client sends: `palisade-rpc VALIDATOR`
/// (the client's side: [`palisade_client::relay_command`]).
pub const COMMAND_WORD: &str = palisade_client::RELAY_COMMAND;

/// The first word of a log archive request: `palisade-log-archive
/// VALIDATOR` ([`palisade_client::log_archive_command`]).
pub const LOG_ARCHIVE_WORD: &str = palisade_client::LOG_ARCHIVE_COMMAND;

/// What the client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    /// The supervisor's control socket.
    Rpc,
    /// The validator's log segments, read-only.
    LogArchive,
}

/// How the one refusal line on stdout starts (the client shows such a line
/// as the error).
pub const REFUSAL_PREFIX: &str = palisade_client::RELAY_REFUSAL_PREFIX;

/// Longest wait for the validator's socket to accept the connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes moved per read/write, in each direction.
pub const CHUNK: usize = 64 * 1024;

/// Characters of client text shown in a refusal; the rest is cut.
const MAX_PEER_CHARS: usize = 80;

/// Why `rpc-relay` ended with exit 1; the text is for stderr.
#[derive(Debug)]
pub enum RelayFailure {
    /// Refused before relaying; the same message went to stdout.
    Refused(String),
    /// Relaying began and then failed; stdout was the supervisor's.
    Broken(String),
}

impl fmt::Display for RelayFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RelayFailure::Refused(message) => write!(f, "{message}"),
            RelayFailure::Broken(message) => write!(f, "rpc-relay: {message}"),
        }
    }
}

/// Runs one session on this process's stdin and stdout, for the client's
/// request in `SSH_ORIGINAL_COMMAND`; `allowed` are the `--validator`s
/// (empty: every configured validator). `Ok` means exit 0.
pub fn run(config_path: &Path, allowed: &[String]) -> Result<(), RelayFailure> {
    let original = std::env::var_os(ORIGINAL_COMMAND_VAR);
    let (service, name) = requested_validator(original.as_deref()).map_err(refuse)?;
    let config = BastionConfig::load_skipping_key(config_path).map_err(|error| {
        // A configuration error may span lines; the refusal is one.
        let text = error.to_string();
        let details: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .collect();
        refuse(format!(
            "the bastion's configuration is unusable: {}",
            details.join(" ")
        ))
    })?;
    let validator = choose(&config, allowed, &name).map_err(refuse)?;
    if service == Service::LogArchive {
        return crate::backup_session::run_log_archive(config_path, &validator.name)
            .map_err(|error| RelayFailure::Broken(format!("log archive: {error:#}")));
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| refuse(format!("cannot start the relay: {error}")))?;
    let outcome = runtime.block_on(async {
        let (input, output) = match (stdio(io::stdin().as_fd()), stdio(io::stdout().as_fd())) {
            (Ok(input), Ok(output)) => (input, output),
            (Err(error), _) | (_, Err(error)) => {
                return Err(refuse(format!("cannot use stdin/stdout: {error}")));
            }
        };
        let socket = connect(validator).await.map_err(refuse)?;
        relay(socket, input, output)
            .await
            .map_err(|error| RelayFailure::Broken(format!("{}: {error}", validator.name)))
    });
    // Not waiting for a read of stdin that may still be blocked: the
    // process ends now.
    runtime.shutdown_background();
    outcome
}

/// The validator named by the client's command, which must be
/// `palisade-rpc NAME`; `Err` is the refusal's message.
fn requested_validator(original: Option<&OsStr>) -> Result<(Service, String), String> {
    let Some(original) = original else {
        return Err(format!(
            "{ORIGINAL_COMMAND_VAR} is not set: rpc-relay is the forced command of an \
             operator's key in authorized_keys (command=\"palisade-bastion rpc-relay --config \
             …\"), not run by hand"
        ));
    };
    let original = original.to_string_lossy();
    match original.split_ascii_whitespace().collect::<Vec<_>>()[..] {
        [COMMAND_WORD, name] => Ok((Service::Rpc, name.to_owned())),
        [LOG_ARCHIVE_WORD, name] => Ok((Service::LogArchive, name.to_owned())),
        _ => Err(format!(
            "expected the command \"{COMMAND_WORD} VALIDATOR\" or \"{LOG_ARCHIVE_WORD} VALIDATOR\", got {}",
            quoted(&original)
        )),
    }
}

/// The configured validator `name`, if this key may reach it.
fn choose<'a>(
    config: &'a BastionConfig,
    allowed: &[String],
    name: &str,
) -> Result<&'a Validator, String> {
    // The key's own line first: a mistake there is the admin's to fix.
    if let Some(unknown) = allowed.iter().find(|a| config.validator(a).is_err()) {
        return Err(format!(
            "--validator {} in this key's forced command is not a configured validator; \
             fix the key's command= in authorized_keys",
            quoted(unknown)
        ));
    }
    // A restricted key learns only the validators it may reach.
    if !allowed.is_empty() && !allowed.iter().any(|a| a == name) {
        return Err(format!(
            "validator {}: this key may reach only {}",
            quoted(name),
            allowed.join(", ")
        ));
    }
    // The name is quoted with Rust's escapes; `refuse` cleans and bounds
    // the whole message.
    config.validator(name)
}

/// Client text as it may be shown: quoted, shortened, cleaned.
fn quoted(text: &str) -> String {
    let shown: String = match text.char_indices().nth(MAX_PEER_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    };
    format!("\"{}\"", clean(&shown))
}

/// Connects to `validator`'s socket within [`CONNECT_TIMEOUT`]; `Err` is
/// the refusal's message.
async fn connect(validator: &Validator) -> Result<UnixStream, String> {
    let socket = &validator.socket;
    let error = match tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(socket)).await {
        Ok(Ok(stream)) => return Ok(stream),
        Ok(Err(error)) => error.to_string(),
        Err(_) => format!(
            "no connection within {}",
            humantime::format_duration(CONNECT_TIMEOUT)
        ),
    };
    Err(format!(
        "cannot connect to {}'s socket {}: {error}: is the validator's tunnel up?",
        validator.name,
        socket.display()
    ))
}

/// Writes the refusal line to stdout (best effort: the client may be gone)
/// and returns the failure for stderr and the exit code.
fn refuse(message: String) -> RelayFailure {
    let message = fit_in_greeting(&clean(&message));
    let mut stdout = io::stdout().lock();
    let _ = writeln!(stdout, "{REFUSAL_PREFIX}{message}").and_then(|()| stdout.flush());
    RelayFailure::Refused(message)
}

/// `message` cut so that the refusal line, newline included, is no longer
/// than a greeting may be: the client reads no more.
fn fit_in_greeting(message: &str) -> String {
    let budget = palisade_wire::rpc::MAX_GREETING_BYTES - REFUSAL_PREFIX.len() - 1;
    if message.len() <= budget {
        return message.to_owned();
    }
    let mut end = budget - '…'.len_utf8();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

/// This process's stdin or stdout (a duplicate of the descriptor) for the
/// runtime: reads and writes run on its blocking pool.
fn stdio(fd: BorrowedFd<'_>) -> io::Result<tokio::fs::File> {
    Ok(tokio::fs::File::from_std(File::from(
        fd.try_clone_to_owned()?,
    )))
}

/// Copies `input` to the socket and the socket to `output` until the
/// socket side closes. End of `input` half-closes the socket. `Err` names
/// the direction and the error.
async fn relay(
    socket: UnixStream,
    mut input: impl AsyncRead + Unpin,
    mut output: impl AsyncWrite + Unpin,
) -> Result<(), String> {
    let (mut from_socket, mut to_socket) = socket.into_split();
    let upstream = async {
        let copied = copy(
            &mut input,
            "reading stdin",
            &mut to_socket,
            "writing to the socket",
        )
        .await;
        // Tells the supervisor that no more requests come; it answers what
        // it has and closes.
        let closed = to_socket
            .shutdown()
            .await
            .map_err(|error| format!("half-closing the socket: {error}"));
        copied.and(closed)
    };
    let downstream = copy(
        &mut from_socket,
        "reading the socket",
        &mut output,
        "writing stdout",
    );
    let mut upstream = pin!(upstream);
    let mut downstream = pin!(downstream);
    let mut upstream_end = None;
    loop {
        tokio::select! {
            end = &mut upstream, if upstream_end.is_none() => upstream_end = Some(end),
            end = &mut downstream => return end.and(upstream_end.unwrap_or(Ok(()))),
        }
    }
}

/// Copies `from` to `to`, [`CHUNK`] bytes at a time, flushing each, until
/// `from` ends; `Err` starts with the failing side's label.
async fn copy(
    from: &mut (impl AsyncRead + Unpin),
    reading: &str,
    to: &mut (impl AsyncWrite + Unpin),
    writing: &str,
) -> Result<(), String> {
    let mut buffer = vec![0u8; CHUNK];
    loop {
        let n = from
            .read(&mut buffer)
            .await
            .map_err(|error| format!("{reading}: {error}"))?;
        if n == 0 {
            return Ok(());
        }
        to.write_all(&buffer[..n])
            .await
            .and(to.flush().await)
            .map_err(|error| format!("{writing}: {error}"))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BastionConfig {
        let text = "listen-socket = \"/run/pb/bastion.sock\"\n\
                    backup-dir = \"/var/lib/pb\"\n\
                    [[validator]]\nname = \"val-a\"\nsocket = \"/run/pb/val-a.sock\"\n\
                    [[validator]]\nname = \"val-b\"\nsocket = \"/run/pb/val-b.sock\"\n";
        BastionConfig::parse(text, Path::new("bastion.toml")).unwrap()
    }

    #[test]
    fn the_command_is_palisade_rpc_and_a_name() {
        let ok = |text: &str| requested_validator(Some(OsStr::new(text)));
        assert_eq!(
            ok("palisade-rpc val-a").unwrap(),
            (Service::Rpc, "val-a".into())
        );
        assert_eq!(
            ok("  palisade-rpc\tval-a \n").unwrap(),
            (Service::Rpc, "val-a".into())
        );
        assert_eq!(
            ok("palisade-log-archive val-a").unwrap(),
            (Service::LogArchive, "val-a".into())
        );
        for bad in [
            "",
            "ls -la",
            "palisade-rpc",
            "palisade-rpc val-a extra",
            "palisade-log-archive",
            "palisade-log-archive val-a b",
            "PALISADE-RPC val-a",
            "palisade-rpc\u{a0}val-a",
        ] {
            let error = ok(bad).unwrap_err();
            assert!(
                error.starts_with(
                    "expected the command \"palisade-rpc VALIDATOR\" or \"palisade-log-archive VALIDATOR\", got \""
                ),
                "{bad:?}: {error}"
            );
        }
        let error = requested_validator(None).unwrap_err();
        assert!(error.contains("SSH_ORIGINAL_COMMAND is not set"), "{error}");
    }

    #[test]
    fn only_configured_and_allowed_validators_are_chosen() {
        let config = config();
        let allowed = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(choose(&config, &[], "val-b").unwrap().name, "val-b");
        assert_eq!(
            choose(&config, &allowed(&["val-a"]), "val-a")
                .unwrap()
                .socket,
            Path::new("/run/pb/val-a.sock")
        );
        let rows = [
            (
                allowed(&[]),
                "val-x",
                "unknown validator \"val-x\": the configured validators are val-a, val-b",
            ),
            (
                allowed(&["val-a"]),
                "val-b",
                "validator \"val-b\": this key may reach only val-a",
            ),
            // A restricted key is not told the other validators' names.
            (
                allowed(&["val-a"]),
                "val-x",
                "validator \"val-x\": this key may reach only val-a",
            ),
            (
                allowed(&["val-a", "val-z"]),
                "val-a",
                "--validator \"val-z\" in this key's forced command is not a configured validator",
            ),
        ];
        for (allowed, name, expected) in rows {
            let error = choose(&config, &allowed, name).unwrap_err();
            assert!(error.starts_with(expected), "{allowed:?} {name}: {error}");
        }
    }

    #[test]
    fn client_text_is_quoted_cleaned_and_shortened() {
        assert_eq!(quoted("ls -la"), "\"ls -la\"");
        assert_eq!(
            quoted("a\u{1b}[2J\u{7}\u{202e}b"),
            "\"a\\u{1b}[2J\\u{7}\\u{202e}b\""
        );
        let long = "x".repeat(1000);
        assert_eq!(
            quoted(&long),
            format!("\"{}…\"", "x".repeat(MAX_PEER_CHARS))
        );
    }

    #[test]
    fn a_refusal_line_fits_in_a_greeting() {
        let limit = palisade_wire::rpc::MAX_GREETING_BYTES;
        for message in ["short".to_string(), "é".repeat(2000), "x".repeat(5000)] {
            let fitted = fit_in_greeting(&message);
            assert!(
                REFUSAL_PREFIX.len() + fitted.len() < limit,
                "{}",
                fitted.len()
            );
            assert!(message.starts_with(fitted.trim_end_matches('…')));
        }
        assert_eq!(fit_in_greeting("short"), "short");
    }

    #[tokio::test]
    async fn relays_both_ways_and_ends_when_the_socket_closes() {
        let (relay_side, mut server) = UnixStream::pair().unwrap();
        let (mut client, input) = tokio::io::duplex(CHUNK);
        let (output, mut shown) = tokio::io::duplex(4 * CHUNK);
        let relaying = tokio::spawn(relay(relay_side, input, output));
        let request = vec![7u8; 3 * CHUNK + 5];
        client.write_all(&request).await.unwrap();
        drop(client);
        let mut received = Vec::new();
        server.read_to_end(&mut received).await.unwrap();
        assert_eq!(received, request, "stdin reached the socket, then its end");
        server
            .write_all(b"answer after the half-close")
            .await
            .unwrap();
        drop(server);
        relaying.await.unwrap().unwrap();
        let mut answer = Vec::new();
        shown.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"answer after the half-close");
    }
}
