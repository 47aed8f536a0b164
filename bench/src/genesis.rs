//! `supervisor_start_genesis_1gib_rss_mib`: the supervisor's peak memory
//! (`VmHWM`) when it starts a validator whose `config/genesis.json` is 1 GiB,
//! as a long-running mainnet's is.
//!
//! The supervisor reads the chain id from the genesis at unlock (the vault's
//! backups carry it; `[backup] chain-id` is left unset so that it must), with
//! a streaming parse that stops at the field. The fixture: the simulated
//! chain's home with a genesis generated in the shape Cosmos SDK v0.50 writes
//! it (`palisade_simchain::genesis`, padded with accounts to 1 GiB), a vault
//! created by `palisade-supervisor init-vault` and unlocked unattended at start
//! (`[vault] passphrase-file`), and the real `palisade-supervisor run`. The
//! value is the supervisor process's `VmHWM` (peak resident set, its own
//! memory, not the daemon's) once the validator has signed and a backup
//! named after the chain id has been written, i.e. after the genesis was read.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::fixture::{Binaries, Fixture};
use crate::{Measured, result, round2};

pub const NAME: &str = "supervisor_start_genesis_1gib_rss_mib";
/// DESIGN's ceiling for the supervisor with a large genesis.
const TARGET_MIB: f64 = 32.0;
const GENESIS_BYTES: u64 = 1 << 30;
const CHAIN_ID: &str = "sim-1";
const BLOCK_TIME: Duration = Duration::from_secs(1);
/// Generous: simd itself reads nothing of the genesis, but the page cache of a
/// freshly written 1 GiB file may be under pressure.
const START_TIMEOUT: Duration = Duration::from_secs(120);

pub fn run(bins: &Binaries) -> anyhow::Result<Measured> {
    let fixture = Fixture::start(bins, BLOCK_TIME)?;
    let dir = fixture.dir.path();

    let generated = Instant::now();
    palisade_simchain::testkit::write_large_genesis(&fixture.home, CHAIN_ID, GENESIS_BYTES)
        .context("generating a 1 GiB genesis.json")?;
    let genesis = fixture.home.join("config").join("genesis.json");
    let size = std::fs::metadata(&genesis)
        .with_context(|| format!("reading the size of {}", genesis.display()))?
        .len();
    if size < GENESIS_BYTES {
        bail!(
            "the generated genesis is {size} bytes, less than {GENESIS_BYTES}: {}",
            genesis.display()
        );
    }
    let generation_s = generated.elapsed().as_secs_f64();

    let passphrase = dir.join("passphrase");
    std::fs::write(&passphrase, "bench genesis passphrase\n")?;
    std::fs::set_permissions(&passphrase, std::fs::Permissions::from_mode(0o600))?;
    // The key directory in a private parent: the supervisor refuses one in
    // a directory others may write (/dev/shm itself).
    let shm = tempfile::Builder::new()
        .prefix("palisade-bench-genesis-")
        .tempdir_in("/dev/shm")?;
    let tmpfs = Tmpfs(shm.path().join("keys"));
    let socket = dir.join("run").join("supervisor.sock");
    let config = dir.join("palisade.toml");
    // No `[backup] chain-id`: the supervisor must read it from the genesis.
    std::fs::write(
        &config,
        format!(
            "[vault]\nswap = \"warn\"\ntmpfs-dir = {:?}\nscrypt-work-factor = 10\n\
             passphrase-file = {passphrase:?}\n\
             [backup]\ndebounce = \"100ms\"\n\
             [rpc]\nsocket = {socket:?}\nname = \"val1\"\n",
            tmpfs.0
        ),
    )?;
    let config_env = config.to_str().context("non-UTF-8 temporary path")?;
    let env = [("PALISADE_CONFIG", config_env)];
    let output = fixture
        .supervisor_command(&env)
        .args(["init-vault", "--passphrase-file"])
        .arg(&passphrase)
        .output()
        .context("running palisade-supervisor init-vault")?;
    if !output.status.success() {
        bail!(
            "palisade-supervisor init-vault failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }

    let mut supervisor = fixture.run_supervisor(&env)?;
    fixture.wait_signing(&mut supervisor, 3, START_TIMEOUT)?;
    // The backups are named after the chain id, which only the genesis gave.
    let stores = fixture.home.join("palisade").join("backups");
    let deadline = Instant::now() + START_TIMEOUT;
    let backup = loop {
        if let Some(name) = first_backup(&stores, CHAIN_ID) {
            break name;
        }
        supervisor.ensure_running()?;
        if Instant::now() >= deadline {
            bail!(
                "no backup-{CHAIN_ID}-* in {} within {START_TIMEOUT:?}; supervisor log:\n{}",
                stores.display(),
                supervisor.log_tail(30)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let peak_kib = supervisor.status_kib("VmHWM")?;
    let rss_kib = supervisor.status_kib("VmRSS")?;
    supervisor.stop()?;

    Ok(Measured {
        result: result(
            NAME,
            round2(peak_kib as f64 / 1024.0),
            "MiB",
            Some(TARGET_MIB),
        ),
        detail: format!(
            "VmHWM of the supervisor after unlock, signing and {backup}; genesis {:.2} GiB \
             (generated in {generation_s:.1} s); VmRSS now {:.2} MiB",
            size as f64 / f64::from(1u32 << 30),
            rss_kib as f64 / 1024.0
        ),
    })
}

/// The vault's tmpfs directory, removed when the benchmark ends.
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Name of a `backup-CHAIN-…` file anywhere under `stores`.
fn first_backup(stores: &std::path::Path, chain_id: &str) -> Option<String> {
    let prefix = format!("backup-{chain_id}-");
    let mut pending = vec![stores.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).ok()?.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                pending.push(path);
            } else if name.starts_with(&prefix) {
                return Some(name);
            }
        }
    }
    None
}
