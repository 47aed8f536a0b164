//! What the bastion knows about each validator's health, and which probe
//! results are news.
//!
//! Pure: [`ValidatorHealth::record`] folds one probe outcome into the state
//! and says what changed, so the daemon logs state changes (and only those)
//! and tests need no sockets or clocks.

use std::path::PathBuf;
use std::time::SystemTime;

use palisade_wire::rpc::Greeting;
use serde::{Deserialize, Serialize};

use crate::health_check::{DownReason, ProbeOutcome};

/// A validator's state as last observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Not checked yet since the daemon started.
    Unknown,
    /// The last probe received a supervisor's greeting (and, with the
    /// authenticated check, a healthy `health` answer).
    Up,
    /// The last probe failed, or the supervisor reported problems.
    Down,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Unknown => "unknown",
            State::Up => "up",
            State::Down => "down",
        }
    }
}

/// Who answered, from the greeting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisorIdentity {
    /// The validator name the supervisor announced.
    pub validator: String,
    /// The supervisor's release.
    pub version: String,
    /// Its control-protocol version.
    pub protocol: u32,
}

impl From<Greeting> for SupervisorIdentity {
    fn from(greeting: Greeting) -> Self {
        SupervisorIdentity {
            validator: greeting.validator,
            version: greeting.version,
            protocol: greeting.protocol,
        }
    }
}

/// Health of one configured validator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatorHealth {
    /// Configured name.
    pub name: String,
    /// Configured socket.
    pub socket: PathBuf,
    pub state: State,
    /// When `state` began (the daemon's start for `Unknown`).
    pub since: SystemTime,
    /// When the last probe finished.
    pub last_checked: Option<SystemTime>,
    /// Why the latest failed probe failed; kept after recovery.
    pub last_error: Option<DownReason>,
    /// From the latest greeting; kept while down.
    pub supervisor: Option<SupervisorIdentity>,
    /// Failed probes since the last success.
    pub consecutive_failures: u64,
}

/// What a probe result changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// Nothing worth logging: same state, same kind of reason, same
    /// supervisor.
    Unchanged,
    /// First result since startup: up.
    FirstUp,
    /// First result since startup: down.
    FirstDown,
    /// Was down (after `failures` failed probes since `down_since`), is up.
    CameUp {
        down_since: SystemTime,
        failures: u64,
    },
    /// Was up since `up_since`, is down.
    WentDown { up_since: SystemTime },
    /// Still down, but for another kind of reason than `previous`.
    ReasonChanged { previous: DownReason },
    /// Still up, but another supervisor (version, name or protocol) answers.
    SupervisorChanged {
        previous: Option<SupervisorIdentity>,
    },
}

impl ValidatorHealth {
    /// A validator not checked yet; `started` is the daemon's start.
    pub fn new(name: impl Into<String>, socket: impl Into<PathBuf>, started: SystemTime) -> Self {
        ValidatorHealth {
            name: name.into(),
            socket: socket.into(),
            state: State::Unknown,
            since: started,
            last_checked: None,
            last_error: None,
            supervisor: None,
            consecutive_failures: 0,
        }
    }

    /// Fold in the result of a probe that finished at `at`.
    pub fn record(&mut self, at: SystemTime, outcome: ProbeOutcome) -> Transition {
        let previous_state = self.state;
        let previous_since = self.since;
        self.last_checked = Some(at);
        match outcome {
            ProbeOutcome::Up(greeting) => {
                let identity = SupervisorIdentity::from(greeting);
                let failures = self.consecutive_failures;
                self.consecutive_failures = 0;
                let previous_identity = self.supervisor.replace(identity.clone());
                match previous_state {
                    State::Up if previous_identity.as_ref() == Some(&identity) => {
                        Transition::Unchanged
                    }
                    State::Up => Transition::SupervisorChanged {
                        previous: previous_identity,
                    },
                    State::Unknown => {
                        self.enter(State::Up, at);
                        Transition::FirstUp
                    }
                    State::Down => {
                        self.enter(State::Up, at);
                        Transition::CameUp {
                            down_since: previous_since,
                            failures,
                        }
                    }
                }
            }
            ProbeOutcome::Unhealthy { greeting, reason } => {
                // Reachable, so the greeting is news too; the state is down.
                self.supervisor = Some(SupervisorIdentity::from(greeting));
                self.record_failure(at, reason)
            }
            ProbeOutcome::Down(reason) => self.record_failure(at, reason),
        }
    }

    fn record_failure(&mut self, at: SystemTime, reason: DownReason) -> Transition {
        let previous_state = self.state;
        let previous_since = self.since;
        self.consecutive_failures += 1;
        let previous_reason = self.last_error.replace(reason.clone());
        match previous_state {
            State::Unknown => {
                self.enter(State::Down, at);
                Transition::FirstDown
            }
            State::Up => {
                self.enter(State::Down, at);
                Transition::WentDown {
                    up_since: previous_since,
                }
            }
            State::Down => match previous_reason {
                Some(previous) if !previous.same_kind(&reason) => {
                    Transition::ReasonChanged { previous }
                }
                _ => Transition::Unchanged,
            },
        }
    }

    fn enter(&mut self, state: State, at: SystemTime) {
        self.state = state;
        self.since = at;
    }

    /// The name the answering supervisor announced, when it is not the
    /// configured one: the socket may be wired to the wrong validator.
    pub fn name_mismatch(&self) -> Option<&str> {
        match (&self.state, &self.supervisor) {
            (State::Up, Some(identity)) if identity.validator != self.name => {
                Some(&identity.validator)
            }
            _ => None,
        }
    }
}

/// The one-line summary for systemd's STATUS= and logs, e.g.
/// `2/3 validators reachable; down: val-c`.
pub fn summary_line(table: &[ValidatorHealth]) -> String {
    let up = table.iter().filter(|v| v.state == State::Up).count();
    let mut line = format!("{up}/{} validators reachable", table.len());
    let list = |state: State| {
        table
            .iter()
            .filter(|v| v.state == state)
            .map(|v| v.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let down = list(State::Down);
    if !down.is_empty() {
        line.push_str("; down: ");
        line.push_str(&down);
    }
    let unknown = list(State::Unknown);
    if !unknown.is_empty() {
        line.push_str("; not checked yet: ");
        line.push_str(&unknown);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seconds)
    }

    fn up(version: &str) -> ProbeOutcome {
        ProbeOutcome::Up(Greeting::new("val-a", version))
    }

    fn down(reason: DownReason) -> ProbeOutcome {
        ProbeOutcome::Down(reason)
    }

    #[test]
    fn only_changes_are_news() {
        let mut health = ValidatorHealth::new("val-a", "/run/val-a.sock", at(0));
        let timed_out = DownReason::TimedOut {
            after: Duration::from_secs(3),
            connected: true,
        };
        // (time, outcome, expected transition, state, failures)
        let rows: Vec<(u64, ProbeOutcome, Transition, State, u64)> = vec![
            (
                1,
                down(DownReason::NoSocket),
                Transition::FirstDown,
                State::Down,
                1,
            ),
            (
                2,
                down(DownReason::NoSocket),
                Transition::Unchanged,
                State::Down,
                2,
            ),
            (
                3,
                down(DownReason::StaleSocket),
                Transition::ReasonChanged {
                    previous: DownReason::NoSocket,
                },
                State::Down,
                3,
            ),
            (
                4,
                up("0.1.0"),
                Transition::CameUp {
                    down_since: at(1),
                    failures: 3,
                },
                State::Up,
                0,
            ),
            (5, up("0.1.0"), Transition::Unchanged, State::Up, 0),
            (
                6,
                up("0.2.0"),
                Transition::SupervisorChanged {
                    previous: Some(Greeting::new("val-a", "0.1.0").into()),
                },
                State::Up,
                0,
            ),
            (
                7,
                down(timed_out.clone()),
                Transition::WentDown { up_since: at(4) },
                State::Down,
                1,
            ),
            (
                8,
                down(DownReason::TimedOut {
                    after: Duration::from_secs(3),
                    connected: false,
                }),
                Transition::Unchanged,
                State::Down,
                2,
            ),
        ];
        for (time, outcome, transition, state, failures) in rows {
            assert_eq!(health.record(at(time), outcome), transition, "t={time}");
            assert_eq!(health.state, state, "t={time}");
            assert_eq!(health.consecutive_failures, failures, "t={time}");
            assert_eq!(health.last_checked, Some(at(time)));
        }
        assert_eq!(health.since, at(7));
        assert_eq!(health.supervisor.as_ref().unwrap().version, "0.2.0");
        assert_eq!(
            health.last_error.as_ref().unwrap().to_string(),
            "supervisor not answering: connecting took longer than 3s"
        );

        let mut fresh = ValidatorHealth::new("val-a", "/s", at(0));
        assert_eq!(fresh.record(at(1), up("0.1.0")), Transition::FirstUp);
        assert_eq!(fresh.since, at(1));
        assert_eq!(fresh.last_error, None);
    }

    #[test]
    fn a_supervisor_reporting_problems_is_down_but_identified() {
        let unhealthy = |version: &str, problems: &[&str]| ProbeOutcome::Unhealthy {
            greeting: Greeting::new("val-a", version),
            reason: DownReason::SupervisorProblems(
                problems.iter().map(ToString::to_string).collect(),
            ),
        };
        let mut health = ValidatorHealth::new("val-a", "/run/val-a.sock", at(0));
        // (time, outcome, expected transition, state, failures)
        let rows: Vec<(u64, ProbeOutcome, Transition, State, u64)> = vec![
            (
                1,
                unhealthy("0.1.0", &["vault is locked"]),
                Transition::FirstDown,
                State::Down,
                1,
            ),
            (
                2,
                unhealthy("0.1.0", &["vault is locked"]),
                Transition::Unchanged,
                State::Down,
                2,
            ),
            (
                3,
                unhealthy("0.1.0", &["vault is locked", "node is locked"]),
                Transition::ReasonChanged {
                    previous: DownReason::SupervisorProblems(vec!["vault is locked".into()]),
                },
                State::Down,
                3,
            ),
            (
                4,
                up("0.1.0"),
                Transition::CameUp {
                    down_since: at(1),
                    failures: 3,
                },
                State::Up,
                0,
            ),
            (
                5,
                ProbeOutcome::Unhealthy {
                    greeting: Greeting::new("val-a", "0.2.0"),
                    reason: DownReason::HealthRefused("login as b1 refused".into()),
                },
                Transition::WentDown { up_since: at(4) },
                State::Down,
                1,
            ),
        ];
        for (time, outcome, transition, state, failures) in rows {
            assert_eq!(health.record(at(time), outcome), transition, "t={time}");
            assert_eq!(health.state, state, "t={time}");
            assert_eq!(health.consecutive_failures, failures, "t={time}");
        }
        // The greeting of an unhealthy probe is recorded.
        assert_eq!(health.supervisor.as_ref().unwrap().version, "0.2.0");
        assert_eq!(
            health.last_error.as_ref().unwrap().to_string(),
            "health check refused: login as b1 refused"
        );

        let mut fresh = ValidatorHealth::new("val-a", "/s", at(0));
        fresh.record(at(1), unhealthy("0.1.0", &["node is stopped"]));
        assert_eq!(fresh.supervisor.as_ref().unwrap().version, "0.1.0");
        assert_eq!(
            summary_line(&[fresh]),
            "0/1 validators reachable; down: val-a"
        );
    }

    #[test]
    fn a_greeting_from_another_validator_is_flagged() {
        let mut health = ValidatorHealth::new("val-b", "/run/val-b.sock", at(0));
        assert_eq!(health.name_mismatch(), None);
        health.record(at(1), up("0.1.0"));
        assert_eq!(health.state, State::Up, "still reachable");
        assert_eq!(health.name_mismatch(), Some("val-a"));
        health.record(at(2), down(DownReason::NoSocket));
        assert_eq!(health.name_mismatch(), None);
    }

    #[test]
    fn summary_counts_and_names() {
        let mut table = vec![
            ValidatorHealth::new("val-a", "/a", at(0)),
            ValidatorHealth::new("val-b", "/b", at(0)),
            ValidatorHealth::new("val-c", "/c", at(0)),
        ];
        assert_eq!(
            summary_line(&table),
            "0/3 validators reachable; not checked yet: val-a, val-b, val-c"
        );
        table[0].record(at(1), up("0.1.0"));
        table[1].record(at(1), up("0.1.0"));
        table[2].record(at(1), down(DownReason::NoSocket));
        assert_eq!(
            summary_line(&table),
            "2/3 validators reachable; down: val-c"
        );
    }
}
