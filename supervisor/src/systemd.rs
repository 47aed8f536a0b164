//! systemd `Type=notify` integration: READY, STATUS, STOPPING, WATCHDOG.
//!
//! All calls are no-ops when the supervisor is not started by systemd
//! (no `NOTIFY_SOCKET`). The watchdog is pinged from the main loop, so a
//! wedged loop stops the pings and systemd restarts the service.

use std::time::Duration;

use sd_notify::NotifyState;

/// Sends notifications to systemd when it is listening.
#[derive(Debug, Clone)]
pub struct Notifier {
    enabled: bool,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Detect systemd from the environment.
    pub fn from_env() -> Notifier {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some();
        let watchdog = if enabled {
            sd_notify::watchdog_enabled().filter(|timeout| !timeout.is_zero())
        } else {
            None
        };
        Notifier { enabled, watchdog }
    }

    /// How often to ping: half the configured watchdog timeout.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|timeout| timeout / 2)
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if self.enabled
            && let Err(error) = sd_notify::notify(states)
        {
            tracing::debug!(%error, "sd_notify failed");
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    pub fn stopping(&self, status: &str) {
        self.send(&[NotifyState::Stopping, NotifyState::Status(status)]);
    }

    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }
}
