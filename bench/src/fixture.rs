//! A simulated chain with one external validator whose home is in Cosmovisor
//! layout, driven by the real `palisade-supervisor`, `simd` and `simchain-net`
//! binaries (the same setup as the supervisor's integration tests).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use palisade_simchain::protocol::UpgradePlan;
use palisade_simchain::testkit::{
    SimNetwork, SimNetworkOptions, free_port, write_validator_home, write_versioned_binary,
};

/// Paths of the sibling binaries this benchmark drives.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub supervisor: PathBuf,
    pub simd: PathBuf,
    pub simchain_net: PathBuf,
}

impl Binaries {
    /// Looks for the binaries next to this executable (`target/release/`).
    pub fn locate() -> anyhow::Result<Binaries> {
        let exe = std::env::current_exe().context("locating palisade-bench's own executable")?;
        let dir = exe
            .parent()
            .context("palisade-bench's executable has no parent directory")?;
        let find = |name: &str| -> anyhow::Result<PathBuf> {
            let path = dir.join(name);
            if !path.is_file() {
                bail!(
                    "{} is missing: run `cargo build --release --workspace --bins` first",
                    path.display()
                );
            }
            Ok(path)
        };
        Ok(Binaries {
            supervisor: find("palisade-supervisor")?,
            simd: find("simd")?,
            simchain_net: find("simchain-net")?,
        })
    }
}

/// Validator name in the genesis and the record.
const VALIDATOR: &str = "val1";

/// A running chain whose external validator's home is `DAEMON_HOME`, with
/// `genesis` installed by `palisade-supervisor init` (a v1 binary without
/// upgrade handlers). Everything lives in a temporary directory.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub home: PathBuf,
    pub network: SimNetwork,
    bins: Binaries,
}

impl Fixture {
    pub fn start(bins: &Binaries, block_time: Duration) -> anyhow::Result<Fixture> {
        let dir = tempfile::Builder::new()
            .prefix("palisade-bench-")
            .tempdir()?;
        let home = dir.path().join("home");
        let validator =
            write_validator_home(&home, VALIDATOR, "sim-1", "127.0.0.1:1", free_port())?;
        let network = SimNetwork::spawn(
            &bins.simchain_net,
            std::slice::from_ref(&validator),
            &SimNetworkOptions {
                block_time,
                upgrades: Vec::<UpgradePlan>::new(),
                log_file: Some(dir.path().join("network.log")),
                ..SimNetworkOptions::default()
            },
        )?;
        network.attach_home(&home)?;
        let fixture = Fixture {
            dir,
            home,
            network,
            bins: bins.clone(),
        };
        let genesis = fixture.version_binary("v1", &[])?;
        let output = fixture
            .supervisor_command(&[])
            .arg("init")
            .arg(&genesis)
            .output()
            .context("running palisade-supervisor init")?;
        if !output.status.success() {
            bail!(
                "palisade-supervisor init failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(fixture)
    }

    /// A "binary" (a script exec'ing simd with a version identity).
    pub fn version_binary(&self, version: &str, handlers: &[&str]) -> anyhow::Result<PathBuf> {
        let path = self.dir.path().join("binaries").join(version).join("simd");
        write_versioned_binary(&path, &self.bins.simd, version, handlers)?;
        Ok(path)
    }

    /// `palisade-supervisor` with a clean Cosmovisor environment for this home.
    pub fn supervisor_command(&self, env: &[(&str, &str)]) -> Command {
        let mut command = Command::new(&self.bins.supervisor);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("DAEMON_HOME", &self.home)
            .env("DAEMON_NAME", "simd")
            .env("DAEMON_POLL_INTERVAL", "50ms")
            .env("DAEMON_SHUTDOWN_GRACE", "5s")
            .env("PALISADE_LOG", "info");
        for (key, value) in env {
            command.env(key, value);
        }
        command
    }

    /// `palisade-supervisor add-upgrade NAME BINARY`.
    pub fn add_upgrade(&self, name: &str, binary: &Path) -> anyhow::Result<()> {
        let output = self
            .supervisor_command(&[])
            .args(["add-upgrade", name])
            .arg(binary)
            .output()
            .context("running palisade-supervisor add-upgrade")?;
        if !output.status.success() {
            bail!(
                "palisade-supervisor add-upgrade failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// `palisade-supervisor run start --home HOME`, output to `supervisor.log`.
    pub fn run_supervisor(&self, env: &[(&str, &str)]) -> anyhow::Result<SupervisorProcess> {
        let log = self.dir.path().join("supervisor.log");
        let file = File::create(&log)?;
        let mut command = self.supervisor_command(env);
        command
            .args(["run", "start", "--home"])
            .arg(&self.home)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let child = command.spawn().context("spawning palisade-supervisor")?;
        Ok(SupervisorProcess { child, log })
    }

    /// Signed heights of the external validator so far.
    pub fn signed_heights(&self) -> anyhow::Result<u64> {
        let record = self.network.record()?;
        Ok(record
            .validators
            .get(VALIDATOR)
            .map_or(0, |v| v.signed_heights))
    }

    /// Waits until the validator has signed `count` more heights.
    pub fn wait_signing(
        &self,
        supervisor: &mut SupervisorProcess,
        count: u64,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let start = self.signed_heights()?;
        let deadline = Instant::now() + timeout;
        loop {
            if self.signed_heights()? >= start + count {
                return Ok(());
            }
            supervisor.ensure_running()?;
            if Instant::now() >= deadline {
                bail!(
                    "the validator did not sign {count} heights within {timeout:?}; supervisor log:\n{}",
                    supervisor.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// `cosmovisor/palisade-upgrades.jsonl`.
    pub fn upgrade_records_path(&self) -> PathBuf {
        self.home.join("cosmovisor").join("palisade-upgrades.jsonl")
    }
}

/// A running supervisor: SIGTERM (then SIGKILL after 10 s) on drop. Its
/// children die with it (it sets `PR_SET_PDEATHSIG` on them).
pub struct SupervisorProcess {
    child: Child,
    log: PathBuf,
}

impl SupervisorProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A `Vm*` field of `/proc/PID/status` (`VmRSS`, `VmHWM`, …), in KiB.
    pub fn status_kib(&self, field: &str) -> anyhow::Result<u64> {
        let pid = self.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading /proc/{pid}/status"))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .with_context(|| format!("no {field} in /proc/{pid}/status"))
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "palisade-supervisor exited early ({status}); log:\n{}",
                self.log_tail(30)
            );
        }
        Ok(())
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.terminate_and_wait()
    }

    fn terminate_and_wait(&mut self) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!(
                        "palisade-supervisor exited with {status} after SIGTERM; log:\n{}",
                        self.log_tail(30)
                    );
                }
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("palisade-supervisor did not exit within 10 s of SIGTERM; killed it");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for SupervisorProcess {
    fn drop(&mut self) {
        let _ = self.terminate_and_wait();
    }
}
