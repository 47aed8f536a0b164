//! The machine with `[failover]`: a standby never starts its node, the
//! leadership leads to the takeover rule and only then to a start, a lost
//! or expiring leadership kills the node at once, and a planned handoff
//! stops, hands over and waits as a standby — or, when a step fails,
//! leaves the node stopped and says who holds what.

use std::time::{Duration, Instant};

use super::*;
use crate::sign_state::{Step, Watermark};
use crate::supervision::board::NodeState;
use crate::supervision::command::{Answer, Command, CommandError, CommandId};

const PID: u32 = 7;
const ID: CommandId = CommandId(100);

fn settings() -> MachineSettings {
    MachineSettings {
        failover: Some(FailoverSettings {
            host_id: "val-a".into(),
            peers: vec!["val-b".into()],
        }),
        ..super::tests::settings(true)
    }
}

fn watermark(height: u64) -> Watermark {
    Watermark {
        height,
        round: 0,
        step: Step::Precommit,
    }
}

fn acquired(token: i64) -> Event {
    Event::Lease(LeaseEvent::Acquired {
        token,
        stop_by: Instant::now() + Duration::from_secs(7),
        handoff: None,
    })
}

fn exited() -> Event {
    Event::DaemonExited(DaemonExit {
        exit: ExitKind::Signal(9),
        uptime: Duration::from_secs(5),
        at: Instant::now(),
        jitter: 0.5,
        plan_from_output: None,
        plan_in_file: None,
    })
}

fn step_all(machine: &mut Machine, events: Vec<Event>) -> Vec<Action> {
    events
        .into_iter()
        .flat_map(|event| machine.step(event))
        .collect()
}

/// Unlocked, start rule passed, session open: a standby.
fn standby() -> Machine {
    let mut machine = Machine::new(settings());
    let actions = step_all(
        &mut machine,
        vec![
            Event::Started(VaultAtStart::Locked),
            Event::Command(CommandId(1), Command::Unlock),
            Event::UnlockFinished(UnlockOutcome::Unlocked),
            Event::StartChecked(StartVerdict::Start),
            Event::SessionOpened,
        ],
    );
    assert_eq!(*machine.phase(), Phase::Standby);
    assert!(!actions.iter().any(|a| matches!(a, Action::SpawnDaemon)));
    assert!(machine.wants_leadership());
    assert_eq!(machine.node_state(), NodeState::Standby);
    machine
}

/// The primary with its node running.
fn primary() -> Machine {
    let mut machine = standby();
    let actions = step_all(&mut machine, vec![acquired(42)]);
    assert_eq!(*machine.phase(), Phase::TakingOver);
    assert!(actions.contains(&Action::RunTakeover(None)), "{actions:?}");
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::SetDeadline(Timer::Fence, _))),
        "{actions:?}"
    );
    assert!(!machine.wants_leadership());
    let actions = step_all(
        &mut machine,
        vec![
            Event::TakeoverFinished(Ok(watermark(12))),
            Event::PendingPlan(None),
        ],
    );
    assert!(actions.contains(&Action::LookForPendingPlan), "{actions:?}");
    assert!(actions.contains(&Action::SpawnDaemon), "{actions:?}");
    machine.step(Event::DaemonSpawned { pid: PID });
    assert_eq!(*machine.phase(), Phase::Running { pid: PID });
    assert_eq!(machine.lease_token(), Some(42));
    machine
}

fn answer_of(actions: &[Action]) -> CommandResult {
    actions
        .iter()
        .find_map(|action| match action {
            Action::Answer(id, result) if *id == ID => Some(result.clone()),
            _ => None,
        })
        .expect("an answer")
}

fn refusal(actions: &[Action]) -> String {
    match answer_of(actions) {
        Err(error) => error.to_string(),
        Ok(answer) => panic!("expected a refusal, got {answer:?}"),
    }
}

#[test]
fn a_standby_behind_the_backups_opens_its_session_and_waits() {
    let mut machine = Machine::new(settings());
    let actions = step_all(
        &mut machine,
        vec![
            Event::Started(VaultAtStart::Locked),
            Event::Command(CommandId(1), Command::Unlock),
            Event::UnlockFinished(UnlockOutcome::Unlocked),
            Event::StartChecked(StartVerdict::Refuse("behind backup 9".into())),
        ],
    );
    assert!(actions.contains(&Action::OpenSession), "{actions:?}");
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::NotifyStopping(_)))
    );
    machine.step(Event::SessionOpened);
    assert_eq!(*machine.phase(), Phase::Standby);
}

#[test]
fn a_lost_or_expiring_leadership_kills_the_node_at_once_and_it_never_restarts_alone() {
    let events: [(&str, Event); 2] = [
        (
            "lost",
            Event::Lease(LeaseEvent::Lost {
                token: 42,
                reason: "deposed".into(),
            }),
        ),
        ("deadline", Event::Timer(Timer::Fence)),
    ];
    for (what, event) in events {
        let mut machine = primary();
        let actions = machine.step(event);
        assert!(actions.contains(&Action::KillDaemon), "{what}: {actions:?}");
        assert!(
            matches!(
                machine.phase(),
                Phase::Stopping {
                    purpose: StopPurpose::Fence(42),
                    ..
                }
            ),
            "{what}"
        );
        assert_eq!(machine.lease_token(), None);
        let actions = machine.step(exited());
        assert_eq!(*machine.phase(), Phase::Standby, "{what}");
        assert!(
            actions.contains(&Action::ReleaseLease(42)),
            "{what}: {actions:?}"
        );
        assert!(!actions.iter().any(|a| matches!(a, Action::SpawnDaemon)));
        // A stray backoff timer or a start command does not start it.
        assert!(machine.step(Event::Timer(Timer::Backoff)).is_empty());
        let mut machine2 = machine.clone();
        let actions = machine2.step(Event::Command(ID, Command::NodeStart));
        assert!(refusal(&actions).contains("standby"), "{actions:?}");
    }
}

#[test]
fn a_fence_during_a_crash_backoff_cancels_the_restart() {
    let mut machine = primary();
    machine.step(exited());
    assert!(matches!(machine.phase(), Phase::BackingOff { .. }));
    let actions = machine.step(Event::Timer(Timer::Fence));
    assert!(actions.contains(&Action::CancelTimer(Timer::Backoff)));
    assert!(actions.contains(&Action::ReleaseLease(42)));
    assert_eq!(*machine.phase(), Phase::Standby);
}

#[test]
fn renewals_move_the_deadline_and_stale_fences_change_nothing() {
    let mut machine = primary();
    let later = Instant::now() + Duration::from_secs(9);
    let actions = machine.step(Event::Lease(LeaseEvent::Renewed {
        token: 42,
        stop_by: later,
    }));
    assert_eq!(actions, vec![Action::SetDeadline(Timer::Fence, later)]);
    // A renewal of an older leadership moves nothing.
    let actions = machine.step(Event::Lease(LeaseEvent::Renewed {
        token: 41,
        stop_by: later + Duration::from_secs(60),
    }));
    assert!(actions.is_empty(), "{actions:?}");
    let mut standby = standby();
    assert!(standby.step(Event::Timer(Timer::Fence)).is_empty());
    assert!(
        standby
            .step(Event::Lease(LeaseEvent::Lost {
                token: 42,
                reason: "x".into()
            }))
            .is_empty()
    );
    assert!(
        standby
            .step(Event::Lease(LeaseEvent::Renewed {
                token: 42,
                stop_by: later
            }))
            .is_empty()
    );
}

#[test]
fn a_takeover_that_fails_gives_the_leadership_up_and_waits() {
    let mut machine = standby();
    machine.step(acquired(5));
    let actions = machine.step(Event::TakeoverFinished(Err("restore failed".into())));
    assert!(actions.contains(&Action::ReleaseLease(5)), "{actions:?}");
    assert!(!actions.iter().any(|a| matches!(a, Action::SpawnDaemon)));
    assert_eq!(*machine.phase(), Phase::Standby);
    assert_eq!(machine.lease_token(), None);
}

#[test]
fn leadership_offered_outside_standby_is_given_back() {
    let mut machine = standby();
    machine.step(Event::Command(CommandId(2), Command::NodeStop));
    assert_eq!(*machine.phase(), Phase::StoppedByOperator);
    assert!(!machine.wants_leadership());
    let actions = machine.step(acquired(9));
    assert!(actions.contains(&Action::ReleaseLease(9)), "{actions:?}");
    assert_eq!(machine.lease_token(), None);
    assert_eq!(*machine.phase(), Phase::StoppedByOperator);
    // node.start makes it a standby again, not a signer.
    let actions = machine.step(Event::Command(ID, Command::NodeStart));
    assert_eq!(answer_of(&actions), Ok(Answer::Node(NodeState::Standby)));
    assert_eq!(*machine.phase(), Phase::Standby);
}

#[test]
fn a_handoff_stops_the_node_hands_over_and_waits_as_a_standby() {
    let mut machine = primary();
    let handoff = Command::Handoff {
        to: "val-b".into(),
        operator: "alice".into(),
    };
    let actions = machine.step(Event::Command(ID, handoff));
    assert!(actions.contains(&Action::SignalDaemon(StopSignal::Interrupt)));
    let actions = machine.step(exited());
    assert_eq!(
        actions.last(),
        Some(&Action::RunHandoff { to: "val-b".into() })
    );
    assert_eq!(machine.node_state(), NodeState::Stopping);
    // Nothing else may run meanwhile.
    let during = machine
        .clone()
        .step(Event::Command(CommandId(3), Command::NodeStart));
    assert!(matches!(&during[..], [Action::Answer(_, Err(_))]));
    let done = HandoffDone {
        to: "val-b".into(),
        watermark: Some(watermark(30)),
        stores: vec!["local".into()],
        token: 42,
    };
    let actions = machine.step(Event::HandoffFinished(Ok(done.clone())));
    assert_eq!(answer_of(&actions), Ok(Answer::HandedOff(done)));
    assert!(actions.contains(&Action::CancelTimer(Timer::Fence)));
    assert_eq!(*machine.phase(), Phase::Standby);
    assert_eq!(machine.lease_token(), None);
}

#[test]
fn a_failed_handoff_leaves_the_node_stopped_and_says_who_holds_what() {
    let mut machine = primary();
    machine.step(Event::Command(
        ID,
        Command::Handoff {
            to: "val-b".into(),
            operator: "alice".into(),
        },
    ));
    machine.step(exited());
    let actions = machine.step(Event::HandoffFinished(Err("etcd: unreachable".into())));
    let message = refusal(&actions);
    for words in [
        "handoff to val-b failed",
        "Nobody signs",
        "still holds the leadership",
        "node.start",
    ] {
        assert!(message.contains(words), "{words:?} in {message}");
    }
    assert_eq!(*machine.phase(), Phase::StoppedByOperator);
    assert_eq!(machine.lease_token(), Some(42));
    // The operator may start it here again: still the primary.
    let actions = machine.step(Event::Command(CommandId(5), Command::NodeStart));
    assert!(actions.contains(&Action::SpawnDaemon), "{actions:?}");
}

#[test]
fn handoff_requests_that_cannot_be_honoured_are_refused_with_the_reason() {
    let handoff = |to: &str| Command::Handoff {
        to: to.into(),
        operator: "alice".into(),
    };
    let cases: Vec<(Machine, Command, &str)> = vec![
        (primary(), handoff("val-a"), "is this host"),
        (
            primary(),
            handoff("val-z"),
            "not one of this validator's hosts",
        ),
        (standby(), handoff("val-b"), "not the primary"),
        (
            {
                let mut no_failover = settings();
                no_failover.failover = None;
                Machine::new(no_failover)
            },
            handoff("val-b"),
            "no [failover] is configured",
        ),
    ];
    for (mut machine, command, words) in cases {
        let before = machine.phase().clone();
        let actions = machine.step(Event::Command(ID, command));
        let message = refusal(&actions);
        assert!(message.contains(words), "{words:?} in {message}");
        assert_eq!(*machine.phase(), before);
        assert_eq!(actions.len(), 1, "{actions:?}");
    }
    let mut machine = primary();
    let actions = machine.step(Event::Command(ID, handoff("val-z")));
    assert!(matches!(
        answer_of(&actions),
        Err(CommandError::InvalidParams { field: "to", ref known, .. }) if known == &["val-b".to_string()]
    ));
}

#[test]
fn shutting_down_or_locking_the_primary_gives_the_leadership_up_after_the_node_stopped() {
    let mut machine = primary();
    let actions = machine.step(Event::Signal(StopSignal::Terminate));
    assert!(!actions.contains(&Action::ReleaseLease(42)), "{actions:?}");
    let actions = machine.step(exited());
    assert!(actions.contains(&Action::ReleaseLease(42)), "{actions:?}");

    let mut machine = primary();
    machine.step(Event::Command(ID, Command::Lock));
    let actions = machine.step(exited());
    assert!(actions.contains(&Action::ReleaseLease(42)), "{actions:?}");
    assert!(actions.contains(&Action::CloseSession));
}

#[test]
fn a_standby_can_be_locked_stopped_or_shut_down_but_not_started_or_restored() {
    let cases: Vec<(Command, Result<&str, &str>)> = vec![
        (Command::NodeStop, Ok("stopped")),
        (Command::NodeStart, Err("standby")),
        (Command::NodeRestart, Err("standby")),
        (Command::Unlock, Err("already unlocked")),
        (
            Command::Restore(crate::backup::RestoreChoice::Highest),
            Err("takeover restores"),
        ),
    ];
    for (command, expected) in cases {
        let mut machine = standby();
        let actions = machine.step(Event::Command(ID, command.clone()));
        match expected {
            Ok(_) => assert_eq!(
                answer_of(&actions),
                Ok(Answer::Node(NodeState::Stopped)),
                "{command:?}"
            ),
            Err(words) => assert!(refusal(&actions).contains(words), "{command:?}"),
        }
    }
    let mut machine = standby();
    let actions = machine.step(Event::Command(ID, Command::Lock));
    assert!(actions.contains(&Action::CloseSession));
    let mut machine = standby();
    let actions = machine.step(Event::Signal(StopSignal::Terminate));
    assert!(actions.contains(&Action::CloseSession));
}

#[test]
fn a_handoff_grant_goes_to_the_takeover_job() {
    let mut machine = standby();
    let grant = HandoffGrant {
        from: "val-b".into(),
        watermark: Some(watermark(30)),
    };
    let actions = machine.step(Event::Lease(LeaseEvent::Acquired {
        token: 77,
        stop_by: Instant::now() + Duration::from_secs(7),
        handoff: Some(grant.clone()),
    }));
    assert!(
        actions.contains(&Action::RunTakeover(Some(grant))),
        "{actions:?}"
    );
    // node.stop during the takeover cancels it and gives the leadership up.
    let actions = machine.step(Event::Command(ID, Command::NodeStop));
    assert!(actions.contains(&Action::CancelJob(Job::Takeover)));
    assert!(actions.contains(&Action::ReleaseLease(77)));
    assert_eq!(*machine.phase(), Phase::StoppedByOperator);
}

/// A release or a loss that names an older leadership never ends the one held now (the
/// chaos harness found a late release resigning a newer leadership while the machine went on
/// believing it held it: two signers).
#[test]
fn news_about_another_token_never_touches_the_leadership_held() {
    let mut machine = primary();
    let actions = machine.step(Event::Lease(LeaseEvent::Lost {
        token: 41,
        reason: "an older lease expired".into(),
    }));
    assert!(actions.is_empty(), "{actions:?}");
    assert_eq!(machine.lease_token(), Some(42));
    assert_eq!(*machine.phase(), Phase::Running { pid: PID });
    // A second leadership while one is held: the driver lost the first without saying so.
    let actions = machine.step(acquired(43));
    assert!(actions.contains(&Action::KillDaemon), "{actions:?}");
    assert!(actions.contains(&Action::ReleaseLease(43)), "{actions:?}");
    assert_eq!(machine.lease_token(), None);
}
