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
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::clock::rfc3339;
use crate::console_log::{Level, Sink, log};
use crate::http::{HttpRequest, HttpResponse};
use crate::key::{PUB_KEY_TYPE, ValidatorKey};
use crate::node_config::{ConfigTemplate, NodeConfig, render_config};
use crate::protocol::{
    MAX_LINE_BYTES, NetworkMessage, NewHeight, NodeMessage, SignedVote, UpgradePlan,
};
use crate::sign_state::{SignDecision, SignState, check, write_atomically};
use crate::upgrade::{
    Phase, UpgradeAction, decide, updated_before_trigger_message, upgrade_needed_message,
};
use crate::vote::{CanonicalVote, VoteType};

/// CometBFT version reported by `/status`.
pub const COMETBFT_VERSION: &str = "0.38.17";
/// Exit code when the binary cannot run the chain (upgrade needed / updated too early).
pub const EXIT_UPGRADE: i32 = 1;
/// Exit code of the simulated crash (`SIMD_CRASH_AFTER`).
pub const EXIT_SIMULATED_CRASH: i32 = 2;
/// How long one connection attempt to a network address may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(2);

fn info(message: &str, fields: &[(&str, &dyn std::fmt::Display)]) {
    log(Sink::Stdout, Level::Info, message, fields);
}

fn error(message: &str, fields: &[(&str, &dyn std::fmt::Display)]) {
    log(Sink::Stdout, Level::Error, message, fields);
}

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
        let genesis = serde_json::json!({
            "genesis_time": rfc3339(SystemTime::now()),
            "chain_id": options.chain_id,
            "initial_height": "1",
            "app_name": "simd",
        });
        write_atomically(
            &genesis_path,
            serde_json::to_string_pretty(&genesis)?.as_bytes(),
            0o644,
        )?;
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

fn read_chain_id(home: &Path) -> Option<String> {
    let text = fs::read_to_string(home.join("config").join("genesis.json")).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value.get("chain_id")?.as_str().map(str::to_string)
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

/// Status shared with the RPC server.
#[derive(Debug, Clone, Default)]
pub struct NodeStatus {
    /// Chain ID.
    pub chain_id: String,
    /// Latest committed height known.
    pub latest_height: u64,
    /// Hex hash of that block.
    pub latest_block_hash: String,
    /// Hex app hash.
    pub latest_app_hash: String,
    /// RFC 3339 time of the latest block.
    pub latest_block_time: String,
    /// Whether the node halted for an upgrade.
    pub halted: bool,
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
            SignState::load(&config.priv_validator_state_file)?
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
            self.upgrade_needed(&plan)?;
            return Ok(Some(EXIT_UPGRADE));
        }
        Ok(None)
    }

    fn upgrade_needed(&self, plan: &UpgradePlan) -> anyhow::Result<()> {
        if self.config.write_upgrade_info {
            let path = self.config.home.join("data").join("upgrade-info.json");
            let json = serde_json::to_vec(plan)?;
            write_atomically(&path, &json, 0o600).with_context(|| format!("{}", path.display()))?;
        }
        error(&upgrade_needed_message(plan), &[]);
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
                crate::network::block_id(self.chain_id.as_deref().unwrap_or(""), height)
            },
            latest_app_hash: self.app.app_hash.clone(),
            latest_block_time: String::new(),
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
        self.commit_application(height.saturating_sub(1), &new_height.block_id)?;
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
                info(
                    &format!("applying upgrade \"{}\" at height: {}", plan.name, height),
                    &[("module", &"x/upgrade")],
                );
                self.app.applied_upgrades.push(crate::node::AppliedUpgrade {
                    name: plan.name.clone(),
                    height,
                });
            }
            UpgradeAction::Halt(plan) => {
                self.app.save(&self.config.home)?;
                self.upgrade_needed(&plan)?;
                self.halted = true;
                return Ok(HeightOutcome::Halted);
            }
            UpgradeAction::ExitNeeded(plan) => {
                self.app.save(&self.config.home)?;
                self.upgrade_needed(&plan)?;
                return Ok(HeightOutcome::Exit(EXIT_UPGRADE));
            }
            UpgradeAction::UpdatedBeforeTrigger(plan) => {
                error(&updated_before_trigger_message(&plan), &[]);
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

    fn commit_application(&mut self, committed: u64, block_id: &str) -> anyhow::Result<()> {
        if committed <= self.app.last_height {
            return Ok(());
        }
        self.app.last_height = committed;
        let mut hasher = Sha256::new();
        hasher.update(self.app.app_hash.as_bytes());
        hasher.update(committed.to_be_bytes());
        for upgrade in &self.app.applied_upgrades {
            hasher.update(upgrade.name.as_bytes());
        }
        self.app.app_hash = hex::encode_upper(hasher.finalize());
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

/// `simd start`: runs the node until a signal, a simulated crash or an upgrade exit.
/// Returns the process exit code.
pub async fn run_start(
    home: &Path,
    identity: AppIdentity,
    knobs: TestKnobs,
) -> anyhow::Result<i32> {
    let config = NodeConfig::load(home)?;
    if config.network.is_empty() {
        bail!(
            "{}: [simchain] network is not set",
            NodeConfig::path(home).display()
        );
    }
    let network = NetworkLink {
        dialer: Dialer::new(config.network.clone()),
        idle_timeout: config.network_idle_timeout,
    };
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
        .map(|k| k.node_id())
        .unwrap_or_default();
    let status = Arc::new(Mutex::new(core.status()));
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
    let rpc_info = RpcIdentity {
        moniker: config.moniker.clone(),
        node_id,
        address: address.clone(),
        pub_key,
        voting_power: config.voting_power,
        p2p_laddr: config.p2p_laddr.clone(),
        rpc_laddr: format!("tcp://{}", config.rpc_laddr),
    };
    let rpc_task = tokio::spawn(crate::http::serve(rpc_listener, {
        let status = status.clone();
        move |request| handle_rpc(&rpc_info, &status, request)
    }));
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
        code = network_loop(core, network, address, status) => code,
        code = wait_for_signal(knobs.ignore_signals) => code,
        code = crash => code,
    };
    rpc_task.abort();
    Ok(code)
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
                chunk.push_str(&crate::console_log::format_line(
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

/// Which simchain-net address to dial next, and when to back off.
///
/// One session at a time. Addresses are tried round-robin: a failed attempt or a lost session
/// moves on to the next address at once, so failing over to a healthy address costs no delay;
/// the backoff applies only once a whole cycle of addresses failed in a row. A healthy session
/// (the network sent at least one height) resets the count and the backoff, and when it is lost
/// the *next* address is tried first. A session that dies before sending anything counts as a
/// failed attempt, so peers that accept and hang up cannot make the node spin.
#[derive(Debug, Clone)]
struct Dialer {
    addresses: Vec<String>,
    next: usize,
    failures_in_a_row: usize,
    backoff: Duration,
}

impl Dialer {
    fn new(addresses: Vec<String>) -> Self {
        assert!(!addresses.is_empty(), "no network address to dial");
        Self {
            addresses,
            next: 0,
            failures_in_a_row: 0,
            backoff: RECONNECT_MIN,
        }
    }

    /// The address to dial now, as (index, address); the following call returns the next one.
    fn next_address(&mut self) -> (usize, String) {
        let index = self.next;
        self.next = (self.next + 1) % self.addresses.len();
        (index, self.addresses[index].clone())
    }

    /// A session proved healthy (the network sent something).
    fn healthy(&mut self) {
        self.failures_in_a_row = 0;
        self.backoff = RECONNECT_MIN;
    }

    /// A connection attempt failed or a session was lost. Returns how long to wait before the
    /// next attempt: `None` (go on at once) until every address failed in a row.
    fn failed(&mut self) -> Option<Duration> {
        self.failures_in_a_row += 1;
        if self.failures_in_a_row < self.addresses.len() {
            return None;
        }
        self.failures_in_a_row = 0;
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(RECONNECT_MAX);
        Some(wait)
    }
}

/// The node's side of `[simchain]`: where to connect and when to give up on a silent session.
struct NetworkLink {
    dialer: Dialer,
    idle_timeout: Duration,
}

async fn network_loop(
    mut core: NodeCore,
    mut network: NetworkLink,
    address: String,
    status: Arc<Mutex<NodeStatus>>,
) -> i32 {
    let count = network.dialer.addresses.len();
    loop {
        let (index, addr) = network.dialer.next_address();
        let which = format!("{}/{count}", index + 1);
        info(
            "connecting to network",
            &[("addr", &addr), ("peer", &which)],
        );
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addr)).await {
            Ok(Ok(stream)) => {
                let mut healthy = false;
                let ended = session(
                    stream,
                    &addr,
                    network.idle_timeout,
                    &mut core,
                    &address,
                    &status,
                    &mut healthy,
                )
                .await;
                if healthy {
                    network.dialer.healthy();
                }
                match ended {
                    Ok(Some(code)) => return code,
                    Ok(None) => error(
                        "lost connection to network; reconnecting",
                        &[("addr", &addr), ("err", &"closed by peer")],
                    ),
                    Err(e) => error(
                        "lost connection to network; reconnecting",
                        &[("addr", &addr), ("err", &format!("{e:#}"))],
                    ),
                }
            }
            Ok(Err(e)) => error(
                "cannot reach network",
                &[("addr", &addr), ("peer", &which), ("err", &e)],
            ),
            Err(_) => error(
                "cannot reach network",
                &[("addr", &addr), ("peer", &which), ("err", &"timeout")],
            ),
        }
        if let Some(backoff) = network.dialer.failed() {
            let jitter = Duration::from_millis(rand::random::<u64>() % 50);
            let wait = backoff + jitter;
            if count > 1 {
                info(
                    "no network address reachable; retrying",
                    &[("addrs", &count), ("wait", &format!("{wait:?}"))],
                );
            }
            tokio::time::sleep(wait).await;
        }
    }
}

/// One connection to the network. `Ok(Some(code))` means exit. Sets `healthy` once the
/// network sent a valid message.
async fn session(
    stream: TcpStream,
    addr: &str,
    idle_timeout: Duration,
    core: &mut NodeCore,
    address: &str,
    status: &Arc<Mutex<NodeStatus>>,
    healthy: &mut bool,
) -> anyhow::Result<Option<i32>> {
    let _ = stream.set_nodelay(true);
    let (read_half, mut write_half) = stream.into_split();
    let mut reader = BufReader::new(read_half);
    let hello = serde_json::to_string(&NodeMessage::Hello {
        address: address.to_string(),
    })?;
    send_line(&mut write_half, &hello).await?;
    info("connected to network", &[("addr", &addr)]);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = tokio::time::timeout(
            idle_timeout,
            (&mut reader)
                .take(MAX_LINE_BYTES as u64 + 1)
                .read_until(b'\n', &mut line),
        )
        .await
        .map_err(|_| anyhow::anyhow!("network silent for {idle_timeout:?}"))??;
        if read == 0 {
            return Ok(None);
        }
        if line.len() > MAX_LINE_BYTES {
            bail!("line too long from network");
        }
        let NetworkMessage::NewHeight(new_height) = serde_json::from_slice(&line)?;
        *healthy = true;
        let outcome = tokio::task::block_in_place(|| core.on_new_height(&new_height))?;
        {
            let mut shared = status.lock().unwrap_or_else(|p| p.into_inner());
            *shared = NodeStatus {
                latest_block_time: if core.halted {
                    shared.latest_block_time.clone()
                } else {
                    new_height.time.clone()
                },
                ..core.status()
            };
        }
        match outcome {
            HeightOutcome::Vote(votes) => {
                for vote in votes {
                    send_line(
                        &mut write_half,
                        &serde_json::to_string(&NodeMessage::Vote(vote))?,
                    )
                    .await?;
                }
            }
            HeightOutcome::Idle | HeightOutcome::Halted => {}
            HeightOutcome::Exit(code) => return Ok(Some(code)),
        }
    }
}

async fn send_line(writer: &mut tokio::net::tcp::OwnedWriteHalf, line: &str) -> anyhow::Result<()> {
    let mut bytes = line.as_bytes().to_vec();
    bytes.push(b'\n');
    tokio::time::timeout(Duration::from_secs(2), writer.write_all(&bytes))
        .await
        .context("write to network timed out")??;
    Ok(())
}

struct RpcIdentity {
    moniker: String,
    node_id: String,
    address: String,
    pub_key: String,
    voting_power: u64,
    p2p_laddr: String,
    rpc_laddr: String,
}

fn handle_rpc(
    identity: &RpcIdentity,
    status: &Mutex<NodeStatus>,
    request: HttpRequest,
) -> HttpResponse {
    let status = status.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let result = match request.path.as_str() {
        "/status" => status_result(identity, &status),
        "/health" => serde_json::json!({}),
        _ => {
            return HttpResponse {
                status: 404,
                body: serde_json::json!({"jsonrpc":"2.0","id":-1,"error":{"code":-32601,"message":"Method not found"}}).to_string(),
            };
        }
    };
    HttpResponse::json(&serde_json::json!({"jsonrpc": "2.0", "id": -1, "result": result}))
}

fn status_result(identity: &RpcIdentity, status: &NodeStatus) -> serde_json::Value {
    serde_json::json!({
        "node_info": {
            "protocol_version": {"p2p": "8", "block": "11", "app": "0"},
            "id": identity.node_id,
            "listen_addr": identity.p2p_laddr,
            "network": status.chain_id,
            "version": COMETBFT_VERSION,
            "channels": "40202122233038606100",
            "moniker": identity.moniker,
            "other": {"tx_index": "on", "rpc_address": identity.rpc_laddr},
        },
        "sync_info": {
            "latest_block_hash": status.latest_block_hash,
            "latest_app_hash": status.latest_app_hash,
            "latest_block_height": status.latest_height.to_string(),
            "latest_block_time": status.latest_block_time,
            "earliest_block_hash": "",
            "earliest_app_hash": "",
            "earliest_block_height": "1",
            "earliest_block_time": "",
            "catching_up": false,
        },
        "validator_info": {
            "address": identity.address,
            "pub_key": {"type": PUB_KEY_TYPE, "value": identity.pub_key},
            "voting_power": identity.voting_power.to_string(),
        },
    })
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
            block_id: crate::network::block_id("sim-1", height),
            time: "t".into(),
            upgrade_plans: plans,
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
        let info: UpgradePlan = serde_json::from_str(
            &fs::read_to_string(dir.path().join("data/upgrade-info.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(info, plan);
        assert_eq!(core.startup_check().unwrap(), Some(EXIT_UPGRADE));
    }

    #[test]
    fn dialer_fails_over_at_once_and_backs_off_only_after_a_full_cycle() {
        let addrs = |n: usize| {
            (1..=n)
                .map(|i| format!("127.0.0.1:{i}"))
                .collect::<Vec<_>>()
        };
        // Each step: what happened to the attempt on the address just dialled (a failed connect,
        // a session that ended before the network sent anything, or a healthy session that was
        // then lost), the expected wait before the next attempt (None: at once) and the next
        // address index.
        enum Event {
            Fail,
            HealthySessionLost,
        }
        use Event::*;
        let ms = |n| Some(Duration::from_millis(n));
        type Step = (Event, Option<Duration>, usize);
        let cases: Vec<(usize, Vec<Step>)> = vec![
            // One address: as before, every failure waits, the wait doubles up to the cap and
            // a session resets it.
            (
                1,
                vec![
                    (Fail, ms(100), 0),
                    (Fail, ms(200), 0),
                    (Fail, ms(400), 0),
                    (HealthySessionLost, ms(100), 0),
                    (Fail, ms(200), 0),
                    (Fail, ms(400), 0),
                    (Fail, ms(800), 0),
                    (Fail, ms(1600), 0),
                    (Fail, ms(2000), 0),
                    (Fail, ms(2000), 0),
                ],
            ),
            // Two addresses: failing over to the second is immediate; a full failed cycle
            // waits; a lost session moves on to the *other* address first, at once.
            (
                2,
                vec![
                    (Fail, None, 1),
                    (Fail, ms(100), 0),
                    (Fail, None, 1),
                    (Fail, ms(200), 0),
                    (Fail, None, 1),
                    (HealthySessionLost, None, 0),
                    (Fail, ms(100), 1),
                    (HealthySessionLost, None, 0),
                    (HealthySessionLost, None, 1),
                ],
            ),
            // Three: round-robin order, backoff after three failures in a row.
            (
                3,
                vec![
                    (Fail, None, 1),
                    (Fail, None, 2),
                    (Fail, ms(100), 0),
                    (HealthySessionLost, None, 1),
                    (Fail, None, 2),
                    (Fail, ms(100), 0),
                ],
            ),
        ];
        for (count, steps) in cases {
            let mut dialer = Dialer::new(addrs(count));
            let (first, addr) = dialer.next_address();
            assert_eq!((first, addr.as_str()), (0, "127.0.0.1:1"));
            for (step, (event, wait, next)) in steps.into_iter().enumerate() {
                if matches!(event, HealthySessionLost) {
                    dialer.healthy();
                }
                assert_eq!(dialer.failed(), wait, "{count} addresses, step {step}");
                let (index, addr) = dialer.next_address();
                assert_eq!(index, next, "{count} addresses, step {step}");
                assert_eq!(addr, format!("127.0.0.1:{}", next + 1));
            }
        }
    }
}
