//! `config/config.toml` as CometBFT writes it, plus a `[simchain]` section.
//!
//! Only the keys the simulation uses are read; the real file has hundreds and unknown keys are
//! tolerated on purpose (operators' files must load unchanged):
//!
//! ```toml
//! moniker = "val1"
//! log_level = "info"               # "debug"/"trace" also print debug lines
//! log_format = "plain"             # or "json" (CometBFT refuses anything else)
//! log_no_color = false             # the SDK reads it from here too (viper); also --log_no_color
//! priv_validator_key_file = "config/priv_validator_key.json"   # relative to home
//! priv_validator_state_file = "data/priv_validator_state.json"
//! node_key_file = "config/node_key.json"
//! [rpc]
//! laddr = "tcp://127.0.0.1:26657"
//! [p2p]
//! laddr = "tcp://0.0.0.0:26656"
//! external_address = ""
//! persistent_peers = "<id>@127.0.0.2:26656,<id>@127.0.0.3:26656"
//! allow_duplicate_ip = false
//! pex = true                       # read and reported; simd has no PEX
//! addr_book_strict = true          # read and reported; simd has no address book
//! max_num_inbound_peers = 40       # checked non-negative, as CometBFT does
//! max_num_outbound_peers = 10      # likewise (persistent peers are not counted)
//! [simchain]
//! network = "127.0.0.1:26600"     # the older form: simchain-net address(es), one session at a time
//! network_idle_timeout = "30s"     # older form: reconnect (to the next address) after this much silence
//! p2p_time_scale = 1.0             # multiplies CometBFT's redial and ping waits (tests: e.g. 0.05)
//! write_upgrade_info = true        # false: old SDK, only the log line
//! log_flood = false                # true: flood stdout from a separate thread
//! voting_power = 10                # reported by /status
//! ```
//!
//! Exactly one of `[p2p] persistent_peers` and `[simchain] network` may be set.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::p2p::{AddressError, NetAddress, parse_persistent_peers};

/// Errors reading or writing the node configuration.
#[derive(Debug, thiserror::Error)]
pub enum NodeConfigError {
    /// File could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// File involved.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// TOML syntax or type error.
    #[error("{path}: {reason}")]
    Invalid {
        /// File involved.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Debug, Default, Deserialize)]
struct RawConfig {
    moniker: Option<String>,
    log_level: Option<String>,
    log_format: Option<String>,
    log_no_color: Option<bool>,
    priv_validator_key_file: Option<String>,
    priv_validator_state_file: Option<String>,
    node_key_file: Option<String>,
    #[serde(default)]
    rpc: RawListen,
    #[serde(default)]
    p2p: RawP2p,
    #[serde(default)]
    simchain: RawSimchain,
}

#[derive(Debug, Default, Deserialize)]
struct RawListen {
    laddr: Option<String>,
}

/// The `[p2p]` keys simd reads (CometBFT's `P2PConfig`, `config/config.go`).
#[derive(Debug, Default, Deserialize)]
struct RawP2p {
    laddr: Option<String>,
    external_address: Option<String>,
    persistent_peers: Option<String>,
    allow_duplicate_ip: Option<bool>,
    pex: Option<bool>,
    addr_book_strict: Option<bool>,
    max_num_inbound_peers: Option<i64>,
    max_num_outbound_peers: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
struct RawSimchain {
    network: Option<String>,
    network_idle_timeout: Option<String>,
    p2p_time_scale: Option<f64>,
    write_upgrade_info: Option<bool>,
    log_flood: Option<bool>,
    voting_power: Option<u64>,
}

/// How the node finds the chain.
#[derive(Debug, Clone, PartialEq)]
pub enum Peering {
    /// `[p2p] persistent_peers`: CometBFT's switch ([`crate::switch`]).
    Persistent(Vec<NetAddress>),
    /// `[simchain] network`: the older one-session-at-a-time simulation.
    Legacy(Vec<String>),
    /// Neither is set: `simd start` refuses to run.
    Unset,
}

/// Validated node configuration with absolute paths.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Node home directory.
    pub home: PathBuf,
    /// Node name.
    pub moniker: String,
    /// `priv_validator_key.json`.
    pub priv_validator_key_file: PathBuf,
    /// `priv_validator_state.json`.
    pub priv_validator_state_file: PathBuf,
    /// `node_key.json`.
    pub node_key_file: PathBuf,
    /// RPC listen address (`tcp://` stripped).
    pub rpc_laddr: SocketAddr,
    /// `[p2p] laddr` as written (`/status` reports it).
    pub p2p_laddr: String,
    /// `[p2p] laddr` as a socket address: the node listens there, as gaiad does.
    pub p2p_listen: SocketAddr,
    /// `[p2p] external_address`.
    pub external_address: String,
    /// Where the node connects.
    pub peering: Peering,
    /// `persistent_peers` entries skipped because their host did not resolve (CometBFT logs
    /// and skips them).
    pub skipped_peers: Vec<AddressError>,
    /// `[p2p] allow_duplicate_ip` (CometBFT's default: false).
    pub allow_duplicate_ip: bool,
    /// `[p2p] pex` (default true). Read for the record; simd does not exchange peers.
    pub pex: bool,
    /// `[p2p] addr_book_strict` (default true). Read for the record; simd keeps no address book.
    pub addr_book_strict: bool,
    /// simchain-net node addresses (`host:port`) for the older mode, in failover order; empty
    /// when not configured (the same as [`Peering::Legacy`]'s).
    pub network: Vec<String>,
    /// How long the network may stay silent (it sends every block) before the node drops the
    /// session and moves on to the next address (older mode).
    pub network_idle_timeout: Duration,
    /// `[simchain] p2p_time_scale`: multiplies CometBFT's redial and keep-alive waits.
    pub p2p_time_scale: f64,
    /// `log_level` (CometBFT's default `info`).
    pub log_level: String,
    /// `log_format`: `plain` or `json`.
    pub log_format: String,
    /// `log_no_color`.
    pub log_no_color: bool,
    /// Write `data/upgrade-info.json` on upgrade halts.
    pub write_upgrade_info: bool,
    /// Flood stdout from a separate thread.
    pub log_flood: bool,
    /// Voting power reported by `/status`.
    pub voting_power: u64,
}

/// Resolves `path` against `home` unless absolute (CometBFT's rule).
pub fn resolve(home: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        home.join(path)
    }
}

/// Default of [`NodeConfig::network_idle_timeout`].
pub const DEFAULT_NETWORK_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Parses `[simchain] network`: one or more `host:port` addresses separated by commas.
/// Whitespace around entries is trimmed. A blank value means "not configured" (an empty list);
/// an empty entry (`"a:1,,b:2"`, a trailing comma) or an entry that is not `host:port` is an
/// error, never silently skipped.
pub fn parse_network_addresses(text: &str) -> Result<Vec<String>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let entries: Vec<&str> = text.split(',').map(str::trim).collect();
    let count = entries.len();
    let mut addresses = Vec::with_capacity(count);
    for (index, entry) in entries.into_iter().enumerate() {
        let position = index + 1;
        if entry.is_empty() {
            return Err(format!(
                "[simchain] network {text:?}: entry {position} of {count} is empty \
                 (expected comma-separated host:port addresses)"
            ));
        }
        let valid = entry.rsplit_once(':').is_some_and(|(host, port)| {
            valid_host(host) && port.parse::<u16>().is_ok_and(|p| p != 0)
        });
        if !valid {
            return Err(format!(
                "[simchain] network {text:?}: entry {position} ({entry:?}) is not host:port"
            ));
        }
        addresses.push(entry.to_string());
    }
    Ok(addresses)
}

/// A host name, an IPv4 address or a bracketed IPv6 address.
fn valid_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// Parses `[simchain] network_idle_timeout` (`"3s"`, `"500ms"`, `"1m"`); it must be positive.
pub fn parse_network_idle_timeout(text: &str) -> Result<Duration, String> {
    let invalid = || {
        format!(
            "[simchain] network_idle_timeout {text:?} is not a positive duration \
             (e.g. \"3s\", \"500ms\")"
        )
    };
    let duration = crate::clock::parse_duration(text).map_err(|_| invalid())?;
    if duration.is_zero() {
        return Err(invalid());
    }
    Ok(duration)
}

/// Parses `[simchain] p2p_time_scale`: a positive, finite multiplier.
pub fn parse_time_scale(value: f64) -> Result<f64, String> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(format!(
            "[simchain] p2p_time_scale {value} must be a positive number (1.0 is CometBFT's timing)"
        ))
    }
}

/// Parses a `tcp://host:port` or `host:port` address.
pub fn parse_laddr(text: &str) -> Option<SocketAddr> {
    text.trim_start_matches("tcp://").parse().ok()
}

impl NodeConfig {
    /// Path of `config/config.toml` under `home`.
    pub fn path(home: &Path) -> PathBuf {
        home.join("config").join("config.toml")
    }

    /// Loads `config/config.toml`.
    pub fn load(home: &Path) -> Result<Self, NodeConfigError> {
        let path = Self::path(home);
        let text = std::fs::read_to_string(&path).map_err(|source| NodeConfigError::Io {
            path: path.clone(),
            source,
        })?;
        Self::parse(home, &text).map_err(|reason| NodeConfigError::Invalid { path, reason })
    }

    /// Parses config text for `home`.
    pub fn parse(home: &Path, text: &str) -> Result<Self, String> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        let rpc_text = raw
            .rpc
            .laddr
            .unwrap_or_else(|| "tcp://127.0.0.1:26657".into());
        let rpc_laddr = parse_laddr(&rpc_text)
            .ok_or_else(|| format!("rpc.laddr {rpc_text:?} is not tcp://IP:PORT"))?;
        let p2p_text = raw
            .p2p
            .laddr
            .clone()
            .unwrap_or_else(|| "tcp://0.0.0.0:26656".into());
        let p2p_listen = parse_laddr(&p2p_text)
            .ok_or_else(|| format!("p2p.laddr {p2p_text:?} is not tcp://IP:PORT"))?;
        // `P2PConfig.ValidateBasic` (`config/config.go`).
        for (key, value) in [
            ("max_num_inbound_peers", raw.p2p.max_num_inbound_peers),
            ("max_num_outbound_peers", raw.p2p.max_num_outbound_peers),
        ] {
            if value.is_some_and(|v| v < 0) {
                return Err(format!("error in [p2p] section: {key} can't be negative"));
            }
        }
        let log_format = raw.log_format.clone().unwrap_or_else(|| "plain".into());
        let network = parse_network_addresses(raw.simchain.network.as_deref().unwrap_or(""))?;
        // `Switch.AddPersistentPeers` at node creation (`node/node.go`): the first malformed
        // entry stops the node.
        let (persistent, skipped_peers) =
            parse_persistent_peers(raw.p2p.persistent_peers.as_deref().unwrap_or(""))
                .map_err(|e| format!("could not add peers from persistent_peers field: {e}"))?;
        let peering = match (persistent.is_empty(), network.is_empty()) {
            (false, false) => {
                return Err(
                    "[p2p] persistent_peers and [simchain] network are both set; \
                            set only persistent_peers (CometBFT's peering) or only network \
                            (the simulation's older single-session form)"
                        .into(),
                );
            }
            (false, true) => Peering::Persistent(persistent),
            (true, false) => Peering::Legacy(network.clone()),
            (true, true) => Peering::Unset,
        };
        Ok(Self {
            home: home.to_path_buf(),
            moniker: raw.moniker.unwrap_or_else(|| "simd".into()),
            priv_validator_key_file: resolve(
                home,
                raw.priv_validator_key_file
                    .as_deref()
                    .unwrap_or("config/priv_validator_key.json"),
            ),
            priv_validator_state_file: resolve(
                home,
                raw.priv_validator_state_file
                    .as_deref()
                    .unwrap_or("data/priv_validator_state.json"),
            ),
            node_key_file: resolve(
                home,
                raw.node_key_file
                    .as_deref()
                    .unwrap_or("config/node_key.json"),
            ),
            rpc_laddr,
            p2p_laddr: p2p_text,
            p2p_listen,
            external_address: raw.p2p.external_address.unwrap_or_default(),
            peering,
            skipped_peers,
            allow_duplicate_ip: raw.p2p.allow_duplicate_ip.unwrap_or(false),
            pex: raw.p2p.pex.unwrap_or(true),
            addr_book_strict: raw.p2p.addr_book_strict.unwrap_or(true),
            network,
            network_idle_timeout: match raw.simchain.network_idle_timeout.as_deref() {
                Some(text) => parse_network_idle_timeout(text)?,
                None => DEFAULT_NETWORK_IDLE_TIMEOUT,
            },
            p2p_time_scale: parse_time_scale(raw.simchain.p2p_time_scale.unwrap_or(1.0))?,
            log_level: raw.log_level.unwrap_or_else(|| "info".into()),
            log_format,
            log_no_color: raw.log_no_color.unwrap_or(false),
            write_upgrade_info: raw.simchain.write_upgrade_info.unwrap_or(true),
            log_flood: raw.simchain.log_flood.unwrap_or(false),
            voting_power: raw.simchain.voting_power.unwrap_or(10),
        })
    }
}

/// Settings for a freshly written config.toml.
#[derive(Debug, Clone)]
pub struct ConfigTemplate {
    /// Node name.
    pub moniker: String,
    /// `tcp://IP:PORT` for RPC.
    pub rpc_laddr: String,
    /// `tcp://IP:PORT` for P2P.
    pub p2p_laddr: String,
    /// simchain-net node address(es), comma-separated (the older form).
    pub network: String,
    /// `[p2p] persistent_peers`.
    pub persistent_peers: String,
    /// See [`NodeConfig::write_upgrade_info`].
    pub write_upgrade_info: bool,
    /// See [`NodeConfig::log_flood`].
    pub log_flood: bool,
}

/// A realistic CometBFT config.toml (abridged, with comments) plus `[simchain]`.
pub fn render_config(template: &ConfigTemplate) -> String {
    format!(
        r#"# This is a TOML config file.
# For more information, see https://github.com/toml-lang/toml

# NOTE: Any path below can be absolute (e.g. "/var/myawesomeapp/data") or
# relative to the home directory (e.g. "data"). The home directory is
# "$HOME/.cometbft" by default, but could be changed via $CMTHOME env variable
# or --home cmd flag.

# The version of the CometBFT binary that created or
# last modified the config file. Do not modify this.
version = "0.38.17"

#######################################################################
###                   Main Base Config Options                      ###
#######################################################################

# TCP or UNIX socket address of the ABCI application,
# or the name of an ABCI application compiled in with the CometBFT binary
proxy_app = "tcp://127.0.0.1:26658"

# A custom human readable name for this node
moniker = "{moniker}"

# Database backend: goleveldb | cleveldb | boltdb | rocksdb | badgerdb
db_backend = "goleveldb"

# Database directory
db_dir = "data"

# Output level for logging, including package level options
log_level = "info"

# Output format: 'plain' (colored text) or 'json'
log_format = "plain"

##### additional base config options #####

# Path to the JSON file containing the initial validator set and other meta data
genesis_file = "config/genesis.json"

# Path to the JSON file containing the private key to use as a validator in the consensus protocol
priv_validator_key_file = "config/priv_validator_key.json"

# Path to the JSON file containing the last sign state of a validator
priv_validator_state_file = "data/priv_validator_state.json"

# TCP or UNIX socket address for CometBFT to listen on for
# connections from an external PrivValidator process
priv_validator_laddr = ""

# Path to the JSON file containing the private key to use for node authentication in the p2p protocol
node_key_file = "config/node_key.json"

# Mechanism to connect to the ABCI application: socket | grpc
abci = "socket"

# If true, query the ABCI app on connecting to a new peer
# so the app can decide if we should keep the connection or not
filter_peers = false

#######################################################################
###                 Advanced Configuration Options                  ###
#######################################################################

#######################################################
###       RPC Server Configuration Options          ###
#######################################################
[rpc]

# TCP or UNIX socket address for the RPC server to listen on
laddr = "{rpc_laddr}"

# A list of origins a cross-domain request can be executed from
cors_allowed_origins = []

# Maximum number of simultaneous connections.
max_open_connections = 900

# How long to wait for a tx to be committed during /broadcast_tx_commit.
timeout_broadcast_tx_commit = "10s"

#######################################################
###           P2P Configuration Options             ###
#######################################################
[p2p]

# Address to listen for incoming connections
laddr = "{p2p_laddr}"

# Address to advertise to peers for them to dial
external_address = ""

# Comma separated list of seed nodes to connect to
seeds = ""

# Comma separated list of nodes to keep persistent connections to
persistent_peers = "{persistent_peers}"

# Path to address book
addr_book_file = "config/addrbook.json"

# Set true for strict address routability rules
# Set false for private or local networks
addr_book_strict = true

# Maximum number of inbound peers
max_num_inbound_peers = 40

# Maximum number of outbound peers to connect to, excluding persistent peers
max_num_outbound_peers = 10

# List of node IDs, to which a connection will be (re)established ignoring any existing limits
unconditional_peer_ids = ""

# Maximum pause when redialing a persistent peer (if zero, exponential backoff is used)
persistent_peers_max_dial_period = "0s"

# Time to wait before flushing messages out on the connection
flush_throttle_timeout = "100ms"

# Maximum size of a message packet payload, in bytes
max_packet_msg_payload_size = 1024

# Rate at which packets can be sent, in bytes/second
send_rate = 5120000

# Rate at which packets can be received, in bytes/second
recv_rate = 5120000

# Set true to enable the peer-exchange reactor
pex = true

# Seed mode, in which node constantly crawls the network and looks for
# peers. If another node asks it for addresses, it responds and disconnects.
#
# Does not work if the peer-exchange reactor is disabled.
seed_mode = false

# Comma separated list of peer IDs to keep private (will not be gossiped to other peers)
private_peer_ids = ""

# Toggle to disable guard against peers connecting from the same ip.
allow_duplicate_ip = false

# Peer connection configuration.
handshake_timeout = "20s"
dial_timeout = "3s"

#######################################################
###         Mempool Configuration Option          ###
#######################################################
[mempool]
type = "flood"
recheck = true
broadcast = true
size = 5000
max_txs_bytes = 1073741824

#######################################################
###         Consensus Configuration Options         ###
#######################################################
[consensus]

wal_file = "data/cs.wal/wal"

# How long we wait for a proposal block before prevoting nil
timeout_propose = "3s"
timeout_prevote = "1s"
timeout_precommit = "1s"
# How long we wait after committing a block, before starting on the new
# height (this gives us a chance to receive some more precommits, even
# though we already have +2/3).
timeout_commit = "5s"

# EmptyBlocks mode and possible interval between empty blocks
create_empty_blocks = true
create_empty_blocks_interval = "0s"

#######################################################
###   Transaction Indexer Configuration Options     ###
#######################################################
[tx_index]
indexer = "kv"

#######################################################
###       Instrumentation Configuration Options     ###
#######################################################
[instrumentation]
prometheus = false
prometheus_listen_addr = ":26660"
namespace = "cometbft"

#######################################################
###   Simulated chain (palisade-simchain) options   ###
#######################################################
[simchain]

# The simulation's older peering, used only when [p2p] persistent_peers is empty: the address
# of the simchain-net process this node votes to (host:port), or several comma-separated; the
# node keeps one session at a time and, when it cannot connect or loses the session, moves on
# to the next address (round-robin). No node IDs, no duplicate-IP filter: not CometBFT.
network = "{network}"

# Older peering only: drop the session and move on to the next address when the network has
# sent nothing for this long (it sends every block).
network_idle_timeout = "30s"

# Not a CometBFT setting: multiplies CometBFT's redial waits (5 s, 3^i s, up to 3 s of jitter)
# and keep-alive (60 s ping, 45 s pong timeout) so tests need not wait minutes. The rules stay.
p2p_time_scale = 1.0

# Write data/upgrade-info.json when halting for an upgrade (the SDK's behaviour since v0.44).
# false reproduces older SDKs, which only log the UPGRADE NEEDED line.
write_upgrade_info = {write_upgrade_info}

# Test knob: a separate thread writes log lines to stdout as fast as it can while signing
# continues, to prove that whoever reads our stdout never blocks us.
log_flood = {log_flood}
"#,
        moniker = template.moniker,
        rpc_laddr = template.rpc_laddr,
        p2p_laddr = template.p2p_laddr,
        network = template.network,
        persistent_peers = template.persistent_peers,
        write_upgrade_info = template.write_upgrade_info,
        log_flood = template.log_flood,
    )
}

/// Rewrites one key of the `[simchain]` section in place, keeping every other line (and any
/// operator edits) intact. Appends the section or key when missing.
pub fn set_simchain_value(home: &Path, key: &str, toml_value: &str) -> Result<(), NodeConfigError> {
    set_config_value(home, Some("simchain"), key, toml_value)
}

/// Rewrites one key of `config.toml` in place — in `[section]`, or among the top-level keys
/// when `section` is `None` — keeping every other line intact. A missing key is added at the
/// end of its section (top-level keys before the first section), a missing section at the end
/// of the file.
pub fn set_config_value(
    home: &Path,
    section: Option<&str>,
    key: &str,
    toml_value: &str,
) -> Result<(), NodeConfigError> {
    let path = NodeConfig::path(home);
    let io = |source| NodeConfigError::Io {
        path: path.clone(),
        source,
    };
    let text = std::fs::read_to_string(&path).map_err(io)?;
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let new_line = format!("{key} = {toml_value}");
    let is_header = |line: &str| line.trim_start().starts_with('[');
    let body_start = match section {
        None => Some(0),
        Some(name) => {
            let header = format!("[{name}]");
            lines
                .iter()
                .position(|l| l.trim() == header)
                .map(|position| position + 1)
        }
    };
    match body_start {
        None => {
            lines.push(String::new());
            lines.push(format!("[{}]", section.unwrap_or_default()));
            lines.push(new_line);
        }
        Some(start) => {
            let end = lines[start..]
                .iter()
                .position(|l| is_header(l))
                .map_or(lines.len(), |p| start + p);
            let existing = (start..end).find(|&i| {
                let line = lines[i].trim_start();
                !line.starts_with('#') && line.split_once('=').is_some_and(|(k, _)| k.trim() == key)
            });
            match existing {
                Some(i) => lines[i] = new_line,
                None => lines.insert(end, new_line),
            }
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    crate::sign_state::write_atomically(&path, out.as_bytes(), 0o644).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> ConfigTemplate {
        ConfigTemplate {
            moniker: "val1".into(),
            rpc_laddr: "tcp://127.0.0.1:26657".into(),
            p2p_laddr: "tcp://0.0.0.0:26656".into(),
            network: "127.0.0.1:9".into(),
            persistent_peers: String::new(),
            write_upgrade_info: true,
            log_flood: false,
        }
    }

    #[test]
    fn rendered_config_parses_with_relative_paths() {
        let config = NodeConfig::parse(Path::new("/h"), &render_config(&template())).unwrap();
        assert_eq!(config.moniker, "val1");
        assert_eq!(
            config.priv_validator_state_file,
            Path::new("/h/data/priv_validator_state.json")
        );
        assert_eq!(config.rpc_laddr.port(), 26657);
        assert_eq!(config.network, vec!["127.0.0.1:9".to_string()]);
        assert_eq!(config.peering, Peering::Legacy(vec!["127.0.0.1:9".into()]));
        assert_eq!(config.network_idle_timeout, DEFAULT_NETWORK_IDLE_TIMEOUT);
        assert!(config.write_upgrade_info);
        // CometBFT's defaults.
        assert!(!config.allow_duplicate_ip);
        assert!(config.pex && config.addr_book_strict);
        assert_eq!(config.p2p_listen.port(), 26656);
        assert_eq!(config.log_format, "plain");
        assert_eq!(config.p2p_time_scale, 1.0);
    }

    #[test]
    fn persistent_peers_parse_like_cometbft_and_exclude_the_older_form() {
        let id = "f2a5c5a1e1b5c0f9d1e6d1c3b3a8e2f4a5b6c7d8";
        let text = format!(
            "[p2p]\npersistent_peers = \"{id}@127.0.0.2:26656, ,{id}@127.0.0.3:26656,\"\n\
             allow_duplicate_ip = true\npex = false\naddr_book_strict = false\n"
        );
        let config = NodeConfig::parse(Path::new("/h"), &text).unwrap();
        let Peering::Persistent(peers) = &config.peering else {
            panic!("{:?}", config.peering)
        };
        assert_eq!(peers.len(), 2);
        assert!(config.allow_duplicate_ip && !config.pex && !config.addr_book_strict);
        for (text, expected) in [
            (
                "[p2p]\npersistent_peers = \"127.0.0.1:26656\"".to_string(),
                "could not add peers from persistent_peers field: address (127.0.0.1:26656) \
                 does not contain ID",
            ),
            (
                format!(
                    "[p2p]\npersistent_peers = \"{id}@127.0.0.1:1\"\n[simchain]\nnetwork = \"127.0.0.1:2\""
                ),
                "both set",
            ),
            (
                "[p2p]\nmax_num_outbound_peers = -1".to_string(),
                "error in [p2p] section: max_num_outbound_peers can't be negative",
            ),
            (
                "[simchain]\np2p_time_scale = 0.0".to_string(),
                "p2p_time_scale",
            ),
            (
                "[p2p]\nallow_duplicate_ip = \"no\"".to_string(),
                "allow_duplicate_ip",
            ),
        ] {
            let error = NodeConfig::parse(Path::new("/h"), &text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn unknown_keys_tolerated_and_absolute_paths_kept() {
        let text = "priv_validator_state_file = \"/abs/state.json\"\nwhatever = 1\n[statesync]\nenable = false\n";
        let config = NodeConfig::parse(Path::new("/h"), text).unwrap();
        assert_eq!(
            config.priv_validator_state_file,
            Path::new("/abs/state.json")
        );
        assert!(config.network.is_empty());
        assert_eq!(config.network_idle_timeout, Duration::from_secs(30));
        assert!(NodeConfig::parse(Path::new("/h"), "[rpc]\nladdr = \"nope\"").is_err());
    }

    #[test]
    fn simchain_values_are_edited_in_place() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("config")).unwrap();
        std::fs::write(NodeConfig::path(dir.path()), render_config(&template())).unwrap();
        set_simchain_value(dir.path(), "network", "\"127.0.0.1:4242\"").unwrap();
        set_simchain_value(dir.path(), "log_flood", "true").unwrap();
        set_simchain_value(dir.path(), "voting_power", "7").unwrap();
        let config = NodeConfig::load(dir.path()).unwrap();
        assert_eq!(config.network, vec!["127.0.0.1:4242".to_string()]);
        assert!(config.log_flood);
        assert_eq!(config.voting_power, 7);
        set_config_value(dir.path(), Some("p2p"), "allow_duplicate_ip", "true").unwrap();
        set_config_value(dir.path(), None, "log_format", "\"json\"").unwrap();
        set_config_value(dir.path(), None, "log_no_color", "true").unwrap();
        set_config_value(dir.path(), Some("new"), "k", "1").unwrap();
        let config = NodeConfig::load(dir.path()).unwrap();
        assert!(config.allow_duplicate_ip);
        assert_eq!(config.log_format, "json");
        assert!(config.log_no_color);
        let text = std::fs::read_to_string(NodeConfig::path(dir.path())).unwrap();
        assert!(text.contains("# The simulation's older peering"));
        assert!(text.ends_with("[new]\nk = 1\n"), "{text}");
        let value: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(value["p2p"]["allow_duplicate_ip"].as_bool(), Some(true));
        assert_eq!(value["log_format"].as_str(), Some("json"));
    }

    #[test]
    fn network_addresses_parse_as_a_comma_separated_list() {
        let ok: &[(&str, &[&str])] = &[
            ("127.0.0.1:26600", &["127.0.0.1:26600"]),
            (
                "127.0.0.1:26701,127.0.0.1:26702",
                &["127.0.0.1:26701", "127.0.0.1:26702"],
            ),
            (
                " 127.0.0.1:1 ,\t10.0.0.2:26600 , sentry.example:26600 ",
                &["127.0.0.1:1", "10.0.0.2:26600", "sentry.example:26600"],
            ),
            ("[::1]:26600", &["[::1]:26600"]),
            // Blank: not configured (as before; `simd start` then says so).
            ("", &[]),
            ("   ", &[]),
        ];
        for (text, expected) in ok {
            let got = parse_network_addresses(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(got, *expected, "{text:?}");
        }
        let bad: &[(&str, &str)] = &[
            ("127.0.0.1:1,,127.0.0.1:2", "entry 2 of 3 is empty"),
            ("127.0.0.1:1,", "entry 2 of 2 is empty"),
            (",127.0.0.1:1", "entry 1 of 2 is empty"),
            (" , ", "entry 1 of 2 is empty"),
            ("127.0.0.1", "entry 1 (\"127.0.0.1\") is not host:port"),
            (
                "127.0.0.1:1,127.0.0.1:x",
                "entry 2 (\"127.0.0.1:x\") is not host:port",
            ),
            ("127.0.0.1:70000", "is not host:port"),
            ("127.0.0.1:0", "is not host:port"),
            (":26600", "is not host:port"),
            ("my host:26600", "is not host:port"),
            ("127.0.0.1:1;127.0.0.1:2", "is not host:port"),
            ("127.0.0.1:1 127.0.0.1:2", "is not host:port"),
            ("tcp://127.0.0.1:1", "is not host:port"),
            ("[not-ipv6]:1", "is not host:port"),
            ("::1:26600", "is not host:port"),
        ];
        for (text, expected) in bad {
            let error = parse_network_addresses(text).expect_err(text);
            assert!(
                error.starts_with("[simchain] network ") && error.contains(expected),
                "{text:?}: {error}"
            );
        }
    }

    #[test]
    fn network_idle_timeout_parses_and_defaults() {
        let cases: &[(&str, Option<Duration>)] = &[
            ("3s", Some(Duration::from_secs(3))),
            ("500ms", Some(Duration::from_millis(500))),
            ("1.5s", Some(Duration::from_millis(1500))),
            ("2m", Some(Duration::from_secs(120))),
            ("0s", None),
            ("", None),
            ("soon", None),
            ("-1s", None),
        ];
        for (text, expected) in cases {
            match (parse_network_idle_timeout(text), expected) {
                (Ok(got), Some(want)) => assert_eq!(got, *want, "{text:?}"),
                (Err(error), None) => assert!(
                    error.starts_with("[simchain] network_idle_timeout"),
                    "{text:?}: {error}"
                ),
                (got, want) => panic!("{text:?}: got {got:?}, want {want:?}"),
            }
        }
        let text =
            "[simchain]\nnetwork = \"127.0.0.1:1, 127.0.0.1:2\"\nnetwork_idle_timeout = \"3s\"\n";
        let config = NodeConfig::parse(Path::new("/h"), text).unwrap();
        assert_eq!(config.network, ["127.0.0.1:1", "127.0.0.1:2"]);
        assert_eq!(config.network_idle_timeout, Duration::from_secs(3));
    }

    #[test]
    fn bad_network_settings_name_the_file_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("config")).unwrap();
        let path = NodeConfig::path(dir.path());
        for (line, key) in [
            (
                "network = \"127.0.0.1:1,,127.0.0.1:2\"",
                "[simchain] network ",
            ),
            (
                "network_idle_timeout = \"0s\"",
                "[simchain] network_idle_timeout ",
            ),
        ] {
            std::fs::write(&path, format!("[simchain]\n{line}\n")).unwrap();
            let message = NodeConfig::load(dir.path()).unwrap_err().to_string();
            assert!(
                message.starts_with(&path.display().to_string()) && message.contains(key),
                "{message}"
            );
        }
    }
}
