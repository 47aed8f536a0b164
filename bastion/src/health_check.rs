//! Health checks of the validators through their reverse tunnels:
//! connection-level liveness.
//!
//! A probe connects to the validator's socket on this bastion (the bastion
//! end of the SSH reverse Unix-socket forward), reads one line — the
//! supervisor's greeting, [`palisade_wire::rpc::Greeting`] — and closes the
//! connection. A parsed greeting proves the whole path (socket → sshd → SSH
//! connection → validator host → supervisor) is alive; it needs and carries
//! no credential. The full status RPC comes later.
//!
//! - Every probe is bounded: connect and greeting together within the
//!   configured timeout, and never more than [`MAX_GREETING_BYTES`] read.
//! - The first probe runs at startup, then one every interval plus up to
//!   [`JITTER_FRACTION`] of it at random, so bastions started together
//!   drift apart instead of probing a validator in lockstep.
//! - The socket path tells most failures apart: no file means sshd holds no
//!   reverse forward there ("tunnel not established"), a file nobody listens
//!   on is what a vanished SSH session leaves behind ("tunnel down (stale
//!   socket)"), and a connection without a greeting means the tunnel is up
//!   but nothing answers behind it ("supervisor not answering: …").
//!
//! This module decides nothing about state changes or reporting: see
//! [`crate::health_state`] and [`crate::daemon`].

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use palisade_wire::rpc::{Greeting, GreetingError, MAX_GREETING_BYTES};
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Default time between two probes of one validator.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// Default bound on one probe (connect and greeting).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest random extra delay, as a fraction of the interval.
pub const JITTER_FRACTION: f64 = 0.1;

/// The configuration's `[health]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthCheckOptions {
    /// Time between two probes of one validator (plus jitter).
    pub interval: Duration,
    /// Bound on one probe: connecting and receiving the greeting line.
    pub timeout: Duration,
}

impl Default for HealthCheckOptions {
    fn default() -> Self {
        HealthCheckOptions {
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// A supervisor greeted.
    Up(Greeting),
    /// The validator cannot be reached; why.
    Down(DownReason),
}

/// Why a validator is down. The `Display` text is what operators read in
/// logs, `status` and the status file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownReason {
    /// Nothing at the socket path: the validator holds no reverse forward
    /// there (not connected yet, or sshd removed it).
    NoSocket,
    /// A socket file nobody listens on: left behind by an SSH session that
    /// ended.
    StaleSocket,
    /// Something other than a socket is at the path.
    NotASocket,
    /// The socket exists but this user may not connect to it.
    PermissionDenied,
    /// Connecting failed for another reason.
    ConnectFailed(String),
    /// Connected, but the peer closed the connection after `bytes` bytes,
    /// before a complete greeting line.
    ClosedEarly { bytes: usize },
    /// No complete greeting line within the timeout.
    TimedOut {
        after: Duration,
        /// False when even connecting did not finish in time.
        connected: bool,
    },
    /// Reading from the connection failed.
    ReadFailed(String),
    /// A line arrived, but it is not a supervisor's greeting.
    BadGreeting(GreetingError),
}

impl DownReason {
    /// Same kind of failure, details aside: a validator that stays down for
    /// the same kind of reason is not logged again.
    pub fn same_kind(&self, other: &DownReason) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }
}

impl fmt::Display for DownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let duration = |d: &Duration| humantime::format_duration(*d).to_string();
        match self {
            DownReason::NoSocket => write!(f, "tunnel not established (no socket)"),
            DownReason::StaleSocket => write!(f, "tunnel down (stale socket)"),
            DownReason::NotASocket => {
                write!(
                    f,
                    "not a socket: another kind of file is at the socket path"
                )
            }
            DownReason::PermissionDenied => write!(
                f,
                "permission denied on the socket: palisade-bastion must run as the SSH \
                 tunnel user that owns the forwarded socket"
            ),
            DownReason::ConnectFailed(error) => write!(f, "cannot connect: {error}"),
            DownReason::ClosedEarly { bytes: 0 } => write!(
                f,
                "supervisor not answering: connection closed without a greeting"
            ),
            DownReason::ClosedEarly { bytes } => write!(
                f,
                "supervisor not answering: connection closed after {bytes} bytes, \
                 before the end of the greeting line"
            ),
            DownReason::TimedOut {
                after,
                connected: true,
            } => write!(
                f,
                "supervisor not answering: no greeting within {}",
                duration(after)
            ),
            DownReason::TimedOut {
                after,
                connected: false,
            } => write!(
                f,
                "supervisor not answering: connecting took longer than {}",
                duration(after)
            ),
            DownReason::ReadFailed(error) => {
                write!(f, "supervisor not answering: read failed: {error}")
            }
            DownReason::BadGreeting(error) => write!(f, "supervisor not answering: {error}"),
        }
    }
}

/// Probe the validator socket at `socket` once, within `timeout`.
pub async fn probe(socket: &Path, timeout: Duration) -> ProbeOutcome {
    let deadline = Instant::now() + timeout;
    let mut stream = match tokio::time::timeout_at(deadline, UnixStream::connect(socket)).await {
        Err(_) => {
            return ProbeOutcome::Down(DownReason::TimedOut {
                after: timeout,
                connected: false,
            });
        }
        Ok(Err(error)) => return ProbeOutcome::Down(connect_failure(socket, &error).await),
        Ok(Ok(stream)) => stream,
    };
    match tokio::time::timeout_at(deadline, read_greeting(&mut stream)).await {
        Err(_) => ProbeOutcome::Down(DownReason::TimedOut {
            after: timeout,
            connected: true,
        }),
        Ok(outcome) => outcome,
    }
    // Dropping the stream closes the connection.
}

async fn connect_failure(socket: &Path, error: &io::Error) -> DownReason {
    match error.kind() {
        io::ErrorKind::NotFound => DownReason::NoSocket,
        io::ErrorKind::PermissionDenied => DownReason::PermissionDenied,
        // Connecting to a regular file is refused too; tell the two apart.
        io::ErrorKind::ConnectionRefused => {
            use std::os::unix::fs::FileTypeExt;
            match tokio::fs::metadata(socket).await {
                Ok(metadata) if !metadata.file_type().is_socket() => DownReason::NotASocket,
                _ => DownReason::StaleSocket,
            }
        }
        _ => DownReason::ConnectFailed(error.to_string()),
    }
}

/// Reads up to the first newline, never more than [`MAX_GREETING_BYTES`].
async fn read_greeting(stream: &mut UnixStream) -> ProbeOutcome {
    let mut buffer = [0u8; MAX_GREETING_BYTES];
    let mut filled = 0;
    loop {
        if filled == buffer.len() {
            return ProbeOutcome::Down(DownReason::BadGreeting(GreetingError::TooLong));
        }
        let read = match stream.read(&mut buffer[filled..]).await {
            Ok(0) => return ProbeOutcome::Down(DownReason::ClosedEarly { bytes: filled }),
            Ok(read) => read,
            Err(error) => return ProbeOutcome::Down(DownReason::ReadFailed(error.to_string())),
        };
        let received = &buffer[filled..filled + read];
        if let Some(newline) = received.iter().position(|&byte| byte == b'\n') {
            let line = &buffer[..filled + newline + 1];
            return match Greeting::parse(line) {
                Ok(greeting) => ProbeOutcome::Up(greeting),
                Err(error) => ProbeOutcome::Down(DownReason::BadGreeting(error)),
            };
        }
        filled += read;
    }
}

/// The wait before the next probe: `interval` plus `sample` (in `[0, 1)`)
/// times [`JITTER_FRACTION`] of it.
pub fn next_delay(interval: Duration, sample: f64) -> Duration {
    interval + interval.mul_f64(JITTER_FRACTION * sample.clamp(0.0, 1.0))
}

/// One probe's result, sent to the daemon's reporter.
#[derive(Debug)]
pub struct ProbeReport {
    /// Index of the validator in the configuration.
    pub index: usize,
    /// When the probe finished.
    pub checked_at: SystemTime,
    pub outcome: ProbeOutcome,
}

/// Probes one validator until `shutdown`: once at once, then every
/// interval plus jitter. Stops early when the reporter is gone.
pub async fn check_loop(
    index: usize,
    socket: PathBuf,
    options: HealthCheckOptions,
    reports: mpsc::Sender<ProbeReport>,
    shutdown: CancellationToken,
) {
    loop {
        let outcome = tokio::select! {
            outcome = probe(&socket, options.timeout) => outcome,
            _ = shutdown.cancelled() => return,
        };
        let report = ProbeReport {
            index,
            checked_at: SystemTime::now(),
            outcome,
        };
        if reports.send(report).await.is_err() {
            return;
        }
        let delay = next_delay(options.interval, rand::random::<f64>());
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn jitter_stays_within_a_tenth_of_the_interval() {
        let interval = Duration::from_secs(10);
        // (sample, expected)
        let rows = [
            (0.0, Duration::from_secs(10)),
            (0.5, Duration::from_millis(10_500)),
            (0.999, Duration::from_millis(10_999)),
            (7.0, Duration::from_secs(11)),
            (-1.0, Duration::from_secs(10)),
        ];
        for (sample, expected) in rows {
            assert_eq!(next_delay(interval, sample), expected, "{sample}");
        }
    }

    #[test]
    fn reasons_read_well_and_group_by_kind() {
        // (reason, expected text)
        let rows = [
            (DownReason::NoSocket, "tunnel not established (no socket)"),
            (DownReason::StaleSocket, "tunnel down (stale socket)"),
            (
                DownReason::ClosedEarly { bytes: 0 },
                "supervisor not answering: connection closed without a greeting",
            ),
            (
                DownReason::ClosedEarly { bytes: 12 },
                "supervisor not answering: connection closed after 12 bytes, before the end of the greeting line",
            ),
            (
                DownReason::TimedOut {
                    after: Duration::from_secs(3),
                    connected: true,
                },
                "supervisor not answering: no greeting within 3s",
            ),
            (
                DownReason::BadGreeting(GreetingError::TooLong),
                "supervisor not answering: greeting longer than 1024 bytes",
            ),
        ];
        for (reason, expected) in rows {
            assert_eq!(reason.to_string(), expected);
        }
        assert!(
            DownReason::ClosedEarly { bytes: 0 }.same_kind(&DownReason::ClosedEarly { bytes: 3 })
        );
        assert!(!DownReason::NoSocket.same_kind(&DownReason::StaleSocket));
    }

    /// A peer on a real socket that answers every connection with `reply`
    /// (or holds it silently when `None`).
    fn peer(path: &Path, reply: Option<Vec<u8>>) -> std::thread::JoinHandle<()> {
        let listener = UnixListener::bind(path).unwrap();
        std::thread::spawn(move || {
            use std::io::Write;
            let (mut stream, _) = listener.accept().unwrap();
            match reply {
                Some(bytes) => {
                    let _ = stream.write_all(&bytes);
                }
                // Hold the connection open until the prober gives up.
                None => {
                    let mut sink = [0u8; 16];
                    let _ = std::io::Read::read(&mut stream, &mut sink);
                }
            }
        })
    }

    #[tokio::test]
    async fn probes_tell_every_failure_apart() {
        let dir = tempfile::tempdir().unwrap();
        let timeout = Duration::from_millis(300);
        let path = |name: &str| dir.path().join(name);

        let greeting = Greeting::new("val-a", "0.1.0");
        let long_line = vec![b'{'; MAX_GREETING_BYTES + 10];
        let max_line = {
            // Exactly MAX_GREETING_BYTES with the newline: still accepted.
            let mut line = greeting.to_line();
            line.pop();
            let padding = MAX_GREETING_BYTES - line.len() - 1;
            line.extend(std::iter::repeat_n(b' ', padding));
            line.push(b'\n');
            line
        };
        let cases: Vec<(&str, Option<Vec<u8>>, ProbeOutcome)> = vec![
            (
                "up.sock",
                Some(greeting.to_line()),
                ProbeOutcome::Up(greeting.clone()),
            ),
            (
                "max.sock",
                Some(max_line),
                ProbeOutcome::Up(greeting.clone()),
            ),
            (
                "eof.sock",
                Some(Vec::new()),
                ProbeOutcome::Down(DownReason::ClosedEarly { bytes: 0 }),
            ),
            (
                "partial.sock",
                Some(b"{\"service\"".to_vec()),
                ProbeOutcome::Down(DownReason::ClosedEarly { bytes: 10 }),
            ),
            (
                "long.sock",
                Some(long_line),
                ProbeOutcome::Down(DownReason::BadGreeting(GreetingError::TooLong)),
            ),
            (
                "silent.sock",
                None,
                ProbeOutcome::Down(DownReason::TimedOut {
                    after: timeout,
                    connected: true,
                }),
            ),
        ];
        for (name, reply, expected) in cases {
            let server = peer(&path(name), reply);
            assert_eq!(probe(&path(name), timeout).await, expected, "{name}");
            server.join().unwrap();
        }

        let server = peer(
            &path("garbage.sock"),
            Some(b"SSH-2.0-OpenSSH_9.2\r\n".to_vec()),
        );
        let outcome = probe(&path("garbage.sock"), timeout).await;
        assert!(
            matches!(
                outcome,
                ProbeOutcome::Down(DownReason::BadGreeting(GreetingError::Malformed(_)))
            ),
            "{outcome:?}"
        );
        server.join().unwrap();

        assert_eq!(
            probe(&path("missing.sock"), timeout).await,
            ProbeOutcome::Down(DownReason::NoSocket)
        );
        drop(UnixListener::bind(path("stale.sock")).unwrap());
        assert_eq!(
            probe(&path("stale.sock"), timeout).await,
            ProbeOutcome::Down(DownReason::StaleSocket)
        );
        std::fs::write(path("file.sock"), b"not a socket").unwrap();
        assert_eq!(
            probe(&path("file.sock"), timeout).await,
            ProbeOutcome::Down(DownReason::NotASocket)
        );
    }
}
