//! `palisade-supervisor run`: set up what the lifecycle needs, then hand
//! over to the executor.
//!
//! Setup, in order: keys a killed run left in tmpfs are wiped first;
//! leftovers of interrupted downloads and data backups are removed; with a
//! vault, swap and memory locking are checked; the control socket is bound
//! and the tunnels started (they are how an operator reaches a locked
//! validator), and the RPC server serves the control module. Everything
//! after that is the machine's.

use std::ffi::OsString;

use anyhow::Context as _;
use nix::sys::signal::Signal;
use secrecy::SecretString;
use tokio::sync::mpsc;

use super::board::{SharedBoard, board, new_board};
use super::command::command_channel;
use super::executor::{Executor, Setup};
use super::machine::{Machine, MachineSettings, RunOutcome, VaultAtStart};
use crate::config::{Config, SwapPolicy};
use crate::node::files::NodePaths;
use crate::node::process::{OutputTarget, Reaper};
use crate::passphrase::{PassphraseError, PassphraseSource};
use crate::rpc::ControlSocket;
use crate::tunnel::TunnelMesh;
use crate::upgrade::layout::Layout;
use crate::vault::MemoryLock;
use palisade_daemon::systemd::Notifier;

/// Exit code for [`RunOutcome::CrashLoop`]; the systemd unit lists it in
/// `RestartPreventExitStatus=` so systemd does not restart into the loop.
pub const EXIT_CRASH_LOOP: i32 = 3;

/// Inputs of the supervision.
pub struct RunOptions {
    pub config: Config,
    pub daemon_args: Vec<OsString>,
    pub output: OutputTarget,
    /// The unattended-unlock passphrase, if a source was configured (read
    /// before the runtime started; see [`crate::passphrase::unattended`]).
    pub passphrase: Option<(PassphraseSource, Result<SecretString, PassphraseError>)>,
    /// `run --accept-unreachable-stores`: the first start check may go
    /// ahead without the backup-store quorum (logged and recorded).
    pub accept_unreachable_stores: bool,
}

/// Shutdown requests: SIGTERM/SIGINT, delivered as the signal received.
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

/// Supervise until the machine exits: shutdown, a clean daemon exit, a
/// crash loop, a refused start, an upgrade without restart, a host
/// shutdown, or a failure it reports as [`RunOutcome::Failed`]. `Err` only
/// when setup fails (nothing was started).
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
        check_memory(settings.swap)?;
    }
    // The node's own files, as its config.toml names them: a config.toml
    // that cannot be read stops the start here, before anything runs.
    let node = NodePaths::read(&config.daemon_home)
        .context("cannot find the node's files from its config.toml")?;
    // gaiad peers with the bastions' sentries only, through the tunnels:
    // written before anything starts, refused (nothing written) when the
    // mesh would leave it without a sentry.
    let changes = crate::node::peering::apply(&config)
        .context("cannot set the node's peering from the [[bastion]] sentries")?;
    for change in &changes {
        tracing::info!(
            key = %change.key,
            from = change.from.as_deref().unwrap_or("(unset)"),
            to = %change.to,
            "config.toml: peering set from the bastion mesh"
        );
    }
    let layout = Layout::new(&config.daemon_home, &config.daemon_name);
    remove_interrupted_work(&config, &layout);
    if let Some(account) = &config.daemon_account {
        crate::node::account::check_can_run_as(account)
            .context("cannot run the node under its own account ([daemon] user)")?;
        tracing::info!(
            user = %account.user,
            uid = account.uid,
            gid = account.gid,
            "the node and pre-upgrade scripts run under their own account"
        );
    }
    let reaper = Reaper::start(
        config
            .daemon_account
            .as_ref()
            .map(|account| (account.uid, account.gid)),
    )?;
    let notifier = Notifier::from_env();

    // The control socket and the tunnels come up before the vault is
    // opened: they are how an operator reaches a locked validator.
    let background = tokio_util::sync::CancellationToken::new();
    let mut socket = ControlSocket::bind(&config.rpc).context("cannot open the control socket")?;
    tracing::info!(socket = %socket.path().display(), name = %config.rpc.name, "control socket listening");
    // Each bastion's forward of the control socket ends on its own entry,
    // so that the RPC knows which bastion a connection came through.
    for bastion in config
        .tunnels
        .iter()
        .flat_map(|tunnels| &tunnels.bastions)
        .filter(|bastion| bastion.rpc_socket.is_some())
    {
        socket.bind_bastion_entry(&bastion.name).with_context(|| {
            format!(
                "cannot open bastion {}'s entry to the control socket",
                bastion.name
            )
        })?;
    }
    let tunnels = match &config.tunnels {
        Some(settings) => {
            let dial = crate::eip::saved_addresses(&config);
            match TunnelMesh::start(settings, &config.rpc.socket, &dial, &background).await {
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
    // Log shipping starts with the tunnels, before the vault opens: its
    // key is the tunnel's, so a locked validator's logs ship too.
    let logs = match (&config.logs, &tunnels) {
        (Some(settings), Some(mesh)) => {
            match crate::logs::LogShipping::start(
                settings,
                &config.rpc.name,
                mesh.log_dialers(),
                &background,
            ) {
                Ok(logs) => Some(logs),
                Err(error) => {
                    background.cancel();
                    return Err(anyhow::Error::new(error).context("cannot start log shipping"));
                }
            }
        }
        _ => None,
    };
    let failover = match &config.failover {
        Some(settings) => match start_failover(&config, settings) {
            Ok(runtime) => Some(runtime),
            Err(error) => {
                background.cancel();
                return Err(error);
            }
        },
        None => None,
    };
    let eip = crate::eip::EipService::new(
        &config,
        tunnels
            .as_ref()
            .map(TunnelMesh::observers)
            .unwrap_or_default(),
        socket.arrivals(),
    );
    let auto_rotations = eip.as_ref().and_then(|eip| {
        let settings = eip.auto()?;
        let (sender, receiver) = tokio::sync::mpsc::channel(1);
        crate::eip::trigger::spawn(eip.clone(), settings, sender, background.clone());
        tracing::info!(
            after = ?settings.after,
            cooldown = ?settings.cooldown,
            max_per_hour = settings.max_per_hour,
            "automatic elastic IP rotation on: a bastion down this long while another is up is moved to a new address"
        );
        Some(receiver)
    });
    let (commands, inbox) = command_channel();
    let board = new_board(config.vault.is_some());
    let (last_backup, last_backup_seen) = tokio::sync::watch::channel(None);
    if let Some(settings) = &config.metrics {
        let mut sources = metrics_sources(
            &config,
            &node,
            &board,
            tunnels.as_ref(),
            &socket,
            &last_backup_seen,
            &background,
        );
        sources.logs = logs
            .as_ref()
            .map(|logs| logs.stats() as std::sync::Arc<dyn crate::metrics::LogMetricsSource>);
        let registry = crate::metrics::SupervisorMetrics::new(sources).into_registry();
        match crate::metrics::start(settings, registry, background.clone()).await {
            Ok(address) => tracing::info!(%address, "metrics endpoint listening (/metrics)"),
            Err(error) => {
                background.cancel();
                return Err(error);
            }
        }
    }
    let mut control = crate::control::SupervisorControl::new(
        &config,
        &node,
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
    );
    if let Some(runtime) = &failover {
        control = control.with_failover(runtime.settings.clone(), runtime.driver.clone());
    }
    if let Some(eip) = &eip {
        control = control.with_eip(eip.clone());
    }
    let dispatcher = std::sync::Arc::new(control);
    let control_server =
        tokio::spawn(socket.serve_rpc(dispatcher, config.operators.clone(), background.clone()));
    if config.vault.is_some() {
        backup_on_sigusr1(board.clone())?;
    }

    let (vault_at_start, unattended) = match (&config.vault, options.passphrase) {
        (None, _) => (VaultAtStart::NoVault, None),
        (Some(_), None) => {
            tracing::info!(
                "vault is locked: no passphrase source (run --passphrase-fd, the systemd credential palisade-passphrase, or vault.passphrase-file); the node starts after an unlock over the control RPC"
            );
            (VaultAtStart::Locked, None)
        }
        (Some(_), Some((source, Err(error)))) => {
            tracing::error!(%source, "{error}");
            tracing::info!("vault is locked; the node starts after an unlock over the control RPC");
            (VaultAtStart::Locked, None)
        }
        (Some(_), Some((source, Ok(passphrase)))) => {
            tracing::info!(%source, "trying the unattended passphrase");
            (VaultAtStart::Unattended, Some(passphrase))
        }
    };

    let machine = Machine::new(MachineSettings {
        vault: config.vault.is_some(),
        daemon_name: config.daemon_name.clone(),
        restart: config.restart,
        shutdown_grace: config.shutdown_grace,
        restart_after_upgrade: config.restart_after_upgrade,
        restart_delay: config.restart_delay,
        poll_interval: config.poll_interval,
        // The SDK writes upgrade-info.json before it prints the line, and
        // the executor looks at the file when a line arrives: a real halt
        // is confirmed at once; this bounds the wait for a slow disk.
        line_confirm_wait: (config.poll_interval * 3).max(std::time::Duration::from_secs(1)),
        failover: config.failover.as_ref().map(|settings| {
            crate::supervision::machine::FailoverSettings {
                host_id: settings.host_id.clone(),
                peers: settings.peers.clone(),
            }
        }),
    });
    let executor = Executor::new(
        machine,
        Setup {
            config,
            node,
            daemon_args: options.daemon_args,
            output: options.output,
            reaper,
            notifier,
            shutdown,
            commands: inbox,
            board,
            last_backup,
            tunnels,
            background,
            control_server,
            unattended,
            accept_unreachable_at_start: options
                .accept_unreachable_stores
                .then(|| "the command line (run --accept-unreachable-stores)".to_owned()),
            vault_at_start,
            failover,
            eip,
            auto_rotations,
        },
    );
    let outcome = executor.run().await;
    if let Some(logs) = logs {
        // The last lines are sealed into the spool; they ship on the next
        // start (the tunnels are already down).
        tokio::task::spawn_blocking(move || logs.stop()).await.ok();
    }
    Ok(outcome)
}

/// What the metrics read, and the tasks that feed them: the chain poller
/// and the per-store backup record. The validator's address comes from the
/// node's key file when there is no vault (with one, the executor publishes
/// it at the first unlock).
fn metrics_sources(
    config: &Config,
    node: &NodePaths,
    board: &SharedBoard,
    tunnels: Option<&TunnelMesh>,
    socket: &ControlSocket,
    last_backup: &tokio::sync::watch::Receiver<Option<palisade_wire::rpc::results::LastBackup>>,
    background: &tokio_util::sync::CancellationToken,
) -> crate::metrics::Sources {
    use std::sync::Arc;
    if config.vault.is_none() {
        match crate::vault::validator_address_of_key_file(&node.priv_validator_key) {
            Ok(address) => super::board::board(board).validator_address = Some(address),
            Err(reason) => tracing::warn!(
                %reason,
                "metrics: the validator's address is unknown; signed and missed blocks are not counted"
            ),
        }
    }
    let chain = Arc::new(crate::metrics::chain::ChainStats::default());
    crate::metrics::chain::spawn(
        crate::metrics::chain::ChainWatch {
            daemon_home: config.daemon_home.clone(),
            board: board.clone(),
            stats: Arc::clone(&chain),
        },
        background.clone(),
    );
    let backups = Arc::new(crate::metrics::backups::BackupsByStore::default());
    crate::metrics::backups::follow(
        last_backup.clone(),
        Arc::clone(&backups),
        background.clone(),
    );
    crate::metrics::Sources {
        board: board.clone(),
        state_path: node.state.clone(),
        tunnels: tunnels.map(TunnelMesh::observers).unwrap_or_default(),
        backups,
        rpc_calls: socket.call_counts(),
        chain,
        logs: None,
    }
}

/// The leadership driver of `[failover]`, keyed by the vault's public
/// backup key (readable while the vault is locked).
fn start_failover(
    config: &Config,
    settings: &crate::config::FailoverSettings,
) -> anyhow::Result<super::executor::FailoverRuntime> {
    let vault = config
        .vault
        .as_ref()
        .context("[failover] needs a [vault]")?;
    let info = crate::vault::read_info(&vault.dir)
        .with_context(|| format!("[failover] needs the vault in {}", vault.dir.display()))?;
    let verifying_key = info
        .verifying_key()
        .map_err(|reason| anyhow::anyhow!("the vault's backup key: {reason}"))?;
    let keys = crate::failover::Keys {
        group: settings
            .key_prefix
            .clone()
            .unwrap_or_else(|| crate::failover::default_prefix(&info.backup_verifying_key)),
    };
    let view = crate::failover::SharedView::default();
    let (events_sender, events) = tokio::sync::mpsc::unbounded_channel();
    let driver = crate::failover::driver::spawn(
        settings.clone(),
        keys.clone(),
        verifying_key,
        view,
        events_sender,
    )
    .map_err(|reason| anyhow::anyhow!("cannot start the failover driver: {reason}"))?;
    tracing::info!(
        host = %settings.host_id,
        peers = ?settings.peers,
        group = %keys.group,
        takeover = settings.takeover.as_str(),
        "failover: this host starts as a standby; it signs only while it holds the leadership"
    );
    Ok(super::executor::FailoverRuntime {
        settings: settings.clone(),
        keys,
        driver,
        events,
    })
}

/// Swap could write decrypted keys to disk: refused unless the operator
/// accepted the risk; memory is locked where the system allows.
fn check_memory(swap: SwapPolicy) -> anyhow::Result<()> {
    crate::vault::check_swap(swap, crate::vault::swap_status())?;
    match crate::vault::lock_memory() {
        MemoryLock::Locked => tracing::info!("process memory locked (mlockall)"),
        other => tracing::warn!(
            ?other,
            "process memory not locked; secrets could be swapped if swap is enabled"
        ),
    }
    Ok(())
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
