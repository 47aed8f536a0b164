//! `log_ship_lines_per_s` (goal ≥ 100,000) and `log_ship_missed_blocks`
//! (must be 0): the simulated chain's `simd` floods its stdout
//! (`[simchain] log_flood`) while the real supervisor, with `[logs]`,
//! ships its output to a bastion: a real OpenSSH sshd whose forced command
//! is `palisade-bastion backup-session`, and a real `palisade-bastion
//! serve-backups` store. The vault unlocks unattended (passphrase file).
//!
//! Once the validator signs, the store's log objects are read at the start
//! and the end of a [`WINDOW`]: the value is the lines of the segments that
//! arrived in between (from their signed metadata) per second — lines that
//! went from gaiad's stdout through the tap, the segment writer (JSON,
//! zstd, age, ed25519) and the spool to the bastion's disk. Lines the
//! supervisor dropped under the flood are not counted (the detail says how
//! many). Missed blocks: the validator's misses between the window's first
//! and last signed heights, from the chain's record.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use palisade_testkit::{Sshd, SshdOptions, current_user, ssh_keygen};
use palisade_wire::log_segment::SignatureFile;

use crate::fixture::{Binaries, Fixture};
use crate::{Measured, result, round2};

pub const LINES_PER_S: &str = "log_ship_lines_per_s";
pub const MISSED_BLOCKS: &str = "log_ship_missed_blocks";
const GOAL_LINES_PER_S: f64 = 100_000.0;
/// The chain's block time: the flood test's, so that a miss is the
/// supervisor's fault and not two cores' starvation.
const BLOCK_TIME: Duration = Duration::from_millis(400);
/// How long arrivals are counted.
const WINDOW: Duration = Duration::from_secs(20);
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Both figures, from one run.
pub fn run(bins: &Binaries) -> anyhow::Result<(Measured, Measured)> {
    let bastion_bin = bins
        .supervisor
        .parent()
        .context("no binary directory")?
        .join("palisade-bastion");
    if !bastion_bin.is_file() {
        bail!(
            "{} is missing: run `cargo build --release --workspace --bins` first",
            bastion_bin.display()
        );
    }
    let fixture = Fixture::start(bins, BLOCK_TIME)?;
    palisade_simchain::testkit::set_simchain_option(&fixture.home, "log_flood", "true")?;
    let dir = fixture.dir.path();

    // The bastion's store and sshd.
    let run_dir = dir.join("b-run");
    std::fs::create_dir_all(&run_dir)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let listen = run_dir.join("bastion.sock");
    let backups = dir.join("b-store");
    let bastion_config = dir.join("bastion.toml");
    std::fs::write(
        &bastion_config,
        format!(
            "listen-socket = {listen:?}\nbackup-dir = {backups:?}\n\
             [[validator]]\nname = \"val1\"\nsocket = \"{}\"\n",
            run_dir.join("v.sock").display()
        ),
    )?;
    let mut store = KillOnDrop(
        Command::new(&bastion_bin)
            .args(["serve-backups", "--config"])
            .arg(&bastion_config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("store.log"))?)
            .spawn()
            .context("starting palisade-bastion serve-backups")?,
    );
    wait_for(START_TIMEOUT, "the bastion's store to listen", || {
        Ok(listen.exists())
    })?;
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys)?;
    let tunnel_key = keys.join("tunnel");
    let tunnel_public = ssh_keygen(&tunnel_key).map_err(|e| anyhow::anyhow!("{e}"))?;
    let sshd = Sshd::start(SshdOptions::new(
        "127.0.0.1",
        palisade_simchain::testkit::free_port(),
        format!(
            "command=\"{} backup-session --config {} --validator val1\",restrict {}\n",
            bastion_bin.display(),
            bastion_config.display(),
            tunnel_public.trim()
        ),
    ))
    .map_err(|e| anyhow::anyhow!("{e}"))?;

    // The supervisor: a vault unlocked unattended, backups and logs to the
    // bastion.
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let passphrase = dir.join("passphrase");
    std::fs::write(&passphrase, "bench logs passphrase\n")?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&passphrase, std::fs::Permissions::from_mode(0o600))?;
    }
    let shm = tempfile::Builder::new()
        .prefix("palisade-bench-logs-")
        .tempdir_in("/dev/shm")?;
    let tmpfs = shm.path().join("keys");
    let socket = dir.join("run").join("supervisor.sock");
    let spool = dir.join("spool");
    let config = dir.join("palisade.toml");
    std::fs::write(
        &config,
        format!(
            "[vault]\nswap = \"warn\"\ntmpfs-dir = {tmpfs:?}\nscrypt-work-factor = 10\n\
             passphrase-file = {passphrase:?}\n\
             [backup]\ndebounce = \"100ms\"\nchain-id = \"sim-1\"\n\
             [rpc]\nsocket = {socket:?}\nname = \"val1\"\n\
             [tunnel]\nkey-file = {tunnel_key:?}\n\
             [[bastion]]\nname = \"b1\"\nhost = \"127.0.0.1\"\nport = {port}\nuser = {user:?}\n\
             host-key-fingerprints = [{fingerprint:?}]\n\
             backup-command = \"palisade-bastion backup-session\"\n\
             [logs]\nrecipients = [{recipient:?}]\nspool-dir = {spool:?}\nhost = \"bench\"\n",
            port = sshd.port(),
            user = current_user().map_err(|e| anyhow::anyhow!("{e}"))?,
            fingerprint = sshd.fingerprint(),
        ),
    )?;
    let config_text = config.to_str().context("non-UTF-8 temporary path")?;
    let env = [("PALISADE_CONFIG", config_text)];
    let output = fixture
        .supervisor_command(&env)
        .args(["init-vault", "--passphrase-file"])
        .arg(&passphrase)
        .output()
        .context("running palisade-supervisor init-vault")?;
    if !output.status.success() {
        bail!(
            "palisade-supervisor init-vault failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let mut supervisor = fixture.run_supervisor(&env)?;
    fixture.wait_signing(&mut supervisor, 3, START_TIMEOUT)?;
    let store_logs = backups.join("val1").join("logs");
    wait_for(START_TIMEOUT, "a first log segment on the bastion", || {
        Ok(!signatures(&store_logs)?.is_empty())
    })?;

    let first_height = last_signed(&fixture)?;
    let before = signatures(&store_logs)?;
    let started = Instant::now();
    std::thread::sleep(WINDOW);
    let after = signatures(&store_logs)?;
    let elapsed = started.elapsed();
    let last_height = last_signed(&fixture)?;
    supervisor.ensure_running()?;
    if let Some(status) = store.0.try_wait()? {
        bail!("the bastion's store exited ({status})");
    }

    let mut lines = 0u64;
    let mut bytes = 0u64;
    let arrived: Vec<&String> = after.difference(&before).collect();
    for name in &arrived {
        let file = SignatureFile::parse(&std::fs::read(store_logs.join(name))?)
            .map_err(|reason| anyhow::anyhow!("{name}: {reason}"))?;
        lines += file.metadata.lines;
        bytes += file.metadata.plaintext_bytes;
    }
    let missed = fixture
        .network
        .record()?
        .missed_between("val1", first_height + 1, last_height);
    supervisor.stop()?;

    let rate = lines as f64 / elapsed.as_secs_f64();
    let lines_measured = Measured {
        // `target` is an upper bound in the results file; this one is a
        // floor, said in the detail (as tunnel_bulk_goodput_mbit_s does).
        result: result(LINES_PER_S, round2(rate), "lines/s", None),
        detail: format!(
            "goal >= {GOAL_LINES_PER_S}: {}; {lines} lines in {} segments ({:.1} MiB of JSON \
             lines, {:.1} MiB/s) stored on the bastion in {:.1} s, encrypted and signed, while \
             simd flooded stdout",
            if rate >= GOAL_LINES_PER_S {
                "ok"
            } else {
                "BELOW"
            },
            arrived.len(),
            bytes as f64 / f64::from(1u32 << 20),
            bytes as f64 / f64::from(1u32 << 20) / elapsed.as_secs_f64(),
            elapsed.as_secs_f64()
        ),
    };
    let missed_measured = Measured {
        result: result(MISSED_BLOCKS, missed.len() as f64, "blocks", Some(0.0)),
        detail: format!(
            "heights {}..={last_height} ({} ms blocks) under the flood; missed: {missed:?}",
            first_height + 1,
            BLOCK_TIME.as_millis()
        ),
    };
    drop(store);
    Ok((lines_measured, missed_measured))
}

/// The `.sig` objects in the store's log directory.
fn signatures(dir: &Path) -> anyhow::Result<BTreeSet<String>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(BTreeSet::new());
    };
    let mut names = BTreeSet::new();
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".sig") {
            names.insert(name);
        }
    }
    Ok(names)
}

fn last_signed(fixture: &Fixture) -> anyhow::Result<u64> {
    fixture
        .network
        .record()?
        .validators
        .get("val1")
        .and_then(|validator| validator.last_signed_height)
        .context("the validator has signed nothing")
}

fn wait_for(
    timeout: Duration,
    what: &str,
    mut done: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !done()? {
        if Instant::now() >= deadline {
            bail!("waited {timeout:?} for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
