//! `palisade-bastion call`: one RPC call to a validator's supervisor
//! through its reverse-forwarded socket, for automation on the bastion.
//!
//! The call uses the control-RPC client (`palisade-client`) with the bastion's
//! `[client]` identity and the validator's `pin`: TLS with the pinned
//! certificate, login as the bastion's operator, the call. What the bastion
//! may call is decided by the supervisor, from the role of the bastion's
//! `[[operator]]` entry there, which should be `viewer` (DESIGN invariant
//! 4: a compromised bastion cannot issue commands).
//!
//! Invariants:
//! - secret methods ([`SECRET_METHODS`], the vault passphrase) are refused
//!   before anything is read or connected: secrets are never typed on a
//!   bastion;
//! - exit codes are `palisade-ctl`'s ([`exit_code`](crate::exit_code)): 0
//!   ok, 1 the call answered an error (or `health` found problems), 2
//!   usage (including the configuration), 3 connection (including a pin
//!   mismatch), 4 authentication or authorization (including an unusable
//!   key);
//! - the output is the call's `result` only, as JSON on stdout; everything
//!   else goes to stderr.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use palisade_client::peer_text::clean;
use palisade_client::{CallError, Client, ConnectOptions, Endpoint, TlsPolicy};
use palisade_wire::rpc::{Role, SECRET_METHODS, code};
use serde_json::Value;

use crate::config::{BastionConfig, ConfigError};
use crate::exit_code;
use crate::health_check::{describe_rpc_error, truncate};

/// What `call` was asked to do.
#[derive(Debug, Clone)]
pub struct CallRequest {
    pub config: PathBuf,
    pub validator: String,
    pub method: String,
    /// `--params`, as typed.
    pub params: Option<String>,
    /// One line of JSON instead of pretty JSON.
    pub json: bool,
    pub timeout: Duration,
}

/// Why `call` failed; [`CallFailure::exit_code`] follows `palisade-ctl`.
#[derive(Debug)]
pub enum CallFailure {
    /// Bad arguments, or a configuration that does not allow the call.
    Usage(String),
    /// The configuration is unreadable or invalid.
    Config(ConfigError),
    /// Connecting, logging in or calling failed; the text explains.
    Client { message: String, exit_code: i32 },
    /// `health` answered with problems (the answer was printed).
    Unhealthy { validator: String },
    /// Printing the result failed.
    Output(String),
}

impl CallFailure {
    pub fn exit_code(&self) -> i32 {
        match self {
            CallFailure::Usage(_) | CallFailure::Config(_) => exit_code::USAGE,
            CallFailure::Client { exit_code, .. } => *exit_code,
            CallFailure::Unhealthy { .. } | CallFailure::Output(_) => exit_code::CALL,
        }
    }
}

impl fmt::Display for CallFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallFailure::Usage(message)
            | CallFailure::Client { message, .. }
            | CallFailure::Output(message) => write!(f, "{message}"),
            CallFailure::Config(error) => write!(f, "{error}"),
            CallFailure::Unhealthy { validator } => {
                write!(f, "{validator}: the supervisor reports problems")
            }
        }
    }
}

/// Everything `call` needs before connecting, checked.
#[derive(Debug)]
pub struct PreparedCall {
    pub options: ConnectOptions,
    pub validator: String,
    pub operator: String,
    pub method: String,
    pub params: Option<Value>,
}

/// Check the request against the configuration and load the key: every
/// usage problem is found here, before any connection.
pub fn prepare(request: &CallRequest) -> Result<PreparedCall, CallFailure> {
    let method = request.method.as_str();
    if SECRET_METHODS.contains(&method) {
        return Err(CallFailure::Usage(format!(
            "{method} takes a secret, and secrets are never typed on a bastion: run \
             `palisade-ctl unlock` on the validator host, or from your own machine with \
             `palisade-ctl --via` (end-to-end TLS: the bastion cannot read it)"
        )));
    }
    if method.is_empty() || method.chars().any(char::is_control) {
        return Err(CallFailure::Usage(format!(
            "{method:?} is not a method name"
        )));
    }
    let params = request
        .params
        .as_deref()
        .map(serde_json::from_str::<Value>)
        .transpose()
        .map_err(|error| CallFailure::Usage(format!("--params is not JSON: {error}")))?;
    // The contract's check, before anything connects: a typo'd field is a
    // usage error here rather than a refusal there.
    if let Some(info) = palisade_wire::rpc::methods::method_info(method) {
        (info.check_params)(params.clone().unwrap_or(Value::Null))
            .map_err(|error| CallFailure::Usage(format!("{method}: {}", clean(&error.message))))?;
    }
    // The key is loaded below, so that an unusable key is an
    // authentication failure (exit 4) as in palisade-ctl.
    let config = BastionConfig::load_skipping_key(&request.config).map_err(CallFailure::Config)?;
    let validator = config
        .validator(&request.validator)
        .map_err(CallFailure::Usage)?;
    let file = request.config.display();
    let client = config.client.as_ref().ok_or_else(|| {
        CallFailure::Usage(format!(
            "`call` needs the bastion's RPC identity: add a [client] table (operator, key) \
             to {file} (docs/bastion.md)"
        ))
    })?;
    let pin = validator.pin.clone().ok_or_else(|| {
        CallFailure::Usage(format!(
            "validator {} has no `pin` in {file}: add pin = \"sha256:…\", the supervisor's \
             RPC certificate (`palisade-supervisor rpc-fingerprint` on the validator host)",
            validator.name
        ))
    })?;
    let key = client.load_key().map_err(|error| CallFailure::Client {
        message: clean(&error.to_string()),
        exit_code: exit_code::for_failure(error.kind()),
    })?;
    Ok(PreparedCall {
        options: ConnectOptions {
            endpoint: Endpoint::Socket(validator.socket.clone()),
            tls: TlsPolicy::Always,
            server_uids: Vec::new(),
            pin: Some(pin),
            operator: Some(key),
            call_timeout: request.timeout,
        },
        validator: validator.name.clone(),
        operator: client.operator.clone(),
        method: request.method.clone(),
        params,
    })
}

/// Run `call`: print the result on stdout.
pub fn run(request: &CallRequest) -> Result<(), CallFailure> {
    let prepared = prepare(request)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| CallFailure::Output(format!("cannot start the runtime: {error}")))?;
    let result = runtime.block_on(execute(prepared))?;
    let text = if request.json {
        serde_json::to_string(&result)
    } else {
        serde_json::to_string_pretty(&result)
    }
    .map_err(|error| CallFailure::Output(format!("cannot encode JSON: {error}")))?;
    println!("{}", palisade_client::peer_text::escape_json_output(&text));
    // As palisade-ctl: a `health` with problems is a failed call.
    let healthy = || {
        serde_json::from_value::<palisade_wire::rpc::results::HealthResult>(result.clone())
            .is_ok_and(|health| health.ok)
    };
    if request.method == "health" && !healthy() {
        return Err(CallFailure::Unhealthy {
            validator: request.validator.clone(),
        });
    }
    Ok(())
}

/// Connect, log in, call.
async fn execute(prepared: PreparedCall) -> Result<Value, CallFailure> {
    let PreparedCall {
        options,
        validator,
        operator,
        method,
        params,
    } = prepared;
    let mut client = Client::connect(options).await.map_err(|error| {
        let message = match &error {
            CallError::Auth(rpc) => format!(
                "{validator}: login as {operator} refused: {}; the supervisor needs an \
                 [[operator]] entry with name = \"{operator}\", this bastion's public key and \
                 role = \"viewer\"",
                describe_rpc_error(rpc)
            ),
            other => format!("{validator}: {}", clean(&other.to_string())),
        };
        CallFailure::Client {
            message,
            exit_code: exit_code::for_failure(error.kind()),
        }
    })?;
    let role = client.role();
    if let Some(role) = role.filter(|role| *role > Role::Viewer) {
        eprintln!(
            "palisade-bastion: warning: {validator}'s supervisor grants {operator} the role \
             {role}; a bastion's key should be a viewer (set role = \"viewer\" in its \
             [[operator]] entry)"
        );
    }
    client.call(&method, params).await.map_err(|error| {
        let message = match &error {
            CallError::Auth(rpc) if rpc.code == code::FORBIDDEN => format!(
                "{validator}: {method} refused by the supervisor: {}; the bastion logs in as \
                 {operator}, role {}, and a bastion's key should stay a viewer",
                describe_rpc_error(rpc),
                role.map(|role| role.to_string())
                    .unwrap_or_else(|| "unknown".into())
            ),
            CallError::Auth(rpc) | CallError::Rpc(rpc) => {
                let mut text = format!("{validator}: {method}: {}", describe_rpc_error(rpc));
                if let Some(data) = &rpc.data {
                    let mut data = clean(&data.to_string());
                    truncate(&mut data);
                    text.push_str(&format!(" {data}"));
                }
                text
            }
            other => format!("{validator}: {method}: {}", clean(&other.to_string())),
        };
        CallFailure::Client {
            message,
            exit_code: exit_code::for_failure(error.kind()),
        }
    })
}
