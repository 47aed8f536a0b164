//! CometBFT's peering rules in `simd`, checked from the chain's side (`simchain-net`'s record)
//! and, where the chain cannot see it, from the node's `/net_info` and log.
//!
//! Sentries are `simchain-net` listeners, each with its own node key. Loopback aliases
//! (127.0.0.2, 127.0.0.3) stand for distinct sentry IPs; two listeners on 127.0.0.1 are the
//! naive tunnel setup where every forward shares one IP.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use palisade_simchain::record::Record;
use palisade_simchain::testkit::{
    ListenerOptions, SimNetwork, SimNetworkOptions, SimdProcess, ValidatorKeyInfo, free_port,
    set_base_option, set_p2p_option, set_persistent_peers, set_simchain_option, write_node_key,
    write_validator_home,
};

const WAIT: Duration = Duration::from_secs(20);

fn simd() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_simd"))
}

fn net_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_simchain-net"))
}

struct Setup {
    dir: tempfile::TempDir,
    net: SimNetwork,
    validator: ValidatorKeyInfo,
    /// Listener name → its node key file.
    keys: Vec<(String, PathBuf)>,
}

impl Setup {
    fn home(&self) -> &Path {
        &self.validator.home
    }

    /// `id@addr` of the named listener.
    fn peer(&self, name: &str) -> String {
        self.net
            .listeners()
            .iter()
            .find(|l| l.name == name)
            .unwrap_or_else(|| panic!("no listener {name}"))
            .peer()
    }

    fn start_node(&self) -> SimdProcess {
        SimdProcess::start(simd(), self.home(), &[], &[]).unwrap()
    }
}

/// A network with the given `(name, addr)` listeners, each with a node key written beforehand,
/// and one validator whose home peers with nobody yet (the test sets persistent_peers).
fn setup(listeners: &[(&str, &str)]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let validator = write_validator_home(
        &dir.path().join("val1"),
        "val1",
        "sim-1",
        "127.0.0.1:1",
        free_port(),
    )
    .unwrap();
    let keys: Vec<(String, PathBuf)> = listeners
        .iter()
        .map(|(name, _)| {
            let path = dir.path().join(format!("{name}-node_key.json"));
            write_node_key(&path).unwrap();
            (name.to_string(), path)
        })
        .collect();
    let net = SimNetwork::spawn(
        net_bin(),
        std::slice::from_ref(&validator),
        &SimNetworkOptions {
            block_time: Duration::from_millis(100),
            log_file: Some(dir.path().join("network.log")),
            listeners: listeners
                .iter()
                .zip(&keys)
                .map(|((name, addr), (_, key))| ListenerOptions {
                    name: Some(name.to_string()),
                    addr: addr.to_string(),
                    node_key: Some(key.clone()),
                    rpc_addr: None,
                })
                .collect(),
            ..SimNetworkOptions::default()
        },
    )
    .unwrap();
    let home = &validator.home;
    // Fast redials (CometBFT's rules at a tenth of their waits) and matchable log lines.
    set_simchain_option(home, "p2p_time_scale", "0.1").unwrap();
    set_base_option(home, "log_no_color", "true").unwrap();
    Setup {
        dir,
        net,
        validator,
        keys,
    }
}

fn val1(record: &Record) -> &palisade_simchain::record::ValidatorRecord {
    &record.validators["val1"]
}

/// Polls the record for `duration`, failing at once when `condition` does not hold.
fn holds_for(
    net: &SimNetwork,
    duration: Duration,
    what: &str,
    condition: impl Fn(&Record) -> bool,
) {
    let end = Instant::now() + duration;
    while Instant::now() < end {
        let record = net.record().unwrap();
        assert!(condition(&record), "{what} stopped holding: {record:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// simd's `/net_info` result.
fn net_info(setup: &Setup) -> serde_json::Value {
    let (status, body) = palisade_simchain::http::request(
        &setup.validator.rpc_laddr,
        "GET",
        "/net_info",
        None,
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["result"].take()
}

#[test]
fn sentries_on_distinct_ips_give_one_session_each_and_losing_one_misses_no_block() {
    let s = setup(&[("sentry-a", "127.0.0.2:0"), ("sentry-b", "127.0.0.3:0")]);
    set_persistent_peers(
        s.home(),
        &format!("{},{}", s.peer("sentry-a"), s.peer("sentry-b")),
    )
    .unwrap();
    let _node = s.start_node();
    // Connected to both sentries at once, seen from the chain.
    let record = s
        .net
        .wait_for(WAIT, |r| {
            val1(r).connected_via == ["sentry-a", "sentry-b"] && val1(r).signed_heights >= 5
        })
        .unwrap();
    assert_eq!(val1(&record).sessions, 2);
    let node_ids: Vec<&str> = val1(&record)
        .connections
        .iter()
        .map(|c| c.listener_node_id.as_str())
        .collect();
    assert!(node_ids.contains(&s.net.listeners()[0].node_id.as_str()));
    assert!(node_ids.contains(&s.net.listeners()[1].node_id.as_str()));
    // And from the node.
    let info = net_info(&s);
    assert_eq!(info["n_peers"], "2", "{info}");
    let mut ips: Vec<String> = info["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["remote_ip"].as_str().unwrap().to_string())
        .collect();
    ips.sort();
    assert_eq!(ips, ["127.0.0.2", "127.0.0.3"]);
    assert!(info["peers"][0]["is_outbound"].as_bool().unwrap());

    // Every vote went out on both sessions; the copies are one vote, never a double sign.
    let before = s
        .net
        .wait_for(WAIT, |r| val1(r).signed_heights >= 10)
        .unwrap();
    assert!(before.double_signs.is_empty(), "{before:#?}");
    assert_eq!(before.invalid_votes, 0);

    // A sentry goes down: the other session carries on, no block is missed.
    s.net.set_listener_up("sentry-a", false).unwrap();
    let down_at = s.net.height().unwrap();
    s.net
        .wait_for(WAIT, |r| val1(r).connected_via == ["sentry-b"])
        .unwrap();
    let after = s.net.wait_for_height(down_at + 15, WAIT).unwrap();
    let record = s.net.record().unwrap();
    assert_eq!(
        record.missed_between("val1", down_at, after),
        Vec::<u64>::new(),
        "{record:#?}"
    );
    // It comes back: the node redials it and is connected through both again.
    s.net.set_listener_up("sentry-a", true).unwrap();
    s.net
        .wait_for(WAIT, |r| val1(r).connected_via == ["sentry-a", "sentry-b"])
        .unwrap();
    assert!(s.net.record().unwrap().double_signs.is_empty());
    let _ = &s.keys;
}

#[test]
fn two_sentries_on_one_ip_give_one_session_and_the_other_is_never_dialed_again() {
    // The naive tunnel setup: both forwards on 127.0.0.1, allow_duplicate_ip at its default.
    let s = setup(&[("sentry-a", "127.0.0.1:0"), ("sentry-b", "127.0.0.1:0")]);
    set_persistent_peers(
        s.home(),
        &format!("{},{}", s.peer("sentry-a"), s.peer("sentry-b")),
    )
    .unwrap();
    let node = s.start_node();
    let record = s
        .net
        .wait_for(WAIT, |r| {
            val1(r).sessions == 1 && val1(r).signed_heights >= 3
        })
        .unwrap();
    let connected = val1(&record).connected_via[0].clone();
    let other = if connected == "sentry-a" {
        "sentry-b"
    } else {
        "sentry-a"
    };
    // One session, for good: the second dial is refused (by the peer set's IP before dialing,
    // or by the transport's duplicate-IP filter) and never retried.
    holds_for(&s.net, Duration::from_secs(3), "one session", |r| {
        val1(r).sessions == 1 && val1(r).sessions_opened == 1
    });
    assert_eq!(net_info(&s)["n_peers"], "1");

    // The connected sentry goes down. CometBFT redials only that one; the other, on the same
    // IP, is never dialed again — the validator is cut off and misses blocks.
    let lines_before = node.output().len();
    s.net.set_listener_up(&connected, false).unwrap();
    let down_at = s.net.height().unwrap();
    // Taking the listener down ends its sessions as they notice; from then on, none.
    s.net
        .wait_for(WAIT, |r| {
            val1(r).sessions == 0 && val1(r).connected_via.is_empty()
        })
        .unwrap();
    holds_for(&s.net, Duration::from_secs(4), "no session", |r| {
        val1(r).sessions == 0 && val1(r).connected_via.is_empty()
    });
    let record = s.net.record().unwrap();
    assert!(
        record.missed_between("val1", down_at + 2, u64::MAX).len() >= 10,
        "{record:#?}"
    );
    node.wait_for_output("Reconnecting to peer", WAIT).unwrap();
    let dialed_other = node.output()[lines_before..].iter().any(|line| {
        line.contains("Error reconnecting to peer")
            && line.contains(
                &s.net
                    .listeners()
                    .iter()
                    .find(|l| l.name == other)
                    .unwrap()
                    .addr,
            )
    });
    assert!(!dialed_other, "{}", node.tail(40));
    // When it comes back the redial loop finds it.
    s.net.set_listener_up(&connected, true).unwrap();
    s.net
        .wait_for(WAIT, |r| val1(r).connected_via == [connected.clone()])
        .unwrap();
}

#[test]
fn allow_duplicate_ip_lets_two_sentries_on_one_ip_connect() {
    let s = setup(&[("sentry-a", "127.0.0.1:0"), ("sentry-b", "127.0.0.1:0")]);
    set_persistent_peers(
        s.home(),
        &format!("{},{}", s.peer("sentry-a"), s.peer("sentry-b")),
    )
    .unwrap();
    set_p2p_option(s.home(), "allow_duplicate_ip", "true").unwrap();
    let _node = s.start_node();
    let record = s
        .net
        .wait_for(WAIT, |r| {
            val1(r).connected_via == ["sentry-a", "sentry-b"] && val1(r).signed_heights >= 3
        })
        .unwrap();
    assert_eq!(val1(&record).sessions, 2);
    assert!(record.double_signs.is_empty());
}

#[test]
fn a_dialed_id_that_does_not_match_is_refused_and_redialed() {
    let s = setup(&[("sentry-a", "127.0.0.2:0")]);
    let listener = s.net.listeners()[0].clone();
    // Another key's ID at the sentry's address.
    let wrong = write_node_key(&s.dir.path().join("other_node_key.json")).unwrap();
    set_persistent_peers(s.home(), &format!("{wrong}@{}", listener.addr)).unwrap();
    let node = s.start_node();
    let line = node
        .wait_for_output("dialed ID", WAIT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        line.contains(&format!(
            "auth failure: conn.ID ({}) dialed ID ({wrong}) mismatch",
            listener.node_id
        )),
        "{line}"
    );
    // An auth failure is redialed (CometBFT's reconnect loop does not tell it apart), and
    // every attempt fails the same way: the node never becomes the sentry's peer.
    node.wait_for_output("Error reconnecting to peer. Trying again", WAIT)
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let record = s.net.record().unwrap();
    assert_eq!(val1(&record).signed_heights, 0, "{record:#?}");
    assert_eq!(net_info(&s)["n_peers"], "0");

    // An upper-case ID is a mismatch too: IDs compare as strings.
    let right_upper = listener.node_id.to_uppercase();
    set_persistent_peers(s.home(), &format!("{right_upper}@{}", listener.addr)).unwrap();
    drop(node);
    let node = s.start_node();
    node.wait_for_output(&format!("dialed ID ({right_upper}) mismatch"), WAIT)
        .unwrap();
}

#[test]
fn a_second_address_of_a_connected_peer_id_is_refused_as_a_duplicate() {
    // One sentry reachable at two IPs (0.0.0.0 accepts on every loopback alias): the same node
    // ID twice in persistent_peers, as one sentry behind two tunnels would be.
    let s = setup(&[("sentry-a", "0.0.0.0:0")]);
    let listener = s.net.listeners()[0].clone();
    let port = listener.addr.rsplit_once(':').unwrap().1;
    set_persistent_peers(
        s.home(),
        &format!(
            "{id}@127.0.0.2:{port},{id}@127.0.0.3:{port}",
            id = listener.node_id
        ),
    )
    .unwrap();
    let _node = s.start_node();
    s.net
        .wait_for(WAIT, |r| {
            val1(r).sessions == 1 && val1(r).signed_heights >= 3
        })
        .unwrap();
    holds_for(&s.net, Duration::from_secs(3), "one session", |r| {
        val1(r).sessions == 1 && val1(r).sessions_opened == 1
    });
}

#[test]
fn a_peer_that_comes_back_is_redialed_within_the_reconnect_interval() {
    let s = setup(&[("sentry-a", "127.0.0.2:0")]);
    set_persistent_peers(s.home(), &s.peer("sentry-a")).unwrap();
    let node = s.start_node();
    s.net
        .wait_for(WAIT, |r| {
            val1(r).sessions == 1 && val1(r).signed_heights >= 3
        })
        .unwrap();
    s.net.set_listener_up("sentry-a", false).unwrap();
    // Down long enough for a few failed attempts (every 0.5 s + 0–0.3 s at this scale).
    node.wait_for_output("Reconnecting to peer", WAIT).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let attempts = node
        .output()
        .iter()
        .filter(|l| l.contains("Error reconnecting to peer. Trying again"))
        .count();
    assert!((2..=5).contains(&attempts), "{attempts}: {}", node.tail(20));
    let opened = val1(&s.net.record().unwrap()).sessions_opened;
    s.net.set_listener_up("sentry-a", true).unwrap();
    let back = Instant::now();
    s.net
        .wait_for(WAIT, |r| {
            val1(r).sessions == 1 && val1(r).sessions_opened > opened
        })
        .unwrap();
    // The next attempt comes at most 5 s + 3 s (scaled: 0.8 s) after the last failure.
    assert!(
        back.elapsed() < Duration::from_millis(2500),
        "{:?}",
        back.elapsed()
    );
    let resumed = s.net.height().unwrap();
    s.net
        .wait_for(WAIT, |r| {
            val1(r).last_signed_height.unwrap_or(0) > resumed + 2
        })
        .unwrap();
}

#[test]
fn after_twenty_failed_redials_the_backoff_phase_begins() {
    let s = setup(&[("sentry-a", "127.0.0.2:0")]);
    set_persistent_peers(s.home(), &s.peer("sentry-a")).unwrap();
    // 5 s → 5 ms: the fixed phase takes about 0.1–0.2 s.
    set_simchain_option(s.home(), "p2p_time_scale", "0.001").unwrap();
    s.net.set_listener_up("sentry-a", false).unwrap();
    let node = s.start_node();
    let line = node
        .wait_for_output("Beginning exponential backoff", WAIT)
        .unwrap();
    assert!(line.contains("ERR"), "{line}");
    let output = node.output();
    let tries: Vec<&String> = output
        .iter()
        .filter(|l| l.contains("Error reconnecting to peer. Trying again"))
        .collect();
    // The start's own dial failed first, then the loop's attempts 0..=19.
    assert!(tries.len() >= 20, "{}", node.tail(30));
    assert!(tries[0].contains("tries=0"), "{}", tries[0]);
    assert!(tries[19].contains("tries=19"), "{}", tries[19]);
    assert!(
        output[0..]
            .iter()
            .any(|l| l.contains("Error dialing peer") && l.contains("connection refused"))
    );
}

#[test]
fn inbound_connections_pass_the_duplicate_ip_filter_too() {
    let s = setup(&[("sentry-a", "127.0.0.1:0")]);
    set_persistent_peers(s.home(), &s.peer("sentry-a")).unwrap();
    let p2p_port = free_port();
    set_p2p_option(s.home(), "laddr", &format!("\"tcp://0.0.0.0:{p2p_port}\"")).unwrap();
    let node = s.start_node();
    s.net.wait_for(WAIT, |r| val1(r).sessions == 1).unwrap();
    // From 127.0.0.1, the connected sentry's IP: filtered at once.
    let _same = std::net::TcpStream::connect(("127.0.0.1", p2p_port)).unwrap();
    let filtered = node.wait_for_output("Inbound Peer rejected", WAIT).unwrap();
    assert!(
        filtered.contains("filtered CONN<127.0.0.1:") && filtered.contains("duplicate CONN<"),
        "{filtered}"
    );
    // From another IP: it passes the filter (and, since no simulated node dials a validator,
    // fails its handshake after the timeout).
    let _other = connect_from("127.0.0.5", p2p_port);
    let line = node
        .wait_for_output("simd does not simulate inbound peers", WAIT)
        .unwrap();
    assert!(line.contains("Inbound Peer rejected"), "{line}");
    assert_eq!(
        node.output()
            .iter()
            .filter(|l| l.contains("filtered CONN<"))
            .count(),
        1
    );
}

/// A TCP connection to `127.0.0.1:port` from the loopback alias `ip`.
fn connect_from(ip: &str, port: u16) -> std::net::TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
        let stream = socket
            .connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .unwrap();
        stream.into_std().unwrap()
    })
}

#[test]
fn malformed_persistent_peers_are_refused_naming_the_file_and_key() {
    let s = setup(&[("sentry-a", "127.0.0.2:0")]);
    set_persistent_peers(s.home(), "127.0.0.2:26656").unwrap();
    let output = std::process::Command::new(simd())
        .args(["start", "--home"])
        .arg(s.home())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&s.home().join("config/config.toml").display().to_string())
            && stderr.contains(
                "could not add peers from persistent_peers field: address (127.0.0.2:26656) \
                 does not contain ID"
            ),
        "{stderr}"
    );
}
