//! Helpers shared by the integration tests: the backup-store protocol
//! spoken by hand over the real socket, and waiting for real processes.
// Each test crate uses a different subset.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use palisade_wire::backup_store::{ErrorKind, Response, decode_response, encode_header};

pub const BIN: &str = env!("CARGO_BIN_EXE_palisade-bastion");
/// The read timeout of a connection to the backup store: an answer that
/// takes longer means the store is stuck.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a test waits for a process to do what it must (listen, answer,
/// exit, notify systemd, change a validator's state) before failing:
/// generous, because a timeout only fails a test that is already wrong.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Poll `condition` until it holds; panic with `what` after [`PATIENCE`].
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait until something listens on `socket`.
pub fn wait_for_socket(socket: &Path) {
    wait_until("the bastion to listen", || {
        UnixStream::connect(socket).is_ok()
    });
}

pub struct Client {
    pub stream: UnixStream,
}

impl Client {
    pub fn connect(socket: &Path) -> Client {
        let stream = UnixStream::connect(socket).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        Client { stream }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    pub fn send_json(&mut self, json: &str) {
        let mut frame = (json.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(json.as_bytes());
        self.send_raw(&frame);
    }

    pub fn send_payload(&mut self, payload: &[u8]) {
        let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(payload);
        self.send_raw(&frame);
    }

    pub fn read_frame(&mut self) -> Vec<u8> {
        let mut prefix = [0u8; 4];
        self.stream.read_exact(&mut prefix).unwrap();
        let mut body = vec![0u8; u32::from_be_bytes(prefix) as usize];
        self.stream.read_exact(&mut body).unwrap();
        body
    }

    pub fn response(&mut self) -> Response {
        decode_response(&self.read_frame()).unwrap()
    }

    pub fn put(&mut self, validator: &str, file: &str, payload: &[u8]) -> Response {
        let header = palisade_wire::backup_store::Request::Put {
            validator: validator.into(),
            file: file.into(),
            bytes: payload.len() as u64,
            kind: Default::default(),
        };
        self.send_raw(&encode_header(&header));
        self.send_payload(payload);
        self.response()
    }

    pub fn list(&mut self, validator: &str) -> Vec<String> {
        self.send_json(&format!(r#"{{"op":"list","validator":"{validator}"}}"#));
        let response = self.response();
        assert!(response.ok, "{response:?}");
        response.files.unwrap()
    }

    pub fn get(&mut self, validator: &str, file: &str) -> Result<Vec<u8>, ErrorKind> {
        self.send_json(&format!(
            r#"{{"op":"get","validator":"{validator}","file":"{file}"}}"#
        ));
        let response = self.response();
        if !response.ok {
            return Err(response.error.unwrap().kind);
        }
        let payload = self.read_frame();
        assert_eq!(Some(payload.len() as u64), response.bytes);
        Ok(payload)
    }

    pub fn remove(&mut self, validator: &str, file: &str) -> Response {
        self.send_json(&format!(
            r#"{{"op":"remove","validator":"{validator}","file":"{file}"}}"#
        ));
        self.response()
    }

    /// True when the server has closed the connection.
    pub fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.stream.read(&mut byte), Ok(0) | Err(_))
    }
}

pub fn kind(response: &Response) -> ErrorKind {
    assert!(!response.ok, "{response:?}");
    response.error.as_ref().unwrap().kind
}

pub fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Writes `dir/bastion.toml`: listen-socket `dir/run/bastion.sock`,
/// backup-dir `dir/backups`, validators val-a and val-b (sockets in
/// `dir/run`), followed by `extra` (e.g. a `[backups]` table). Returns the
/// file's path.
pub fn write_config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let config = dir.join("bastion.toml");
    std::fs::write(
        &config,
        format!(
            "listen-socket = \"{0}/run/bastion.sock\"\n\
             backup-dir = \"{0}/backups\"\n\
             {extra}\n\
             [[validator]]\nname = \"val-a\"\nsocket = \"{0}/run/val-a.sock\"\n\
             [[validator]]\nname = \"val-b\"\nsocket = \"{0}/run/val-b.sock\"\n",
            dir.display()
        ),
    )
    .unwrap();
    config
}

/// Waits for `child` to exit; kills it and panics naming `what` after
/// [`PATIENCE`].
pub fn wait_for_exit(child: &mut std::process::Child, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Reads `output` (a child's stdout) on a thread until it ends, sending
/// what arrives in chunks of at most 64 KiB: the receiver's
/// `recv_timeout` bounds every wait, and a closed channel is the end.
pub fn read_in_background(
    mut output: impl Read + Send + 'static,
) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let (sender, chunks) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buffer = vec![0u8; 64 * 1024];
        while let Ok(n) = output.read(&mut buffer) {
            if n == 0 || sender.send(buffer[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    chunks
}
