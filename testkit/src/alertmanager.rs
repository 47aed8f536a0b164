//! [`Alertmanager`]: the real Debian `prometheus-alertmanager` on a free loopback port, with
//! the caller's configuration, its own temporary directory (configuration, storage, log), no
//! clustering, and killed on drop. Tests post alerts to its v2 API and check what its
//! receivers deliver (e.g. to a [`crate::http_receiver::HttpReceiver`]).
//!
//! A missing program is an error, never a skipped test (`scripts/test.sh` installs the package).

use std::fmt;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Error, LOG_TAIL, POLL, Result};

/// The program's name on `PATH` (Debian's package name for the binary).
pub const ALERTMANAGER: &str = "prometheus-alertmanager";
/// The environment variable that names the program instead (a path).
pub const ALERTMANAGER_ENV: &str = "PALISADE_ALERTMANAGER";
/// How long Alertmanager gets to answer `/-/ready` after it was started.
pub const ALERTMANAGER_WAIT: Duration = Duration::from_secs(30);
/// How long one readiness probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Ports tried when the one picked is taken before Alertmanager binds it.
const PORT_TRIES: usize = 3;

/// A running Alertmanager; see the module documentation.
pub struct Alertmanager {
    child: Option<Child>,
    port: u16,
    program: PathBuf,
    dir: tempfile::TempDir,
}

impl Alertmanager {
    /// Writes `config` (alertmanager.yml) to a new temporary directory, starts Alertmanager on
    /// a free loopback port and waits (up to [`ALERTMANAGER_WAIT`]) until `/-/ready` answers
    /// 200.
    pub fn start(config: &str) -> Result<Alertmanager> {
        let program = std::env::var_os(ALERTMANAGER_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(ALERTMANAGER));
        let mut tries = 0;
        loop {
            tries += 1;
            let dir = tempfile::Builder::new()
                .prefix("alertmanager-")
                .tempdir()
                .map_err(|e| Error::new(format!("creating a temporary directory: {e}")))?;
            std::fs::write(dir.path().join("alertmanager.yml"), config)
                .map_err(|e| Error::new(format!("writing alertmanager.yml: {e}")))?;
            let mut alertmanager = Alertmanager {
                child: None,
                port: crate::free_port()?,
                program: program.clone(),
                dir,
            };
            alertmanager.spawn()?;
            match alertmanager.wait_ready() {
                Ok(()) => return Ok(alertmanager),
                Err(_)
                    if tries < PORT_TRIES
                        && alertmanager.log().contains("address already in use") => {}
                Err(error) => return Err(error),
            }
        }
    }

    /// `http://127.0.0.1:PORT` followed by `path`, e.g. `/api/v2/alerts`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its log (stdout and stderr) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("alertmanager.log")).unwrap_or_default()
    }

    fn spawn(&mut self) -> Result<()> {
        let log_path = self.dir.path().join("alertmanager.log");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| Error::new(format!("creating {}: {e}", log_path.display())))?;
        let log_err = log
            .try_clone()
            .map_err(|e| Error::new(format!("{}: {e}", log_path.display())))?;
        let child = Command::new(&self.program)
            .arg(format!(
                "--config.file={}",
                self.dir.path().join("alertmanager.yml").display()
            ))
            .arg(format!(
                "--storage.path={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            // No gossip: one instance, and no port of its own.
            .arg("--cluster.listen-address=")
            .arg("--log.level=debug")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| {
                Error::new(format!(
                    "cannot run {} ({e}): install the Debian package prometheus-alertmanager \
                     (scripts/test.sh does) or set {ALERTMANAGER_ENV}",
                    self.program.display()
                ))
            })?;
        self.child = Some(child);
        Ok(())
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + ALERTMANAGER_WAIT;
        loop {
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(Error::new(format!(
                    "alertmanager exited with {status} before it was ready:\n{}",
                    crate::last_lines(&self.log(), LOG_TAIL)
                )));
            }
            if crate::http_status(self.port, "/-/ready", PROBE_TIMEOUT) == Some(200) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::new(format!(
                    "alertmanager did not answer /-/ready within {ALERTMANAGER_WAIT:?}:\n{}",
                    crate::last_lines(&self.log(), LOG_TAIL)
                )));
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl fmt::Debug for Alertmanager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Alertmanager")
            .field("port", &self.port)
            .field("dir", &self.dir.path())
            .finish()
    }
}
