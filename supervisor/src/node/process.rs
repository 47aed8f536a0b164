//! The thin executor: spawns, signals and reaps processes. No policy here.
//!
//! - The supervisor is a child subreaper, so processes the daemon leaves
//!   behind are re-parented to it and reaped here, never left as zombies.
//! - One reaper owns `waitpid(-1)`. Spawning registers the pid while
//!   holding the reaper's lock, so any pid the reaper sees that is not
//!   registered is an orphan, and a fast-exiting child is never missed.
//! - Children run in their own process group with `PR_SET_PDEATHSIG`
//!   (see [`crate::sys`]); stops signal the whole group.
//!
//! The pdeath signal fires when the *thread* that forked exits, so spawns
//! happen only from the runtime's main thread (the supervisor uses a
//! current-thread runtime) — never from a blocking-pool thread.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::sync::oneshot;

use crate::config::OutputSettings;
use crate::node::output::{OutputStats, Sink, Stream, StreamCapture};
use crate::node::restart_policy::ExitKind;
use crate::upgrade::plan::UpgradePlan;

/// Errors starting a process.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The program could not be executed.
    #[error("cannot start {}: {source}", program.display())]
    Exec {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Pipes or capture threads could not be set up.
    #[error("cannot set up output capture: {0}")]
    Capture(#[source] std::io::Error),
}

#[derive(Default)]
struct ReaperState {
    waiting: HashMap<i32, oneshot::Sender<ExitKind>>,
}

/// Owns `waitpid(-1)` for the whole process.
#[derive(Clone)]
pub struct Reaper {
    state: Arc<Mutex<ReaperState>>,
    /// `[daemon] user`/`group` as (uid, gid): what the node and the
    /// pre-upgrade helpers run as; `None`: the supervisor's own account.
    node_account: Option<(u32, u32)>,
}

/// Whose account a helper command runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunAs {
    /// The node's (`[daemon] user`): pre-upgrade scripts, which the
    /// release or its operator provides with the node.
    Node,
    /// The supervisor's own: `host.shutdown`'s command.
    Supervisor,
}

impl Reaper {
    /// Become a child subreaper and start reaping on SIGCHLD. Must be
    /// called inside the tokio runtime.
    pub fn start(node_account: Option<(u32, u32)>) -> std::io::Result<Reaper> {
        if let Err(error) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::warn!(%error, "cannot become a child subreaper; orphans of the daemon will be reaped by init");
        }
        let reaper = Reaper {
            state: Arc::new(Mutex::new(ReaperState::default())),
            node_account,
        };
        let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
        let task_reaper = reaper.clone();
        tokio::spawn(async move {
            loop {
                task_reaper.reap_all();
                if sigchld.recv().await.is_none() {
                    break;
                }
            }
        });
        Ok(reaper)
    }

    fn reap_all(&self) {
        let mut state = self.state.lock().expect("reaper lock");
        loop {
            let (pid, exit) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, ExitKind::Code(code)),
                Ok(WaitStatus::Signaled(pid, signal, _)) => (pid, ExitKind::Signal(signal as i32)),
                Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => return,
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(error) => {
                    tracing::warn!(%error, "waitpid failed");
                    return;
                }
            };
            match state.waiting.remove(&pid.as_raw()) {
                Some(sender) => {
                    let _ = sender.send(exit);
                }
                None => {
                    tracing::info!(pid = pid.as_raw(), %exit, "reaped an orphaned process left behind by the daemon")
                }
            }
        }
    }

    /// Spawn `command` and register it atomically with respect to reaping.
    fn spawn(
        &self,
        command: &mut std::process::Command,
    ) -> std::io::Result<(Pid, oneshot::Receiver<ExitKind>)> {
        let mut state = self.state.lock().expect("reaper lock");
        let child = command.spawn()?;
        let pid = Pid::from_raw(child.id() as i32);
        // `child` is dropped without waiting: the reaper owns waitpid.
        drop(child);
        let (sender, receiver) = oneshot::channel();
        state.waiting.insert(pid.as_raw(), sender);
        Ok((pid, receiver))
    }

    /// Run a short helper command (pre-upgrade scripts) to completion in
    /// its own process group, its output forwarded like the daemon's.
    pub async fn run_to_completion(
        &self,
        program: &Path,
        args: &[OsString],
        timeout: Duration,
        run_as: RunAs,
    ) -> Result<ExitKind, SpawnError> {
        let mut command = std::process::Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit());
        let account = match run_as {
            RunAs::Node => self.node_account,
            RunAs::Supervisor => None,
        };
        crate::sys::child_in_own_group_killed_with_parent(&mut command, account);
        let (pid, mut exit) = self
            .spawn(&mut command)
            .map_err(|source| SpawnError::Exec {
                program: program.to_path_buf(),
                source,
            })?;
        match tokio::time::timeout(timeout, &mut exit).await {
            Ok(result) => Ok(result.unwrap_or(ExitKind::Signal(9))),
            Err(_) => {
                tracing::warn!(program = %program.display(), ?timeout, "helper timed out; killing it");
                let _ = killpg(pid, Signal::SIGKILL);
                Ok(exit.await.unwrap_or(ExitKind::Signal(9)))
            }
        }
    }
}

/// A running daemon.
pub struct Daemon {
    pid: Pid,
    exit: oneshot::Receiver<ExitKind>,
    exited: Option<ExitKind>,
    started: Instant,
    captures: Vec<StreamCapture>,
    pub stats: Arc<OutputStats>,
}

/// Where the daemon's output goes.
pub enum OutputTarget {
    Inherit,
    Discard,
}

/// How a stop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// Exited within the grace period.
    Exited(ExitKind),
    /// Needed SIGKILL after the grace period.
    Killed,
    /// Was already gone.
    AlreadyExited(ExitKind),
}

impl Daemon {
    /// Start `program args…`, capturing its output.
    pub fn spawn(
        reaper: &Reaper,
        program: &Path,
        args: &[OsString],
        output: OutputSettings,
        target: OutputTarget,
        upgrades: tokio::sync::mpsc::UnboundedSender<UpgradePlan>,
    ) -> Result<Daemon, SpawnError> {
        let (stdout_read, stdout_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| SpawnError::Capture(e.into()))?;
        let (stderr_read, stderr_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| SpawnError::Capture(e.into()))?;
        let mut command = std::process::Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout_write))
            .stderr(Stdio::from(stderr_write));
        crate::sys::child_in_own_group_killed_with_parent(&mut command, reaper.node_account);
        let (pid, exit) = reaper
            .spawn(&mut command)
            .map_err(|source| SpawnError::Exec {
                program: program.to_path_buf(),
                source,
            })?;
        // Close our copies of the write ends so readers see EOF at exit.
        drop(command);
        let started = Instant::now();
        let stats = Arc::new(OutputStats::default());
        let sink = |stream| match target {
            OutputTarget::Inherit => {
                let _ = stream;
                Sink::Inherit
            }
            OutputTarget::Discard => Sink::Discard,
        };
        let captures = vec![
            StreamCapture::start(
                Stream::Stdout,
                stdout_read,
                sink(Stream::Stdout),
                output,
                stats.clone(),
                upgrades.clone(),
            )
            .map_err(SpawnError::Capture)?,
            StreamCapture::start(
                Stream::Stderr,
                stderr_read,
                sink(Stream::Stderr),
                output,
                stats.clone(),
                upgrades,
            )
            .map_err(SpawnError::Capture)?,
        ];
        Ok(Daemon {
            pid,
            exit,
            exited: None,
            started,
            captures,
            stats,
        })
    }

    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// When it was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// SIGKILL whatever is left in the daemon's process group (helpers it
    /// spawned), also after the daemon itself exited.
    pub fn kill_group(&self) {
        let _ = killpg(self.pid, Signal::SIGKILL);
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Wait for the daemon to exit (cancel-safe).
    pub async fn wait(&mut self) -> ExitKind {
        if let Some(exit) = self.exited {
            return exit;
        }
        let exit = (&mut self.exit).await.unwrap_or(ExitKind::Signal(9));
        self.exited = Some(exit);
        exit
    }

    /// Signal the daemon's process group.
    pub fn signal(&self, signal: Signal) {
        if self.exited.is_none() {
            let _ = killpg(self.pid, signal);
        }
    }

    /// Stop: `signal` to the group, wait up to `grace`, then SIGKILL. Any
    /// process left in the group afterwards is killed too.
    pub async fn stop(&mut self, signal: Signal, grace: Duration) -> StopOutcome {
        if let Some(exit) = self.exited {
            return StopOutcome::AlreadyExited(exit);
        }
        self.signal(signal);
        let outcome = match tokio::time::timeout(grace, self.wait()).await {
            Ok(exit) => StopOutcome::Exited(exit),
            Err(_) => {
                tracing::warn!(
                    pid = self.pid(),
                    ?grace,
                    "daemon did not exit within the shutdown grace; sending SIGKILL"
                );
                self.kill_now().await;
                StopOutcome::Killed
            }
        };
        // Stragglers in the daemon's group (helpers it spawned) go too.
        let _ = killpg(self.pid, Signal::SIGKILL);
        outcome
    }

    /// SIGKILL the group and wait for the exit.
    pub async fn kill_now(&mut self) -> ExitKind {
        let _ = killpg(self.pid, Signal::SIGKILL);
        self.wait().await
    }

    /// Let the capture threads finish in the background, and log what
    /// passed through them.
    pub fn release_output(&mut self) {
        let captures = std::mem::take(&mut self.captures);
        if !captures.is_empty() {
            use std::sync::atomic::Ordering::Relaxed;
            tracing::info!(
                pid = self.pid(),
                bytes_read = self.stats.bytes_read.load(Relaxed),
                lines_forwarded = self.stats.lines_forwarded.load(Relaxed),
                lines_dropped = self.stats.lines_dropped.load(Relaxed),
                lines_truncated = self.stats.lines_truncated.load(Relaxed),
                "daemon output statistics"
            );
        }
        if !captures.is_empty() {
            std::thread::spawn(move || {
                for capture in captures {
                    capture.join();
                }
            });
        }
    }
}

/// Live processes still parented to us (orphans re-parented to the
/// subreaper that have not exited yet; zombies are dead and left to the
/// reaper). Read from `/proc`.
pub fn remaining_children() -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // Fields after the parenthesised command name: state, ppid, ...
            let Some(after) = stat.rfind(')').map(|end| &stat[end + 2..]) else {
                return false;
            };
            let mut fields = after.split(' ');
            let state = fields.next();
            let parent = fields.next().and_then(|ppid| ppid.parse::<i32>().ok());
            parent == Some(me) && state != Some("Z")
        })
        .collect()
}

/// Terminate every remaining child (TERM, short wait, KILL) so the
/// supervisor never exits leaving orphans behind.
pub async fn kill_remaining_children(grace: Duration) {
    let children = remaining_children();
    if children.is_empty() {
        return;
    }
    tracing::warn!(?children, "terminating processes the daemon left behind");
    for pid in &children {
        let _ = nix::sys::signal::kill(Pid::from_raw(*pid), Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && !remaining_children().is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for pid in remaining_children() {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}
