//! `host.shutdown`: an operator shuts the validator host down over the
//! control RPC, in two steps so that no single request (a replayed line, a
//! script run by mistake) can do it.
//!
//! 1. `{}` issues a confirmation token: 128 random bits, bound to the
//!    operator who asked, valid for [`CONFIRM_TTL`], usable once.
//! 2. `{"confirm": TOKEN}` from the same operator spends it. The loop
//!    answers, then stops the node cleanly, takes the final backup, wipes
//!    the keys (as `vault.lock` and SIGTERM do), runs `[host]
//!    shutdown-command` ([`run_shutdown_command`]) and the supervisor exits
//!    0 — also when the command fails, so that the service manager does not
//!    restart a validator its operator asked to take down.
//!
//! A wrong, expired, spent or other operator's token changes nothing
//! (−32004); malformed params get −32602 (the contract's
//! `HostShutdownParams`). [`Confirmations`] is pure state
//! over `tokio::time::Instant`, so its lifecycle is tested with paused time.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use palisade_wire::rpc::{RpcError, code};
use tokio::time::Instant;

use crate::node::process::{Reaper, RunAs};
use crate::node::restart_policy::ExitKind;

/// How long a confirmation token is valid.
pub const CONFIRM_TTL: Duration = Duration::from_secs(60);

/// Most tokens outstanding at once (one per operator; the oldest goes).
const MAX_PENDING: usize = 16;

/// Bound on the shutdown command; after it the command is killed.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Length of a token: 16 random bytes as lower-case hex (the params rule
/// is `palisade_wire::rpc::params::is_confirmation_token`).
use palisade_wire::rpc::params::TOKEN_HEX_CHARS;

/// Why a confirmation was refused. Each changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfirmError {
    /// Never issued, already spent, or replaced by a newer token.
    #[error(
        "unknown confirmation token (never issued, already used, or replaced by a newer one); \
         ask again with host.shutdown {{}}; nothing was changed"
    )]
    Unknown,
    /// Issued, but more than [`CONFIRM_TTL`] ago.
    #[error(
        "the confirmation token expired; ask again with host.shutdown {{}}; nothing was changed"
    )]
    Expired,
    /// Issued to another operator.
    #[error(
        "the confirmation token was issued to another operator; each operator confirms their \
         own request; nothing was changed"
    )]
    OtherOperator,
}

impl From<ConfirmError> for RpcError {
    fn from(error: ConfirmError) -> RpcError {
        RpcError::new(code::WRONG_STATE, error.to_string())
    }
}

/// A token being spent; [`Confirmations::put_back`] returns it when the
/// shutdown could not start (the supervisor was busy), so a retry works.
#[derive(Debug)]
pub struct SpentToken(Pending);

#[derive(Debug, Clone)]
struct Pending {
    token: String,
    operator: String,
    expires: Instant,
}

/// The outstanding confirmation tokens.
#[derive(Debug)]
pub struct Confirmations {
    pending: Mutex<Vec<Pending>>,
    ttl: Duration,
}

impl Default for Confirmations {
    fn default() -> Confirmations {
        Confirmations::new(CONFIRM_TTL)
    }
}

impl Confirmations {
    /// Tokens valid for `ttl`.
    pub fn new(ttl: Duration) -> Confirmations {
        Confirmations {
            pending: Mutex::new(Vec::new()),
            ttl,
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Vec<Pending>> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A fresh token for `operator`, replacing any earlier one of theirs;
    /// returns it and how long it is valid.
    pub fn issue(&self, operator: &str) -> (String, Duration) {
        let token = hex::encode(rand::random::<[u8; TOKEN_HEX_CHARS / 2]>());
        let now = Instant::now();
        let mut pending = self.pending();
        pending.retain(|p| p.expires > now && p.operator != operator);
        if pending.len() >= MAX_PENDING {
            pending.remove(0);
        }
        pending.push(Pending {
            token: token.clone(),
            operator: operator.to_owned(),
            expires: now + self.ttl,
        });
        (token, self.ttl)
    }

    /// Spend `token` for `operator`. Refusals leave every token as it was
    /// (an expired one is dropped: it could never be used again anyway).
    pub fn spend(&self, operator: &str, token: &str) -> Result<SpentToken, ConfirmError> {
        let now = Instant::now();
        let mut pending = self.pending();
        let index = pending
            .iter()
            .position(|p| constant_time_eq(p.token.as_bytes(), token.as_bytes()))
            .ok_or(ConfirmError::Unknown)?;
        if pending[index].expires <= now {
            pending.remove(index);
            return Err(ConfirmError::Expired);
        }
        if pending[index].operator != operator {
            return Err(ConfirmError::OtherOperator);
        }
        Ok(SpentToken(pending.remove(index)))
    }

    /// Make a spent token usable again (until its original expiry).
    pub fn put_back(&self, spent: SpentToken) {
        let mut pending = self.pending();
        if pending.len() < MAX_PENDING {
            pending.push(spent.0);
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Where `program` would be executed from: itself when absolute, else the
/// first executable file of that name in `path` (`$PATH`). Checked before
/// a token is issued and again before the shutdown starts, so a command
/// that cannot run is reported to the operator while nothing has happened.
pub fn resolve_program(program: &str, path: Option<&std::ffi::OsStr>) -> Result<PathBuf, String> {
    let executable = |candidate: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(candidate)
            .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.starts_with('/') {
        return if executable(Path::new(program)) {
            Ok(PathBuf::from(program))
        } else {
            Err(format!("{program} is not an executable file"))
        };
    }
    std::env::split_paths(path.unwrap_or_default())
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(program))
        .find(|candidate| executable(candidate))
        .ok_or_else(|| format!("{program} is not found in PATH"))
}

/// Whether the configured command can run now; `Err` is the −32004 answer.
pub fn check_runnable(command: &[String]) -> Result<PathBuf, RpcError> {
    let program = command.first().map(String::as_str).unwrap_or_default();
    resolve_program(program, std::env::var_os("PATH").as_deref()).map_err(|reason| {
        RpcError::new(
            code::WRONG_STATE,
            format!(
                "the host shutdown command {command:?} cannot run: {reason}; fix \
                 [host] shutdown-command; nothing was changed"
            ),
        )
    })
}

/// Run `[host] shutdown-command` to completion (bounded by
/// [`COMMAND_TIMEOUT`]), logging the outcome. The node is already stopped
/// and the keys wiped when this runs; a failure is logged as an error and
/// the supervisor still exits.
pub async fn run_shutdown_command(reaper: &Reaper, command: &[String]) -> Result<(), String> {
    let resolved = check_runnable(command).map_err(|error| error.message)?;
    let args: Vec<OsString> = command.iter().skip(1).map(OsString::from).collect();
    tracing::warn!(?command, program = %resolved.display(), "running the host shutdown command");
    match reaper
        .run_to_completion(&resolved, &args, COMMAND_TIMEOUT, RunAs::Supervisor)
        .await
    {
        Ok(ExitKind::Code(0)) => {
            tracing::info!(?command, "host shutdown command finished");
            Ok(())
        }
        Ok(exit) => Err(format!(
            "the host shutdown command {command:?} failed: {exit}"
        )),
        Err(error) => Err(format!(
            "the host shutdown command {command:?} failed: {error}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_wrong_state_errors_that_say_nothing_changed() {
        for error in [
            ConfirmError::Unknown,
            ConfirmError::Expired,
            ConfirmError::OtherOperator,
        ] {
            let rpc: RpcError = error.into();
            assert_eq!(rpc.code, code::WRONG_STATE);
            assert!(
                rpc.message.contains("nothing was changed"),
                "{}",
                rpc.message
            );
        }
    }

    #[test]
    fn programs_are_resolved_like_exec() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let script = bin.join("poweroff-test");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        let plain = bin.join("not-executable");
        std::fs::write(&plain, "").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        let path = std::env::join_paths([Path::new("relative"), &bin]).unwrap();
        let cases: Vec<(&str, Result<PathBuf, &str>)> = vec![
            ("poweroff-test", Ok(script.clone())),
            (script.to_str().unwrap(), Ok(script.clone())),
            ("not-executable", Err("not found in PATH")),
            (plain.to_str().unwrap(), Err("not an executable file")),
            ("bin", Err("not found in PATH")),
            ("/nonexistent/poweroff", Err("not an executable file")),
        ];
        for (program, expected) in cases {
            let resolved = resolve_program(program, Some(&path));
            match expected {
                Ok(want) => assert_eq!(resolved.unwrap(), want, "{program}"),
                Err(words) => {
                    let error = resolved.unwrap_err();
                    assert!(error.contains(words), "{program}: {error}");
                }
            }
        }
        assert!(resolve_program("poweroff-test", None).is_err());
    }
}
