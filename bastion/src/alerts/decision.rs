//! What to send when: pure, no I/O, no clocks of its own.
//!
//! [`AlertBook::observe`] folds one health-check result of one validator
//! ([`Findings`]) into the set of active alerts and returns the
//! [`Notification`]s it causes: `Firing` when an alert starts, `Repeat`
//! when it is confirmed again `repeat-interval` after it was last sent,
//! `Resolved` when a result shows it is gone. An alert is identified by
//! validator and [`AlertName`] (deduplication: one alert per key while it
//! lasts; a change of its detail text updates the text without sending).
//!
//! What a result confirms or clears:
//!
//! | result                              | fires           | resolves                        |
//! |-------------------------------------|-----------------|---------------------------------|
//! | up (greeting, and `health` ok)      | —               | every alert of the validator    |
//! | unreachable (no greeting)           | `unreachable`   | — (problems unknown: held)      |
//! | greeting, `health` refused/failed   | `health-check`  | `unreachable`                   |
//! | greeting, `health` lists problems   | one per problem | everything not in the list      |
//!
//! [`SinkGate`] then decides per sink: resolve messages only when the sink
//! wants them, and at most `max-per-hour` firing and repeat messages in any
//! hour (resolve messages are not counted: there is at most one per
//! firing, and a dropped one would leave an incident open).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use crate::health_check::{DownReason, ProbeOutcome};

/// Longest problem key kept (PagerDuty's `dedup_key` is at most 255).
const MAX_PROBLEM_KEY_CHARS: usize = 100;
const HOUR: Duration = Duration::from_secs(3600);

/// What one health check found, as far as alerts are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Findings {
    /// Greeting received and, with the authenticated check, `health` ok.
    Healthy,
    /// No greeting: why.
    Unreachable(String),
    /// Greeting received, the authenticated check refused or failed: why.
    CheckFailed(String),
    /// The supervisor's `health` answered these problems.
    Problems(Vec<String>),
}

impl Findings {
    pub fn from_outcome(outcome: &ProbeOutcome) -> Findings {
        match outcome {
            ProbeOutcome::Up(_) => Findings::Healthy,
            ProbeOutcome::Down(reason) => Findings::Unreachable(reason.to_string()),
            ProbeOutcome::Unhealthy {
                reason: DownReason::SupervisorProblems(problems),
                ..
            } if problems.is_empty() => Findings::Problems(vec![
                "health answered ok: false without naming a problem".into(),
            ]),
            ProbeOutcome::Unhealthy {
                reason: DownReason::SupervisorProblems(problems),
                ..
            } => Findings::Problems(problems.clone()),
            ProbeOutcome::Unhealthy { reason, .. } => Findings::CheckFailed(reason.to_string()),
        }
    }
}

/// Which alert of a validator.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum AlertName {
    /// The validator's socket gives no greeting.
    Unreachable,
    /// The authenticated `health` check is refused or fails.
    HealthCheck,
    /// One problem the supervisor reports, by [`problem_key`].
    Problem(String),
}

impl AlertName {
    pub fn severity(&self) -> Severity {
        match self {
            AlertName::Unreachable => Severity::Critical,
            AlertName::Problem(_) => Severity::Error,
            AlertName::HealthCheck => Severity::Warning,
        }
    }
}

impl fmt::Display for AlertName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AlertName::Unreachable => f.write_str("unreachable"),
            AlertName::HealthCheck => f.write_str("health-check"),
            AlertName::Problem(key) => write!(f, "problem:{key}"),
        }
    }
}

/// PagerDuty's severities, which the other sinks show as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Critical,
    Error,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// The identity of a problem: its text up to the first `": "` or `" ("`,
/// so that `tunnel to b2 is down: connection refused` and `… : timed out`
/// are one alert whose text follows the latest answer.
pub fn problem_key(problem: &str) -> String {
    let end = [problem.find(": "), problem.find(" (")]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(problem.len());
    let key = problem[..end].trim();
    let key = if key.is_empty() { problem.trim() } else { key };
    key.chars().take(MAX_PROBLEM_KEY_CHARS).collect()
}

/// Why a notification is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Firing,
    /// Still firing, `repeat-interval` after the last message.
    Repeat,
    Resolved,
}

/// One message to send (to every sink that admits it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub event: Event,
    pub validator: String,
    pub alert: AlertName,
    pub severity: Severity,
    /// The latest detail, e.g. `tunnel down (stale socket)`.
    pub detail: String,
    /// When the alert began.
    pub since: SystemTime,
    /// When the health check that caused this finished.
    pub at: SystemTime,
}

#[derive(Debug, Clone)]
struct Active {
    detail: String,
    since: SystemTime,
    last_sent: Instant,
}

/// The active alerts of every validator.
#[derive(Debug)]
pub struct AlertBook {
    repeat_interval: Duration,
    active: BTreeMap<(String, AlertName), Active>,
}

impl AlertBook {
    pub fn new(repeat_interval: Duration) -> AlertBook {
        AlertBook {
            repeat_interval,
            active: BTreeMap::new(),
        }
    }

    /// The alerts active now, as (validator, name).
    #[cfg(test)]
    pub fn active(&self) -> impl Iterator<Item = (&str, &AlertName)> {
        self.active.keys().map(|(v, a)| (v.as_str(), a))
    }

    /// Fold in one result of `validator`'s health check, finished at `at`
    /// (wall clock, shown in messages) and `now` (monotonic, for repeats).
    pub fn observe(
        &mut self,
        validator: &str,
        findings: Findings,
        at: SystemTime,
        now: Instant,
    ) -> Vec<Notification> {
        // What holds now, and whether the result says anything about the
        // other alerts of this validator.
        let (current, clears_others): (Vec<(AlertName, String)>, Clears) = match findings {
            Findings::Healthy => (Vec::new(), Clears::All),
            Findings::Unreachable(reason) => (
                vec![(AlertName::Unreachable, format!("unreachable: {reason}"))],
                Clears::Nothing,
            ),
            Findings::CheckFailed(reason) => (
                vec![(AlertName::HealthCheck, reason)],
                Clears::Only(AlertName::Unreachable),
            ),
            Findings::Problems(problems) => {
                let mut grouped: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for problem in problems {
                    grouped
                        .entry(problem_key(&problem))
                        .or_default()
                        .push(problem);
                }
                let current = grouped
                    .into_iter()
                    .map(|(key, texts)| (AlertName::Problem(key), texts.join("; ")))
                    .collect();
                (current, Clears::All)
            }
        };
        let mut out = Vec::new();
        let key_of = |name: &AlertName| (validator.to_string(), name.clone());
        let resolved: Vec<(String, AlertName)> = self
            .active
            .keys()
            .filter(|(v, name)| {
                v == validator
                    && !current.iter().any(|(c, _)| c == name)
                    && match &clears_others {
                        Clears::All => true,
                        Clears::Nothing => false,
                        Clears::Only(only) => only == name,
                    }
            })
            .cloned()
            .collect();
        for key in resolved {
            if let Some(active) = self.active.remove(&key) {
                out.push(Notification {
                    event: Event::Resolved,
                    validator: validator.to_string(),
                    severity: key.1.severity(),
                    alert: key.1,
                    detail: active.detail,
                    since: active.since,
                    at,
                });
            }
        }
        for (name, detail) in current {
            let event = match self.active.get_mut(&key_of(&name)) {
                Some(active) => {
                    active.detail = detail;
                    if now.saturating_duration_since(active.last_sent) >= self.repeat_interval {
                        active.last_sent = now;
                        Some((Event::Repeat, active.clone()))
                    } else {
                        None
                    }
                }
                None => {
                    let active = Active {
                        detail,
                        since: at,
                        last_sent: now,
                    };
                    self.active.insert(key_of(&name), active.clone());
                    Some((Event::Firing, active))
                }
            };
            if let Some((event, active)) = event {
                out.push(Notification {
                    event,
                    validator: validator.to_string(),
                    severity: name.severity(),
                    alert: name,
                    detail: active.detail,
                    since: active.since,
                    at,
                });
            }
        }
        out
    }
}

enum Clears {
    All,
    Nothing,
    Only(AlertName),
}

/// Whether a sink takes a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Send,
    /// A resolve message, and the sink has `send-resolved = false`.
    ResolvedNotWanted,
    /// Over `max-per-hour`: dropped (and counted in [`SinkGate::dropped`]).
    RateLimited,
}

/// One sink's filter and rate limit.
#[derive(Debug)]
pub struct SinkGate {
    max_per_hour: u32,
    send_resolved: bool,
    /// When the firing and repeat messages of the last hour were admitted.
    sent: VecDeque<Instant>,
    /// Messages dropped by the rate limit since start.
    pub dropped: u64,
}

impl SinkGate {
    pub fn new(max_per_hour: u32, send_resolved: bool) -> SinkGate {
        SinkGate {
            max_per_hour,
            send_resolved,
            sent: VecDeque::new(),
            dropped: 0,
        }
    }

    pub fn admit(&mut self, event: Event, now: Instant) -> Admission {
        if event == Event::Resolved {
            return if self.send_resolved {
                Admission::Send
            } else {
                Admission::ResolvedNotWanted
            };
        }
        while let Some(&first) = self.sent.front() {
            if now.saturating_duration_since(first) >= HOUR {
                self.sent.pop_front();
            } else {
                break;
            }
        }
        if self.sent.len() >= self.max_per_hour as usize {
            self.dropped += 1;
            return Admission::RateLimited;
        }
        self.sent.push_back(now);
        Admission::Send
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_wire::rpc::Greeting;

    const REPEAT: Duration = Duration::from_secs(600);

    /// The (event, alert) pairs a row expects.
    type Expected = Vec<(Event, &'static str)>;

    fn wall(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seconds)
    }

    fn problems(list: &[&str]) -> Findings {
        Findings::Problems(list.iter().map(ToString::to_string).collect())
    }

    fn unreachable() -> Findings {
        Findings::Unreachable("tunnel down (stale socket)".into())
    }

    /// (event, alert) pairs, for compact tables.
    fn events(notifications: &[Notification]) -> Vec<(Event, String)> {
        notifications
            .iter()
            .map(|n| (n.event, n.alert.to_string()))
            .collect()
    }

    #[test]
    fn fires_once_repeats_after_the_interval_and_resolves() {
        let start = Instant::now();
        let mut book = AlertBook::new(REPEAT);
        use Event::*;
        // (seconds, validator, findings, expected (event, alert))
        let rows: Vec<(u64, &str, Findings, Expected)> = vec![
            (0, "val-a", Findings::Healthy, vec![]),
            (10, "val-a", unreachable(), vec![(Firing, "unreachable")]),
            // Deduplicated while it lasts, another reason included.
            (20, "val-a", unreachable(), vec![]),
            (
                30,
                "val-a",
                Findings::Unreachable("tunnel not established (no socket)".into()),
                vec![],
            ),
            // Another validator is another alert.
            (40, "val-b", unreachable(), vec![(Firing, "unreachable")]),
            (609, "val-a", unreachable(), vec![]),
            (610, "val-a", unreachable(), vec![(Repeat, "unreachable")]),
            (620, "val-a", unreachable(), vec![]),
            (1210, "val-a", unreachable(), vec![(Repeat, "unreachable")]),
            (
                1220,
                "val-a",
                Findings::Healthy,
                vec![(Resolved, "unreachable")],
            ),
            (1230, "val-a", Findings::Healthy, vec![]),
            (1240, "val-a", unreachable(), vec![(Firing, "unreachable")]),
        ];
        for (seconds, validator, findings, expected) in rows {
            let got = book.observe(
                validator,
                findings,
                wall(seconds),
                start + Duration::from_secs(seconds),
            );
            let expected: Vec<(Event, String)> = expected
                .into_iter()
                .map(|(e, a)| (e, a.to_string()))
                .collect();
            assert_eq!(events(&got), expected, "t={seconds}");
        }
        let active: Vec<_> = book.active().map(|(v, a)| format!("{v}/{a}")).collect();
        assert_eq!(active, ["val-a/unreachable", "val-b/unreachable"]);
    }

    #[test]
    fn the_notification_carries_the_latest_detail_and_the_start() {
        let start = Instant::now();
        let mut book = AlertBook::new(REPEAT);
        book.observe("val-a", unreachable(), wall(10), start);
        book.observe(
            "val-a",
            Findings::Unreachable("tunnel not established (no socket)".into()),
            wall(20),
            start + Duration::from_secs(10),
        );
        let resolved = book.observe("val-a", Findings::Healthy, wall(30), start);
        assert_eq!(
            resolved,
            vec![Notification {
                event: Event::Resolved,
                validator: "val-a".into(),
                alert: AlertName::Unreachable,
                severity: Severity::Critical,
                detail: "unreachable: tunnel not established (no socket)".into(),
                since: wall(10),
                at: wall(30),
            }]
        );
    }

    #[test]
    fn supervisor_problems_are_one_alert_each_and_held_while_unreachable() {
        let start = Instant::now();
        let mut book = AlertBook::new(REPEAT);
        use Event::*;
        let rows: Vec<(u64, Findings, Expected)> = vec![
            (
                0,
                problems(&[
                    "vault is locked",
                    "tunnel to b2 is down: connection refused",
                ]),
                vec![
                    (Firing, "problem:tunnel to b2 is down"),
                    (Firing, "problem:vault is locked"),
                ],
            ),
            // The tunnel's detail changes: the same alert.
            (
                10,
                problems(&["vault is locked", "tunnel to b2 is down: timed out"]),
                vec![],
            ),
            // Unreachable: the problems are unknown, held (not resolved).
            (20, unreachable(), vec![(Firing, "unreachable")]),
            // The health check fails: reachable again, problems still unknown.
            (
                30,
                Findings::CheckFailed("health check failed: connection lost".into()),
                vec![(Resolved, "unreachable"), (Firing, "health-check")],
            ),
            // A full answer: what is not listed is resolved.
            (
                40,
                problems(&["vault is locked"]),
                vec![
                    (Resolved, "health-check"),
                    (Resolved, "problem:tunnel to b2 is down"),
                ],
            ),
            (
                50,
                Findings::Healthy,
                vec![(Resolved, "problem:vault is locked")],
            ),
        ];
        for (seconds, findings, expected) in rows {
            let got = book.observe(
                "val-a",
                findings,
                wall(seconds),
                start + Duration::from_secs(seconds),
            );
            let expected: Vec<(Event, String)> = expected
                .into_iter()
                .map(|(e, a)| (e, a.to_string()))
                .collect();
            assert_eq!(events(&got), expected, "t={seconds}");
        }
        assert_eq!(book.active().count(), 0);
    }

    #[test]
    fn problem_keys_drop_the_details() {
        // (problem, key)
        let rows = [
            ("vault is locked", "vault is locked"),
            (
                "tunnel to b2 is down: not connected yet",
                "tunnel to b2 is down",
            ),
            ("failover: etcd cannot be reached (timeout)", "failover"),
            ("node is stopped", "node is stopped"),
            ("odd (detail): x", "odd"),
            (": leading", ": leading"),
        ];
        for (problem, key) in rows {
            assert_eq!(problem_key(problem), key, "{problem}");
        }
        assert_eq!(problem_key(&"x".repeat(500)).len(), MAX_PROBLEM_KEY_CHARS);
    }

    #[test]
    fn probe_outcomes_map_to_findings() {
        let greeting = Greeting::new("val-a", "0.1.0");
        // (outcome, findings)
        let rows = [
            (ProbeOutcome::Up(greeting.clone()), Findings::Healthy),
            (
                ProbeOutcome::Down(DownReason::NoSocket),
                Findings::Unreachable("tunnel not established (no socket)".into()),
            ),
            (
                ProbeOutcome::Unhealthy {
                    greeting: greeting.clone(),
                    reason: DownReason::SupervisorProblems(vec!["vault is locked".into()]),
                },
                problems(&["vault is locked"]),
            ),
            (
                ProbeOutcome::Unhealthy {
                    greeting: greeting.clone(),
                    reason: DownReason::SupervisorProblems(vec![]),
                },
                problems(&["health answered ok: false without naming a problem"]),
            ),
            (
                ProbeOutcome::Unhealthy {
                    greeting,
                    reason: DownReason::HealthRefused("login as b1 refused".into()),
                },
                Findings::CheckFailed("health check refused: login as b1 refused".into()),
            ),
        ];
        for (outcome, findings) in rows {
            assert_eq!(Findings::from_outcome(&outcome), findings, "{outcome:?}");
        }
    }

    #[test]
    fn the_rate_limit_counts_an_hour_and_spares_resolves() {
        let start = Instant::now();
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        let mut gate = SinkGate::new(2, true);
        use Admission::*;
        // (seconds, event, admission, dropped so far)
        let rows = [
            (0, Event::Firing, Send, 0),
            (10, Event::Repeat, Send, 0),
            (20, Event::Firing, RateLimited, 1),
            (30, Event::Resolved, Send, 1),
            (3599, Event::Firing, RateLimited, 2),
            // The first one is an hour old: room for one.
            (3600, Event::Firing, Send, 2),
            (3601, Event::Firing, RateLimited, 3),
            (3610, Event::Firing, Send, 3),
        ];
        for (seconds, event, admission, dropped) in rows {
            assert_eq!(gate.admit(event, at(seconds)), admission, "t={seconds}");
            assert_eq!(gate.dropped, dropped, "t={seconds}");
        }
        let mut quiet = SinkGate::new(1, false);
        assert_eq!(quiet.admit(Event::Resolved, start), ResolvedNotWanted);
        assert_eq!(quiet.admit(Event::Firing, start), Send);
        assert_eq!(quiet.dropped, 0);
    }
}
