//! `simd`: a validator node with gaiad's command line and CometBFT's files.
//!
//! Home layout (as gaiad's):
//!
//! ```text
//! config/config.toml  config/genesis.json  config/priv_validator_key.json  config/node_key.json
//! data/priv_validator_state.json  data/application.db  data/upgrade-info.json (on halt)
//! data/blockstore.db/ data/state.db/ data/tx_index.db/ data/evidence.db/ data/cs.wal/wal
//! ```
//!
//! `data/application.db` is a JSON stand-in for the app's state:
//! `{"last_height":N,"app_hash":"HEX","applied_upgrades":[{"name","height"}],"known_plans":[...]}`.
//!
//! Invariants: a vote leaves the process only after `priv_validator_state.json` records it
//! durably ([`NodeCore::on_new_height`]); nothing is signed that FilePV's rules refuse
//! ([`crate::sign_state::check`]); a halted node never signs again in this process.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::clock::rfc3339;
use crate::console_log::{Level, LogFormat, LogValue, Sink, configure_node_log, log};
use crate::genesis::{GenesisSpec, write_genesis};
use crate::http::{HttpRequest, HttpResponse};
use crate::key::ValidatorKey;
use crate::node_config::{ConfigTemplate, NodeConfig, Peering, render_config};
use crate::protocol::{NewHeight, NodeMessage, SignedVote, UpgradePlan};
use crate::rpc::commit::CommitHistory;
use crate::rpc::status::RpcIdentity;
use crate::sign_state::{SignDecision, SignState, check, write_atomically};
use crate::switch::{DELIVERY_QUEUE, Delivery, Switch, SwitchConfig};
use crate::upgrade::{
    Phase, UpgradeAction, decide, updated_before_trigger_message, upgrade_info_json,
    upgrade_needed_message,
};
use crate::vote::{CanonicalVote, VoteType};

pub use crate::protocol::COMETBFT_VERSION;
pub use crate::rpc::status::{BlockMeta, NodeStatus};
/// Exit code when the binary cannot run the chain (upgrade needed / updated too early).
pub const EXIT_UPGRADE: i32 = 1;
/// Exit code of the simulated crash (`SIMD_CRASH_AFTER`).
pub const EXIT_SIMULATED_CRASH: i32 = 2;

fn info(message: &str, fields: &[(&str, &dyn LogValue)]) {
    log(Sink::Stdout, Level::Info, message, fields);
}

fn error(message: &str, fields: &[(&str, &dyn LogValue)]) {
    log(Sink::Stdout, Level::Error, message, fields);
}

/// An error that ends `simd start` with CometBFT's own message on stdout and exit code 1
/// (`libs/os` `Exit`: `fmt.Println` then `os.Exit(1)`), as when FilePV cannot read its state.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CometExit(pub String);

/// The binary's identity: its version and the upgrade handlers compiled into it.
#[derive(Debug, Clone, Default)]
pub struct AppIdentity {
    /// `simd version` output.
    pub version: String,
    /// Names of upgrade handlers this binary carries.
    pub upgrade_handlers: Vec<String>,
}

/// An upgrade recorded as applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedUpgrade {
    /// Plan name.
    pub name: String,
    /// Height it was applied at.
    pub height: u64,
}

/// `data/application.db`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplicationDb {
    /// Last committed height processed.
    pub last_height: u64,
    /// Hex app hash after `last_height`.
    #[serde(default)]
    pub app_hash: String,
    /// Upgrades applied, in order.
    #[serde(default)]
    pub applied_upgrades: Vec<AppliedUpgrade>,
    /// Plans learned from the chain.
    #[serde(default)]
    pub known_plans: Vec<UpgradePlan>,
    /// Time of the block at `last_height` (RFC 3339), when known.
    #[serde(default)]
    pub last_block_time: String,
    /// The first block this node stored: the block store's base, what `/status` reports as
    /// `earliest_*`.
    #[serde(default)]
    pub earliest_block: Option<BlockMeta>,
}

impl ApplicationDb {
    /// Path under `home`.
    pub fn path(home: &Path) -> PathBuf {
        home.join("data").join("application.db")
    }

    /// Loads the database, or an empty one when the file does not exist.
    pub fn load(home: &Path) -> anyhow::Result<Self> {
        let path = Self::path(home);
        match fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).with_context(|| format!("{}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("{}", path.display())),
        }
    }

    /// Saves atomically.
    pub fn save(&self, home: &Path) -> anyhow::Result<()> {
        let path = Self::path(home);
        let json = serde_json::to_vec_pretty(self)?;
        write_atomically(&path, &json, 0o644).with_context(|| format!("{}", path.display()))
    }

    /// Names of applied upgrades.
    pub fn applied_names(&self) -> Vec<String> {
        self.applied_upgrades
            .iter()
            .map(|u| u.name.clone())
            .collect()
    }

    fn learn_plans(&mut self, plans: &[UpgradePlan]) {
        for plan in plans {
            if !self.known_plans.iter().any(|p| p.name == plan.name) {
                self.known_plans.push(plan.clone());
            }
        }
    }
}

/// `simd init` options.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Node home.
    pub home: PathBuf,
    /// Node name.
    pub moniker: String,
    /// Chain ID written to `config/genesis.json`.
    pub chain_id: String,
    /// `[simchain] network`: one simchain-net address, or several comma-separated.
    pub network: String,
    /// `tcp://IP:PORT` RPC address.
    pub rpc_laddr: String,
    /// `tcp://IP:PORT` P2P address.
    pub p2p_laddr: String,
    /// Replace an existing config.toml / genesis.json (keys are always kept).
    pub overwrite: bool,
    /// Approximate size of a generated `genesis.json` (0: a small one). See [`crate::genesis`].
    pub genesis_size: u64,
}

/// What `simd init` produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InitOutput {
    /// Node name.
    pub moniker: String,
    /// Chain ID.
    pub chain_id: String,
    /// Node ID (lowercase hex).
    pub node_id: String,
    /// Validator address (uppercase hex).
    pub validator_address: String,
    /// Base64 validator public key.
    pub pub_key: String,
}

/// Creates a node home like `gaiad init`. Existing keys and sign state are never replaced.
pub fn init_home(options: &InitOptions) -> anyhow::Result<InitOutput> {
    let home = &options.home;
    let config_dir = home.join("config");
    let data_dir = home.join("data");
    fs::create_dir_all(&config_dir).with_context(|| format!("{}", config_dir.display()))?;
    create_private_dir(&data_dir)?;
    let config_path = NodeConfig::path(home);
    if options.overwrite || !config_path.exists() {
        let text = render_config(&ConfigTemplate {
            moniker: options.moniker.clone(),
            rpc_laddr: options.rpc_laddr.clone(),
            p2p_laddr: options.p2p_laddr.clone(),
            network: options.network.clone(),
            persistent_peers: String::new(),
            write_upgrade_info: true,
            log_flood: false,
        });
        write_atomically(&config_path, text.as_bytes(), 0o644)
            .with_context(|| format!("{}", config_path.display()))?;
    }
    let config = NodeConfig::load(home)?;
    let key = if config.priv_validator_key_file.exists() {
        ValidatorKey::load(&config.priv_validator_key_file)?
    } else {
        let key = ValidatorKey::generate();
        key.save(&config.priv_validator_key_file)?;
        key
    };
    let node_key = if config.node_key_file.exists() {
        ValidatorKey::load_node_key(&config.node_key_file)?
    } else {
        let node_key = ValidatorKey::generate();
        node_key.save_as_node_key(&config.node_key_file)?;
        node_key
    };
    if !config.priv_validator_state_file.exists() {
        SignState::default().save(&config.priv_validator_state_file)?;
    }
    let genesis_path = config_dir.join("genesis.json");
    if options.overwrite || !genesis_path.exists() {
        write_genesis(
            &genesis_path,
            &GenesisSpec {
                chain_id: options.chain_id.clone(),
                app_version: "v1.0.0".into(),
                genesis_time: SystemTime::now(),
                target_bytes: options.genesis_size,
            },
        )
        .with_context(|| format!("{}", genesis_path.display()))?;
    }
    ensure_data_files(home)?;
    Ok(InitOutput {
        moniker: options.moniker.clone(),
        chain_id: options.chain_id.clone(),
        node_id: node_key.node_id(),
        validator_address: key.address(),
        pub_key: key.pub_key_b64(),
    })
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("{}", dir.display()))
}

/// Creates the LevelDB-like directories a real data dir has, so backups have something to copy.
fn ensure_data_files(home: &Path) -> anyhow::Result<()> {
    let data = home.join("data");
    for db in [
        "blockstore.db",
        "state.db",
        "tx_index.db",
        "evidence.db",
        "snapshots",
    ] {
        let dir = data.join(db);
        fs::create_dir_all(&dir)?;
        for (name, contents) in [("CURRENT", "MANIFEST-000000\n"), ("LOCK", ""), ("LOG", "")] {
            let path = dir.join(name);
            if !path.exists() {
                fs::write(&path, contents)?;
            }
        }
    }
    fs::create_dir_all(data.join("cs.wal"))?;
    let wal = data.join("cs.wal").join("wal");
    if !wal.exists() {
        fs::write(wal, "")?;
    }
    Ok(())
}

/// The genesis `chain_id`, read as a stream (a mainnet genesis can be hundreds of MiB).
fn read_chain_id(home: &Path) -> Option<String> {
    crate::genesis::read_chain_id(&home.join("config").join("genesis.json"))
        .ok()
        .flatten()
}

/// `{"@type":"/cosmos.crypto.ed25519.PubKey","key":"<b64>"}`, as `gaiad tendermint show-validator`.
pub fn show_validator(home: &Path) -> anyhow::Result<String> {
    let config = NodeConfig::load(home)?;
    let key = ValidatorKey::load(&config.priv_validator_key_file)?;
    Ok(
        serde_json::json!({"@type": "/cosmos.crypto.ed25519.PubKey", "key": key.pub_key_b64()})
            .to_string(),
    )
}

/// What the node does after processing a height.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeightOutcome {
    /// Send these votes (already durably recorded in the sign state).
    Vote(Vec<SignedVote>),
    /// Nothing to send (refused, already halted, duplicate height).
    Idle,
    /// Halted for an upgrade; stay alive, never sign again.
    Halted,
    /// Exit the process with this code.
    Exit(i32),
}

/// The node's signing and application logic, without sockets.
pub struct NodeCore {
    config: NodeConfig,
    identity: AppIdentity,
    key: ValidatorKey,
    sign_state: SignState,
    app: ApplicationDb,
    chain_id: Option<String>,
    phase: Phase,
    halted: bool,
    last_height_seen: u64,
}

impl NodeCore {
    /// Loads keys, sign state and application state.
    pub fn load(config: NodeConfig, identity: AppIdentity) -> anyhow::Result<Self> {
        let key = ValidatorKey::load(&config.priv_validator_key_file)?;
        let sign_state = if config.priv_validator_state_file.exists() {
            // FilePV reads its state at start and exits on any error (`privval/file.go`
            // `loadFilePV`), before the node serves anything.
            SignState::load(&config.priv_validator_state_file)
                .map_err(|e| CometExit(e.to_string()))?
        } else {
            let fresh = SignState::default();
            fresh.save(&config.priv_validator_state_file)?;
            fresh
        };
        ensure_data_files(&config.home)?;
        let app = ApplicationDb::load(&config.home)?;
        let chain_id = read_chain_id(&config.home);
        Ok(Self {
            config,
            identity,
            key,
            sign_state,
            app,
            chain_id,
            phase: Phase::Startup,
            halted: false,
            last_height_seen: 0,
        })
    }

    /// Validator address.
    pub fn address(&self) -> String {
        self.key.address()
    }

    /// Startup check against the local application state: a plan this node already reached
    /// (it halted on it) needs a handler this binary lacks → `Some(exit code)`.
    pub fn startup_check(&self) -> anyhow::Result<Option<i32>> {
        let reached = self.app.last_height + 1;
        let action = decide(
            &self.app.known_plans,
            &self.app.applied_names(),
            &self.identity.upgrade_handlers,
            reached,
            Phase::Running,
        );
        if let UpgradeAction::Halt(plan) | UpgradeAction::ExitNeeded(plan) = action {
            // The chain halted at the plan's height; the block re-executed there is that one.
            self.upgrade_needed(&plan, plan.height)?;
            return Ok(Some(EXIT_UPGRADE));
        }
        Ok(None)
    }

    /// What x/upgrade's PreBlocker does when no handler exists (`x/upgrade/abci.go`, SDK
    /// v0.50): `DumpUpgradeInfoToDisk(blockHeight, plan)`, then `logger.Error` of
    /// `BuildUpgradeNeededMsg` on the keeper's logger (`module=x/upgrade`).
    ///
    /// The file is written as `os.WriteFile(path, json, 0o600)` does: opened with
    /// create+truncate and written in place, not replaced atomically and not synced, so a
    /// reader can see it empty or half-written; an existing file keeps its mode. The data
    /// directory is created if missing (`GetUpgradeInfoPath`: `os.MkdirAll`).
    fn upgrade_needed(&self, plan: &UpgradePlan, height: u64) -> anyhow::Result<()> {
        if self.config.write_upgrade_info {
            use std::os::unix::fs::OpenOptionsExt;
            let data = self.config.home.join("data");
            fs::create_dir_all(&data).with_context(|| format!("{}", data.display()))?;
            let path = data.join("upgrade-info.json");
            let json = upgrade_info_json(plan, height);
            fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .and_then(|mut file| file.write_all(json.as_bytes()))
                .with_context(|| {
                    format!(
                        "unable to write upgrade info to filesystem: {}",
                        path.display()
                    )
                })?;
        }
        error(&upgrade_needed_message(plan), &[("module", &"x/upgrade")]);
        Ok(())
    }

    /// Status snapshot for RPC.
    pub fn status(&self) -> NodeStatus {
        let height = self.app.last_height;
        NodeStatus {
            chain_id: self.chain_id.clone().unwrap_or_default(),
            latest_height: height,
            latest_block_hash: if height == 0 {
                String::new()
            } else {
                crate::protocol::block_id(self.chain_id.as_deref().unwrap_or(""), height)
            },
            latest_app_hash: self.app.app_hash.clone(),
            latest_block_time: self.app.last_block_time.clone(),
            earliest: self.app.earliest_block.clone(),
            halted: self.halted,
        }
    }

    /// Processes the start of a height: upgrades, application state, then signing.
    pub fn on_new_height(&mut self, new_height: &NewHeight) -> anyhow::Result<HeightOutcome> {
        if self.halted {
            return Ok(HeightOutcome::Halted);
        }
        match &self.chain_id {
            Some(chain_id) if chain_id != &new_height.chain_id => {
                error(
                    "network chain-id differs from genesis; refusing to sign",
                    &[("network", &new_height.chain_id), ("genesis", chain_id)],
                );
                return Ok(HeightOutcome::Idle);
            }
            Some(_) => {}
            None => self.chain_id = Some(new_height.chain_id.clone()),
        }
        let height = new_height.height;
        if height <= self.last_height_seen {
            return Ok(HeightOutcome::Idle);
        }
        self.last_height_seen = height;
        let phase = std::mem::replace(&mut self.phase, Phase::Running);
        self.app.learn_plans(&new_height.upgrade_plans);
        // Block H-1 is committed whatever happens at H (the upgrade halts *at* H).
        self.commit_application(
            height.saturating_sub(1),
            &new_height.chain_id,
            &new_height.last_block_time,
        )?;
        let action = decide(
            &self.app.known_plans,
            &self.app.applied_names(),
            &self.identity.upgrade_handlers,
            height,
            phase,
        );
        match action {
            UpgradeAction::Continue => {}
            UpgradeAction::Apply(plan) => {
                // `x/upgrade/abci.go`: "applying upgrade %q at %s" with `plan.DueAt()`.
                info(
                    &format!(
                        "applying upgrade \"{}\" at height: {}",
                        plan.name, plan.height
                    ),
                    &[("module", &"x/upgrade")],
                );
                self.app.applied_upgrades.push(crate::node::AppliedUpgrade {
                    name: plan.name.clone(),
                    height,
                });
            }
            UpgradeAction::Halt(plan) => {
                self.app.save(&self.config.home)?;
                self.halted = true;
                self.upgrade_needed(&plan, height)?;
                return Ok(HeightOutcome::Halted);
            }
            UpgradeAction::ExitNeeded(plan) => {
                self.app.save(&self.config.home)?;
                self.upgrade_needed(&plan, plan.height)?;
                return Ok(HeightOutcome::Exit(EXIT_UPGRADE));
            }
            UpgradeAction::UpdatedBeforeTrigger(plan) => {
                error(
                    &updated_before_trigger_message(&plan),
                    &[("module", &"x/upgrade")],
                );
                return Ok(HeightOutcome::Exit(EXIT_UPGRADE));
            }
        }
        let mut votes = Vec::new();
        for vote_type in [VoteType::Prevote, VoteType::Precommit] {
            match self.sign(new_height, vote_type) {
                Ok(vote) => votes.push(vote),
                Err(reason) => {
                    error(
                        "failed signing vote",
                        &[
                            ("height", &height),
                            ("round", &new_height.round),
                            ("type", &format!("{vote_type:?}").to_lowercase()),
                            ("err", &reason),
                        ],
                    );
                }
            }
        }
        Ok(if votes.is_empty() {
            HeightOutcome::Idle
        } else {
            HeightOutcome::Vote(votes)
        })
    }

    fn commit_application(
        &mut self,
        committed: u64,
        chain_id: &str,
        block_time: &str,
    ) -> anyhow::Result<()> {
        if committed <= self.app.last_height {
            return Ok(());
        }
        let block_id = crate::protocol::block_id(chain_id, committed);
        self.app.last_height = committed;
        self.app.last_block_time = block_time.to_string();
        let mut hasher = Sha256::new();
        hasher.update(self.app.app_hash.as_bytes());
        hasher.update(committed.to_be_bytes());
        for upgrade in &self.app.applied_upgrades {
            hasher.update(upgrade.name.as_bytes());
        }
        self.app.app_hash = hex::encode_upper(hasher.finalize());
        if self.app.earliest_block.is_none() {
            self.app.earliest_block = Some(BlockMeta {
                height: committed,
                hash: block_id.clone(),
                app_hash: self.app.app_hash.clone(),
                time: block_time.to_string(),
            });
        }
        self.app.save(&self.config.home)?;
        let blockstore = self
            .config
            .home
            .join("data")
            .join("blockstore.db")
            .join("000001.log");
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&blockstore)
            .with_context(|| format!("{}", blockstore.display()))?;
        writeln!(file, "{committed} {block_id} {}", self.app.app_hash)?;
        info(
            "committed state",
            &[
                ("height", &committed),
                ("app_hash", &self.app.app_hash),
                ("module", &"state"),
            ],
        );
        Ok(())
    }

    /// Signs one vote under FilePV rules; the state file is durable before this returns.
    fn sign(&mut self, new_height: &NewHeight, vote_type: VoteType) -> Result<SignedVote, String> {
        let vote = CanonicalVote {
            block_id: new_height.block_id.clone(),
            chain_id: new_height.chain_id.clone(),
            height: new_height.height,
            round: new_height.round,
            timestamp: rfc3339(SystemTime::now()),
            vote_type,
        };
        let sign_bytes = vote.sign_bytes();
        let step = vote_type.step();
        let (sign_bytes, signature) =
            match check(&self.sign_state, vote.height, vote.round, step, &sign_bytes)
                .map_err(|e| e.to_string())?
            {
                SignDecision::SignNew => {
                    let signature = self.key.sign(&sign_bytes);
                    let next = SignState::after_signing(
                        vote.height,
                        vote.round,
                        step,
                        &sign_bytes,
                        &signature,
                    );
                    next.save(&self.config.priv_validator_state_file)
                        .map_err(|e| e.to_string())?;
                    self.sign_state = next;
                    (sign_bytes, signature.to_vec())
                }
                SignDecision::ReuseCached {
                    signature,
                    sign_bytes,
                } => (sign_bytes, signature),
            };
        info(
            "signed and pushed vote",
            &[
                ("height", &vote.height),
                ("round", &vote.round),
                ("type", &format!("{vote_type:?}").to_lowercase()),
                ("module", &"consensus"),
            ],
        );
        Ok(SignedVote {
            address: self.key.address(),
            height: vote.height,
            round: vote.round,
            step,
            sign_bytes: B64.encode(&sign_bytes),
            signature: B64.encode(&signature),
        })
    }
}

/// Test knobs read from the environment.
#[derive(Debug, Clone, Default)]
pub struct TestKnobs {
    /// `SIMD_IGNORE_SIGINT=1`: ignore SIGTERM and SIGINT.
    pub ignore_signals: bool,
    /// `SIMD_CRASH_AFTER=DURATION`: exit 2 after this long.
    pub crash_after: Option<Duration>,
}

impl TestKnobs {
    /// Reads the knobs from the environment.
    pub fn from_env() -> anyhow::Result<Self> {
        let crash_after = match std::env::var("SIMD_CRASH_AFTER") {
            Ok(text) if !text.is_empty() => Some(crate::clock::parse_duration(&text)?),
            _ => None,
        };
        Ok(Self {
            ignore_signals: std::env::var("SIMD_IGNORE_SIGINT").is_ok_and(|v| v == "1"),
            crash_after,
        })
    }
}

/// Command-line log settings that override `config.toml` (the SDK binds its flags into viper,
/// so a flag wins over the file).
#[derive(Debug, Clone, Default)]
pub struct LogFlags {
    /// `--log_format`.
    pub log_format: Option<String>,
    /// `--log_no_color`.
    pub log_no_color: bool,
    /// `--log_level`.
    pub log_level: Option<String>,
}

/// The effective log format; CometBFT's `BaseConfig.ValidateBasic` refuses anything but
/// `plain` and `json`.
fn log_format(config: &NodeConfig, flags: &LogFlags) -> anyhow::Result<(LogFormat, bool)> {
    let format = flags.log_format.as_deref().unwrap_or(&config.log_format);
    let level = flags.log_level.as_deref().unwrap_or(&config.log_level);
    let debug = level.contains("debug") || level.contains("trace");
    let format = match format {
        "json" => LogFormat::Json,
        "plain" => LogFormat::Plain {
            color: !(flags.log_no_color || config.log_no_color),
        },
        _ => bail!("error in config file: unknown log_format (must be 'plain' or 'json')"),
    };
    Ok((format, debug))
}

/// `simd start`: runs the node until a signal, a simulated crash or an upgrade exit.
/// Returns the process exit code.
pub async fn run_start(
    home: &Path,
    identity: AppIdentity,
    knobs: TestKnobs,
    flags: LogFlags,
) -> anyhow::Result<i32> {
    let config = NodeConfig::load(home)?;
    let (format, debug) = log_format(&config, &flags)
        .with_context(|| format!("{}", NodeConfig::path(home).display()))?;
    configure_node_log(format, debug);
    if config.peering == Peering::Unset {
        bail!(
            "{}: no peers: set [p2p] persistent_peers (or the older [simchain] network)",
            NodeConfig::path(home).display()
        );
    }
    info(
        "starting node",
        &[
            ("version", &identity.version),
            ("moniker", &config.moniker),
            ("home", &home.display()),
        ],
    );
    let core = NodeCore::load(config.clone(), identity)?;
    if let Some(code) = core.startup_check()? {
        return Ok(code);
    }
    let address = core.address();
    let pub_key = ValidatorKey::load(&config.priv_validator_key_file)?.pub_key_b64();
    let node_id = ValidatorKey::load_node_key(&config.node_key_file)
        .with_context(|| format!("{}", config.node_key_file.display()))?
        .node_id();
    let status = Arc::new(Mutex::new(core.status()));
    let commits = Arc::new(Mutex::new(CommitHistory::default()));
    // CometBFT starts the RPC server before the P2P transport (`node/node.go` `OnStart`); a
    // port in use on either stops the node.
    let rpc_listener = tokio::net::TcpListener::bind(config.rpc_laddr)
        .await
        .with_context(|| format!("binding RPC on {}", config.rpc_laddr))?;
    info(
        "serving RPC",
        &[
            ("laddr", &format!("tcp://{}", config.rpc_laddr)),
            ("module", &"rpc-server"),
        ],
    );
    let p2p_listener = tokio::net::TcpListener::bind(config.p2p_listen)
        .await
        .with_context(|| format!("listen tcp {}", config.p2p_listen))?;
    let (deliveries_tx, deliveries) = mpsc::channel(DELIVERY_QUEUE);
    let persistent = match &config.peering {
        Peering::Persistent(peers) => peers.clone(),
        _ => Vec::new(),
    };
    let switch = Switch::new(
        SwitchConfig {
            own_id: node_id.clone(),
            moniker: config.moniker.clone(),
            validator_address: address.clone(),
            chain_id: core.chain_id.clone(),
            allow_duplicate_ip: config.allow_duplicate_ip,
            timing: crate::p2p::Timing {
                scale: config.p2p_time_scale,
            },
            persistent_peers: persistent,
        },
        deliveries_tx,
    );
    let inbound_task = tokio::spawn(switch.clone().accept_inbound(p2p_listener));
    let rpc_info = RpcIdentity {
        moniker: config.moniker.clone(),
        node_id,
        address: address.clone(),
        pub_key,
        voting_power: config.voting_power,
        p2p_laddr: config.p2p_laddr.clone(),
        external_address: config.external_address.clone(),
        rpc_laddr: format!("tcp://{}", config.rpc_laddr),
    };
    let rpc_task = tokio::spawn(crate::http::serve(rpc_listener, {
        let status = status.clone();
        let switch = switch.clone();
        let commits = commits.clone();
        move |request| handle_rpc(&rpc_info, &status, &commits, &switch, request)
    }));
    for skipped in &config.skipped_peers {
        error(
            "Error in peer's address",
            &[("err", &skipped.to_string()), ("module", &"p2p")],
        );
    }
    let peering_task = match &config.peering {
        Peering::Legacy(addrs) => tokio::spawn(
            switch
                .clone()
                .run_legacy(addrs.clone(), config.network_idle_timeout),
        ),
        _ => {
            switch.start();
            tokio::spawn(async {})
        }
    };
    if config.log_flood {
        start_log_flood();
    }
    let crash = async {
        match knobs.crash_after {
            Some(after) => {
                tokio::time::sleep(after).await;
                error("simulated crash (SIMD_CRASH_AFTER)", &[]);
                EXIT_SIMULATED_CRASH
            }
            None => std::future::pending().await,
        }
    };
    let code = tokio::select! {
        code = run_core(core, switch.clone(), deliveries, status, commits) => code,
        code = wait_for_signal(knobs.ignore_signals) => code,
        code = crash => code,
    };
    peering_task.abort();
    inbound_task.abort();
    rpc_task.abort();
    Ok(code)
}

/// The node's consensus side: takes blocks from every session in arrival order (a height
/// already seen is not processed again), signs, and sends its votes on every session. A
/// session that delivers a height the node already voted on gets those votes, as CometBFT's
/// vote gossip sends a peer the votes it lacks.
async fn run_core(
    mut core: NodeCore,
    switch: Arc<Switch>,
    mut deliveries: mpsc::Receiver<Delivery>,
    status: Arc<Mutex<NodeStatus>>,
    commits: Arc<Mutex<CommitHistory>>,
) -> i32 {
    let mut voted: Option<(u64, Vec<Arc<str>>)> = None;
    while let Some(Delivery { peer, new_height }) = deliveries.recv().await {
        let outcome = match tokio::task::block_in_place(|| core.on_new_height(&new_height)) {
            Ok(outcome) => outcome,
            Err(e) => {
                error(
                    "cannot process block; waiting for the next one",
                    &[("height", &new_height.height), ("err", &format!("{e:#}"))],
                );
                continue;
            }
        };
        let latest = core.status();
        // The block store keeps the commit of every block the node committed: the one the
        // network sent with the next height (CometBFT's block H+1 carries LastCommit for H).
        if let Some(last_commit) = &new_height.last_commit
            && last_commit.height <= latest.latest_height
        {
            commits
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(last_commit.clone());
        }
        *status.lock().unwrap_or_else(|p| p.into_inner()) = latest;
        match outcome {
            HeightOutcome::Vote(votes) => {
                let lines: Vec<Arc<str>> = votes
                    .into_iter()
                    .map(|vote| {
                        Arc::from(
                            serde_json::to_string(&NodeMessage::Vote(vote))
                                .expect("vote serializes"),
                        )
                    })
                    .collect();
                switch.broadcast_votes(new_height.height, &lines);
                voted = Some((new_height.height, lines));
            }
            HeightOutcome::Idle | HeightOutcome::Halted => {
                if let Some((height, lines)) = &voted
                    && *height == new_height.height
                {
                    switch.gossip_votes(peer, *height, lines);
                }
            }
            HeightOutcome::Exit(code) => return code,
        }
    }
    0
}

async fn wait_for_signal(ignore: bool) -> i32 {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        error("cannot install signal handlers", &[]);
        return std::future::pending().await;
    };
    loop {
        let name = tokio::select! {
            _ = terminate.recv() => "terminated",
            _ = interrupt.recv() => "interrupt",
        };
        if ignore {
            info("ignoring signal (SIMD_IGNORE_SIGINT)", &[("signal", &name)]);
            continue;
        }
        info("caught signal", &[("signal", &name)]);
        info("service stop", &[("module", &"server")]);
        return 0;
    }
}

fn start_log_flood() {
    std::thread::spawn(|| {
        let mut counter: u64 = 0;
        let mut chunk = String::with_capacity(64 * 1024);
        loop {
            chunk.clear();
            for _ in 0..256 {
                counter += 1;
                chunk.push_str(&crate::console_log::format_node_line(
                    Level::Debug,
                    "flood",
                    &[
                        ("n", &counter),
                        ("module", &"p2p"),
                        (
                            "padding",
                            &"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
                        ),
                    ],
                ));
                chunk.push('\n');
            }
            if std::io::stdout()
                .lock()
                .write_all(chunk.as_bytes())
                .is_err()
            {
                return;
            }
        }
    });
}

fn handle_rpc(
    identity: &RpcIdentity,
    status: &Mutex<NodeStatus>,
    commits: &Mutex<CommitHistory>,
    switch: &Switch,
    request: HttpRequest,
) -> HttpResponse {
    if request.path == "/net_info" {
        return crate::rpc::success(&switch.net_info(true, &identity.external_address));
    }
    let status = status.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let commits = commits.lock().unwrap_or_else(|p| p.into_inner());
    crate::rpc::answer_chain_route(&request, identity, &status, &commits)
        .unwrap_or_else(crate::rpc::method_not_found)
}

/// `simd status`: fetches `/status` from `node` (`tcp://host:port`) and returns its `result`.
pub fn query_status(node: &str) -> anyhow::Result<serde_json::Value> {
    let (code, body) = crate::http::request(node, "GET", "/status", None, Duration::from_secs(5))?;
    if code != 200 {
        bail!("{node}: /status returned HTTP {code}");
    }
    let mut value: serde_json::Value = serde_json::from_str(&body)?;
    Ok(value
        .get_mut("result")
        .map(serde_json::Value::take)
        .unwrap_or(serde_json::Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home_with_core(handlers: &[&str]) -> (tempfile::TempDir, NodeCore) {
        let dir = tempfile::tempdir().unwrap();
        init_home(&InitOptions {
            home: dir.path().to_path_buf(),
            moniker: "val1".into(),
            chain_id: "sim-1".into(),
            network: "127.0.0.1:1".into(),
            rpc_laddr: "tcp://127.0.0.1:0".into(),
            p2p_laddr: "tcp://127.0.0.1:0".into(),
            overwrite: false,
            genesis_size: 0,
        })
        .unwrap();
        let config = NodeConfig::load(dir.path()).unwrap();
        let core = NodeCore::load(
            config,
            AppIdentity {
                version: "v1".into(),
                upgrade_handlers: handlers.iter().map(|h| h.to_string()).collect(),
            },
        )
        .unwrap();
        (dir, core)
    }

    fn new_height(height: u64, plans: Vec<UpgradePlan>) -> NewHeight {
        NewHeight {
            chain_id: "sim-1".into(),
            height,
            round: 0,
            block_id: crate::protocol::block_id("sim-1", height),
            time: "2024-02-29T15:04:05.000000007Z".into(),
            last_block_time: "2024-02-29T15:04:04.500000000Z".into(),
            upgrade_plans: plans,
            last_commit: None,
        }
    }

    #[test]
    fn votes_are_persisted_before_release_and_never_regress() {
        let (dir, mut core) = home_with_core(&[]);
        let HeightOutcome::Vote(votes) = core.on_new_height(&new_height(5, vec![])).unwrap() else {
            panic!("expected votes")
        };
        assert_eq!(votes.iter().map(|v| v.step).collect::<Vec<_>>(), vec![2, 3]);
        let state = SignState::load(&dir.path().join("data/priv_validator_state.json")).unwrap();
        assert_eq!(state.watermark(), (5, 0, 3));
        assert_eq!(
            state.signbytes.as_deref(),
            Some(hex::encode_upper(B64.decode(&votes[1].sign_bytes).unwrap()).as_str())
        );
        // A lower height from a confused network is refused.
        core.last_height_seen = 0;
        assert_eq!(
            core.on_new_height(&new_height(4, vec![])).unwrap(),
            HeightOutcome::Idle
        );
    }

    #[test]
    fn init_keeps_existing_keys_and_init_is_repeatable() {
        let (dir, core) = home_with_core(&[]);
        let again = init_home(&InitOptions {
            home: dir.path().to_path_buf(),
            moniker: "val1".into(),
            chain_id: "sim-1".into(),
            network: "127.0.0.1:1".into(),
            rpc_laddr: "tcp://127.0.0.1:0".into(),
            p2p_laddr: "tcp://127.0.0.1:0".into(),
            overwrite: true,
            genesis_size: 0,
        })
        .unwrap();
        assert_eq!(again.validator_address, core.address());
        let mode = |p: &str| {
            use std::os::unix::fs::PermissionsExt;
            fs::metadata(dir.path().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("config/priv_validator_key.json"), 0o600);
        assert_eq!(mode("config/node_key.json"), 0o600);
        let state = fs::read_to_string(dir.path().join("data/priv_validator_state.json")).unwrap();
        assert!(state.contains("\"height\": \"0\""), "{state}");
    }

    #[test]
    fn upgrade_halt_writes_info_and_stops_signing() {
        let (dir, mut core) = home_with_core(&[]);
        let plan = UpgradePlan {
            name: "v2".into(),
            height: 3,
            info: "{}".into(),
        };
        assert!(matches!(
            core.on_new_height(&new_height(2, vec![plan.clone()]))
                .unwrap(),
            HeightOutcome::Vote(_)
        ));
        assert_eq!(
            core.on_new_height(&new_height(3, vec![plan.clone()]))
                .unwrap(),
            HeightOutcome::Halted
        );
        assert_eq!(
            core.on_new_height(&new_height(4, vec![plan.clone()]))
                .unwrap(),
            HeightOutcome::Halted
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("data/upgrade-info.json")).unwrap(),
            r#"{"name":"v2","time":"0001-01-01T00:00:00Z","height":3,"info":"{}"}"#
        );
        let status = core.status();
        assert_eq!(status.latest_height, 2);
        assert_eq!(
            crate::rpc::status::rpc_time(&status.latest_block_time),
            "2024-02-29T15:04:04.5Z"
        );
        assert_eq!(status.earliest.as_ref().map(|e| e.height), Some(1));
        assert_eq!(core.startup_check().unwrap(), Some(EXIT_UPGRADE));
    }
}
