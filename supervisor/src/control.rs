//! The supervisor's side of the control RPC: what each method does.
//!
//! The RPC server (`crate::rpc`) authenticates, authorizes and frames;
//! [`SupervisorControl::call`] answers. Read-only methods are answered here
//! from the [`Board`] (which the supervision loop keeps current), the files
//! on disk and the tunnels' observers. Methods that change what the loop
//! does (unlock, node start/stop/restart) become a [`ControlCommand`] for
//! the loop, which owns the daemon and the vault, and the answer comes back
//! once the loop has acted — so a command is never half-applied behind the
//! loop's back.
//!
//! Invariants: a secret (the unlock passphrase) arrives as a
//! [`SecretString`], is handed to the loop and dropped (zeroized); it never
//! reaches a log line or a response. Failed unlocks are rate-limited: each
//! failure doubles the time before the next attempt is accepted (1 s up to
//! 60 s), whichever operator tries.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use palisade_wire::rpc::{RpcError, code};
use secrecy::SecretString;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::keys::BackupTrigger;
use crate::node_rpc::NodeRpc;
use crate::sign_state::{LocalState, read_local};
use crate::tunnel::BastionObserver;
use crate::upgrade_watch::{FileState, read_plan_file};

/// How long a command waits for the loop (busy with an upgrade, say)
/// before the caller is told to retry.
const LOOP_ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// First delay after a failed unlock; doubles per failure.
const UNLOCK_BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// Longest delay after failed unlocks.
const UNLOCK_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// The loop's answer to a command.
pub type Reply = oneshot::Sender<Result<Value, RpcError>>;

/// What the supervision loop is asked to do.
pub enum ControlCommand {
    /// Unlock the vault with this passphrase, then start the node.
    Unlock {
        passphrase: SecretString,
        reply: Reply,
    },
    /// Stop the node gracefully and keep it stopped.
    NodeStop { reply: Reply },
    /// Start the node after a `NodeStop`.
    NodeStart { reply: Reply },
    /// Stop the node gracefully and start it again (not counted as a crash).
    NodeRestart { reply: Reply },
    /// Stop the node, take the final backup, wipe the keys from tmpfs and
    /// wait for an unlock.
    Lock { reply: Reply },
    /// Restore the sign state from one backup (`backup.restore`): only
    /// with the node stopped by an operator and the vault unlocked.
    Restore {
        request: crate::backup_rpc::RestoreRequest,
        reply: Reply,
    },
    /// A confirmed `host.shutdown` by `operator`: answer, stop the node,
    /// final backup, wipe the keys, run `[host] shutdown-command`, exit.
    HostShutdown { operator: String, reply: Reply },
}

impl ControlCommand {
    fn reply(&self) -> &Reply {
        match self {
            ControlCommand::Unlock { reply, .. }
            | ControlCommand::NodeStop { reply }
            | ControlCommand::NodeStart { reply }
            | ControlCommand::NodeRestart { reply }
            | ControlCommand::Lock { reply }
            | ControlCommand::Restore { reply, .. }
            | ControlCommand::HostShutdown { reply, .. } => reply,
        }
    }

    /// The RPC method that sent it, for logs.
    pub fn method(&self) -> &'static str {
        match self {
            ControlCommand::Unlock { .. } => "vault.unlock",
            ControlCommand::NodeStop { .. } => "node.stop",
            ControlCommand::NodeStart { .. } => "node.start",
            ControlCommand::NodeRestart { .. } => "node.restart",
            ControlCommand::Lock { .. } => "vault.lock",
            ControlCommand::Restore { .. } => "backup.restore",
            ControlCommand::HostShutdown { .. } => "host.shutdown",
        }
    }

    /// Whether the caller still waits for the answer. It stops waiting when
    /// the loop was busy past [`LOOP_ANSWER_TIMEOUT`] (and was told so), or its
    /// connection went away.
    pub fn caller_waiting(&self) -> bool {
        !self.reply().is_closed()
    }

    /// Answer the command without acting on it.
    pub fn refuse(self, code: i64, message: impl Into<String>) {
        let reply = match self {
            ControlCommand::Unlock { reply, .. }
            | ControlCommand::NodeStop { reply }
            | ControlCommand::NodeStart { reply }
            | ControlCommand::NodeRestart { reply }
            | ControlCommand::Lock { reply }
            | ControlCommand::Restore { reply, .. }
            | ControlCommand::HostShutdown { reply, .. } => reply,
        };
        let _ = reply.send(Err(RpcError::new(code, message)));
    }
}

/// The next command whose caller still waits for it. A command whose
/// caller gave up (the loop was busy, the operator was told to try again)
/// is dropped with a warning, never carried out late: an operator must not
/// find the node stopped minutes after being told the call failed.
pub async fn recv_live(
    commands: &mut tokio::sync::mpsc::Receiver<ControlCommand>,
) -> Option<ControlCommand> {
    loop {
        let command = commands.recv().await?;
        if command.caller_waiting() {
            return Some(command);
        }
        tracing::warn!(
            method = command.method(),
            "a control command arrived after its caller stopped waiting; not carried out"
        );
    }
}

/// The node as the loop last saw it: part of the RPC contract, so it lives
/// in `palisade-wire`.
pub use palisade_wire::rpc::results::NodeState;

/// The last backup written, as the backup worker reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastBackup {
    pub file: String,
    pub sequence: u64,
    pub watermark: String,
    pub stores: Vec<String>,
    /// Unix seconds.
    pub at: u64,
}

/// What the loop shares with the control RPC.
#[derive(Debug)]
pub struct Board {
    pub node: NodeState,
    pub pid: Option<u32>,
    pub version: Option<String>,
    /// `None`: no vault configured.
    pub vault_locked: Option<bool>,
    pub last_backup: Option<LastBackup>,
    pub backup_trigger: Option<BackupTrigger>,
    /// An upgrade plan the loop is holding until the node reaches its height.
    pub scheduled_upgrade: Option<String>,
    /// The version the loop's last upgrade targets; that upgrade is in
    /// progress while `node` is [`NodeState::Upgrading`] (`upgrade.cancel`
    /// refuses it then).
    pub upgrading: Option<crate::layout::Version>,
}

/// Shared handle on the [`Board`].
pub type SharedBoard = Arc<Mutex<Board>>;

/// Locks the board, surviving a poisoned lock (the data stays usable).
pub fn board(shared: &SharedBoard) -> std::sync::MutexGuard<'_, Board> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A new board for a supervisor with (or without) a vault.
pub fn new_board(vault: bool) -> SharedBoard {
    Arc::new(Mutex::new(Board {
        node: NodeState::Starting,
        pid: None,
        version: None,
        vault_locked: vault.then_some(true),
        last_backup: None,
        backup_trigger: None,
        scheduled_upgrade: None,
        upgrading: None,
    }))
}

/// Answers the control RPC's methods for this supervisor.
pub struct SupervisorControl {
    commands: mpsc::Sender<ControlCommand>,
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
    upgrades: crate::upgrade_stage::UpgradeStager,
    /// The stores `backup.list` reads.
    backups: crate::backup_rpc::BackupCatalog,
    /// `host.shutdown` confirmation tokens, and the command it runs.
    host_shutdown: crate::host_shutdown::Confirmations,
    shutdown_command: Vec<String>,
}

impl SupervisorControl {
    /// `commands` is the supervision loop's inbox.
    pub fn new(
        config: &crate::config::Config,
        commands: mpsc::Sender<ControlCommand>,
        board: SharedBoard,
        tunnels: Vec<BastionObserver>,
    ) -> SupervisorControl {
        let upgrades = crate::upgrade_stage::UpgradeStager::new(config, board.clone());
        SupervisorControl {
            commands,
            board,
            validator: config.rpc.name.clone(),
            state_path: crate::keys::state_file(&config.daemon_home),
            upgrade_info_path: config.upgrade_info_path(),
            node_rpc: NodeRpc::new(&config.daemon_home),
            tunnels,
            started: Instant::now(),
            started_at: SystemTime::now(),
            unlock_backoff: Mutex::new((0, Instant::now())),
            upgrades,
            backups: crate::backup_rpc::BackupCatalog::new(config.vault.as_ref()),
            host_shutdown: crate::host_shutdown::Confirmations::default(),
            shutdown_command: config.host.shutdown_command.clone(),
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
            "node.stop" => {
                self.command(&params, |reply| ControlCommand::NodeStop { reply })
                    .await
            }
            "node.start" => {
                self.command(&params, |reply| ControlCommand::NodeStart { reply })
                    .await
            }
            "node.restart" => {
                self.command(&params, |reply| ControlCommand::NodeRestart { reply })
                    .await
            }
            "logs.tail" => logs_tail(&params),
            "tunnel.reconnect" => self.reconnect(&params),
            "vault.unlock" => self.unlock(&params, secret).await,
            "vault.lock" => {
                self.command(&params, |reply| ControlCommand::Lock { reply })
                    .await
            }
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

    async fn command(
        &self,
        params: &Value,
        make: impl FnOnce(Reply) -> ControlCommand,
    ) -> Result<Value, RpcError> {
        no_params(params)?;
        self.send(make).await
    }

    async fn send(&self, make: impl FnOnce(Reply) -> ControlCommand) -> Result<Value, RpcError> {
        let (reply, answer) = oneshot::channel();
        let busy = || {
            RpcError::new(
                code::WRONG_STATE,
                "the supervisor is busy (an upgrade or a stop is in progress); try again",
            )
        };
        tokio::time::timeout(LOOP_ANSWER_TIMEOUT, self.commands.send(make(reply)))
            .await
            .map_err(|_| busy())?
            .map_err(|_| RpcError::new(code::WRONG_STATE, "the supervisor is stopping"))?;
        match tokio::time::timeout(LOOP_ANSWER_TIMEOUT, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(RpcError::new(
                code::WRONG_STATE,
                "the supervisor is stopping",
            )),
            Err(_) => Err(busy()),
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
        let result = self
            .send(|reply| ControlCommand::Unlock { passphrase, reply })
            .await;
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
        let before = board(&self.board).last_backup.clone();
        trigger.backup_now("requested over RPC").await;
        let after = board(&self.board).last_backup.clone();
        match after {
            Some(last) if Some(&last) != before.as_ref() => Ok(json!({ "backup": last })),
            Some(last) => Ok(json!({
                "backup": last,
                "note": "the sign state has not moved since this backup, or no store took the new one; see the supervisor log"
            })),
            None => Err(RpcError::new(
                code::WRONG_STATE,
                "no store took the backup; see the supervisor log",
            )),
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
                board.last_backup.clone(),
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
/// [`crate::backup_rpc`] and [`crate::host_shutdown`]).
impl SupervisorControl {
    async fn backup_list(&self, params: &Value) -> Result<Value, RpcError> {
        let limit = crate::backup_rpc::parse_list_params(params)?;
        let last = board(&self.board).last_backup.clone();
        Ok(self.backups.list(limit, last.as_ref()).await)
    }

    async fn backup_restore(&self, params: &Value) -> Result<Value, RpcError> {
        let request = crate::backup_rpc::parse_restore_params(params)?;
        if board(&self.board).vault_locked.is_none() {
            return Err(RpcError::new(
                code::WRONG_STATE,
                "no [vault]: there are no signed backups to restore from",
            ));
        }
        self.send(|reply| ControlCommand::Restore { request, reply })
            .await
    }

    /// `host.shutdown {}` issues a token for `operator`;
    /// `{"confirm": TOKEN}` spends it and has the loop shut down.
    pub async fn host_shutdown(&self, operator: &str, params: Value) -> Result<Value, RpcError> {
        use crate::host_shutdown::{ShutdownParams, check_runnable, parse_params};
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
                match self
                    .send(|reply| ControlCommand::HostShutdown { operator, reply })
                    .await
                {
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
    Ok(json!({ "lines": crate::output::recent_lines(lines as usize) }))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn commands_whose_caller_gave_up_are_dropped_not_carried_out() {
        let (commands, mut inbox) = tokio::sync::mpsc::channel(4);
        // A caller that stopped waiting (its receiver is gone) …
        let (reply, answer) = oneshot::channel();
        drop(answer);
        commands
            .send(ControlCommand::NodeStop { reply })
            .await
            .unwrap();
        // … and one still waiting.
        let (reply, mut answer) = oneshot::channel();
        commands
            .send(ControlCommand::NodeStart { reply })
            .await
            .unwrap();
        drop(commands);
        let live = recv_live(&mut inbox).await.expect("the waiting command");
        assert_eq!(live.method(), "node.start");
        live.refuse(code::WRONG_STATE, "test");
        assert!(answer.try_recv().unwrap().is_err());
        assert!(recv_live(&mut inbox).await.is_none());
    }
}
