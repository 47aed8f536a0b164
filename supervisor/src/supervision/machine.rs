//! The supervisor's lifecycle as one explicit state machine: a [`Phase`],
//! an [`Event`], and [`Machine::step`], which decides the next phase and
//! the [`Action`]s to perform.
//!
//! Pure: no I/O, no clock reads, no randomness, no JSON. Times arrive in
//! events (`DaemonExit::at`, the jitter sample); effects leave as actions,
//! which the executor ([`super::executor`]) performs — and reports back
//! as events when they take time (a job) or may fail. So every decision
//! here is a table row in the tests below: every phase, every event, every
//! control command.
//!
//! Invariants kept here:
//! - every command is answered exactly once: at once when the phase cannot
//!   honour it (the refusal names the phase), or when the machine has acted
//!   on it;
//! - `STOPPING=1` is notified only when the supervisor itself shuts down,
//!   never for a node stop, a restart or a vault lock;
//! - the node is started only from [`Phase::Launching`], which is reached
//!   only after the start rule passed and the keys are in tmpfs (with a
//!   vault), and never while an upgrade, a restore or a lock is in flight;
//! - a restore runs only with the node stopped by an operator, and the node
//!   cannot start while it runs;
//! - a shutdown that arrives during a step that must finish (the old binary
//!   stopping for an upgrade, the keys being wiped) waits for that step and
//!   then shuts down; a step that may be abandoned (an unlock, the start
//!   check, an upgrade's preparation, a restore) is cancelled.
//!
//! The systemd watchdog is not an event: the executor feeds it on every
//! tick, whatever the phase.

use std::time::{Duration, Instant};

use palisade_wire::upgrade_record::{DetectionSource, UpgradeOutcome, UpgradeStep};

use super::board::NodeState;
use super::command::{
    Answer, Command, CommandError, CommandId, CommandResult, HandoffDone, RotateRequest,
};
use crate::backup::{RestoreChoice, Restored};
use crate::config::RestartSettings;
pub use crate::failover::{HandoffGrant, LeaseEvent};
use crate::node::restart_policy::{AfterExit, ExitKind, RestartPolicy};
use crate::node::rpc::plan_is_due;
use crate::sign_state::Watermark;
use crate::upgrade::plan::UpgradePlan;

/// What the machine needs to know of the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineSettings {
    /// A `[vault]` is configured.
    pub vault: bool,
    /// The daemon's name (`DAEMON_NAME`), for messages.
    pub daemon_name: String,
    /// Crash restarts: backoff and crash-loop limits.
    pub restart: RestartSettings,
    /// `DAEMON_SHUTDOWN_GRACE`: how long a stopping daemon gets before
    /// SIGKILL.
    pub shutdown_grace: Duration,
    /// `DAEMON_RESTART_AFTER_UPGRADE`.
    pub restart_after_upgrade: bool,
    /// `DAEMON_RESTART_DELAY`: wait after the switch before the new binary.
    pub restart_delay: Duration,
    /// `DAEMON_POLL_INTERVAL`: re-checking a held plan and a missing binary.
    pub poll_interval: Duration,
    /// How long an upgrade line seen in the node's output waits for
    /// `upgrade-info.json` to confirm it before it is acted on alone
    /// (zero: at once).
    pub line_confirm_wait: Duration,
    /// `[failover]`: the node runs only while this host holds the
    /// validator's leadership (`docs/failover.md`).
    pub failover: Option<FailoverSettings>,
}

/// What the machine knows of `[failover]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverSettings {
    /// This host's id.
    pub host_id: String,
    /// The other hosts: the possible targets of a handoff.
    pub peers: Vec<String>,
}

/// How `run` ended; `main` maps it to an exit code (`docs/supervisor.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// Stopped by SIGTERM/SIGINT; the daemon was stopped gracefully.
    Shutdown,
    /// The daemon exited with status 0 on its own.
    DaemonExitedCleanly,
    /// An upgrade switched `current` and `DAEMON_RESTART_AFTER_UPGRADE` is
    /// off: the service manager restarts us on the new binary.
    UpgradedWithoutRestart,
    /// The daemon crash-looped; restarting stopped.
    CrashLoop { crashes: u32, window: Duration },
    /// The start rule refused: the local sign state is behind a backup (or
    /// missing/unreadable with backups present). The daemon was not
    /// started.
    RefusedToStart,
    /// An operator confirmed `host.shutdown`: the node was stopped, the
    /// final backup taken, the keys wiped and `[host] shutdown-command` run
    /// (whether or not it succeeded: exit 0, so that the service manager
    /// does not bring the validator back).
    HostShutdown,
    /// Something the supervisor needs failed (the vault, the daemon's
    /// binary); the message says what.
    Failed(String),
}

/// The signal that asks a process to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGTERM.
    Terminate,
    /// SIGINT (what Cosmovisor sends the daemon, and what an operator's
    /// Ctrl-C sends the supervisor).
    Interrupt,
}

/// How the vault stands when the supervisor has started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VaultAtStart {
    /// No `[vault]`: the keys are wherever gaiad's config says.
    NoVault,
    /// No passphrase (or it could not be read): wait for `vault.unlock`.
    Locked,
    /// An unattended passphrase was read: try it.
    Unattended,
}

/// The executor's timers; setting one again replaces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// The daemon was signalled to stop: SIGKILL when this fires.
    StopGrace,
    /// The crash backoff: start the daemon again.
    Backoff,
    /// `DAEMON_RESTART_DELAY` after an upgrade's switch.
    RestartDelay,
    /// Look again for an upgrade's missing binary.
    BinaryPoll,
    /// Ask the node again whether a held plan is due.
    ScheduledCheck,
    /// An upgrade line was not confirmed by `upgrade-info.json` in time:
    /// act on the line alone.
    LineConfirm,
    /// The primary's signing deadline (lease expiry minus the fence
    /// margin): the node is killed when it fires.
    Fence,
}

/// Jobs that may be cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Job {
    Unlock,
    StartCheck,
    Upgrade,
    Restore,
    PlanDue,
    /// The takeover rule before a standby's node starts.
    Takeover,
    /// A planned handoff's final backup and record.
    Handoff,
    /// An Elastic IP rotation, or the resumption of one.
    Rotation,
}

/// An upgrade plan and how it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectedPlan {
    pub plan: UpgradePlan,
    pub source: DetectionSource,
}

/// The daemon exited. `at` and `jitter` feed the restart policy; the plans
/// are the new ones (not what `current` already runs) found on the daemon's
/// output and in `data/upgrade-info.json` at that moment.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonExit {
    pub exit: ExitKind,
    pub uptime: Duration,
    pub at: Instant,
    /// A sample in `[0, 1)` for the backoff's jitter.
    pub jitter: f64,
    pub plan_from_output: Option<UpgradePlan>,
    pub plan_in_file: Option<UpgradePlan>,
}

/// How an unlock attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnlockOutcome {
    Unlocked,
    WrongPassphrase,
    /// Anything else (a damaged vault, a missing file); the reason is safe
    /// to show (it never holds a secret).
    Failed(String),
}

/// What the start rule said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartVerdict {
    /// The local state is at the highest known watermark: start.
    Start,
    /// Refused, with the reason and the way out.
    Refuse(String),
    /// The check itself could not run (no validator key in the vault, a
    /// store directory that cannot be opened).
    Failed(String),
    /// Too few backup stores could be read (`start-quorum`) and nobody
    /// accepted that: the vault is locked again, so that an operator can
    /// unlock once the stores are back, or accept them as unreachable.
    Unavailable(String),
}

/// Why an upgrade's preparation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeFailure {
    pub message: String,
    /// Fixed by installing the binary: the machine waits for it and
    /// retries by itself.
    pub waits_for_binary: bool,
}

/// Something that happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The control socket and the tunnels are up.
    Started(VaultAtStart),
    /// A control command (from the RPC).
    Command(CommandId, Command),
    /// SIGTERM or SIGINT to the supervisor.
    Signal(StopSignal),
    /// A timer set by [`Action::SetTimer`] fired.
    Timer(Timer),
    /// [`Action::TryUnlock`] finished.
    UnlockFinished(UnlockOutcome),
    /// [`Action::CheckStart`] finished.
    StartChecked(StartVerdict),
    /// [`Action::OpenSession`]: keys in tmpfs, backups running.
    SessionOpened,
    /// [`Action::OpenSession`] failed (nothing is left in tmpfs).
    SessionFailed(String),
    /// [`Action::LookForPendingPlan`]: a new plan found in
    /// `data/upgrade-info.json` before the node starts, or none.
    PendingPlan(Option<DetectedPlan>),
    /// [`Action::SpawnDaemon`] started the daemon.
    DaemonSpawned { pid: u32 },
    /// [`Action::SpawnDaemon`] failed.
    SpawnFailed(String),
    /// The daemon exited (on its own, or because it was told to).
    DaemonExited(DaemonExit),
    /// A new upgrade plan while the daemon runs.
    PlanDetected(DetectedPlan),
    /// `data/upgrade-info.json` is invalid (reported, ignored).
    PlanInvalid(String),
    /// [`Action::CheckPlanDue`]: the node's latest height (`None`: its RPC
    /// did not answer).
    PlanDue {
        plan: UpgradePlan,
        node_height: Option<u64>,
    },
    /// The upgrade job began a step.
    UpgradeProgress(UpgradeStep),
    /// [`Action::RunUpgrade`] finished: `current` switched, or why not.
    UpgradeFinished(Result<(), UpgradeFailure>),
    /// [`Action::CheckBinary`]: whether the upgrade's binary is usable now.
    BinaryChecked(bool),
    /// [`Action::RunRestore`] finished.
    RestoreFinished(Result<Restored, CommandError>),
    /// [`Action::CloseSession`] finished: final backup taken, keys wiped.
    SessionClosed,
    /// [`Action::RunHostShutdownCommand`] finished (whatever it did).
    HostCommandFinished,
    /// [`Action::StopBackground`] finished: tunnels and control socket
    /// closed.
    BackgroundStopped,
    /// The leadership driver's news.
    Lease(LeaseEvent),
    /// [`Action::RunTakeover`] finished: the sign state's floor, or why
    /// the node must not start.
    TakeoverFinished(Result<Watermark, String>),
    /// [`Action::RunHandoff`] finished.
    HandoffFinished(Result<HandoffDone, String>),
    /// `eip.rotate` (the control RPC checked the bastion).
    RotateRequested(CommandId, RotateRequest),
    /// The automatic trigger (`[eip.auto]`) asks for a rotation, for this
    /// reason.
    AutoRotate(RotateRequest, String),
    /// The AWS credentials became available (the vault was unlocked, or
    /// they come from the environment): an interrupted rotation may be
    /// resumed.
    CredentialsAvailable,
    /// [`Action::RunRotation`] or [`Action::ResumeRotation`] finished.
    RotationFinished(RotationOutcome),
}

/// Which rotation runs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rotating {
    /// `eip.rotate` of this bastion, answered when done.
    Command(CommandId, String),
    /// The automatic trigger's, of this bastion.
    Auto(String),
    /// The resumption of one a restart interrupted.
    Resume,
}

/// How a rotation job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotationOutcome {
    /// A requested rotation is done.
    Rotated(Box<palisade_wire::rpc::results::EipRotateResult>),
    /// A resumption: what it did (`None`: nothing was unfinished).
    Resumed(Option<String>),
    /// Why it failed (the journal says where each address is).
    Failed(String),
}

/// How loud a log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// An effect for the executor.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Answer a command.
    Answer(CommandId, CommandResult),
    /// systemd `READY=1` with a status.
    NotifyReady(String),
    /// systemd `STATUS=`.
    NotifyStatus(String),
    /// systemd `STOPPING=1`: only when the supervisor itself shuts down.
    NotifyStopping(String),
    /// A line for the supervisor's log.
    Log(Level, String),
    /// The daemon crashed and restarts after `delay` (log and `STATUS=`).
    ReportCrash {
        exit: ExitKind,
        crash_number: u32,
        delay: Duration,
    },
    /// Unlock the vault with the passphrase of command `Some(id)` (or the
    /// unattended one) → [`Event::UnlockFinished`].
    TryUnlock(Option<CommandId>),
    /// Read the validator's identity and every store, run the start rule →
    /// [`Event::StartChecked`].
    CheckStart,
    /// Keys into tmpfs, the backup worker, the restore kit →
    /// [`Event::SessionOpened`] or [`Event::SessionFailed`].
    OpenSession,
    /// Kill what the daemon left behind, take the final backup, wipe the
    /// keys, drop the unlocked vault → [`Event::SessionClosed`].
    CloseSession,
    /// Drop the unlocked vault when no session was opened (nothing is in
    /// tmpfs): done at once, no event.
    ForgetVault,
    /// → [`Event::PendingPlan`].
    LookForPendingPlan,
    /// Start `current`'s binary → [`Event::DaemonSpawned`] or
    /// [`Event::SpawnFailed`].
    SpawnDaemon,
    /// Signal the daemon's process group.
    SignalDaemon(StopSignal),
    /// SIGKILL the daemon's process group.
    KillDaemon,
    SetTimer(Timer, Duration),
    CancelTimer(Timer),
    /// Ask the node's RPC for its height → [`Event::PlanDue`].
    CheckPlanDue(UpgradePlan),
    /// The plan held until the node reaches its height (for `status`), or
    /// `None` when no plan is held.
    HoldPlan(Option<UpgradePlan>),
    /// An upgrade begins: start its record, mark it in progress (so that
    /// `upgrade.cancel` refuses its target).
    BeginUpgrade(DetectedPlan),
    /// The old daemon has stopped for the upgrade (the record's first
    /// step).
    RecordOldStopped {
        exit: ExitKind,
    },
    /// Obtain the binary, back up `data/`, pre-upgrade, switch `current`
    /// → [`Event::UpgradeProgress`]…, [`Event::UpgradeFinished`].
    RunUpgrade(UpgradePlan),
    /// Stop counting time into the upgrade's switch duration (a wait that
    /// is not the switch's: for a binary, the restart delay).
    PauseUpgradeClock,
    /// Count again.
    ResumeUpgradeClock,
    /// Append the upgrade's record with this outcome; no upgrade is in
    /// progress any more.
    FinishUpgrade(UpgradeOutcome),
    /// The new binary runs: append the upgrade's record as completed.
    CompleteUpgrade,
    /// → [`Event::BinaryChecked`].
    CheckBinary(UpgradePlan),
    /// → [`Event::RestoreFinished`].
    RunRestore(RestoreChoice),
    /// Drop a job in flight (at an await point: nothing is half-written).
    CancelJob(Job),
    /// Run `[host] shutdown-command` → [`Event::HostCommandFinished`].
    RunHostShutdownCommand,
    /// Stop the tunnels and the control socket → [`Event::BackgroundStopped`].
    StopBackground,
    /// Set `timer` to fire at `at` (a deadline from an event).
    SetDeadline(Timer, Instant),
    /// The takeover rule (chain guard, highest backup, sign-state floor)
    /// → [`Event::TakeoverFinished`].
    RunTakeover(Option<HandoffGrant>),
    /// Final backup, signed handoff record, leadership released →
    /// [`Event::HandoffFinished`].
    RunHandoff {
        to: String,
    },
    /// Give up the leadership with this token, if the driver still holds
    /// it (resign; the node is not running). Never another token: a
    /// release that arrives late must not end a newer leadership.
    ReleaseLease(i64),
    /// Rotate a bastion's Elastic IP → [`Event::RotationFinished`].
    RunRotation(RotateRequest),
    /// Finish a rotation a restart interrupted, if there is one →
    /// [`Event::RotationFinished`].
    ResumeRotation,
}

/// Why the running daemon is being stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopPurpose {
    /// `node.stop`: answer when stopped, stay stopped.
    OperatorStop(CommandId),
    /// `node.restart`: answer when stopped, start again.
    OperatorRestart(CommandId),
    /// `vault.lock`: then close the session, answer, wait for an unlock.
    Lock(CommandId),
    /// The supervisor shuts down.
    Shutdown(ShutdownCause),
    /// `failover.handoff`: then the final backup and the handoff record.
    Handoff(CommandId, String),
    /// The leadership with this token was lost or its deadline passed:
    /// killed, not asked.
    Fence(i64),
}

/// Why the supervisor shuts down on request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownCause {
    Signal(StopSignal),
    /// A confirmed `host.shutdown` (already answered).
    HostShutdown,
}

impl ShutdownCause {
    fn outcome(self) -> RunOutcome {
        match self {
            ShutdownCause::Signal(_) => RunOutcome::Shutdown,
            ShutdownCause::HostShutdown => RunOutcome::HostShutdown,
        }
    }
}

/// Where an upgrade is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpgradeStage {
    /// The old daemon is being stopped.
    StoppingOld { pid: u32 },
    /// The upgrade job runs; the step it last reported.
    Preparing(Option<UpgradeStep>),
    /// Switched; waiting out `DAEMON_RESTART_DELAY`.
    RestartDelay,
}

/// The steps of shutting down, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownStep {
    /// Leftover children, final backup, keys wiped.
    ClosingSession,
    /// `[host] shutdown-command`.
    RunningHostCommand,
    /// Tunnels and the control socket.
    StoppingBackground,
}

/// Where the supervisor is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Setting up (socket, tunnels), before [`Event::Started`].
    Starting,
    /// The vault is locked; the node does not run.
    Locked,
    /// A passphrase is being tried (scrypt); `by` the command, or the
    /// unattended source.
    Unlocking { by: Option<CommandId> },
    /// Unlocked; the start rule is reading the stores.
    CheckingStart { by: Option<CommandId> },
    /// The node is about to start (looking for a pending plan, spawning).
    /// Transient: the executor settles it before reading commands again.
    Launching,
    /// The node runs.
    Running { pid: u32 },
    /// The node was signalled to stop.
    Stopping { pid: u32, purpose: StopPurpose },
    /// Stopped by an operator.
    StoppedByOperator,
    /// A restore runs; the node is stopped.
    Restoring { by: CommandId },
    /// Waiting out a crash backoff.
    BackingOff { crash_number: u32, delay: Duration },
    /// An upgrade is being performed.
    Upgrading {
        plan: UpgradePlan,
        stage: UpgradeStage,
    },
    /// An upgrade failed for want of its binary; polling for it.
    WaitingForBinary { plan: UpgradePlan, reason: String },
    /// An upgrade failed; the node stays down until the supervisor is
    /// restarted.
    Halted { reason: String },
    /// `vault.lock`: the session is being closed.
    Locking { by: CommandId },
    /// The supervisor shuts down.
    ShuttingDown {
        outcome: RunOutcome,
        step: ShutdownStep,
    },
    /// Done; `run` returns the outcome.
    Exited(RunOutcome),
    /// `[failover]`: unlocked, the node not running, another host (or
    /// nobody yet) holding the validator's leadership.
    Standby,
    /// This host took the leadership; the takeover rule runs before the
    /// node starts.
    TakingOver,
    /// `failover.handoff`: the node has stopped; final backup, record,
    /// release.
    HandingOff { by: CommandId, to: String },
}

impl Phase {
    /// Every phase's name, as [`Phase::name`] spells it (the metrics'
    /// `palisade_node_phase{phase}` values).
    pub const NAMES: &[&str] = &[
        "starting",
        "locked",
        "unlocking",
        "checking_start",
        "launching",
        "running",
        "stopping",
        "stopped_by_operator",
        "restoring",
        "backing_off",
        "upgrading",
        "waiting_for_binary",
        "halted",
        "locking",
        "shutting_down",
        "exited",
        "standby",
        "taking_over",
        "handing_off",
    ];

    /// The phase's name in snake case, without its data.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Locked => "locked",
            Phase::Unlocking { .. } => "unlocking",
            Phase::CheckingStart { .. } => "checking_start",
            Phase::Launching => "launching",
            Phase::Running { .. } => "running",
            Phase::Stopping { .. } => "stopping",
            Phase::StoppedByOperator => "stopped_by_operator",
            Phase::Restoring { .. } => "restoring",
            Phase::BackingOff { .. } => "backing_off",
            Phase::Upgrading { .. } => "upgrading",
            Phase::WaitingForBinary { .. } => "waiting_for_binary",
            Phase::Halted { .. } => "halted",
            Phase::Locking { .. } => "locking",
            Phase::ShuttingDown { .. } => "shutting_down",
            Phase::Exited(_) => "exited",
            Phase::Standby => "standby",
            Phase::TakingOver => "taking_over",
            Phase::HandingOff { .. } => "handing_off",
        }
    }
}

/// What `backup.restore` is told while the vault is locked.
pub const RESTORE_WHILE_LOCKED: &str = "the vault is locked: the supervisor holds no key to decrypt \
     and verify backups. Unlock (vault.unlock; the start rule refuses to start on a state \
     behind a backup), stop the node (node.stop) and restore then; or stop the supervisor and \
     run `palisade-supervisor restore-state`";

/// What a vault command is told without a `[vault]`.
pub const NO_VAULT: &str = "no [vault] is configured: the keys are wherever gaiad's config \
     says and there is nothing to unlock or lock (see docs/vault.md)";

/// What `failover.handoff` is told without a `[failover]`.
pub const NO_FAILOVER: &str = "no [failover] is configured: this host is the validator's only \
     signer (see docs/failover.md)";

/// What `backup.restore` is told without a `[vault]`.
pub const NO_VAULT_BACKUPS: &str = "no [vault]: there are no signed backups to restore from";

/// The supervision state machine.
#[derive(Debug, Clone)]
pub struct Machine {
    settings: MachineSettings,
    phase: Phase,
    restart: RestartPolicy,
    /// Keys are in tmpfs and the backup worker runs.
    session_open: bool,
    /// systemd `READY=1` was sent.
    ready_sent: bool,
    /// A plan from the file held until the node reaches its height.
    scheduled: Option<UpgradePlan>,
    /// The plan whose due check is in flight.
    due_check: Option<UpgradePlan>,
    /// An upgrade line seen while running, waiting for upgrade-info.json
    /// to confirm it ([`Timer::LineConfirm`]).
    line_plan: Option<DetectedPlan>,
    /// The node's height when last asked.
    last_node_height: Option<u64>,
    /// An upgrade record is open (begun, not yet appended).
    record_open: bool,
    /// A shutdown that waits for the current step to finish.
    pending_shutdown: Option<ShutdownCause>,
    /// `[failover]`: the fencing token of the leadership this host holds.
    lease: Option<i64>,
    /// An Elastic IP rotation runs (beside the node's phases).
    rotating: Option<Rotating>,
}

impl Machine {
    /// A machine in [`Phase::Starting`].
    pub fn new(settings: MachineSettings) -> Machine {
        Machine {
            restart: RestartPolicy::new(settings.restart),
            settings,
            phase: Phase::Starting,
            session_open: false,
            ready_sent: false,
            scheduled: None,
            due_check: None,
            line_plan: None,
            last_node_height: None,
            record_open: false,
            pending_shutdown: None,
            lease: None,
            rotating: None,
        }
    }

    /// The current phase.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// The outcome, once the machine has exited.
    pub fn outcome(&self) -> Option<&RunOutcome> {
        match &self.phase {
            Phase::Exited(outcome) => Some(outcome),
            _ => None,
        }
    }

    /// The node's state as `status` shows it.
    pub fn node_state(&self) -> NodeState {
        match &self.phase {
            Phase::Starting
            | Phase::CheckingStart { .. }
            | Phase::Launching
            | Phase::TakingOver => NodeState::Starting,
            Phase::Standby => NodeState::Standby,
            Phase::Locked | Phase::Unlocking { .. } => NodeState::Locked,
            Phase::Running { .. } => NodeState::Running,
            Phase::StoppedByOperator | Phase::Restoring { .. } => NodeState::Stopped,
            Phase::BackingOff { .. } => NodeState::Restarting,
            Phase::Upgrading { .. } => NodeState::Upgrading,
            Phase::WaitingForBinary { .. } | Phase::Halted { .. } => NodeState::Halted,
            Phase::Stopping { .. }
            | Phase::Locking { .. }
            | Phase::ShuttingDown { .. }
            | Phase::HandingOff { .. }
            | Phase::Exited(_) => NodeState::Stopping,
        }
    }

    /// The daemon's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        match &self.phase {
            Phase::Running { pid } | Phase::Stopping { pid, .. } => Some(*pid),
            Phase::Upgrading {
                stage: UpgradeStage::StoppingOld { pid },
                ..
            } => Some(*pid),
            _ => None,
        }
    }

    /// The fencing token while this host holds the leadership.
    pub fn lease_token(&self) -> Option<i64> {
        self.lease
    }

    /// Whether the leadership driver may campaign for this host: a standby
    /// waiting for the leadership.
    pub fn wants_leadership(&self) -> bool {
        matches!(self.phase, Phase::Standby)
    }

    /// Whether the vault is locked (`None`: no vault).
    pub fn vault_locked(&self) -> Option<bool> {
        self.settings.vault.then_some(!self.session_open)
    }

    /// The phase in words, for refusals and `STATUS=`.
    pub fn describe(&self) -> String {
        match &self.phase {
            Phase::Starting => "the supervisor is starting".into(),
            Phase::Locked => "the vault is locked".into(),
            Phase::Unlocking { .. } => "an unlock is in progress".into(),
            Phase::CheckingStart { .. } => {
                "the vault is unlocked and the start rule is checking the sign state against \
                 the backups"
                    .into()
            }
            Phase::Launching => "the node is starting".into(),
            Phase::Running { pid } => format!("the node is running (pid {pid})"),
            Phase::Stopping { purpose, .. } => format!(
                "the node is stopping ({})",
                match purpose {
                    StopPurpose::OperatorStop(_) => "node.stop",
                    StopPurpose::OperatorRestart(_) => "node.restart",
                    StopPurpose::Lock(_) => "vault.lock",
                    StopPurpose::Shutdown(_) => "the supervisor is shutting down",
                    StopPurpose::Handoff(..) => "failover.handoff",
                    StopPurpose::Fence(_) => "fenced: this host lost the leadership",
                }
            ),
            Phase::StoppedByOperator => "the node is stopped by an operator".into(),
            Phase::Restoring { .. } => "a sign-state restore is in progress".into(),
            Phase::BackingOff {
                crash_number,
                delay,
            } => format!(
                "the node crashed and restarts after a backoff (restart #{crash_number}, {})",
                humantime::format_duration(*delay)
            ),
            Phase::Upgrading { plan, stage } => format!(
                "upgrade {} is in progress ({})",
                plan.name,
                match stage {
                    UpgradeStage::StoppingOld { .. } => "stopping the old binary".to_owned(),
                    UpgradeStage::Preparing(None) => "preparing".to_owned(),
                    UpgradeStage::Preparing(Some(step)) => step_name(*step).to_owned(),
                    UpgradeStage::RestartDelay => "waiting out DAEMON_RESTART_DELAY".to_owned(),
                }
            ),
            Phase::WaitingForBinary { plan, .. } => format!(
                "the node is halted for upgrade {}: waiting for its binary",
                plan.name
            ),
            Phase::Halted { .. } => {
                "the node is halted after a failed upgrade; see the supervisor log".into()
            }
            Phase::Locking { .. } => "the vault is being locked".into(),
            Phase::ShuttingDown { .. } | Phase::Exited(_) => {
                "the supervisor is shutting down".into()
            }
            Phase::Standby => {
                "this host is a standby: another host holds the validator's leadership (or \
                 none does yet)"
                    .into()
            }
            Phase::TakingOver => {
                "this host took the leadership and the takeover rule runs before the node starts"
                    .into()
            }
            Phase::HandingOff { to, .. } => format!("a handoff to {to} is in progress"),
        }
    }

    /// Decide what `event` means in the current phase: the phase moves on
    /// and the returned actions are to be performed in order.
    pub fn step(&mut self, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::RotateRequested(id, request) => self.on_rotate(id, request, &mut out),
            Event::AutoRotate(request, reason) => self.on_auto_rotate(request, reason, &mut out),
            Event::CredentialsAvailable => {
                if self.rotating.is_none() && !self.is_shutting_down() {
                    self.rotating = Some(Rotating::Resume);
                    out.push(Action::ResumeRotation);
                }
            }
            Event::RotationFinished(outcome) => self.on_rotation_finished(outcome, &mut out),
            Event::Command(id, command) => {
                if matches!(command, Command::Lock | Command::HostShutdown { .. }) {
                    self.interrupt_rotation("the vault is being locked", &mut out);
                }
                self.on_command(id, command, &mut out)
            }
            Event::Signal(signal) => {
                self.interrupt_rotation("the supervisor is shutting down", &mut out);
                self.on_shutdown(ShutdownCause::Signal(signal), &mut out)
            }
            Event::Lease(lease) => self.on_lease(lease, &mut out),
            Event::Timer(Timer::Fence) => {
                if self.lease.is_some() {
                    self.fence(
                        "the signing deadline of the lease passed without a renewal",
                        &mut out,
                    );
                }
            }
            other => self.on_event(other, &mut out),
        }
        out
    }

    // ----- Elastic IP rotation (beside the node's phases) -----

    fn is_shutting_down(&self) -> bool {
        matches!(self.phase, Phase::ShuttingDown { .. } | Phase::Exited(_))
    }

    /// `eip.rotate`: one at a time, never while shutting down. Whether the
    /// credentials are at hand (the vault unlocked) the job finds out, and
    /// fails with that message before it acts.
    fn on_rotate(&mut self, id: CommandId, request: RotateRequest, out: &mut Vec<Action>) {
        let refuse = |out: &mut Vec<Action>, message: String| {
            out.push(Action::Answer(id, Err(CommandError::WrongState(message))));
        };
        if self.is_shutting_down() {
            return refuse(out, "the supervisor is shutting down".into());
        }
        if let Some(running) = &self.rotating {
            return refuse(
                out,
                match running {
                    Rotating::Command(_, bastion) | Rotating::Auto(bastion) => format!(
                        "an Elastic IP rotation of bastion {bastion} is in progress (eip.status shows it); try again when it is done"
                    ),
                    Rotating::Resume => "an interrupted Elastic IP rotation is being finished (eip.status shows it); try again when it is done".into(),
                },
            );
        }
        if self.locked_for_rotation() {
            return refuse(
                out,
                "the vault is locked: the AWS credentials are in the vault; unlock it first (vault.unlock)"
                    .into(),
            );
        }
        out.push(Action::Log(
            Level::Warn,
            format!(
                "elastic IP rotation of bastion {} requested over the control RPC by {}{}",
                request.bastion,
                request.operator,
                if request.keep_old {
                    " (keeping the old address)"
                } else {
                    ""
                }
            ),
        ));
        self.rotating = Some(Rotating::Command(id, request.bastion.clone()));
        out.push(Action::RunRotation(request));
    }

    /// The vault (which holds the AWS key) is not unlocked yet.
    fn locked_for_rotation(&self) -> bool {
        self.settings.vault
            && matches!(
                self.phase,
                Phase::Locked | Phase::Unlocking { .. } | Phase::Starting
            )
    }

    /// The trigger's request: carried out under the same rules as an
    /// operator's, and logged with its reason either way.
    fn on_auto_rotate(&mut self, request: RotateRequest, reason: String, out: &mut Vec<Action>) {
        let skip = if self.is_shutting_down() {
            Some("the supervisor is shutting down")
        } else if self.rotating.is_some() {
            Some("another rotation is in progress")
        } else if self.locked_for_rotation() {
            Some("the vault is locked")
        } else {
            None
        };
        if let Some(why) = skip {
            out.push(Action::Log(
                Level::Warn,
                format!(
                    "automatic elastic IP rotation of bastion {} not started ({why}): {reason}",
                    request.bastion
                ),
            ));
            return;
        }
        out.push(Action::Log(
            Level::Warn,
            format!(
                "automatic elastic IP rotation of bastion {}: {reason}",
                request.bastion
            ),
        ));
        self.rotating = Some(Rotating::Auto(request.bastion.clone()));
        out.push(Action::RunRotation(request));
    }

    fn on_rotation_finished(&mut self, outcome: RotationOutcome, out: &mut Vec<Action>) {
        let Some(by) = self.rotating.take() else {
            // Cancelled (lock, shutdown) before it reported.
            return;
        };
        let by = match by {
            Rotating::Command(id, _) => Some(id),
            Rotating::Auto(bastion) => {
                out.push(match outcome {
                    RotationOutcome::Rotated(result) => Action::Log(
                        Level::Warn,
                        format!(
                            "automatic elastic IP rotation done: bastion {bastion} moved from {} to {} (tunnel up after {} ms)",
                            result.old_public_ip.as_deref().unwrap_or("no address"),
                            result.public_ip,
                            result.tunnel_up_ms
                        ),
                    ),
                    RotationOutcome::Failed(message) | RotationOutcome::Resumed(Some(message)) => {
                        Action::Log(
                            Level::Error,
                            format!("automatic elastic IP rotation of bastion {bastion} failed: {message}"),
                        )
                    }
                    RotationOutcome::Resumed(None) => return,
                });
                return;
            }
            Rotating::Resume => None,
        };
        match (by, outcome) {
            (Some(id), RotationOutcome::Rotated(result)) => {
                out.push(Action::Log(
                    Level::Info,
                    format!(
                        "bastion {} now answers on {} (tunnel up after {} ms)",
                        result.bastion, result.public_ip, result.tunnel_up_ms
                    ),
                ));
                out.push(Action::Answer(id, Ok(Answer::EipRotated(result))));
            }
            (Some(id), RotationOutcome::Failed(message)) => {
                out.push(Action::Log(
                    Level::Error,
                    format!("elastic IP rotation failed: {message}"),
                ));
                out.push(Action::Answer(id, Err(CommandError::Internal(message))));
            }
            (Some(id), RotationOutcome::Resumed(_)) => {
                out.push(Action::Answer(
                    id,
                    Err(CommandError::Internal(
                        "the rotation job ended without a result".into(),
                    )),
                ));
            }
            (None, RotationOutcome::Resumed(Some(message))) => {
                out.push(Action::Log(Level::Warn, message));
            }
            (None, RotationOutcome::Resumed(None) | RotationOutcome::Rotated(_)) => {}
            (None, RotationOutcome::Failed(message)) => out.push(Action::Log(
                Level::Error,
                format!("an interrupted elastic IP rotation could not be finished: {message}"),
            )),
        }
    }

    /// A lock or a shutdown stops a rotation at its next await point; the
    /// journal has every step done, and the next unlock resumes it.
    fn interrupt_rotation(&mut self, why: &str, out: &mut Vec<Action>) {
        let Some(by) = self.rotating.take() else {
            return;
        };
        out.push(Action::CancelJob(Job::Rotation));
        out.push(Action::Log(
            Level::Warn,
            format!("elastic IP rotation interrupted: {why}; it is finished or rolled back at the next unlock"),
        ));
        if let Rotating::Command(id, _) = by {
            out.push(Action::Answer(
                id,
                Err(CommandError::WrongState(format!(
                    "the rotation was interrupted: {why}; it is finished or rolled back at the next unlock (eip.status)"
                ))),
            ));
        }
    }

    // ----- events other than commands and signals -----

    fn on_event(&mut self, event: Event, out: &mut Vec<Action>) {
        match (self.phase.clone(), event) {
            (Phase::Starting, Event::Started(vault)) => match vault {
                VaultAtStart::NoVault => self.launch(true, out),
                VaultAtStart::Locked => self.lock_and_wait(out),
                VaultAtStart::Unattended => {
                    self.phase = Phase::Unlocking { by: None };
                    out.push(Action::TryUnlock(None));
                }
            },

            (Phase::Unlocking { by }, Event::UnlockFinished(outcome)) => match outcome {
                UnlockOutcome::Unlocked => {
                    self.phase = Phase::CheckingStart { by };
                    out.push(Action::NotifyStatus(
                        "checking the sign state against backups".into(),
                    ));
                    out.push(Action::CheckStart);
                }
                UnlockOutcome::WrongPassphrase => {
                    if let Some(id) = by {
                        out.push(Action::Answer(id, Err(CommandError::WrongPassphrase)));
                    }
                    self.lock_and_wait(out);
                }
                UnlockOutcome::Failed(reason) => match by {
                    Some(id) => {
                        out.push(Action::Answer(
                            id,
                            Err(CommandError::Internal(format!("unlock failed: {reason}"))),
                        ));
                        self.lock_and_wait(out);
                    }
                    // The unattended passphrase opened nothing usable: the
                    // vault itself is broken, which an operator must see.
                    None => self.shut_down(
                        RunOutcome::Failed(format!("cannot unlock the vault: {reason}")),
                        out,
                    ),
                },
            },

            (Phase::CheckingStart { by }, Event::StartChecked(verdict)) => match verdict {
                StartVerdict::Start => {
                    out.push(Action::OpenSession);
                }
                StartVerdict::Refuse(reason) if self.settings.failover.is_some() => {
                    // A standby's own file is behind the primary's backups
                    // by nature; nothing starts here before the takeover
                    // rule restores the highest state and raises the floor.
                    out.push(Action::Log(
                        Level::Warn,
                        format!(
                            "the local sign state is behind the backups ({reason}); on a failover host the node starts only after a takeover, which restores the highest backup first"
                        ),
                    ));
                    out.push(Action::OpenSession);
                }
                StartVerdict::Refuse(reason) => {
                    out.push(Action::Log(
                        Level::Error,
                        format!("refusing to start: {reason}"),
                    ));
                    out.push(Action::NotifyStatus(format!("refusing to start: {reason}")));
                    if let Some(id) = by {
                        out.push(Action::Answer(
                            id,
                            Err(CommandError::WrongState(format!(
                                "unlocked, but refusing to start: {reason}"
                            ))),
                        ));
                    }
                    self.shut_down(RunOutcome::RefusedToStart, out);
                }
                StartVerdict::Unavailable(reason) => {
                    out.push(Action::Log(
                        Level::Error,
                        format!("refusing to start: {reason}"),
                    ));
                    if let Some(id) = by {
                        out.push(Action::Answer(
                            id,
                            Err(CommandError::WrongState(format!(
                                "refusing to start, the vault is locked again: {reason}"
                            ))),
                        ));
                    }
                    out.push(Action::ForgetVault);
                    self.lock_and_wait(out);
                    out.push(Action::NotifyStatus(format!(
                        "locked: refused to start: {reason}"
                    )));
                }
                StartVerdict::Failed(reason) => {
                    if let Some(id) = by {
                        out.push(Action::Answer(
                            id,
                            Err(CommandError::Internal(format!(
                                "unlocked, but the start rule could not run: {reason}"
                            ))),
                        ));
                    }
                    self.shut_down(RunOutcome::Failed(reason), out);
                }
            },
            (Phase::CheckingStart { by }, Event::SessionOpened) => {
                self.session_open = true;
                if let Some(id) = by {
                    out.push(Action::Answer(id, Ok(Answer::Unlocked)));
                }
                // A new session starts a new supervision: a fresh crash
                // history, and a plan left on disk is honoured first.
                self.restart = RestartPolicy::new(self.settings.restart);
                self.launch(true, out);
            }
            (Phase::CheckingStart { by }, Event::SessionFailed(reason)) => {
                if let Some(id) = by {
                    out.push(Action::Answer(
                        id,
                        Err(CommandError::Internal(format!(
                            "unlocked, but the keys could not be made ready: {reason}"
                        ))),
                    ));
                }
                self.shut_down(RunOutcome::Failed(reason), out);
            }

            (Phase::Launching, Event::PendingPlan(plan)) => match plan {
                Some(detected) => self.begin_upgrade(detected, None, out),
                None => out.push(Action::SpawnDaemon),
            },
            (Phase::Launching, Event::DaemonSpawned { pid }) => {
                self.phase = Phase::Running { pid };
                let status = format!("running {} (pid {pid})", self.settings.daemon_name);
                if self.record_open {
                    self.record_open = false;
                    out.push(Action::CompleteUpgrade);
                }
                if self.ready_sent {
                    out.push(Action::NotifyStatus(status));
                } else {
                    self.ready_sent = true;
                    out.push(Action::NotifyReady(status));
                }
            }
            (Phase::Launching, Event::SpawnFailed(reason)) => {
                if self.record_open {
                    self.record_open = false;
                    out.push(Action::FinishUpgrade(UpgradeOutcome::Failed(format!(
                        "the new binary did not start: {reason}"
                    ))));
                }
                self.shut_down(
                    RunOutcome::Failed(format!("cannot start the daemon: {reason}")),
                    out,
                );
            }

            (Phase::Running { pid }, event) => self.on_running(pid, event, out),

            (Phase::Stopping { purpose, .. }, Event::DaemonExited(_)) => {
                out.push(Action::CancelTimer(Timer::StopGrace));
                self.after_stop(purpose, out);
            }
            (Phase::Stopping { .. }, Event::Timer(Timer::StopGrace)) => {
                self.grace_ran_out(out);
            }

            (Phase::BackingOff { .. }, Event::Timer(Timer::Backoff)) => self.launch(false, out),

            (Phase::Upgrading { plan, stage }, event) => self.on_upgrading(plan, stage, event, out),

            (Phase::WaitingForBinary { plan, .. }, Event::Timer(Timer::BinaryPoll)) => {
                out.push(Action::CheckBinary(plan));
            }
            (Phase::WaitingForBinary { plan, .. }, Event::BinaryChecked(present)) => {
                if present {
                    out.push(Action::Log(
                        Level::Info,
                        format!(
                            "upgrade {} binary appeared; retrying the upgrade",
                            plan.name
                        ),
                    ));
                    out.push(Action::ResumeUpgradeClock);
                    self.phase = Phase::Upgrading {
                        plan: plan.clone(),
                        stage: UpgradeStage::Preparing(None),
                    };
                    out.push(Action::RunUpgrade(plan));
                } else {
                    out.push(Action::SetTimer(Timer::BinaryPoll, self.binary_poll()));
                }
            }

            (Phase::Restoring { by }, Event::RestoreFinished(result)) => {
                self.phase = Phase::StoppedByOperator;
                if let Err(error) = &result {
                    out.push(Action::Log(
                        Level::Warn,
                        format!("sign state restore refused: {error}"),
                    ));
                }
                out.push(Action::Answer(by, result.map(Answer::Restored)));
            }

            (Phase::Locking { by }, Event::SessionClosed) => {
                self.session_open = false;
                out.push(Action::Answer(by, Ok(Answer::Locked)));
                match self.pending_shutdown.take() {
                    Some(cause) => self.shutting_down_after_session(cause.outcome(), out),
                    None => {
                        out.push(Action::Log(
                            Level::Info,
                            "vault locked by an operator; waiting for an unlock".into(),
                        ));
                        self.lock_and_wait(out);
                    }
                }
            }

            (Phase::ShuttingDown { outcome, step }, event) => {
                self.on_shutting_down(outcome, step, event, out)
            }

            (Phase::TakingOver, Event::TakeoverFinished(result)) => match result {
                Ok(floor) => {
                    out.push(Action::Log(
                        Level::Info,
                        format!("takeover rule passed (sign state at or above {floor}); starting the node as primary"),
                    ));
                    self.launch(true, out);
                }
                Err(reason) => {
                    out.push(Action::Log(
                        Level::Error,
                        format!("takeover refused: {reason}; giving the leadership up, the node stays stopped"),
                    ));
                    self.drop_lease(out);
                    self.enter_standby(out);
                }
            },
            (Phase::HandingOff { by, to }, Event::HandoffFinished(result)) => match result {
                Ok(done) => {
                    self.lease = None;
                    out.push(Action::CancelTimer(Timer::Fence));
                    out.push(Action::Log(
                        Level::Info,
                        format!(
                            "handed the validator over to {to} (token {} given up); this host is a standby",
                            done.token
                        ),
                    ));
                    out.push(Action::Answer(by, Ok(Answer::HandedOff(done))));
                    self.enter_standby(out);
                }
                Err(reason) => {
                    let holds = if self.lease.is_some() {
                        "this host still holds the leadership with its node stopped"
                    } else {
                        "this host no longer holds the leadership"
                    };
                    let message = format!(
                        "handoff to {to} failed: {reason}. Nobody signs: {holds}, and {to} starts only once it verifies a handoff record or the lease expires. Retry failover.handoff, or node.start here"
                    );
                    out.push(Action::Log(Level::Error, message.clone()));
                    self.phase = Phase::StoppedByOperator;
                    out.push(Action::NotifyStatus(format!("handoff to {to} failed")));
                    out.push(Action::Answer(by, Err(CommandError::WrongState(message))));
                }
            },

            // Anything else is stale (a timer or a job result from a phase
            // already left) and changes nothing.
            (_, _) => {}
        }
    }

    fn on_running(&mut self, pid: u32, event: Event, out: &mut Vec<Action>) {
        match event {
            Event::PlanDetected(detected) => match detected.source {
                // The SDK writes upgrade-info.json, then prints the line as
                // it halts at the height: due. A line alone could be any
                // output that looks like one, so it waits (briefly) for the
                // file to confirm it.
                DetectionSource::OutputLine => {
                    let wait = self.settings.line_confirm_wait;
                    if wait.is_zero() {
                        self.upgrade_running(pid, detected, out);
                    } else if self.line_plan.is_none() {
                        out.push(Action::Log(
                            Level::Info,
                            format!(
                                "upgrade line for {} seen in the node's output; waiting up to {} for upgrade-info.json to confirm it",
                                describe_plan(&detected.plan),
                                humantime::format_duration(wait)
                            ),
                        ));
                        out.push(Action::SetTimer(Timer::LineConfirm, wait));
                        self.line_plan = Some(detected);
                    }
                }
                DetectionSource::UpgradeInfoFile => {
                    if let Some(line) = self.line_plan.take() {
                        out.push(Action::CancelTimer(Timer::LineConfirm));
                        if line.plan.name == detected.plan.name
                            && line.plan.height == detected.plan.height
                        {
                            out.push(Action::Log(
                                Level::Info,
                                format!(
                                    "upgrade-info.json confirms the upgrade line for {}",
                                    describe_plan(&detected.plan)
                                ),
                            ));
                            // The file's info is whole (a console line's
                            // ends at the first logger field).
                            let confirmed = DetectedPlan {
                                plan: detected.plan,
                                source: DetectionSource::OutputLine,
                            };
                            self.upgrade_running(pid, confirmed, out);
                            return;
                        }
                        out.push(Action::Log(
                            Level::Warn,
                            format!(
                                "the node's output named upgrade {}, but upgrade-info.json names {}: following upgrade-info.json",
                                describe_plan(&line.plan),
                                describe_plan(&detected.plan)
                            ),
                        ));
                    }
                    // A plan in the file may be ahead of the node (a manual
                    // `add-upgrade --upgrade-height`): ask the node first.
                    self.due_check = Some(detected.plan.clone());
                    out.push(Action::CheckPlanDue(detected.plan));
                }
            },
            Event::Timer(Timer::LineConfirm) => {
                if let Some(line) = self.line_plan.take() {
                    out.push(Action::Log(
                        Level::Warn,
                        format!(
                            "acting on the output line alone: upgrade-info.json did not name upgrade {} within {} (Cosmovisor acts on the line too); if the node did not print it as it halted, stop the supervisor and investigate",
                            describe_plan(&line.plan),
                            humantime::format_duration(self.settings.line_confirm_wait)
                        ),
                    ));
                    self.upgrade_running(pid, line, out);
                }
            }
            Event::PlanDue { plan, node_height } => {
                if self.due_check.as_ref() != Some(&plan) {
                    return;
                }
                self.due_check = None;
                if node_height.is_some() {
                    self.last_node_height = node_height;
                }
                let due = match (plan.height, node_height) {
                    (Some(height), Some(node)) => plan_is_due(height, node),
                    // No height (the legacy line), or a node that does not
                    // answer: the SDK halts at the height, so silence there
                    // means "halted" — due.
                    _ => true,
                };
                if due {
                    let detected = DetectedPlan {
                        plan,
                        source: DetectionSource::UpgradeInfoFile,
                    };
                    self.upgrade_running(pid, detected, out);
                } else {
                    if self.scheduled.as_ref() != Some(&plan) {
                        out.push(Action::Log(
                            Level::Info,
                            format!(
                                "upgrade {} scheduled at height {}; waiting for the node to reach the height",
                                plan.name,
                                plan.height.unwrap_or_default()
                            ),
                        ));
                        out.push(Action::NotifyStatus(format!(
                            "upgrade {} scheduled at height {}",
                            plan.name,
                            plan.height.unwrap_or_default()
                        )));
                        out.push(Action::HoldPlan(Some(plan.clone())));
                    }
                    self.scheduled = Some(plan);
                    out.push(Action::SetTimer(
                        Timer::ScheduledCheck,
                        self.settings.poll_interval,
                    ));
                }
            }
            Event::Timer(Timer::ScheduledCheck) => {
                if let Some(plan) = &self.scheduled {
                    self.due_check = Some(plan.clone());
                    out.push(Action::CheckPlanDue(plan.clone()));
                }
            }
            Event::PlanInvalid(reason) => {
                out.push(Action::Log(
                    Level::Error,
                    format!("ignoring invalid upgrade plan ({reason}); the daemon keeps running"),
                ));
                out.push(Action::NotifyStatus(format!(
                    "invalid upgrade-info.json: {reason}"
                )));
            }
            Event::DaemonExited(exit) => self.on_unrequested_exit(exit, out),
            _ => {}
        }
    }

    /// The daemon exited without being asked to.
    fn on_unrequested_exit(&mut self, mut exit: DaemonExit, out: &mut Vec<Action>) {
        // A line still waiting for its confirmation counts as the output's.
        if let Some(line) = self.line_plan.take() {
            out.push(Action::CancelTimer(Timer::LineConfirm));
            exit.plan_from_output = exit.plan_from_output.or(Some(line.plan));
        }
        let scheduled = self.scheduled.take();
        self.due_check = None;
        out.push(Action::CancelTimer(Timer::ScheduledCheck));
        if scheduled.is_some() {
            out.push(Action::HoldPlan(None));
        }
        // An exit right after printing an upgrade line, or with a fresh plan
        // on disk, is an upgrade halt…
        let plan = match (exit.plan_from_output, exit.plan_in_file) {
            // The line and the file name the same upgrade: the file's info
            // is whole (a console line's info ends at the first logger
            // field or space), so it is the one downloads use.
            (Some(line), Some(file)) if line.name == file.name && line.height == file.height => {
                Some(DetectedPlan {
                    plan: file,
                    source: DetectionSource::OutputLine,
                })
            }
            (Some(plan), _) => Some(DetectedPlan {
                plan,
                source: DetectionSource::OutputLine,
            }),
            (None, Some(plan)) => {
                // …unless it is the held plan and the node was last seen
                // short of its height: that exit is a crash, and the old
                // binary runs again until the height is reached.
                let short_of_height = match (&scheduled, self.last_node_height, plan.height) {
                    (Some(held), Some(node), Some(height)) => {
                        held.name == plan.name && !plan_is_due(height, node)
                    }
                    _ => false,
                };
                (!short_of_height).then_some(DetectedPlan {
                    plan,
                    source: DetectionSource::UpgradeInfoFile,
                })
            }
            (None, None) => None,
        };
        if let Some(detected) = plan {
            out.push(Action::Log(
                Level::Info,
                format!(
                    "daemon stopped for upgrade {} ({})",
                    detected.plan.name, exit.exit
                ),
            ));
            self.begin_upgrade(detected, None, out);
            return;
        }
        match self
            .restart
            .after_exit(exit.exit, exit.uptime, exit.at, exit.jitter)
        {
            AfterExit::CleanExit => {
                out.push(Action::Log(
                    Level::Info,
                    "daemon exited with status 0; not restarting".into(),
                ));
                self.shut_down(RunOutcome::DaemonExitedCleanly, out);
            }
            AfterExit::CrashLoop { crashes, window } => {
                let message = format!(
                    "{} crashed {crashes} times within {}; last: {}. Not restarting: fix the \
                     cause and restart palisade-supervisor. No state was changed.",
                    self.settings.daemon_name,
                    humantime::format_duration(window),
                    exit.exit
                );
                out.push(Action::Log(Level::Error, message.clone()));
                out.push(Action::NotifyStatus(format!("crash loop: {message}")));
                self.shut_down(RunOutcome::CrashLoop { crashes, window }, out);
            }
            AfterExit::Restart {
                delay,
                crash_number,
            } => {
                out.push(Action::ReportCrash {
                    exit: exit.exit,
                    crash_number,
                    delay,
                });
                self.phase = Phase::BackingOff {
                    crash_number,
                    delay,
                };
                out.push(Action::SetTimer(Timer::Backoff, delay));
            }
        }
    }

    fn on_upgrading(
        &mut self,
        plan: UpgradePlan,
        stage: UpgradeStage,
        event: Event,
        out: &mut Vec<Action>,
    ) {
        match (stage, event) {
            (UpgradeStage::StoppingOld { .. }, Event::Timer(Timer::StopGrace)) => {
                self.grace_ran_out(out);
            }
            (UpgradeStage::StoppingOld { .. }, Event::DaemonExited(exit)) => {
                out.push(Action::CancelTimer(Timer::StopGrace));
                // The exit says "killed by SIGKILL" when the grace ran out.
                out.push(Action::RecordOldStopped { exit: exit.exit });
                if let Some(cause) = self.pending_shutdown.take() {
                    self.abandon_upgrade(&plan, cause, out);
                    return;
                }
                self.phase = Phase::Upgrading {
                    plan: plan.clone(),
                    stage: UpgradeStage::Preparing(None),
                };
                out.push(Action::RunUpgrade(plan));
            }
            (UpgradeStage::Preparing(_), Event::UpgradeProgress(step)) => {
                self.phase = Phase::Upgrading {
                    plan,
                    stage: UpgradeStage::Preparing(Some(step)),
                };
            }
            (UpgradeStage::Preparing(_), Event::UpgradeFinished(Ok(()))) => {
                // A fresh crash history for the new binary.
                self.restart = RestartPolicy::new(self.settings.restart);
                if !self.settings.restart_after_upgrade {
                    self.record_open = false;
                    out.push(Action::FinishUpgrade(UpgradeOutcome::SwitchedNotRestarted));
                    out.push(Action::Log(
                        Level::Info,
                        format!(
                            "upgrade {} switched; DAEMON_RESTART_AFTER_UPGRADE=false, exiting so the service manager restarts us",
                            plan.name
                        ),
                    ));
                    self.shut_down(RunOutcome::UpgradedWithoutRestart, out);
                } else if !self.settings.restart_delay.is_zero() {
                    self.phase = Phase::Upgrading {
                        plan,
                        stage: UpgradeStage::RestartDelay,
                    };
                    out.push(Action::PauseUpgradeClock);
                    out.push(Action::SetTimer(
                        Timer::RestartDelay,
                        self.settings.restart_delay,
                    ));
                } else {
                    self.launch(false, out);
                }
            }
            (UpgradeStage::Preparing(_), Event::UpgradeFinished(Err(failure))) => {
                let halted = format!("halted: upgrade {} failed: {}", plan.name, failure.message);
                if failure.waits_for_binary {
                    out.push(Action::Log(
                        Level::Error,
                        format!("upgrade {} failed: {}", plan.name, failure.message),
                    ));
                    out.push(Action::NotifyStatus(halted));
                    out.push(Action::Log(
                        Level::Warn,
                        format!(
                            "waiting for the binary of upgrade {} to be installed",
                            plan.name
                        ),
                    ));
                    out.push(Action::PauseUpgradeClock);
                    out.push(Action::SetTimer(Timer::BinaryPoll, self.binary_poll()));
                    self.phase = Phase::WaitingForBinary {
                        plan,
                        reason: failure.message,
                    };
                } else {
                    // Record first: whoever reads the log line finds it.
                    self.record_open = false;
                    out.push(Action::FinishUpgrade(UpgradeOutcome::Failed(
                        failure.message.clone(),
                    )));
                    out.push(Action::Log(
                        Level::Error,
                        format!("upgrade {} failed: {}", plan.name, failure.message),
                    ));
                    out.push(Action::NotifyStatus(halted));
                    out.push(Action::Log(
                        Level::Error,
                        "the node stays halted; restart palisade-supervisor after fixing the cause"
                            .into(),
                    ));
                    self.phase = Phase::Halted {
                        reason: failure.message,
                    };
                }
            }
            (UpgradeStage::RestartDelay, Event::Timer(Timer::RestartDelay)) => {
                out.push(Action::ResumeUpgradeClock);
                self.launch(false, out);
            }
            _ => {}
        }
    }

    fn on_shutting_down(
        &mut self,
        outcome: RunOutcome,
        step: ShutdownStep,
        event: Event,
        out: &mut Vec<Action>,
    ) {
        match (step, event) {
            (ShutdownStep::ClosingSession, Event::SessionClosed) => {
                self.session_open = false;
                self.shutting_down_after_session(outcome, out);
            }
            (ShutdownStep::RunningHostCommand, Event::HostCommandFinished) => {
                self.phase = Phase::ShuttingDown {
                    outcome,
                    step: ShutdownStep::StoppingBackground,
                };
                out.push(Action::StopBackground);
            }
            (ShutdownStep::StoppingBackground, Event::BackgroundStopped) => {
                self.phase = Phase::Exited(outcome);
            }
            _ => {}
        }
    }

    // ----- commands -----

    fn on_command(&mut self, id: CommandId, command: Command, out: &mut Vec<Action>) {
        let answer = |out: &mut Vec<Action>, result: CommandResult| {
            out.push(Action::Answer(id, result));
        };
        let refuse = |out: &mut Vec<Action>, message: String| {
            out.push(Action::Answer(id, Err(CommandError::WrongState(message))));
        };
        // Vault commands without a vault get the same answer everywhere.
        if !self.settings.vault {
            match &command {
                Command::Unlock | Command::Lock => return refuse(out, NO_VAULT.into()),
                Command::Restore(_) => return refuse(out, NO_VAULT_BACKUPS.into()),
                _ => {}
            }
        }
        if let Command::Handoff { to, operator } = &command {
            let Some(failover) = &self.settings.failover else {
                return refuse(out, NO_FAILOVER.into());
            };
            if *to == failover.host_id {
                return refuse(
                    out,
                    format!("{to} is this host: name the host to hand over to"),
                );
            }
            if !failover.peers.contains(to) {
                return out.push(Action::Answer(
                    id,
                    Err(CommandError::InvalidParams {
                        field: "to",
                        message: format!(
                            "{to} is not one of this validator's hosts ([failover] peers)"
                        ),
                        known: failover.peers.clone(),
                    }),
                ));
            }
            if self.lease.is_none() {
                return refuse(
                    out,
                    format!(
                        "this host is not the primary ({}): run failover.handoff on the host that holds the leadership (failover.status names it)",
                        self.describe()
                    ),
                );
            }
            out.push(Action::Log(
                Level::Warn,
                format!("handoff to {to} requested over the control RPC by {operator}"),
            ));
        }
        match (self.phase.clone(), command) {
            // A confirmed host shutdown is accepted wherever the supervisor
            // can stop cleanly, and answered first: the operator learns it
            // started before the connection goes away with us.
            (phase, Command::HostShutdown { operator }) if host_shutdown_allowed(&phase) => {
                out.push(Action::Log(
                    Level::Warn,
                    format!(
                        "host shutdown confirmed over the control RPC by {operator} ({})",
                        self.describe()
                    ),
                ));
                let node = match phase {
                    Phase::Running { .. } => NodeState::Stopping,
                    _ => self.node_state(),
                };
                answer(out, Ok(Answer::ShuttingDown(node)));
                self.on_shutdown(ShutdownCause::HostShutdown, out);
            }

            (Phase::Locked, Command::Unlock) => {
                self.phase = Phase::Unlocking { by: Some(id) };
                out.push(Action::TryUnlock(Some(id)));
            }
            (Phase::Locked, Command::Restore(_)) => refuse(out, RESTORE_WHILE_LOCKED.into()),
            (Phase::Locked, Command::Lock) => refuse(out, "the vault is already locked".into()),
            (Phase::Locked, _) => refuse(
                out,
                "the vault is locked: unlock it first (vault.unlock)".into(),
            ),

            (Phase::Unlocking { .. } | Phase::CheckingStart { .. }, Command::Unlock) => {
                refuse(out, format!("{}; wait for its answer", self.describe()))
            }

            (Phase::Running { pid }, command) => match command {
                Command::NodeStop => {
                    out.push(Action::Log(
                        Level::Info,
                        "node stop requested over the control RPC".into(),
                    ));
                    self.stop_daemon(pid, StopPurpose::OperatorStop(id), out)
                }
                Command::NodeRestart => {
                    out.push(Action::Log(
                        Level::Info,
                        "node restart requested over the control RPC".into(),
                    ));
                    self.stop_daemon(pid, StopPurpose::OperatorRestart(id), out)
                }
                Command::Lock => {
                    out.push(Action::Log(
                        Level::Info,
                        "vault lock requested over the control RPC: stopping the node".into(),
                    ));
                    self.stop_daemon(pid, StopPurpose::Lock(id), out)
                }
                Command::NodeStart => {
                    refuse(out, format!("the node is already running (pid {pid})"))
                }
                Command::Handoff { to, .. } => {
                    self.stop_daemon(pid, StopPurpose::Handoff(id, to), out)
                }
                Command::Unlock => refuse(out, "the vault is already unlocked".into()),
                Command::Restore(_) => refuse(
                    out,
                    format!(
                        "the node is running (pid {pid}): stop the node first (node.stop); nothing was changed"
                    ),
                ),
                Command::HostShutdown { .. } => self.refuse_now(id, &command, out),
            },

            (Phase::StoppedByOperator, command) => match command {
                Command::NodeStart | Command::NodeRestart
                    if self.settings.failover.is_some() && self.lease.is_none() =>
                {
                    out.push(Action::Log(
                        Level::Info,
                        "node start requested over the control RPC: this host is not the primary, so it waits as a standby".into(),
                    ));
                    answer(out, Ok(Answer::Node(NodeState::Standby)));
                    self.enter_standby(out);
                }
                Command::Handoff { to, .. } => self.hand_off(id, to, out),
                Command::NodeStart | Command::NodeRestart => {
                    out.push(Action::Log(
                        Level::Info,
                        "node start requested over the control RPC".into(),
                    ));
                    answer(out, Ok(Answer::Node(NodeState::Starting)));
                    self.launch(false, out);
                }
                Command::NodeStop => answer(out, Ok(Answer::Node(NodeState::Stopped))),
                Command::Lock => self.close_for_lock(id, out),
                Command::Restore(choice) => {
                    out.push(Action::Log(
                        Level::Info,
                        "sign state restore requested over the control RPC".into(),
                    ));
                    self.phase = Phase::Restoring { by: id };
                    out.push(Action::RunRestore(choice));
                }
                Command::Unlock => refuse(out, "the vault is already unlocked".into()),
                Command::HostShutdown { .. } => self.refuse_now(id, &command, out),
            },

            (Phase::BackingOff { .. }, command) => match command {
                Command::NodeStop => {
                    out.push(Action::CancelTimer(Timer::Backoff));
                    self.stopped_by_operator(out);
                    answer(out, Ok(Answer::Node(NodeState::Stopped)));
                }
                Command::NodeStart | Command::NodeRestart => {
                    out.push(Action::CancelTimer(Timer::Backoff));
                    out.push(Action::Log(
                        Level::Info,
                        format!(
                            "{} requested over the control RPC: starting now instead of after the backoff",
                            command.method()
                        ),
                    ));
                    answer(out, Ok(Answer::Node(NodeState::Starting)));
                    self.launch(false, out);
                }
                Command::Lock => {
                    out.push(Action::CancelTimer(Timer::Backoff));
                    self.close_for_lock(id, out);
                }
                Command::Handoff { to, .. } => {
                    out.push(Action::CancelTimer(Timer::Backoff));
                    self.hand_off(id, to, out);
                }
                Command::Unlock => refuse(out, "the vault is already unlocked".into()),
                Command::Restore(_) => refuse(
                    out,
                    format!(
                        "{}: stop the node first (node.stop); nothing was changed",
                        self.describe()
                    ),
                ),
                Command::HostShutdown { .. } => self.refuse_now(id, &command, out),
            },

            (Phase::Standby, command) => match command {
                Command::NodeStop => {
                    out.push(Action::Log(
                        Level::Info,
                        "node stop requested on a standby: it will not take over until node.start".into(),
                    ));
                    self.stopped_by_operator(out);
                    answer(out, Ok(Answer::Node(NodeState::Stopped)));
                }
                Command::Lock => self.close_for_lock(id, out),
                Command::Unlock => refuse(out, "the vault is already unlocked".into()),
                Command::NodeStart | Command::NodeRestart => refuse(
                    out,
                    "this host is a standby: its node starts when it takes the leadership (failover.handoff on the primary moves it here)".into(),
                ),
                Command::Restore(_) => refuse(
                    out,
                    "this host is a standby: a takeover restores the highest backup by itself; stop it first (node.stop) to restore by hand".into(),
                ),
                Command::HostShutdown { .. } | Command::Handoff { .. } => {
                    self.refuse_now(id, &command, out)
                }
            },

            (Phase::TakingOver, command) => match command {
                Command::NodeStop => {
                    out.push(Action::CancelJob(Job::Takeover));
                    out.push(Action::Log(
                        Level::Info,
                        "node stop requested during a takeover: giving the leadership up".into(),
                    ));
                    self.drop_lease(out);
                    self.stopped_by_operator(out);
                    answer(out, Ok(Answer::Node(NodeState::Stopped)));
                }
                Command::Lock => {
                    out.push(Action::CancelJob(Job::Takeover));
                    self.close_for_lock(id, out);
                }
                command => self.refuse_now(id, &command, out),
            },

            (Phase::ShuttingDown { .. } | Phase::Exited(_), _) => {
                refuse(out, "the supervisor is shutting down".into())
            }

            // Every other phase is a step in progress: nothing to do but
            // say which.
            (_, command) => self.refuse_now(id, &command, out),
        }
    }

    /// Refuse `command` because of the step in progress, naming it.
    fn refuse_now(&self, id: CommandId, command: &Command, out: &mut Vec<Action>) {
        out.push(Action::Answer(
            id,
            Err(CommandError::WrongState(format!(
                "{} is not possible now: {}; try again when it is done",
                command.method(),
                self.describe()
            ))),
        ));
    }

    // ----- shutdown -----

    /// A request to shut down (signal or confirmed host shutdown).
    fn on_shutdown(&mut self, cause: ShutdownCause, out: &mut Vec<Action>) {
        match self.phase.clone() {
            Phase::Running { pid } => self.stop_daemon(pid, StopPurpose::Shutdown(cause), out),
            Phase::Stopping { purpose, pid } => match purpose {
                // A second request while stopping: kill now.
                StopPurpose::Shutdown(_) => {
                    out.push(Action::Log(
                        Level::Warn,
                        "second shutdown signal: killing the daemon now".into(),
                    ));
                    out.push(Action::KillDaemon);
                }
                StopPurpose::Fence(_) => {
                    self.phase = Phase::Stopping {
                        pid,
                        purpose: StopPurpose::Shutdown(cause),
                    };
                }
                StopPurpose::OperatorStop(by)
                | StopPurpose::OperatorRestart(by)
                | StopPurpose::Lock(by)
                | StopPurpose::Handoff(by, _) => {
                    out.push(Action::Answer(
                        by,
                        Err(CommandError::WrongState(
                            "the supervisor is shutting down; the node is being stopped".into(),
                        )),
                    ));
                    self.phase = Phase::Stopping {
                        pid,
                        purpose: StopPurpose::Shutdown(cause),
                    };
                }
            },
            Phase::Upgrading {
                plan,
                stage: UpgradeStage::StoppingOld { .. },
            } => {
                // The old binary must finish stopping; then the upgrade is
                // abandoned before anything else is touched.
                if self.pending_shutdown.replace(cause).is_some() {
                    out.push(Action::Log(
                        Level::Warn,
                        "second shutdown signal: killing the daemon now".into(),
                    ));
                    out.push(Action::KillDaemon);
                } else {
                    out.push(Action::Log(
                        Level::Warn,
                        format!(
                            "shutdown requested while upgrade {} stops the old binary; the plan stays pending",
                            plan.name
                        ),
                    ));
                }
            }
            Phase::Upgrading { plan, stage } => {
                if matches!(stage, UpgradeStage::Preparing(_)) {
                    out.push(Action::CancelJob(Job::Upgrade));
                } else {
                    out.push(Action::CancelTimer(Timer::RestartDelay));
                }
                self.abandon_upgrade(&plan, cause, out);
            }
            Phase::WaitingForBinary { plan, reason } => {
                out.push(Action::CancelTimer(Timer::BinaryPoll));
                self.record_open = false;
                out.push(Action::FinishUpgrade(UpgradeOutcome::Failed(reason)));
                out.push(Action::Log(
                    Level::Info,
                    format!(
                        "shutdown requested while waiting for the binary of upgrade {}",
                        plan.name
                    ),
                ));
                self.shut_down(cause.outcome(), out);
            }
            Phase::BackingOff { .. } => {
                out.push(Action::CancelTimer(Timer::Backoff));
                out.push(Action::Log(
                    Level::Info,
                    "shutdown requested during restart backoff".into(),
                ));
                self.shut_down(cause.outcome(), out);
            }
            Phase::Unlocking { by } | Phase::CheckingStart { by } => {
                out.push(Action::CancelJob(match self.phase {
                    Phase::Unlocking { .. } => Job::Unlock,
                    _ => Job::StartCheck,
                }));
                if let Some(id) = by {
                    out.push(Action::Answer(
                        id,
                        Err(CommandError::WrongState(
                            "the supervisor is shutting down; the node was not started".into(),
                        )),
                    ));
                }
                self.shut_down(cause.outcome(), out);
            }
            Phase::Restoring { by } => {
                out.push(Action::CancelJob(Job::Restore));
                out.push(Action::Answer(
                    by,
                    Err(CommandError::WrongState(
                        "the supervisor is stopping; nothing was restored".into(),
                    )),
                ));
                out.push(Action::Log(
                    Level::Info,
                    "shutdown requested during a restore; nothing was restored".into(),
                ));
                self.shut_down(cause.outcome(), out);
            }
            Phase::Locking { .. } => {
                // The keys are being wiped: finish that, then shut down.
                self.pending_shutdown.get_or_insert(cause);
            }
            Phase::TakingOver => {
                out.push(Action::CancelJob(Job::Takeover));
                self.shut_down(cause.outcome(), out);
            }
            Phase::HandingOff { by, to } => {
                // Dropped at an await point: the record was written or it
                // was not; the answer says what is known.
                out.push(Action::CancelJob(Job::Handoff));
                out.push(Action::Answer(
                    by,
                    Err(CommandError::WrongState(format!(
                        "the supervisor is shutting down during the handoff to {to}; the node is stopped here; see failover.status on {to}"
                    ))),
                ));
                self.shut_down(cause.outcome(), out);
            }
            Phase::Starting
            | Phase::Locked
            | Phase::Launching
            | Phase::StoppedByOperator
            | Phase::Standby
            | Phase::Halted { .. } => self.shut_down(cause.outcome(), out),
            Phase::ShuttingDown { .. } | Phase::Exited(_) => {
                out.push(Action::Log(
                    Level::Info,
                    "already shutting down; the request changes nothing".into(),
                ));
            }
        }
    }

    /// Abandon an upgrade before its switch: the record says why, the plan
    /// stays pending for the next start.
    fn abandon_upgrade(&mut self, plan: &UpgradePlan, cause: ShutdownCause, out: &mut Vec<Action>) {
        let why = match cause {
            ShutdownCause::Signal(_) => "interrupted by shutdown",
            ShutdownCause::HostShutdown => "interrupted by host shutdown",
        };
        out.push(Action::Log(
            Level::Warn,
            format!(
                "shutdown requested during the upgrade to {}; stopping before the switch, the plan stays pending",
                plan.name
            ),
        ));
        if self.record_open {
            self.record_open = false;
            out.push(Action::FinishUpgrade(UpgradeOutcome::Failed(why.into())));
        }
        self.shut_down(cause.outcome(), out);
    }

    /// The daemon has stopped (or was not running): shut the supervisor
    /// down with `outcome`.
    fn shut_down(&mut self, outcome: RunOutcome, out: &mut Vec<Action>) {
        self.scheduled = None;
        self.due_check = None;
        // The node is not running: the leadership goes at once, and a
        // standby takes over under the takeover rule.
        self.drop_lease(out);
        out.push(Action::NotifyStopping("stopping".into()));
        self.phase = Phase::ShuttingDown {
            outcome,
            step: ShutdownStep::ClosingSession,
        };
        out.push(Action::CloseSession);
    }

    /// The session is closed: the host command if asked, then the
    /// background.
    fn shutting_down_after_session(&mut self, outcome: RunOutcome, out: &mut Vec<Action>) {
        if outcome == RunOutcome::HostShutdown {
            out.push(Action::NotifyStopping(
                "host shutdown: running the shutdown command".into(),
            ));
            self.phase = Phase::ShuttingDown {
                outcome,
                step: ShutdownStep::RunningHostCommand,
            };
            out.push(Action::RunHostShutdownCommand);
        } else {
            self.phase = Phase::ShuttingDown {
                outcome,
                step: ShutdownStep::StoppingBackground,
            };
            out.push(Action::StopBackground);
        }
    }

    // ----- transitions shared by several phases -----

    fn lock_and_wait(&mut self, out: &mut Vec<Action>) {
        self.phase = Phase::Locked;
        let status = "locked: waiting for the vault passphrase".to_owned();
        if self.ready_sent {
            out.push(Action::NotifyStatus(status));
        } else {
            self.ready_sent = true;
            out.push(Action::NotifyReady(status));
        }
    }

    /// Start the node: first look for a plan left in `data/` when
    /// `look_for_plan` (a new supervision), else spawn at once.
    fn launch(&mut self, look_for_plan: bool, out: &mut Vec<Action>) {
        if self.settings.failover.is_some() && self.lease.is_none() {
            // The one gate every start goes through: with [failover], only
            // the holder of the leadership runs the node.
            self.enter_standby(out);
            return;
        }
        self.phase = Phase::Launching;
        out.push(if look_for_plan {
            Action::LookForPendingPlan
        } else {
            Action::SpawnDaemon
        });
    }

    fn stop_daemon(&mut self, pid: u32, purpose: StopPurpose, out: &mut Vec<Action>) {
        let signal = match &purpose {
            StopPurpose::Shutdown(ShutdownCause::Signal(signal)) => *signal,
            // Cosmovisor stops gaiad with SIGINT.
            _ => StopSignal::Interrupt,
        };
        out.push(Action::Log(
            Level::Info,
            format!(
                "stopping the daemon (pid {pid}, grace {}) for {}",
                humantime::format_duration(self.settings.shutdown_grace),
                match &purpose {
                    StopPurpose::OperatorStop(_) => "node.stop",
                    StopPurpose::OperatorRestart(_) => "node.restart",
                    StopPurpose::Lock(_) => "vault.lock",
                    StopPurpose::Shutdown(ShutdownCause::Signal(_)) => "a shutdown signal",
                    StopPurpose::Shutdown(ShutdownCause::HostShutdown) => "host.shutdown",
                    StopPurpose::Handoff(..) => "failover.handoff",
                    StopPurpose::Fence(_) => "fencing",
                }
            ),
        ));
        out.push(Action::NotifyStatus(format!(
            "stopping {} (grace {})",
            self.settings.daemon_name,
            humantime::format_duration(self.settings.shutdown_grace)
        )));
        self.leave_running(out);
        self.phase = Phase::Stopping { pid, purpose };
        out.push(Action::SignalDaemon(signal));
        out.push(Action::SetTimer(
            Timer::StopGrace,
            self.settings.shutdown_grace,
        ));
    }

    /// Held plans and due checks belong to a running node.
    fn leave_running(&mut self, out: &mut Vec<Action>) {
        self.due_check = None;
        if self.line_plan.take().is_some() {
            out.push(Action::CancelTimer(Timer::LineConfirm));
        }
        out.push(Action::CancelTimer(Timer::ScheduledCheck));
        if self.scheduled.take().is_some() {
            out.push(Action::HoldPlan(None));
        }
    }

    /// The daemon stopped as asked.
    fn after_stop(&mut self, purpose: StopPurpose, out: &mut Vec<Action>) {
        match purpose {
            StopPurpose::OperatorStop(id) => {
                self.stopped_by_operator(out);
                out.push(Action::Answer(id, Ok(Answer::Node(NodeState::Stopped))));
            }
            StopPurpose::OperatorRestart(id) => {
                out.push(Action::Answer(id, Ok(Answer::Node(NodeState::Starting))));
                self.launch(false, out);
            }
            StopPurpose::Lock(id) => self.close_for_lock(id, out),
            StopPurpose::Shutdown(cause) => self.shut_down(cause.outcome(), out),
            StopPurpose::Handoff(id, to) => self.hand_off(id, to, out),
            StopPurpose::Fence(token) => {
                out.push(Action::ReleaseLease(token));
                self.enter_standby(out);
            }
        }
    }

    /// Wait as a standby for the leadership.
    fn enter_standby(&mut self, out: &mut Vec<Action>) {
        self.phase = Phase::Standby;
        let status = "standby: waiting for the leadership (failover)".to_owned();
        if self.ready_sent {
            out.push(Action::NotifyStatus(status));
        } else {
            self.ready_sent = true;
            out.push(Action::NotifyReady(status));
        }
    }

    /// Forget the leadership and tell the driver to give it up.
    fn drop_lease(&mut self, out: &mut Vec<Action>) {
        if let Some(token) = self.lease.take() {
            out.push(Action::CancelTimer(Timer::Fence));
            out.push(Action::ReleaseLease(token));
        }
    }

    /// The node has stopped for a handoff: final backup, record, release.
    fn hand_off(&mut self, id: CommandId, to: String, out: &mut Vec<Action>) {
        out.push(Action::NotifyStatus(format!("handing over to {to}")));
        self.phase = Phase::HandingOff {
            by: id,
            to: to.clone(),
        };
        out.push(Action::RunHandoff { to });
    }

    /// The leadership driver's news.
    fn on_lease(&mut self, event: LeaseEvent, out: &mut Vec<Action>) {
        match event {
            LeaseEvent::Acquired {
                token,
                stop_by,
                handoff,
            } => {
                if let Some(held) = self.lease {
                    // A second leadership while one is held: the driver lost
                    // the first without saying so. Fence on the old one; the
                    // new one is given back.
                    out.push(Action::ReleaseLease(token));
                    self.fence(
                        &format!("the driver reported token {token} while token {held} was held"),
                        out,
                    );
                    return;
                }
                if self.phase != Phase::Standby || self.settings.failover.is_none() {
                    // Only a standby asks for it; anyone else gives it back.
                    out.push(Action::Log(
                        Level::Warn,
                        format!(
                            "the leadership (token {token}) arrived while {}; giving it up",
                            self.describe()
                        ),
                    ));
                    out.push(Action::ReleaseLease(token));
                    return;
                }
                self.lease = Some(token);
                out.push(Action::SetDeadline(Timer::Fence, stop_by));
                out.push(Action::Log(
                    Level::Info,
                    match &handoff {
                        Some(grant) => format!(
                            "leadership taken (token {token}) by a verified handoff from {}; restoring its final state before the node starts",
                            grant.from
                        ),
                        None => format!(
                            "leadership taken (token {token}); applying the takeover rule before the node starts"
                        ),
                    },
                ));
                out.push(Action::NotifyStatus(format!("taking over (token {token})")));
                self.phase = Phase::TakingOver;
                out.push(Action::RunTakeover(handoff));
            }
            LeaseEvent::Renewed { token, stop_by } => {
                if self.lease == Some(token) {
                    out.push(Action::SetDeadline(Timer::Fence, stop_by));
                }
            }
            LeaseEvent::Lost { token, reason } => {
                if self.lease == Some(token) {
                    self.fence(&reason, out);
                }
            }
        }
    }

    /// The leadership is gone: whatever runs stops signing now.
    fn fence(&mut self, reason: &str, out: &mut Vec<Action>) {
        let Some(token) = self.lease.take() else {
            return;
        };
        out.push(Action::CancelTimer(Timer::Fence));
        out.push(Action::Log(
            Level::Error,
            format!("fencing: {reason}; this host must not sign any more"),
        ));
        out.push(Action::NotifyStatus(format!("fenced: {reason}")));
        match self.phase.clone() {
            Phase::Running { pid } => {
                self.leave_running(out);
                self.phase = Phase::Stopping {
                    pid,
                    purpose: StopPurpose::Fence(token),
                };
                out.push(Action::KillDaemon);
                out.push(Action::SetTimer(
                    Timer::StopGrace,
                    self.settings.shutdown_grace,
                ));
                // The driver gives the lease up when told after the exit
                // (or finds it gone by itself).
            }
            // Already stopping, or an upgrade's old binary stopping: kill
            // now; the start gate keeps it down after.
            Phase::Stopping { .. }
            | Phase::Upgrading {
                stage: UpgradeStage::StoppingOld { .. },
                ..
            } => out.push(Action::KillDaemon),
            Phase::BackingOff { .. } => {
                out.push(Action::CancelTimer(Timer::Backoff));
                out.push(Action::ReleaseLease(token));
                self.enter_standby(out);
            }
            Phase::TakingOver => {
                out.push(Action::CancelJob(Job::Takeover));
                out.push(Action::ReleaseLease(token));
                self.enter_standby(out);
            }
            // Not signing; a later start meets the gate in `launch`.
            _ => out.push(Action::ReleaseLease(token)),
        }
    }

    fn stopped_by_operator(&mut self, out: &mut Vec<Action>) {
        self.phase = Phase::StoppedByOperator;
        out.push(Action::NotifyStatus(
            "node stopped by an operator (node.start to start it)".into(),
        ));
    }

    fn close_for_lock(&mut self, id: CommandId, out: &mut Vec<Action>) {
        out.push(Action::Log(
            Level::Info,
            "vault lock requested over the control RPC: final backup, then the keys are wiped"
                .into(),
        ));
        self.drop_lease(out);
        self.phase = Phase::Locking { by: id };
        out.push(Action::CloseSession);
    }

    /// An upgrade while the daemon runs: stop it first.
    fn upgrade_running(&mut self, pid: u32, detected: DetectedPlan, out: &mut Vec<Action>) {
        self.leave_running(out);
        self.begin_upgrade(detected, Some(pid), out);
    }

    /// Begin an upgrade; `running`: the pid of the old daemon to stop.
    fn begin_upgrade(
        &mut self,
        detected: DetectedPlan,
        running: Option<u32>,
        out: &mut Vec<Action>,
    ) {
        let plan = detected.plan.clone();
        self.record_open = true;
        out.push(Action::BeginUpgrade(detected));
        out.push(Action::NotifyStatus(format!(
            "upgrade {} detected at height {}",
            plan.name,
            plan.height
                .map_or_else(|| "unknown".to_owned(), |height| height.to_string())
        )));
        match running {
            Some(pid) => {
                self.phase = Phase::Upgrading {
                    plan,
                    stage: UpgradeStage::StoppingOld { pid },
                };
                out.push(Action::SignalDaemon(StopSignal::Interrupt));
                out.push(Action::SetTimer(
                    Timer::StopGrace,
                    self.settings.shutdown_grace,
                ));
            }
            None => {
                self.phase = Phase::Upgrading {
                    plan: plan.clone(),
                    stage: UpgradeStage::Preparing(None),
                };
                out.push(Action::RunUpgrade(plan));
            }
        }
    }

    fn grace_ran_out(&self, out: &mut Vec<Action>) {
        out.push(Action::Log(
            Level::Warn,
            format!(
                "the daemon did not exit within the shutdown grace ({}); sending SIGKILL",
                humantime::format_duration(self.settings.shutdown_grace)
            ),
        ));
        out.push(Action::KillDaemon);
    }

    fn binary_poll(&self) -> Duration {
        self.settings.poll_interval.max(Duration::from_millis(100))
    }
}

/// Whether a confirmed `host.shutdown` is accepted in `phase`: not while
/// the supervisor is already shutting down, nor in the middle of a step
/// that is itself answering a command (its caller is owed an answer
/// first).
fn host_shutdown_allowed(phase: &Phase) -> bool {
    !matches!(
        phase,
        Phase::ShuttingDown { .. }
            | Phase::Exited(_)
            | Phase::Unlocking { by: Some(_) }
            | Phase::CheckingStart { by: Some(_) }
            | Phase::Restoring { .. }
            | Phase::Locking { .. }
            | Phase::Stopping { .. }
            | Phase::Launching
            | Phase::Starting
            | Phase::TakingOver
            | Phase::HandingOff { .. }
    )
}

/// An upgrade step in words.
fn step_name(step: UpgradeStep) -> &'static str {
    match step {
        UpgradeStep::StopOld => "stopping the old binary",
        UpgradeStep::Download => "downloading the binary",
        UpgradeStep::Verify => "verifying the binary",
        UpgradeStep::DataBackup => "backing up data/",
        UpgradeStep::PreUpgrade => "running pre-upgrade",
        UpgradeStep::Switch => "switching current",
        UpgradeStep::StartNew => "starting the new binary",
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod failover_tests;

/// "v2 at height 40" (or without a height for the legacy line).
pub(crate) fn describe_plan(plan: &UpgradePlan) -> String {
    match plan.height {
        Some(height) => format!("{} at height {height}", plan.name),
        None => plan.name.clone(),
    }
}
