//! Command-line interface: argument parsing and the small commands
//! (`init`, `add-upgrade`, `show-upgrade-info`, `init-rpc`, `rpc-fingerprint`,
//! `config`, `version`).
//! `run` is in [`crate::supervision`].

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use palisade_daemon::durable::{AtomicWrite, Existing};

use crate::config::Config;
use crate::upgrade::layout::{InitOutcome, Layout, ReplaceExisting, upgrade_dir_name};
use crate::upgrade::watch::{FileState, read_plan_file};

/// Exit codes of `palisade-supervisor` (also in `docs/supervisor.md`).
pub mod exit_code {
    /// Success, or shutdown on request.
    pub const OK: i32 = 0;
    /// Bad configuration, bad arguments to a command, or a runtime error.
    pub const ERROR: i32 = 1;
    /// Command-line usage error (from clap).
    pub const USAGE: i32 = 2;
    /// The daemon crash-looped and restarting stopped.
    pub const CRASH_LOOP: i32 = crate::supervision::EXIT_CRASH_LOOP;
    /// Refused to start: the local sign state is behind a backup.
    pub const STATE_BEHIND_BACKUP: i32 = 4;
}

const ABOUT: &str = "Security-first supervisor for Cosmos SDK / CometBFT validators.

A drop-in replacement for Cosmovisor: same folder layout
($DAEMON_HOME/cosmovisor/{genesis,upgrades/<name>,current}), same environment
variables, same upgrade detection — plus an atomic `current` switch, checksums
required for downloads, fast reflink data backups, crash restarts with backoff,
and a record of every upgrade in cosmovisor/palisade-upgrades.jsonl.";

const AFTER_HELP: &str = "Configuration comes from Cosmovisor's environment variables (DAEMON_HOME,
DAEMON_NAME, DAEMON_ALLOW_DOWNLOAD_BINARIES, DAEMON_RESTART_AFTER_UPGRADE,
DAEMON_POLL_INTERVAL, DAEMON_SHUTDOWN_GRACE, DAEMON_RESTART_DELAY,
UNSAFE_SKIP_BACKUP, DAEMON_DATA_BACKUP_DIR, DAEMON_PREUPGRADE_MAX_RETRIES,
DAEMON_DOWNLOAD_MUST_HAVE_CHECKSUM, COSMOVISOR_CUSTOM_PREUPGRADE,
COSMOVISOR_DISABLE_RECASE) and optionally a TOML file (--config); the
environment overrides the file. See docs/configuration.md.

Examples:
  export DAEMON_HOME=$HOME/.gaia DAEMON_NAME=gaiad
  palisade-supervisor init /usr/local/bin/gaiad
  palisade-supervisor add-upgrade v19 ./gaiad-v19
  palisade-supervisor run start --home $DAEMON_HOME

Exit codes: 0 ok, 1 error, 2 usage, 3 crash loop (not restarted),
4 refused to start: the local sign state is behind a backup (see restore-state).
Logs go to stderr; the daemon's stdout/stderr pass through unchanged.
Set PALISADE_LOG (e.g. debug) to change verbosity.";

#[derive(Debug, Parser)]
#[command(name = "palisade-supervisor", version, about = ABOUT, after_help = AFTER_HELP)]
pub struct Cli {
    /// TOML configuration file (see docs/configuration.md). Optional: with
    /// none, only environment variables are used, as with Cosmovisor.
    #[arg(long, global = true, env = "PALISADE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon under supervision (like `cosmovisor run`). Every
    /// argument after `run` is passed to the daemon unchanged.
    Run {
        /// Unlock the key vault with the passphrase read from this inherited
        /// file descriptor (e.g. 3, a pipe from a wrapper). Other sources:
        /// a systemd credential `palisade-passphrase`, or
        /// `vault.passphrase-file`. Without one the supervisor starts locked.
        #[arg(long, value_name = "FD")]
        passphrase_fd: Option<i32>,
        /// Start even if fewer backup stores than `[backup] start-quorum`
        /// can be read once `start-quorum-wait` has passed. Applies to the
        /// first start only; logged and recorded in the vault directory's
        /// start-overrides.jsonl. An unreachable store may hold a newer sign
        /// state than this host knows: use it only when you know it does not.
        #[arg(long)]
        accept_unreachable_stores: bool,
        /// Arguments for the daemon, e.g. `start --home ~/.gaia`.
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "DAEMON_ARGS"
        )]
        args: Vec<OsString>,
    },
    /// Install <BINARY> as the genesis binary and point `current` at it.
    Init {
        /// Path to the daemon binary (e.g. /usr/local/bin/gaiad).
        binary: PathBuf,
    },
    /// Install an upgrade binary ahead of time, so the switch needs no
    /// download when the chain reaches the upgrade height.
    AddUpgrade {
        /// Upgrade name as in the governance proposal (recased and escaped
        /// like Cosmovisor).
        name: String,
        /// Path to the new daemon binary.
        binary: PathBuf,
        /// Replace an existing upgrade binary of the same name.
        #[arg(long)]
        force: bool,
        /// Also write data/upgrade-info.json with this height: a manual
        /// (non-governance) upgrade. Stop the node at that height with
        /// `halt-height` in app.toml; the supervisor switches when it halts.
        #[arg(long, value_name = "HEIGHT")]
        upgrade_height: Option<u64>,
    },
    /// Print data/upgrade-info.json, if any, and whether it is applied.
    ShowUpgradeInfo,
    /// Create the key vault ([vault] in the config file) and import the
    /// validator's priv_validator_key.json and node_key.json into it. The
    /// plaintext originals are verified against the vault, then overwritten
    /// and removed.
    InitVault {
        /// Read the new passphrase from this file (mode 0600) instead of
        /// prompting twice on the terminal.
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
        /// Create the vault without importing the key files.
        #[arg(long)]
        no_import: bool,
    },
    /// Restore priv_validator_state.json from the highest valid backup when
    /// the local state is behind it or missing (the supervisor refuses to
    /// start in that case). Never writes a state lower than the highest known.
    RestoreState {
        /// Read the vault passphrase from this file (mode 0600); default:
        /// vault.passphrase-file, else prompt on the terminal.
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
    /// Seal an AWS access key in the vault for Elastic IP rotation
    /// (`[eip]`, docs/eip.md): encrypted to the vault's own key, so no
    /// passphrase is needed and only an unlocked supervisor can use it.
    /// Replaces a key imported before. Give the key a policy that allows
    /// only the five Elastic IP calls (docs/eip.md shows one).
    ImportAwsCredentials {
        /// Read AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and
        /// AWS_SESSION_TOKEN if set) from the environment.
        #[arg(long, conflicts_with = "profile")]
        from_env: bool,
        /// Read this profile of an AWS credentials file.
        #[arg(long, value_name = "NAME", required_unless_present = "from_env")]
        profile: Option<String>,
        /// The credentials file [default: $HOME/.aws/credentials].
        #[arg(long, value_name = "FILE", requires = "profile")]
        profile_file: Option<PathBuf>,
    },
    /// Create the control RPC's TLS identity: a self-signed ed25519
    /// certificate and key in `rpc.tls-dir` (cert.pem, key.pem; 0600 in a
    /// 0700 directory). Prints the pin (`sha256:<hex>`) that operators give
    /// palisade-ctl. Restart the supervisor to use a new identity.
    InitRpc {
        /// Replace an existing identity (every operator must re-pin).
        #[arg(long)]
        force: bool,
    },
    /// Print the pin of the control RPC's certificate (`sha256:<hex>`).
    RpcFingerprint,
    /// Print the effective configuration (environment over file over defaults).
    Config,
    /// Print the supervisor's version, then the daemon's (`<daemon> version`).
    Version,
}

/// `init <binary>`.
pub fn init(config: &Config, binary: &Path) -> anyhow::Result<()> {
    let layout = Layout::new(&config.daemon_home, &config.daemon_name);
    match layout.init(binary)? {
        InitOutcome::Installed => println!(
            "installed {} as {}; current -> genesis",
            binary.display(),
            layout
                .binary(&crate::upgrade::layout::Version::Genesis)
                .display()
        ),
        InitOutcome::AlreadyInstalled => println!(
            "{} is already the genesis binary; nothing to do",
            binary.display()
        ),
    }
    Ok(())
}

/// `add-upgrade <name> <binary> [--force] [--upgrade-height H]`.
pub fn add_upgrade(
    config: &Config,
    name: &str,
    binary: &Path,
    force: bool,
    upgrade_height: Option<u64>,
) -> anyhow::Result<()> {
    let layout = Layout::new(&config.daemon_home, &config.daemon_name);
    let dir_name = upgrade_dir_name(name, config.recase)?;
    if let Some(height) = upgrade_height {
        if height == 0 {
            bail!("--upgrade-height must be positive");
        }
        let path = config.upgrade_info_path();
        if let FileState::Plan(existing) = read_plan_file(&path)
            && !force
        {
            bail!(
                "{} already holds plan {:?} at height {:?}; pass --force to replace it",
                path.display(),
                existing.name,
                existing.height
            );
        }
    }
    let installed = layout.add_upgrade(
        &dir_name,
        binary,
        if force {
            ReplaceExisting::Yes
        } else {
            ReplaceExisting::No
        },
    )?;
    println!("installed upgrade {name:?} at {}", installed.display());
    if let Some(height) = upgrade_height {
        let path = config.upgrade_info_path();
        write_manual_plan(&path, name, height)?;
        println!("wrote {} for height {height}", path.display());
    }
    Ok(())
}

fn write_manual_plan(path: &Path, name: &str, height: u64) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .context("upgrade-info.json has no parent directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let body = serde_json::json!({ "name": name, "height": height, "info": "" }).to_string();
    AtomicWrite::new(0o600, Existing::Replace).write(path, body.as_bytes())?;
    Ok(())
}

/// `show-upgrade-info`.
pub fn show_upgrade_info(config: &Config) -> anyhow::Result<()> {
    let path = config.upgrade_info_path();
    match read_plan_file(&path) {
        FileState::Absent => println!("no upgrade plan: {} does not exist", path.display()),
        FileState::Incomplete => bail!("{} is empty or incomplete", path.display()),
        FileState::Invalid(reason) => bail!("{}: {reason}", path.display()),
        FileState::Plan(plan) => {
            let layout = Layout::new(&config.daemon_home, &config.daemon_name);
            let dir = upgrade_dir_name(&plan.name, config.recase)?;
            let version = crate::upgrade::layout::Version::Upgrade(dir);
            let binary = layout.binary(&version);
            let current = layout.current_version().ok();
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "name": plan.name,
                    "height": plan.height,
                    "info": plan.info,
                    "binary": binary,
                    "binary_installed": layout.check_binary(&version).is_ok(),
                    "applied": current.as_ref() == Some(&version),
                }))?
            );
        }
    }
    Ok(())
}

/// `init-rpc [--force]`.
pub fn init_rpc(config: &Config, force: bool) -> anyhow::Result<()> {
    let pin = crate::rpc::init_identity(
        &config.rpc.tls_dir,
        &config.rpc.name,
        if force {
            crate::rpc::ReplaceIdentity::Yes
        } else {
            crate::rpc::ReplaceIdentity::No
        },
    )?;
    eprintln!(
        "wrote {} and {}; operators pin this certificate with:",
        config
            .rpc
            .tls_dir
            .join(crate::rpc::tls::CERT_FILE)
            .display(),
        config.rpc.tls_dir.join(crate::rpc::tls::KEY_FILE).display()
    );
    println!("{pin}");
    Ok(())
}

/// `rpc-fingerprint`.
pub fn rpc_fingerprint(config: &Config) -> anyhow::Result<()> {
    println!("{}", crate::rpc::read_fingerprint(&config.rpc.tls_dir)?);
    Ok(())
}

/// `config`.
pub fn print_config(config: &Config) {
    if let Some(file) = &config.source_file {
        println!("# from {} and the environment", file.display());
    }
    for (key, value) in config.describe() {
        println!("{key}={value}");
    }
    print_peering(config);
}

/// The peering the supervisor writes into the node's config.toml.
fn print_peering(config: &Config) {
    let sentries = crate::node::peering::sentries(config);
    if sentries.is_empty() {
        println!(
            "# peering: not managed (no [[bastion]] has a sentry); config.toml's [p2p] is left as written"
        );
        return;
    }
    println!("# peering: written into config.toml at start (the sentries behind the [[bastion]]s)");
    for sentry in &sentries {
        println!(
            "#   {} → sentry {} through the forward on {}",
            sentry.bastion, sentry.node_id, sentry.listen
        );
    }
    match crate::node::peering::preview(config) {
        Ok(Some(peering)) => {
            println!("p2p.persistent_peers={}", peering.persistent_peers);
            println!("p2p.pex=false");
            println!("p2p.addr_book_strict=false");
            println!(
                "consensus.double_sign_check_height={}",
                peering.double_sign_check_height
            );
        }
        Ok(None) => {}
        Err(error) => println!("# the start would be refused: {error}"),
    }
}

/// `version`: ours, then the current daemon binary's.
pub fn version(config: Option<&Config>) -> anyhow::Result<()> {
    println!("palisade-supervisor version: {}", env!("CARGO_PKG_VERSION"));
    let Some(config) = config else {
        return Ok(());
    };
    let layout = Layout::new(&config.daemon_home, &config.daemon_name);
    let version = layout.current_version()?;
    let binary = layout.check_binary(&version)?;
    let status = std::process::Command::new(&binary)
        .arg("version")
        .status()
        .with_context(|| format!("cannot run {} version", binary.display()))?;
    if !status.success() {
        bail!("{} version failed: {status}", binary.display());
    }
    Ok(())
}
