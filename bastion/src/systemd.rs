//! systemd `Type=notify` integration: READY, STATUS, STOPPING.
//!
//! Every call is a no-op when `NOTIFY_SOCKET` is not set. Sends never
//! block: the socket is non-blocking and a notification that does not fit
//! is dropped (the next one carries the current state anyway).
//! `sd_notify::notify` sends blocking, so only its message format is used.

use std::fmt::Write as _;
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;

use sd_notify::NotifyState;

/// Sends notifications to systemd when it is listening.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    socket: Option<Arc<UnixDatagram>>,
}

/// A non-blocking datagram socket connected to `NOTIFY_SOCKET` (a path, or
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
                .inspect_err(|error| {
                    tracing::warn!(%error, "cannot connect to NOTIFY_SOCKET; systemd notifications disabled")
                })
                .ok()
                .map(Arc::new)
        });
        Notifier { socket }
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

    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    pub fn stopping(&self, status: &str) {
        self.send(&[NotifyState::Stopping, NotifyState::Status(status)]);
    }
}
