//! The executor: the one place that performs the supervisor's lifecycle
//! effects. It feeds every [`Event`] to the [`Machine`], publishes the
//! board, and performs the [`Action`]s the machine returns: spawning and
//! signalling the daemon, timers, systemd notifications, the vault
//! session, upgrades, restores, answers to commands.
//!
//! One `select!` ([`Executor::next_event`]) waits on everything at once —
//! the daemon's exit, the shutdown signals, the commands, the timers, the
//! jobs in flight, the upgrade plans — and feeds the systemd watchdog on
//! every tick whatever the phase, so that neither a long grace, a long
//! backoff nor a long upgrade step can starve it, and a command is always
//! read and answered at once when the phase cannot honour it.
//!
//! Jobs (an unlock, the start check, an upgrade's preparation, a restore,
//! the final backup) are futures polled inside that `select!`, never
//! spawned tasks: cancelling one drops it at an await point, and a job
//! whose result was produced is always seen (a finished restore is never
//! reported as "nothing was restored").

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ffi::OsString;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use palisade_daemon::systemd::Notifier;
use palisade_wire::upgrade_record::{DetectionSource, UpgradeStep};
use secrecy::SecretString;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::board::{SharedBoard, board};
use super::command::HandoffDone;
use super::command::{CommandId, CommandInbox, CommandResult, Order, Request, RotateRequest};
use super::machine::{
    Action, DaemonExit, DetectedPlan, Event, HandoffGrant, Job, LeaseEvent, Level, Machine,
    RunOutcome, StartVerdict, StopSignal, Timer, UnlockOutcome, UpgradeFailure, VaultAtStart,
    describe_plan,
};
use super::plans::{is_new_plan, new_plan_in_file};
use crate::backup::{
    BackupWorker, FollowFrom, LastBackup, RestoreChoice, RestoreKit, StartCheckError, StartRule,
    ValidatorIdentity, open_dir_stores, start_check,
};
use crate::config::Config;
use crate::node::files::NodePaths;
use crate::node::process::{Daemon, OutputTarget, Reaper, kill_remaining_children};
use crate::node::restart_policy::ExitKind;
use crate::node::rpc::NodeRpc;
use crate::sign_state::StartDecision;
use crate::tunnel::TunnelMesh;
use crate::upgrade::layout::{Layout, Version};
use crate::upgrade::perform::{
    RecordBuilder, UpgradeContext, append_record, plan_version, prepare_and_switch,
};
use crate::upgrade::plan::UpgradePlan;
use crate::upgrade::watch::{UpgradeFileWatcher, WatchEvent};
use crate::vault::{TmpfsKeys, UnlockedVault, VaultError};

/// A job's future. Not `Send`: jobs run on the executor's own task.
type JobFuture = Pin<Box<dyn Future<Output = Done>>>;

/// Work in flight, one of each at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Work {
    /// A job the machine may cancel.
    Job(Job),
    CloseSession,
    HostCommand,
    Background,
}

/// What a job hands back: an event, or something the executor keeps
/// before it tells the machine.
enum Done {
    Event(Event),
    Unlocked(Result<UnlockedVault, VaultError>),
    StartChecked(Result<Prepared, StartCheckError>),
}

/// What the start check found, kept for [`Action::OpenSession`].
struct Prepared {
    validator: ValidatorIdentity,
    stores: Vec<Arc<dyn crate::backup::BackupStore>>,
    decision: StartDecision,
    next_sequence: u64,
}

/// What the supervisor holds while the vault is unlocked.
struct Session {
    tmpfs: TmpfsKeys,
    backups: BackupWorker,
}

/// A command waiting for its answer.
struct Pending {
    method: &'static str,
    reply: tokio::sync::oneshot::Sender<CommandResult>,
    passphrase: Option<SecretString>,
    accept_unreachable_by: Option<String>,
}

/// What the executor needs from `run`'s setup.
pub(super) struct Setup {
    pub config: Config,
    /// Where the node's files are.
    pub node: NodePaths,
    pub daemon_args: Vec<OsString>,
    pub output: OutputTarget,
    pub reaper: Reaper,
    pub notifier: Notifier,
    pub shutdown: super::ShutdownRequests,
    pub commands: CommandInbox,
    pub board: SharedBoard,
    pub last_backup: watch::Sender<Option<LastBackup>>,
    pub tunnels: Option<TunnelMesh>,
    pub background: CancellationToken,
    pub control_server: tokio::task::JoinHandle<()>,
    /// The unattended passphrase, if one was read.
    pub unattended: Option<SecretString>,
    /// `run --accept-unreachable-stores`: the first start may go ahead
    /// without the store quorum (recorded as accepted by this name).
    pub accept_unreachable_at_start: Option<String>,
    /// How the vault stands at start.
    pub vault_at_start: VaultAtStart,
    /// `[failover]`: the leadership driver and its news.
    pub failover: Option<FailoverRuntime>,
    /// `[eip]`: Elastic IP rotation of the bastions.
    pub eip: Option<Arc<crate::eip::EipService>>,
    /// `[eip.auto]`: the trigger's requests, `(bastion, reason)`.
    pub auto_rotations: Option<mpsc::Receiver<(String, String)>>,
}

/// What the executor holds for `[failover]`.
pub(super) struct FailoverRuntime {
    pub settings: crate::config::FailoverSettings,
    pub keys: crate::failover::Keys,
    pub driver: crate::failover::driver::DriverHandle,
    pub events: mpsc::UnboundedReceiver<LeaseEvent>,
}

pub(super) struct Executor {
    machine: Machine,
    config: Arc<Config>,
    node: NodePaths,
    layout: Layout,
    reaper: Reaper,
    notifier: Notifier,
    daemon_args: Vec<OsString>,
    output: OutputTarget,
    daemon: Option<Daemon>,
    upgrade_lines_sender: mpsc::UnboundedSender<UpgradePlan>,
    upgrade_lines: mpsc::UnboundedReceiver<UpgradePlan>,
    watcher: UpgradeFileWatcher,
    shutdown: super::ShutdownRequests,
    watchdog: Option<tokio::time::Interval>,
    commands: CommandInbox,
    pending: HashMap<CommandId, Pending>,
    next_command: u64,
    timers: BTreeMap<Timer, tokio::time::Instant>,
    jobs: BTreeMap<Work, JobFuture>,
    queue: VecDeque<Event>,
    board: SharedBoard,
    last_backup: watch::Sender<Option<LastBackup>>,
    node_rpc: Rc<NodeRpc>,
    tunnels: Option<Rc<TunnelMesh>>,
    background: CancellationToken,
    control_server: Option<tokio::task::JoinHandle<()>>,
    unattended: Option<SecretString>,
    accept_unreachable_at_start: Option<String>,
    /// Who accepted unreachable stores for the start check to come.
    accept_unreachable_by: Option<String>,
    vault_at_start: VaultAtStart,
    /// The unlocked vault, from the unlock to the end of the session.
    vault: Option<Arc<UnlockedVault>>,
    prepared: Option<Prepared>,
    session: Option<Session>,
    restore_kit: Option<RestoreKit>,
    /// The record of the upgrade in progress.
    record: Option<Rc<RefCell<RecordBuilder>>>,
    /// Since when the upgrade's clock is paused.
    record_paused: Option<Instant>,
    progress_sender: mpsc::UnboundedSender<UpgradeStep>,
    progress: mpsc::UnboundedReceiver<UpgradeStep>,
    failover: Option<FailoverRuntime>,
    /// Whose keys are in tmpfs, while a session is open.
    validator: Option<ValidatorIdentity>,
    eip: Option<Arc<crate::eip::EipService>>,
    auto_rotations: Option<mpsc::Receiver<(String, String)>>,
}

impl Executor {
    pub(super) fn new(machine: Machine, setup: Setup) -> Executor {
        let config = Arc::new(setup.config);
        let layout = Layout::new(&config.daemon_home, &config.daemon_name);
        let watchdog = setup.notifier.watchdog_interval().map(|interval| {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick
        });
        let (upgrade_lines_sender, upgrade_lines) = mpsc::unbounded_channel();
        let (progress_sender, progress) = mpsc::unbounded_channel();
        Executor {
            machine,
            watcher: UpgradeFileWatcher::new(config.upgrade_info_path(), config.poll_interval),
            node_rpc: Rc::new(NodeRpc::new(&config.daemon_home)),
            layout,
            reaper: setup.reaper,
            notifier: setup.notifier,
            daemon_args: setup.daemon_args,
            output: setup.output,
            daemon: None,
            upgrade_lines_sender,
            upgrade_lines,
            shutdown: setup.shutdown,
            watchdog,
            commands: setup.commands,
            pending: HashMap::new(),
            next_command: 0,
            timers: BTreeMap::new(),
            jobs: BTreeMap::new(),
            queue: VecDeque::new(),
            board: setup.board,
            last_backup: setup.last_backup,
            tunnels: setup.tunnels.map(Rc::new),
            background: setup.background,
            control_server: Some(setup.control_server),
            unattended: setup.unattended,
            accept_unreachable_at_start: setup.accept_unreachable_at_start,
            accept_unreachable_by: None,
            vault_at_start: setup.vault_at_start,
            vault: None,
            prepared: None,
            session: None,
            restore_kit: None,
            record: None,
            record_paused: None,
            progress_sender,
            progress,
            failover: setup.failover,
            eip: setup.eip,
            auto_rotations: setup.auto_rotations,
            validator: None,
            node: setup.node,
            config,
        }
    }

    /// Run the machine until it exits.
    pub(super) async fn run(mut self) -> RunOutcome {
        self.queue.push_back(Event::Started(self.vault_at_start));
        // Credentials that are not in the vault are there from the start.
        if let Some(eip) = &self.eip
            && !eip.needs_vault()
        {
            self.open_eip();
        }
        loop {
            // Settle everything the last actions produced before waiting:
            // the transient phases are never seen by a command.
            while let Some(event) = self.queue.pop_front() {
                self.feed(event).await;
            }
            if let Some(outcome) = self.machine.outcome() {
                return outcome.clone();
            }
            let event = self.next_event().await;
            self.feed(event).await;
        }
    }

    /// One step of the machine: decide, publish, perform.
    async fn feed(&mut self, event: Event) {
        let actions = self.machine.step(event);
        self.publish();
        for action in actions {
            self.perform(action).await;
        }
    }

    /// What the control RPC reads, from the machine's phase. Written
    /// before the step's actions run, so that `upgrade.cancel` sees an
    /// upgrade in progress before its job touches anything.
    fn publish(&self) {
        let mut shared = board(&self.board);
        shared.node = self.machine.node_state();
        shared.pid = self.machine.pid();
        shared.vault_locked = self.machine.vault_locked();
        shared.phase = self.machine.phase().name();
        shared.primary = self.failover.is_none() || self.machine.lease_token().is_some();
        drop(shared);
        if let Some(failover) = &self.failover {
            failover
                .driver
                .set_eligible(self.machine.wants_leadership());
            crate::failover::view(failover.driver.view()).primary =
                self.machine.lease_token().is_some();
        }
    }

    /// Wait for the next event; feed the watchdog meanwhile.
    async fn next_event(&mut self) -> Event {
        // Plans are read only while the daemon runs: a line printed while
        // it stops stays queued for the next run, as a file change does.
        let running = matches!(self.machine.phase(), super::machine::Phase::Running { .. });
        loop {
            let next_timer = self
                .timers
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(t, at)| (*t, *at));
            let jobs = &mut self.jobs;
            let job = std::future::poll_fn(|context| {
                for (work, future) in jobs.iter_mut() {
                    if let Poll::Ready(done) = future.as_mut().poll(context) {
                        return Poll::Ready((*work, done));
                    }
                }
                Poll::Pending
            });
            tokio::select! {
                biased;
                () = watchdog_tick(&mut self.watchdog) => {
                    self.notifier.watchdog();
                }
                Some(signal) = self.shutdown.recv() => {
                    return Event::Signal(match signal {
                        Signal::SIGINT => StopSignal::Interrupt,
                        _ => StopSignal::Terminate,
                    });
                }
                exit = wait_daemon(&mut self.daemon) => return self.daemon_exited(exit, running),
                (work, done) = job => {
                    self.jobs.remove(&work);
                    if let Some(event) = self.job_done(done) {
                        return event;
                    }
                }
                Some(step) = self.progress.recv() => return Event::UpgradeProgress(step),
                Some(lease) = lease_event(&mut self.failover) => return Event::Lease(lease),
                Some((bastion, reason)) = auto_rotation(&mut self.auto_rotations) => {
                    let request = RotateRequest {
                        bastion,
                        keep_old: false,
                        operator: "the automatic trigger ([eip.auto])".into(),
                    };
                    return Event::AutoRotate(request, reason);
                }
                () = sleep_until(next_timer.map(|(_, at)| at)) => {
                    let (timer, _) = next_timer.expect("a timer was due");
                    self.timers.remove(&timer);
                    return Event::Timer(timer);
                }
                Some(plan) = self.upgrade_lines.recv(), if running => {
                    if is_new_plan(&self.config, &self.layout, &plan) {
                        // The SDK writes upgrade-info.json before it prints
                        // the line: look now, so that the machine confirms
                        // the line without waiting for the watcher.
                        if let Some(file) = new_plan_in_file(&self.config, &self.layout) {
                            self.queue.push_back(Event::PlanDetected(DetectedPlan {
                                plan: file,
                                source: DetectionSource::UpgradeInfoFile,
                            }));
                        }
                        return Event::PlanDetected(DetectedPlan {
                            plan,
                            source: DetectionSource::OutputLine,
                        });
                    }
                }
                event = self.watcher.next(), if running => match event {
                    WatchEvent::Plan(plan) => {
                        if is_new_plan(&self.config, &self.layout, &plan) {
                            return Event::PlanDetected(DetectedPlan {
                                plan,
                                source: DetectionSource::UpgradeInfoFile,
                            });
                        }
                    }
                    WatchEvent::Invalid(reason) => return Event::PlanInvalid(reason),
                    WatchEvent::StuckIncomplete => {
                        return Event::PlanInvalid(
                            "the file has been incomplete for more than 5s".into(),
                        );
                    }
                },
                Some(request) = self.commands.recv() => {
                    if let Some(event) = self.accept(request) {
                        return event;
                    }
                }
            }
        }
    }

    /// A command from the RPC: numbered and kept until answered. One whose
    /// caller gave up is dropped, never carried out late.
    fn accept(&mut self, request: Request) -> Option<Event> {
        let method = request.order.method();
        if !request.caller_waiting() {
            tracing::warn!(
                method,
                "a control command arrived after its caller stopped waiting; not carried out"
            );
            return None;
        }
        self.next_command += 1;
        let id = CommandId(self.next_command);
        self.pending.insert(
            id,
            Pending {
                method,
                reply: request.reply,
                passphrase: request.passphrase,
                accept_unreachable_by: request.accept_unreachable_by,
            },
        );
        Some(match request.order {
            Order::Node(command) => Event::Command(id, command),
            Order::Rotate(rotate) => Event::RotateRequested(id, rotate),
        })
    }

    /// The daemon is gone: release its output, and gather what the machine
    /// needs to tell an upgrade halt from a crash.
    fn daemon_exited(&mut self, exit: ExitKind, running: bool) -> Event {
        let mut daemon = self.daemon.take().expect("the daemon exited");
        let uptime = daemon.uptime();
        // Helpers the daemon spawned into its group go with it.
        daemon.kill_group();
        daemon.release_output();
        let dropped = daemon.stats.dropped();
        {
            let mut shared = board(&self.board);
            shared.output_lines_dropped_before += dropped;
            shared.output = None;
        }
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "daemon output lines were dropped because the output consumer was slower than the daemon"
            );
        }
        tracing::info!(pid = daemon.pid(), %exit, "daemon stopped");
        let (plan_from_output, plan_in_file) = if running {
            let mut from_output = None;
            while let Ok(plan) = self.upgrade_lines.try_recv() {
                if from_output.is_none() && is_new_plan(&self.config, &self.layout, &plan) {
                    from_output = Some(plan);
                }
            }
            (from_output, new_plan_in_file(&self.config, &self.layout))
        } else {
            (None, None)
        };
        Event::DaemonExited(DaemonExit {
            exit,
            uptime,
            at: Instant::now(),
            jitter: rand::random::<f64>(),
            plan_from_output,
            plan_in_file,
        })
    }

    fn job_done(&mut self, done: Done) -> Option<Event> {
        match done {
            Done::Event(event) => Some(event),
            Done::Unlocked(result) => Some(Event::UnlockFinished(match result {
                Ok(vault) => {
                    tracing::info!("vault unlocked");
                    self.vault = Some(Arc::new(vault));
                    if self.eip.as_ref().is_some_and(|eip| eip.needs_vault()) {
                        self.open_eip();
                    }
                    UnlockOutcome::Unlocked
                }
                Err(VaultError::WrongPassphrase { .. }) => {
                    tracing::warn!("wrong passphrase; nothing was changed");
                    tracing::info!(
                        "vault is locked; the node starts after an unlock over the control RPC"
                    );
                    UnlockOutcome::WrongPassphrase
                }
                Err(error) => {
                    tracing::error!(%error, "unlock failed");
                    UnlockOutcome::Failed(error.to_string())
                }
            })),
            Done::StartChecked(result) => Some(Event::StartChecked(match result {
                Ok(prepared) => {
                    let verdict = match &prepared.decision {
                        StartDecision::Refuse { reason, .. } => {
                            StartVerdict::Refuse(reason.clone())
                        }
                        StartDecision::Start { watermark } => {
                            match watermark {
                                Some(known) => {
                                    tracing::info!(watermark = %known.watermark, source = %known.source, "sign state is at the highest known watermark")
                                }
                                None => tracing::info!(
                                    "no sign state and no backup yet: a new validator"
                                ),
                            }
                            StartVerdict::Start
                        }
                    };
                    self.prepared = Some(prepared);
                    verdict
                }
                Err(StartCheckError::QuorumMissing(reason)) => StartVerdict::Unavailable(reason),
                Err(StartCheckError::Failed(reason)) => StartVerdict::Failed(reason),
            })),
        }
    }

    // ----- actions -----

    async fn perform(&mut self, action: Action) {
        match action {
            Action::Answer(id, result) => self.answer(id, result),
            Action::NotifyReady(status) => self.notifier.ready(&status),
            Action::NotifyStatus(status) => self.notifier.status(&status),
            Action::NotifyStopping(status) => self.notifier.stopping(&status),
            Action::Log(level, message) => match level {
                Level::Info => tracing::info!("{message}"),
                Level::Warn => tracing::warn!("{message}"),
                Level::Error => tracing::error!("{message}"),
            },
            Action::ReportCrash {
                exit,
                crash_number,
                delay,
            } => {
                tracing::warn!(%exit, crash_number, delay_ms = delay.as_millis() as u64, "daemon crashed; restarting after backoff");
                self.notifier.status(&format!(
                    "daemon crashed ({exit}); restart #{crash_number} in {}",
                    humantime::format_duration(Duration::from_millis(delay.as_millis() as u64))
                ));
            }
            Action::TryUnlock(by) => self.try_unlock(by),
            Action::CheckStart => self.check_start(),
            Action::OpenSession => self.open_session(),
            Action::CloseSession => self.close_session(),
            Action::ForgetVault => {
                // No session was opened: nothing is in tmpfs and no worker
                // runs; the unlocked vault is simply dropped.
                self.prepared = None;
                self.vault = None;
                self.close_eip();
            }
            Action::LookForPendingPlan => {
                let plan = new_plan_in_file(&self.config, &self.layout).map(|plan| {
                    tracing::info!(upgrade = %plan.name, height = ?plan.height, "found a pending upgrade plan in upgrade-info.json at start");
                    DetectedPlan {
                        plan,
                        source: DetectionSource::UpgradeInfoFile,
                    }
                });
                self.queue.push_back(Event::PendingPlan(plan));
            }
            Action::SpawnDaemon => self.spawn_daemon(),
            Action::SignalDaemon(signal) => {
                if let Some(daemon) = &self.daemon {
                    daemon.signal(match signal {
                        StopSignal::Interrupt => Signal::SIGINT,
                        StopSignal::Terminate => Signal::SIGTERM,
                    });
                }
            }
            Action::KillDaemon => {
                if let Some(daemon) = &self.daemon {
                    daemon.signal(Signal::SIGKILL);
                }
            }
            Action::SetTimer(timer, after) => {
                self.timers
                    .insert(timer, tokio::time::Instant::now() + after);
            }
            Action::CancelTimer(timer) => {
                self.timers.remove(&timer);
            }
            Action::CheckPlanDue(plan) => {
                let node_rpc = Rc::clone(&self.node_rpc);
                self.start(
                    Work::Job(Job::PlanDue),
                    Box::pin(async move {
                        let node_height = match plan.height {
                            Some(_) => node_rpc.latest_height().await,
                            None => None,
                        };
                        Done::Event(Event::PlanDue { plan, node_height })
                    }),
                );
            }
            Action::HoldPlan(plan) => {
                let held = plan.as_ref().map(describe_plan);
                if let Some(plan) = &plan {
                    tracing::info!(upgrade = %plan.name, height = ?plan.height, "upgrade scheduled; waiting for the node to reach the height");
                    self.notifier
                        .status(&format!("upgrade {} scheduled", describe_plan(plan)));
                }
                board(&self.board).scheduled_upgrade = held;
            }
            Action::BeginUpgrade(DetectedPlan { plan, source }) => {
                tracing::info!(upgrade = %plan.name, height = ?plan.height, ?source, "upgrade detected");
                self.record = Some(Rc::new(RefCell::new(RecordBuilder::new(
                    &plan,
                    source,
                    Instant::now(),
                ))));
                self.record_paused = None;
                let mut shared = board(&self.board);
                shared.scheduled_upgrade = None;
                shared.upgrading = plan_version(&self.config, &plan).ok();
            }
            Action::RecordOldStopped { exit } => {
                if let Some(record) = &self.record {
                    let detected = record.borrow().detected();
                    record
                        .borrow_mut()
                        .step(UpgradeStep::StopOld, detected, exit.to_string());
                }
            }
            Action::RunUpgrade(plan) => self.run_upgrade(plan),
            Action::PauseUpgradeClock => self.record_paused = Some(Instant::now()),
            Action::ResumeUpgradeClock => {
                if let (Some(since), Some(record)) = (self.record_paused.take(), &self.record) {
                    record.borrow_mut().exclude_from_switch(since.elapsed());
                }
            }
            Action::FinishUpgrade(outcome) => {
                if let Some(record) = self.record.take() {
                    let record = take_record(record).finish(outcome);
                    append_record(&self.layout, &record);
                    board(&self.board).upgrades.count(&record.outcome);
                }
            }
            Action::CompleteUpgrade => {
                if let Some(record) = self.record.take() {
                    let pid = self.machine.pid().unwrap_or_default();
                    let mut builder = take_record(record);
                    let started = self
                        .daemon
                        .as_ref()
                        .map_or_else(Instant::now, Daemon::started);
                    builder.step(UpgradeStep::StartNew, started, format!("pid {pid}"));
                    let record = builder.completed();
                    // Record first: whoever reads the log line finds it.
                    append_record(&self.layout, &record);
                    board(&self.board).upgrades.count(&record.outcome);
                    tracing::info!(upgrade = %record.name, switch_ms = ?record.switch_ms, "upgrade completed; new binary running");
                }
            }
            Action::CheckBinary(plan) => {
                let present = match plan_version(&self.config, &plan) {
                    Ok(version) => {
                        version != Version::Genesis && self.layout.check_binary(&version).is_ok()
                    }
                    Err(_) => false,
                };
                self.queue.push_back(Event::BinaryChecked(present));
            }
            Action::RunRestore(choice) => self.run_restore(choice),
            Action::CancelJob(job) => {
                if self.jobs.remove(&Work::Job(job)).is_some() {
                    tracing::info!(?job, "cancelled");
                }
                if job == Job::Upgrade {
                    // Steps the job reported are in the record already.
                    while self.progress.try_recv().is_ok() {}
                }
            }
            Action::RunHostShutdownCommand => {
                let reaper = self.reaper.clone();
                let command = self.config.host.shutdown_command.clone();
                self.start(
                    Work::HostCommand,
                    Box::pin(async move {
                        // The answer to the confirming call is on its way:
                        // let the connection's task write it before the
                        // command can take the host down.
                        tokio::task::yield_now().await;
                        if let Err(error) =
                            crate::control::host_shutdown::run_shutdown_command(&reaper, &command)
                                .await
                        {
                            tracing::error!(
                                "{error}; the node stays stopped and the supervisor exits anyway (shut the host down by hand)"
                            );
                        }
                        Done::Event(Event::HostCommandFinished)
                    }),
                );
            }
            Action::StopBackground => self.stop_background(),
            Action::SetDeadline(timer, at) => {
                self.timers
                    .insert(timer, tokio::time::Instant::from_std(at));
            }
            Action::ReleaseLease(token) => {
                if let Some(failover) = &self.failover {
                    failover.driver.release(token);
                }
            }
            Action::RunTakeover(grant) => self.run_takeover(grant),
            Action::RunHandoff { to } => self.run_handoff(to),
            Action::RunRotation(request) => self.run_rotation(Some(request)),
            Action::ResumeRotation => self.run_rotation(None),
        }
    }

    /// The EC2 client from the credentials; then an interrupted rotation
    /// may be resumed.
    fn open_eip(&mut self) {
        let Some(eip) = &self.eip else {
            return;
        };
        match eip.open(self.vault.as_deref()) {
            Ok(()) if eip.has_unfinished() => self.queue.push_back(Event::CredentialsAvailable),
            Ok(()) => {}
            Err(error) => {
                tracing::error!("{error:#}; elastic IP rotation is unavailable until this is fixed")
            }
        }
    }

    /// The vault is being dropped: so are the AWS credentials from it.
    fn close_eip(&mut self) {
        if let Some(eip) = &self.eip
            && eip.needs_vault()
        {
            eip.close();
        }
    }

    /// A rotation (`Some`) or the resumption of an interrupted one.
    fn run_rotation(&mut self, request: Option<crate::supervision::command::RotateRequest>) {
        use crate::supervision::machine::RotationOutcome;
        let Some(eip) = self.eip.clone() else {
            self.queue.push_back(Event::RotationFinished(match request {
                Some(_) => RotationOutcome::Failed("no [eip] is configured (docs/eip.md)".into()),
                None => RotationOutcome::Resumed(None),
            }));
            return;
        };
        self.start(
            Work::Job(Job::Rotation),
            Box::pin(async move {
                let outcome = match request {
                    Some(request) => match eip.rotate(&request.bastion, request.keep_old).await {
                        Ok(result) => RotationOutcome::Rotated(Box::new(result)),
                        Err(error) => RotationOutcome::Failed(format!("{error:#}")),
                    },
                    None => match eip.resume().await {
                        Ok(done) => RotationOutcome::Resumed(done),
                        Err(error) => RotationOutcome::Failed(format!("{error:#}")),
                    },
                };
                Done::Event(Event::RotationFinished(outcome))
            }),
        );
    }

    /// The takeover rule as a job (`failover::takeover`).
    fn run_takeover(&mut self, grant: Option<HandoffGrant>) {
        let (Some(failover), Some(kit), Some(validator)) = (
            &self.failover,
            self.restore_kit.clone(),
            self.validator.clone(),
        ) else {
            self.queue.push_back(Event::TakeoverFinished(Err(
                "no failover settings or no open session".into(),
            )));
            return;
        };
        let takeover = crate::failover::takeover::TakeoverKit {
            restore: kit,
            state_path: self.node.state.clone(),
            chain_rpc: failover.settings.chain_rpc.clone(),
            guard_blocks: failover.settings.chain_guard_blocks,
            validator_address: validator.address,
            poll: failover.settings.poll_interval,
        };
        let view = failover.driver.view().clone();
        let notifier = self.notifier.clone();
        self.start(
            Work::Job(Job::Takeover),
            Box::pin(async move {
                let last = RefCell::new(String::new());
                let note = |text: String| {
                    if *last.borrow() != text {
                        tracing::info!("{text}");
                        notifier.status(&text);
                        last.replace(text.clone());
                    }
                    crate::failover::view(&view).note = Some(text);
                };
                let result =
                    crate::failover::takeover::take_over(&takeover, grant.as_ref(), &note).await;
                crate::failover::view(&view).note = None;
                Done::Event(Event::TakeoverFinished(result))
            }),
        );
    }

    /// A planned handoff's final backup, record and release, as a job.
    fn run_handoff(&mut self, to: String) {
        let trigger = self
            .session
            .as_ref()
            .map(|session| session.backups.trigger());
        let (Some(failover), Some(trigger), Some(vault), Some(token)) = (
            &self.failover,
            trigger,
            self.vault.clone(),
            self.machine.lease_token(),
        ) else {
            self.queue.push_back(Event::HandoffFinished(Err(
                "this host holds no leadership or no open session".into(),
            )));
            return;
        };
        let driver = failover.driver.clone();
        let group = failover.keys.group.clone();
        let from = failover.settings.host_id.clone();
        let state_path = self.node.state.clone();
        let stores = self
            .restore_kit
            .as_ref()
            .map(RestoreKit::stores)
            .unwrap_or_default();
        self.start(
            Work::Job(Job::Handoff),
            Box::pin(async move {
                let result = async {
                    let backup = trigger
                        .backup_now("final backup before a handoff")
                        .await
                        .map_err(|error| format!("the final backup was not written: {error}"))?;
                    let watermark = match crate::sign_state::read_local(&state_path) {
                        crate::sign_state::LocalState::Present(watermark) => Some(watermark),
                        crate::sign_state::LocalState::Missing => None,
                        crate::sign_state::LocalState::Unreadable(reason) => {
                            return Err(format!("the final sign state is unreadable: {reason}"));
                        }
                    };
                    let record = crate::failover::record::HandoffRecord {
                        version: crate::failover::record::VERSION,
                        group,
                        from: from.clone(),
                        to: to.clone(),
                        from_token: token,
                        watermark,
                        sequence: backup.sequence,
                        at_ms: std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|elapsed| elapsed.as_millis() as u64)
                            .unwrap_or(0),
                    };
                    let signed = crate::failover::record::sign(&record, vault.signing_key());
                    driver.hand_off(signed.clone(), token).await?;
                    // etcd is what the target reads; the stores keep the
                    // record beside the final backup for the operators.
                    let name = format!("handoff-{token:020}-{from}-to-{to}.json");
                    let report = crate::backup::publish(
                        &stores,
                        &name,
                        &signed,
                        Duration::from_secs(5),
                    )
                    .await;
                    for (store, error) in &report.failed {
                        tracing::warn!(store, %error, "the handoff record was not written to this store (etcd has it)");
                    }
                    Ok(HandoffDone {
                        to,
                        watermark,
                        stores: backup.stores,
                        token,
                    })
                }
                .await;
                Done::Event(Event::HandoffFinished(result))
            }),
        );
    }

    fn start(&mut self, work: Work, future: JobFuture) {
        if self.jobs.insert(work, future).is_some() {
            tracing::debug!(?work, "replaced a job of the same kind");
        }
    }

    fn answer(&mut self, id: CommandId, result: CommandResult) {
        let Some(pending) = self.pending.remove(&id) else {
            tracing::error!(?id, "an answer for a command that is not pending");
            return;
        };
        if let Err(error) = &result {
            tracing::info!(method = pending.method, %error, "control command refused");
        }
        if pending.reply.send(result).is_err() {
            tracing::warn!(
                method = pending.method,
                "the caller of a control command went away before its answer"
            );
        }
    }

    fn try_unlock(&mut self, by: Option<CommandId>) {
        // Who accepts unreachable stores for the start this unlock leads
        // to: the unlocking operator, or `run --accept-unreachable-stores`
        // for the unattended unlock (once).
        self.accept_unreachable_by = match by {
            Some(id) => self
                .pending
                .get_mut(&id)
                .and_then(|pending| pending.accept_unreachable_by.take()),
            None => self.accept_unreachable_at_start.take(),
        };
        let passphrase = match by {
            Some(id) => self
                .pending
                .get_mut(&id)
                .and_then(|pending| pending.passphrase.take()),
            None => self.unattended.take(),
        };
        let Some(settings) = self.config.vault.clone() else {
            self.queue
                .push_back(Event::UnlockFinished(UnlockOutcome::Failed(
                    "no [vault] is configured".into(),
                )));
            return;
        };
        let Some(passphrase) = passphrase else {
            self.queue
                .push_back(Event::UnlockFinished(UnlockOutcome::Failed(
                    "no passphrase was given".into(),
                )));
            return;
        };
        self.start(
            Work::Job(Job::Unlock),
            Box::pin(async move {
                // scrypt takes a second by design: off the executor's thread.
                let attempt = tokio::task::spawn_blocking(move || {
                    crate::vault::unlock(&settings.dir, &passphrase)
                })
                .await;
                match attempt {
                    Ok(result) => Done::Unlocked(result),
                    Err(join) => Done::Event(Event::UnlockFinished(UnlockOutcome::Failed(
                        format!("the unlock task failed: {join}"),
                    ))),
                }
            }),
        );
    }

    fn check_start(&mut self) {
        let Some(vault) = self.vault.clone() else {
            self.queue
                .push_back(Event::StartChecked(StartVerdict::Failed(
                    "the vault is not unlocked".into(),
                )));
            return;
        };
        let config = Arc::clone(&self.config);
        let state_path = self.node.state.clone();
        let tunnels = self.tunnels.clone();
        let notifier = self.notifier.clone();
        let accept_unreachable_by = self.accept_unreachable_by.take();
        self.start(
            Work::Job(Job::StartCheck),
            Box::pin(async move {
                let prepared = async {
                    let settings = config.vault.as_ref().ok_or_else(|| {
                        StartCheckError::Failed("no [vault] is configured".to_owned())
                    })?;
                    let validator = ValidatorIdentity::of(
                        &vault,
                        &config.daemon_home,
                        settings.backup.chain_id.as_deref(),
                    )
                    .map_err(|error| StartCheckError::Failed(format!("{error:#}")))?;
                    let mut stores = open_dir_stores(&settings.backup).map_err(|error| {
                        StartCheckError::Failed(format!("cannot open a backup directory: {error}"))
                    })?;
                    if let Some(tunnels) = &tunnels {
                        notifier.status("waiting for the bastions that hold backups");
                        tunnels.wait_for_backup_bastions().await;
                        stores.extend(tunnels.backup_stores(&config.rpc.name));
                    }
                    notifier.status("checking the sign state against backups");
                    let rule = StartRule {
                        state_path,
                        vault_dir: settings.dir.clone(),
                        quorum: settings.backup.start_quorum,
                        quorum_wait: settings.backup.start_quorum_wait,
                        accept_unreachable_by,
                    };
                    let waiting = |status: &str| notifier.status(status);
                    let check = start_check(&rule, &vault, &validator, &stores, &waiting).await?;
                    Ok(Prepared {
                        validator,
                        stores,
                        decision: check.decision,
                        next_sequence: check.next_sequence,
                    })
                }
                .await;
                Done::StartChecked(prepared)
            }),
        );
    }

    /// Keys into tmpfs, the restore kit and the backup worker.
    fn open_session(&mut self) {
        let event = match self.try_open_session() {
            Ok(()) => Event::SessionOpened,
            Err(error) => {
                tracing::error!("{error:#}");
                Event::SessionFailed(format!("{error:#}"))
            }
        };
        self.queue.push_back(event);
    }

    fn try_open_session(&mut self) -> anyhow::Result<()> {
        use anyhow::Context;
        let settings = self.config.vault.as_ref().context("no [vault]")?;
        let vault = self.vault.clone().context("the vault is not unlocked")?;
        let prepared = self.prepared.take().context("the start rule did not run")?;
        // Swap may have been turned on since the supervisor started.
        crate::vault::check_swap(settings.swap, crate::vault::swap_status())?;
        let tmpfs = crate::vault::materialize(
            &vault,
            &settings.tmpfs_dir,
            &self.config.daemon_home,
            self.config
                .daemon_account
                .as_ref()
                .map(|account| account.gid),
        )?;
        tracing::info!(dir = %tmpfs.dir().display(), "validator keys decrypted into tmpfs; config.toml points at them");
        let state_path = self.node.state.clone();
        let backups = match BackupWorker::spawn(
            Arc::clone(&vault),
            prepared.validator.clone(),
            prepared.stores.clone(),
            &settings.backup,
            FollowFrom {
                state_path: state_path.clone(),
                next_sequence: prepared.next_sequence,
                poll_interval: self.config.poll_interval,
                last_backup: self.last_backup.clone(),
                record_path: crate::backup::high_water::path_in(&settings.dir),
            },
        ) {
            Ok(backups) => backups,
            Err(error) => {
                // Nothing may stay in tmpfs without a session to wipe it.
                if let Err(wipe) = tmpfs.wipe() {
                    tracing::error!(%wipe, "could not wipe the validator keys from tmpfs");
                }
                return Err(error.into());
            }
        };
        self.validator = Some(prepared.validator.clone());
        // Kept after a lock: the metrics go on counting its blocks.
        board(&self.board).validator_address = Some(prepared.validator.address.clone());
        self.restore_kit = Some(RestoreKit::new(
            vault,
            prepared.validator,
            prepared.stores,
            state_path,
            crate::backup::high_water::path_in(&settings.dir),
        ));
        board(&self.board).backup_trigger = Some(backups.trigger());
        self.session = Some(Session { tmpfs, backups });
        Ok(())
    }

    /// Leftover children, final backup, keys wiped; the vault and the
    /// restore kit are dropped.
    fn close_session(&mut self) {
        board(&self.board).backup_trigger = None;
        self.restore_kit = None;
        self.validator = None;
        self.prepared = None;
        let session = self.session.take();
        let vault = self.vault.take();
        self.close_eip();
        self.start(
            Work::CloseSession,
            Box::pin(async move {
                kill_remaining_children(Duration::from_secs(2)).await;
                if let Some(session) = session {
                    // The daemon is stopped: its final state goes into a
                    // backup (to the bastions too: the tunnels are still
                    // up), then the keys leave tmpfs.
                    let _ = session.backups.finish().await;
                    match session.tmpfs.wipe() {
                        Ok(files) => {
                            tracing::info!(
                                files = files.len(),
                                "wiped the validator keys from tmpfs"
                            )
                        }
                        Err(error) => {
                            tracing::error!(%error, "could not wipe the validator keys from tmpfs")
                        }
                    }
                }
                drop(vault);
                Done::Event(Event::SessionClosed)
            }),
        );
    }

    fn spawn_daemon(&mut self) {
        let event = match self.try_spawn() {
            Ok(pid) => Event::DaemonSpawned { pid },
            Err(error) => {
                tracing::error!("{error:#}");
                Event::SpawnFailed(format!("{error:#}"))
            }
        };
        self.queue.push_back(event);
    }

    fn try_spawn(&mut self) -> anyhow::Result<u32> {
        let version = self.layout.current_version()?;
        let binary = self.layout.check_binary(&version)?;
        if let Some(account) = &self.config.daemon_account {
            crate::node::account::open_binary_path_for_node(&binary, self.layout.root(), account)?;
        }
        let daemon = Daemon::spawn(
            &self.reaper,
            &binary,
            &self.daemon_args,
            self.config.output,
            match self.output {
                OutputTarget::Inherit => OutputTarget::Inherit,
                OutputTarget::Discard => OutputTarget::Discard,
            },
            self.upgrade_lines_sender.clone(),
        )?;
        let pid = u32::try_from(daemon.pid()).unwrap_or_default();
        tracing::info!(binary = %binary.display(), pid, %version, "daemon started");
        {
            let mut shared = board(&self.board);
            shared.version = Some(version.to_string());
            shared.output = Some(Arc::clone(&daemon.stats));
        }
        self.daemon = Some(daemon);
        // A plan seen before this start is yielded again if still there.
        self.watcher.reset();
        Ok(pid)
    }

    fn run_upgrade(&mut self, plan: UpgradePlan) {
        let record = match &self.record {
            Some(record) => Rc::clone(record),
            None => {
                // Never without BeginUpgrade; a record of its own keeps the
                // upgrade accounted for all the same.
                let record = Rc::new(RefCell::new(RecordBuilder::new(
                    &plan,
                    DetectionSource::UpgradeInfoFile,
                    Instant::now(),
                )));
                self.record = Some(Rc::clone(&record));
                record
            }
        };
        let config = Arc::clone(&self.config);
        let layout = self.layout.clone();
        let reaper = self.reaper.clone();
        let notifier = self.notifier.clone();
        let progress = self.progress_sender.clone();
        self.start(
            Work::Job(Job::Upgrade),
            Box::pin(async move {
                let report = |step| {
                    let _ = progress.send(step);
                };
                let context = UpgradeContext {
                    config: &config,
                    layout: &layout,
                    reaper: &reaper,
                    notifier: &notifier,
                    progress: &report,
                };
                let result = prepare_and_switch(&context, &plan, &record).await;
                Done::Event(Event::UpgradeFinished(result.map(|_| ()).map_err(
                    |failure| UpgradeFailure {
                        message: failure.to_string(),
                        waits_for_binary: failure.waits_for_binary(),
                    },
                )))
            }),
        );
    }

    fn run_restore(&mut self, choice: RestoreChoice) {
        let Some(kit) = self.restore_kit.clone() else {
            self.queue.push_back(Event::RestoreFinished(Err(
                super::command::CommandError::WrongState(
                    "the vault is locked: no key to verify backups with".into(),
                ),
            )));
            return;
        };
        self.start(
            Work::Job(Job::Restore),
            Box::pin(async move {
                let result = kit.restore(&choice).await;
                Done::Event(Event::RestoreFinished(result.map_err(Into::into)))
            }),
        );
    }

    /// Close the tunnels and the control socket.
    fn stop_background(&mut self) {
        // Every job is over by now; the start check's handle on the tunnels
        // with it.
        self.jobs.retain(|work, _| *work == Work::Background);
        let tunnels = self.tunnels.take();
        let background = self.background.clone();
        let control_server = self.control_server.take();
        self.start(
            Work::Background,
            Box::pin(async move {
                if let Some(tunnels) = tunnels {
                    match Rc::try_unwrap(tunnels) {
                        Ok(tunnels) => tunnels.stop().await,
                        Err(_) => tracing::warn!(
                            "the tunnels are still in use; closing them without waiting"
                        ),
                    }
                }
                background.cancel();
                if let Some(server) = control_server {
                    let _ = server.await;
                }
                Done::Event(Event::BackgroundStopped)
            }),
        );
    }
}

/// The record builder, out of its shared cell (the upgrade job that shared
/// it is over).
fn take_record(record: Rc<RefCell<RecordBuilder>>) -> RecordBuilder {
    match Rc::try_unwrap(record) {
        Ok(cell) => cell.into_inner(),
        // A cancelled job may not have been dropped yet; take a copy of
        // what it recorded.
        Err(shared) => shared.borrow().clone(),
    }
}

async fn auto_rotation(
    requests: &mut Option<mpsc::Receiver<(String, String)>>,
) -> Option<(String, String)> {
    match requests {
        Some(requests) => requests.recv().await,
        None => std::future::pending().await,
    }
}

async fn lease_event(failover: &mut Option<FailoverRuntime>) -> Option<LeaseEvent> {
    match failover {
        Some(failover) => failover.events.recv().await,
        None => std::future::pending().await,
    }
}

async fn watchdog_tick(watchdog: &mut Option<tokio::time::Interval>) {
    match watchdog {
        Some(tick) => {
            tick.tick().await;
        }
        None => std::future::pending::<()>().await,
    }
}

async fn wait_daemon(daemon: &mut Option<Daemon>) -> ExitKind {
    match daemon {
        Some(daemon) => daemon.wait().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
