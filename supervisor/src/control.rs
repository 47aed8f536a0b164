//! The supervisor's side of the control RPC: what each method does.
//!
//! The RPC server (`crate::rpc`) authenticates, authorizes and frames;
//! [`SupervisorControl::call`] answers. Read-only methods are answered here
//! from the [`Board`](crate::supervision::board::Board) (which the
//! supervision executor keeps current), the files on disk and the tunnels'
//! observers. Methods that change the node or the vault (unlock, lock, node
//! start/stop/restart, restore, a confirmed host shutdown) become a
//! [`Command`] for the executor, which answers at once when the phase
//! cannot honour it and otherwise once it has acted — so a command is never
//! half-applied behind the machine's back.
//!
//! Invariants: a secret (the unlock passphrase) arrives as a
//! [`SecretString`], travels beside its command to the executor and is
//! dropped (zeroized) after the attempt; it never reaches a log line or a
//! response. Failed unlocks are rate-limited: each failure doubles the
//! time before the next attempt is accepted (1 s up to 60 s), whichever
//! operator tries.

pub mod host_shutdown;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use std::time::{Duration, Instant, SystemTime};

use palisade_wire::rpc::{RpcError, code};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::backup::LastBackup;
use crate::node::rpc::NodeRpc;
use crate::sign_state::{LocalState, read_local};
use crate::supervision::board::{NodeState, SharedBoard, board};
use crate::supervision::command::{Answer, Command, CommandError, CommandSender};
use crate::tunnel::BastionObserver;
use crate::upgrade::watch::{FileState, read_plan_file};

/// First delay after a failed unlock; doubles per failure.
const UNLOCK_BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// Longest delay after failed unlocks.
const UNLOCK_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Answers the control RPC's methods for this supervisor.
pub struct SupervisorControl {
    commands: CommandSender,
    board: SharedBoard,
    validator: String,
    state_path: PathBuf,
    upgrade_info_path: PathBuf,
    node_rpc: NodeRpc,
    tunnels: Vec<BastionObserver>,
    started: Instant,
    started_at: SystemTime,
    /// (failures, not before) for unlocks.
    unlock_backoff: Mutex<(u32, Instant)>,
    /// `upgrade.list`, `upgrade.add`, `upgrade.cancel`.
    upgrades: crate::upgrade::stage::UpgradeStager,
    /// The stores `backup.list` reads.
    backups: crate::backup::BackupCatalog,
    /// `host.shutdown` confirmation tokens, and the command it runs.
    host_shutdown: crate::control::host_shutdown::Confirmations,
    shutdown_command: Vec<String>,
    /// The last backup the backup worker wrote.
    last_backup: tokio::sync::watch::Receiver<Option<LastBackup>>,
}

impl SupervisorControl {
    /// `commands` is the supervision executor's inbox.
    pub fn new(
        config: &crate::config::Config,
        commands: CommandSender,
        board: SharedBoard,
        tunnels: Vec<BastionObserver>,
        last_backup: tokio::sync::watch::Receiver<Option<LastBackup>>,
    ) -> SupervisorControl {
        let upgrades = crate::upgrade::stage::UpgradeStager::new(config, board.clone());
        SupervisorControl {
            commands,
            board,
            validator: config.rpc.name.clone(),
            state_path: crate::node::files::state_file(&config.daemon_home),
            upgrade_info_path: config.upgrade_info_path(),
            node_rpc: NodeRpc::new(&config.daemon_home),
            tunnels,
            started: Instant::now(),
            started_at: SystemTime::now(),
            unlock_backoff: Mutex::new((0, Instant::now())),
            upgrades,
            backups: crate::backup::BackupCatalog::new(config.vault.as_ref()),
            host_shutdown: crate::control::host_shutdown::Confirmations::default(),
            shutdown_command: config.host.shutdown_command.clone(),
            last_backup,
        }
    }

    /// `backup.list` also lists these stores (the bastions', through the
    /// tunnels).
    pub fn with_remote_backup_stores(
        mut self,
        stores: Vec<Arc<dyn crate::backup::BackupStore>>,
    ) -> SupervisorControl {
        self.backups = self.backups.with_remote(stores);
        self
    }

    /// Answer one call. `method` has already been authorized.
    pub async fn call(
        &self,
        method: &str,
        params: Value,
        secret: Option<SecretString>,
    ) -> Result<Value, RpcError> {
        match method {
            "status" => {
                no_params(&params)?;
                Ok(self.status().await)
            }
            "health" => {
                no_params(&params)?;
                Ok(self.health().await)
            }
            "tunnel.list" => {
                no_params(&params)?;
                Ok(json!({ "tunnels": self.tunnels_json() }))
            }
            "node.stop" => self.command(&params, Command::NodeStop).await,
            "node.start" => self.command(&params, Command::NodeStart).await,
            "node.restart" => self.command(&params, Command::NodeRestart).await,
            "logs.tail" => logs_tail(&params),
            "tunnel.reconnect" => self.reconnect(&params),
            "vault.unlock" => self.unlock(&params, secret).await,
            "vault.lock" => self.command(&params, Command::Lock).await,
            "backup.now" => {
                no_params(&params)?;
                self.backup_now().await
            }
            "upgrade.list" => self.upgrades.list(&params).await,
            "upgrade.add" => self.upgrades.add(&params).await,
            "upgrade.cancel" => self.upgrades.cancel(&params).await,
            "backup.list" => self.backup_list(&params).await,
            "backup.restore" => self.backup_restore(&params).await,
            other => Err(RpcError::new(
                code::METHOD_NOT_FOUND,
                format!("{other} is not available in this release yet (see docs/rpc.md)"),
            )),
        }
    }

    async fn command(&self, params: &Value, command: Command) -> Result<Value, RpcError> {
        no_params(params)?;
        self.send(command, None).await
    }

    /// Send `command` to the executor and put its answer in RPC terms.
    async fn send(
        &self,
        command: Command,
        passphrase: Option<SecretString>,
    ) -> Result<Value, RpcError> {
        match self.commands.send(command, passphrase).await {
            Ok(answer) => Ok(answer_json(answer)),
            Err(error) => Err(command_error(error)),
        }
    }

    async fn unlock(
        &self,
        params: &Value,
        secret: Option<SecretString>,
    ) -> Result<Value, RpcError> {
        no_params(params)?;
        let Some(passphrase) = secret else {
            return Err(RpcError::new(
                code::INVALID_PARAMS,
                "vault.unlock needs the passphrase on the line after the request",
            ));
        };
        {
            let backoff = self
                .unlock_backoff
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let now = Instant::now();
            if now < backoff.1 {
                let mut error = RpcError::new(
                    code::RATE_LIMITED,
                    "too many failed unlocks; wait before the next attempt",
                );
                error.data =
                    Some(json!({ "retry_after_ms": (backoff.1 - now).as_millis() as u64 }));
                return Err(error);
            }
        }
        let result = self.send(Command::Unlock, Some(passphrase)).await;
        let mut backoff = self
            .unlock_backoff
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match &result {
            Err(error) if error.code == code::UNAUTHENTICATED => {
                backoff.0 = backoff.0.saturating_add(1);
                let delay = UNLOCK_BACKOFF_INITIAL
                    .saturating_mul(1 << backoff.0.saturating_sub(1).min(6))
                    .min(UNLOCK_BACKOFF_MAX);
                backoff.1 = Instant::now() + delay;
            }
            Ok(_) => *backoff = (0, Instant::now()),
            Err(_) => {}
        }
        result
    }

    /// `tunnel.reconnect {"bastion": NAME}`.
    fn reconnect(&self, params: &Value) -> Result<Value, RpcError> {
        let name = params
            .as_object()
            .filter(|map| map.len() == 1)
            .and_then(|map| map.get("bastion"))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                let mut error =
                    RpcError::new(code::INVALID_PARAMS, "params must be {\"bastion\": NAME}");
                error.data = Some(json!({ "field": "bastion" }));
                error
            })?;
        let Some(observer) = self.tunnels.iter().find(|o| o.name() == name) else {
            let known: Vec<&str> = self.tunnels.iter().map(BastionObserver::name).collect();
            let mut error =
                RpcError::new(code::INVALID_PARAMS, format!("no bastion named {name:?}"));
            error.data = Some(json!({ "field": "bastion", "known": known }));
            return Err(error);
        };
        observer.request_reconnect();
        Ok(json!({ "bastion": name, "reconnecting": true }))
    }

    async fn backup_now(&self) -> Result<Value, RpcError> {
        let trigger = board(&self.board).backup_trigger.clone();
        let Some(trigger) = trigger else {
            return Err(RpcError::new(
                code::WRONG_STATE,
                "no backups while the vault is locked (or without [vault])",
            ));
        };
        match trigger.backup_now("requested over RPC").await {
            Ok(backup) => Ok(json!({ "backup": backup })),
            Err(error) => Err(RpcError::new(code::WRONG_STATE, error.to_string())),
        }
    }

    fn tunnels_json(&self) -> Vec<Value> {
        self.tunnels
            .iter()
            .map(|observer| {
                let state = observer.snapshot();
                json!({
                    "name": observer.name(),
                    "connected": state.connected_since.is_some(),
                    "connected_since": state.connected_since.map(unix_seconds),
                    "last_error": state.last_error,
                    "last_forward_error": state.last_forward_error,
                    "bytes_to_bastion": state.bytes_to_bastion,
                    "bytes_from_bastion": state.bytes_from_bastion,
                    "reconnects": state.reconnects,
                    "stopped": state.stopped,
                })
            })
            .collect()
    }

    async fn status(&self) -> Value {
        let (node, pid, version, vault_locked, last_backup, scheduled) = {
            let board = board(&self.board);
            (
                board.node,
                board.pid,
                board.version.clone(),
                board.vault_locked,
                self.last_backup.borrow().clone(),
                board.scheduled_upgrade.clone(),
            )
        };
        let height = if node == NodeState::Running {
            self.node_rpc.latest_height().await
        } else {
            None
        };
        let watermark = match read_local(&self.state_path) {
            LocalState::Present(watermark) => json!({
                "height": watermark.height,
                "round": watermark.round,
                "step": u8::from(watermark.step),
            }),
            LocalState::Missing => Value::Null,
            LocalState::Unreadable(error) => json!({ "error": error.to_string() }),
        };
        let pending_upgrade = match read_plan_file(&self.upgrade_info_path) {
            FileState::Plan(plan) => json!({ "name": plan.name, "height": plan.height }),
            _ => Value::Null,
        };
        json!({
            "validator": self.validator,
            "supervisor": {
                "version": env!("CARGO_PKG_VERSION"),
                "pid": std::process::id(),
                "started_at": unix_seconds(self.started_at),
                "uptime_s": self.started.elapsed().as_secs(),
            },
            "node": {
                "state": node,
                "pid": pid,
                "version": version,
                "height": height,
            },
            "vault": match vault_locked {
                Some(locked) => json!({ "enabled": true, "locked": locked }),
                None => json!({ "enabled": false }),
            },
            "watermark": watermark,
            "last_backup": last_backup,
            "tunnels": self.tunnels_json(),
            "upgrades": {
                "plan_on_disk": pending_upgrade,
                "scheduled": scheduled,
            },
        })
    }

    async fn health(&self) -> Value {
        let status = self.status().await;
        let mut problems = Vec::new();
        if status["node"]["state"] != "running" {
            problems.push(format!(
                "node is {}",
                status["node"]["state"].as_str().unwrap_or("?")
            ));
        } else if status["node"]["height"].is_null() {
            problems.push("node RPC does not answer".to_string());
        }
        if status["vault"]["locked"] == true {
            problems.push("vault is locked".to_string());
        }
        for tunnel in status["tunnels"].as_array().into_iter().flatten() {
            if tunnel["connected"] != true {
                problems.push(format!(
                    "tunnel to {} is down: {}",
                    tunnel["name"].as_str().unwrap_or("?"),
                    tunnel["last_error"].as_str().unwrap_or("not connected yet")
                ));
            }
        }
        json!({ "ok": problems.is_empty(), "problems": problems })
    }
}

/// `backup.list`, `backup.restore` and `host.shutdown` (the work is in
/// [`crate::backup_rpc`] and [`crate::control::host_shutdown`]).
impl SupervisorControl {
    async fn backup_list(&self, params: &Value) -> Result<Value, RpcError> {
        let limit = crate::backup::catalog::parse_list_params(params)?;
        let last = self.last_backup.borrow().clone();
        Ok(self.backups.list(limit, last.as_ref()).await)
    }

    async fn backup_restore(&self, params: &Value) -> Result<Value, RpcError> {
        let choice = parse_restore_params(params)?;
        self.send(Command::Restore(choice), None).await
    }

    /// `host.shutdown {}` issues a token for `operator`;
    /// `{"confirm": TOKEN}` spends it and has the loop shut down.
    pub async fn host_shutdown(&self, operator: &str, params: Value) -> Result<Value, RpcError> {
        use crate::control::host_shutdown::{ShutdownParams, check_runnable, parse_params};
        match parse_params(&params)? {
            ShutdownParams::Request => {
                check_runnable(&self.shutdown_command)?;
                let (token, valid_for) = self.host_shutdown.issue(operator);
                tracing::warn!(%operator, "host shutdown requested; waiting for its confirmation");
                Ok(json!({
                    "confirm": token,
                    "expires_in_s": valid_for.as_secs(),
                    "command": self.shutdown_command,
                }))
            }
            ShutdownParams::Confirm(token) => {
                let spent = self.host_shutdown.spend(operator, &token)?;
                if let Err(error) = check_runnable(&self.shutdown_command) {
                    self.host_shutdown.put_back(spent);
                    return Err(error);
                }
                let operator = operator.to_owned();
                match self.send(Command::HostShutdown { operator }, None).await {
                    Ok(node) => Ok(json!({
                        "shutting_down": true,
                        "node": node["node"],
                        "command": self.shutdown_command,
                    })),
                    Err(error) => {
                        self.host_shutdown.put_back(spent);
                        Err(error)
                    }
                }
            }
        }
    }
}

impl crate::rpc::Dispatcher for SupervisorControl {
    fn call<'a>(
        &'a self,
        caller: &'a crate::rpc::Caller,
        method: &'a str,
        params: Value,
        secret: Option<SecretString>,
    ) -> crate::backup::BoxFuture<'a, Result<Value, RpcError>> {
        // The caller is already authorized for `method` and logged by the
        // server; what happens does not depend on who asked, except for
        // `host.shutdown`, whose token is bound to the operator.
        if method == "host.shutdown" {
            return Box::pin(self.host_shutdown(&caller.operator, params));
        }
        Box::pin(SupervisorControl::call(self, method, params, secret))
    }
}

/// Most lines `logs.tail` returns.
const MAX_TAIL_LINES: u64 = 1000;

/// `logs.tail {"lines": N}` (default 100, at most 1000): the daemon's
/// recent output lines.
fn logs_tail(params: &Value) -> Result<Value, RpcError> {
    let invalid = |message: String| {
        let mut error = RpcError::new(code::INVALID_PARAMS, message);
        error.data = Some(json!({ "field": "lines" }));
        error
    };
    let lines = match params {
        Value::Null => 100,
        Value::Object(map) => {
            if let Some(unknown) = map.keys().find(|key| *key != "lines") {
                let mut error =
                    RpcError::new(code::INVALID_PARAMS, format!("unknown field `{unknown}`"));
                error.data = Some(json!({ "field": unknown }));
                return Err(error);
            }
            match map.get("lines") {
                None => 100,
                Some(value) => match value.as_u64() {
                    Some(lines) if (1..=MAX_TAIL_LINES).contains(&lines) => lines,
                    _ => {
                        return Err(invalid(format!(
                            "lines must be an integer from 1 to {MAX_TAIL_LINES}, not {value}"
                        )));
                    }
                },
            }
        }
        other => return Err(invalid(format!("params must be an object, not {other}"))),
    };
    Ok(json!({ "lines": crate::node::output::recent_lines(lines as usize) }))
}

/// An executor's answer in RPC terms.
fn answer_json(answer: Answer) -> Value {
    match answer {
        Answer::Node(node) => json!({ "node": node }),
        Answer::Unlocked => json!({ "locked": false, "node": NodeState::Starting }),
        Answer::Locked => json!({ "locked": true }),
        Answer::Restored(restored) => json!({
            "restored": {
                "store": restored.store,
                "file": restored.file,
                "sequence": restored.sequence,
                "watermark": restored.watermark.to_string(),
            },
            "previous": crate::backup::describe_local(&restored.previous),
            "path": restored.path.display().to_string(),
        }),
        Answer::ShuttingDown(node) => json!({ "node": node }),
    }
}

/// An executor's refusal in RPC terms (`docs/rpc.md` §5).
fn command_error(error: CommandError) -> RpcError {
    let message = error.to_string();
    match error {
        CommandError::WrongState(_) => RpcError::new(code::WRONG_STATE, message),
        CommandError::WrongPassphrase => RpcError::new(code::UNAUTHENTICATED, message),
        CommandError::InvalidParams { field, known, .. } => {
            let mut rpc = RpcError::new(code::INVALID_PARAMS, message);
            rpc.data = Some(json!({ "field": field, "known": known }));
            rpc
        }
        CommandError::Internal(_) => RpcError::new(code::INTERNAL, message),
    }
}

/// `backup.restore` params: exactly `{"store": NAME, "file": NAME}`, the
/// file a plain backup file name.
pub fn parse_restore_params(params: &Value) -> Result<crate::backup::RestoreChoice, RpcError> {
    use crate::backup::{BackupFileName, validate_file_name};
    let invalid_params = |field: &str, message: String| {
        let mut error = RpcError::new(code::INVALID_PARAMS, message);
        error.data = Some(json!({ "field": field }));
        error
    };
    let Value::Object(map) = params else {
        return Err(invalid_params(
            "params",
            "params must be {\"store\": NAME, \"file\": NAME}".into(),
        ));
    };
    if let Some(unknown) = map
        .keys()
        .find(|key| !["store", "file"].contains(&key.as_str()))
    {
        return Err(invalid_params(
            unknown,
            format!("unknown field `{unknown}`"),
        ));
    }
    let text = |field: &str| match map.get(field) {
        Some(Value::String(text)) if !text.is_empty() => Ok(text.clone()),
        _ => Err(invalid_params(
            field,
            format!("{field} must be a non-empty string (see backup.list)"),
        )),
    };
    let store = text("store")?;
    let file = text("file")?;
    if let Err(error) = validate_file_name(&file) {
        return Err(invalid_params("file", error.to_string()));
    }
    if BackupFileName::parse(&file).is_none() {
        return Err(invalid_params(
            "file",
            format!(
                "{file:?} is not a backup file name \
                 (backup-<chain>-<ADDRESS>-<sequence>-h<height>.age, see backup.list)"
            ),
        ));
    }
    Ok(crate::backup::RestoreChoice::Named { store, file })
}

fn no_params(params: &Value) -> Result<(), RpcError> {
    match params {
        Value::Null => Ok(()),
        Value::Object(map) if map.is_empty() => Ok(()),
        other => {
            let mut error = RpcError::new(code::INVALID_PARAMS, "this method takes no params");
            error.data = Some(json!({ "got": other }));
            Err(error)
        }
    }
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}
