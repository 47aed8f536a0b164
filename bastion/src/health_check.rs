//! Health checks of the validators through their reverse tunnels.
//!
//! A probe connects to the validator's socket on this bastion (the bastion
//! end of the SSH reverse Unix-socket forward), reads one line — the
//! supervisor's greeting, [`palisade_wire::rpc::Greeting`] — and closes the
//! connection. A parsed greeting proves the whole path (socket → sshd → SSH
//! connection → validator host → supervisor) is alive; it needs and carries
//! no credential.
//!
//! With [`Credentials`] (the bastion's `[client]` identity and the
//! validator's `pin`), a probe whose greeting arrived goes on over a second
//! connection with the control-RPC client (`palisade-client`): TLS with the
//! pinned certificate, login as the bastion's operator (a `viewer` on the
//! supervisor), then the `health` method. `{"ok":false,"problems":[…]}`
//! makes the validator down with those problems
//! ([`DownReason::SupervisorProblems`]); a refused certificate, TLS or
//! login is [`DownReason::HealthRefused`]; anything else that goes wrong
//! on the way is [`DownReason::HealthFailed`]. After a refused login the
//! login is not tried again for a while ([`LOGIN_RETRY_FIRST`], doubling up
//! to [`LOGIN_RETRY_MAX`]): the supervisor rate-limits failed logins for
//! everyone, so a misconfigured bastion must not keep its human operators
//! waiting.
//!
//! - Every probe is bounded: connect and greeting together within the
//!   configured timeout, the authenticated stage included, and never more
//!   than [`MAX_GREETING_BYTES`] read for the greeting (the RPC client
//!   bounds every line it reads).
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

use palisade_client::peer_text::clean;
use palisade_client::{
    CallError, Client, ConnectOptions, Endpoint, Fingerprint, OperatorKey, TlsPolicy,
};
use palisade_wire::rpc::results::HealthResult;
use palisade_wire::rpc::{Greeting, GreetingError, MAX_GREETING_BYTES, Role, RpcError};
use serde::Deserialize as _;
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Largest random extra delay, as a fraction of the interval.
pub const JITTER_FRACTION: f64 = 0.1;
/// After a refused login, the first wait before logging in again.
pub const LOGIN_RETRY_FIRST: Duration = Duration::from_secs(60);
/// The longest wait before logging in again after refused logins.
pub const LOGIN_RETRY_MAX: Duration = Duration::from_secs(15 * 60);
/// Most problems of one `health` answer that are kept (the rest counted).
pub const MAX_PROBLEMS: usize = 16;
/// Longest text kept of one problem or error message from the supervisor.
pub const MAX_DETAIL_CHARS: usize = 300;
/// How long a kept session may take to show that the supervisor closed it
/// (an idle timeout, a restart) before it is used again.
const OPEN_CHECK: Duration = Duration::from_millis(10);

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// A supervisor greeted (and, with credentials, said it is healthy).
    Up(Greeting),
    /// The validator cannot be reached; why.
    Down(DownReason),
    /// A supervisor greeted, but the authenticated health check failed or
    /// found problems: down, with the greeting still recorded.
    Unhealthy {
        greeting: Greeting,
        reason: DownReason,
    },
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
    /// The authenticated `health` call answered `ok: false` with these
    /// problems (cleaned, at most [`MAX_PROBLEMS`]).
    SupervisorProblems(Vec<String>),
    /// The authenticated check was refused: the certificate is not the
    /// pinned one, TLS failed, the login or the call was refused.
    HealthRefused(String),
    /// The authenticated check failed otherwise: the connection broke or
    /// timed out, the answer was not a `health` result, or the bastion's
    /// key is unusable.
    HealthFailed(String),
}

impl DownReason {
    /// Same kind of failure, details aside: a validator that stays down for
    /// the same kind of reason is not logged again. Problems reported by
    /// the supervisor and refusals are news whenever their text changes.
    pub fn same_kind(&self, other: &DownReason) -> bool {
        match (self, other) {
            (DownReason::SupervisorProblems(a), DownReason::SupervisorProblems(b)) => a == b,
            (DownReason::HealthRefused(a), DownReason::HealthRefused(b)) => a == b,
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
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
            DownReason::SupervisorProblems(problems) if problems.is_empty() => write!(
                f,
                "supervisor reports problems: none listed (health answered ok: false)"
            ),
            DownReason::SupervisorProblems(problems) => {
                write!(f, "supervisor reports problems: {}", problems.join("; "))
            }
            DownReason::HealthRefused(detail) => write!(f, "health check refused: {detail}"),
            DownReason::HealthFailed(detail) => write!(f, "health check failed: {detail}"),
        }
    }
}

/// What the authenticated stage needs: the bastion's `[client]` identity
/// and the validator's pinned certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The bastion's `[[operator]]` name on the supervisor.
    pub operator: String,
    /// Its private key file (read at each login, zeroized after).
    pub key: PathBuf,
    /// The supervisor's certificate.
    pub pin: Fingerprint,
}

/// Probes one validator; keeps what must outlive one probe (the login
/// back-off, the role warning, and the logged-in session).
#[derive(Debug)]
pub struct Prober {
    /// The validator's name, for log lines.
    name: String,
    socket: PathBuf,
    timeout: Duration,
    credentials: Option<Credentials>,
    login: LoginBackoff,
    /// The role above `viewer` last warned about.
    warned_role: Option<Role>,
    /// The authenticated connection of the last good check, reused while
    /// the supervisor keeps it open (its idle timeout, 60 s by default, is
    /// longer than the probe interval): one login per connection rather
    /// than per probe, which keeps the supervisor's log and its shared
    /// login rate limit for the operators.
    session: Option<Client>,
}

impl Prober {
    /// A prober of `socket` (validator `name`); with `credentials`, probes
    /// go on to the authenticated health check.
    pub fn new(
        name: impl Into<String>,
        socket: impl Into<PathBuf>,
        timeout: Duration,
        credentials: Option<Credentials>,
    ) -> Prober {
        Prober {
            name: name.into(),
            socket: socket.into(),
            timeout,
            credentials,
            login: LoginBackoff::default(),
            warned_role: None,
            session: None,
        }
    }

    /// One probe, within the timeout: the greeting, then (with
    /// credentials) TLS, login and `health`.
    pub async fn probe(&mut self) -> ProbeOutcome {
        let started = Instant::now();
        let deadline = started + self.timeout;
        let greeting = match probe_until(&self.socket, deadline, self.timeout).await {
            ProbeOutcome::Up(greeting) => greeting,
            other => return other,
        };
        let Some(credentials) = self.credentials.clone() else {
            return ProbeOutcome::Up(greeting);
        };
        if let Some(refusal) = self.login.holding(started) {
            return ProbeOutcome::Unhealthy {
                greeting,
                reason: refusal.clone(),
            };
        }
        // The client's own timers start later than `deadline`, so this
        // one fires first and names the whole stage.
        let stage = self.authenticated_health(&credentials);
        let result = match tokio::time::timeout_at(deadline, stage).await {
            Ok(result) => result,
            Err(_) => Err(Failure::Other(DownReason::HealthFailed(format!(
                "TLS, login and the health call did not finish within {} of the probe's start",
                humantime::format_duration(self.timeout)
            )))),
        };
        match result {
            Ok(answer) => {
                self.login.succeeded();
                let operator = credentials.operator.clone();
                self.check_role(answer.role, &operator);
                match answer.problems {
                    None => ProbeOutcome::Up(greeting),
                    Some(problems) => ProbeOutcome::Unhealthy {
                        greeting,
                        reason: DownReason::SupervisorProblems(problems),
                    },
                }
            }
            Err(Failure::Login(reason)) => {
                self.login.refused(Instant::now(), reason.clone());
                ProbeOutcome::Unhealthy { greeting, reason }
            }
            Err(Failure::Other(reason)) => ProbeOutcome::Unhealthy { greeting, reason },
        }
    }

    /// `health` on the kept session if the supervisor has not closed it,
    /// else on a new one (TLS, login); a session is kept only after a good
    /// answer. A timeout drops the future and with it the session.
    async fn authenticated_health(
        &mut self,
        credentials: &Credentials,
    ) -> Result<HealthAnswer, Failure> {
        if let Some(mut client) = self.session.take()
            && client.is_open(OPEN_CHECK).await
        {
            match client.call("health", None).await {
                Ok(result) => {
                    let problems = parse_health(&result).map_err(Failure::Other)?;
                    let role = client.role();
                    self.session = Some(client);
                    return Ok(HealthAnswer { problems, role });
                }
                // Closed under us (e.g. a supervisor restart): log in anew.
                Err(CallError::Connection(_)) => {}
                Err(error) => return Err(Failure::Other(call_failure_reason(&error))),
            }
        }
        let mut client = connect_session(&self.socket, credentials, self.timeout).await?;
        let result = client
            .call("health", None)
            .await
            .map_err(|error| Failure::Other(call_failure_reason(&error)))?;
        let problems = parse_health(&result).map_err(Failure::Other)?;
        let role = client.role();
        self.session = Some(client);
        Ok(HealthAnswer { problems, role })
    }

    /// A bastion's key should have role `viewer`: warn (once per role)
    /// when the supervisor grants more.
    fn check_role(&mut self, role: Option<Role>, operator: &str) {
        match role {
            Some(role) if role > Role::Viewer => {
                if self.warned_role != Some(role) {
                    self.warned_role = Some(role);
                    tracing::warn!(
                        validator = %self.name,
                        operator = %operator,
                        %role,
                        "the supervisor grants this bastion's key more than the viewer role: \
                         set role = \"viewer\" in its [[operator]] entry (docs/bastion.md)"
                    );
                }
            }
            _ => self.warned_role = None,
        }
    }
}

/// After refused logins, when to log in again.
#[derive(Debug, Default)]
struct LoginBackoff {
    /// Refused logins in a row.
    refusals: u32,
    /// No login before this; the last refusal is reported meanwhile.
    hold: Option<(Instant, DownReason)>,
}

impl LoginBackoff {
    /// The wait after `refusals` refused logins in a row (≥ 1).
    fn wait(refusals: u32) -> Duration {
        let doublings = refusals.saturating_sub(1).min(16);
        LOGIN_RETRY_FIRST
            .saturating_mul(1 << doublings)
            .min(LOGIN_RETRY_MAX)
    }

    fn refused(&mut self, now: Instant, reason: DownReason) {
        self.refusals = self.refusals.saturating_add(1);
        self.hold = Some((now + LoginBackoff::wait(self.refusals), reason));
    }

    fn succeeded(&mut self) {
        self.refusals = 0;
        self.hold = None;
    }

    /// The refusal to report instead of logging in, while held off.
    fn holding(&self, now: Instant) -> Option<&DownReason> {
        match &self.hold {
            Some((until, reason)) if now < *until => Some(reason),
            _ => None,
        }
    }
}

/// What a healthy or unhealthy `health` answer says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HealthAnswer {
    /// `None` when ok; otherwise the problems.
    problems: Option<Vec<String>>,
    /// The role the login granted.
    role: Option<Role>,
}

/// Why the authenticated stage did not get a `health` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    /// The supervisor refused the login (back off before the next one).
    Login(DownReason),
    /// Anything else.
    Other(DownReason),
}

/// A new session: TLS (pinned) and login as the bastion's `[client]`.
async fn connect_session(
    socket: &Path,
    credentials: &Credentials,
    timeout: Duration,
) -> Result<Client, Failure> {
    let key = OperatorKey::load(&credentials.operator, &credentials.key).map_err(|error| {
        Failure::Other(DownReason::HealthFailed(format!(
            "the bastion's [client] key is unusable: {}",
            clean(&error.to_string())
        )))
    })?;
    let options = ConnectOptions {
        endpoint: Endpoint::Socket(socket.to_path_buf()),
        tls: TlsPolicy::Always,
        server_uids: Vec::new(),
        pin: Some(credentials.pin.clone()),
        operator: Some(key),
        // Beyond the probe's deadline: the caller's bound fires first.
        call_timeout: timeout + Duration::from_secs(1),
    };
    Client::connect(options)
        .await
        .map_err(|error| connect_failure_reason(&error, &credentials.operator))
}

/// A failed connect (greeting, TLS, login) as a reason.
fn connect_failure_reason(error: &CallError, operator: &str) -> Failure {
    match error {
        CallError::Auth(rpc) => Failure::Login(DownReason::HealthRefused(format!(
            "login as {operator} refused: {}; the supervisor needs an [[operator]] entry \
             with name = \"{operator}\", this bastion's public key and role = \"viewer\"",
            describe_rpc_error(rpc)
        ))),
        CallError::PinMismatch { .. } | CallError::Tls(_) | CallError::NoPin => {
            Failure::Other(DownReason::HealthRefused(clean(&error.to_string())))
        }
        other => Failure::Other(DownReason::HealthFailed(clean(&other.to_string()))),
    }
}

/// A failed `health` call as a reason.
fn call_failure_reason(error: &CallError) -> DownReason {
    match error {
        CallError::Auth(rpc) => {
            DownReason::HealthRefused(format!("health call refused: {}", describe_rpc_error(rpc)))
        }
        CallError::Rpc(rpc) => {
            DownReason::HealthFailed(format!("health answered {}", describe_rpc_error(rpc)))
        }
        other => DownReason::HealthFailed(clean(&other.to_string())),
    }
}

/// `message (code N)`, the message cleaned and bounded.
pub fn describe_rpc_error(error: &RpcError) -> String {
    let mut message = clean(&error.message);
    truncate(&mut message);
    format!("{message} (code {})", error.code)
}

/// Read a `health` result: `Ok(None)` when `ok` is true, `Ok(Some(problems))`
/// when false, an error reason when it is not a `health` result.
fn parse_health(result: &Value) -> Result<Option<Vec<String>>, DownReason> {
    let health = HealthResult::deserialize(result).map_err(|_| {
        let mut shown = clean(&result.to_string());
        truncate(&mut shown);
        DownReason::HealthFailed(format!(
            "the health answer is not {{\"ok\":bool,\"problems\":[…]}}: {shown}"
        ))
    })?;
    if health.ok {
        return Ok(None);
    }
    let mut problems: Vec<String> = health
        .problems
        .iter()
        .take(MAX_PROBLEMS)
        .map(|problem| {
            let mut text = clean(problem);
            truncate(&mut text);
            text
        })
        .collect();
    if health.problems.len() > MAX_PROBLEMS {
        problems.push(format!("and {} more", health.problems.len() - MAX_PROBLEMS));
    }
    Ok(Some(problems))
}

/// At most [`MAX_DETAIL_CHARS`] characters, `…` marking a cut.
pub fn truncate(text: &mut String) {
    if let Some((index, _)) = text.char_indices().nth(MAX_DETAIL_CHARS) {
        text.truncate(index);
        text.push('…');
    }
}

/// Probe the validator socket at `socket` once, within `timeout`: the
/// greeting only.
#[cfg(test)]
pub async fn probe(socket: &Path, timeout: Duration) -> ProbeOutcome {
    probe_until(socket, Instant::now() + timeout, timeout).await
}

/// The greeting probe, ending by `deadline` (`timeout` from its start).
async fn probe_until(socket: &Path, deadline: Instant, timeout: Duration) -> ProbeOutcome {
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
/// `interval` plus jitter. Stops early when the reporter is gone.
pub async fn check_loop(
    index: usize,
    mut prober: Prober,
    interval: Duration,
    reports: mpsc::Sender<ProbeReport>,
    shutdown: CancellationToken,
) {
    loop {
        let outcome = tokio::select! {
            outcome = prober.probe() => outcome,
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
        let delay = next_delay(interval, rand::random::<f64>());
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_wire::rpc::code;
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

    #[test]
    fn authenticated_reasons_read_well_and_are_news_when_their_text_changes() {
        let problems = |list: &[&str]| {
            DownReason::SupervisorProblems(list.iter().map(ToString::to_string).collect())
        };
        // (reason, expected text)
        let rows = [
            (
                problems(&["vault is locked", "node is locked"]),
                "supervisor reports problems: vault is locked; node is locked",
            ),
            (
                problems(&[]),
                "supervisor reports problems: none listed (health answered ok: false)",
            ),
            (
                DownReason::HealthRefused("login as b1 refused".into()),
                "health check refused: login as b1 refused",
            ),
            (
                DownReason::HealthFailed("connection lost".into()),
                "health check failed: connection lost",
            ),
        ];
        for (reason, expected) in rows {
            assert_eq!(reason.to_string(), expected);
        }
        assert!(problems(&["a"]).same_kind(&problems(&["a"])));
        assert!(!problems(&["a"]).same_kind(&problems(&["a", "b"])));
        assert!(!problems(&["a"]).same_kind(&DownReason::HealthRefused("a".into())));
        assert!(
            !DownReason::HealthRefused("pin".into())
                .same_kind(&DownReason::HealthRefused("login".into()))
        );
        // Failures differ in details (timeouts, errno): one kind.
        assert!(
            DownReason::HealthFailed("x".into()).same_kind(&DownReason::HealthFailed("y".into()))
        );
    }

    #[test]
    fn health_answers_are_read_strictly_and_bounded() {
        use serde_json::json;
        assert_eq!(parse_health(&json!({"ok": true, "problems": []})), Ok(None));
        assert_eq!(
            parse_health(&json!({"ok": false, "problems": ["vault is locked"]})),
            Ok(Some(vec!["vault is locked".to_string()]))
        );
        // Control characters are escaped, long texts cut, long lists counted.
        let long = "x".repeat(MAX_DETAIL_CHARS + 50);
        let mut many: Vec<Value> = (0..MAX_PROBLEMS + 3)
            .map(|i| json!(format!("p{i}")))
            .collect();
        many[0] = json!("line\nbreak\u{1b}[31m");
        many[1] = json!(long);
        let Ok(Some(read)) = parse_health(&json!({"ok": false, "problems": many})) else {
            panic!("not read");
        };
        assert_eq!(read.len(), MAX_PROBLEMS + 1);
        assert_eq!(read[0], "line\\nbreak\\u{1b}[31m");
        assert_eq!(read[1].chars().count(), MAX_DETAIL_CHARS + 1);
        assert!(read[1].ends_with('…'));
        assert_eq!(read[MAX_PROBLEMS], "and 3 more");
        for bad in [
            json!({"problems": []}),
            json!({"ok": "false"}),
            json!({"ok": false, "problems": "vault is locked"}),
            json!({"ok": false, "problems": ["vault is locked", 7]}),
            json!({"ok": false}),
            json!([true]),
            json!(null),
        ] {
            let error = parse_health(&bad).unwrap_err();
            assert!(
                matches!(&error, DownReason::HealthFailed(text) if text.starts_with("the health answer is not")),
                "{bad}: {error:?}"
            );
        }
    }

    #[test]
    fn refused_logins_back_off_and_a_success_resets() {
        assert_eq!(LoginBackoff::wait(1), LOGIN_RETRY_FIRST);
        assert_eq!(LoginBackoff::wait(2), LOGIN_RETRY_FIRST * 2);
        assert_eq!(LoginBackoff::wait(4), LOGIN_RETRY_FIRST * 8);
        assert_eq!(LoginBackoff::wait(5), LOGIN_RETRY_MAX);
        assert_eq!(LoginBackoff::wait(u32::MAX), LOGIN_RETRY_MAX);

        let refusal = DownReason::HealthRefused("login as b1 refused".into());
        let start = Instant::now();
        let mut backoff = LoginBackoff::default();
        assert_eq!(backoff.holding(start), None);
        backoff.refused(start, refusal.clone());
        assert_eq!(backoff.holding(start), Some(&refusal));
        assert_eq!(
            backoff.holding(start + LOGIN_RETRY_FIRST - Duration::from_millis(1)),
            Some(&refusal)
        );
        assert_eq!(backoff.holding(start + LOGIN_RETRY_FIRST), None);
        backoff.refused(start, refusal.clone());
        assert_eq!(
            backoff.holding(start + LOGIN_RETRY_FIRST),
            Some(&refusal),
            "the second refusal holds twice as long"
        );
        backoff.succeeded();
        assert_eq!(backoff.holding(start), None);
        assert_eq!(backoff.refusals, 0);
    }

    #[test]
    fn client_errors_become_clear_reasons() {
        let refused = RpcError::new(code::UNAUTHENTICATED, "login refused");
        match connect_failure_reason(&CallError::Auth(refused), "bastion-b1") {
            Failure::Login(DownReason::HealthRefused(text)) => {
                assert!(
                    text.starts_with("login as bastion-b1 refused: login refused (code -32001)"),
                    "{text}"
                );
                assert!(text.contains("role = \"viewer\""), "{text}");
            }
            other => panic!("{other:?}"),
        }
        let pin = CallError::PinMismatch {
            pinned: "sha256:aa".into(),
            presented: "sha256:bb".into(),
        };
        match connect_failure_reason(&pin, "b1") {
            Failure::Other(DownReason::HealthRefused(text)) => {
                assert!(
                    text.contains("sha256:aa") && text.contains("sha256:bb"),
                    "{text}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            connect_failure_reason(&CallError::Tls("handshake".into()), "b1"),
            Failure::Other(DownReason::HealthRefused(_))
        ));
        assert!(matches!(
            connect_failure_reason(&CallError::Connection("closed\n".into()), "b1"),
            Failure::Other(DownReason::HealthFailed(text)) if text == "closed\\n"
        ));
        let mut forbidden = RpcError::new(code::FORBIDDEN, "forbidden");
        forbidden.data = Some(serde_json::json!({"required": "operator"}));
        assert_eq!(
            call_failure_reason(&CallError::Auth(forbidden)).to_string(),
            "health check refused: health call refused: forbidden (code -32002)"
        );
        assert_eq!(
            call_failure_reason(&CallError::Rpc(RpcError::new(
                code::METHOD_NOT_FOUND,
                "unknown method"
            )))
            .to_string(),
            "health check failed: health answered unknown method (code -32601)"
        );
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
