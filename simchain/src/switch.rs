//! simd's peer-to-peer layer: CometBFT's switch and transport (`p2p/switch.go`,
//! `p2p/transport.go`, v0.38) reduced to what decides which sentries a validator talks to.
//!
//! With `[p2p] persistent_peers` the node keeps one session per peer at once and sends every
//! vote on every one of them (the consensus reactor broadcasts to all peers). Peers come and
//! go by CometBFT's rules:
//!
//! - **Start** (`Switch.DialPeersAsync`): every persistent peer is dialed in random order, each
//!   after a random 0–3 s, concurrently.
//! - **Dial** (`Switch.DialPeerWithAddress`): refused before any packet when the peer ID is
//!   being dialed or already connected, or — with `allow_duplicate_ip = false` — when a
//!   connected peer has the same IP (`IsDialingOrExistingAddress`). Such a refusal never starts
//!   a redial.
//! - **Transport** (`MultiplexTransport.Dial`): TCP connect (1 s timeout), then the connection
//!   filters on the dialed connection too — the duplicate-IP filter (`ConnDuplicateIPFilter`,
//!   installed by `node/setup.go` `createTransport` unless `allow_duplicate_ip`) refuses a
//!   connection to an IP that any connection of the transport, established or still
//!   handshaking, already has. Then the handshake (3 s): the remote proves its node key, and its
//!   ID must equal the dialed one ("conn.ID (…) dialed ID (…) mismatch"), must not be ours, and
//!   its network (chain ID) must be ours.
//! - **Add** (`Switch.addPeer`/`filterPeer`): a peer whose ID is already in the peer set is
//!   refused as a duplicate (no redial).
//! - **Redial** (`Switch.reconnectToPeer`, [`crate::p2p::reconnect_plan`]): a persistent peer
//!   whose dial failed (refused, timed out, filtered, failed its handshake — anything but
//!   "self") or whose session ended is redialed: at once, then every 5 s (+0–3 s) for 20
//!   attempts, then after 3^i s (+0–3 s) for i = 1..10, then never again. A redial that finds
//!   the peer dialed or connected — by ID, or by IP — stops for good. So with two peers on one
//!   IP only one is ever connected, and while it is down only it is redialed.
//! - **Keep-alive** (`p2p/conn/connection.go`): a ping every 60 s; no pong within 45 s stops
//!   the peer.
//!
//! Inbound connections on `[p2p] laddr` pass the same connection filters; no simulated node
//! dials a validator, so any that pass are dropped after the handshake timeout.
//!
//! `[simchain] network` (the simulation's older form, kept for existing tests) is
//! [`Switch::run_legacy`]: one session at a time, round-robin, no IDs, no filters.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, VerifyingKey};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::console_log::{Level, LogValue, Rendered, Sink, log};
use crate::p2p::{
    DIAL_TIMEOUT, HANDSHAKE_TIMEOUT, NetAddress, ReconnectStep, Timing, node_id, permutation,
    reconnect_plan,
};
use crate::protocol::{
    Hello, MAX_LINE_BYTES, NetworkMessage, NewHeight, NodeInfo, NodeMessage, auth_message,
};

/// Lines queued per peer before further ones are dropped for it (a stalled peer must never
/// hold up signing; CometBFT's gossip routines resend what a peer lacks, and so do we, once per
/// height).
pub const PEER_QUEUE: usize = 64;
/// Deadline for writing one line to a peer.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Blocks queued for the node's core.
pub const DELIVERY_QUEUE: usize = 64;
/// Reconnect requests queued (one per persistent peer at most in practice).
const RECONNECT_QUEUE: usize = 256;
/// Inbound connections held at once while they wait for a handshake; more are closed at once
/// (the transport limits accepted connections too: `netutil.LimitListener` in `createTransport`).
const MAX_INBOUND_PENDING: usize = 64;

fn p2p_log(level: Level, message: &str, fields: &[(&str, &dyn LogValue)]) {
    let mut all: Vec<(&str, &dyn LogValue)> = fields.to_vec();
    all.push(("module", &"p2p"));
    log(Sink::Stdout, level, message, &all);
}

/// A list logged as zerolog logs a Go slice: a JSON array.
struct JsonList(Vec<String>);

impl LogValue for JsonList {
    fn render(&self) -> Rendered {
        Rendered::Json(serde_json::to_string(&self.0).unwrap_or_default())
    }
}

/// What the switch needs to know about its node.
#[derive(Debug, Clone)]
pub struct SwitchConfig {
    /// Our node ID.
    pub own_id: String,
    /// Our moniker (sent in `hello`).
    pub moniker: String,
    /// Our validator address (sent in `hello`).
    pub validator_address: String,
    /// Our chain ID, when the genesis names one: peers on another network are refused.
    pub chain_id: Option<String>,
    /// `[p2p] allow_duplicate_ip`.
    pub allow_duplicate_ip: bool,
    /// Waits, scaled by `[simchain] p2p_time_scale`.
    pub timing: Timing,
    /// `[p2p] persistent_peers`, parsed.
    pub persistent_peers: Vec<NetAddress>,
}

/// A block a session received, for the node's core.
#[derive(Debug)]
pub struct Delivery {
    /// The connection it came on.
    pub peer: u64,
    /// The block.
    pub new_height: NewHeight,
}

/// Why a dial or an inbound connection did not become a peer (`p2p/errors.go`, same texts).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialError {
    /// `ErrCurrentlyDialingOrExistingAddress`: refused before dialing; ends a redial loop.
    #[error("connection with {0} has been established or dialed")]
    CurrentlyDialingOrExisting(String),
    /// TCP connect failed or timed out.
    #[error("dial tcp {addr}: {reason}")]
    Dial {
        /// Dialed address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// A connection filter refused it (the duplicate-IP filter).
    #[error("filtered CONN<{remote}>: duplicate CONN<{remote}>")]
    Filtered {
        /// Remote socket address.
        remote: SocketAddr,
    },
    /// The handshake failed: no answer, a bad key proof, or another ID than dialed.
    #[error("auth failure: {0}")]
    AuthFailure(String),
    /// The remote is on another network.
    #[error("incompatible: {0}")]
    Incompatible(String),
    /// The remote is this node.
    #[error("self ID<{0}>")]
    SelfId(String),
    /// The peer set already holds this ID (`Switch.filterPeer`).
    #[error("duplicate ID<{0}>")]
    DuplicateId(String),
}

impl DialError {
    /// Whether `addOutboundPeerWithConfig` starts a redial for a persistent peer: after any
    /// transport error except "self"; not after a refusal before dialing or by the peer set.
    fn starts_reconnect(&self) -> bool {
        matches!(
            self,
            DialError::Dial { .. }
                | DialError::Filtered { .. }
                | DialError::AuthFailure(_)
                | DialError::Incompatible(_)
        )
    }
}

struct PeerEntry {
    key: u64,
    addr: NetAddress,
    remote: SocketAddr,
    outbound: bool,
    persistent: bool,
    node_info: NodeInfo,
    outbox: mpsc::Sender<Arc<str>>,
    since: Instant,
    since_wall: std::time::SystemTime,
    votes_height: u64,
    sent: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
}

impl PeerEntry {
    /// `Peer.String()`: `Peer{MConn{ip:port} id out}`.
    fn describe(&self) -> String {
        format!(
            "Peer{{MConn{{{}}} {} {}}}",
            self.remote,
            self.addr.id,
            if self.outbound { "out" } else { "in" }
        )
    }
}

#[derive(Default)]
struct SwitchState {
    /// The peer set, by ID.
    peers: BTreeMap<String, PeerEntry>,
    /// IDs being dialed.
    dialing: HashSet<String>,
    /// IDs with a redial loop running.
    reconnecting: HashSet<String>,
    /// The transport's connection set: every connection from filter to cleanup, with its IP.
    conns: HashMap<u64, IpAddr>,
}

/// The switch. Shared by sessions, dialers and the node's core.
pub struct Switch {
    config: SwitchConfig,
    state: Mutex<SwitchState>,
    deliveries: mpsc::Sender<Delivery>,
    reconnects: mpsc::Sender<NetAddress>,
    next_key: AtomicU64,
}

/// A connection that passed the handshake.
struct Upgraded {
    key: u64,
    remote: SocketAddr,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    info: NodeInfo,
}

/// How a session detects a dead link.
#[derive(Debug, Clone, Copy)]
enum Liveness {
    /// MConnection's ping/pong.
    PingPong {
        interval: Duration,
        timeout: Duration,
    },
    /// The older simulation: the network sends every block, so silence means a dead link.
    Idle(Duration),
}

impl Switch {
    /// A switch delivering blocks to `deliveries`. Call [`Switch::start`] (persistent peers) or
    /// [`Switch::run_legacy`] to connect.
    pub fn new(config: SwitchConfig, deliveries: mpsc::Sender<Delivery>) -> Arc<Self> {
        let (reconnects, mut requests) = mpsc::channel::<NetAddress>(RECONNECT_QUEUE);
        let switch = Arc::new(Self {
            config,
            state: Mutex::new(SwitchState::default()),
            deliveries,
            reconnects,
            next_key: AtomicU64::new(1),
        });
        // Redial loops are started through a queue, as `go sw.reconnectToPeer(addr)` is, so a
        // dial never waits for a redial loop.
        let weak = Arc::downgrade(&switch);
        tokio::spawn(async move {
            while let Some(addr) = requests.recv().await {
                let Some(switch) = weak.upgrade() else { return };
                tokio::spawn(switch.reconnect_to_peer(addr));
            }
        });
        switch
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SwitchState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_persistent(&self, addr: &NetAddress) -> bool {
        // `IsPeerPersistent`: `NetAddress.Equals`, i.e. the same `id@ip:port`.
        self.config
            .persistent_peers
            .iter()
            .any(|p| p.to_string() == addr.to_string())
    }

    fn request_reconnect(&self, addr: &NetAddress) {
        if self.reconnects.try_send(addr.clone()).is_err() {
            p2p_log(
                Level::Error,
                "Cannot queue reconnect to peer",
                &[("addr", &addr.to_string())],
            );
        }
    }

    /// Number of connected peers.
    pub fn peer_count(&self) -> usize {
        self.lock().peers.len()
    }

    /// `Node.OnStart`: log the persistent peers, then `DialPeersAsync`.
    pub fn start(self: &Arc<Self>) {
        let peers: Vec<String> = self
            .config
            .persistent_peers
            .iter()
            .map(|p| p.to_string())
            .collect();
        p2p_log(
            Level::Info,
            "Adding persistent peers",
            &[("addrs", &JsonList(peers))],
        );
        let addrs = self.config.persistent_peers.clone();
        for index in permutation(addrs.len()) {
            let addr = addrs[index].clone();
            let switch = self.clone();
            tokio::spawn(async move {
                // `NetAddress.Same`: IDs compare as strings.
                if addr.id == switch.config.own_id {
                    p2p_log(
                        Level::Debug,
                        "Ignore attempt to connect to ourselves",
                        &[("addr", &addr.to_string())],
                    );
                    return;
                }
                let wait = switch
                    .config
                    .timing
                    .random_sleep(Duration::ZERO, rand::random());
                tokio::time::sleep(wait).await;
                if let Err(error) = switch.dial_peer_with_address(&addr).await {
                    let level = match error {
                        DialError::SelfId(_)
                        | DialError::DuplicateId(_)
                        | DialError::CurrentlyDialingOrExisting(_) => Level::Debug,
                        _ => Level::Error,
                    };
                    p2p_log(level, "Error dialing peer", &[("err", &error.to_string())]);
                }
            });
        }
    }

    /// `Switch.DialPeerWithAddress`.
    async fn dial_peer_with_address(self: &Arc<Self>, addr: &NetAddress) -> Result<(), DialError> {
        {
            let mut state = self.lock();
            let existing_ip = !self.config.allow_duplicate_ip
                && state.peers.values().any(|p| p.remote.ip() == addr.ip);
            if state.dialing.contains(&addr.id) || state.peers.contains_key(&addr.id) || existing_ip
            {
                return Err(DialError::CurrentlyDialingOrExisting(addr.to_string()));
            }
            state.dialing.insert(addr.id.clone());
        }
        let result = self.add_outbound_peer(addr).await;
        self.lock().dialing.remove(&addr.id);
        // `addOutboundPeerWithConfig` starts the redial with `go`, before its caller's deferred
        // `dialing.Delete`; the goroutine then usually runs after it. Queueing it only now keeps
        // that order.
        if let Err(error) = &result
            && error.starts_reconnect()
            && self.is_persistent(addr)
        {
            self.request_reconnect(addr);
        }
        result
    }

    /// `Switch.addOutboundPeerWithConfig`: transport dial, filters, handshake, then `addPeer`.
    async fn add_outbound_peer(self: &Arc<Self>, addr: &NetAddress) -> Result<(), DialError> {
        let socket = addr.socket();
        let dial_error = |reason: String| DialError::Dial {
            addr: addr.dial_string(),
            reason,
        };
        let stream = match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(socket)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(dial_error(format!("connect: {}", io_reason(&e)))),
            Err(_) => return Err(dial_error("i/o timeout".into())),
        };
        let remote = stream.peer_addr().unwrap_or(socket);
        let key = self.filter_conn(remote)?;
        let upgraded = match self
            .upgrade(key, stream, remote, Some(&addr.id), None)
            .await
        {
            Ok(upgraded) => upgraded,
            Err(error) => {
                self.lock().conns.remove(&key);
                return Err(error);
            }
        };
        self.add_peer(
            addr.clone(),
            upgraded,
            true,
            Liveness::PingPong {
                interval: self.config.timing.ping_interval(),
                timeout: self.config.timing.pong_timeout(),
            },
        )
        .map(|_| ())
    }

    /// `MultiplexTransport.filterConn`: the duplicate-IP filter, then the connection joins the
    /// transport's set. Returns the connection's key.
    fn filter_conn(&self, remote: SocketAddr) -> Result<u64, DialError> {
        let mut state = self.lock();
        if !self.config.allow_duplicate_ip && state.conns.values().any(|ip| *ip == remote.ip()) {
            return Err(DialError::Filtered { remote });
        }
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        state.conns.insert(key, remote.ip());
        Ok(key)
    }

    /// `MultiplexTransport.upgrade`: our hello, the remote's NodeInfo with its key proof, and
    /// the checks on it. `idle` replaces the handshake timeout in the older simulation mode.
    async fn upgrade(
        &self,
        key: u64,
        stream: TcpStream,
        remote: SocketAddr,
        dialed_id: Option<&str>,
        idle: Option<Duration>,
    ) -> Result<Upgraded, DialError> {
        let _ = stream.set_nodelay(true);
        let (read_half, mut writer) = stream.into_split();
        let mut reader = BufReader::new(read_half);
        let nonce: [u8; 32] = rand::random();
        let hello = serde_json::to_string(&NodeMessage::Hello(Hello {
            address: self.config.validator_address.clone(),
            node_id: self.config.own_id.clone(),
            moniker: self.config.moniker.clone(),
            nonce: B64.encode(nonce),
        }))
        .expect("hello serializes");
        let auth = |reason: String| DialError::AuthFailure(reason);
        write_line(&mut writer, &hello)
            .await
            .map_err(|e| auth(format!("handshake failed: {e}")))?;
        let mut line = Vec::new();
        let timeout = idle.unwrap_or(HANDSHAKE_TIMEOUT);
        let read = read_line(&mut reader, &mut line, Some(timeout)).await;
        let info = match read {
            Ok(true) => match serde_json::from_slice::<NetworkMessage>(&line) {
                Ok(NetworkMessage::NodeInfo(info)) => info,
                _ => return Err(auth("handshake failed: expected node_info".into())),
            },
            Ok(false) => return Err(auth("handshake failed: EOF".into())),
            Err(e) => return Err(auth(format!("handshake failed: {e}"))),
        };
        // The secret connection authenticates the remote's key (`p2p/conn/secret_connection.go`:
        // it signs the challenge); the ID is derived from that key.
        let key_bytes: [u8; 32] = B64
            .decode(&info.pub_key)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| auth("secret conn failed: bad public key".into()))?;
        let signature: [u8; 64] = B64
            .decode(&info.signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| auth("secret conn failed: bad signature".into()))?;
        VerifyingKey::from_bytes(&key_bytes)
            .and_then(|k| {
                k.verify_strict(&auth_message(&nonce), &Signature::from_bytes(&signature))
            })
            .map_err(|_| auth("secret conn failed: challenge verification failed".into()))?;
        let conn_id = node_id(&key_bytes);
        // IDs compare as strings, so an upper-case ID in persistent_peers never matches the
        // lower-case ID a node presents: CometBFT refuses it the same way.
        if let Some(dialed) = dialed_id
            && conn_id != dialed
        {
            return Err(auth(format!(
                "conn.ID ({conn_id}) dialed ID ({dialed}) mismatch"
            )));
        }
        if conn_id != info.id {
            return Err(auth(format!(
                "conn.ID ({conn_id}) NodeInfo.ID ({}) mismatch",
                info.id
            )));
        }
        if conn_id == self.config.own_id {
            return Err(DialError::SelfId(conn_id));
        }
        if dialed_id.is_some()
            && let Some(chain_id) = &self.config.chain_id
            && &info.network != chain_id
        {
            return Err(DialError::Incompatible(format!(
                "peer is on a different network. Got {}, expected {chain_id}",
                info.network
            )));
        }
        Ok(Upgraded {
            key,
            remote,
            reader,
            writer,
            info,
        })
    }

    /// `Switch.addPeer`: the peer-set filter, then the peer starts. In the older mode the
    /// session is returned to be awaited; otherwise it runs on its own task.
    fn add_peer(
        self: &Arc<Self>,
        addr: NetAddress,
        upgraded: Upgraded,
        spawn: bool,
        liveness: Liveness,
    ) -> Result<Option<SessionTask>, DialError> {
        let Upgraded {
            key,
            remote,
            reader,
            writer,
            info,
        } = upgraded;
        let (outbox, inbox) = mpsc::channel(PEER_QUEUE);
        let sent = Arc::new(AtomicU64::new(0));
        let received = Arc::new(AtomicU64::new(0));
        {
            let mut state = self.lock();
            if state.peers.contains_key(&info.id) {
                state.conns.remove(&key);
                return Err(DialError::DuplicateId(info.id));
            }
            // The peer keeps the address it was dialed at (`SocketAddr` for an outbound peer):
            // that is what a redial uses and what decides whether it is persistent.
            let entry = PeerEntry {
                key,
                persistent: self.is_persistent(&addr),
                addr,
                remote,
                outbound: true,
                node_info: info,
                outbox,
                since: Instant::now(),
                since_wall: std::time::SystemTime::now(),
                votes_height: 0,
                sent: sent.clone(),
                received: received.clone(),
            };
            p2p_log(Level::Debug, "Added peer", &[("peer", &entry.describe())]);
            state.peers.insert(entry.node_info.id.clone(), entry);
        }
        let task = SessionTask {
            switch: self.clone(),
            key,
            reader,
            writer,
            inbox,
            liveness,
            sent,
            received,
        };
        if spawn {
            tokio::spawn(async move {
                let switch = task.switch.clone();
                let key = task.key;
                let reason = task.run().await;
                switch.stop_peer_for_error(key, &reason);
            });
            Ok(None)
        } else {
            Ok(Some(task))
        }
    }

    /// `Switch.StopPeerForError`: the peer leaves the transport's connection set and then the
    /// peer set; a persistent peer is redialed.
    fn stop_peer_for_error(&self, key: u64, reason: &str) {
        let removed = {
            let mut state = self.lock();
            state.conns.remove(&key);
            let id = state
                .peers
                .iter()
                .find(|(_, p)| p.key == key)
                .map(|(id, _)| id.clone());
            id.and_then(|id| state.peers.remove(&id))
        };
        let Some(peer) = removed else { return };
        p2p_log(
            Level::Error,
            "Stopping peer for error",
            &[("err", &reason), ("peer", &peer.describe())],
        );
        if peer.persistent {
            // Outbound peers are redialed at their socket address.
            self.request_reconnect(&peer.addr);
        }
    }

    /// `Switch.reconnectToPeer`: see [`reconnect_plan`].
    async fn reconnect_to_peer(self: Arc<Self>, addr: NetAddress) {
        {
            let mut state = self.lock();
            if !state.reconnecting.insert(addr.id.clone()) {
                return;
            }
        }
        let started = Instant::now();
        p2p_log(
            Level::Info,
            "Reconnecting to peer",
            &[("addr", &addr.to_string())],
        );
        let timing = self.config.timing;
        for step in reconnect_plan() {
            match step {
                ReconnectStep::Dial { tries, .. } => {
                    match self.dial_peer_with_address(&addr).await {
                        Ok(()) | Err(DialError::CurrentlyDialingOrExisting(_)) => break,
                        Err(error) => p2p_log(
                            Level::Info,
                            "Error reconnecting to peer. Trying again",
                            &[
                                ("tries", &tries),
                                ("err", &error.to_string()),
                                ("addr", &addr.to_string()),
                            ],
                        ),
                    }
                }
                ReconnectStep::Sleep(interval) => {
                    tokio::time::sleep(timing.random_sleep(interval, rand::random())).await;
                }
                ReconnectStep::BeginBackoff => p2p_log(
                    Level::Error,
                    "Failed to reconnect to peer. Beginning exponential backoff",
                    &[("addr", &addr.to_string()), ("elapsed", &started.elapsed())],
                ),
                ReconnectStep::GiveUp => p2p_log(
                    Level::Error,
                    "Failed to reconnect to peer. Giving up",
                    &[("addr", &addr.to_string()), ("elapsed", &started.elapsed())],
                ),
            }
        }
        self.lock().reconnecting.remove(&addr.id);
    }

    /// Sends a height's votes to every peer (the consensus reactor broadcasts its own votes).
    /// A peer whose queue is full misses them; it gets them again with its next block of that
    /// height ([`Switch::gossip_votes`]).
    pub fn broadcast_votes(&self, height: u64, lines: &[Arc<str>]) {
        let mut state = self.lock();
        for peer in state.peers.values_mut() {
            if lines
                .iter()
                .all(|l| peer.outbox.try_send(l.clone()).is_ok())
            {
                peer.votes_height = height;
            }
        }
    }

    /// Sends a height's votes to one peer that has not had them (the reactor's
    /// `gossipVotesRoutine` sends a peer the votes it lacks for its height).
    pub fn gossip_votes(&self, peer_key: u64, height: u64, lines: &[Arc<str>]) {
        let mut state = self.lock();
        if let Some(peer) = state.peers.values_mut().find(|p| p.key == peer_key)
            && peer.votes_height < height
            && lines
                .iter()
                .all(|l| peer.outbox.try_send(l.clone()).is_ok())
        {
            peer.votes_height = height;
        }
    }

    /// CometBFT's `/net_info` result.
    pub fn net_info(&self, listening: bool, external_address: &str) -> serde_json::Value {
        let state = self.lock();
        let peers: Vec<serde_json::Value> = state
            .peers
            .values()
            .map(|peer| {
                let info = &peer.node_info;
                let duration = peer.since.elapsed().as_nanos().to_string();
                let start = crate::clock::rfc3339_go(peer.since_wall);
                let monitor = |bytes: u64| {
                    serde_json::json!({
                        "Start": start, "Bytes": bytes.to_string(), "Samples": "0",
                        "InstRate": "0", "CurRate": "0", "AvgRate": "0", "PeakRate": "0",
                        "BytesRem": "0", "Duration": duration, "Idle": "0", "TimeRem": "0",
                        "Progress": 0, "Active": true,
                    })
                };
                serde_json::json!({
                    "node_info": {
                        "protocol_version": {"p2p": "8", "block": "11", "app": "0"},
                        "id": info.id,
                        "listen_addr": info.listen_addr,
                        "network": info.network,
                        "version": info.version,
                        "channels": "40202122233038606100",
                        "moniker": info.moniker,
                        "other": {"tx_index": "on", "rpc_address": ""},
                    },
                    "is_outbound": peer.outbound,
                    "connection_status": {
                        "Duration": duration,
                        "SendMonitor": monitor(peer.sent.load(Ordering::Relaxed)),
                        "RecvMonitor": monitor(peer.received.load(Ordering::Relaxed)),
                        "Channels": [],
                    },
                    "remote_ip": peer.remote.ip().to_string(),
                })
            })
            .collect();
        serde_json::json!({
            "listening": listening,
            // `Node.Listeners` prints the external address this way, even when it is empty.
            "listeners": [format!("Listener(@{external_address})")],
            "n_peers": peers.len().to_string(),
            "peers": peers,
        })
    }

    /// Accepts connections on `[p2p] laddr` (`MultiplexTransport.acceptPeers`): each passes the
    /// connection filters, so it occupies its IP while it waits for the handshake. No simulated
    /// node dials a validator, so none completes one: the connection is dropped when the remote
    /// closes it or after the handshake timeout.
    pub async fn accept_inbound(self: Arc<Self>, listener: TcpListener) {
        let pending = Arc::new(tokio::sync::Semaphore::new(MAX_INBOUND_PENDING));
        loop {
            let Ok((stream, remote)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let Ok(permit) = pending.clone().try_acquire_owned() else {
                drop(stream);
                continue;
            };
            let switch = self.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let peers = switch.peer_count();
                let key = match switch.filter_conn(remote) {
                    Ok(key) => key,
                    Err(error) => {
                        p2p_log(
                            Level::Info,
                            "Inbound Peer rejected",
                            &[("err", &error.to_string()), ("numPeers", &peers)],
                        );
                        return;
                    }
                };
                let (read_half, _write_half) = stream.into_split();
                let mut reader = BufReader::new(read_half);
                let mut line = Vec::new();
                let _ = read_line(&mut reader, &mut line, Some(HANDSHAKE_TIMEOUT)).await;
                switch.lock().conns.remove(&key);
                p2p_log(
                    Level::Info,
                    "Inbound Peer rejected",
                    &[
                        (
                            "err",
                            &"auth failure: handshake failed: simd does not simulate inbound peers",
                        ),
                        ("numPeers", &switch.peer_count()),
                    ],
                );
            });
        }
    }

    /// The older simulation (`[simchain] network`): one session at a time over `addrs`,
    /// round-robin, without node IDs or connection filters. Never returns.
    pub async fn run_legacy(self: Arc<Self>, addrs: Vec<String>, idle_timeout: Duration) {
        let count = addrs.len();
        let mut dialer = LegacyDialer::new(addrs);
        loop {
            let (index, addr) = dialer.next_address();
            let which = format!("{}/{count}", index + 1);
            legacy_log(
                Level::Info,
                "connecting to network",
                &[("addr", &addr), ("peer", &which)],
            );
            match tokio::time::timeout(LEGACY_CONNECT_TIMEOUT, TcpStream::connect(&addr)).await {
                Ok(Ok(stream)) => {
                    let healthy = self.legacy_session(stream, &addr, idle_timeout).await;
                    if healthy {
                        dialer.healthy();
                    }
                }
                Ok(Err(e)) => legacy_log(
                    Level::Error,
                    "cannot reach network",
                    &[("addr", &addr), ("peer", &which), ("err", &e)],
                ),
                Err(_) => legacy_log(
                    Level::Error,
                    "cannot reach network",
                    &[("addr", &addr), ("peer", &which), ("err", &"timeout")],
                ),
            }
            if let Some(backoff) = dialer.failed() {
                let jitter = Duration::from_millis(rand::random::<u64>() % 50);
                let wait = backoff + jitter;
                if count > 1 {
                    legacy_log(
                        Level::Info,
                        "no network address reachable; retrying",
                        &[("addrs", &count), ("wait", &format!("{wait:?}"))],
                    );
                }
                tokio::time::sleep(wait).await;
            }
        }
    }

    /// One older-mode session; returns whether the network sent anything (a healthy session).
    async fn legacy_session(
        self: &Arc<Self>,
        stream: TcpStream,
        addr: &str,
        idle: Duration,
    ) -> bool {
        let remote = stream
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        self.lock().conns.insert(key, remote.ip());
        // "connected" is logged once the TCP session exists, as before.
        legacy_log(Level::Info, "connected to network", &[("addr", &addr)]);
        let upgraded = self.upgrade(key, stream, remote, None, Some(idle)).await;
        let upgraded = match upgraded {
            Ok(upgraded) => upgraded,
            Err(error) => {
                self.lock().conns.remove(&key);
                let reason = match error {
                    DialError::AuthFailure(reason) => reason
                        .strip_prefix("handshake failed: ")
                        .unwrap_or(&reason)
                        .to_string(),
                    other => other.to_string(),
                };
                let reason = if reason.starts_with("deadline") {
                    format!("network silent for {idle:?}")
                } else {
                    reason
                };
                legacy_log(
                    Level::Error,
                    "lost connection to network; reconnecting",
                    &[("addr", &addr), ("err", &reason)],
                );
                return false;
            }
        };
        let id = upgraded.info.id.clone();
        let peer = NetAddress {
            id,
            ip: remote.ip(),
            port: remote.port(),
        };
        let task = match self.add_peer(peer, upgraded, false, Liveness::Idle(idle)) {
            Ok(Some(task)) => task,
            Ok(None) => return false,
            Err(error) => {
                legacy_log(
                    Level::Error,
                    "lost connection to network; reconnecting",
                    &[("addr", &addr), ("err", &error.to_string())],
                );
                return false;
            }
        };
        let received = task.received.clone();
        let reason = task.run().await;
        let mut state = self.lock();
        state.conns.remove(&key);
        state.peers.retain(|_, p| p.key != key);
        drop(state);
        let reason = if reason == "EOF" {
            "closed by peer".to_string()
        } else {
            reason
        };
        legacy_log(
            Level::Error,
            "lost connection to network; reconnecting",
            &[("addr", &addr), ("err", &reason)],
        );
        received.load(Ordering::Relaxed) > 0
    }
}

fn legacy_log(level: Level, message: &str, fields: &[(&str, &dyn LogValue)]) {
    log(Sink::Stdout, level, message, fields);
}

/// Go's text for common connect errors.
fn io_reason(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::TimedOut => "i/o timeout".into(),
        _ => error.to_string(),
    }
}

/// A running session: reads blocks and pongs, writes votes and pings.
struct SessionTask {
    switch: Arc<Switch>,
    key: u64,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    inbox: mpsc::Receiver<Arc<str>>,
    liveness: Liveness,
    sent: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
}

impl SessionTask {
    /// Runs until the link fails; returns why.
    async fn run(self) -> String {
        let SessionTask {
            switch,
            key,
            mut reader,
            mut writer,
            mut inbox,
            liveness,
            sent,
            received,
        } = self;
        let pongs = AtomicU64::new(0);
        let idle = match liveness {
            Liveness::Idle(idle) => Some(idle),
            Liveness::PingPong { .. } => None,
        };
        // Reading and writing are two long-lived futures (a read cancelled half-way would lose
        // bytes).
        let reading = async {
            let mut line = Vec::new();
            loop {
                match read_line(&mut reader, &mut line, idle).await {
                    Ok(true) => {}
                    Ok(false) => return "EOF".to_string(),
                    Err(e) if e == "deadline has elapsed" => {
                        return format!("network silent for {:?}", idle.unwrap_or_default());
                    }
                    Err(e) => return e,
                }
                received.fetch_add(line.len() as u64, Ordering::Relaxed);
                match serde_json::from_slice::<NetworkMessage>(&line) {
                    Ok(NetworkMessage::NewHeight(new_height)) => {
                        let delivery = Delivery {
                            peer: key,
                            new_height,
                        };
                        if switch.deliveries.send(delivery).await.is_err() {
                            return "node stopped".to_string();
                        }
                    }
                    Ok(NetworkMessage::Pong) => {
                        pongs.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(NetworkMessage::NodeInfo(_)) => {
                        return "unexpected node_info".to_string();
                    }
                    Err(e) => return format!("malformed message: {e}"),
                }
            }
        };
        let writing = async {
            let (interval, timeout) = match liveness {
                Liveness::PingPong { interval, timeout } => (interval, timeout),
                // Never pings: an interval far beyond any test.
                Liveness::Idle(_) => (Duration::from_secs(86_400 * 365), Duration::ZERO),
            };
            let mut ping =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut pong_deadline: Option<(tokio::time::Instant, u64)> = None;
            let ping_line = serde_json::to_string(&NodeMessage::Ping).expect("ping serializes");
            loop {
                let deadline = pong_deadline.map(|(at, _)| at);
                tokio::select! {
                    message = inbox.recv() => {
                        let Some(message) = message else { return "stopped".to_string() };
                        if let Err(e) = write_line(&mut writer, &message).await {
                            return e;
                        }
                        sent.fetch_add(message.len() as u64 + 1, Ordering::Relaxed);
                    }
                    _ = ping.tick() => {
                        if let Err(e) = write_line(&mut writer, &ping_line).await {
                            return e;
                        }
                        if pong_deadline.is_none() {
                            pong_deadline = Some((
                                tokio::time::Instant::now() + timeout,
                                pongs.load(Ordering::Relaxed),
                            ));
                        }
                    }
                    _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)),
                        if deadline.is_some() => {
                        let (_, before) = pong_deadline.take().expect("deadline set");
                        if pongs.load(Ordering::Relaxed) == before {
                            return "pong timeout".to_string();
                        }
                    }
                }
            }
        };
        tokio::select! {
            reason = reading => reason,
            reason = writing => reason,
        }
    }
}

/// Reads one line (without a size beyond [`MAX_LINE_BYTES`]); `Ok(false)` at EOF.
async fn read_line(
    reader: &mut BufReader<OwnedReadHalf>,
    buffer: &mut Vec<u8>,
    timeout: Option<Duration>,
) -> Result<bool, String> {
    buffer.clear();
    let mut limited = (&mut *reader).take(MAX_LINE_BYTES as u64 + 1);
    let read = limited.read_until(b'\n', buffer);
    let read = match timeout {
        Some(limit) => tokio::time::timeout(limit, read)
            .await
            .map_err(|e| e.to_string())?,
        None => read.await,
    }
    .map_err(|e| e.to_string())?;
    if read == 0 {
        return Ok(false);
    }
    if buffer.len() > MAX_LINE_BYTES {
        return Err("line too long".into());
    }
    Ok(true)
}

async fn write_line(writer: &mut OwnedWriteHalf, line: &str) -> Result<(), String> {
    let mut bytes = Vec::with_capacity(line.len() + 1);
    bytes.extend_from_slice(line.as_bytes());
    bytes.push(b'\n');
    tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(&bytes))
        .await
        .map_err(|_| "write timed out".to_string())?
        .map_err(|e| e.to_string())
}

/// How long one older-mode connection attempt may take.
const LEGACY_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const LEGACY_RECONNECT_MIN: Duration = Duration::from_millis(100);
const LEGACY_RECONNECT_MAX: Duration = Duration::from_secs(2);

/// Which `[simchain] network` address to dial next, and when to back off (the older mode).
///
/// One session at a time. Addresses are tried round-robin: a failed attempt or a lost session
/// moves on to the next address at once, so failing over to a healthy address costs no delay;
/// the backoff applies only once a whole cycle of addresses failed in a row. A healthy session
/// (the network sent at least one height) resets the count and the backoff, and when it is lost
/// the *next* address is tried first. A session that dies before sending anything counts as a
/// failed attempt, so peers that accept and hang up cannot make the node spin.
#[derive(Debug, Clone)]
struct LegacyDialer {
    addresses: Vec<String>,
    next: usize,
    failures_in_a_row: usize,
    backoff: Duration,
}

impl LegacyDialer {
    fn new(addresses: Vec<String>) -> Self {
        assert!(!addresses.is_empty(), "no network address to dial");
        Self {
            addresses,
            next: 0,
            failures_in_a_row: 0,
            backoff: LEGACY_RECONNECT_MIN,
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
        self.backoff = LEGACY_RECONNECT_MIN;
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
        self.backoff = (self.backoff * 2).min(LEGACY_RECONNECT_MAX);
        Some(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_dialer_fails_over_at_once_and_backs_off_only_after_a_full_cycle() {
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
            // One address: every failure waits, the wait doubles up to the cap and a session
            // resets it.
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
            let mut dialer = LegacyDialer::new(addrs(count));
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

    #[test]
    fn only_transport_failures_start_a_redial() {
        let remote: SocketAddr = "127.0.0.1:1".parse().unwrap();
        for (error, redials) in [
            (DialError::CurrentlyDialingOrExisting("x".into()), false),
            (
                DialError::Dial {
                    addr: "a".into(),
                    reason: "r".into(),
                },
                true,
            ),
            (DialError::Filtered { remote }, true),
            (DialError::AuthFailure("x".into()), true),
            (DialError::Incompatible("x".into()), true),
            (DialError::SelfId("x".into()), false),
            (DialError::DuplicateId("x".into()), false),
        ] {
            assert_eq!(error.starts_reconnect(), redials, "{error}");
        }
        assert_eq!(
            DialError::Filtered { remote }.to_string(),
            "filtered CONN<127.0.0.1:1>: duplicate CONN<127.0.0.1:1>"
        );
    }
}
