//! Failover between two validator hosts, end to end (issue 13, `docs/failover.md`): two real
//! `palisade-supervisor`s sharing one vault and one backup store, each with its own simulated
//! node for the same validator key, a real 3-member etcd cluster (Debian `etcd-server`), and
//! the simulated chain, whose record says who signed what. The chain view of both hosts is a
//! sentry's CometBFT RPC.
//!
//! - a planned handoff there and back, then a forged, a tampered and a replayed handoff
//!   record, all refused;
//! - the primary's whole host killed: the standby takes over under the takeover rule;
//! - the primary cut from etcd (its etcd connections go through a proxy the test cuts) while
//!   it still reaches the chain: it fences itself, the standby takes over, and after the
//!   partition heals the old primary stays standby;
//! - the primary's whole host stopped (SIGSTOP) past its lease: on SIGCONT it kills its node
//!   before anything else, and the standby has taken over.
//!
//! Every test ends with the chain's record: zero double signs.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use palisade_simchain::testkit::{
    ListenerOptions, SimNetwork, SimNetworkOptions, free_port, write_validator_home,
    write_versioned_binary,
};
use palisade_testkit::EtcdCluster;

use common::{
    Supervisor, all_descendants, private_shm_dir, process_alive, run_ctl, simd,
    supervisor_command_for, tail, wait_for_status, workspace_binary,
};

const BLOCK: Duration = Duration::from_millis(300);
const WAIT: Duration = Duration::from_secs(60);
/// `[failover] lease-ttl` and `fence-margin` of both hosts.
const TTL_S: u64 = 3;
const MARGIN: &str = "1s";
/// `[failover] chain-guard-blocks`.
const K: u64 = 3;
const PASSPHRASE: &str = "correct horse battery staple";

/// A TCP proxy to one target that the test can cut (every connection closed, new ones
/// refused) and heal.
struct Proxy {
    addr: String,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let cut = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        let (cut2, open2) = (cut.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if cut2.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                {
                    let mut open = open2.lock().unwrap();
                    open.push(client.try_clone().unwrap());
                    open.push(server.try_clone().unwrap());
                }
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let mut buffer = [0u8; 16 * 1024];
                        while let Ok(n) = from.read(&mut buffer) {
                            if n == 0 || to.write_all(&buffer[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Proxy { addr, cut, open }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
        if cut {
            for stream in self.open.lock().unwrap().drain(..) {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }
}

/// One validator host: its node home, config, socket and supervisor.
struct Host {
    id: &'static str,
    home: PathBuf,
    config: PathBuf,
    socket: PathBuf,
    /// Its etcd connections, one proxy per member.
    etcd: Vec<Proxy>,
    supervisor: Option<Supervisor>,
    _shm: tempfile::TempDir,
}

impl Host {
    fn command(&self) -> std::process::Command {
        let mut command = supervisor_command_for(&self.home, "simd");
        command.env("PALISADE_CONFIG", &self.config);
        command
    }

    fn start(&mut self) {
        let mut command = self.command();
        command
            .args(["run", "start", "--home"])
            .arg(&self.home)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        self.supervisor = Some(Supervisor::spawn(command));
        wait_for_status(&self.socket, WAIT, "the control socket", |_| true);
    }

    fn ctl(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        let socket = self.socket.to_str().unwrap();
        let all: Vec<&str> = ["--socket", socket].iter().chain(args).copied().collect();
        run_ctl(self.home.parent().unwrap(), &all, stdin)
    }

    fn unlock(&self) {
        let output = self.ctl(
            &["unlock", "--passphrase-stdin"],
            Some(&format!("{PASSPHRASE}\n")),
        );
        assert!(output.status.success(), "{} unlock: {output:?}", self.id);
    }

    fn output(&self) -> String {
        self.supervisor
            .as_ref()
            .map(Supervisor::output)
            .unwrap_or_default()
    }

    fn wait_state(&self, state: &str) -> serde_json::Value {
        wait_for_status(&self.socket, WAIT, &format!("{} {state}", self.id), |s| {
            s["node"]["state"] == state
        })
    }

    fn failover(&self) -> serde_json::Value {
        let output = self.ctl(&["--json", "failover", "status"], None);
        assert!(
            output.status.success(),
            "{} failover status: {output:?}",
            self.id
        );
        serde_json::from_slice(&output.stdout).unwrap()
    }

    /// The supervisor and everything under it (the whole host's processes).
    fn pids(&self) -> Vec<u32> {
        let pid = self.supervisor.as_ref().unwrap().child.id();
        let mut pids = vec![pid];
        pids.extend(all_descendants(pid));
        pids
    }

    /// `signal` to every process of the host; a SIGCONT reaches the node before the
    /// supervisor (the worst order: the node runs again before its supervisor can act).
    fn signal_all(&self, signal: &str) {
        let mut pids = self.pids();
        if signal == "CONT" {
            pids.reverse();
        }
        for pid in pids {
            let _ = std::process::Command::new("kill")
                .args([&format!("-{signal}"), &pid.to_string()])
                .status();
        }
    }

    fn set_etcd_cut(&self, cut: bool) {
        for proxy in &self.etcd {
            proxy.set_cut(cut);
        }
    }
}

struct Pair {
    dir: tempfile::TempDir,
    network: SimNetwork,
    _etcd: EtcdCluster,
    a: Host,
    b: Host,
}

impl Pair {
    fn setup() -> Pair {
        let dir = tempfile::tempdir().unwrap();
        let etcd = EtcdCluster::start(3).unwrap();
        let home_a = dir.path().join("a").join("home");
        let home_b = dir.path().join("b").join("home");
        let validator = write_validator_home(&home_a, "val1", "sim-1", "", free_port()).unwrap();
        // The same validator key on host b (kept by `write_validator_home`), a node key of
        // its own.
        std::fs::create_dir_all(home_b.join("config")).unwrap();
        std::fs::copy(
            home_a.join("config/priv_validator_key.json"),
            home_b.join("config/priv_validator_key.json"),
        )
        .unwrap();
        let validator_b = write_validator_home(&home_b, "val1", "sim-1", "", free_port()).unwrap();
        assert_eq!(validator.address, validator_b.address);
        let network = SimNetwork::spawn(
            &workspace_binary("simchain-net"),
            std::slice::from_ref(&validator),
            &SimNetworkOptions {
                block_time: BLOCK,
                log_file: Some(dir.path().join("network.log")),
                listeners: vec![ListenerOptions {
                    name: Some("sentry-a".into()),
                    addr: "127.0.0.1:0".into(),
                    node_key: None,
                    rpc_addr: Some("127.0.0.1:0".into()),
                }],
                ..SimNetworkOptions::default()
            },
        )
        .unwrap();
        let chain_rpc = network.listener("sentry-a").unwrap().rpc_url().unwrap();
        let genesis = dir.path().join("binaries/v1/simd");
        write_versioned_binary(&genesis, &simd(), "v1", &[]).unwrap();
        let shared = dir.path().join("shared-backups");
        let passphrase_file = dir.path().join("passphrase");
        std::fs::write(&passphrase_file, format!("{PASSPHRASE}\n")).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&passphrase_file, std::fs::Permissions::from_mode(0o600))
                .unwrap();
        }
        let make = |id: &'static str, peer: &str, home: &Path| {
            network.attach_home(home).unwrap();
            let shm = private_shm_dir();
            let socket = home.parent().unwrap().join("run/supervisor.sock");
            let config = home.parent().unwrap().join("palisade.toml");
            let etcd_proxies: Vec<Proxy> = etcd
                .endpoints()
                .iter()
                .map(|endpoint| Proxy::start(endpoint.trim_start_matches("http://").to_string()))
                .collect();
            let endpoints: Vec<String> = etcd_proxies
                .iter()
                .map(|proxy| format!("\"http://{}\"", proxy.addr))
                .collect();
            std::fs::write(
                &config,
                format!(
                    "[vault]\nswap = \"warn\"\ntmpfs-dir = {:?}\nscrypt-work-factor = 10\n\
                     [backup]\ndebounce = \"100ms\"\nchain-id = \"sim-1\"\nextra-dirs = [{shared:?}]\n\
                     [rpc]\nsocket = {socket:?}\nname = \"val1\"\n\
                     [failover]\nhost-id = \"{id}\"\npeers = [\"{peer}\"]\n\
                     etcd-endpoints = [{}]\nchain-rpc = \"{chain_rpc}\"\n\
                     key-prefix = \"/palisade/test\"\n\
                     lease-ttl = \"{TTL_S}s\"\nfence-margin = \"{MARGIN}\"\npoll-interval = \"200ms\"\n\
                     chain-guard-blocks = {K}\nhandoff-timeout = \"30s\"\n",
                    shm.path().join("keys"),
                    endpoints.join(", "),
                ),
            )
            .unwrap();
            let host = Host {
                id,
                home: home.to_path_buf(),
                config,
                socket,
                etcd: etcd_proxies,
                supervisor: None,
                _shm: shm,
            };
            let output = host.command().arg("init").arg(&genesis).output().unwrap();
            assert!(output.status.success(), "{id} init: {output:?}");
            host
        };
        let a = make("val-a", "val-b", &home_a);
        let b = make("val-b", "val-a", &home_b);
        // One vault for both hosts: made on a, copied to b, b's plaintext keys removed as
        // init-vault removed a's.
        let output = a
            .command()
            .args(["init-vault", "--passphrase-file"])
            .arg(&passphrase_file)
            .output()
            .unwrap();
        assert!(output.status.success(), "init-vault: {output:?}");
        std::fs::create_dir_all(home_b.join("palisade")).unwrap();
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(home_a.join("palisade/vault"))
            .arg(home_b.join("palisade/"))
            .status();
        assert!(status.unwrap().success());
        for file in ["config/priv_validator_key.json", "config/node_key.json"] {
            let _ = std::fs::remove_file(home_b.join(file));
        }
        Pair {
            dir,
            network,
            _etcd: etcd,
            a,
            b,
        }
    }

    /// Both supervisors started and unlocked; a the primary, signing; b a standby.
    fn start_a_primary(&mut self) {
        self.a.start();
        self.b.start();
        self.a.unlock();
        self.a.wait_state("running");
        self.wait_signing(3);
        self.b.unlock();
        self.b.wait_state("standby");
    }

    fn wait_signing(&self, blocks: u64) -> u64 {
        let start = self.network.record().unwrap().validators["val1"].signed_heights;
        self.network
            .wait_for(WAIT, |record| {
                record.validators["val1"].signed_heights >= start + blocks
            })
            .unwrap_or_else(|error| panic!("{error}\n{}", self.tails()))
            .validators["val1"]
            .last_signed_height
            .unwrap()
    }

    fn assert_no_double_sign(&self) {
        let record = self.network.record().unwrap();
        assert!(
            record.double_signs.is_empty(),
            "double signs: {:?}\n{}",
            record.double_signs,
            self.tails()
        );
    }

    fn tails(&self) -> String {
        format!(
            "--- val-a:\n{}\n--- val-b:\n{}",
            tail(&self.a.output(), 40),
            tail(&self.b.output(), 40)
        )
    }

    fn etcd_client(&self) -> palisade_etcd::Client {
        palisade_etcd::Client::new(self._etcd.endpoints(), Default::default()).unwrap()
    }
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

#[test]
fn planned_handoff_there_and_back_then_forged_tampered_and_replayed_records_are_refused() {
    let mut pair = Pair::setup();
    pair.start_a_primary();
    let status = pair.a.failover();
    assert_eq!(status["role"], "primary", "{status}");
    assert_eq!(status["leader"], "val-a", "{status}");
    let first_token = status["token"].as_i64().unwrap();
    assert_eq!(pair.b.failover()["role"], "standby");
    assert_eq!(pair.b.failover()["leader"], "val-a");

    // Refusals change nothing: on the standby, to an unknown host.
    let output = pair.b.ctl(&["failover", "handoff", "--to", "val-a"], None);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("not the primary"),
        "{output:?}"
    );
    let output = pair.a.ctl(&["failover", "handoff", "--to", "val-z"], None);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("not one of this validator's hosts"),
        "{output:?}"
    );

    // a → b.
    let before = pair.network.height().unwrap();
    let asked = Instant::now();
    let output = pair
        .a
        .ctl(&["--json", "failover", "handoff", "--to", "val-b"], None);
    assert!(
        output.status.success(),
        "handoff: {output:?}\n{}",
        pair.tails()
    );
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answer["to"], "val-b", "{answer}");
    assert_eq!(answer["node"], "standby", "{answer}");
    assert_eq!(answer["token"], first_token, "{answer}");
    pair.b.wait_state("running");
    let record_a_to_b = block_on(pair.etcd_client().get("/palisade/test/handoff"))
        .unwrap()
        .kv
        .unwrap()
        .value;
    let first_vote = pair.wait_signing(1);
    let took = asked.elapsed();
    let missed = pair
        .network
        .record()
        .unwrap()
        .missed_between("val1", before, first_vote);
    eprintln!(
        "handoff a→b: first vote at {first_vote} ({} blocks after the command at {before}), {took:?}, missed {missed:?}",
        first_vote - before
    );
    assert!(missed.len() <= 4, "missed {missed:?}");
    assert_eq!(pair.a.failover()["role"], "standby");
    assert_eq!(pair.a.failover()["leader"], "val-b");
    assert!(
        pair.b.output().contains("by a verified handoff from val-a"),
        "{}",
        pair.tails()
    );
    // The record went to the store too.
    let in_store = std::fs::read_dir(pair.dir.path().join("shared-backups"))
        .unwrap()
        .filter_map(Result::ok)
        .any(|entry| entry.file_name().to_string_lossy().starts_with("handoff-"));
    assert!(in_store, "no handoff record in the shared store");

    // b → a.
    let output = pair.b.ctl(&["failover", "handoff", "--to", "val-a"], None);
    assert!(
        output.status.success(),
        "handoff back: {output:?}\n{}",
        pair.tails()
    );
    pair.a.wait_state("running");
    pair.wait_signing(2);
    let token_a = pair.a.failover()["token"].as_i64().unwrap();
    assert!(token_a > first_token);
    pair.assert_no_double_sign();

    // Automatic takeover paused, a's whole host killed: b stays standby.
    let output = pair.b.ctl(&["failover", "pause"], None);
    assert!(output.status.success(), "pause: {output:?}");
    pair.a.signal_all("KILL");
    let a_last = pair.network.record().unwrap().validators["val1"]
        .last_signed_height
        .unwrap();
    let client = pair.etcd_client();
    block_on(async {
        let deadline = Instant::now() + WAIT;
        while client
            .get("/palisade/test/leader")
            .await
            .unwrap()
            .kv
            .is_some()
        {
            assert!(Instant::now() < deadline, "a's lease never expired");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let note = wait_for_status(&pair.b.socket, WAIT, "b's paused note", |s| {
        s["failover"]["note"]
            .as_str()
            .is_some_and(|note| note.contains("paused"))
    });
    assert_eq!(note["node"]["state"], "standby");

    // A replayed genuine record (it names b, but hands over token 1 of a, not the last seen).
    block_on(client.put("/palisade/test/handoff", &record_a_to_b, None)).unwrap();
    // A tampered one: the token changed to the current one (its signature no longer holds).
    let text = String::from_utf8(record_a_to_b.clone()).unwrap();
    let tampered = text.replacen(
        &format!("\"from_token\":{first_token}"),
        &format!("\"from_token\":{token_a}"),
        1,
    );
    assert_ne!(tampered, text);
    // A forged one: well formed, signed with another key.
    let forged = {
        let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let record: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut inner = record["record"].clone();
        inner["from_token"] = token_a.into();
        let mut signed = b"palisade handoff record v1\n".to_vec();
        signed.extend(serde_json::to_vec(&inner).unwrap());
        use base64::Engine;
        use ed25519_dalek::Signer;
        let signature =
            base64::engine::general_purpose::STANDARD.encode(key.sign(&signed).to_bytes());
        serde_json::to_vec(&serde_json::json!({"record": inner, "signature": signature})).unwrap()
    };
    for (what, bytes, words) in [
        ("replayed", record_a_to_b.clone(), "replayed or stale"),
        ("tampered", tampered.into_bytes(), "does not verify"),
        ("forged", forged, "does not verify"),
    ] {
        block_on(client.put("/palisade/test/handoff", &bytes, None)).unwrap();
        let seen = Instant::now();
        while Instant::now() < seen + Duration::from_secs(3) {
            assert_eq!(
                common::node_state(&pair.b.socket).as_deref(),
                Some("standby"),
                "{what} record: b left standby\n{}",
                pair.tails()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            pair.b.output().contains(words),
            "{what}: {words:?}\n{}",
            pair.tails()
        );
    }
    assert!(
        pair.network.record().unwrap().validators["val1"]
            .last_signed_height
            .unwrap()
            <= a_last + 1,
        "someone signed while b should have waited"
    );

    // Resumed: b takes over under the takeover rule (not by any of those records).
    let output = pair.b.ctl(&["failover", "resume"], None);
    assert!(output.status.success(), "resume: {output:?}");
    pair.b.wait_state("running");
    pair.wait_signing(2);
    assert!(pair.b.output().contains("chain guard"), "{}", pair.tails());
    pair.assert_no_double_sign();
}

#[test]
fn the_primary_cut_from_etcd_fences_itself_the_standby_takes_over_and_the_old_primary_stays_standby()
 {
    let mut pair = Pair::setup();
    pair.start_a_primary();
    let a_node = pair.a.failover();
    assert_eq!(a_node["role"], "primary");
    let pid_a = common::status(&pair.a.socket).unwrap()["node"]["pid"]
        .as_u64()
        .unwrap() as u32;

    // a loses etcd but still reaches the chain (its node keeps its peers).
    let cut_at = Instant::now();
    pair.a.set_etcd_cut(true);
    pair.a.wait_state("standby");
    let fenced = cut_at.elapsed();
    assert!(!process_alive(pid_a), "a's node still runs after the fence");
    assert!(
        fenced < Duration::from_secs(TTL_S),
        "a fenced itself after {fenced:?}, not before its lease could expire ({TTL_S}s)"
    );
    assert!(pair.a.output().contains("fencing"), "{}", pair.tails());

    pair.b.wait_state("running");
    pair.wait_signing(3);
    pair.assert_no_double_sign();

    // The partition heals: a sees b's leadership and stays standby.
    pair.a.set_etcd_cut(false);
    let healed = wait_for_status(&pair.a.socket, WAIT, "a sees b leading", |s| {
        s["failover"]["leader"] == "val-b"
    });
    assert_eq!(healed["node"]["state"], "standby");
    pair.wait_signing(3);
    assert_eq!(
        common::node_state(&pair.a.socket).as_deref(),
        Some("standby")
    );
    pair.assert_no_double_sign();
}

#[test]
fn stalled_and_killed_primaries_are_replaced_and_a_resumed_one_kills_its_node_at_once() {
    let mut pair = Pair::setup();
    pair.start_a_primary();

    // a's supervisor alone stalls past its lease; its node goes on signing. b takes the
    // lease, but the chain guard sees the key at work and b does not start.
    let node_a = common::status(&pair.a.socket).unwrap()["node"]["pid"]
        .as_u64()
        .unwrap() as u32;
    let supervisor_a = pair.a.supervisor.as_ref().unwrap().child.id();
    let stop = |pid: u32, signal: &str| {
        std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .unwrap();
    };
    stop(supervisor_a, "STOP");
    let guarded = wait_for_status(
        &pair.b.socket,
        WAIT,
        "b held back by the chain guard",
        |s| {
            s["failover"]["note"]
                .as_str()
                .is_some_and(|note| note.contains("signed at heights"))
        },
    );
    assert_ne!(guarded["node"]["state"], "running", "{guarded}");
    assert_eq!(guarded["failover"]["leader"], "val-b", "{guarded}");
    let signing = pair.wait_signing(3);
    assert_ne!(
        common::node_state(&pair.b.socket).as_deref(),
        Some("running"),
        "b started while a's node was signing (height {signing})\n{}",
        pair.tails()
    );
    // Resumed: a's supervisor kills its node at once (its deadline passed long ago).
    assert!(process_alive(node_a), "a's node died on its own");
    stop(supervisor_a, "CONT");
    let resumed = Instant::now();
    common::wait_until(Duration::from_secs(5), "a's node killed on resume", || {
        !process_alive(node_a)
    });
    eprintln!(
        "a's node killed {:?} after its supervisor resumed",
        resumed.elapsed()
    );
    pair.a.wait_state("standby");
    pair.b.wait_state("running");
    pair.wait_signing(2);
    pair.assert_no_double_sign();

    // b's whole host (supervisor and node) stopped past the lease: a takes over; on
    // SIGCONT, b's supervisor kills its node before it can sign.
    let node_b = common::status(&pair.b.socket).unwrap()["node"]["pid"]
        .as_u64()
        .unwrap() as u32;
    pair.b.signal_all("STOP");
    let stopped_at = Instant::now();
    pair.a.wait_state("running");
    eprintln!("takeover after a stalled host: {:?}", stopped_at.elapsed());
    pair.wait_signing(2);
    assert!(process_alive(node_b), "b's node died on its own");
    pair.b.signal_all("CONT");
    let resumed = Instant::now();
    common::wait_until(Duration::from_secs(5), "b's node killed on resume", || {
        !process_alive(node_b)
    });
    eprintln!("b's node killed {:?} after SIGCONT", resumed.elapsed());
    pair.b.wait_state("standby");
    pair.wait_signing(3);
    pair.assert_no_double_sign();

    // a's whole host killed: b takes over.
    pair.a.signal_all("KILL");
    let killed = Instant::now();
    pair.b.wait_state("running");
    pair.wait_signing(2);
    eprintln!("takeover after a killed host: {:?}", killed.elapsed());
    pair.assert_no_double_sign();
}
