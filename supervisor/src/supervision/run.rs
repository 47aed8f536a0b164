//! `palisade-supervisor run`: the supervision loop.
//!
//! The loop owns the daemon and reacts to five event sources: the daemon
//! exiting, an upgrade line on its output, a change of
//! `data/upgrade-info.json`, a shutdown signal, and the systemd watchdog
//! tick. Decisions are delegated to pure code ([`crate::node::restart_policy`],
//! [`crate::upgrade::plan`]); the effects to [`crate::node::process`] and
//! [`crate::upgrade::perform`].

use std::ffi::OsString;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use palisade_wire::upgrade_record::{DetectionSource, UpgradeOutcome, UpgradeStep};
use tokio::sync::mpsc;

use anyhow::Context as _;
use secrecy::SecretString;

use crate::backup::{BackupWorker, LastBackup, ValidatorIdentity};
use crate::config::{Config, SwapPolicy, VaultSettings};
use crate::control::{ControlCommand, NodeState, Reply, SharedBoard, board};
use crate::node::process::{Daemon, OutputTarget, Reaper, StopOutcome, kill_remaining_children};
use crate::node::restart_policy::{AfterExit, RestartPolicy};
use crate::node::rpc::{NodeRpc, plan_is_due};
use crate::passphrase::{PassphraseError, PassphraseSource};
use crate::rpc::ControlSocket;
use crate::sign_state::StartDecision;
use crate::tunnel::TunnelMesh;
use crate::upgrade::layout::{Layout, Version};
use crate::upgrade::perform::{
    RecordBuilder, UpgradeContext, UpgradeFailure, active_plan_name, append_record, plan_version,
    prepare_and_switch,
};
use crate::upgrade::plan::UpgradePlan;
use crate::upgrade::watch::{FileState, UpgradeFileWatcher, WatchEvent, read_plan_file};
use crate::vault::{MemoryLock, SwapStatus, TmpfsKeys, VaultError};
use palisade_daemon::systemd::Notifier;

/// How `run` ended; `main` maps it to an exit code (see `docs/`).
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
    /// The local sign state is behind a backup (or missing/unreadable with
    /// backups present): the daemon was not started.
    RefusedToStart,
    /// An operator locked the vault (`vault.lock`): the node is stopped,
    /// the keys wiped, and the supervisor waits for an unlock. Internal to
    /// [`run`], which never returns it.
    LockedByOperator,
    /// An operator confirmed `host.shutdown`: the node was stopped, the
    /// final backup taken, the keys wiped and `[host] shutdown-command`
    /// run (whether or not it succeeded: exit 0, so that the service
    /// manager does not bring the validator back).
    HostShutdown,
}

/// The answer to `backup.restore` while the vault is locked.
const RESTORE_WHILE_LOCKED: &str = "the vault is locked: the supervisor holds no key to decrypt \
     and verify backups. Unlock (vault.unlock; the start rule refuses to start on a state \
     behind a backup), stop the node (node.stop) and restore then; or stop the supervisor and \
     run `palisade-supervisor restore-state`";

/// Exit code for [`RunOutcome::CrashLoop`]; the systemd unit lists it in
/// `RestartPreventExitStatus=` so systemd does not restart into the loop.
pub const EXIT_CRASH_LOOP: i32 = 3;

/// Inputs of the supervision loop.
pub struct RunOptions {
    pub config: Config,
    pub daemon_args: Vec<OsString>,
    pub output: OutputTarget,
    /// The unattended-unlock passphrase, if a source was configured (read
    /// before the runtime started; see [`crate::passphrase::unattended`]).
    pub passphrase: Option<(PassphraseSource, Result<SecretString, PassphraseError>)>,
}

/// The control RPC's side of the loop: built by [`run`] before the
/// supervision starts, handed to the RPC server.
pub fn control_channel() -> (mpsc::Sender<ControlCommand>, mpsc::Receiver<ControlCommand>) {
    mpsc::channel(8)
}

/// What the supervisor holds while the vault is unlocked.
struct VaultSession {
    tmpfs: TmpfsKeys,
    backups: BackupWorker,
}

/// Shutdown requests: SIGTERM/SIGINT, delivered as the signal to forward.
pub type ShutdownRequests = mpsc::Receiver<Signal>;

/// Listen for SIGTERM and SIGINT.
pub fn shutdown_signals() -> std::io::Result<ShutdownRequests> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let (sender, receiver) = mpsc::channel(8);
    tokio::spawn(async move {
        loop {
            let received = tokio::select! {
                Some(()) = terminate.recv() => Signal::SIGTERM,
                Some(()) = interrupt.recv() => Signal::SIGINT,
                else => break,
            };
            if sender.send(received).await.is_err() {
                break;
            }
        }
    });
    Ok(receiver)
}

enum Wake {
    Exited(crate::node::restart_policy::ExitKind),
    Upgrade(UpgradePlan, DetectionSource),
    BadPlan(String),
    Shutdown(Signal),
    Watchdog,
    /// Time to re-check whether a scheduled plan is due.
    CheckScheduled,
    /// A command from the control RPC.
    Control(ControlCommand),
}

struct Supervisor {
    config: Config,
    layout: Layout,
    reaper: Reaper,
    notifier: Notifier,
    daemon_args: Vec<OsString>,
    output: OutputTarget,
    upgrade_lines_sender: mpsc::UnboundedSender<UpgradePlan>,
    upgrade_lines: mpsc::UnboundedReceiver<UpgradePlan>,
    watcher: UpgradeFileWatcher,
    shutdown: ShutdownRequests,
    watchdog: Option<tokio::time::Interval>,
    ready_sent: bool,
    /// The record of an upgrade whose new binary is about to start.
    pending_record: Option<RecordBuilder>,
    /// A plan from the file whose height the node has not reached yet.
    scheduled: Option<UpgradePlan>,
    scheduled_check: tokio::time::Interval,
    node_rpc: NodeRpc,
    /// The node's height when last asked.
    last_node_height: Option<u64>,
    /// The bastion tunnels, if any are configured.
    tunnels: Option<TunnelMesh>,
    /// Commands from the control RPC (unlock, node start/stop/restart).
    control: mpsc::Receiver<ControlCommand>,
    /// What the control RPC reads: node state, vault, last backup.
    board: SharedBoard,
    /// The answer to a `vault.lock`, sent once the keys are wiped.
    lock_reply: Option<Reply>,
    /// What `backup.restore` needs while the vault is unlocked; `None`
    /// while locked (it holds a handle on the unlocked vault).
    restore_kit: Option<crate::backup::RestoreKit>,
    /// Where the backup worker publishes the last backup it wrote.
    last_backup: tokio::sync::watch::Sender<Option<LastBackup>>,
}

/// Run until shutdown, a clean daemon exit, a crash loop, or an upgrade
/// without restart.
pub async fn run(options: RunOptions, shutdown: ShutdownRequests) -> anyhow::Result<RunOutcome> {
    let config = options.config;
    // Keys left in tmpfs by a run that was killed go first, before anything
    // else can start.
    if let Some(settings) = &config.vault {
        let wiped = crate::vault::wipe_leftovers(&settings.tmpfs_dir).with_context(|| {
            format!(
                "cannot wipe leftover keys in {}",
                settings.tmpfs_dir.display()
            )
        })?;
        if !wiped.is_empty() {
            tracing::warn!(dir = %settings.tmpfs_dir.display(), files = wiped.len(), "wiped leftover keys from a previous run that did not stop cleanly");
        }
    }
    let layout = Layout::new(&config.daemon_home, &config.daemon_name);
    let reaper = Reaper::start()?;
    let notifier = Notifier::from_env();
    let watchdog = notifier.watchdog_interval().map(|interval| {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick
    });
    let (upgrade_lines_sender, upgrade_lines) = mpsc::unbounded_channel();
    let watcher = UpgradeFileWatcher::new(config.upgrade_info_path(), config.poll_interval);
    remove_interrupted_work(&config, &layout);
    // The control socket and the tunnels come up before the vault is
    // opened: they are how an operator reaches a locked validator.
    let background = tokio_util::sync::CancellationToken::new();
    let control = ControlSocket::bind(&config.rpc).context("cannot open the control socket")?;
    tracing::info!(socket = %control.path().display(), name = %config.rpc.name, "control socket listening");
    let tunnels = match &config.tunnels {
        Some(settings) => {
            match TunnelMesh::start(settings, &config.rpc.socket, &background).await {
                Ok(mesh) => Some(mesh),
                Err(error) => {
                    background.cancel();
                    return Err(
                        anyhow::Error::new(error).context("cannot start the bastion tunnels")
                    );
                }
            }
        }
        None => None,
    };
    let (commands, control_inbox) = control_channel();
    let board = crate::control::new_board(config.vault.is_some());
    let (last_backup, last_backup_seen) = tokio::sync::watch::channel(None);
    let dispatcher = std::sync::Arc::new(
        crate::control::SupervisorControl::new(
            &config,
            commands,
            board.clone(),
            tunnels
                .as_ref()
                .map(TunnelMesh::observers)
                .unwrap_or_default(),
            last_backup_seen,
        )
        .with_remote_backup_stores(
            tunnels
                .as_ref()
                .map(|mesh| mesh.backup_stores(&config.rpc.name))
                .unwrap_or_default(),
        ),
    );
    let control =
        tokio::spawn(control.serve_rpc(dispatcher, config.operators.clone(), background.clone()));
    let mut supervisor = Supervisor {
        layout,
        reaper,
        notifier,
        daemon_args: options.daemon_args,
        output: options.output,
        upgrade_lines_sender,
        upgrade_lines,
        watcher,
        shutdown,
        watchdog,
        ready_sent: false,
        pending_record: None,
        scheduled: None,
        scheduled_check: tokio::time::interval(config.poll_interval),
        node_rpc: NodeRpc::new(&config.daemon_home),
        last_node_height: None,
        tunnels,
        control: control_inbox,
        board,
        lock_reply: None,
        restore_kit: None,
        last_backup,
        config,
    };
    if supervisor.config.vault.is_some() {
        backup_on_sigusr1(supervisor.board.clone())?;
    }
    let mut passphrase = options.passphrase;
    loop {
        let session = match supervisor.config.vault.clone() {
            Some(settings) => match supervisor.open_vault(&settings, passphrase.take()).await {
                Ok(Ok(session)) => Some(session),
                Err(error) => {
                    supervisor.stop_background(background, control).await;
                    return Err(error);
                }
                Ok(Err(outcome)) => {
                    supervisor.notifier.stopping("stopping");
                    if outcome == RunOutcome::HostShutdown {
                        supervisor.run_host_shutdown_command().await;
                    }
                    supervisor.stop_background(background, control).await;
                    return Ok(outcome);
                }
            },
            None => None,
        };
        let outcome = supervisor.supervise().await;
        // The node is stopped: no more restores, and the kit's handle on
        // the vault goes before the keys are wiped.
        supervisor.restore_kit = None;
        let relock = matches!(outcome, Ok(RunOutcome::LockedByOperator));
        if !relock {
            supervisor.notifier.stopping("stopping");
        }
        kill_remaining_children(Duration::from_secs(2)).await;
        if let Some(session) = session {
            // The daemon is stopped: its final state goes into a backup (to
            // the bastions too, so the tunnels are still up), then the keys
            // leave tmpfs.
            {
                let mut board = crate::control::board(&supervisor.board);
                board.backup_trigger = None;
                board.vault_locked = Some(true);
            }
            let _ = session.backups.finish().await;
            match session.tmpfs.wipe() {
                Ok(files) => {
                    tracing::info!(files = files.len(), "wiped the validator keys from tmpfs")
                }
                Err(error) => {
                    tracing::error!(%error, "could not wipe the validator keys from tmpfs")
                }
            }
        }
        if relock {
            tracing::info!("vault locked by an operator; waiting for an unlock");
            if let Some(reply) = supervisor.lock_reply.take() {
                let _ = reply.send(Ok(serde_json::json!({ "locked": true })));
            }
            continue;
        }
        if matches!(outcome, Ok(RunOutcome::HostShutdown)) {
            supervisor.run_host_shutdown_command().await;
        }
        supervisor.stop_background(background, control).await;
        return outcome;
    }
}

/// `kill -USR1` (or `systemctl kill -s USR1`) asks for a backup now (while
/// the vault is unlocked).
fn backup_on_sigusr1(shared: SharedBoard) -> std::io::Result<()> {
    let mut signals =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())?;
    tokio::spawn(async move {
        while signals.recv().await.is_some() {
            let trigger = board(&shared).backup_trigger.clone();
            match trigger {
                Some(trigger) => {
                    tracing::info!("SIGUSR1: backing up the sign state now");
                    if let Err(error) = trigger.backup_now("on demand (SIGUSR1)").await {
                        tracing::warn!(%error, "SIGUSR1: no backup was written");
                    }
                }
                None => tracing::warn!("SIGUSR1: no backup while the vault is locked"),
            }
        }
    });
    Ok(())
}

/// With the node halted (no daemon runs), a confirmed `host.shutdown` is
/// answered and accepted; any other command is handed back.
///
/// Everywhere, a `host.shutdown` or `backup.restore` whose caller stopped
/// waiting (the loop was busy past the control RPC's timeout, and the
/// operator was told to try again) is not carried out later: the
/// `!reply.is_closed()` guards hand it to the refusal, which goes nowhere.
fn accept_host_shutdown(command: ControlCommand) -> Result<(), ControlCommand> {
    match command {
        ControlCommand::HostShutdown { operator, reply } if !reply.is_closed() => {
            tracing::warn!(%operator, "host shutdown confirmed over the control RPC; the node is halted");
            let _ = reply.send(Ok(serde_json::json!({ "node": "halted" })));
            Ok(())
        }
        other => Err(other),
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

/// A crash during a download or a data backup leaves a `.staging-*`
/// directory in `upgrades/` or a `data-backup-*.partial` directory: never
/// used, removed before anything else so they cannot accumulate.
fn remove_interrupted_work(config: &Config, layout: &Layout) {
    let mut places = vec![
        (layout.upgrades_dir(), ".staging-", ""),
        // An `upgrade.cancel` renames the upgrade aside, then deletes it.
        (layout.upgrades_dir(), ".cancelled-", ""),
    ];
    if let crate::config::DataBackupPolicy::Before { backup_root } = &config.data_backup {
        places.push((backup_root.clone(), "data-backup-", ".partial"));
    }
    for (dir, prefix, suffix) in places {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(prefix) && name.ends_with(suffix) {
                let path = entry.path();
                match std::fs::remove_dir_all(&path) {
                    Ok(()) => {
                        tracing::warn!(path = %path.display(), "removed the leftover of an interrupted download or backup")
                    }
                    Err(error) => {
                        tracing::error!(path = %path.display(), %error, "cannot remove the leftover of an interrupted download or backup")
                    }
                }
            }
        }
    }
}

impl Supervisor {
    /// Close the tunnels and the control socket.
    async fn stop_background(
        &mut self,
        background: tokio_util::sync::CancellationToken,
        control: tokio::task::JoinHandle<()>,
    ) {
        self.set_node(NodeState::Stopping, None);
        if let Some(tunnels) = self.tunnels.take() {
            tunnels.stop().await;
        }
        background.cancel();
        let _ = control.await;
    }

    /// Swap and memory checks, unlock, the start rule, keys into tmpfs,
    /// backups. `Err(outcome)` when the daemon must not start (locked until
    /// shutdown, or refused by the start rule).
    async fn open_vault(
        &mut self,
        settings: &VaultSettings,
        passphrase: Option<(PassphraseSource, Result<SecretString, PassphraseError>)>,
    ) -> anyhow::Result<Result<VaultSession, RunOutcome>> {
        if let SwapStatus::Enabled { devices } = crate::vault::swap_status() {
            match settings.swap {
                SwapPolicy::Refuse => anyhow::bail!(
                    "swap is enabled ({}): decrypted keys could be written to disk. Disable swap, or set vault.swap = \"warn\" to accept the risk",
                    devices.join(", ")
                ),
                SwapPolicy::Warn => tracing::warn!(
                    ?devices,
                    "swap is enabled: decrypted keys could be written to disk (vault.swap = \"warn\")"
                ),
            }
        }
        match crate::vault::lock_memory() {
            MemoryLock::Locked => tracing::info!("process memory locked (mlockall)"),
            other => tracing::warn!(
                ?other,
                "process memory not locked; secrets could be swapped if swap is enabled"
            ),
        }
        let unlocked = match passphrase {
            None => {
                tracing::info!(
                    "vault is locked: no passphrase source (run --passphrase-fd, the systemd credential palisade-passphrase, or vault.passphrase-file); the node starts after an unlock over the control RPC"
                );
                None
            }
            Some((source, Err(error))) => {
                tracing::error!(%source, "{error}");
                tracing::info!(
                    "vault is locked; the node starts after an unlock over the control RPC"
                );
                None
            }
            Some((source, Ok(passphrase))) => {
                match crate::vault::unlock(&settings.dir, &passphrase) {
                    Ok(vault) => {
                        tracing::info!(%source, "vault unlocked");
                        Some(vault)
                    }
                    Err(VaultError::WrongPassphrase { .. }) => {
                        tracing::error!(%source, "wrong passphrase; nothing was changed");
                        tracing::info!(
                            "vault is locked; the node starts after an unlock over the control RPC"
                        );
                        None
                    }
                    Err(error) => return Err(error.into()),
                }
            }
        };
        // The answer to an unlock over RPC waits until the node can start
        // (or the start rule refuses), so the operator learns the outcome.
        let (vault, mut unlock_reply) = match unlocked {
            Some(vault) => (vault, None),
            None => match self.wait_for_unlock(settings).await {
                Ok((vault, reply)) => (vault, Some(reply)),
                Err(outcome) => return Ok(Err(outcome)),
            },
        };
        let answer =
            |reply: &mut Option<Reply>,
             result: Result<serde_json::Value, palisade_wire::rpc::RpcError>| {
                if let Some(reply) = reply.take() {
                    let _ = reply.send(result);
                }
            };
        let validator = ValidatorIdentity::of(
            &vault,
            &self.config.daemon_home,
            settings.backup.chain_id.as_deref(),
        )?;
        let mut stores = crate::backup::open_dir_stores(&settings.backup)?;
        if let Some(tunnels) = &self.tunnels {
            self.notifier
                .status("waiting for the bastions that hold backups");
            tunnels.wait_for_backup_bastions().await;
            stores.extend(tunnels.backup_stores(&self.config.rpc.name));
        }
        self.notifier
            .status("checking the sign state against backups");
        let check = crate::backup::start_check(
            &crate::node::files::state_file(&self.config.daemon_home),
            &vault,
            &validator,
            &stores,
        )
        .await;
        match &check.decision {
            StartDecision::Refuse { reason, .. } => {
                tracing::error!("refusing to start: {reason}");
                self.notifier
                    .status(&format!("refusing to start: {reason}"));
                answer(
                    &mut unlock_reply,
                    Err(palisade_wire::rpc::RpcError::new(
                        palisade_wire::rpc::code::WRONG_STATE,
                        format!("unlocked, but refusing to start: {reason}"),
                    )),
                );
                return Ok(Err(RunOutcome::RefusedToStart));
            }
            StartDecision::Start { watermark } => match watermark {
                Some(known) => {
                    tracing::info!(watermark = %known.watermark, source = %known.source, "sign state is at the highest known watermark")
                }
                None => tracing::info!("no sign state and no backup yet: a new validator"),
            },
        }
        let tmpfs =
            crate::vault::materialize(&vault, &settings.tmpfs_dir, &self.config.daemon_home)?;
        tracing::info!(dir = %tmpfs.dir().display(), "validator keys decrypted into tmpfs; config.toml points at them");
        let vault = std::sync::Arc::new(vault);
        let restore_kit = crate::backup::RestoreKit::new(
            vault.clone(),
            validator.clone(),
            stores.clone(),
            crate::node::files::state_file(&self.config.daemon_home),
        );
        let backups = BackupWorker::spawn(
            vault,
            validator,
            stores,
            &settings.backup,
            crate::backup::FollowFrom {
                state_path: crate::node::files::state_file(&self.config.daemon_home),
                next_sequence: check.next_sequence,
                poll_interval: self.config.poll_interval,
                last_backup: self.last_backup.clone(),
            },
        )?;
        self.restore_kit = Some(restore_kit);
        {
            let mut board = board(&self.board);
            board.vault_locked = Some(false);
            board.backup_trigger = Some(backups.trigger());
        }
        answer(
            &mut unlock_reply,
            Ok(serde_json::json!({ "locked": false, "node": "starting" })),
        );
        Ok(Ok(VaultSession { tmpfs, backups }))
    }

    /// Locked: the node does not start; wait for an unlock over the control
    /// RPC (or a shutdown). Wrong passphrases are answered and change
    /// nothing; the passphrase is dropped (zeroized) after each attempt.
    async fn wait_for_unlock(
        &mut self,
        settings: &VaultSettings,
    ) -> Result<(crate::vault::UnlockedVault, Reply), RunOutcome> {
        self.set_node(NodeState::Locked, None);
        self.notifier
            .ready("locked: waiting for the vault passphrase");
        self.ready_sent = true;
        loop {
            let command = tokio::select! {
                Some(_) = self.shutdown.recv() => return Err(RunOutcome::Shutdown),
                () = watchdog_tick(&mut self.watchdog) => {
                    self.notifier.watchdog();
                    continue;
                }
                Some(command) = crate::control::recv_live(&mut self.control) => command,
            };
            let command = match command {
                ControlCommand::HostShutdown { operator, reply } if !reply.is_closed() => {
                    tracing::warn!(%operator, "host shutdown confirmed over the control RPC; the vault is locked, no node runs");
                    let _ = reply.send(Ok(serde_json::json!({ "node": "locked" })));
                    return Err(RunOutcome::HostShutdown);
                }
                ControlCommand::Restore { reply, .. } => {
                    let _ = reply.send(Err(palisade_wire::rpc::RpcError::new(
                        palisade_wire::rpc::code::WRONG_STATE,
                        RESTORE_WHILE_LOCKED,
                    )));
                    continue;
                }
                other => other,
            };
            let ControlCommand::Unlock { passphrase, reply } = command else {
                command.refuse(
                    palisade_wire::rpc::code::WRONG_STATE,
                    "the vault is locked: unlock it first (vault.unlock)",
                );
                continue;
            };
            // scrypt takes a second by design: off the loop's thread.
            let owned = settings.clone();
            let attempt =
                tokio::task::spawn_blocking(move || crate::vault::unlock(&owned.dir, &passphrase))
                    .await;
            match attempt {
                Ok(Ok(vault)) => {
                    tracing::info!(source = "control RPC", "vault unlocked");
                    return Ok((vault, reply));
                }
                Ok(Err(VaultError::WrongPassphrase { .. })) => {
                    tracing::warn!(
                        source = "control RPC",
                        "wrong passphrase; nothing was changed"
                    );
                    let _ = reply.send(Err(palisade_wire::rpc::RpcError::new(
                        palisade_wire::rpc::code::UNAUTHENTICATED,
                        "wrong passphrase; nothing was changed",
                    )));
                }
                Ok(Err(error)) => {
                    tracing::error!(%error, "unlock over the control RPC failed");
                    let _ = reply.send(Err(palisade_wire::rpc::RpcError::new(
                        palisade_wire::rpc::code::INTERNAL,
                        format!("unlock failed: {error}"),
                    )));
                }
                Err(join_error) => {
                    tracing::error!(%join_error, "unlock task failed");
                    let _ = reply.send(Err(palisade_wire::rpc::RpcError::new(
                        palisade_wire::rpc::code::INTERNAL,
                        "unlock failed",
                    )));
                }
            }
        }
    }

    /// Record the node's state for the control RPC.
    fn set_node(&self, state: NodeState, pid: Option<u32>) {
        let mut board = board(&self.board);
        board.node = state;
        board.pid = pid;
    }

    /// Operator stop: wait, with the node stopped, for a start, a restart
    /// or a shutdown. `None`: start the node again.
    async fn stopped_until_start(&mut self) -> Option<RunOutcome> {
        self.set_node(NodeState::Stopped, None);
        self.notifier
            .status("node stopped by an operator (node.start to start it)");
        loop {
            tokio::select! {
                Some(_) = self.shutdown.recv() => return Some(RunOutcome::Shutdown),
                () = watchdog_tick(&mut self.watchdog) => self.notifier.watchdog(),
                Some(command) = crate::control::recv_live(&mut self.control) => match command {
                    ControlCommand::NodeStart { reply } | ControlCommand::NodeRestart { reply } => {
                        tracing::info!("node start requested over the control RPC");
                        let _ = reply.send(Ok(serde_json::json!({ "node": "starting" })));
                        return None;
                    }
                    ControlCommand::NodeStop { reply } => {
                        let _ = reply.send(Ok(serde_json::json!({ "node": "stopped" })));
                    }
                    ControlCommand::Lock { reply } if self.config.vault.is_some() => {
                        self.lock_reply = Some(reply);
                        return Some(RunOutcome::LockedByOperator);
                    }
                    ControlCommand::Restore { request, reply } if !reply.is_closed() => {
                        match self.restore_while_stopped(&request).await {
                            Ok(answer) => {
                                let _ = reply.send(answer);
                            }
                            Err(outcome) => {
                                let _ = reply.send(Err(palisade_wire::rpc::RpcError::new(
                                    palisade_wire::rpc::code::WRONG_STATE,
                                    "the supervisor is stopping; nothing was restored",
                                )));
                                return Some(outcome);
                            }
                        }
                    }
                    ControlCommand::HostShutdown { operator, reply } if !reply.is_closed() => {
                        tracing::warn!(%operator, "host shutdown confirmed over the control RPC; the node is already stopped");
                        let _ = reply.send(Ok(serde_json::json!({ "node": "stopped" })));
                        return Some(RunOutcome::HostShutdown);
                    }
                    other => other.refuse(palisade_wire::rpc::code::WRONG_STATE, "the vault is already unlocked"),
                },
            }
        }
    }

    /// `backup.restore` with the node stopped: runs the restore (stores,
    /// verification, atomic write) while the loop waits, so the node
    /// cannot start half-way; the watchdog is fed meanwhile. `Err`: a
    /// shutdown signal came first (nothing was written: the write is the
    /// restore's last, synchronous step).
    async fn restore_while_stopped(
        &mut self,
        request: &crate::backup::RestoreChoice,
    ) -> Result<Result<serde_json::Value, palisade_wire::rpc::RpcError>, RunOutcome> {
        let Some(kit) = self.restore_kit.clone() else {
            return Ok(Err(palisade_wire::rpc::RpcError::new(
                palisade_wire::rpc::code::WRONG_STATE,
                "no [vault]: there are no signed backups to restore from",
            )));
        };
        tracing::info!(
            ?request,
            "sign state restore requested over the control RPC"
        );
        let work = kit.restore(request);
        tokio::pin!(work);
        loop {
            tokio::select! {
                result = &mut work => {
                    return Ok(result
                        .map(|restored| crate::control::restored_json(&restored))
                        .map_err(|error| {
                            tracing::warn!(%error, "sign state restore refused");
                            error.into()
                        }));
                }
                Some(signal) = self.shutdown.recv() => {
                    tracing::info!(?signal, "shutdown requested during a restore; nothing was restored");
                    return Err(RunOutcome::Shutdown);
                }
                () = watchdog_tick(&mut self.watchdog) => self.notifier.watchdog(),
            }
        }
    }

    /// Run `[host] shutdown-command` after a confirmed `host.shutdown`;
    /// the node is stopped and the keys are wiped by now.
    async fn run_host_shutdown_command(&mut self) {
        // The answer to the confirming call is on its way (the loop
        // replied before stopping anything): let the connection's task
        // write it before the command can take the host down. On this
        // current-thread runtime one yield runs it; the stop, the final
        // backup and the wipe usually gave it time already.
        tokio::task::yield_now().await;
        self.notifier
            .stopping("host shutdown: running the shutdown command");
        if let Err(error) = crate::control::host_shutdown::run_shutdown_command(
            &self.reaper,
            &self.config.host.shutdown_command,
        )
        .await
        {
            tracing::error!(
                "{error}; the node stays stopped and the supervisor exits anyway (shut the host down by hand)"
            );
        }
    }

    async fn supervise(&mut self) -> anyhow::Result<RunOutcome> {
        let mut policy = RestartPolicy::new(self.config.restart);
        // A plan left in data/ by a node that halted while we were down.
        let mut pending = self.pending_plan_at_start()?;
        loop {
            if let Some((plan, source)) = pending.take() {
                match self.upgrade(None, plan, source).await? {
                    Some(outcome) => return Ok(outcome),
                    None => policy = RestartPolicy::new(self.config.restart),
                }
            }
            let version = self.layout.current_version()?;
            let binary = self.layout.check_binary(&version)?;
            let spawn_started = Instant::now();
            let mut daemon = Daemon::spawn(
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
            let status = format!(
                "running {} ({version}), pid {}",
                self.config.daemon_name,
                daemon.pid()
            );
            tracing::info!(binary = %binary.display(), pid = daemon.pid(), %version, "daemon started");
            self.set_node(NodeState::Running, u32::try_from(daemon.pid()).ok());
            board(&self.board).version = Some(version.to_string());
            if let Some(mut record) = self.pending_record.take() {
                record.step(
                    UpgradeStep::StartNew,
                    spawn_started,
                    format!("{} pid {}", binary.display(), daemon.pid()),
                );
                let record = record.completed();
                // Record first: whoever reads the log line finds the record.
                append_record(&self.layout, &record);
                tracing::info!(upgrade = %record.name, switch_ms = ?record.switch_ms, "upgrade completed; new binary running");
            }
            if self.ready_sent {
                self.notifier.status(&status);
            } else {
                self.notifier.ready(&status);
                self.ready_sent = true;
            }
            self.watcher.reset();

            // Inner loop: until the daemon is gone or an upgrade is needed.
            loop {
                match self.next_wake(&mut daemon).await {
                    Wake::Watchdog => self.notifier.watchdog(),
                    Wake::Control(command) => match command {
                        ControlCommand::NodeStop { reply } => {
                            tracing::info!("node stop requested over the control RPC");
                            self.graceful_stop(&mut daemon, Signal::SIGINT).await;
                            let _ = reply.send(Ok(serde_json::json!({ "node": "stopped" })));
                            match self.stopped_until_start().await {
                                Some(outcome) => return Ok(outcome),
                                None => break,
                            }
                        }
                        ControlCommand::NodeRestart { reply } => {
                            tracing::info!("node restart requested over the control RPC");
                            self.graceful_stop(&mut daemon, Signal::SIGINT).await;
                            let _ = reply.send(Ok(serde_json::json!({ "node": "restarting" })));
                            break;
                        }
                        ControlCommand::NodeStart { reply } => {
                            let _ = reply.send(Err(palisade_wire::rpc::RpcError::new(
                                palisade_wire::rpc::code::WRONG_STATE,
                                format!("the node is already running (pid {})", daemon.pid()),
                            )));
                        }
                        ControlCommand::Lock { reply } if self.config.vault.is_some() => {
                            tracing::info!(
                                "vault lock requested over the control RPC: stopping the node"
                            );
                            self.graceful_stop(&mut daemon, Signal::SIGINT).await;
                            self.lock_reply = Some(reply);
                            return Ok(RunOutcome::LockedByOperator);
                        }
                        ControlCommand::Restore { reply, .. } => {
                            let _ = reply.send(Err(palisade_wire::rpc::RpcError::new(
                                palisade_wire::rpc::code::WRONG_STATE,
                                format!(
                                    "the node is running (pid {}): stop the node first (node.stop); nothing was changed",
                                    daemon.pid()
                                ),
                            )));
                        }
                        ControlCommand::HostShutdown { operator, reply } if !reply.is_closed() => {
                            tracing::warn!(%operator, "host shutdown confirmed over the control RPC: stopping the node");
                            // Answer first: the operator learns it started
                            // before the connection goes away with us.
                            let _ = reply.send(Ok(serde_json::json!({ "node": "stopping" })));
                            self.graceful_stop(&mut daemon, Signal::SIGINT).await;
                            return Ok(RunOutcome::HostShutdown);
                        }
                        other => other.refuse(
                            palisade_wire::rpc::code::WRONG_STATE,
                            "the vault is already unlocked",
                        ),
                    },
                    Wake::BadPlan(reason) => {
                        tracing::error!(%reason, path = %self.config.upgrade_info_path().display(), "ignoring invalid upgrade plan; the daemon keeps running");
                        self.notifier
                            .status(&format!("invalid upgrade-info.json: {reason}"));
                    }
                    Wake::CheckScheduled => {
                        let Some(plan) = self.scheduled.take() else {
                            continue;
                        };
                        if self.plan_is_due(&plan).await {
                            match self
                                .upgrade(Some(&mut daemon), plan, DetectionSource::UpgradeInfoFile)
                                .await?
                            {
                                Some(outcome) => return Ok(outcome),
                                None => {
                                    policy = RestartPolicy::new(self.config.restart);
                                    break;
                                }
                            }
                        }
                        self.scheduled = Some(plan);
                    }
                    Wake::Upgrade(plan, source) => {
                        if self.is_new_plan(&plan)? {
                            // A plan in the file with a height the running
                            // node has not reached (a manual upgrade) waits.
                            if source == DetectionSource::UpgradeInfoFile
                                && !self.plan_is_due(&plan).await
                            {
                                tracing::info!(upgrade = %plan.name, height = ?plan.height, "upgrade scheduled; waiting for the node to reach the height");
                                board(&self.board).scheduled_upgrade =
                                    Some(format!("{} at height {:?}", plan.name, plan.height));
                                self.notifier.status(&format!(
                                    "upgrade {} scheduled at height {:?}",
                                    plan.name, plan.height
                                ));
                                self.scheduled = Some(plan);
                                continue;
                            }
                            self.scheduled = None;
                            match self.upgrade(Some(&mut daemon), plan, source).await? {
                                Some(outcome) => return Ok(outcome),
                                None => {
                                    policy = RestartPolicy::new(self.config.restart);
                                    break;
                                }
                            }
                        }
                    }
                    Wake::Shutdown(signal) => {
                        self.graceful_stop(&mut daemon, signal).await;
                        return Ok(RunOutcome::Shutdown);
                    }
                    Wake::Exited(exit) => {
                        self.set_node(NodeState::Restarting, None);
                        daemon.release_output();
                        let dropped = daemon.stats.dropped();
                        if dropped > 0 {
                            tracing::warn!(
                                dropped,
                                "daemon output lines were dropped because the output consumer was slower than the daemon"
                            );
                        }
                        // An exit right after printing an upgrade line, or
                        // with a fresh plan on disk, is an upgrade halt.
                        if let Some((plan, source)) = self.plan_after_exit()? {
                            tracing::info!(%exit, upgrade = %plan.name, "daemon stopped for an upgrade");
                            pending = Some((plan, source));
                            break;
                        }
                        match policy.after_exit(
                            exit,
                            daemon.uptime(),
                            Instant::now(),
                            rand::random::<f64>(),
                        ) {
                            AfterExit::CleanExit => {
                                tracing::info!("daemon exited with status 0; not restarting");
                                return Ok(RunOutcome::DaemonExitedCleanly);
                            }
                            AfterExit::CrashLoop { crashes, window } => {
                                let message = format!(
                                    "{} crashed {crashes} times within {}; last: {exit}. Not restarting: fix the cause and restart palisade-supervisor. No state was changed.",
                                    self.config.daemon_name,
                                    humantime::format_duration(window)
                                );
                                tracing::error!("{message}");
                                self.notifier.status(&format!("crash loop: {message}"));
                                return Ok(RunOutcome::CrashLoop { crashes, window });
                            }
                            AfterExit::Restart {
                                delay,
                                crash_number,
                            } => {
                                tracing::warn!(%exit, crash_number, delay_ms = delay.as_millis() as u64, "daemon crashed; restarting after backoff");
                                self.notifier.status(&format!(
                                    "daemon crashed ({exit}); restart #{crash_number} in {}",
                                    humantime::format_duration(Duration::from_millis(
                                        delay.as_millis() as u64
                                    ))
                                ));
                                if let Some(signal) = self.sleep_unless_shutdown(delay).await {
                                    tracing::info!(
                                        ?signal,
                                        "shutdown requested during restart backoff"
                                    );
                                    return Ok(RunOutcome::Shutdown);
                                }
                                break;
                            }
                        }
                    }
                }
            }
        }
    }

    async fn next_wake(&mut self, daemon: &mut Daemon) -> Wake {
        let watchdog = watchdog_tick(&mut self.watchdog);
        tokio::select! {
            exit = daemon.wait() => Wake::Exited(exit),
            Some(plan) = self.upgrade_lines.recv() => Wake::Upgrade(plan, DetectionSource::OutputLine),
            event = self.watcher.next() => match event {
                WatchEvent::Plan(plan) => Wake::Upgrade(plan, DetectionSource::UpgradeInfoFile),
                WatchEvent::Invalid(reason) => Wake::BadPlan(reason),
                WatchEvent::StuckIncomplete => Wake::BadPlan("the file has been incomplete for more than 5s".into()),
            },
            Some(signal) = self.shutdown.recv() => Wake::Shutdown(signal),
            () = watchdog => Wake::Watchdog,
            _ = self.scheduled_check.tick(), if self.scheduled.is_some() => Wake::CheckScheduled,
            Some(command) = crate::control::recv_live(&mut self.control) => Wake::Control(command),
        }
    }

    /// Due unless the node answers its RPC with a height below the plan's.
    /// An unreachable node is treated as due: the SDK halts (or exits) at
    /// the plan height, so silence at that point means "halted", and an
    /// exited daemon is handled by the exit path anyway.
    async fn plan_is_due(&mut self, plan: &UpgradePlan) -> bool {
        let Some(height) = plan.height else {
            return true;
        };
        match self.node_rpc.latest_height().await {
            Some(node_height) => {
                self.last_node_height = Some(node_height);
                plan_is_due(height, node_height)
            }
            None => true,
        }
    }

    /// A plan is new unless it maps to the version already current, or it
    /// is the plan that activated the current version.
    fn is_new_plan(&self, plan: &UpgradePlan) -> anyhow::Result<bool> {
        let current = self.layout.current_version()?;
        let target = match plan_version(&self.config, plan) {
            Ok(version) => version,
            // A plan whose name cannot be used is still "new": the upgrade
            // path reports it properly and halts.
            Err(_) => return Ok(true),
        };
        if target == current {
            return Ok(false);
        }
        if let Some(active) = active_plan_name(&self.layout, &current)
            && plan_version(
                &self.config,
                &UpgradePlan {
                    name: active,
                    height: None,
                    info: String::new(),
                },
            )
            .ok()
                == Some(target)
        {
            return Ok(false);
        }
        Ok(true)
    }

    fn pending_plan_at_start(&self) -> anyhow::Result<Option<(UpgradePlan, DetectionSource)>> {
        match read_plan_file(&self.config.upgrade_info_path()) {
            FileState::Plan(plan) if self.is_new_plan(&plan)? => {
                tracing::info!(upgrade = %plan.name, height = ?plan.height, "found a pending upgrade plan in upgrade-info.json at start");
                Ok(Some((plan, DetectionSource::UpgradeInfoFile)))
            }
            FileState::Invalid(reason) => {
                tracing::error!(%reason, "upgrade-info.json is invalid; ignoring it");
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    fn plan_after_exit(&mut self) -> anyhow::Result<Option<(UpgradePlan, DetectionSource)>> {
        while let Ok(plan) = self.upgrade_lines.try_recv() {
            if self.is_new_plan(&plan)? {
                return Ok(Some((plan, DetectionSource::OutputLine)));
            }
        }
        match read_plan_file(&self.config.upgrade_info_path()) {
            FileState::Plan(plan) if self.is_new_plan(&plan)? => {
                // A scheduled plan the node was last seen short of is not
                // why it exited: that is a crash, and the old binary runs
                // again until the height is reached.
                if let (Some(scheduled), Some(node_height), Some(height)) =
                    (&self.scheduled, self.last_node_height, plan.height)
                    && scheduled.name == plan.name
                    && !plan_is_due(height, node_height)
                {
                    return Ok(None);
                }
                Ok(Some((plan, DetectionSource::UpgradeInfoFile)))
            }
            _ => Ok(None),
        }
    }

    async fn graceful_stop(&mut self, daemon: &mut Daemon, signal: Signal) {
        let grace = self.config.shutdown_grace;
        tracing::info!(
            ?signal,
            grace_ms = grace.as_millis() as u64,
            "stopping the daemon"
        );
        self.notifier.stopping(&format!(
            "stopping {} (grace {})",
            self.config.daemon_name,
            humantime::format_duration(grace)
        ));
        enum Ended {
            Stopped(StopOutcome),
            SecondSignal(Signal),
        }
        let ended = tokio::select! {
            outcome = daemon.stop(signal, grace) => Ended::Stopped(outcome),
            Some(second) = self.shutdown.recv() => Ended::SecondSignal(second),
        };
        let outcome = match ended {
            Ended::Stopped(outcome) => outcome,
            Ended::SecondSignal(second) => {
                tracing::warn!(?second, "second shutdown signal: killing the daemon now");
                daemon.kill_now().await;
                StopOutcome::Killed
            }
        };
        tracing::info!(?outcome, "daemon stopped");
        daemon.release_output();
    }

    async fn sleep_unless_shutdown(&mut self, delay: Duration) -> Option<Signal> {
        tokio::select! {
            () = tokio::time::sleep(delay) => None,
            Some(signal) = self.shutdown.recv() => Some(signal),
        }
    }

    /// Stop the old daemon (if running), perform the upgrade, and either
    /// return to the loop (`None`: start the new binary) or finish.
    /// A failed upgrade keeps the node halted on the old version and waits
    /// here — for the binary to appear, or for a shutdown.
    async fn upgrade(
        &mut self,
        daemon: Option<&mut Daemon>,
        plan: UpgradePlan,
        source: DetectionSource,
    ) -> anyhow::Result<Option<RunOutcome>> {
        let detected = Instant::now();
        let mut record = RecordBuilder::new(&plan, source, detected);
        tracing::info!(upgrade = %plan.name, height = ?plan.height, ?source, "upgrade detected");
        self.set_node(NodeState::Upgrading, None);
        {
            let mut board = board(&self.board);
            board.scheduled_upgrade = None;
            board.upgrading = plan_version(&self.config, &plan).ok();
        }
        self.notifier.status(&format!(
            "upgrade {} detected at height {:?}",
            plan.name, plan.height
        ));
        if let Some(daemon) = daemon {
            let started = Instant::now();
            let outcome = daemon
                .stop(Signal::SIGINT, self.config.shutdown_grace)
                .await;
            daemon.release_output();
            record.step(UpgradeStep::StopOld, started, format!("{outcome:?}"));
        }
        loop {
            // The steps can take minutes (download, copy backup): keep the
            // watchdog fed from this loop, and honour a shutdown. Dropping
            // the steps stops them at an await point; the switch itself is
            // one synchronous rename, so nothing is left half done (a
            // partial download or backup is removed at the next start).
            let result = {
                let context = UpgradeContext {
                    config: &self.config,
                    layout: &self.layout,
                    reaper: &self.reaper,
                    notifier: &self.notifier,
                };
                let work = prepare_and_switch(&context, &plan, &mut record);
                tokio::pin!(work);
                loop {
                    tokio::select! {
                        result = &mut work => break Ok(result),
                        Some(signal) = self.shutdown.recv() => break Err(signal),
                        () = watchdog_tick(&mut self.watchdog) => self.notifier.watchdog(),
                    }
                }
            };
            let result = match result {
                Ok(result) => result,
                Err(signal) => {
                    tracing::warn!(?signal, upgrade = %plan.name, "shutdown requested during the upgrade; stopping before the switch, the plan stays pending");
                    let record =
                        record.finish(UpgradeOutcome::Failed("interrupted by shutdown".into()));
                    append_record(&self.layout, &record);
                    return Ok(Some(RunOutcome::Shutdown));
                }
            };
            match result {
                Ok(version) => {
                    if !self.config.restart_after_upgrade {
                        let record = record.finish(UpgradeOutcome::SwitchedNotRestarted);
                        append_record(&self.layout, &record);
                        tracing::info!(%version, "upgrade switched; DAEMON_RESTART_AFTER_UPGRADE=false, exiting so the service manager restarts us");
                        return Ok(Some(RunOutcome::UpgradedWithoutRestart));
                    }
                    if !self.config.restart_delay.is_zero() {
                        record.exclude_from_switch(self.config.restart_delay);
                        if self
                            .sleep_unless_shutdown(self.config.restart_delay)
                            .await
                            .is_some()
                        {
                            return Ok(Some(RunOutcome::Shutdown));
                        }
                    }
                    // StartNew and the switch time are recorded once the
                    // new binary has been spawned by the main loop.
                    self.pending_record = Some(record);
                    return Ok(None);
                }
                Err(failure) => {
                    let message = failure.to_string();
                    let halted = format!("halted: upgrade {} failed: {message}", plan.name);
                    if !failure.waits_for_binary() {
                        // Record first: whoever reads the log line finds it.
                        let record = record.finish(UpgradeOutcome::Failed(message.clone()));
                        append_record(&self.layout, &record);
                        tracing::error!(upgrade = %plan.name, "{message}");
                        self.notifier.status(&halted);
                        return self.halted_until_shutdown().await.map(Some);
                    }
                    tracing::error!(upgrade = %plan.name, "{message}");
                    self.notifier.status(&halted);
                    let waited = Instant::now();
                    if let Some(outcome) = self.wait_for_binary(&plan, &failure).await? {
                        let record = record.finish(UpgradeOutcome::Failed(message));
                        append_record(&self.layout, &record);
                        return Ok(Some(outcome));
                    }
                    record.exclude_from_switch(waited.elapsed());
                    tracing::info!(upgrade = %plan.name, "upgrade binary appeared; retrying the upgrade");
                    // In progress again: `upgrade.cancel` must not take the
                    // binary away under the retry.
                    self.set_node(NodeState::Upgrading, None);
                }
            }
        }
    }

    async fn halted_until_shutdown(&mut self) -> anyhow::Result<RunOutcome> {
        tracing::error!(
            "the node stays halted; restart palisade-supervisor after fixing the cause"
        );
        self.set_node(NodeState::Halted, None);
        loop {
            tokio::select! {
                Some(_) = self.shutdown.recv() => return Ok(RunOutcome::Shutdown),
                () = watchdog_tick(&mut self.watchdog) => self.notifier.watchdog(),
                Some(command) = crate::control::recv_live(&mut self.control) => match accept_host_shutdown(command) {
                    Ok(()) => return Ok(RunOutcome::HostShutdown),
                    Err(command) => command.refuse(
                        palisade_wire::rpc::code::WRONG_STATE,
                        "the node is halted after a failed upgrade; see the supervisor log",
                    ),
                },
            }
        }
    }

    /// Poll for `upgrades/<name>/bin/<daemon>` to become usable.
    async fn wait_for_binary(
        &mut self,
        plan: &UpgradePlan,
        failure: &UpgradeFailure,
    ) -> anyhow::Result<Option<RunOutcome>> {
        let version = match plan_version(&self.config, plan) {
            Ok(version) => version,
            Err(_) => return self.halted_until_shutdown().await.map(Some),
        };
        let binary = self.layout.binary(&version);
        tracing::warn!(binary = %binary.display(), "waiting for the upgrade binary to be installed ({failure})");
        let mut poll =
            tokio::time::interval(self.config.poll_interval.max(Duration::from_millis(100)));
        self.set_node(NodeState::Halted, None);
        loop {
            tokio::select! {
                Some(_) = self.shutdown.recv() => return Ok(Some(RunOutcome::Shutdown)),
                Some(command) = crate::control::recv_live(&mut self.control) => match accept_host_shutdown(command) {
                    Ok(()) => return Ok(Some(RunOutcome::HostShutdown)),
                    Err(command) => command.refuse(
                        palisade_wire::rpc::code::WRONG_STATE,
                        format!("the node is halted for upgrade {}: waiting for its binary", plan.name),
                    ),
                },
                _ = poll.tick() => {
                    if self.watchdog.is_some() {
                        self.notifier.watchdog();
                    }
                    if version != Version::Genesis && self.layout.check_binary(&version).is_ok() {
                        return Ok(None);
                    }
                }
            }
        }
    }
}
