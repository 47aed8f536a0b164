//! Table tests of the supervision machine: every control command in every
//! phase, the transitions of every other event, and a model-based check of
//! its invariants over random event sequences.

use std::time::{Duration, Instant};

use palisade_wire::upgrade_record::{DetectionSource, UpgradeOutcome, UpgradeStep};
use proptest::prelude::*;

use super::*;
use crate::backup::{RestoreChoice, Restored};
use crate::sign_state::{LocalState, Step, Watermark};
use crate::supervision::board::NodeState;
use crate::supervision::command::{Answer, Command, CommandError, CommandId, RotateRequest};

const PID: u32 = 42;
/// The id of the command under test; setup commands use small ids.
const ID: CommandId = CommandId(100);

pub(super) fn settings(vault: bool) -> MachineSettings {
    MachineSettings {
        vault,
        daemon_name: "gaiad".into(),
        restart: RestartSettings {
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            crash_loop_max_crashes: 3,
            crash_loop_window: Duration::from_secs(300),
            healthy_after: Duration::from_secs(600),
        },
        shutdown_grace: Duration::from_secs(30),
        restart_after_upgrade: true,
        restart_delay: Duration::ZERO,
        poll_interval: Duration::from_millis(300),
        line_confirm_wait: Duration::ZERO,
        failover: None,
    }
}

fn plan(name: &str, height: u64) -> UpgradePlan {
    UpgradePlan {
        name: name.into(),
        height: Some(height),
        info: String::new(),
    }
}

fn exit(code: i32) -> DaemonExit {
    DaemonExit {
        exit: ExitKind::Code(code),
        uptime: Duration::from_secs(5),
        at: Instant::now(),
        jitter: 0.5,
        plan_from_output: None,
        plan_in_file: None,
    }
}

fn restored() -> Restored {
    Restored {
        store: "local".into(),
        file: "backup-sim-1-AB-00000000000000000002-h30.age".into(),
        sequence: 2,
        watermark: Watermark {
            height: 30,
            round: 0,
            step: Step::Precommit,
        },
        previous: LocalState::Missing,
        path: "/home/data/priv_validator_state.json".into(),
    }
}

/// The variant's name, to compare phases without their contents.
fn kind(phase: &Phase) -> &'static str {
    match phase {
        Phase::Starting => "Starting",
        Phase::Locked => "Locked",
        Phase::Unlocking { .. } => "Unlocking",
        Phase::CheckingStart { .. } => "CheckingStart",
        Phase::Launching => "Launching",
        Phase::Running { .. } => "Running",
        Phase::Stopping { .. } => "Stopping",
        Phase::StoppedByOperator => "StoppedByOperator",
        Phase::Restoring { .. } => "Restoring",
        Phase::BackingOff { .. } => "BackingOff",
        Phase::Upgrading {
            stage: UpgradeStage::StoppingOld { .. },
            ..
        } => "UpgradeStoppingOld",
        Phase::Upgrading {
            stage: UpgradeStage::Preparing(_),
            ..
        } => "UpgradePreparing",
        Phase::Upgrading {
            stage: UpgradeStage::RestartDelay,
            ..
        } => "UpgradeRestartDelay",
        Phase::WaitingForBinary { .. } => "WaitingForBinary",
        Phase::Halted { .. } => "Halted",
        Phase::Locking { .. } => "Locking",
        Phase::ShuttingDown { .. } => "ShuttingDown",
        Phase::Exited(_) => "Exited",
        Phase::Standby => "Standby",
        Phase::TakingOver => "TakingOver",
        Phase::HandingOff { .. } => "HandingOff",
    }
}

/// Every phase, reached by driving a machine through real events.
const PHASES: [&str; 18] = [
    "Starting",
    "Locked",
    "Unlocking",
    "CheckingStart",
    "Launching",
    "Running",
    "Stopping",
    "StoppedByOperator",
    "Restoring",
    "BackingOff",
    "UpgradeStoppingOld",
    "UpgradePreparing",
    "UpgradeRestartDelay",
    "WaitingForBinary",
    "Halted",
    "Locking",
    "ShuttingDown",
    "Exited",
];

fn feed(machine: &mut Machine, events: Vec<Event>) {
    for event in events {
        machine.step(event);
    }
}

/// A machine (with a vault unless `vault` is false) in the phase named
/// `at`, reached the way the executor would reach it.
fn machine_at(at: &str, vault: bool) -> Machine {
    let mut settings = settings(vault);
    if at == "UpgradeRestartDelay" {
        settings.restart_delay = Duration::from_secs(5);
    }
    if at == "RunningConfirmingLines" {
        settings.line_confirm_wait = Duration::from_secs(1);
    }
    let mut machine = Machine::new(settings);
    let c = |n| CommandId(n);
    let to_running = |machine: &mut Machine| {
        if vault {
            feed(
                machine,
                vec![
                    Event::Started(VaultAtStart::Locked),
                    Event::Command(c(1), Command::Unlock),
                    Event::UnlockFinished(UnlockOutcome::Unlocked),
                    Event::StartChecked(StartVerdict::Start),
                    Event::SessionOpened,
                ],
            );
        } else {
            feed(machine, vec![Event::Started(VaultAtStart::NoVault)]);
        }
        feed(
            machine,
            vec![Event::PendingPlan(None), Event::DaemonSpawned { pid: PID }],
        );
    };
    let to_preparing = |machine: &mut Machine| {
        to_running(machine);
        feed(
            machine,
            vec![
                Event::PlanDetected(DetectedPlan {
                    plan: plan("v2", 40),
                    source: DetectionSource::OutputLine,
                }),
                Event::DaemonExited(exit(0)),
            ],
        );
    };
    let to_stopped = |machine: &mut Machine| {
        to_running(machine);
        feed(
            machine,
            vec![
                Event::Command(c(2), Command::NodeStop),
                Event::DaemonExited(exit(0)),
            ],
        );
    };
    match at {
        "Starting" => {}
        "Locked" => feed(&mut machine, vec![Event::Started(VaultAtStart::Locked)]),
        "Unlocking" => feed(
            &mut machine,
            vec![
                Event::Started(VaultAtStart::Locked),
                Event::Command(c(1), Command::Unlock),
            ],
        ),
        "CheckingStart" => feed(
            &mut machine,
            vec![
                Event::Started(VaultAtStart::Locked),
                Event::Command(c(1), Command::Unlock),
                Event::UnlockFinished(UnlockOutcome::Unlocked),
            ],
        ),
        "Launching" if !vault => feed(&mut machine, vec![Event::Started(VaultAtStart::NoVault)]),
        "Launching" => feed(
            &mut machine,
            vec![
                Event::Started(VaultAtStart::Locked),
                Event::Command(c(1), Command::Unlock),
                Event::UnlockFinished(UnlockOutcome::Unlocked),
                Event::StartChecked(StartVerdict::Start),
                Event::SessionOpened,
            ],
        ),
        "Running" | "RunningConfirmingLines" => to_running(&mut machine),
        "Stopping" => {
            to_running(&mut machine);
            feed(&mut machine, vec![Event::Command(c(2), Command::NodeStop)]);
        }
        "StoppedByOperator" => to_stopped(&mut machine),
        "Restoring" => {
            to_stopped(&mut machine);
            feed(
                &mut machine,
                vec![Event::Command(
                    c(3),
                    Command::Restore(RestoreChoice::Highest),
                )],
            );
        }
        "BackingOff" => {
            to_running(&mut machine);
            feed(&mut machine, vec![Event::DaemonExited(exit(2))]);
        }
        "UpgradeStoppingOld" => {
            to_running(&mut machine);
            feed(
                &mut machine,
                vec![Event::PlanDetected(DetectedPlan {
                    plan: plan("v2", 40),
                    source: DetectionSource::OutputLine,
                })],
            );
        }
        "UpgradePreparing" => to_preparing(&mut machine),
        "UpgradeRestartDelay" => {
            to_preparing(&mut machine);
            feed(&mut machine, vec![Event::UpgradeFinished(Ok(()))]);
        }
        "WaitingForBinary" => {
            to_preparing(&mut machine);
            feed(
                &mut machine,
                vec![Event::UpgradeFinished(Err(UpgradeFailure {
                    message: "binary missing".into(),
                    waits_for_binary: true,
                }))],
            );
        }
        "Halted" => {
            to_preparing(&mut machine);
            feed(
                &mut machine,
                vec![Event::UpgradeFinished(Err(UpgradeFailure {
                    message: "pre-upgrade failed".into(),
                    waits_for_binary: false,
                }))],
            );
        }
        "Locking" => {
            to_stopped(&mut machine);
            feed(&mut machine, vec![Event::Command(c(3), Command::Lock)]);
        }
        "ShuttingDown" => {
            to_running(&mut machine);
            feed(
                &mut machine,
                vec![
                    Event::Signal(StopSignal::Terminate),
                    Event::DaemonExited(exit(0)),
                ],
            );
        }
        "Exited" => {
            to_running(&mut machine);
            feed(
                &mut machine,
                vec![
                    Event::Signal(StopSignal::Terminate),
                    Event::DaemonExited(exit(0)),
                    Event::SessionClosed,
                    Event::BackgroundStopped,
                ],
            );
        }
        other => panic!("no such phase {other}"),
    }
    let expected = at.strip_suffix("ConfirmingLines").unwrap_or(at);
    assert_eq!(kind(machine.phase()), expected, "setup of {at}");
    machine
}

/// What a command should get in a phase.
#[derive(Debug)]
enum Expect {
    /// Refused at once with a message containing this; the phase does not
    /// change.
    Refused(&'static str),
    /// Answered at once with this; then the phase named.
    Answered(Answer, &'static str),
    /// Not answered yet (the machine acts first); the phase named.
    Deferred(&'static str),
}

fn commands() -> [Command; 7] {
    [
        Command::Unlock,
        Command::NodeStart,
        Command::NodeStop,
        Command::NodeRestart,
        Command::Lock,
        Command::Restore(RestoreChoice::Named {
            store: "local".into(),
            file: "backup-sim-1-AB-00000000000000000002-h30.age".into(),
        }),
        Command::HostShutdown {
            operator: "alice".into(),
        },
    ]
}

/// The expected answer of every command (in [`commands`] order) in every
/// phase, with a vault.
fn expected(phase: &str) -> [Expect; 7] {
    use Expect::*;
    let shutdown = |node| Answered(Answer::ShuttingDown(node), "ShuttingDown");
    let all_refused = |words: &'static str| {
        [
            Refused(words),
            Refused(words),
            Refused(words),
            Refused(words),
            Refused(words),
            Refused(words),
            Refused(words),
        ]
    };
    match phase {
        "Starting" => all_refused("not possible now: the supervisor is starting"),
        "Locked" => [
            Deferred("Unlocking"),
            Refused("the vault is locked: unlock it first (vault.unlock)"),
            Refused("the vault is locked: unlock it first (vault.unlock)"),
            Refused("the vault is locked: unlock it first (vault.unlock)"),
            Refused("the vault is already locked"),
            Refused("holds no key to decrypt and verify backups"),
            shutdown(NodeState::Locked),
        ],
        "Unlocking" => [
            Refused("an unlock is in progress; wait for its answer"),
            Refused("node.start is not possible now: an unlock is in progress"),
            Refused("node.stop is not possible now: an unlock is in progress"),
            Refused("node.restart is not possible now: an unlock is in progress"),
            Refused("vault.lock is not possible now: an unlock is in progress"),
            Refused("backup.restore is not possible now: an unlock is in progress"),
            Refused("host.shutdown is not possible now: an unlock is in progress"),
        ],
        "CheckingStart" => [
            Refused("the start rule is checking the sign state against the backups; wait"),
            Refused("node.start is not possible now: the vault is unlocked and the start rule"),
            Refused("not possible now: the vault is unlocked and the start rule"),
            Refused("not possible now: the vault is unlocked and the start rule"),
            Refused("not possible now: the vault is unlocked and the start rule"),
            Refused("not possible now: the vault is unlocked and the start rule"),
            Refused("not possible now: the vault is unlocked and the start rule"),
        ],
        "Launching" => all_refused("not possible now: the node is starting"),
        "Running" => [
            Refused("the vault is already unlocked"),
            Refused("the node is already running (pid 42)"),
            Deferred("Stopping"),
            Deferred("Stopping"),
            Deferred("Stopping"),
            Refused(
                "the node is running (pid 42): stop the node first (node.stop); nothing was changed",
            ),
            Answered(Answer::ShuttingDown(NodeState::Stopping), "Stopping"),
        ],
        "Stopping" => all_refused("not possible now: the node is stopping (node.stop)"),
        "StoppedByOperator" => [
            Refused("the vault is already unlocked"),
            Answered(Answer::Node(NodeState::Starting), "Launching"),
            Answered(Answer::Node(NodeState::Stopped), "StoppedByOperator"),
            Answered(Answer::Node(NodeState::Starting), "Launching"),
            Deferred("Locking"),
            Deferred("Restoring"),
            shutdown(NodeState::Stopped),
        ],
        "Restoring" => all_refused("not possible now: a sign-state restore is in progress"),
        "BackingOff" => [
            Refused("the vault is already unlocked"),
            Answered(Answer::Node(NodeState::Starting), "Launching"),
            Answered(Answer::Node(NodeState::Stopped), "StoppedByOperator"),
            Answered(Answer::Node(NodeState::Starting), "Launching"),
            Deferred("Locking"),
            Refused("restarts after a backoff (restart #1, 750ms): stop the node first"),
            shutdown(NodeState::Restarting),
        ],
        "UpgradeStoppingOld" => [
            Refused("upgrade v2 is in progress (stopping the old binary)"),
            Refused("upgrade v2 is in progress (stopping the old binary)"),
            Refused("upgrade v2 is in progress (stopping the old binary)"),
            Refused("upgrade v2 is in progress (stopping the old binary)"),
            Refused("upgrade v2 is in progress (stopping the old binary)"),
            Refused("upgrade v2 is in progress (stopping the old binary)"),
            // The old binary finishes stopping, then the supervisor shuts
            // down (the plan stays pending).
            Answered(
                Answer::ShuttingDown(NodeState::Upgrading),
                "UpgradeStoppingOld",
            ),
        ],
        "UpgradePreparing" => [
            Refused("vault.unlock is not possible now: upgrade v2 is in progress (preparing)"),
            Refused("node.start is not possible now: upgrade v2 is in progress (preparing)"),
            Refused("node.stop is not possible now: upgrade v2 is in progress (preparing)"),
            Refused("upgrade v2 is in progress (preparing); try again when it is done"),
            Refused("upgrade v2 is in progress (preparing)"),
            Refused("upgrade v2 is in progress (preparing)"),
            shutdown(NodeState::Upgrading),
        ],
        "UpgradeRestartDelay" => [
            Refused("upgrade v2 is in progress (waiting out DAEMON_RESTART_DELAY)"),
            Refused("upgrade v2 is in progress (waiting out DAEMON_RESTART_DELAY)"),
            Refused("upgrade v2 is in progress (waiting out DAEMON_RESTART_DELAY)"),
            Refused("upgrade v2 is in progress (waiting out DAEMON_RESTART_DELAY)"),
            Refused("upgrade v2 is in progress (waiting out DAEMON_RESTART_DELAY)"),
            Refused("upgrade v2 is in progress (waiting out DAEMON_RESTART_DELAY)"),
            shutdown(NodeState::Upgrading),
        ],
        "WaitingForBinary" => [
            Refused("the node is halted for upgrade v2: waiting for its binary"),
            Refused("the node is halted for upgrade v2: waiting for its binary"),
            Refused("the node is halted for upgrade v2: waiting for its binary"),
            Refused("the node is halted for upgrade v2: waiting for its binary"),
            Refused("the node is halted for upgrade v2: waiting for its binary"),
            Refused("the node is halted for upgrade v2: waiting for its binary"),
            shutdown(NodeState::Halted),
        ],
        "Halted" => [
            Refused("the node is halted after a failed upgrade; see the supervisor log"),
            Refused("the node is halted after a failed upgrade; see the supervisor log"),
            Refused("the node is halted after a failed upgrade; see the supervisor log"),
            Refused("the node is halted after a failed upgrade; see the supervisor log"),
            Refused("the node is halted after a failed upgrade; see the supervisor log"),
            Refused("the node is halted after a failed upgrade; see the supervisor log"),
            shutdown(NodeState::Halted),
        ],
        "Locking" => all_refused("not possible now: the vault is being locked"),
        "ShuttingDown" | "Exited" => all_refused("the supervisor is shutting down"),
        other => panic!("no expectations for {other}"),
    }
}

/// The answers `actions` give command `id`.
fn answers(actions: &[Action], id: CommandId) -> Vec<CommandResult> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::Answer(answered, result) if *answered == id => Some(result.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn every_command_in_every_phase() {
    for phase in PHASES {
        for (command, expect) in commands().into_iter().zip(expected(phase)) {
            let mut machine = machine_at(phase, true);
            let before = machine.phase().clone();
            let actions = machine.step(Event::Command(ID, command.clone()));
            let got = answers(&actions, ID);
            let case = format!("{phase} × {}: {actions:?}", command.method());
            match expect {
                Expect::Refused(words) => {
                    assert_eq!(got.len(), 1, "{case}");
                    match &got[0] {
                        Err(CommandError::WrongState(message)) => {
                            assert!(message.contains(words), "{case}: {message}")
                        }
                        other => panic!("{case}: expected a refusal, got {other:?}"),
                    }
                    assert_eq!(machine.phase(), &before, "{case}: the phase changed");
                    // A refusal does nothing else but, at most, log.
                    assert!(
                        actions
                            .iter()
                            .all(|a| matches!(a, Action::Answer(..) | Action::Log(..))),
                        "{case}"
                    );
                }
                Expect::Answered(answer, next) => {
                    assert_eq!(got, vec![Ok(answer)], "{case}");
                    assert_eq!(kind(machine.phase()), next, "{case}");
                }
                Expect::Deferred(next) => {
                    assert!(got.is_empty(), "{case}: answered too early");
                    assert_eq!(kind(machine.phase()), next, "{case}");
                }
            }
        }
    }
}

#[test]
fn without_a_vault_vault_commands_say_there_is_none_in_every_phase() {
    for phase in PHASES {
        if matches!(
            phase,
            "Locked" | "Unlocking" | "CheckingStart" | "Restoring" | "Locking"
        ) {
            continue; // phases a supervisor without a vault never reaches
        }
        for (command, words) in [
            (Command::Unlock, NO_VAULT),
            (Command::Lock, NO_VAULT),
            (Command::Restore(RestoreChoice::Highest), NO_VAULT_BACKUPS),
        ] {
            let mut machine = machine_at(phase, false);
            let before = machine.phase().clone();
            let actions = machine.step(Event::Command(ID, command.clone()));
            assert_eq!(
                answers(&actions, ID),
                vec![Err(CommandError::WrongState(words.into()))],
                "{phase} × {}",
                command.method()
            );
            assert_eq!(machine.phase(), &before);
        }
    }
    assert!(NO_VAULT.contains("no [vault] is configured"));
    assert_ne!(NO_VAULT, "the vault is already unlocked");
}

#[test]
fn stopping_is_notified_only_when_the_supervisor_itself_shuts_down() {
    // Node stop, start, restart, lock and unlock: never STOPPING=1.
    let mut machine = machine_at("Running", true);
    let mut all = Vec::new();
    for event in [
        Event::Command(CommandId(10), Command::NodeStop),
        Event::DaemonExited(exit(0)),
        Event::Command(CommandId(11), Command::NodeStart),
        Event::DaemonSpawned { pid: 43 },
        Event::Command(CommandId(12), Command::NodeRestart),
        Event::DaemonExited(exit(0)),
        Event::DaemonSpawned { pid: 44 },
        Event::Command(CommandId(13), Command::Lock),
        Event::DaemonExited(exit(0)),
        Event::SessionClosed,
        Event::Command(CommandId(14), Command::Unlock),
        Event::UnlockFinished(UnlockOutcome::Unlocked),
        Event::StartChecked(StartVerdict::Start),
        Event::SessionOpened,
        Event::PendingPlan(None),
        Event::DaemonSpawned { pid: 45 },
    ] {
        all.extend(machine.step(event));
    }
    assert_eq!(kind(machine.phase()), "Running");
    assert!(
        !all.iter().any(|a| matches!(a, Action::NotifyStopping(_))),
        "{all:?}"
    );
    // The supervisor's own shutdown: exactly once.
    let mut all = machine.step(Event::Signal(StopSignal::Terminate));
    all.extend(machine.step(Event::DaemonExited(exit(0))));
    assert_eq!(
        all.iter()
            .filter(|a| matches!(a, Action::NotifyStopping(_)))
            .count(),
        1,
        "{all:?}"
    );
}

/// (phase, event, phase after, actions that must be among the step's).
fn transitions() -> Vec<(&'static str, Event, &'static str, Vec<Action>)> {
    let due_plan = DetectedPlan {
        plan: plan("v2", 40),
        source: DetectionSource::UpgradeInfoFile,
    };
    vec![
        (
            "Starting",
            Event::Started(VaultAtStart::Unattended),
            "Unlocking",
            vec![Action::TryUnlock(None)],
        ),
        (
            "Starting",
            Event::Started(VaultAtStart::Locked),
            "Locked",
            vec![Action::NotifyReady(
                "locked: waiting for the vault passphrase".into(),
            )],
        ),
        (
            "Unlocking",
            Event::UnlockFinished(UnlockOutcome::WrongPassphrase),
            "Locked",
            vec![Action::Answer(
                CommandId(1),
                Err(CommandError::WrongPassphrase),
            )],
        ),
        (
            "Unlocking",
            Event::UnlockFinished(UnlockOutcome::Unlocked),
            "CheckingStart",
            vec![Action::CheckStart],
        ),
        (
            "CheckingStart",
            Event::StartChecked(StartVerdict::Start),
            "CheckingStart",
            vec![Action::OpenSession],
        ),
        (
            "CheckingStart",
            Event::StartChecked(StartVerdict::Refuse("behind a backup".into())),
            "ShuttingDown",
            vec![
                Action::Answer(
                    CommandId(1),
                    Err(CommandError::WrongState(
                        "unlocked, but refusing to start: behind a backup".into(),
                    )),
                ),
                Action::NotifyStopping("stopping".into()),
                Action::CloseSession,
            ],
        ),
        (
            "CheckingStart",
            Event::StartChecked(StartVerdict::Unavailable("only 1 of 2 stores".into())),
            "Locked",
            vec![
                Action::Log(Level::Error, "refusing to start: only 1 of 2 stores".into()),
                Action::Answer(
                    CommandId(1),
                    Err(CommandError::WrongState(
                        "refusing to start, the vault is locked again: only 1 of 2 stores".into(),
                    )),
                ),
                Action::ForgetVault,
                Action::NotifyStatus("locked: waiting for the vault passphrase".into()),
                Action::NotifyStatus("locked: refused to start: only 1 of 2 stores".into()),
            ],
        ),
        (
            "CheckingStart",
            Event::SessionOpened,
            "Launching",
            vec![
                Action::Answer(CommandId(1), Ok(Answer::Unlocked)),
                Action::LookForPendingPlan,
            ],
        ),
        (
            "CheckingStart",
            Event::SessionFailed("not tmpfs".into()),
            "ShuttingDown",
            vec![Action::CloseSession],
        ),
        (
            "Launching",
            Event::PendingPlan(None),
            "Launching",
            vec![Action::SpawnDaemon],
        ),
        (
            "Launching",
            Event::PendingPlan(Some(due_plan.clone())),
            "UpgradePreparing",
            vec![
                Action::BeginUpgrade(due_plan.clone()),
                Action::RunUpgrade(plan("v2", 40)),
            ],
        ),
        (
            "Launching",
            Event::DaemonSpawned { pid: 7 },
            "Running",
            // READY=1 went out when the vault was found locked.
            vec![Action::NotifyStatus("running gaiad (pid 7)".into())],
        ),
        (
            "Launching",
            Event::SpawnFailed("no binary".into()),
            "ShuttingDown",
            vec![Action::CloseSession],
        ),
        (
            "Running",
            Event::DaemonExited(exit(2)),
            "BackingOff",
            vec![
                Action::ReportCrash {
                    exit: ExitKind::Code(2),
                    crash_number: 1,
                    delay: Duration::from_millis(750),
                },
                Action::SetTimer(Timer::Backoff, Duration::from_millis(750)),
            ],
        ),
        (
            "Running",
            Event::DaemonExited(exit(0)),
            "ShuttingDown",
            vec![Action::NotifyStopping("stopping".into())],
        ),
        (
            "Running",
            Event::DaemonExited(DaemonExit {
                plan_in_file: Some(plan("v2", 40)),
                ..exit(1)
            }),
            "UpgradePreparing",
            vec![
                Action::BeginUpgrade(due_plan.clone()),
                Action::RunUpgrade(plan("v2", 40)),
            ],
        ),
        (
            "Running",
            Event::PlanDetected(DetectedPlan {
                plan: plan("v2", 40),
                source: DetectionSource::OutputLine,
            }),
            "UpgradeStoppingOld",
            vec![
                Action::SignalDaemon(StopSignal::Interrupt),
                Action::SetTimer(Timer::StopGrace, Duration::from_secs(30)),
            ],
        ),
        (
            "Running",
            Event::PlanDetected(due_plan.clone()),
            "Running",
            vec![Action::CheckPlanDue(plan("v2", 40))],
        ),
        (
            "Running",
            Event::PlanInvalid("no name".into()),
            "Running",
            vec![Action::NotifyStatus(
                "invalid upgrade-info.json: no name".into(),
            )],
        ),
        (
            "Running",
            Event::Signal(StopSignal::Terminate),
            "Stopping",
            vec![Action::SignalDaemon(StopSignal::Terminate)],
        ),
        (
            "Stopping",
            Event::Timer(Timer::StopGrace),
            "Stopping",
            vec![Action::KillDaemon],
        ),
        (
            "Stopping",
            Event::DaemonExited(exit(0)),
            "StoppedByOperator",
            vec![Action::Answer(
                CommandId(2),
                Ok(Answer::Node(NodeState::Stopped)),
            )],
        ),
        (
            "Stopping",
            Event::Signal(StopSignal::Interrupt),
            "Stopping",
            vec![Action::Answer(
                CommandId(2),
                Err(CommandError::WrongState(
                    "the supervisor is shutting down; the node is being stopped".into(),
                )),
            )],
        ),
        (
            "BackingOff",
            Event::Timer(Timer::Backoff),
            "Launching",
            vec![Action::SpawnDaemon],
        ),
        (
            "BackingOff",
            Event::Signal(StopSignal::Terminate),
            "ShuttingDown",
            vec![
                Action::CancelTimer(Timer::Backoff),
                Action::NotifyStopping("stopping".into()),
            ],
        ),
        (
            "UpgradeStoppingOld",
            Event::DaemonExited(exit(0)),
            "UpgradePreparing",
            vec![
                Action::RecordOldStopped {
                    exit: ExitKind::Code(0),
                },
                Action::RunUpgrade(plan("v2", 40)),
            ],
        ),
        (
            "UpgradeStoppingOld",
            Event::Timer(Timer::StopGrace),
            "UpgradeStoppingOld",
            vec![Action::KillDaemon],
        ),
        (
            "UpgradePreparing",
            Event::UpgradeProgress(UpgradeStep::DataBackup),
            "UpgradePreparing",
            vec![],
        ),
        (
            "UpgradePreparing",
            Event::UpgradeFinished(Ok(())),
            "Launching",
            vec![Action::SpawnDaemon],
        ),
        (
            "UpgradePreparing",
            Event::UpgradeFinished(Err(UpgradeFailure {
                message: "binary missing".into(),
                waits_for_binary: true,
            })),
            "WaitingForBinary",
            vec![
                Action::PauseUpgradeClock,
                Action::SetTimer(Timer::BinaryPoll, Duration::from_millis(300)),
            ],
        ),
        (
            "UpgradePreparing",
            Event::UpgradeFinished(Err(UpgradeFailure {
                message: "aborted (exit 30)".into(),
                waits_for_binary: false,
            })),
            "Halted",
            vec![Action::FinishUpgrade(UpgradeOutcome::Failed(
                "aborted (exit 30)".into(),
            ))],
        ),
        (
            "UpgradePreparing",
            Event::Signal(StopSignal::Terminate),
            "ShuttingDown",
            vec![
                Action::CancelJob(Job::Upgrade),
                Action::FinishUpgrade(UpgradeOutcome::Failed("interrupted by shutdown".into())),
                Action::CloseSession,
            ],
        ),
        (
            "UpgradeRestartDelay",
            Event::Timer(Timer::RestartDelay),
            "Launching",
            vec![Action::ResumeUpgradeClock, Action::SpawnDaemon],
        ),
        (
            "WaitingForBinary",
            Event::Timer(Timer::BinaryPoll),
            "WaitingForBinary",
            vec![Action::CheckBinary(plan("v2", 40))],
        ),
        (
            "WaitingForBinary",
            Event::BinaryChecked(false),
            "WaitingForBinary",
            vec![Action::SetTimer(
                Timer::BinaryPoll,
                Duration::from_millis(300),
            )],
        ),
        (
            "WaitingForBinary",
            Event::BinaryChecked(true),
            "UpgradePreparing",
            vec![
                Action::ResumeUpgradeClock,
                Action::RunUpgrade(plan("v2", 40)),
            ],
        ),
        (
            "WaitingForBinary",
            Event::Signal(StopSignal::Terminate),
            "ShuttingDown",
            vec![Action::FinishUpgrade(UpgradeOutcome::Failed(
                "binary missing".into(),
            ))],
        ),
        (
            "Halted",
            Event::Signal(StopSignal::Terminate),
            "ShuttingDown",
            vec![Action::CloseSession],
        ),
        (
            "Restoring",
            Event::RestoreFinished(Ok(restored())),
            "StoppedByOperator",
            vec![Action::Answer(
                CommandId(3),
                Ok(Answer::Restored(restored())),
            )],
        ),
        (
            "Restoring",
            Event::Signal(StopSignal::Terminate),
            "ShuttingDown",
            vec![
                Action::CancelJob(Job::Restore),
                Action::Answer(
                    CommandId(3),
                    Err(CommandError::WrongState(
                        "the supervisor is stopping; nothing was restored".into(),
                    )),
                ),
            ],
        ),
        (
            "Locking",
            Event::SessionClosed,
            "Locked",
            vec![Action::Answer(CommandId(3), Ok(Answer::Locked))],
        ),
        (
            "Locking",
            Event::Signal(StopSignal::Terminate),
            "Locking",
            vec![],
        ),
        (
            "ShuttingDown",
            Event::SessionClosed,
            "ShuttingDown",
            vec![Action::StopBackground],
        ),
        (
            "ShuttingDown",
            Event::Signal(StopSignal::Terminate),
            "ShuttingDown",
            vec![],
        ),
        // Stale events change nothing.
        ("Locked", Event::Timer(Timer::Backoff), "Locked", vec![]),
        (
            "StoppedByOperator",
            Event::DaemonExited(exit(0)),
            "StoppedByOperator",
            vec![],
        ),
        (
            "Running",
            Event::RestoreFinished(Ok(restored())),
            "Running",
            vec![],
        ),
    ]
}

#[test]
fn transitions_table() {
    for (phase, event, next, required) in transitions() {
        let mut machine = machine_at(phase, true);
        let case = format!("{phase} × {event:?}");
        let actions = machine.step(event);
        assert_eq!(kind(machine.phase()), next, "{case}: {actions:?}");
        for action in required {
            assert!(
                actions.contains(&action),
                "{case}: {action:?} missing from {actions:?}"
            );
        }
    }
}

#[test]
fn ready_is_notified_once_at_the_first_start() {
    let mut machine = machine_at("Launching", false);
    let actions = machine.step(Event::DaemonSpawned { pid: 7 });
    assert_eq!(
        actions,
        vec![Action::NotifyReady("running gaiad (pid 7)".into())]
    );
    machine.step(Event::Command(ID, Command::NodeRestart));
    machine.step(Event::DaemonExited(exit(0)));
    let actions = machine.step(Event::DaemonSpawned { pid: 8 });
    assert_eq!(
        actions,
        vec![Action::NotifyStatus("running gaiad (pid 8)".into())]
    );
}

#[test]
fn a_shutdown_during_a_lock_waits_for_the_keys_to_be_wiped() {
    let mut machine = machine_at("Locking", true);
    assert!(
        machine
            .step(Event::Signal(StopSignal::Terminate))
            .is_empty()
    );
    let actions = machine.step(Event::SessionClosed);
    assert!(actions.contains(&Action::Answer(CommandId(3), Ok(Answer::Locked))));
    assert!(actions.contains(&Action::StopBackground), "{actions:?}");
    assert!(!actions.contains(&Action::CloseSession), "closed twice");
    machine.step(Event::BackgroundStopped);
    assert_eq!(machine.outcome(), Some(&RunOutcome::Shutdown));
}

#[test]
fn a_shutdown_while_the_old_binary_stops_abandons_the_upgrade_after_it_stopped() {
    let mut machine = machine_at("UpgradeStoppingOld", true);
    let actions = machine.step(Event::Signal(StopSignal::Terminate));
    assert!(!actions.contains(&Action::CloseSession), "{actions:?}");
    let actions = machine.step(Event::DaemonExited(exit(0)));
    assert!(
        actions.contains(&Action::FinishUpgrade(UpgradeOutcome::Failed(
            "interrupted by shutdown".into()
        ))),
        "{actions:?}"
    );
    assert!(!actions.iter().any(|a| matches!(a, Action::RunUpgrade(_))));
    assert_eq!(kind(machine.phase()), "ShuttingDown");
}

#[test]
fn a_host_shutdown_runs_the_command_after_the_keys_are_wiped() {
    let mut machine = machine_at("StoppedByOperator", true);
    machine.step(Event::Command(
        ID,
        Command::HostShutdown {
            operator: "alice".into(),
        },
    ));
    let actions = machine.step(Event::SessionClosed);
    assert!(
        actions.contains(&Action::RunHostShutdownCommand),
        "{actions:?}"
    );
    let actions = machine.step(Event::HostCommandFinished);
    assert_eq!(actions, vec![Action::StopBackground]);
    machine.step(Event::BackgroundStopped);
    assert_eq!(machine.outcome(), Some(&RunOutcome::HostShutdown));
}

#[test]
fn a_held_plan_waits_for_its_height_and_a_crash_short_of_it_is_a_crash() {
    let mut machine = machine_at("Running", true);
    let held = plan("v2", 40);
    machine.step(Event::PlanDetected(DetectedPlan {
        plan: held.clone(),
        source: DetectionSource::UpgradeInfoFile,
    }));
    let actions = machine.step(Event::PlanDue {
        plan: held.clone(),
        node_height: Some(30),
    });
    assert!(actions.contains(&Action::HoldPlan(Some(held.clone()))));
    assert!(actions.contains(&Action::SetTimer(
        Timer::ScheduledCheck,
        Duration::from_millis(300)
    )));
    assert_eq!(kind(machine.phase()), "Running");
    // The timer asks again; still short: held, not announced twice.
    let actions = machine.step(Event::Timer(Timer::ScheduledCheck));
    assert_eq!(actions, vec![Action::CheckPlanDue(held.clone())]);
    let actions = machine.step(Event::PlanDue {
        plan: held.clone(),
        node_height: Some(35),
    });
    assert!(!actions.iter().any(|a| matches!(a, Action::HoldPlan(_))));
    // A crash with the held plan on disk, short of its height: a crash.
    let actions = machine.step(Event::DaemonExited(DaemonExit {
        plan_in_file: Some(held.clone()),
        ..exit(2)
    }));
    assert_eq!(kind(machine.phase()), "BackingOff", "{actions:?}");
    assert!(actions.contains(&Action::HoldPlan(None)));
    // Back running, the plan comes due at 39.
    machine.step(Event::Timer(Timer::Backoff));
    machine.step(Event::DaemonSpawned { pid: 50 });
    machine.step(Event::PlanDetected(DetectedPlan {
        plan: held.clone(),
        source: DetectionSource::UpgradeInfoFile,
    }));
    // A stale answer for another plan is ignored.
    assert!(
        machine
            .step(Event::PlanDue {
                plan: plan("v3", 99),
                node_height: Some(98),
            })
            .is_empty()
    );
    machine.step(Event::PlanDue {
        plan: held,
        node_height: Some(39),
    });
    assert_eq!(kind(machine.phase()), "UpgradeStoppingOld");
}

#[test]
fn an_upgrade_halt_takes_the_whole_info_from_the_file_when_both_name_it() {
    let line = UpgradePlan {
        info: "https://x/info.json".into(),
        ..plan("v2", 40)
    };
    let file = UpgradePlan {
        info: "https://x/info.json with the rest the console cut".into(),
        ..plan("v2", 40)
    };
    let mut machine = machine_at("Running", true);
    let actions = machine.step(Event::DaemonExited(DaemonExit {
        plan_from_output: Some(line.clone()),
        plan_in_file: Some(file.clone()),
        ..exit(1)
    }));
    assert!(actions.contains(&Action::BeginUpgrade(DetectedPlan {
        plan: file,
        source: DetectionSource::OutputLine,
    })));
    // Another plan in the file does not replace the line's.
    let mut machine = machine_at("Running", true);
    let actions = machine.step(Event::DaemonExited(DaemonExit {
        plan_from_output: Some(line.clone()),
        plan_in_file: Some(plan("v3", 90)),
        ..exit(1)
    }));
    assert!(actions.contains(&Action::BeginUpgrade(DetectedPlan {
        plan: line,
        source: DetectionSource::OutputLine,
    })));
}

#[test]
fn repeated_crashes_become_a_crash_loop() {
    let mut machine = machine_at("Running", true);
    for crash in 1..=2 {
        let actions = machine.step(Event::DaemonExited(exit(2)));
        assert_eq!(kind(machine.phase()), "BackingOff", "crash {crash}");
        assert!(actions.iter().any(
            |a| matches!(a, Action::ReportCrash { crash_number, .. } if *crash_number == crash)
        ));
        machine.step(Event::Timer(Timer::Backoff));
        machine.step(Event::DaemonSpawned { pid: 50 + crash });
    }
    let actions = machine.step(Event::DaemonExited(exit(2)));
    assert!(matches!(
        machine.phase(),
        Phase::ShuttingDown {
            outcome: RunOutcome::CrashLoop { crashes: 3, .. },
            ..
        }
    ));
    assert!(actions.contains(&Action::NotifyStopping("stopping".into())));
}

#[test]
fn an_upgrade_completes_when_the_new_binary_runs() {
    let mut machine = machine_at("UpgradePreparing", true);
    machine.step(Event::UpgradeFinished(Ok(())));
    let actions = machine.step(Event::DaemonSpawned { pid: 77 });
    assert!(actions.contains(&Action::CompleteUpgrade), "{actions:?}");
    // Only once.
    machine.step(Event::Command(CommandId(9), Command::NodeRestart));
    machine.step(Event::DaemonExited(exit(0)));
    let actions = machine.step(Event::DaemonSpawned { pid: 78 });
    assert!(!actions.contains(&Action::CompleteUpgrade));

    // Without DAEMON_RESTART_AFTER_UPGRADE: record, then exit for systemd.
    let mut settings = settings(true);
    settings.restart_after_upgrade = false;
    let mut machine = machine_at("UpgradePreparing", true);
    machine.settings = settings;
    let actions = machine.step(Event::UpgradeFinished(Ok(())));
    assert!(actions.contains(&Action::FinishUpgrade(UpgradeOutcome::SwitchedNotRestarted)));
    assert!(matches!(
        machine.phase(),
        Phase::ShuttingDown {
            outcome: RunOutcome::UpgradedWithoutRestart,
            ..
        }
    ));
}

#[test]
fn phases_name_themselves_for_the_board() {
    for (phase, node, pid, locked) in [
        ("Locked", NodeState::Locked, None, Some(true)),
        ("CheckingStart", NodeState::Starting, None, Some(true)),
        ("Running", NodeState::Running, Some(PID), Some(false)),
        ("Stopping", NodeState::Stopping, Some(PID), Some(false)),
        ("StoppedByOperator", NodeState::Stopped, None, Some(false)),
        ("BackingOff", NodeState::Restarting, None, Some(false)),
        (
            "UpgradeStoppingOld",
            NodeState::Upgrading,
            Some(PID),
            Some(false),
        ),
        ("WaitingForBinary", NodeState::Halted, None, Some(false)),
        ("Locking", NodeState::Stopping, None, Some(false)),
        ("Exited", NodeState::Stopping, None, Some(true)),
    ] {
        let machine = machine_at(phase, true);
        assert_eq!(
            (machine.node_state(), machine.pid(), machine.vault_locked()),
            (node, pid, locked),
            "{phase}"
        );
    }
    assert_eq!(machine_at("Running", false).vault_locked(), None);
}

// ---------------------------------------------------------------- model

/// A model of the executor and the world around the machine: it performs
/// the actions the way the executor does (jobs finish later, a signalled
/// daemon exits later) and checks the machine's promises on every step.
#[derive(Default)]
struct World {
    /// `[failover]`: the leadership is held (acquired, not lost, not
    /// released) and the takeover rule passed since it was acquired.
    /// The leadership the driver holds (as etcd granted it), if any.
    lease_token: Option<i64>,
    lease_checked: bool,
    /// etcd's revisions: every leadership gets a higher token.
    next_token: i64,
    daemon_alive: bool,
    daemon_signalled: bool,
    session_open: bool,
    timers: Vec<Timer>,
    /// Jobs in flight, in the order started.
    jobs: Vec<Action>,
    /// Results of the actions the executor performs at once: delivered
    /// before anything else can happen.
    immediate: Vec<Action>,
    /// Commands sent and not answered.
    pending: Vec<CommandId>,
    next_id: u64,
    upgrade_record_open: bool,
}

impl World {
    fn apply(&mut self, machine: &mut Machine, event: Event) {
        if let Event::Command(id, _) = &event {
            self.pending.push(*id);
        }
        let alive_before = self.daemon_alive;
        let failover = machine.settings.failover.is_some();
        match &event {
            Event::Lease(LeaseEvent::Acquired { token, .. }) => {
                self.lease_token = Some(*token);
                self.lease_checked = false;
            }
            Event::Lease(LeaseEvent::Lost { token, .. }) if self.lease_token == Some(*token) => {
                self.lease_token = None;
                self.lease_checked = false;
            }
            Event::Timer(Timer::Fence) => {
                self.lease_token = None;
                self.lease_checked = false;
            }
            Event::TakeoverFinished(Ok(_)) if *machine.phase() == Phase::TakingOver => {
                self.lease_checked = self.lease_token.is_some();
            }
            Event::HandoffFinished(Ok(_))
                if matches!(machine.phase(), Phase::HandingOff { .. }) =>
            {
                self.lease_token = None;
                self.lease_checked = false;
            }
            _ => {}
        }
        let fencing = failover
            && machine.lease_token().is_some()
            && match &event {
                Event::Lease(LeaseEvent::Lost { token, .. }) => {
                    machine.lease_token() == Some(*token)
                }
                Event::Timer(Timer::Fence) => true,
                _ => false,
            };
        let was_shutting_down = matches!(
            machine.phase(),
            Phase::ShuttingDown { .. } | Phase::Exited(_)
        );
        let actions = machine.step(event.clone());
        let context = format!("{event:?} → {:?}: {actions:?}", machine.phase());
        for action in &actions {
            match action {
                Action::Answer(id, _) => {
                    let position = self.pending.iter().position(|p| p == id);
                    assert!(
                        position.is_some(),
                        "answered twice or never asked: {context}"
                    );
                    self.pending.remove(position.unwrap());
                }
                Action::NotifyStopping(_) => assert!(
                    matches!(machine.phase(), Phase::ShuttingDown { .. }),
                    "STOPPING=1 outside a shutdown: {context}"
                ),
                Action::SpawnDaemon => {
                    assert!(!self.daemon_alive, "two daemons: {context}");
                    assert!(
                        !failover || (self.lease_checked && self.lease_token.is_some()),
                        "a failover host started its node without holding the leadership and passing the takeover rule: {context}"
                    );
                    assert!(
                        !machine.settings.vault || self.session_open,
                        "started without the start rule and the keys: {context}"
                    );
                    self.immediate.push(action.clone());
                }
                Action::ReleaseLease(token) => {
                    assert!(
                        !self.daemon_alive || self.daemon_signalled,
                        "leadership released with the node running: {context}"
                    );
                    // The driver gives up only the leadership the release names.
                    if self.lease_token == Some(*token) {
                        self.lease_token = None;
                        self.lease_checked = false;
                    }
                }
                Action::SetDeadline(timer, _) => {
                    self.timers.retain(|t| t != timer);
                    self.timers.push(*timer);
                }
                Action::RunTakeover(_) => self.jobs.push(action.clone()),
                Action::RunRestore(_)
                | Action::RunUpgrade(_)
                | Action::CloseSession
                | Action::RunHandoff { .. } => {
                    assert!(!self.daemon_alive, "with the node running: {context}");
                    self.jobs.push(action.clone());
                }
                Action::SignalDaemon(_) | Action::KillDaemon if self.daemon_alive => {
                    self.daemon_signalled = true;
                }
                Action::SetTimer(timer, _) => {
                    self.timers.retain(|t| t != timer);
                    self.timers.push(*timer);
                }
                Action::CancelTimer(timer) => self.timers.retain(|t| t != timer),
                Action::CancelJob(job) => self.jobs.retain(|j| job_kind(j) != Some(*job)),
                Action::BeginUpgrade(_) => {
                    assert!(!self.upgrade_record_open, "two upgrade records: {context}");
                    self.upgrade_record_open = true;
                }
                Action::FinishUpgrade(_) | Action::CompleteUpgrade => {
                    assert!(self.upgrade_record_open, "no record to finish: {context}");
                    self.upgrade_record_open = false;
                }
                Action::OpenSession | Action::LookForPendingPlan | Action::CheckBinary(_) => {
                    self.immediate.push(action.clone())
                }
                Action::TryUnlock(_)
                | Action::CheckStart
                | Action::CheckPlanDue(_)
                | Action::RunHostShutdownCommand
                | Action::StopBackground => self.jobs.push(action.clone()),
                _ => {}
            }
        }
        if fencing && alive_before {
            assert!(
                actions.iter().any(|a| matches!(a, Action::KillDaemon)),
                "the leadership is gone but the node was not killed: {context}"
            );
        }
        if was_shutting_down {
            assert!(
                !actions.iter().any(|a| matches!(a, Action::SpawnDaemon)),
                "a start during a shutdown: {context}"
            );
        }
        // Every command not yet answered is one the phase is acting on.
        for id in &self.pending {
            let held = match machine.phase() {
                Phase::Unlocking { by } | Phase::CheckingStart { by } => *by == Some(*id),
                Phase::Restoring { by } | Phase::Locking { by } => by == id,
                Phase::HandingOff { by, .. } => by == id,
                Phase::Stopping { purpose, .. } => matches!(
                    purpose,
                    StopPurpose::OperatorStop(by) | StopPurpose::OperatorRestart(by) | StopPurpose::Lock(by) | StopPurpose::Handoff(by, _) if by == id
                ),
                _ => false,
            };
            assert!(
                held,
                "command {id:?} is neither answered nor in progress: {context}"
            );
        }
    }

    /// The events the world may produce now, chosen by `pick`.
    fn next_event(&mut self, machine: &Machine, pick: u8) -> Event {
        if !self.immediate.is_empty() {
            let action = self.immediate.remove(0);
            return self.finish(action, pick);
        }
        let mut choices: Vec<Choice> = Vec::new();
        // A control command.
        let failover = machine.settings.failover.is_some();
        choices.push(Box::new(move |world: &mut World| {
            world.next_id += 1;
            let command = if failover && pick % 8 == 7 {
                Command::Handoff {
                    to: "val-b".into(),
                    operator: "alice".into(),
                }
            } else {
                commands()[usize::from(pick) % 7].clone()
            };
            Event::Command(CommandId(world.next_id), command)
        }));
        // The driver campaigns only for a standby and never while it holds a leadership.
        if failover && machine.wants_leadership() && self.lease_token.is_none() {
            choices.push(Box::new(move |world: &mut World| {
                world.next_token += 1;
                Event::Lease(LeaseEvent::Acquired {
                    token: world.next_token,
                    stop_by: Instant::now() + Duration::from_secs(7),
                    handoff: pick.is_multiple_of(2).then(|| HandoffGrant {
                        from: "val-b".into(),
                        watermark: Some(restored().watermark),
                    }),
                })
            }));
        }
        if let (true, Some(token)) = (failover, self.lease_token) {
            choices.push(Box::new(move |_| {
                Event::Lease(LeaseEvent::Renewed {
                    token,
                    stop_by: Instant::now() + Duration::from_secs(7),
                })
            }));
            choices.push(Box::new(move |_| {
                Event::Lease(LeaseEvent::Lost {
                    token,
                    reason: "deposed".into(),
                })
            }));
        }
        // News of an older leadership, arriving late.
        if failover && self.next_token > 1 {
            let stale = self.next_token - 1 - i64::from(pick % 2);
            choices.push(Box::new(move |_| {
                Event::Lease(LeaseEvent::Lost {
                    token: stale,
                    reason: "an older lease expired".into(),
                })
            }));
        }
        choices.push(Box::new(|_| Event::Signal(StopSignal::Terminate)));
        if self.daemon_alive {
            let signalled = self.daemon_signalled;
            choices.push(Box::new(move |world: &mut World| {
                world.daemon_alive = false;
                world.daemon_signalled = false;
                Event::DaemonExited(if signalled { exit(0) } else { exit(2) })
            }));
            if matches!(machine.phase(), Phase::Running { .. }) {
                choices.push(Box::new(move |_| {
                    Event::PlanDetected(DetectedPlan {
                        plan: plan("v2", 40),
                        source: if pick.is_multiple_of(2) {
                            DetectionSource::OutputLine
                        } else {
                            DetectionSource::UpgradeInfoFile
                        },
                    })
                }));
            }
        }
        if !self.timers.is_empty() {
            choices.push(Box::new(move |world: &mut World| {
                let timer = world.timers.remove(usize::from(pick) % world.timers.len());
                Event::Timer(timer)
            }));
        }
        if !self.jobs.is_empty() {
            choices.push(Box::new(move |world: &mut World| {
                let job = world.jobs.remove(0);
                world.finish(job, pick)
            }));
        }
        let index = usize::from(pick) % choices.len();
        choices.swap_remove(index)(self)
    }

    /// A job's result, varied by `pick`.
    fn finish(&mut self, job: Action, pick: u8) -> Event {
        match job {
            Action::TryUnlock(_) => Event::UnlockFinished(if pick.is_multiple_of(3) {
                UnlockOutcome::WrongPassphrase
            } else {
                UnlockOutcome::Unlocked
            }),
            Action::CheckStart => Event::StartChecked(match pick % 7 {
                0 => StartVerdict::Refuse("behind a backup".into()),
                1 => StartVerdict::Unavailable("only 1 of 2 stores".into()),
                _ => StartVerdict::Start,
            }),
            Action::OpenSession => {
                self.session_open = true;
                Event::SessionOpened
            }
            Action::CloseSession => {
                self.session_open = false;
                Event::SessionClosed
            }
            Action::LookForPendingPlan => Event::PendingPlan(None),
            Action::SpawnDaemon => {
                if pick.is_multiple_of(11) {
                    Event::SpawnFailed("no binary".into())
                } else {
                    self.daemon_alive = true;
                    Event::DaemonSpawned {
                        pid: 1000 + u32::from(pick),
                    }
                }
            }
            Action::CheckPlanDue(plan) => Event::PlanDue {
                plan,
                node_height: Some(if pick.is_multiple_of(2) { 10 } else { 39 }),
            },
            Action::RunUpgrade(_) => Event::UpgradeFinished(match pick % 3 {
                0 => Ok(()),
                1 => Err(UpgradeFailure {
                    message: "binary missing".into(),
                    waits_for_binary: true,
                }),
                _ => Err(UpgradeFailure {
                    message: "pre-upgrade failed".into(),
                    waits_for_binary: false,
                }),
            }),
            Action::CheckBinary(_) => Event::BinaryChecked(pick.is_multiple_of(2)),
            Action::RunRestore(_) => Event::RestoreFinished(Ok(restored())),
            Action::RunHostShutdownCommand => Event::HostCommandFinished,
            Action::StopBackground => Event::BackgroundStopped,
            Action::RunTakeover(_) => Event::TakeoverFinished(if pick.is_multiple_of(4) {
                Err("the chain guard saw the key".into())
            } else {
                Ok(restored().watermark)
            }),
            Action::RunHandoff { to } => Event::HandoffFinished(if pick.is_multiple_of(3) {
                Err("etcd unreachable".into())
            } else {
                Ok(HandoffDone {
                    to,
                    watermark: Some(restored().watermark),
                    stores: vec!["local".into()],
                    token: 7,
                })
            }),
            other => panic!("not a job: {other:?}"),
        }
    }
}

/// One way the world may move on.
type Choice = Box<dyn FnOnce(&mut World) -> Event>;

fn job_kind(action: &Action) -> Option<Job> {
    match action {
        Action::TryUnlock(_) => Some(Job::Unlock),
        Action::CheckStart => Some(Job::StartCheck),
        Action::RunUpgrade(_) => Some(Job::Upgrade),
        Action::RunRestore(_) => Some(Job::Restore),
        Action::CheckPlanDue(_) => Some(Job::PlanDue),
        Action::RunTakeover(_) => Some(Job::Takeover),
        Action::RunHandoff { .. } => Some(Job::Handoff),
        _ => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Over random worlds: never two daemons, never a start without the
    /// start rule and the keys, never a restore, an upgrade or a session
    /// close with the node running, STOPPING=1 only in a shutdown, every
    /// command answered once and never left hanging, and a shutdown always
    /// ends.
    #[test]
    fn the_machine_keeps_its_promises(vault in any::<bool>(), failover in any::<bool>(), picks in prop::collection::vec(any::<u8>(), 1..120)) {
        let failover = failover && vault;
        let mut settings = settings(vault);
        if failover {
            settings.failover = Some(FailoverSettings {
                host_id: "val-a".into(),
                peers: vec!["val-b".into()],
            });
        }
        let mut machine = Machine::new(settings);
        let mut world = World::default();
        let start = if vault { VaultAtStart::Unattended } else { VaultAtStart::NoVault };
        world.apply(&mut machine, Event::Started(start));
        for pick in picks {
            if machine.outcome().is_some() {
                break;
            }
            let event = world.next_event(&machine, pick);
            world.apply(&mut machine, event);
        }
        // Shut down and let the world settle: it must end, with every
        // command answered.
        if machine.outcome().is_none() {
            world.apply(&mut machine, Event::Signal(StopSignal::Terminate));
        }
        for round in 0..200 {
            if machine.outcome().is_some() {
                break;
            }
            prop_assert!(round < 199, "the shutdown did not end: {:?}", machine.phase());
            let event = if !world.immediate.is_empty() {
                let action = world.immediate.remove(0);
                world.finish(action, 1)
            } else if world.daemon_alive {
                world.daemon_alive = false;
                Event::DaemonExited(exit(0))
            } else if !world.jobs.is_empty() {
                let job = world.jobs.remove(0);
                world.finish(job, 1)
            } else if !world.timers.is_empty() {
                Event::Timer(world.timers.remove(0))
            } else {
                Event::Signal(StopSignal::Terminate)
            };
            world.apply(&mut machine, event);
        }
        prop_assert!(world.pending.is_empty(), "unanswered: {:?}", world.pending);
        prop_assert!(!world.daemon_alive);
    }
}

/// An upgrade line waits for upgrade-info.json to confirm it (issue 16,
/// finding 10): confirmed, it upgrades with the file's plan; a different
/// file wins; unconfirmed, it is acted on alone after the wait, saying so;
/// a halt while waiting upgrades with the line's plan.
#[test]
fn an_upgrade_line_waits_for_the_file_to_confirm_it() {
    let line = |name: &str| DetectedPlan {
        plan: plan(name, 12),
        source: DetectionSource::OutputLine,
    };
    let file = |name: &str, info: &str| DetectedPlan {
        plan: UpgradePlan {
            info: info.into(),
            ..plan(name, 12)
        },
        source: DetectionSource::UpgradeInfoFile,
    };
    let began = |actions: &[Action]| {
        actions.iter().find_map(|action| match action {
            Action::BeginUpgrade(detected) => Some(detected.clone()),
            _ => None,
        })
    };
    let logged = |actions: &[Action], level: Level, words: &str| {
        actions.iter().any(
            |action| matches!(action, Action::Log(l, text) if *l == level && text.contains(words)),
        )
    };

    // Seen: the machine waits, the node keeps running.
    let mut machine = machine_at("RunningConfirmingLines", false);
    let actions = machine.step(Event::PlanDetected(line("v2")));
    assert_eq!(kind(machine.phase()), "Running", "{actions:?}");
    assert!(actions.contains(&Action::SetTimer(
        Timer::LineConfirm,
        Duration::from_secs(1)
    )));
    assert!(began(&actions).is_none());
    // Confirmed by the file: the upgrade begins with the file's whole info.
    let actions = machine.step(Event::PlanDetected(file("v2", "{\"binaries\":{}}")));
    assert!(actions.contains(&Action::CancelTimer(Timer::LineConfirm)));
    assert!(
        logged(&actions, Level::Info, "confirms the upgrade line"),
        "{actions:?}"
    );
    let detected = began(&actions).expect("the upgrade began");
    assert_eq!(detected.plan.info, "{\"binaries\":{}}");
    assert_eq!(detected.source, DetectionSource::OutputLine);
    assert_eq!(kind(machine.phase()), "UpgradeStoppingOld");

    // Not confirmed in time: acted on alone, with a warning.
    let mut machine = machine_at("RunningConfirmingLines", false);
    machine.step(Event::PlanDetected(line("v2")));
    let actions = machine.step(Event::Timer(Timer::LineConfirm));
    assert!(
        logged(&actions, Level::Warn, "acting on the output line alone"),
        "{actions:?}"
    );
    assert_eq!(began(&actions).map(|d| d.plan.name), Some("v2".to_owned()));

    // The file names another upgrade: the file wins (its due check).
    let mut machine = machine_at("RunningConfirmingLines", false);
    machine.step(Event::PlanDetected(line("v2")));
    let actions = machine.step(Event::PlanDetected(file("v3", "")));
    assert!(
        logged(&actions, Level::Warn, "following upgrade-info.json"),
        "{actions:?}"
    );
    assert!(
        actions.contains(&Action::CheckPlanDue(plan("v3", 12))),
        "{actions:?}"
    );
    assert!(began(&actions).is_none());
    // …and the stale timer changes nothing.
    let actions = machine.step(Event::Timer(Timer::LineConfirm));
    assert!(began(&actions).is_none(), "{actions:?}");

    // The node halts while the line waits: the line's plan is the halt's.
    let mut machine = machine_at("RunningConfirmingLines", false);
    machine.step(Event::PlanDetected(line("v2")));
    let actions = machine.step(Event::DaemonExited(exit(1)));
    assert!(actions.contains(&Action::CancelTimer(Timer::LineConfirm)));
    assert_eq!(
        began(&actions).map(|d| d.plan.name),
        Some("v2".to_owned()),
        "{actions:?}"
    );
}

fn rotate(bastion: &str) -> Event {
    Event::RotateRequested(
        ID,
        RotateRequest {
            bastion: bastion.into(),
            keep_old: false,
            operator: "alice".into(),
        },
    )
}

fn rotated() -> RotationOutcome {
    RotationOutcome::Rotated(Box::new(palisade_wire::rpc::results::EipRotateResult {
        bastion: "b1".into(),
        rotation: "r1".into(),
        old_public_ip: None,
        old_allocation_id: None,
        public_ip: "54.0.0.2".into(),
        allocation_id: "eipalloc-2".into(),
        released_old: false,
        steps: Vec::new(),
        tunnel_up_ms: 900,
    }))
}

/// Elastic IP rotation beside the node's phases: never with the vault
/// locked, one at a time, answered when the job ends, interrupted (and
/// answered) by a lock or a shutdown, resumed once credentials are back;
/// the node is never touched.
#[test]
fn elastic_ip_rotation_runs_beside_the_node() {
    let wrong_state = |actions: &[Action]| {
        matches!(
            answers(actions, ID).as_slice(),
            [Err(CommandError::WrongState(_))]
        )
    };
    // Locked: refused, nothing runs.
    let mut machine = machine_at("Locked", true);
    let actions = machine.step(rotate("b1"));
    assert!(wrong_state(&actions), "{actions:?}");
    assert!(!actions.iter().any(|a| matches!(a, Action::RunRotation(_))));

    // Running: runs; a second one is refused while it runs; answered at the end.
    let mut machine = machine_at("Running", true);
    let phase = machine.phase().clone();
    let actions = machine.step(rotate("b1"));
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::RunRotation(r) if r.bastion == "b1")),
        "{actions:?}"
    );
    assert!(answers(&actions, ID).is_empty());
    let second = machine.step(Event::RotateRequested(
        CommandId(101),
        RotateRequest {
            bastion: "b2".into(),
            keep_old: false,
            operator: "bob".into(),
        },
    ));
    assert!(matches!(
        answers(&second, CommandId(101)).as_slice(),
        [Err(CommandError::WrongState(_))]
    ));
    let done = machine.step(Event::RotationFinished(rotated()));
    assert!(
        matches!(answers(&done, ID).as_slice(), [Ok(Answer::EipRotated(_))]),
        "{done:?}"
    );
    assert_eq!(
        machine.phase(),
        &phase,
        "a rotation never moves the node's phase"
    );
    // A failure is answered as one.
    machine.step(rotate("b1"));
    let failed = machine.step(Event::RotationFinished(RotationOutcome::Failed(
        "AuthFailure".into(),
    )));
    assert!(
        matches!(answers(&failed, ID).as_slice(), [Err(CommandError::Internal(m))] if m == "AuthFailure")
    );

    // A lock interrupts it: cancelled and answered; its late report is ignored.
    machine.step(rotate("b1"));
    let lock = machine.step(Event::Command(CommandId(102), Command::Lock));
    assert!(lock.contains(&Action::CancelJob(Job::Rotation)), "{lock:?}");
    assert!(wrong_state(&lock));
    let late = machine.step(Event::RotationFinished(rotated()));
    assert!(answers(&late, ID).is_empty(), "{late:?}");

    // A shutdown signal interrupts it too.
    let mut machine = machine_at("Running", true);
    machine.step(rotate("b1"));
    let signal = machine.step(Event::Signal(StopSignal::Terminate));
    assert!(
        signal.contains(&Action::CancelJob(Job::Rotation)),
        "{signal:?}"
    );
    assert!(wrong_state(&signal));

    // Credentials available: an interrupted rotation is resumed, once.
    let mut machine = machine_at("Running", true);
    let resume = machine.step(Event::CredentialsAvailable);
    assert_eq!(resume, vec![Action::ResumeRotation]);
    assert!(machine.step(Event::CredentialsAvailable).is_empty());
    // While it resumes, a request waits its turn (refused).
    assert!(wrong_state(&machine.step(rotate("b1"))));
    let resumed = machine.step(Event::RotationFinished(RotationOutcome::Resumed(Some(
        "rolled back".into(),
    ))));
    assert!(
        resumed
            .iter()
            .any(|a| matches!(a, Action::Log(Level::Warn, m) if m == "rolled back"))
    );
    assert!(
        machine
            .step(rotate("b1"))
            .iter()
            .any(|a| matches!(a, Action::RunRotation(_)))
    );
}

/// The automatic trigger's requests: never while locked or while another rotation runs (both
/// logged with the reason, nothing run), otherwise run and logged; its outcome is logged, no
/// command is answered.
#[test]
fn automatic_rotations_follow_the_same_rules_and_are_logged() {
    let auto = || {
        Event::AutoRotate(
            RotateRequest {
                bastion: "b1".into(),
                keep_old: false,
                operator: "the automatic trigger".into(),
            },
            "its tunnel has been down for 61s while b2 is up".into(),
        )
    };
    let logged = |actions: &[Action], text: &str| {
        actions
            .iter()
            .any(|a| matches!(a, Action::Log(_, m) if m.contains(text)))
    };
    let mut machine = machine_at("Locked", true);
    let actions = machine.step(auto());
    assert!(
        logged(&actions, "not started (the vault is locked)"),
        "{actions:?}"
    );
    assert!(!actions.iter().any(|a| matches!(a, Action::RunRotation(_))));

    let mut machine = machine_at("Running", true);
    let actions = machine.step(auto());
    assert!(
        actions.iter().any(|a| matches!(a, Action::RunRotation(_))),
        "{actions:?}"
    );
    assert!(logged(&actions, "down for 61s while b2 is up"));
    assert!(logged(
        &machine.step(auto()),
        "not started (another rotation is in progress)"
    ));
    assert!(wrong_state_answer(&machine.step(rotate("b1"))));
    let done = machine.step(Event::RotationFinished(rotated()));
    assert!(
        logged(&done, "automatic elastic IP rotation done"),
        "{done:?}"
    );
    assert!(!done.iter().any(|a| matches!(a, Action::Answer(..))));
    machine.step(auto());
    let failed = machine.step(Event::RotationFinished(RotationOutcome::Failed(
        "throttled".into(),
    )));
    assert!(logged(&failed, "failed: throttled"), "{failed:?}");
}

fn wrong_state_answer(actions: &[Action]) -> bool {
    matches!(
        answers(actions, ID).as_slice(),
        [Err(CommandError::WrongState(_))]
    )
}
