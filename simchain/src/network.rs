//! The simulated CometBFT network: block production, vote verification and the record.
//!
//! [`ChainState`] is the pure core (no I/O): it verifies votes, flags double signs, commits
//! heights and renders the [`Record`]. [`run`] wraps it in tokio servers:
//!
//! - one or more TCP listeners for nodes speaking [`crate::protocol`], each standing for a
//!   sentry: its own name and node key (so its own node ID, `p2p/key.go`), one chain behind
//!   all of them. A listener accepts any number of sessions, from any IP and node ID — more
//!   than a sentry would, which refuses a second session from an IP (unless
//!   `allow_duplicate_ip`) or from a node ID it already has (`p2p/switch.go` `filterPeer`):
//!   every test node is on loopback, and one listener may be reached through two paths whose
//!   first session lingers after its link was cut. The *validator's* side applies those rules
//!   ([`crate::switch`]). At most
//!   [`MAX_NODE_CONNECTIONS`] sessions per listener; each gets a bounded queue of
//!   [`NODE_QUEUE`] new heights — a node that falls behind or does not accept a write within
//!   [`NODE_WRITE_TIMEOUT`] is dropped, never waited for;
//! - an HTTP endpoint: `GET /record`, `GET /status` (`{"height":H}`, latest committed height),
//!   `POST /upgrade` (`{"name","height","info"}`, like a governance proposal passing) and
//!   `POST /listeners/NAME/down` / `up` (a sentry stops — its port closes and its sessions
//!   drop — or comes back on the same address);
//! - per sentry, optionally (`--rpc NAME=ADDR`), CometBFT's RPC: `/status` (the network's view
//!   under the sentry's identity) and `/commit`, rendered by [`crate::rpc`] as `simd` renders
//!   them;
//! - a block timer: every block time it commits the current height if precommit power
//!   (internal validators included) reaches 2/3 of the total, records which external validators
//!   missed it, builds its commit (every validator of the set in CometBFT's order, with the
//!   precommits that arrived in time; internal validators sign with deterministic keys), and
//!   broadcasts `new_height` for the next one, carrying that commit;
//! - an optional record file rewritten atomically after each commit (by a separate task, so a
//!   slow disk never delays blocks) and on exit.
//!
//! Internal validators always vote and "upgrade instantly", so the chain never halts; external
//! validators that halt or disconnect visibly miss blocks.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, broadcast, mpsc, watch};

use crate::clock::rfc3339;
use crate::console_log::{Level, Sink, log};
use crate::http::{HttpRequest, HttpResponse};
use crate::key::{PUB_KEY_TYPE, TypedKey, ValidatorKey, address_of, decode_pub_key};
use crate::protocol::{
    BLOCK_ID_FLAG_COMMIT, BLOCK_ID_FLAG_NIL, BlockCommit, CommitSig, Hello, MAX_LINE_BYTES,
    NetworkMessage, NewHeight, NodeInfo, NodeMessage, SignedVote, UpgradePlan, auth_message,
};
use crate::record::{
    ConnectionRecord, DoubleSign, ListenerRecord, MAX_MISSED_LISTED, Record, ValidatorRecord,
};
use crate::rpc::commit::CommitHistory;
use crate::rpc::status::{BlockMeta, NodeStatus, RpcIdentity};
use crate::sign_state::write_atomically;
use crate::vote::{CanonicalVote, VoteType};

/// Concurrent node connections.
pub const MAX_NODE_CONNECTIONS: usize = 256;
/// New heights queued per node before it is considered too slow and dropped.
pub const NODE_QUEUE: usize = 64;
/// Deadline for writing one line to a node.
pub const NODE_WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// A node that sends nothing for this long is disconnected (a node pings every 60 s).
pub const NODE_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// A node must send its `hello` within this long.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Heights of vote history kept for double-sign detection.
pub const VOTE_HISTORY_HEIGHTS: u64 = 5_000;
/// Distinct sign bytes remembered per (validator, height, round, step).
const MAX_SIGN_BYTES_PER_HRS: usize = 8;

/// Errors building the network configuration.
#[derive(Debug, thiserror::Error)]
pub enum NetworkConfigError {
    /// The genesis file could not be read or parsed.
    #[error("genesis {path}: {reason}")]
    Genesis {
        /// File involved.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// `--chain-id` disagrees with the genesis file.
    #[error("--chain-id {cli:?} differs from genesis chain_id {genesis:?}")]
    ChainIdMismatch {
        /// From the command line.
        cli: String,
        /// From the genesis.
        genesis: String,
    },
    /// An upgrade plan is malformed.
    #[error("upgrade plan {0:?}: expected NAME:HEIGHT[:INFO] with a non-empty name and height > 0")]
    UpgradePlan(String),
}

/// Genesis file: `{"chain_id":..., "validators":[{"name","pub_key":{"type","value"},"power":"10"}]}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Genesis {
    /// Chain ID (optional; `--chain-id` fills it in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_id: Option<String>,
    /// External validators.
    pub validators: Vec<GenesisValidator>,
}

/// One external validator in the genesis file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenesisValidator {
    /// Name used in the record.
    pub name: String,
    /// Amino JSON public key.
    pub pub_key: TypedKey,
    /// Voting power, a decimal string as in CometBFT genesis files (numbers accepted too).
    #[serde(with = "power_string")]
    pub power: u64,
}

mod power_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(power: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&power.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Power {
            Text(String),
            Number(u64),
        }
        match Power::deserialize(d)? {
            Power::Text(t) => t.parse().map_err(serde::de::Error::custom),
            Power::Number(n) => Ok(n),
        }
    }
}

impl Genesis {
    /// Reads and validates a genesis file.
    pub fn load(path: &Path) -> Result<Self, NetworkConfigError> {
        let error = |reason: String| NetworkConfigError::Genesis {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        let genesis: Genesis = serde_json::from_str(&text).map_err(|e| error(e.to_string()))?;
        let mut names = BTreeSet::new();
        for validator in &genesis.validators {
            if validator.pub_key.key_type != PUB_KEY_TYPE {
                return Err(error(format!(
                    "validator {}: unsupported key type {}",
                    validator.name, validator.pub_key.key_type
                )));
            }
            decode_pub_key(&validator.pub_key.value)
                .map_err(|e| error(format!("validator {}: {e}", validator.name)))?;
            if !names.insert(validator.name.clone()) {
                return Err(error(format!(
                    "duplicate validator name {}",
                    validator.name
                )));
            }
        }
        Ok(genesis)
    }
}

/// Parses `NAME:HEIGHT[:INFO]`.
pub fn parse_upgrade_plan(text: &str) -> Result<UpgradePlan, NetworkConfigError> {
    let mut parts = text.splitn(3, ':');
    let name = parts.next().unwrap_or_default();
    let height = parts.next().and_then(|h| h.parse::<u64>().ok());
    match height {
        Some(height) if !name.is_empty() && height > 0 => Ok(UpgradePlan {
            name: name.to_string(),
            height,
            info: parts.next().unwrap_or_default().to_string(),
        }),
        _ => Err(NetworkConfigError::UpgradePlan(text.to_string())),
    }
}

/// Everything the network needs to run.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// Chain ID.
    pub chain_id: String,
    /// Time between commits.
    pub block_time: Duration,
    /// External validators.
    pub validators: Vec<GenesisValidator>,
    /// Number of always-signing internal validators.
    pub internal_validators: u32,
    /// Power of each internal validator.
    pub internal_power: u64,
    /// Initial upgrade plans.
    pub upgrade_plans: Vec<UpgradePlan>,
    /// Where to keep the JSON record, if anywhere.
    pub record_path: Option<PathBuf>,
}

/// Who signs for a member of the validator set.
enum Signer {
    /// Simulated in-process: a deterministic key, always precommits at commit time.
    Internal(Box<ValidatorKey>),
    /// A genesis validator: index into `ChainState::validators`.
    External(usize),
}

/// One member of the validator set.
struct SetMember {
    address: String,
    power: u64,
    signer: Signer,
}

/// A valid precommit kept until its height is committed: what goes into the commit.
#[derive(Debug, Clone)]
struct Precommit {
    block_id_flag: u8,
    /// Exactly as in the sign bytes.
    timestamp: String,
    /// Base64.
    signature: String,
}

/// Precommits are kept for heights up to this far above the one being voted on.
const PRECOMMIT_LOOKAHEAD: u64 = 10;

struct ExternalValidator {
    name: String,
    key: VerifyingKey,
    record: ValidatorRecord,
    /// Heights with a valid precommit, pruned below the vote-history window.
    precommitted: BTreeSet<u64>,
}

/// What happened to one vote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoteOutcome {
    /// Valid and recorded.
    Accepted,
    /// Valid and recorded, and it conflicts with an earlier vote: a double sign.
    DoubleSign(DoubleSign),
    /// Rejected; counted in `invalid_votes`.
    Invalid(String),
}

/// The network's state machine. Pure: no clocks read, no I/O.
pub struct ChainState {
    chain_id: String,
    /// Height currently being voted on; `height - 1` is committed.
    height: u64,
    height_time: SystemTime,
    validators: Vec<ExternalValidator>,
    by_address: HashMap<String, usize>,
    internal_power: u64,
    sign_bytes_seen: HashMap<(usize, u64, u32, u8), Vec<Vec<u8>>>,
    /// The listeners a validator's valid votes for a height came through, with their sign
    /// bytes.
    vote_listeners: HashMap<(usize, u64), Vec<ListenerVote>>,
    double_signs: Vec<DoubleSign>,
    invalid_votes: u64,
    upgrade_plans: Vec<UpgradePlan>,
    /// Time of the last committed block.
    last_block_time: Option<SystemTime>,
    listeners: Vec<ListenerRecord>,
    sessions: BTreeMap<u64, OpenSession>,
    next_session: u64,
    /// The validator set in CometBFT's order (`types/validator_set.go`: power descending, then
    /// address ascending).
    set: Vec<SetMember>,
    /// Hex hash standing for the set (`validators_hash`).
    validators_hash: String,
    /// Precommits for heights not yet committed: height → external validator → precommit.
    precommits: BTreeMap<u64, BTreeMap<usize, Precommit>>,
    /// The last commits, for `new_height`'s `last_commit` and the sentries' `/commit`.
    commits: CommitHistory,
}

/// A vote's listener and sign bytes.
type ListenerVote = (String, Vec<u8>);

/// A session that passed the handshake.
#[derive(Debug, Clone)]
struct OpenSession {
    validator: Option<usize>,
    listener: String,
    listener_node_id: String,
    node_id: String,
    remote: String,
    since_height: u64,
}

pub use crate::protocol::block_id;

/// The key of internal validator `index` (from 0) of `chain_id`: deterministic, so its
/// signatures in `/commit` are real and checkable from outside.
pub fn internal_validator_key(chain_id: &str, index: u32) -> ValidatorKey {
    let seed: [u8; 32] = Sha256::digest(
        format!("palisade-simchain/internal-validator/{chain_id}/{index}").as_bytes(),
    )
    .into();
    ValidatorKey::from_seed(seed)
}

impl ChainState {
    /// A chain at height 1 (nothing committed yet).
    pub fn new(config: &NetworkConfig, now: SystemTime) -> Result<Self, NetworkConfigError> {
        let mut validators = Vec::new();
        let mut by_address = HashMap::new();
        for (index, genesis) in config.validators.iter().enumerate() {
            let key = decode_pub_key(&genesis.pub_key.value).map_err(|e| {
                NetworkConfigError::Genesis {
                    path: "<validators>".into(),
                    reason: format!("{}: {e}", genesis.name),
                }
            })?;
            let address = address_of(&key.to_bytes());
            by_address.insert(address.clone(), index);
            validators.push(ExternalValidator {
                name: genesis.name.clone(),
                key,
                record: ValidatorRecord {
                    address,
                    power: genesis.power,
                    ..ValidatorRecord::default()
                },
                precommitted: BTreeSet::new(),
            });
        }
        let mut set: Vec<SetMember> = (0..config.internal_validators)
            .map(|index| {
                let key = internal_validator_key(&config.chain_id, index);
                SetMember {
                    address: key.address(),
                    power: config.internal_power,
                    signer: Signer::Internal(Box::new(key)),
                }
            })
            .chain(validators.iter().enumerate().map(|(index, v)| SetMember {
                address: v.record.address.clone(),
                power: v.record.power,
                signer: Signer::External(index),
            }))
            .collect();
        set.sort_by(|a, b| {
            b.power
                .cmp(&a.power)
                .then_with(|| a.address.cmp(&b.address))
        });
        let mut hasher = Sha256::new();
        for member in &set {
            hasher.update(format!("{}:{};", member.address, member.power).as_bytes());
        }
        let validators_hash = hex::encode_upper(hasher.finalize());
        Ok(Self {
            set,
            validators_hash,
            precommits: BTreeMap::new(),
            commits: CommitHistory::default(),
            chain_id: config.chain_id.clone(),
            height: 1,
            height_time: now,
            validators,
            by_address,
            internal_power: u64::from(config.internal_validators)
                .saturating_mul(config.internal_power),
            sign_bytes_seen: HashMap::new(),
            vote_listeners: HashMap::new(),
            double_signs: Vec::new(),
            invalid_votes: 0,
            upgrade_plans: config.upgrade_plans.clone(),
            last_block_time: None,
            listeners: Vec::new(),
            sessions: BTreeMap::new(),
            next_session: 1,
        })
    }

    /// Registers a listener for the record.
    pub fn add_listener(&mut self, name: &str, listen_addr: SocketAddr, node_id: &str) {
        self.listeners.push(ListenerRecord {
            name: name.to_string(),
            listen_addr: listen_addr.to_string(),
            node_id: node_id.to_string(),
            up: true,
            sessions: 0,
        });
    }

    /// Marks a listener up or down; false when there is no such listener.
    pub fn set_listener_up(&mut self, name: &str, up: bool) -> bool {
        match self.listeners.iter_mut().find(|l| l.name == name) {
            Some(listener) => {
                listener.up = up;
                true
            }
            None => false,
        }
    }

    /// Opens a session after its handshake; returns its key.
    pub fn open_session(
        &mut self,
        listener: &str,
        listener_node_id: &str,
        hello: &Hello,
        remote: SocketAddr,
    ) -> u64 {
        let validator = self.by_address.get(&hello.address.to_uppercase()).copied();
        if let Some(index) = validator {
            self.validators[index].record.sessions_opened += 1;
        }
        let key = self.next_session;
        self.next_session += 1;
        self.sessions.insert(
            key,
            OpenSession {
                validator,
                listener: listener.to_string(),
                listener_node_id: listener_node_id.to_string(),
                node_id: hello.node_id.clone(),
                remote: remote.to_string(),
                since_height: self.height,
            },
        );
        key
    }

    /// Closes a session.
    pub fn close_session(&mut self, key: u64) {
        self.sessions.remove(&key);
    }

    /// Latest committed height.
    pub fn committed_height(&self) -> u64 {
        self.height - 1
    }

    /// The `new_height` message for the height being voted on.
    pub fn new_height(&self) -> NewHeight {
        NewHeight {
            chain_id: self.chain_id.clone(),
            height: self.height,
            round: 0,
            block_id: block_id(&self.chain_id, self.height),
            time: rfc3339(self.height_time),
            last_block_time: self.last_block_time.map(rfc3339).unwrap_or_default(),
            upgrade_plans: self.upgrade_plans.clone(),
            last_commit: self.commits.get(self.committed_height()).cloned(),
        }
    }

    /// The kept commits (the last [`crate::rpc::commit::COMMIT_HISTORY_HEIGHTS`]).
    pub fn commits(&self) -> &CommitHistory {
        &self.commits
    }

    /// The network's view of the chain for a sentry's `/status`: the latest committed block,
    /// and the oldest whose commit is still kept.
    pub fn chain_status(&self) -> NodeStatus {
        let latest = self.committed_height();
        let meta = |height: u64| {
            self.commits.get(height).map(|commit| BlockMeta {
                height,
                hash: commit.block_id.clone(),
                app_hash: String::new(),
                time: commit.time.clone(),
            })
        };
        let latest_meta = meta(latest).unwrap_or_default();
        NodeStatus {
            chain_id: self.chain_id.clone(),
            latest_height: latest,
            latest_block_hash: latest_meta.hash,
            latest_app_hash: String::new(),
            latest_block_time: latest_meta.time,
            earliest: self.commits.base().and_then(meta),
            halted: false,
        }
    }

    /// Schedules an upgrade plan; it must be above the height being voted on and unique by name.
    pub fn schedule_upgrade(&mut self, plan: UpgradePlan) -> Result<(), String> {
        if plan.name.trim().is_empty() {
            return Err("upgrade name is empty".into());
        }
        if plan.height <= self.height {
            return Err(format!(
                "upgrade height {} must be above the current height {}",
                plan.height, self.height
            ));
        }
        if self.upgrade_plans.iter().any(|p| p.name == plan.name) {
            return Err(format!("upgrade {:?} is already scheduled", plan.name));
        }
        self.upgrade_plans.push(plan);
        Ok(())
    }

    /// [`ChainState::on_vote`] for a vote that came through `listener`: a valid vote with sign
    /// bytes never seen before at its height, for a height whose votes of the same validator
    /// already came through another listener, marks that height in `multi_listener_heights`
    /// (two nodes signing with one key, when each node has its own sentry). A vote whose exact
    /// sign bytes were already seen is a resend, not a second signer: a node restored with
    /// another's `priv_validator_state.json` re-sends the cached vote at that state's
    /// height/round/step, as CometBFT's FilePV does (`privval/file.go`, `signVote`: same HRS and
    /// sign bytes that differ only in the timestamp reuse `LastSignState.Signature`). This is a
    /// record of the test network, not a CometBFT rule: the real chain keeps no such list.
    pub fn on_vote_via(&mut self, vote: &SignedVote, listener: &str) -> VoteOutcome {
        let outcome = self.on_vote(vote);
        if matches!(outcome, VoteOutcome::Invalid(_))
            || vote.height + VOTE_HISTORY_HEIGHTS < self.height
        {
            return outcome;
        }
        let Some(&index) = self.by_address.get(&vote.address.to_uppercase()) else {
            return outcome;
        };
        let last = self.validators[index]
            .record
            .last_vote_via
            .entry(listener.to_string())
            .or_default();
        *last = (*last).max(vote.height);
        let Ok(sign_bytes) = B64.decode(&vote.sign_bytes) else {
            return outcome;
        };
        let seen = self.vote_listeners.entry((index, vote.height)).or_default();
        if seen.iter().any(|(_, bytes)| *bytes == sign_bytes) {
            return outcome;
        }
        let other_listener = seen.iter().any(|(name, _)| name != listener);
        if seen.len() < MAX_SIGN_BYTES_PER_HRS * 4 {
            seen.push((listener.to_string(), sign_bytes));
        }
        let record = &mut self.validators[index].record;
        if other_listener
            && record.multi_listener_heights.last() != Some(&vote.height)
            && !record.multi_listener_heights.contains(&vote.height)
            && record.multi_listener_heights.len() < MAX_MISSED_LISTED
        {
            record.multi_listener_heights.push(vote.height);
        }
        outcome
    }

    /// Verifies and records one vote.
    pub fn on_vote(&mut self, vote: &SignedVote) -> VoteOutcome {
        match self.check_vote(vote) {
            Ok(outcome) => outcome,
            Err(reason) => {
                self.invalid_votes += 1;
                VoteOutcome::Invalid(reason)
            }
        }
    }

    fn check_vote(&mut self, vote: &SignedVote) -> Result<VoteOutcome, String> {
        let index = *self
            .by_address
            .get(&vote.address.to_uppercase())
            .ok_or_else(|| format!("unknown validator {}", vote.address))?;
        let sign_bytes = B64
            .decode(&vote.sign_bytes)
            .map_err(|_| "sign_bytes is not base64".to_string())?;
        let signature: [u8; 64] = B64
            .decode(&vote.signature)
            .ok()
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| "signature is not 64 base64 bytes".to_string())?;
        let validator = &self.validators[index];
        validator
            .key
            .verify_strict(&sign_bytes, &Signature::from_bytes(&signature))
            .map_err(|_| format!("bad signature from {}", validator.name))?;
        let canonical = CanonicalVote::parse(&sign_bytes)
            .ok_or_else(|| "sign_bytes is not a canonical vote".to_string())?;
        if canonical.chain_id != self.chain_id
            || canonical.height != vote.height
            || canonical.round != vote.round
            || canonical.vote_type.step() != vote.step
        {
            return Err("vote fields disagree with its sign bytes".into());
        }
        if vote.height + VOTE_HISTORY_HEIGHTS < self.height {
            return Ok(VoteOutcome::Accepted);
        }
        let mut outcome = VoteOutcome::Accepted;
        let seen = self
            .sign_bytes_seen
            .entry((index, vote.height, vote.round, vote.step))
            .or_default();
        if !seen.contains(&sign_bytes) {
            if let Some(first) = seen.first() {
                let double_sign = DoubleSign {
                    validator: validator.name.clone(),
                    height: vote.height,
                    round: vote.round,
                    step: vote.step,
                    sign_bytes_a: B64.encode(first),
                    sign_bytes_b: B64.encode(&sign_bytes),
                };
                self.double_signs.push(double_sign.clone());
                outcome = VoteOutcome::DoubleSign(double_sign);
            }
            if seen.len() < MAX_SIGN_BYTES_PER_HRS {
                seen.push(sign_bytes);
            }
        }
        if canonical.vote_type == VoteType::Precommit {
            self.keep_precommit(index, &canonical, &vote.signature);
            let validator = &mut self.validators[index];
            if validator.precommitted.insert(vote.height) {
                let record = &mut validator.record;
                record.signed_heights += 1;
                record.first_signed_height = Some(
                    record
                        .first_signed_height
                        .map_or(vote.height, |h| h.min(vote.height)),
                );
                record.last_signed_height = Some(
                    record
                        .last_signed_height
                        .map_or(vote.height, |h| h.max(vote.height)),
                );
            }
        }
        Ok(outcome)
    }

    /// Keeps the first valid precommit of a validator for a height not yet committed, if it
    /// can go into that height's commit: for the block (flag 2) or for nil (empty block ID,
    /// flag 3), with a timestamp in the form sign bytes carry.
    fn keep_precommit(&mut self, index: usize, vote: &CanonicalVote, signature: &str) {
        if vote.height < self.height || vote.height > self.height + PRECOMMIT_LOOKAHEAD {
            return;
        }
        let block_id_flag = if vote.block_id == block_id(&self.chain_id, vote.height) {
            BLOCK_ID_FLAG_COMMIT
        } else if vote.block_id.is_empty() {
            BLOCK_ID_FLAG_NIL
        } else {
            return;
        };
        let canonical_time = humantime::parse_rfc3339(&vote.timestamp).ok().map(rfc3339);
        if canonical_time.as_deref() != Some(vote.timestamp.as_str()) {
            return;
        }
        self.precommits
            .entry(vote.height)
            .or_default()
            .entry(index)
            .or_insert_with(|| Precommit {
                block_id_flag,
                timestamp: vote.timestamp.clone(),
                signature: signature.to_string(),
            });
    }

    /// The commit of the current height, as decided now: every member of the set in order,
    /// internal validators precommitting at `now`.
    fn build_commit(&self, now: SystemTime) -> BlockCommit {
        let height = self.height;
        let hash = block_id(&self.chain_id, height);
        let kept = self.precommits.get(&height);
        let signatures = self
            .set
            .iter()
            .map(|member| match &member.signer {
                Signer::Internal(key) => {
                    let timestamp = rfc3339(now);
                    let sign_bytes = CanonicalVote {
                        block_id: hash.clone(),
                        chain_id: self.chain_id.clone(),
                        height,
                        round: 0,
                        timestamp: timestamp.clone(),
                        vote_type: VoteType::Precommit,
                    }
                    .sign_bytes();
                    CommitSig {
                        block_id_flag: BLOCK_ID_FLAG_COMMIT,
                        validator_address: member.address.clone(),
                        timestamp,
                        signature: Some(B64.encode(key.sign(&sign_bytes))),
                    }
                }
                Signer::External(index) => match kept.and_then(|k| k.get(index)) {
                    Some(precommit) => CommitSig {
                        block_id_flag: precommit.block_id_flag,
                        validator_address: member.address.clone(),
                        timestamp: precommit.timestamp.clone(),
                        signature: Some(precommit.signature.clone()),
                    },
                    None => CommitSig::absent(),
                },
            })
            .collect();
        // Round-robin by height: CometBFT weighs proposers by power (`IncrementProposerPriority`).
        let proposer_address = self
            .set
            .get((height as usize).wrapping_sub(1) % self.set.len().max(1))
            .map(|m| m.address.clone())
            .unwrap_or_default();
        BlockCommit {
            height,
            round: 0,
            block_id: hash,
            time: rfc3339(self.height_time),
            proposer_address,
            validators_hash: self.validators_hash.clone(),
            signatures,
        }
    }

    /// Commits the current height if precommit power reaches 2/3; returns the missing
    /// validators' names on commit, `None` if the chain could not commit.
    pub fn try_commit(&mut self, now: SystemTime) -> Option<Vec<String>> {
        let height = self.height;
        let total: u64 =
            self.internal_power + self.validators.iter().map(|v| v.record.power).sum::<u64>();
        let signed: u64 = self.internal_power
            + self
                .validators
                .iter()
                .filter(|v| v.precommitted.contains(&height))
                .map(|v| v.record.power)
                .sum::<u64>();
        if total == 0 || signed.saturating_mul(3) < total.saturating_mul(2) {
            return None;
        }
        let mut missing = Vec::new();
        for validator in &mut self.validators {
            if !validator.precommitted.contains(&height) {
                let record = &mut validator.record;
                record.missed_heights.push(height);
                record.missed_count += 1;
                if record.missed_heights.len() > MAX_MISSED_LISTED {
                    record.missed_heights.remove(0);
                }
                missing.push(validator.name.clone());
            }
        }
        let commit = self.build_commit(now);
        self.commits.insert(commit);
        self.precommits = self.precommits.split_off(&(height + 1));
        self.last_block_time = Some(self.height_time);
        self.height += 1;
        self.height_time = now;
        let floor = self.height.saturating_sub(VOTE_HISTORY_HEIGHTS);
        if height.is_multiple_of(100) {
            self.sign_bytes_seen.retain(|(_, h, _, _), _| *h >= floor);
            self.vote_listeners.retain(|(_, h), _| *h >= floor);
            for validator in &mut self.validators {
                validator.precommitted = validator.precommitted.split_off(&floor);
            }
        }
        Some(missing)
    }

    /// The record as served on `GET /record`.
    pub fn record(&self) -> Record {
        let mut validators: BTreeMap<String, ValidatorRecord> = self
            .validators
            .iter()
            .map(|v| (v.name.clone(), v.record.clone()))
            .collect();
        let mut listeners = self.listeners.clone();
        for session in self.sessions.values() {
            if let Some(listener) = listeners.iter_mut().find(|l| l.name == session.listener) {
                listener.sessions += 1;
            }
            let Some(index) = session.validator else {
                continue;
            };
            let Some(record) = validators.get_mut(&self.validators[index].name) else {
                continue;
            };
            record.sessions += 1;
            if !record.connected_via.contains(&session.listener) {
                record.connected_via.push(session.listener.clone());
                record.connected_via.sort();
            }
            record.connections.push(ConnectionRecord {
                listener: session.listener.clone(),
                listener_node_id: session.listener_node_id.clone(),
                node_id: session.node_id.clone(),
                remote_addr: session.remote.clone(),
                since_height: session.since_height,
            });
        }
        Record {
            chain_id: self.chain_id.clone(),
            height: self.committed_height(),
            validators,
            double_signs: self.double_signs.clone(),
            invalid_votes: self.invalid_votes,
            upgrade_plans: self.upgrade_plans.clone(),
            listeners,
        }
    }

    fn validator_name(&self, address: &str) -> Option<&str> {
        self.by_address
            .get(&address.to_uppercase())
            .map(|&i| self.validators[i].name.as_str())
    }
}

/// A listener to open: `[NAME=]ADDR`, and optionally a node key file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    /// Its name in the record (default `sentry-N`, N counting from 1).
    pub name: Option<String>,
    /// Address to bind (port 0 picks a free port).
    pub addr: SocketAddr,
    /// `node_key.json` to use; created when missing, as CometBFT's `LoadOrGenNodeKey` does.
    /// Without one the listener gets a fresh key each run.
    pub node_key: Option<PathBuf>,
    /// Where this sentry serves CometBFT's RPC (`--rpc NAME=ADDR`), if anywhere.
    pub rpc: Option<SocketAddr>,
}

/// Parses `--listen [NAME=]ADDR`.
pub fn parse_listen_spec(text: &str) -> Result<ListenerSpec, String> {
    let (name, addr) = match text.split_once('=') {
        Some((name, addr)) => (Some(name.trim().to_string()), addr),
        None => (None, text),
    };
    if name.as_deref().is_some_and(|n| {
        n.is_empty()
            || !n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    }) {
        return Err(format!(
            "--listen {text:?}: a name is letters, digits, '-', '_' or '.'"
        ));
    }
    let addr = addr
        .trim()
        .parse()
        .map_err(|_| format!("--listen {text:?}: expected [NAME=]IP:PORT"))?;
    Ok(ListenerSpec {
        name,
        addr,
        node_key: None,
        rpc: None,
    })
}

/// Parses `--rpc NAME=ADDR`: the listener (sentry) named NAME — `sentry-N` for an unnamed
/// `--listen` — serves CometBFT's RPC on ADDR.
pub fn parse_rpc_spec(text: &str) -> Result<(String, SocketAddr), String> {
    let (name, addr) = text
        .split_once('=')
        .ok_or_else(|| format!("--rpc {text:?}: expected NAME=IP:PORT"))?;
    let addr = addr
        .trim()
        .parse()
        .map_err(|_| format!("--rpc {text:?}: expected NAME=IP:PORT"))?;
    Ok((name.trim().to_string(), addr))
}

/// Gives each `--rpc NAME=ADDR` to its listener (names as [`BoundNetwork::bind`] gives them).
pub fn assign_rpc_addresses(
    listeners: &mut [ListenerSpec],
    rpcs: &[(String, SocketAddr)],
) -> Result<(), String> {
    for (name, addr) in rpcs {
        let listener = listeners
            .iter_mut()
            .enumerate()
            .find(|(index, l)| listener_name(l, *index) == *name)
            .map(|(_, l)| l)
            .ok_or_else(|| format!("--rpc {name}={addr}: no --listen is named {name:?}"))?;
        if listener.rpc.replace(*addr).is_some() {
            return Err(format!(
                "--rpc: listener {name:?} is given two RPC addresses"
            ));
        }
    }
    Ok(())
}

fn listener_name(spec: &ListenerSpec, index: usize) -> String {
    spec.name
        .clone()
        .unwrap_or_else(|| format!("sentry-{}", index + 1))
}

/// A bound listener with its identity.
pub struct BoundListener {
    name: String,
    listener: TcpListener,
    key: Arc<ValidatorKey>,
    rpc: Option<TcpListener>,
}

/// What a listener looks like from outside: name, bound address, node ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerInfo {
    /// Name.
    pub name: String,
    /// Bound address.
    pub addr: SocketAddr,
    /// Node ID.
    pub node_id: String,
    /// Where it serves CometBFT's RPC, if it does.
    pub rpc_addr: Option<SocketAddr>,
}

/// Bound sockets, ready to [`serve`].
pub struct BoundNetwork {
    listeners: Vec<BoundListener>,
    http: TcpListener,
}

impl BoundNetwork {
    /// Binds the listeners and the HTTP endpoint (port 0 allowed), loading or creating each
    /// listener's node key. Names must be unique.
    pub async fn bind(specs: &[ListenerSpec], http: SocketAddr) -> anyhow::Result<Self> {
        anyhow::ensure!(!specs.is_empty(), "at least one --listen address is needed");
        let mut listeners = Vec::new();
        let mut names = BTreeSet::new();
        for (index, spec) in specs.iter().enumerate() {
            let name = listener_name(spec, index);
            anyhow::ensure!(
                names.insert(name.clone()),
                "listener name {name:?} is used twice"
            );
            let key = match &spec.node_key {
                Some(path) if path.exists() => ValidatorKey::load_node_key(path)?,
                Some(path) => {
                    let key = ValidatorKey::generate();
                    key.save_as_node_key(path)?;
                    key
                }
                None => ValidatorKey::generate(),
            };
            let listener = TcpListener::bind(spec.addr)
                .await
                .map_err(|e| anyhow::anyhow!("listen {}: {e}", spec.addr))?;
            let rpc = match spec.rpc {
                Some(addr) => Some(
                    TcpListener::bind(addr)
                        .await
                        .map_err(|e| anyhow::anyhow!("--rpc {name}: listen {addr}: {e}"))?,
                ),
                None => None,
            };
            listeners.push(BoundListener {
                name,
                listener,
                key: Arc::new(key),
                rpc,
            });
        }
        let http = TcpListener::bind(http)
            .await
            .map_err(|e| anyhow::anyhow!("listen {http}: {e}"))?;
        Ok(Self { listeners, http })
    }

    /// The listeners as bound, and the HTTP address.
    pub fn local_addrs(&self) -> std::io::Result<(Vec<ListenerInfo>, SocketAddr)> {
        let mut listeners = Vec::new();
        for bound in &self.listeners {
            listeners.push(ListenerInfo {
                name: bound.name.clone(),
                addr: bound.listener.local_addr()?,
                node_id: bound.key.node_id(),
                rpc_addr: bound.rpc.as_ref().map(|l| l.local_addr()).transpose()?,
            });
        }
        Ok((listeners, self.http.local_addr()?))
    }
}

type Shared = Arc<Mutex<ChainState>>;

fn lock(state: &Shared) -> std::sync::MutexGuard<'_, ChainState> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A listener while the network runs: it can be taken down and brought back.
struct ListenerRuntime {
    name: String,
    addr: SocketAddr,
    key: Arc<ValidatorKey>,
    node_id: String,
    chain_id: String,
    /// `true` while up; sessions end when it turns `false`.
    up: watch::Sender<bool>,
    accept_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl ListenerRuntime {
    /// Ends its sessions and stops accepting: dropping the accept loop
    /// closes the listening socket.
    fn take_down(&self) {
        self.up.send_replace(false);
        if let Some(task) = self
            .accept_task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            task.abort();
        }
    }
}

struct Runtime {
    state: Shared,
    heights: broadcast::Sender<Arc<str>>,
    listeners: Vec<Arc<ListenerRuntime>>,
}

impl Runtime {
    fn start_accepting(&self, listener: &Arc<ListenerRuntime>, socket: TcpListener) {
        let task = tokio::spawn(accept_nodes(
            socket,
            listener.clone(),
            self.state.clone(),
            self.heights.clone(),
        ));
        let mut slot = listener
            .accept_task
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(old) = slot.replace(task) {
            old.abort();
        }
    }

    /// `POST /listeners/NAME/down|up`.
    fn set_up(&self, name: &str, up: bool) -> Result<(), (u16, String)> {
        let listener = self
            .listeners
            .iter()
            .find(|l| l.name == name)
            .ok_or_else(|| (404, format!("no listener named {name:?}")))?;
        if *listener.up.borrow() == up {
            return Ok(());
        }
        if up {
            let socket = std::net::TcpListener::bind(listener.addr)
                .and_then(|s| s.set_nonblocking(true).map(|()| s))
                .and_then(TcpListener::from_std)
                .map_err(|e| (500, format!("listen {}: {e}", listener.addr)))?;
            listener.up.send_replace(true);
            self.start_accepting(listener, socket);
        } else {
            listener.take_down();
        }
        lock(&self.state).set_listener_up(name, up);
        log(
            Sink::Stderr,
            Level::Info,
            if up { "listener up" } else { "listener down" },
            &[("name", &name), ("addr", &listener.addr)],
        );
        Ok(())
    }
}

/// Runs the network until `shutdown` resolves, then writes the record file a final time.
pub async fn serve(
    config: NetworkConfig,
    bound: BoundNetwork,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let state: Shared = Arc::new(Mutex::new(ChainState::new(&config, SystemTime::now())?));
    let (heights_tx, _) = broadcast::channel::<Arc<str>>(NODE_QUEUE);
    let mut listeners = Vec::new();
    let mut sockets = Vec::new();
    let mut rpc_tasks = Vec::new();
    for bound_listener in bound.listeners {
        let addr = bound_listener.listener.local_addr()?;
        let node_id = bound_listener.key.node_id();
        lock(&state).add_listener(&bound_listener.name, addr, &node_id);
        if let Some(rpc) = bound_listener.rpc {
            let identity = RpcIdentity {
                moniker: bound_listener.name.clone(),
                node_id: node_id.clone(),
                address: bound_listener.key.address(),
                pub_key: bound_listener.key.pub_key_b64(),
                voting_power: 0,
                p2p_laddr: format!("tcp://{addr}"),
                external_address: String::new(),
                rpc_laddr: format!("tcp://{}", rpc.local_addr()?),
            };
            let state = state.clone();
            rpc_tasks.push(tokio::spawn(crate::http::serve(rpc, move |request| {
                handle_sentry_rpc(&state, &identity, &request)
            })));
        }
        listeners.push(Arc::new(ListenerRuntime {
            name: bound_listener.name,
            addr,
            key: bound_listener.key,
            node_id,
            chain_id: config.chain_id.clone(),
            up: watch::channel(true).0,
            accept_task: Mutex::new(None),
        }));
        sockets.push(bound_listener.listener);
    }
    let runtime = Arc::new(Runtime {
        state: state.clone(),
        heights: heights_tx.clone(),
        listeners,
    });
    for (listener, socket) in runtime.listeners.iter().zip(sockets) {
        runtime.start_accepting(listener, socket);
    }
    let (record_tx, record_rx) = watch::channel(lock(&state).record());

    let record_writer = config
        .record_path
        .clone()
        .map(|path| tokio::spawn(write_records(path, record_rx)));
    let http_task = tokio::spawn(crate::http::serve(bound.http, {
        let runtime = runtime.clone();
        move |request| handle_http(&runtime, request)
    }));
    let block_task = tokio::spawn(produce_blocks(
        config.block_time,
        state.clone(),
        heights_tx,
        record_tx,
    ));

    shutdown.await;
    for listener in &runtime.listeners {
        listener.take_down();
    }
    http_task.abort();
    for task in rpc_tasks {
        task.abort();
    }
    // Stop block production (dropping its record sender), let the writer finish any write in
    // flight, then write the final record ourselves so nothing older can overwrite it.
    block_task.abort();
    let _ = block_task.await;
    if let Some(writer) = record_writer {
        let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    }
    if let Some(path) = &config.record_path {
        let record = lock(&state).record();
        write_record_file(path, &record)?;
    }
    log(
        Sink::Stderr,
        Level::Info,
        "simchain-net stopped",
        &[("height", &lock(&state).committed_height())],
    );
    Ok(())
}

fn write_record_file(path: &Path, record: &Record) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
    write_atomically(path, &json, 0o644)
}

async fn write_records(path: PathBuf, mut records: watch::Receiver<Record>) {
    while records.changed().await.is_ok() {
        let record = records.borrow_and_update().clone();
        let path = path.clone();
        let result = tokio::task::spawn_blocking(move || write_record_file(&path, &record)).await;
        if let Ok(Err(e)) = result {
            log(
                Sink::Stderr,
                Level::Error,
                "cannot write record",
                &[("err", &e)],
            );
        }
    }
}

async fn produce_blocks(
    block_time: Duration,
    state: Shared,
    heights: broadcast::Sender<Arc<str>>,
    records: watch::Sender<Record>,
) {
    let mut interval = tokio::time::interval(block_time);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    loop {
        interval.tick().await;
        let (message, record) = {
            let mut chain = lock(&state);
            let height = chain.height;
            match chain.try_commit(SystemTime::now()) {
                Some(missing) if !missing.is_empty() => log(
                    Sink::Stderr,
                    Level::Debug,
                    "committed with missing validators",
                    &[("height", &height), ("missing", &missing.join(","))],
                ),
                Some(_) => {}
                None => log(
                    Sink::Stderr,
                    Level::Error,
                    "not enough precommit power; height not committed",
                    &[("height", &height)],
                ),
            }
            let message = serde_json::to_string(&NetworkMessage::NewHeight(chain.new_height()))
                .expect("new_height serializes");
            (message, chain.record())
        };
        let _ = heights.send(Arc::from(message));
        let _ = records.send(record);
    }
}

fn handle_http(runtime: &Runtime, request: HttpRequest) -> HttpResponse {
    let state = &runtime.state;
    if let Some(rest) = request.path.strip_prefix("/listeners/") {
        let Some((name, action)) = rest.rsplit_once('/') else {
            return HttpResponse::error(404, "not found");
        };
        let up = match action {
            "up" => true,
            "down" => false,
            _ => return HttpResponse::error(404, "not found"),
        };
        if request.method != "POST" {
            return HttpResponse::error(405, "method not allowed");
        }
        return match runtime.set_up(name, up) {
            Ok(()) => HttpResponse::json(&serde_json::json!({ "name": name, "up": up })),
            Err((status, reason)) => HttpResponse::error(status, &reason),
        };
    }
    match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/record") => match serde_json::to_value(lock(state).record()) {
            Ok(value) => HttpResponse::json(&value),
            Err(e) => HttpResponse::error(500, &e.to_string()),
        },
        ("GET", "/status") => {
            HttpResponse::json(&serde_json::json!({ "height": lock(state).committed_height() }))
        }
        ("POST", "/upgrade") => {
            let plan: UpgradePlan = match serde_json::from_slice(&request.body) {
                Ok(plan) => plan,
                Err(e) => return HttpResponse::error(400, &format!("invalid plan: {e}")),
            };
            match lock(state).schedule_upgrade(plan.clone()) {
                Ok(()) => {
                    log(
                        Sink::Stderr,
                        Level::Info,
                        "upgrade scheduled",
                        &[("name", &plan.name), ("height", &plan.height)],
                    );
                    HttpResponse::json(&serde_json::json!({ "scheduled": plan }))
                }
                Err(reason) => HttpResponse::error(400, &reason),
            }
        }
        (_, "/record" | "/status" | "/upgrade") => HttpResponse::error(405, "method not allowed"),
        _ => HttpResponse::error(404, "not found"),
    }
}

/// A sentry's CometBFT RPC: `/status` (the network's view, the sentry's identity) and
/// `/commit`, rendered as `simd` renders them.
fn handle_sentry_rpc(
    state: &Shared,
    identity: &RpcIdentity,
    request: &HttpRequest,
) -> HttpResponse {
    let chain = lock(state);
    crate::rpc::answer_chain_route(request, identity, &chain.chain_status(), chain.commits())
        .unwrap_or_else(crate::rpc::method_not_found)
}

async fn accept_nodes(
    listener: TcpListener,
    runtime: Arc<ListenerRuntime>,
    state: Shared,
    heights: broadcast::Sender<Arc<str>>,
) {
    let permits = Arc::new(Semaphore::new(MAX_NODE_CONNECTIONS));
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            log(
                Sink::Stderr,
                Level::Error,
                "too many node connections; refusing",
                &[("peer", &peer)],
            );
            continue;
        };
        let state = state.clone();
        let receiver = heights.subscribe();
        let runtime = runtime.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut session = None;
            let result = handle_node(stream, peer, &runtime, &state, receiver, &mut session).await;
            if let Some(key) = session {
                lock(&state).close_session(key);
            }
            if let Err(reason) = result {
                log(
                    Sink::Stderr,
                    Level::Info,
                    "node disconnected",
                    &[
                        ("listener", &runtime.name),
                        ("peer", &peer),
                        ("reason", &reason),
                    ],
                );
            }
        });
    }
}

async fn read_line(
    reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    buffer: &mut Vec<u8>,
    timeout: Duration,
) -> Result<(), String> {
    buffer.clear();
    let read = tokio::time::timeout(
        timeout,
        (&mut *reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', buffer),
    )
    .await
    .map_err(|_| "idle timeout".to_string())?
    .map_err(|e| e.to_string())?;
    if read == 0 {
        return Err("closed".into());
    }
    if buffer.len() > MAX_LINE_BYTES {
        return Err("line too long".into());
    }
    Ok(())
}

/// One node session on one listener: the handshake (the node's `hello`, our NodeInfo with the
/// proof of our node key), then blocks out and votes in until the link
/// fails, the node leaves or the listener goes down. `session` receives the session's key once
/// it is open, so the caller closes it whatever happens.
async fn handle_node(
    stream: TcpStream,
    peer: SocketAddr,
    listener: &ListenerRuntime,
    state: &Shared,
    mut heights: broadcast::Receiver<Arc<str>>,
    session: &mut Option<u64>,
) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let mut down = listener.up.subscribe();
    if !*down.borrow_and_update() {
        return Err("listener down".into());
    }
    let (read_half, mut write_half) = stream.into_split();
    let mut reader = BufReader::new(read_half);
    let mut line = Vec::new();
    read_line(&mut reader, &mut line, HELLO_TIMEOUT).await?;
    let hello = match serde_json::from_slice::<NodeMessage>(&line) {
        Ok(NodeMessage::Hello(hello)) => hello,
        _ => return Err("first message must be hello".into()),
    };
    let nonce = B64
        .decode(&hello.nonce)
        .map_err(|_| "hello nonce is not base64".to_string())?;
    let node_info = NodeInfo {
        id: listener.node_id.clone(),
        pub_key: listener.key.pub_key_b64(),
        signature: B64.encode(listener.key.sign(&auth_message(&nonce))),
        listen_addr: listener.addr.to_string(),
        network: listener.chain_id.clone(),
        moniker: listener.name.clone(),
        version: crate::protocol::COMETBFT_VERSION.to_string(),
    };
    write_line(
        &mut write_half,
        &serde_json::to_string(&NetworkMessage::NodeInfo(node_info)).expect("node_info serializes"),
    )
    .await?;
    let (name, current) = {
        let mut chain = lock(state);
        let key = chain.open_session(&listener.name, &listener.node_id, &hello, peer);
        *session = Some(key);
        let name = chain
            .validator_name(&hello.address)
            .unwrap_or("unknown")
            .to_string();
        let current = serde_json::to_string(&NetworkMessage::NewHeight(chain.new_height()))
            .expect("new_height serializes");
        (name, current)
    };
    log(
        Sink::Stderr,
        Level::Info,
        "node connected",
        &[
            ("validator", &name),
            ("address", &hello.address),
            ("listener", &listener.name),
            ("peer", &peer),
        ],
    );
    write_line(&mut write_half, &current).await?;

    let (pongs_tx, mut pongs) = mpsc::channel::<()>(4);
    let reading = async {
        loop {
            read_line(&mut reader, &mut line, NODE_IDLE_TIMEOUT).await?;
            match serde_json::from_slice::<NodeMessage>(&line) {
                Ok(NodeMessage::Vote(vote)) => {
                    let outcome = lock(state).on_vote_via(&vote, &listener.name);
                    match outcome {
                        VoteOutcome::Accepted => {}
                        VoteOutcome::DoubleSign(ds) => log(
                            Sink::Stderr,
                            Level::Error,
                            "DOUBLE SIGN detected",
                            &[
                                ("validator", &ds.validator),
                                ("height", &ds.height),
                                ("round", &ds.round),
                                ("step", &ds.step),
                            ],
                        ),
                        VoteOutcome::Invalid(reason) => log(
                            Sink::Stderr,
                            Level::Error,
                            "invalid vote",
                            &[("address", &vote.address), ("reason", &reason)],
                        ),
                    }
                }
                Ok(NodeMessage::Ping) => {
                    // A node pings at most once a minute (scaled); a full queue means pongs
                    // are already due.
                    let _ = pongs_tx.try_send(());
                }
                Ok(NodeMessage::Hello(_)) => {}
                Err(_) => {
                    lock(state).invalid_votes += 1;
                    return Err::<(), String>("malformed message".into());
                }
            }
        }
    };
    let pong = serde_json::to_string(&NetworkMessage::Pong).expect("pong serializes");
    let writing = async {
        loop {
            tokio::select! {
                height = heights.recv() => match height {
                    Ok(message) => write_line(&mut write_half, &message).await?,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        return Err::<(), String>("too slow; dropped".into());
                    }
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                },
                Some(()) = pongs.recv() => write_line(&mut write_half, &pong).await?,
                changed = down.changed() => {
                    if changed.is_err() || !*down.borrow_and_update() {
                        return Err("listener down".into());
                    }
                }
            }
        }
    };
    tokio::select! {
        result = reading => result,
        result = writing => result,
    }
}

async fn write_line(
    writer: &mut tokio::net::tcp::OwnedWriteHalf,
    message: &str,
) -> Result<(), String> {
    let mut bytes = Vec::with_capacity(message.len() + 1);
    bytes.extend_from_slice(message.as_bytes());
    bytes.push(b'\n');
    tokio::time::timeout(NODE_WRITE_TIMEOUT, writer.write_all(&bytes))
        .await
        .map_err(|_| "write timeout; dropped".to_string())?
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::ValidatorKey;

    fn config(keys: &[&ValidatorKey], internal: u32) -> NetworkConfig {
        NetworkConfig {
            chain_id: "sim-1".into(),
            block_time: Duration::from_millis(100),
            validators: keys
                .iter()
                .enumerate()
                .map(|(i, k)| GenesisValidator {
                    name: format!("val{}", i + 1),
                    pub_key: k.to_file().pub_key,
                    power: 10,
                })
                .collect(),
            internal_validators: internal,
            internal_power: 100,
            upgrade_plans: vec![],
            record_path: None,
        }
    }

    fn vote(key: &ValidatorKey, height: u64, vote_type: VoteType, timestamp: &str) -> SignedVote {
        vote_in_round(key, height, 0, vote_type, timestamp)
    }

    fn vote_in_round(
        key: &ValidatorKey,
        height: u64,
        round: u32,
        vote_type: VoteType,
        timestamp: &str,
    ) -> SignedVote {
        let sign_bytes = CanonicalVote {
            block_id: block_id("sim-1", height),
            chain_id: "sim-1".into(),
            height,
            round,
            timestamp: timestamp.into(),
            vote_type,
        }
        .sign_bytes();
        SignedVote {
            address: key.address(),
            height,
            round,
            step: vote_type.step(),
            signature: B64.encode(key.sign(&sign_bytes)),
            sign_bytes: B64.encode(sign_bytes),
        }
    }

    #[test]
    fn commits_record_signed_and_missed_heights() {
        let key = ValidatorKey::from_seed([1; 32]);
        let mut chain = ChainState::new(&config(&[&key], 3), SystemTime::now()).unwrap();
        assert_eq!(
            chain.on_vote(&vote(&key, 1, VoteType::Precommit, "t")),
            VoteOutcome::Accepted
        );
        assert_eq!(chain.try_commit(SystemTime::now()), Some(vec![]));
        assert_eq!(
            chain.try_commit(SystemTime::now()),
            Some(vec!["val1".to_string()])
        );
        let record = chain.record();
        assert_eq!(record.height, 2);
        let val1 = &record.validators["val1"];
        assert_eq!(val1.signed_heights, 1);
        assert_eq!(val1.missed_heights, vec![2]);
        assert_eq!(val1.first_signed_height, Some(1));
        assert_eq!(val1.last_signed_height, Some(1));
    }

    #[test]
    fn commits_list_the_set_in_order_with_real_signatures() {
        let signer = ValidatorKey::from_seed([1; 32]);
        let idle = ValidatorKey::from_seed([2; 32]);
        let mut chain = ChainState::new(&config(&[&signer, &idle], 3), SystemTime::now()).unwrap();
        let precommit = vote(
            &signer,
            1,
            VoteType::Precommit,
            "2024-02-29T15:04:05.000000007Z",
        );
        assert_eq!(chain.on_vote(&precommit), VoteOutcome::Accepted);
        chain.try_commit(SystemTime::now()).unwrap();
        let commit = chain.new_height().last_commit.expect("commit of height 1");
        assert_eq!(commit.height, 1);
        assert_eq!(commit.block_id, block_id("sim-1", 1));
        // Internal validators (power 100) first, by address; then the external ones (10).
        let internal: Vec<String> = (0..3)
            .map(|i| internal_validator_key("sim-1", i).address())
            .collect();
        let mut expected_order = internal.clone();
        expected_order.sort();
        let listed: Vec<&str> = commit
            .signatures
            .iter()
            .map(|s| s.validator_address.as_str())
            .collect();
        assert_eq!(
            &listed[..3],
            expected_order
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
        );
        for sig in &commit.signatures {
            if sig.validator_address.is_empty() {
                assert_eq!(sig, &CommitSig::absent());
                continue;
            }
            assert_eq!(sig.block_id_flag, BLOCK_ID_FLAG_COMMIT);
            let key = if sig.validator_address == signer.address() {
                VerifyingKey::from_bytes(&signer.pub_key_bytes()).unwrap()
            } else {
                let index = internal
                    .iter()
                    .position(|a| *a == sig.validator_address)
                    .unwrap();
                VerifyingKey::from_bytes(
                    &internal_validator_key("sim-1", index as u32).pub_key_bytes(),
                )
                .unwrap()
            };
            let sign_bytes =
                crate::vote::commit_precommit("sim-1", 1, 0, &commit.block_id, &sig.timestamp)
                    .unwrap()
                    .sign_bytes();
            let signature: [u8; 64] = B64
                .decode(sig.signature.as_ref().unwrap())
                .unwrap()
                .try_into()
                .unwrap();
            key.verify_strict(&sign_bytes, &Signature::from_bytes(&signature))
                .unwrap();
        }
        assert_eq!(commit.signatures.len(), 5);
        assert_eq!(
            commit
                .signatures
                .iter()
                .filter(|s| s.block_id_flag == 1)
                .count(),
            1,
            "idle is absent"
        );
        // A late precommit is recorded but never changes the commit.
        assert_eq!(
            chain.on_vote(&vote(
                &idle,
                1,
                VoteType::Precommit,
                "2024-02-29T15:04:06.000000007Z"
            )),
            VoteOutcome::Accepted
        );
        assert_eq!(chain.new_height().last_commit.unwrap(), commit);
    }

    #[test]
    fn double_signs_and_invalid_votes_are_flagged() {
        let key = ValidatorKey::from_seed([1; 32]);
        let stranger = ValidatorKey::from_seed([2; 32]);
        let mut chain = ChainState::new(&config(&[&key], 3), SystemTime::now()).unwrap();
        let first = vote(&key, 1, VoteType::Prevote, "t1");
        assert_eq!(chain.on_vote(&first), VoteOutcome::Accepted);
        assert_eq!(
            chain.on_vote(&first),
            VoteOutcome::Accepted,
            "resend is fine"
        );
        let VoteOutcome::DoubleSign(ds) = chain.on_vote(&vote(&key, 1, VoteType::Prevote, "t2"))
        else {
            panic!("expected a double sign")
        };
        assert_eq!((ds.validator.as_str(), ds.height, ds.step), ("val1", 1, 2));
        assert_eq!(ds.sign_bytes_a, first.sign_bytes);

        let mut forged = vote(&key, 1, VoteType::Precommit, "t");
        forged.signature = vote(&stranger, 1, VoteType::Precommit, "t").signature;
        let mut mislabeled = vote(&key, 1, VoteType::Precommit, "t");
        mislabeled.height = 2;
        for bad in [
            vote(&stranger, 1, VoteType::Prevote, "t"),
            forged,
            mislabeled,
        ] {
            assert!(matches!(chain.on_vote(&bad), VoteOutcome::Invalid(_)));
        }
        assert_eq!(chain.record().invalid_votes, 3);
        assert_eq!(chain.record().double_signs.len(), 1);
    }

    #[test]
    fn votes_of_one_height_through_two_listeners_mark_the_height() {
        let key = ValidatorKey::from_seed([1; 32]);
        let mut chain = ChainState::new(&config(&[&key], 3), SystemTime::now()).unwrap();
        let prevote = vote(&key, 1, VoteType::Prevote, "t1");
        let precommit = vote(&key, 1, VoteType::Precommit, "t1");
        // One node through one sentry, resending: nothing to mark.
        for v in [&prevote, &prevote, &precommit] {
            assert_eq!(chain.on_vote_via(v, "sentry-a"), VoteOutcome::Accepted);
        }
        assert!(
            chain.record().validators["val1"]
                .multi_listener_heights
                .is_empty()
        );
        // The same votes resent through another sentry (a node restored with the other's
        // sign state re-sends its cached vote): not a second signer.
        assert_eq!(
            chain.on_vote_via(&precommit, "sentry-b"),
            VoteOutcome::Accepted
        );
        assert!(
            chain.record().validators["val1"]
                .multi_listener_heights
                .is_empty()
        );
        // A vote signed anew at that height through another sentry: another node holds the key.
        let round_1 = vote_in_round(&key, 1, 1, VoteType::Prevote, "t3");
        assert_eq!(
            chain.on_vote_via(&round_1, "sentry-b"),
            VoteOutcome::Accepted
        );
        assert_eq!(
            chain.on_vote_via(&prevote, "sentry-b"),
            VoteOutcome::Accepted
        );
        let stranger = ValidatorKey::from_seed([2; 32]);
        assert!(matches!(
            chain.on_vote_via(&vote(&stranger, 2, VoteType::Prevote, "t"), "sentry-c"),
            VoteOutcome::Invalid(_)
        ));
        assert_eq!(
            chain.record().validators["val1"].multi_listener_heights,
            vec![1]
        );
        let via = &chain.record().validators["val1"].last_vote_via;
        assert_eq!((via["sentry-a"], via["sentry-b"]), (1, 1));
        assert!(!via.contains_key("sentry-c"));
        assert!(chain.record().double_signs.is_empty());
    }

    #[test]
    fn chain_stalls_without_two_thirds() {
        let key = ValidatorKey::from_seed([1; 32]);
        let mut chain = ChainState::new(&config(&[&key], 0), SystemTime::now()).unwrap();
        assert_eq!(chain.try_commit(SystemTime::now()), None);
        assert_eq!(chain.committed_height(), 0);
    }

    #[test]
    fn upgrade_plans_parse_and_validate() {
        assert_eq!(
            parse_upgrade_plan("v2:50:{\"binaries\":{}}").unwrap(),
            UpgradePlan {
                name: "v2".into(),
                height: 50,
                info: "{\"binaries\":{}}".into()
            }
        );
        for bad in ["v2", ":5", "v2:0", "v2:x"] {
            assert!(parse_upgrade_plan(bad).is_err(), "{bad}");
        }
        let mut chain = ChainState::new(&config(&[], 3), SystemTime::now()).unwrap();
        let plan = |height| UpgradePlan {
            name: "v2".into(),
            height,
            info: String::new(),
        };
        assert!(chain.schedule_upgrade(plan(1)).is_err());
        chain.schedule_upgrade(plan(5)).unwrap();
        assert!(chain.schedule_upgrade(plan(6)).is_err(), "duplicate name");
        assert_eq!(chain.new_height().upgrade_plans.len(), 1);
    }
}
