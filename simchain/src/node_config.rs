//! `config/config.toml` as CometBFT writes it, plus a `[simchain]` section.
//!
//! Only the keys the simulation uses are read; the real file has hundreds and unknown keys are
//! tolerated on purpose (operators' files must load unchanged):
//!
//! ```toml
//! moniker = "val1"
//! priv_validator_key_file = "config/priv_validator_key.json"   # relative to home
//! priv_validator_state_file = "data/priv_validator_state.json"
//! node_key_file = "config/node_key.json"
//! [rpc]
//! laddr = "tcp://127.0.0.1:26657"
//! [p2p]
//! laddr = "tcp://0.0.0.0:26656"
//! [simchain]
//! network = "127.0.0.1:26600"     # simchain-net address(es), comma-separated, tried in order
//! network_idle_timeout = "30s"     # reconnect (to the next address) after this much silence
//! write_upgrade_info = true        # false: old SDK, only the log line
//! log_flood = false                # true: flood stdout from a separate thread
//! voting_power = 10                # reported by /status
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

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
    priv_validator_key_file: Option<String>,
    priv_validator_state_file: Option<String>,
    node_key_file: Option<String>,
    #[serde(default)]
    rpc: RawListen,
    #[serde(default)]
    p2p: RawListen,
    #[serde(default)]
    simchain: RawSimchain,
}

#[derive(Debug, Default, Deserialize)]
struct RawListen {
    laddr: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawSimchain {
    network: Option<String>,
    network_idle_timeout: Option<String>,
    write_upgrade_info: Option<bool>,
    log_flood: Option<bool>,
    voting_power: Option<u64>,
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
    /// P2P listen address, reported only.
    pub p2p_laddr: String,
    /// simchain-net node addresses (`host:port`) in failover order; empty when not configured.
    /// `[simchain] network` holds them comma-separated, like CometBFT's `persistent_peers`.
    pub network: Vec<String>,
    /// How long the network may stay silent (it sends every block) before the node drops the
    /// session and moves on to the next address.
    pub network_idle_timeout: Duration,
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
            p2p_laddr: raw
                .p2p
                .laddr
                .unwrap_or_else(|| "tcp://0.0.0.0:26656".into()),
            network: parse_network_addresses(raw.simchain.network.as_deref().unwrap_or(""))?,
            network_idle_timeout: match raw.simchain.network_idle_timeout.as_deref() {
                Some(text) => parse_network_idle_timeout(text)?,
                None => DEFAULT_NETWORK_IDLE_TIMEOUT,
            },
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
    /// simchain-net node address(es), comma-separated.
    pub network: String,
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
persistent_peers = ""

# Set true for strict address routability rules
addr_book_strict = true

# Maximum number of inbound peers
max_num_inbound_peers = 40

# Maximum number of outbound peers to connect to, excluding persistent peers
max_num_outbound_peers = 10

# Seed mode, in which node constantly crawls the network and looks for
# peers. If another node asks it for addresses, it responds and disconnects.
pex = true

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

# Address of the simchain-net process this node votes to (host:port). Like persistent_peers,
# several comma-separated addresses may be given: the node keeps one session at a time and,
# when it cannot connect or loses the session, moves on to the next address (round-robin).
network = "{network}"

# Drop the session and move on to the next address when the network has sent nothing for this
# long (it sends every block).
network_idle_timeout = "30s"

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
        write_upgrade_info = template.write_upgrade_info,
        log_flood = template.log_flood,
    )
}

/// Rewrites one key of the `[simchain]` section in place, keeping every other line (and any
/// operator edits) intact. Appends the section or key when missing.
pub fn set_simchain_value(home: &Path, key: &str, toml_value: &str) -> Result<(), NodeConfigError> {
    let path = NodeConfig::path(home);
    let io = |source| NodeConfigError::Io {
        path: path.clone(),
        source,
    };
    let text = std::fs::read_to_string(&path).map_err(io)?;
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let section_start = lines.iter().position(|l| l.trim() == "[simchain]");
    let new_line = format!("{key} = {toml_value}");
    match section_start {
        None => {
            lines.push(String::new());
            lines.push("[simchain]".into());
            lines.push(new_line);
        }
        Some(start) => {
            let end = lines[start + 1..]
                .iter()
                .position(|l| l.trim_start().starts_with('['))
                .map_or(lines.len(), |p| start + 1 + p);
            let existing = (start + 1..end).find(|&i| {
                lines[i]
                    .split_once('=')
                    .is_some_and(|(k, _)| k.trim() == key)
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
        assert_eq!(config.network_idle_timeout, DEFAULT_NETWORK_IDLE_TIMEOUT);
        assert!(config.write_upgrade_info);
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
        let text = std::fs::read_to_string(NodeConfig::path(dir.path())).unwrap();
        assert!(text.contains("# Address of the simchain-net process"));
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
