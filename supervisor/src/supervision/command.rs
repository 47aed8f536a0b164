//! What the control RPC asks of the supervision executor, and what it
//! answers: the commands that change the node's or the vault's state.
//!
//! A leaf of typed values: no JSON and no RPC codes here (the control
//! module maps [`CommandError`] to the RPC's error codes). A command is
//! answered once, either at once (a refusal names the phase that prevents
//! it) or when the machine has acted on it (an unlock when the start rule
//! has run, a stop when the node has stopped, a lock when the keys are
//! wiped).

use std::time::Duration;

use secrecy::SecretString;
use tokio::sync::{mpsc, oneshot};

use super::board::NodeState;
use crate::backup::{RestoreChoice, RestoreError, Restored};
use crate::sign_state::SignStateWriteError;

/// How long a caller waits for the executor before it is told to retry.
/// The executor answers refusals at once and bounds its own long steps
/// (an unlock, a restore, a graceful stop) below this.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// Commands queued for the executor at most; more wait in `send`.
const QUEUE: usize = 8;

/// `eip.rotate`: move a bastion to a fresh Elastic IP (`crate::eip`).
/// Beside the node's commands: it does not touch the node, and the
/// machine runs at most one at a time, only with the credentials at hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotateRequest {
    pub bastion: String,
    pub keep_old: bool,
    /// Who asked (logged).
    pub operator: String,
}

/// What the control RPC asks of the executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Order {
    /// A command on the node or the vault.
    Node(Command),
    /// An Elastic IP rotation.
    Rotate(RotateRequest),
}

impl Order {
    /// The RPC method that sends it.
    pub fn method(&self) -> &'static str {
        match self {
            Order::Node(command) => command.method(),
            Order::Rotate(_) => "eip.rotate",
        }
    }
}

/// A command for the supervision machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Unlock the vault (the passphrase travels beside the command, never
    /// inside it), then run the start rule and start the node.
    Unlock,
    /// Start the node after an operator stop (or cut a crash backoff short).
    NodeStart,
    /// Stop the node gracefully and keep it stopped.
    NodeStop,
    /// Stop the node gracefully and start it again (not counted as a crash).
    NodeRestart,
    /// Stop the node, take the final backup, wipe the keys from tmpfs and
    /// wait for an unlock.
    Lock,
    /// Restore the sign state from a backup: only with the node stopped by
    /// an operator and the vault unlocked.
    Restore(RestoreChoice),
    /// A confirmed `host.shutdown` by `operator`: answer, stop the node,
    /// final backup, wipe the keys, run `[host] shutdown-command`, exit.
    HostShutdown { operator: String },
    /// `failover.handoff`: stop here, final backup, signed handoff record,
    /// leadership released to `to`.
    Handoff { to: String, operator: String },
}

impl Command {
    /// The RPC method that sends it, for logs and messages.
    pub fn method(&self) -> &'static str {
        match self {
            Command::Unlock => "vault.unlock",
            Command::NodeStart => "node.start",
            Command::NodeStop => "node.stop",
            Command::NodeRestart => "node.restart",
            Command::Lock => "vault.lock",
            Command::Restore(_) => "backup.restore",
            Command::HostShutdown { .. } => "host.shutdown",
            Command::Handoff { .. } => "failover.handoff",
        }
    }
}

/// Which command an answer belongs to (the executor numbers them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommandId(pub u64);

/// A command carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `node.start`, `node.stop`, `node.restart`: the node's new state.
    Node(NodeState),
    /// `vault.unlock`: unlocked, the start rule passed, the node starts.
    Unlocked,
    /// `vault.lock`: the final backup is taken and the keys are wiped.
    Locked,
    /// `backup.restore`: the state file now holds this backup's state.
    Restored(Restored),
    /// `host.shutdown` confirmed: the node's state when it was accepted.
    ShuttingDown(NodeState),
    /// The handoff is done: this host is a standby, `to` may take over.
    HandedOff(HandoffDone),
    /// `eip.rotate`: done, the tunnel up on the new address.
    EipRotated(Box<palisade_wire::rpc::results::EipRotateResult>),
}

/// What a planned handoff left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoffDone {
    /// The host the record names.
    pub to: String,
    /// The final sign state, as the record carries it.
    pub watermark: Option<crate::sign_state::Watermark>,
    /// The stores that took the final backup.
    pub stores: Vec<String>,
    /// The fencing token this host gave up.
    pub token: i64,
}

/// Why a command was not carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Not possible in the current phase; the message names the phase and
    /// what to do.
    #[error("{0}")]
    WrongState(String),
    /// `vault.unlock` with a wrong passphrase; nothing was changed.
    #[error("wrong passphrase; nothing was changed")]
    WrongPassphrase,
    /// A parameter names something that does not exist (a restore from an
    /// unknown store); `known` lists what does.
    #[error("{message}")]
    InvalidParams {
        field: &'static str,
        message: String,
        known: Vec<String>,
    },
    /// The command failed for a reason the supervisor logged.
    #[error("{0}")]
    Internal(String),
}

impl From<RestoreError> for CommandError {
    fn from(error: RestoreError) -> CommandError {
        let message = error.to_string();
        match error {
            RestoreError::UnknownStore { known, .. } => CommandError::InvalidParams {
                field: "store",
                message,
                known,
            },
            RestoreError::Write(SignStateWriteError::Refused { .. }) => {
                CommandError::WrongState(message)
            }
            RestoreError::Write(_) => CommandError::Internal(message),
            _ => CommandError::WrongState(message),
        }
    }
}

/// The outcome of a command.
pub type CommandResult = Result<Answer, CommandError>;

/// A command on its way to the executor.
pub struct Request {
    pub order: Order,
    /// The `vault.unlock` passphrase (zeroized on drop); `None` otherwise.
    pub passphrase: Option<SecretString>,
    /// `vault.unlock` with `accept_unreachable_stores`: who accepted them
    /// for the start that follows (logged and recorded).
    pub accept_unreachable_by: Option<String>,
    pub reply: oneshot::Sender<CommandResult>,
}

impl Request {
    /// Whether the caller still waits for the answer. It stops waiting when
    /// the executor was busy past [`ANSWER_TIMEOUT`] (and it was told so),
    /// or its connection went away: such a command is dropped, never
    /// carried out late.
    pub fn caller_waiting(&self) -> bool {
        !self.reply.is_closed()
    }
}

/// The control RPC's handle on the executor's inbox.
#[derive(Clone, Debug)]
pub struct CommandSender(mpsc::Sender<Request>);

/// The executor's inbox.
pub type CommandInbox = mpsc::Receiver<Request>;

/// A bounded channel for commands.
pub fn command_channel() -> (CommandSender, CommandInbox) {
    let (sender, inbox) = mpsc::channel(QUEUE);
    (CommandSender(sender), inbox)
}

impl CommandSender {
    /// Send `command` and wait for its answer (at most [`ANSWER_TIMEOUT`]
    /// for the queue and as much again for the answer).
    pub async fn send(&self, command: Command, passphrase: Option<SecretString>) -> CommandResult {
        self.send_request(Order::Node(command), passphrase, None)
            .await
    }

    /// `eip.rotate`.
    pub async fn send_rotation(&self, request: RotateRequest) -> CommandResult {
        self.send_request(Order::Rotate(request), None, None).await
    }

    /// `vault.unlock` with its passphrase; `accept_unreachable_by` names
    /// the operator who accepts unreachable backup stores for this start.
    pub async fn send_unlock(
        &self,
        passphrase: SecretString,
        accept_unreachable_by: Option<String>,
    ) -> CommandResult {
        self.send_request(
            Order::Node(Command::Unlock),
            Some(passphrase),
            accept_unreachable_by,
        )
        .await
    }

    async fn send_request(
        &self,
        order: Order,
        passphrase: Option<SecretString>,
        accept_unreachable_by: Option<String>,
    ) -> CommandResult {
        let (reply, answer) = oneshot::channel();
        let busy = || {
            CommandError::WrongState(
                "the supervisor did not answer in time (a long step is in progress); try again"
                    .into(),
            )
        };
        let stopping = || CommandError::WrongState("the supervisor is stopping".into());
        let request = Request {
            order,
            passphrase,
            accept_unreachable_by,
            reply,
        };
        tokio::time::timeout(ANSWER_TIMEOUT, self.0.send(request))
            .await
            .map_err(|_| busy())?
            .map_err(|_| stopping())?;
        match tokio::time::timeout(ANSWER_TIMEOUT, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(stopping()),
            Err(_) => Err(busy()),
        }
    }
}
