//! CometBFT's peer-to-peer rules that decide which peers a node keeps, without I/O: peer
//! addresses, node IDs, and the switch's redial timing. [`crate::switch`] runs them.
//!
//! Everything here follows CometBFT v0.38 (`p2p/`, read at v0.38.25); each item names its file.

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// Bytes of a node ID (`p2p/key.go` `IDByteLength` = `crypto.AddressSize`).
pub const ID_BYTE_LENGTH: usize = 20;

/// CometBFT's node ID for an ed25519 public key: lowercase hex of the key's address, the first
/// 20 bytes of its SHA-256 (`p2p/key.go` `PubKeyToID`, `crypto/ed25519` `Address`).
pub fn node_id(pub_key: &[u8; 32]) -> String {
    hex::encode(&Sha256::digest(pub_key)[..ID_BYTE_LENGTH])
}

/// `p2p/netaddress.go` `validateID`: non-empty hex of exactly 20 bytes (either case).
pub fn validate_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("no ID".into());
    }
    let bytes = hex::decode(id).map_err(|e| format!("encoding/hex: {e}"))?;
    if bytes.len() != ID_BYTE_LENGTH {
        return Err(format!(
            "invalid hex length - got {}, expected {ID_BYTE_LENGTH}",
            bytes.len()
        ));
    }
    Ok(())
}

/// A peer address, `<id>@<ip>:<port>` (`p2p/netaddress.go` `NetAddress`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NetAddress {
    /// Node ID as written (CometBFT compares it as a string).
    pub id: String,
    /// IP (a host name is resolved when the address is parsed).
    pub ip: IpAddr,
    /// Port.
    pub port: u16,
}

impl NetAddress {
    /// The socket address to dial.
    pub fn socket(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    /// `DialString`: `ip:port`, IPv6 in brackets.
    pub fn dial_string(&self) -> String {
        self.socket().to_string()
    }
}

/// `NetAddress.String`: `id@ip:port`.
impl fmt::Display for NetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.dial_string())
    }
}

/// Why a peer address is refused (`p2p/errors.go`: `ErrNetAddressNoID`, `ErrNetAddressInvalid`,
/// `ErrNetAddressLookup`, with their texts).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// No `id@` part.
    #[error("address ({0}) does not contain ID")]
    NoId(String),
    /// A malformed ID, host or port.
    #[error("invalid address ({addr}): {reason}")]
    Invalid {
        /// The part found wrong.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The host name did not resolve. CometBFT skips such an entry (logging it) instead of
    /// refusing to start.
    #[error("error looking up host ({host}): {reason}")]
    Lookup {
        /// Host name.
        host: String,
        /// Resolver error.
        reason: String,
    },
}

/// `removeProtocolIfDefined`: drops everything up to `://`.
fn remove_protocol(addr: &str) -> &str {
    match addr.split_once("://") {
        Some((_, rest)) => rest.split("://").next().unwrap_or(rest),
        None => addr,
    }
}

/// Go's `net.SplitHostPort` for the forms a peer address takes: `host:port` or `[v6]:port`.
fn split_host_port(addr: &str) -> Result<(&str, &str), String> {
    let missing = || format!("address {addr}: missing port in address");
    if let Some(rest) = addr.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("address {addr}: missing ']' in address"))?;
        let port = after.strip_prefix(':').ok_or_else(missing)?;
        return Ok((host, port));
    }
    let (host, port) = addr.rsplit_once(':').ok_or_else(missing)?;
    if host.contains(':') {
        return Err(format!("address {addr}: too many colons in address"));
    }
    Ok((host, port))
}

/// `NewNetAddressString`: parses `[proto://]id@host:port`, resolving a host name.
pub fn parse_net_address(text: &str) -> Result<NetAddress, AddressError> {
    let without_protocol = remove_protocol(text);
    let parts: Vec<&str> = without_protocol.split('@').collect();
    let [id, host_port] = parts[..] else {
        return Err(AddressError::NoId(text.to_string()));
    };
    validate_id(id).map_err(|reason| AddressError::Invalid {
        addr: without_protocol.to_string(),
        reason,
    })?;
    let (host, port) = split_host_port(host_port).map_err(|reason| AddressError::Invalid {
        addr: host_port.to_string(),
        reason,
    })?;
    if host.is_empty() {
        return Err(AddressError::Invalid {
            addr: host_port.to_string(),
            reason: "host is empty".into(),
        });
    }
    let ip = match host.parse::<IpAddr>() {
        Ok(ip) => ip,
        Err(_) => (host, 0)
            .to_socket_addrs()
            .map_err(|e| AddressError::Lookup {
                host: host.to_string(),
                reason: e.to_string(),
            })?
            .next()
            .map(|a| a.ip())
            .ok_or_else(|| AddressError::Lookup {
                host: host.to_string(),
                reason: "no such host".into(),
            })?,
    };
    let port: u16 = port.parse().map_err(|_| {
        let why = if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
            "value out of range"
        } else {
            "invalid syntax"
        };
        AddressError::Invalid {
            addr: port.to_string(),
            reason: format!("strconv.ParseUint: parsing {port:?}: {why}"),
        }
    })?;
    Ok(NetAddress {
        id: id.to_string(),
        ip,
        port,
    })
}

/// `splitAndTrimEmpty(s, ",", " ")` (`node/node.go`): split at commas, trim spaces (only the
/// space character), drop empty entries. So `"a,,b"` and a trailing comma are fine.
pub fn split_and_trim_empty(text: &str) -> Vec<&str> {
    text.split(',')
        .map(|part| part.trim_matches(' '))
        .filter(|part| !part.is_empty())
        .collect()
}

/// `[p2p] persistent_peers` as `Switch.AddPersistentPeers` takes it: every entry parsed; a
/// host that does not resolve is reported and skipped; any other error refuses the whole list
/// (the node then does not start: `node/node.go` "could not add peers from persistent_peers
/// field"). Returns the peers and the skipped entries' errors.
pub fn parse_persistent_peers(
    text: &str,
) -> Result<(Vec<NetAddress>, Vec<AddressError>), AddressError> {
    let mut peers = Vec::new();
    let mut skipped = Vec::new();
    let mut first_error = None;
    for entry in split_and_trim_empty(text) {
        match parse_net_address(entry) {
            Ok(peer) => peers.push(peer),
            Err(error @ AddressError::Lookup { .. }) => skipped.push(error),
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok((peers, skipped)),
    }
}

/// The switch's waits. CometBFT's values (`p2p/switch.go` constants, `p2p/conn/connection.go`
/// `defaultPingInterval`/`defaultPongTimeout`) multiplied by `scale`, a simulation knob
/// (`[simchain] p2p_time_scale`, not a CometBFT setting) so tests need not wait minutes; the
/// rules themselves never change. Dial (1 s) and handshake (3 s) timeouts are not scaled: they
/// protect rather than pace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// Multiplier applied to every wait; 1.0 is CometBFT's.
    pub scale: f64,
}

/// `dialRandomizerIntervalMilliseconds`: every dial and redial waits up to this much more.
pub const DIAL_RANDOMIZER: Duration = Duration::from_millis(3000);
/// `reconnectInterval`: the pause between the first phase's attempts.
pub const RECONNECT_INTERVAL: Duration = Duration::from_secs(5);
/// `reconnectAttempts`: attempts at a fixed interval.
pub const RECONNECT_ATTEMPTS: u32 = 20;
/// `reconnectBackOffAttempts`: attempts with exponential back-off after those.
pub const RECONNECT_BACKOFF_ATTEMPTS: u32 = 10;
/// `reconnectBackOffBaseSeconds`: the back-off before attempt `i` is `3^i` seconds.
pub const RECONNECT_BACKOFF_BASE_SECONDS: u64 = 3;
/// `defaultDialTimeout` (`p2p/transport.go`); `[p2p] dial_timeout` is not used by v0.38's
/// transport.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(1);
/// `defaultHandshakeTimeout` (`p2p/transport.go`); `[p2p] handshake_timeout` is likewise unused.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// `defaultPingInterval`: a connection sends a ping this often.
pub const PING_INTERVAL: Duration = Duration::from_secs(60);
/// `defaultPongTimeout`: a ping unanswered for this long stops the peer ("pong timeout").
pub const PONG_TIMEOUT: Duration = Duration::from_secs(45);

impl Timing {
    /// CometBFT's own timing.
    pub const REAL: Timing = Timing { scale: 1.0 };

    fn scaled(&self, duration: Duration) -> Duration {
        duration.mul_f64(self.scale)
    }

    /// `Switch.randomSleep(interval)`: `interval` plus a random `[0, 3000)` ms, scaled.
    /// `jitter_ms` is that random draw.
    pub fn random_sleep(&self, interval: Duration, jitter_ms: u64) -> Duration {
        self.scaled(
            interval + Duration::from_millis(jitter_ms % DIAL_RANDOMIZER.as_millis() as u64),
        )
    }

    /// The ping interval.
    pub fn ping_interval(&self) -> Duration {
        self.scaled(PING_INTERVAL)
    }

    /// The pong timeout.
    pub fn pong_timeout(&self) -> Duration {
        self.scaled(PONG_TIMEOUT)
    }
}

/// One step of `Switch.reconnectToPeer` (`p2p/switch.go`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReconnectStep {
    /// Dial the peer (`tries` as the log line counts it). Success, or a refusal because the
    /// peer is being dialed or already connected — by ID, or by IP while duplicate IPs are not
    /// allowed — ends the loop.
    Dial {
        /// The phase it belongs to.
        phase: ReconnectPhase,
        /// The attempt number the log prints.
        tries: u32,
    },
    /// Sleep `interval` plus the random part ([`Timing::random_sleep`]).
    Sleep(Duration),
    /// Log "Failed to reconnect to peer. Beginning exponential backoff".
    BeginBackoff,
    /// Log "Failed to reconnect to peer. Giving up" and stop.
    GiveUp,
}

/// The two phases of the redial loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconnectPhase {
    /// 20 attempts, 5 s apart (~2 minutes with the randomiser).
    Fixed,
    /// 10 attempts after `3^i` s each (`i` = 1..=10, ~1 day in all).
    Backoff,
}

/// The whole redial loop as a list of steps, in order: `Dial`, `Sleep(5s)` twenty times (the
/// first dial is immediate, and a sleep follows even the twentieth failure), `BeginBackoff`,
/// then `Sleep(3^i s)`, `Dial` for `i` in 1..=10, then `GiveUp`.
pub fn reconnect_plan() -> Vec<ReconnectStep> {
    let mut plan = Vec::new();
    for tries in 0..RECONNECT_ATTEMPTS {
        plan.push(ReconnectStep::Dial {
            phase: ReconnectPhase::Fixed,
            tries,
        });
        plan.push(ReconnectStep::Sleep(RECONNECT_INTERVAL));
    }
    plan.push(ReconnectStep::BeginBackoff);
    for tries in 1..=RECONNECT_BACKOFF_ATTEMPTS {
        plan.push(ReconnectStep::Sleep(Duration::from_secs(
            RECONNECT_BACKOFF_BASE_SECONDS.pow(tries),
        )));
        plan.push(ReconnectStep::Dial {
            phase: ReconnectPhase::Backoff,
            tries,
        });
    }
    plan.push(ReconnectStep::GiveUp);
    plan
}

/// A random permutation of `0..n` (`sw.rng.Perm`): `DialPeersAsync` dials peers in random
/// order.
pub fn permutation(n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (rand::random::<u64>() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "f2a5c5a1e1b5c0f9d1e6d1c3b3a8e2f4a5b6c7d8";

    #[test]
    fn node_id_is_hex_of_the_first_20_bytes_of_sha256() {
        // sha256 of 32 zero bytes = 66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925
        assert_eq!(
            node_id(&[0; 32]),
            "66687aadf862bd776c8fc18b8e9f8e2008971485"
        );
    }

    #[test]
    fn addresses_parse_as_cometbft_parses_them() {
        let peer = parse_net_address(&format!("{ID}@127.0.0.2:26656")).unwrap();
        assert_eq!(peer.ip, "127.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(peer.port, 26656);
        assert_eq!(peer.to_string(), format!("{ID}@127.0.0.2:26656"));
        let v6 = parse_net_address(&format!("tcp://{ID}@[::1]:1")).unwrap();
        assert_eq!(v6.dial_string(), "[::1]:1");
        let localhost = parse_net_address(&format!("{ID}@localhost:2")).unwrap();
        assert!(localhost.ip.is_loopback());
        let upper = parse_net_address(&format!("{}@127.0.0.1:1", ID.to_uppercase())).unwrap();
        assert_eq!(upper.id, ID.to_uppercase(), "kept as written");

        let cases: &[(String, &str)] = &[
            (
                "127.0.0.1:26656".into(),
                "address (127.0.0.1:26656) does not contain ID",
            ),
            (format!("{ID}@a@b:1"), "does not contain ID"),
            (
                "@127.0.0.1:1".into(),
                "invalid address (@127.0.0.1:1): no ID",
            ),
            (
                "abcd@127.0.0.1:1".into(),
                "invalid hex length - got 2, expected 20",
            ),
            ("zz@127.0.0.1:1".into(), "encoding/hex"),
            (format!("{ID}@127.0.0.1"), "missing port in address"),
            (format!("{ID}@:1"), "host is empty"),
            (format!("{ID}@127.0.0.1:70000"), "invalid address (70000)"),
            (format!("{ID}@127.0.0.1:x"), "invalid address (x)"),
        ];
        for (text, expected) in cases {
            let error = parse_net_address(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
        assert!(matches!(
            parse_net_address(&format!("{ID}@no-such-host.invalid:1")),
            Err(AddressError::Lookup { .. })
        ));
    }

    #[test]
    fn persistent_peers_split_trim_and_skip_unresolvable_hosts() {
        let text = format!(" {ID}@127.0.0.2:1 ,, {ID}@127.0.0.3:2,\t");
        // A tab is not trimmed (the cutset is a space), so the last entry is "\t": no ID.
        assert!(matches!(
            parse_persistent_peers(&text),
            Err(AddressError::NoId(_))
        ));
        let text = format!(" {ID}@127.0.0.2:1 ,, {ID}@127.0.0.3:2, {ID}@no-such-host.invalid:3,");
        let (peers, skipped) = parse_persistent_peers(&text).unwrap();
        assert_eq!(peers.len(), 2);
        assert_eq!(skipped.len(), 1);
        assert_eq!(parse_persistent_peers("").unwrap().0, vec![]);
        let bad = format!("{ID}@127.0.0.2:1,127.0.0.1:2");
        assert_eq!(
            parse_persistent_peers(&bad).unwrap_err().to_string(),
            "address (127.0.0.1:2) does not contain ID"
        );
    }

    #[test]
    fn reconnect_plan_is_switch_go_reconnect_to_peer() {
        let plan = reconnect_plan();
        // 20 × (dial, 5 s), the backoff notice, 10 × (3^i s, dial), give up.
        assert_eq!(plan.len(), 20 * 2 + 1 + 10 * 2 + 1);
        assert_eq!(
            plan[0],
            ReconnectStep::Dial {
                phase: ReconnectPhase::Fixed,
                tries: 0
            }
        );
        assert_eq!(plan[1], ReconnectStep::Sleep(Duration::from_secs(5)));
        assert_eq!(
            plan[38],
            ReconnectStep::Dial {
                phase: ReconnectPhase::Fixed,
                tries: 19
            }
        );
        assert_eq!(plan[39], ReconnectStep::Sleep(Duration::from_secs(5)));
        assert_eq!(plan[40], ReconnectStep::BeginBackoff);
        assert_eq!(plan[41], ReconnectStep::Sleep(Duration::from_secs(3)));
        assert_eq!(plan[43], ReconnectStep::Sleep(Duration::from_secs(9)));
        assert_eq!(plan[59], ReconnectStep::Sleep(Duration::from_secs(59_049)));
        assert_eq!(
            plan[60],
            ReconnectStep::Dial {
                phase: ReconnectPhase::Backoff,
                tries: 10
            }
        );
        assert_eq!(plan[61], ReconnectStep::GiveUp);
    }

    #[test]
    fn timing_scales_interval_and_jitter_alike() {
        let real = Timing::REAL;
        assert_eq!(
            real.random_sleep(RECONNECT_INTERVAL, 2999),
            Duration::from_millis(7999)
        );
        assert_eq!(real.random_sleep(Duration::ZERO, 3000), Duration::ZERO);
        let fast = Timing { scale: 0.1 };
        assert_eq!(
            fast.random_sleep(RECONNECT_INTERVAL, 1000),
            Duration::from_millis(600)
        );
        assert_eq!(fast.ping_interval(), Duration::from_secs(6));
        assert_eq!(fast.pong_timeout(), Duration::from_millis(4500));
    }

    #[test]
    fn permutations_cover_every_index_once() {
        for n in 0..6 {
            let mut order = permutation(n);
            order.sort_unstable();
            assert_eq!(order, (0..n).collect::<Vec<_>>());
        }
    }
}
