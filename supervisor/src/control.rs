//! The supervisor's side of the control RPC: what each method does.
//!
//! The RPC server (`crate::rpc`) authenticates, authorizes and frames;
//! [`SupervisorControl`] answers. Every method is typed by the contract in
//! `palisade_wire::rpc::methods`: its params are parsed once by
//! `parse_params` (−32602 naming the field), its answer is the method's
//! result type, serialized at this boundary only.
//!
//! Read-only methods are answered here from the
//! [`Board`](crate::supervision::board::Board) (which the supervision
//! executor keeps current), the files on disk and the tunnels' observers
//! ([`status`]). Methods that change the node or the vault (unlock, lock,
//! node start/stop/restart, restore, a confirmed host shutdown) become a
//! [`Command`] for the executor, which answers at once when the phase cannot
//! honour it and otherwise once it has acted — so a command is never
//! half-applied behind the machine's back. Staging upgrades is
//! [`crate::upgrade::stage`]'s, listing backups [`crate::backup::catalog`]'s.
//!
//! Invariants: a secret (the unlock passphrase) arrives as a
//! [`SecretString`], travels beside its command to the executor and is
//! dropped (zeroized) after the attempt; it never reaches a log line or a
//! response. Failed unlocks are rate-limited: each failure doubles the
//! time before the next attempt is accepted (1 s up to 60 s), whichever
//! operator tries.

pub(crate) mod host_shutdown;
mod status;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use palisade_wire::rpc::methods::{self, Method, parse_params};
use palisade_wire::rpc::results::{
    BackupNowResult, BackupRestoreResult, FailoverHandoffResult, FailoverPauseResult,
    FailoverStatus, HostShutdownResult, LogsTailResult, NodeResult, RestoredBackup, ShutdownToken,
    ShuttingDown, TunnelListResult, TunnelReconnectResult, VaultLockResult, VaultUnlockResult,
};
use palisade_wire::rpc::{RpcError, code};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::backup::{LastBackup, RestoreChoice};
use crate::rpc::Caller;
use crate::supervision::board::{NodeState, SharedBoard, board};
use crate::supervision::command::{Answer, Command, CommandError, CommandSender};
use crate::tunnel::BastionObserver;

/// First delay after a failed unlock; doubles per failure.
const UNLOCK_BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// Longest delay after failed unlocks.
const UNLOCK_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Answers the control RPC's methods for this supervisor.
pub struct SupervisorControl {
    commands: CommandSender,
    board: SharedBoard,
    status: status::StatusReader,
    /// (failures, not before) for unlocks.
    unlock_backoff: Mutex<(u32, Instant)>,
    /// `upgrade.list`, `upgrade.add`, `upgrade.cancel`.
    upgrades: crate::upgrade::stage::UpgradeStager,
    /// The stores `backup.list` reads.
    backups: crate::backup::BackupCatalog,
    /// `host.shutdown` confirmation tokens, and the command it runs.
    host_shutdown: host_shutdown::Confirmations,
    shutdown_command: Vec<String>,
    /// The last backup the backup worker wrote.
    last_backup: tokio::sync::watch::Receiver<Option<LastBackup>>,
    /// `[failover]` and its leadership driver.
    failover: Option<(
        crate::config::FailoverSettings,
        crate::failover::driver::DriverHandle,
    )>,
    /// `[eip]`: `eip.list`, `eip.status`, and the checks of `eip.rotate`.
    eip: Option<Arc<crate::eip::EipService>>,
}

impl SupervisorControl {
    /// `node` is where the node's files are; `commands` the supervision
    /// executor's inbox.
    pub fn new(
        config: &crate::config::Config,
        node: &crate::node::files::NodePaths,
        commands: CommandSender,
        board: SharedBoard,
        tunnels: Vec<BastionObserver>,
        last_backup: tokio::sync::watch::Receiver<Option<LastBackup>>,
    ) -> SupervisorControl {
        SupervisorControl {
            upgrades: crate::upgrade::stage::UpgradeStager::new(config, board.clone()),
            status: status::StatusReader::new(
                config,
                node,
                board.clone(),
                tunnels,
                last_backup.clone(),
            ),
            commands,
            board,
            unlock_backoff: Mutex::new((0, Instant::now())),
            backups: crate::backup::BackupCatalog::new(config.vault.as_ref()),
            host_shutdown: host_shutdown::Confirmations::default(),
            shutdown_command: config.host.shutdown_command.clone(),
            last_backup,
            failover: None,
            eip: None,
        }
    }

    /// `eip.*` answer from this service.
    pub fn with_eip(mut self, eip: Arc<crate::eip::EipService>) -> SupervisorControl {
        self.eip = Some(eip);
        self
    }

    fn eip(&self) -> Result<&crate::eip::EipService, RpcError> {
        self.eip.as_deref().ok_or_else(|| {
            RpcError::new(
                code::WRONG_STATE,
                "no [eip] or no [[bastion]] with an eip is configured (see docs/eip.md)",
            )
        })
    }

    /// `failover.*` and `status.failover` answer from this driver.
    pub fn with_failover(
        mut self,
        settings: crate::config::FailoverSettings,
        driver: crate::failover::driver::DriverHandle,
    ) -> SupervisorControl {
        self.failover = Some((settings, driver));
        self
    }

    fn failover_status(&self) -> Option<FailoverStatus> {
        self.failover
            .as_ref()
            .map(|(settings, driver)| crate::failover::status(settings, driver.view()))
    }

    fn failover_driver(&self) -> Result<&crate::failover::driver::DriverHandle, RpcError> {
        self.failover
            .as_ref()
            .map(|(_, driver)| driver)
            .ok_or_else(|| {
                RpcError::new(code::WRONG_STATE, crate::supervision::machine::NO_FAILOVER)
            })
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

    /// Answer one call of `caller`, already authorized for `method`.
    pub async fn call(
        &self,
        caller: &Caller,
        method: &str,
        params: Value,
        secret: Option<SecretString>,
    ) -> Result<Value, RpcError> {
        use methods::*;
        match method {
            Status::NAME => {
                answer::<Status, _, _>(params, |_| async {
                    let mut status = self.status.status().await;
                    status.failover = self.failover_status();
                    Ok(status)
                })
                .await
            }
            FailoverStatusMethod::NAME => {
                answer::<FailoverStatusMethod, _, _>(params, |_| async {
                    self.failover_driver()?;
                    Ok(self.failover_status().expect("failover is configured"))
                })
                .await
            }
            FailoverPause::NAME | FailoverResume::NAME => {
                let pause = method == FailoverPause::NAME;
                answer::<FailoverPause, _, _>(params, |_| async move {
                    let driver = self.failover_driver()?;
                    let paused =
                        driver
                            .set_paused(pause, &caller.operator)
                            .await
                            .map_err(|error| {
                                RpcError::new(
                                    code::WRONG_STATE,
                                    format!("{error}; nothing was changed"),
                                )
                            })?;
                    Ok(FailoverPauseResult { paused })
                })
                .await
            }
            FailoverHandoff::NAME => {
                answer::<FailoverHandoff, _, _>(params, |params| async move {
                    self.failover_driver()?;
                    let command = Command::Handoff {
                        to: params.to,
                        operator: caller.operator.clone(),
                    };
                    match self.send(command, None).await? {
                        Answer::HandedOff(done) => Ok(FailoverHandoffResult {
                            to: done.to,
                            token: done.token,
                            watermark: done.watermark.map(|w| w.to_string()),
                            stores: done.stores,
                            node: NodeState::Standby,
                        }),
                        other => Err(unexpected(other)),
                    }
                })
                .await
            }
            EipList::NAME => {
                answer::<EipList, _, _>(params, |_| async {
                    self.eip()?.list().await.map_err(|error| match error {
                        crate::eip::ListError::Unavailable(message) => {
                            RpcError::new(code::WRONG_STATE, message)
                        }
                        crate::eip::ListError::Failed(message) => {
                            RpcError::new(code::INTERNAL, message)
                        }
                    })
                })
                .await
            }
            EipStatus::NAME => {
                answer::<EipStatus, _, _>(params, |_| async {
                    self.eip()?
                        .status()
                        .map_err(|message| RpcError::new(code::INTERNAL, message))
                })
                .await
            }
            EipRotate::NAME => {
                answer::<EipRotate, _, _>(params, |params| async move {
                    self.eip()?
                        .check_bastion(&params.bastion)
                        .map_err(|(message, known)| {
                            RpcError::unknown_name("bastion", message, known)
                        })?;
                    let request = crate::supervision::command::RotateRequest {
                        bastion: params.bastion,
                        keep_old: params.keep_old,
                        operator: caller.operator.clone(),
                    };
                    match self
                        .commands
                        .send_rotation(request)
                        .await
                        .map_err(command_error)?
                    {
                        Answer::EipRotated(result) => Ok(*result),
                        other => Err(unexpected(other)),
                    }
                })
                .await
            }
            Health::NAME => {
                answer::<Health, _, _>(params, |_| async {
                    let mut health = self.status.health().await;
                    if let Some(failover) = self.failover_status() {
                        health.problems.extend(failover_problems(&failover));
                        health.ok = health.problems.is_empty();
                    }
                    Ok(health)
                })
                .await
            }
            LogsTail::NAME => {
                answer::<LogsTail, _, _>(params, |params| async move {
                    Ok(LogsTailResult {
                        lines: crate::node::output::recent_lines(params.lines() as usize),
                    })
                })
                .await
            }
            TunnelList::NAME => {
                answer::<TunnelList, _, _>(params, |_| async {
                    Ok(TunnelListResult {
                        tunnels: self.status.tunnels(),
                    })
                })
                .await
            }
            TunnelReconnect::NAME => {
                answer::<TunnelReconnect, _, _>(params, |params| async move {
                    self.reconnect(&params.bastion)
                })
                .await
            }
            UpgradeList::NAME => {
                answer::<UpgradeList, _, _>(params, |_| self.upgrades.list()).await
            }
            UpgradeAdd::NAME => {
                answer::<UpgradeAdd, _, _>(params, |params| self.upgrades.add(params)).await
            }
            UpgradeCancel::NAME => {
                answer::<UpgradeCancel, _, _>(params, |params| self.upgrades.cancel(params)).await
            }
            BackupList::NAME => {
                answer::<BackupList, _, _>(params, |params| async move {
                    let last = self.last_backup.borrow().clone();
                    Ok(self
                        .backups
                        .list(params.limit() as usize, last.as_ref())
                        .await)
                })
                .await
            }
            BackupNow::NAME => answer::<BackupNow, _, _>(params, |_| self.backup_now()).await,
            BackupRestore::NAME => {
                answer::<BackupRestore, _, _>(params, |params| async move {
                    let choice = RestoreChoice::Named {
                        store: params.store,
                        file: params.file,
                    };
                    match self.send(Command::Restore(choice), None).await? {
                        Answer::Restored(restored) => Ok(BackupRestoreResult {
                            restored: RestoredBackup {
                                store: restored.store.clone(),
                                file: restored.file.clone(),
                                sequence: restored.sequence,
                                watermark: restored.watermark.to_string(),
                            },
                            previous: crate::backup::describe_local(&restored.previous),
                            path: restored.path.display().to_string(),
                        }),
                        other => Err(unexpected(other)),
                    }
                })
                .await
            }
            NodeStart::NAME => {
                answer::<NodeStart, _, _>(params, |_| self.node(Command::NodeStart)).await
            }
            NodeStop::NAME => {
                answer::<NodeStop, _, _>(params, |_| self.node(Command::NodeStop)).await
            }
            NodeRestart::NAME => {
                answer::<NodeRestart, _, _>(params, |_| self.node(Command::NodeRestart)).await
            }
            VaultUnlock::NAME => {
                answer::<VaultUnlock, _, _>(params, |params| {
                    let accept_unreachable_by = params
                        .accept_unreachable_stores
                        .then(|| format!("operator {} (vault.unlock)", caller.operator));
                    self.unlock(secret, accept_unreachable_by)
                })
                .await
            }
            VaultLock::NAME => {
                answer::<VaultLock, _, _>(params, |_| async {
                    match self.send(Command::Lock, None).await? {
                        Answer::Locked => Ok(VaultLockResult { locked: true }),
                        other => Err(unexpected(other)),
                    }
                })
                .await
            }
            HostShutdown::NAME => {
                // The one method whose effect depends on who asks: the
                // token is bound to the operator.
                answer::<HostShutdown, _, _>(params, |params| {
                    self.host_shutdown(&caller.operator, params.confirm)
                })
                .await
            }
            other => Err(RpcError::new(
                code::METHOD_NOT_FOUND,
                format!("{other} is not available in this release yet (see docs/rpc.md)"),
            )),
        }
    }

    /// Send `command` to the executor; its refusal in RPC terms.
    async fn send(
        &self,
        command: Command,
        passphrase: Option<SecretString>,
    ) -> Result<Answer, RpcError> {
        self.commands
            .send(command, passphrase)
            .await
            .map_err(command_error)
    }

    async fn node(&self, command: Command) -> Result<NodeResult, RpcError> {
        match self.send(command, None).await? {
            Answer::Node(node) => Ok(NodeResult { node }),
            other => Err(unexpected(other)),
        }
    }

    async fn unlock(
        &self,
        secret: Option<SecretString>,
        accept_unreachable_by: Option<String>,
    ) -> Result<VaultUnlockResult, RpcError> {
        let Some(passphrase) = secret else {
            return Err(RpcError::invalid_params(
                "secret",
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
            .commands
            .send_unlock(passphrase, accept_unreachable_by)
            .await
            .map_err(command_error);
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
        match result? {
            Answer::Unlocked => Ok(VaultUnlockResult {
                locked: false,
                node: NodeState::Starting,
            }),
            other => Err(unexpected(other)),
        }
    }

    /// `tunnel.reconnect`: the named bastion reconnects now.
    fn reconnect(&self, name: &str) -> Result<TunnelReconnectResult, RpcError> {
        let Some(observer) = self.status.tunnel(name) else {
            return Err(RpcError::unknown_name(
                "bastion",
                format!("no bastion named {name:?}"),
                self.status.tunnel_names(),
            ));
        };
        observer.request_reconnect();
        Ok(TunnelReconnectResult {
            bastion: name.to_owned(),
            reconnecting: true,
        })
    }

    async fn backup_now(&self) -> Result<BackupNowResult, RpcError> {
        let trigger = board(&self.board).backup_trigger.clone();
        let Some(trigger) = trigger else {
            return Err(RpcError::new(
                code::WRONG_STATE,
                "no backups while the vault is locked (or without [vault])",
            ));
        };
        match trigger.backup_now("requested over RPC").await {
            Ok(backup) => Ok(BackupNowResult { backup, note: None }),
            Err(error) => Err(RpcError::new(code::WRONG_STATE, error.to_string())),
        }
    }

    /// `host.shutdown {}` issues a token for `operator`;
    /// `{"confirm": TOKEN}` spends it and has the executor shut down.
    async fn host_shutdown(
        &self,
        operator: &str,
        confirm: Option<String>,
    ) -> Result<HostShutdownResult, RpcError> {
        use host_shutdown::check_runnable;
        let Some(token) = confirm else {
            check_runnable(&self.shutdown_command)?;
            let (token, valid_for) = self.host_shutdown.issue(operator);
            tracing::warn!(%operator, "host shutdown requested; waiting for its confirmation");
            return Ok(HostShutdownResult::TokenIssued(ShutdownToken {
                confirm: token,
                expires_in_s: valid_for.as_secs(),
                command: self.shutdown_command.clone(),
            }));
        };
        let spent = self.host_shutdown.spend(operator, &token)?;
        if let Err(error) = check_runnable(&self.shutdown_command) {
            self.host_shutdown.put_back(spent);
            return Err(error);
        }
        let command = Command::HostShutdown {
            operator: operator.to_owned(),
        };
        match self.send(command, None).await {
            Ok(Answer::ShuttingDown(node)) => Ok(HostShutdownResult::ShuttingDown(ShuttingDown {
                shutting_down: true,
                node,
                command: self.shutdown_command.clone(),
            })),
            Ok(other) => Err(unexpected(other)),
            Err(error) => {
                // Not started (the supervisor was busy or refused): the
                // operator may confirm again with the same token.
                self.host_shutdown.put_back(spent);
                Err(error)
            }
        }
    }
}

impl crate::rpc::Dispatcher for SupervisorControl {
    fn call<'a>(
        &'a self,
        caller: &'a Caller,
        method: &'a str,
        params: Value,
        secret: Option<SecretString>,
    ) -> crate::backup::BoxFuture<'a, Result<Value, RpcError>> {
        // The caller is already authorized for `method` and logged by the
        // server.
        Box::pin(SupervisorControl::call(
            self, caller, method, params, secret,
        ))
    }
}

/// Parse `params` as `M`'s, run `work`, and serialize its typed answer:
/// the one place a method's params and result meet JSON.
async fn answer<M, F, Fut>(params: Value, work: F) -> Result<Value, RpcError>
where
    M: Method,
    F: FnOnce(M::Params) -> Fut,
    Fut: Future<Output = Result<M::Result, RpcError>>,
{
    let params = parse_params::<M>(params)?;
    let result = work(params).await?;
    serde_json::to_value(result).map_err(|error| {
        tracing::error!(method = M::NAME, %error, "cannot encode an answer");
        RpcError::new(
            code::INTERNAL,
            "cannot encode the answer; see the supervisor log",
        )
    })
}

/// What `health` adds with `[failover]`: etcd out of reach, no host holding
/// the leadership (nobody signs), automatic takeover paused, or a takeover
/// waiting on something.
fn failover_problems(status: &FailoverStatus) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(error) = &status.etcd_error {
        problems.push(format!("failover: etcd cannot be reached ({error})"));
    }
    if status.etcd_error.is_none() && status.leader.is_none() {
        problems.push("failover: no host holds the leadership: nobody signs".into());
    }
    if status.paused == Some(true) {
        problems.push("failover: automatic takeover is paused (failover.resume)".into());
    }
    if let Some(note) = status
        .note
        .as_deref()
        .filter(|note| note.starts_with("takeover:"))
    {
        problems.push(format!("failover: {note}"));
    }
    problems
}

/// An answer of the wrong kind for the command sent: a bug, reported as
/// one rather than guessed at.
fn unexpected(answer: Answer) -> RpcError {
    tracing::error!(
        ?answer,
        "the executor answered a command with another command's answer"
    );
    RpcError::new(code::INTERNAL, "unexpected answer; see the supervisor log")
}

/// An executor's refusal in RPC terms (`docs/rpc.md` §5).
fn command_error(error: CommandError) -> RpcError {
    let message = error.to_string();
    match error {
        CommandError::WrongState(_) => RpcError::new(code::WRONG_STATE, message),
        CommandError::WrongPassphrase => RpcError::new(code::UNAUTHENTICATED, message),
        CommandError::InvalidParams { field, known, .. } => {
            RpcError::unknown_name(field, message, known)
        }
        CommandError::Internal(_) => RpcError::new(code::INTERNAL, message),
    }
}

#[cfg(test)]
mod failover_health_tests {
    use super::*;

    fn status() -> FailoverStatus {
        FailoverStatus {
            host_id: "val-b".into(),
            role: "standby".into(),
            leader: Some("val-a".into()),
            token: Some(4),
            lease_ttl_s: 10,
            signing_deadline_in_ms: None,
            paused: Some(false),
            takeover: "auto".into(),
            peers: vec!["val-a".into()],
            etcd_error: None,
            last_handoff: None,
            note: Some("standby: val-a is the primary (token 4)".into()),
        }
    }

    #[test]
    fn health_names_what_keeps_the_validator_from_a_signer() {
        type Change = fn(&mut FailoverStatus);
        let cases: Vec<(Change, Vec<&str>)> = vec![
            (|_| {}, vec![]),
            (
                |s| s.etcd_error = Some("connection refused".into()),
                vec!["failover: etcd cannot be reached (connection refused)"],
            ),
            (
                |s| s.leader = None,
                vec!["failover: no host holds the leadership: nobody signs"],
            ),
            (
                |s| s.paused = Some(true),
                vec!["failover: automatic takeover is paused (failover.resume)"],
            ),
            (
                |s| s.note = Some("takeover: the validator's key signed at heights [9]".into()),
                vec!["failover: takeover: the validator's key signed at heights [9]"],
            ),
        ];
        for (change, expected) in cases {
            let mut status = status();
            change(&mut status);
            assert_eq!(failover_problems(&status), expected, "{status:?}");
        }
    }
}
