//! systemd `Type=notify` integration: READY, STATUS, STOPPING, WATCHDOG.
//!
//! All calls are no-ops when the daemon is not started by systemd (no
//! `NOTIFY_SOCKET`). The watchdog, when the unit sets `WatchdogSec=`, is
//! pinged by the caller from its main loop, so a wedged loop stops the pings
//! and systemd restarts the service.
//!
//! Sends never block: the socket is non-blocking, and a notification that
//! does not fit in the queue is dropped (the next one carries the current
//! state anyway). `sd_notify::notify` uses a blocking send, which would
//! stall a main loop on a full queue, so only its message format and
//! watchdog detection are used.

use std::fmt::Write as _;
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;

/// Sends notifications to systemd when it is listening.
#[derive(Debug, Clone)]
pub struct Notifier {
    socket: Option<Arc<UnixDatagram>>,
    watchdog: Option<Duration>,
}

/// Connect a non-blocking datagram socket to `NOTIFY_SOCKET` (a path, or
/// `@name` for the abstract namespace).
fn connect(address: &std::ffi::OsStr) -> std::io::Result<UnixDatagram> {
    let socket = UnixDatagram::unbound()?;
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(address);
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        socket.connect_addr(&address)?;
    } else {
        socket.connect(address)?;
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}

impl Notifier {
    /// Detect systemd from the environment.
    pub fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET").and_then(|address| {
            connect(&address)
                .inspect_err(|error| tracing::warn!(%error, "cannot connect to NOTIFY_SOCKET; systemd notifications disabled"))
                .ok()
                .map(Arc::new)
        });
        let enabled = socket.is_some();
        let watchdog = if enabled {
            sd_notify::watchdog_enabled().filter(|timeout| !timeout.is_zero())
        } else {
            None
        };
        Notifier { socket, watchdog }
    }

    /// How often to ping: half the configured watchdog timeout.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|timeout| timeout / 2)
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        let Some(socket) = &self.socket else { return };
        let mut message = String::new();
        for state in states {
            let _ = writeln!(message, "{state}");
        }
        if let Err(error) = socket.send(message.as_bytes()) {
            tracing::debug!(%error, "systemd notification dropped");
        }
    }

    /// READY=1 with a status line.
    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// A status line (`systemctl status` shows it).
    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    /// STOPPING=1 with a status line.
    pub fn stopping(&self, status: &str) {
        self.send(&[NotifyState::Stopping, NotifyState::Status(status)]);
    }

    /// WATCHDOG=1: the main loop is alive.
    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }
}
