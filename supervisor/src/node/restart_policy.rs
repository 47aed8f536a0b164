//! What to do when the daemon exits on its own: restart after a backoff,
//! stop because it is crash-looping, or accept a clean exit.
//!
//! A pure function of the exit, how long the run lasted, the time and a
//! jitter sample: no clocks, no processes, so every case is a table row.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::RestartSettings;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// Exited with a status code.
    Code(i32),
    /// Killed by a signal.
    Signal(i32),
}

impl std::fmt::Display for ExitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitKind::Code(code) => write!(f, "exit status {code}"),
            ExitKind::Signal(signal) => {
                let name = nix::sys::signal::Signal::try_from(*signal)
                    .map(|signal| signal.as_str().to_string())
                    .unwrap_or_else(|_| format!("signal {signal}"));
                write!(f, "killed by {name}")
            }
        }
    }
}

/// The decision after an unrequested exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterExit {
    /// Start the daemon again after `delay`.
    Restart { delay: Duration, crash_number: u32 },
    /// The daemon exited with status 0 on its own (e.g. `halt-height`):
    /// not a crash; the supervisor stops too, as Cosmovisor does.
    CleanExit,
    /// Too many crashes too quickly: stop restarting and say why.
    CrashLoop { crashes: u32, window: Duration },
}

/// Crash bookkeeping across restarts.
#[derive(Debug, Clone)]
pub struct RestartPolicy {
    settings: RestartSettings,
    recent_crashes: VecDeque<Instant>,
    consecutive_crashes: u32,
}

impl RestartPolicy {
    pub fn new(settings: RestartSettings) -> RestartPolicy {
        RestartPolicy {
            settings,
            recent_crashes: VecDeque::new(),
            consecutive_crashes: 0,
        }
    }

    /// Decide after the daemon exited without being asked to.
    /// `jitter` is a sample in `[0, 1)`.
    pub fn after_exit(
        &mut self,
        exit: ExitKind,
        ran_for: Duration,
        now: Instant,
        jitter: f64,
    ) -> AfterExit {
        if exit == ExitKind::Code(0) {
            return AfterExit::CleanExit;
        }
        if ran_for >= self.settings.healthy_after {
            // A long healthy run: this crash starts a fresh backoff.
            self.consecutive_crashes = 0;
        }
        self.consecutive_crashes += 1;
        self.recent_crashes.push_back(now);
        while let Some(&oldest) = self.recent_crashes.front() {
            if now.duration_since(oldest) > self.settings.crash_loop_window {
                self.recent_crashes.pop_front();
            } else {
                break;
            }
        }
        let crashes = self.recent_crashes.len() as u32;
        if crashes >= self.settings.crash_loop_max_crashes {
            return AfterExit::CrashLoop {
                crashes,
                window: self.settings.crash_loop_window,
            };
        }
        AfterExit::Restart {
            delay: self.backoff(jitter),
            crash_number: self.consecutive_crashes,
        }
    }

    /// Exponential backoff with "equal jitter": half the delay is fixed,
    /// half is random, so restarts of many validators do not synchronise
    /// yet each still waits at least half the nominal delay.
    fn backoff(&self, jitter: f64) -> Duration {
        let exponent = self.consecutive_crashes.saturating_sub(1).min(30);
        let nominal = self
            .settings
            .backoff_initial
            .saturating_mul(1u32 << exponent)
            .min(self.settings.backoff_max);
        let half = nominal / 2;
        half + half.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> RestartSettings {
        RestartSettings {
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(8),
            crash_loop_max_crashes: 5,
            crash_loop_window: Duration::from_secs(60),
            healthy_after: Duration::from_secs(30),
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let start = Instant::now();
        let mut policy = RestartPolicy::new(RestartSettings {
            crash_loop_max_crashes: 100,
            ..settings()
        });
        // (seconds after start, jitter, expected delay in ms)
        let rows = [
            (0, 0.0, 500),
            (1, 1.0, 2000),
            (2, 0.5, 3000),
            (3, 0.0, 4000),
            (4, 0.0, 4000),
            (5, 1.0, 8000),
        ];
        for (second, jitter, expected_ms) in rows {
            let decision = policy.after_exit(
                ExitKind::Code(1),
                Duration::from_secs(1),
                start + Duration::from_secs(second),
                jitter,
            );
            match decision {
                AfterExit::Restart { delay, .. } => {
                    assert_eq!(delay, Duration::from_millis(expected_ms), "row {second}")
                }
                other => panic!("row {second}: {other:?}"),
            }
        }
    }

    #[test]
    fn healthy_run_resets_backoff() {
        let start = Instant::now();
        let mut policy = RestartPolicy::new(settings());
        for second in 0..3 {
            policy.after_exit(
                ExitKind::Signal(9),
                Duration::from_secs(1),
                start + Duration::from_secs(second),
                0.0,
            );
        }
        let decision = policy.after_exit(
            ExitKind::Code(2),
            Duration::from_secs(31),
            start + Duration::from_secs(40),
            0.0,
        );
        assert_eq!(
            decision,
            AfterExit::Restart {
                delay: Duration::from_millis(500),
                crash_number: 1
            }
        );
    }

    #[test]
    fn crash_loop_is_detected_within_the_window_only() {
        let start = Instant::now();
        let mut policy = RestartPolicy::new(settings());
        // Four crashes spread over more than the window never trip it.
        for minute in 0..4 {
            let decision = policy.after_exit(
                ExitKind::Code(1),
                Duration::from_secs(1),
                start + Duration::from_secs(61 * minute),
                0.0,
            );
            assert!(
                matches!(decision, AfterExit::Restart { .. }),
                "{decision:?}"
            );
        }
        // Five within a minute do.
        let base = start + Duration::from_secs(1000);
        let mut last = None;
        for second in 0..5 {
            last = Some(policy.after_exit(
                ExitKind::Code(1),
                Duration::from_secs(1),
                base + Duration::from_secs(second),
                0.0,
            ));
        }
        assert_eq!(
            last.unwrap(),
            AfterExit::CrashLoop {
                crashes: 5,
                window: Duration::from_secs(60)
            }
        );
    }

    #[test]
    fn clean_exit_is_not_a_crash() {
        let mut policy = RestartPolicy::new(settings());
        assert_eq!(
            policy.after_exit(ExitKind::Code(0), Duration::ZERO, Instant::now(), 0.5),
            AfterExit::CleanExit
        );
    }

    #[test]
    fn exit_kinds_read_well() {
        assert_eq!(ExitKind::Code(3).to_string(), "exit status 3");
        assert_eq!(ExitKind::Signal(9).to_string(), "killed by SIGKILL");
    }
}
