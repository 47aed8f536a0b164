//! Failover in the real topology, in network namespaces (issue 13, `docs/failover.md`): two
//! validator hosts, three bastions each running OpenSSH sshd and one etcd member, and the
//! simulated chain behind the bastions. The validators have no route anywhere but to the
//! bastions' sshd: they reach etcd, their sentries and the chain's RPC only through local
//! forwards of their own SSH tunnels.
//!
//! ```text
//!   v1 ─┬─ 10.80.11.0/24 ── b1 ── 10.81.1.0/24 ──┐
//!       ├─ 10.80.12.0/24 ── b2 ── 10.81.2.0/24 ──┼── chain (sentry-1..3 :26600-2,
//!       └─ 10.80.13.0/24 ── b3 ── 10.81.3.0/24 ──┘          RPC :26700-2, HTTP :26680)
//!   v2 ─── 10.80.2j.0/24 ── bj  (the same three)
//!   b1 ── 10.82.12.0/24 ── b2 ── 10.82.23.0/24 ── b3 ── 10.82.13.0/24 ── b1   (etcd peers on
//!   10.83.0.j/32, routed over these links; clients on 127.0.0.1:2379 in each bastion)
//! ```
//!
//! One test: both supervisors up, v1 the primary; a planned handoff to v2 and back while a
//! bastion's sshd is down; v2's whole host stalled past its lease (v1 takes over, v2 kills its
//! node on resume); v2 cut from every bastion (etcd and chain at once): it fences itself and
//! v1 takes over; the links heal and v2 stays standby; a bastion's sshd killed, then v1's whole
//! host: v2 takes over through the other two. The chain's record
//! must show no double sign. (Both hosts vote through the same three sentries here, so the
//! chain cannot tell whose vote a height's is; `tests/failover_chaos.rs`, with one sentry per
//! host, checks that no height is signed by two hosts.) Needs root (CI runs as root).

// The topology's addresses are computed from the host and bastion indices.
#![allow(clippy::needless_range_loop)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::netns::{Link, Netns, NsProcess, NsSshd, link, require_root, ssh_keygen};
use common::timing::{LONG, MESH_BLOCK, TUNNEL};
use palisade_simchain::key::{PUB_KEY_TYPE, TypedKey};
use palisade_simchain::network::{Genesis, GenesisValidator};
use palisade_simchain::record::Record;
use palisade_simchain::testkit::ValidatorKeyInfo;

const BASTIONS: usize = 3;
const HOSTS: [&str; 2] = ["val-a", "val-b"];
const PASSPHRASE: &str = "correct horse battery staple";
const CHAIN_HTTP_PORT: u16 = 26680;
/// etcd's client port inside each bastion, and the validators' local forwards to it.
const ETCD_PORT: u16 = 2379;
const ETCD_FORWARD_BASE: u16 = 23790;
/// The chain's RPC through bastion N, forwarded locally on each validator on this port + N.
const CHAIN_RPC_FORWARD_BASE: u16 = 26750;

fn vb_ip(v: usize, b: usize, bastion_side: bool) -> String {
    format!(
        "10.80.{}{}.{}",
        v + 1,
        b + 1,
        if bastion_side { 1 } else { 2 }
    )
}
fn bc_ip(b: usize, bastion_side: bool) -> String {
    format!("10.81.{}.{}", b + 1, if bastion_side { 1 } else { 2 })
}
fn bb_ip(j: usize, k: usize, j_side: bool) -> String {
    format!("10.82.{}{}.{}", j + 1, k + 1, if j_side { 1 } else { 2 })
}
fn peer_ip(b: usize) -> String {
    format!("10.83.0.{}", b + 1)
}
fn sentry_port(b: usize) -> u16 {
    26600 + b as u16
}
fn rpc_port(b: usize) -> u16 {
    26700 + b as u16
}

/// Everything; fields drop in order: processes, links, namespaces, the directory.
struct Topology {
    supervisors: Vec<Option<common::Supervisor>>,
    _etcd: Vec<NsProcess>,
    sshd: Vec<NsSshd>,
    _network: NsProcess,
    /// [validator][bastion].
    vb_links: Vec<Vec<Link>>,
    _other_links: Vec<Link>,
    validators: Vec<Netns>,
    bastions: Vec<Netns>,
    chain: Netns,
    homes: Vec<PathBuf>,
    configs: Vec<PathBuf>,
    sockets: Vec<PathBuf>,
    _shm: Vec<tempfile::TempDir>,
    dir: tempfile::TempDir,
}

impl Topology {
    fn build() -> Topology {
        require_root();
        let dir = tempfile::tempdir().unwrap();
        let validators: Vec<Netns> = HOSTS.iter().map(|h| Netns::new(h)).collect();
        let bastions: Vec<Netns> = (0..BASTIONS)
            .map(|b| Netns::new(&format!("b{}", b + 1)))
            .collect();
        let chain = Netns::new("chain");
        let vb_links: Vec<Vec<Link>> = (0..2)
            .map(|v| {
                (0..BASTIONS)
                    .map(|b| {
                        link(
                            &validators[v],
                            &format!("{}/24", vb_ip(v, b, false)),
                            &bastions[b],
                            &format!("{}/24", vb_ip(v, b, true)),
                        )
                    })
                    .collect()
            })
            .collect();
        let mut other_links = Vec::new();
        for b in 0..BASTIONS {
            other_links.push(link(
                &bastions[b],
                &format!("{}/24", bc_ip(b, true)),
                &chain,
                &format!("{}/24", bc_ip(b, false)),
            ));
        }
        // The etcd members' peer addresses, routed over the bastion-to-bastion links.
        for b in 0..BASTIONS {
            bastions[b].ip(&["addr", "add", &format!("{}/32", peer_ip(b)), "dev", "lo"]);
        }
        for j in 0..BASTIONS {
            for k in (j + 1)..BASTIONS {
                other_links.push(link(
                    &bastions[j],
                    &format!("{}/24", bb_ip(j, k, true)),
                    &bastions[k],
                    &format!("{}/24", bb_ip(j, k, false)),
                ));
                bastions[j].ip(&[
                    "route",
                    "add",
                    &format!("{}/32", peer_ip(k)),
                    "via",
                    &bb_ip(j, k, false),
                ]);
                bastions[k].ip(&[
                    "route",
                    "add",
                    &format!("{}/32", peer_ip(j)),
                    "via",
                    &bb_ip(j, k, true),
                ]);
            }
        }

        // etcd: one member per bastion.
        let cluster = (0..BASTIONS)
            .map(|b| format!("m{}=http://{}:2380", b + 1, peer_ip(b)))
            .collect::<Vec<_>>()
            .join(",");
        let etcd = (0..BASTIONS)
            .map(|b| {
                let data = dir.path().join(format!("etcd-{}", b + 1));
                let log =
                    std::fs::File::create(dir.path().join(format!("etcd-{}.log", b + 1))).unwrap();
                let mut command = bastions[b].command(palisade_testkit::ETCD);
                command
                    .args(["--name", &format!("m{}", b + 1)])
                    .arg("--data-dir")
                    .arg(&data)
                    .args([
                        "--listen-client-urls",
                        &format!("http://127.0.0.1:{ETCD_PORT}"),
                        "--advertise-client-urls",
                        &format!("http://127.0.0.1:{ETCD_PORT}"),
                        "--listen-peer-urls",
                        &format!("http://{}:2380", peer_ip(b)),
                        "--initial-advertise-peer-urls",
                        &format!("http://{}:2380", peer_ip(b)),
                        "--initial-cluster",
                        &cluster,
                        "--initial-cluster-state",
                        "new",
                        "--initial-cluster-token",
                        "palisade-netns",
                    ])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(log);
                bastions[b].spawn(&mut command)
            })
            .collect::<Vec<_>>();

        // The chain: three sentries with known node IDs, each with its RPC.
        let validator = prepare_homes(dir.path());
        let sentry_ids: Vec<String> = (0..BASTIONS)
            .map(|b| {
                palisade_simchain::testkit::write_node_key(
                    &dir.path().join(format!("sentry-{}.node_key.json", b + 1)),
                )
                .unwrap()
            })
            .collect();
        let network = spawn_network(&chain, dir.path(), &validator);
        for b in 0..BASTIONS {
            chain.wait_reachable("127.0.0.1", sentry_port(b), TUNNEL);
        }

        // sshd on every bastion, both validators' keys, forwarding only to the bastion's
        // sentry, the chain's RPC behind it, and its etcd member.
        let keys: Vec<(PathBuf, String)> = (0..2)
            .map(|v| {
                let key = dir.path().join(format!("client-{}", v + 1));
                let public = ssh_keygen(&key);
                (key, public)
            })
            .collect();
        let sshd: Vec<NsSshd> = (0..BASTIONS)
            .map(|b| {
                let options = format!(
                    "restrict,port-forwarding,permitopen=\"{}:{}\",permitopen=\"{}:{}\",permitopen=\"127.0.0.1:{ETCD_PORT}\"",
                    bc_ip(b, false),
                    sentry_port(b),
                    bc_ip(b, false),
                    rpc_port(b)
                );
                let authorized = keys
                    .iter()
                    .map(|(_, public)| format!("{options} {public}"))
                    .collect::<Vec<_>>()
                    .join("\n");
                NsSshd::start(&bastions[b], "0.0.0.0", 22, &authorized)
            })
            .collect();
        for b in 0..BASTIONS {
            bastions[b].wait_reachable("127.0.0.1", ETCD_PORT, LONG);
        }

        // The validators' configuration.
        let mut configs = Vec::new();
        let mut sockets = Vec::new();
        let mut shms = Vec::new();
        let homes: Vec<PathBuf> = (0..2)
            .map(|v| dir.path().join(format!("v{}", v + 1)).join("home"))
            .collect();
        for v in 0..2 {
            let base = dir.path().join(format!("v{}", v + 1));
            let shm = common::private_shm_dir();
            let socket = base.join("run/supervisor.sock");
            let mut bastion_tables = String::new();
            for (b, sshd) in sshd.iter().enumerate() {
                let forwards = [
                    format!(
                        "{{ listen = \"127.0.0.1:{}\", target = \"127.0.0.1:{ETCD_PORT}\" }}",
                        ETCD_FORWARD_BASE + b as u16 + 1
                    ),
                    format!(
                        "{{ listen = \"127.0.0.1:{}\", target = \"{}:{}\" }}",
                        CHAIN_RPC_FORWARD_BASE + b as u16 + 1,
                        bc_ip(b, false),
                        rpc_port(b)
                    ),
                ];
                bastion_tables.push_str(&format!(
                    "[[bastion]]\nname = \"b{}\"\nhost = \"{}\"\nuser = \"root\"\n\
                     host-key-fingerprints = [{:?}]\n\
                     sentry = {{ node-id = {:?}, target = \"{}:{}\" }}\n\
                     local-forwards = [{}]\n",
                    b + 1,
                    vb_ip(v, b, true),
                    sshd.fingerprint(),
                    sentry_ids[b],
                    bc_ip(b, false),
                    sentry_port(b),
                    forwards.join(", "),
                ));
            }
            let endpoints = (0..BASTIONS)
                .map(|b| format!("\"http://127.0.0.1:{}\"", ETCD_FORWARD_BASE + b as u16 + 1))
                .collect::<Vec<_>>()
                .join(", ");
            let chain_rpc = (0..BASTIONS)
                .map(|b| {
                    format!(
                        "\"http://127.0.0.1:{}\"",
                        CHAIN_RPC_FORWARD_BASE + b as u16 + 1
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            let config = base.join("palisade.toml");
            std::fs::write(
                &config,
                format!(
                    "[vault]\nswap = \"warn\"\ntmpfs-dir = {:?}\nscrypt-work-factor = 10\n\
                     [backup]\ndir = {:?}\ndebounce = \"100ms\"\nchain-id = \"sim-1\"\nextra-dirs = [{:?}]\n\
                     [rpc]\nsocket = {socket:?}\nname = \"val1\"\n\
                     [tunnel]\nkey-file = {:?}\nconnect-timeout = \"3s\"\n\
                     keepalive-interval = \"500ms\"\nkeepalive-max = 2\nreconnect-max-delay = \"500ms\"\n\
                     [failover]\nhost-id = \"{}\"\npeers = [\"{}\"]\netcd-endpoints = [{endpoints}]\n\
                     chain-rpc = [{chain_rpc}]\nkey-prefix = \"/palisade/netns\"\n\
                     lease-ttl = \"3s\"\nfence-margin = \"1s\"\npoll-interval = \"200ms\"\n\
                     chain-guard-blocks = 3\n\
                     {bastion_tables}",
                    shm.path().join("keys"),
                    base.join("local-backups"),
                    dir.path().join("shared-backups"),
                    keys[v].0,
                    HOSTS[v],
                    HOSTS[1 - v],
                ),
            )
            .unwrap();
            configs.push(config);
            sockets.push(socket);
            shms.push(shm);
        }
        let topology = Topology {
            supervisors: vec![None, None],
            _etcd: etcd,
            sshd,
            _network: network,
            vb_links,
            _other_links: other_links,
            validators,
            bastions,
            chain,
            homes,
            configs,
            sockets,
            _shm: shms,
            dir,
        };
        topology.install();
        topology
    }

    fn command(&self, v: usize, in_netns: bool) -> Command {
        let mut command = if in_netns {
            self.validators[v].command(common::SUPERVISOR)
        } else {
            Command::new(common::SUPERVISOR)
        };
        common::supervisor_env(&mut command, &self.homes[v], "simd");
        command.env("PALISADE_CONFIG", &self.configs[v]);
        command
    }

    /// `init` on both homes, one vault made on v1 and copied to v2.
    fn install(&self) {
        let binary = self.dir.path().join("binaries/v1/simd");
        palisade_simchain::testkit::write_versioned_binary(&binary, &common::simd(), "v1", &[])
            .unwrap();
        for v in 0..2 {
            let output = self
                .command(v, false)
                .arg("init")
                .arg(&binary)
                .output()
                .unwrap();
            assert!(output.status.success(), "init: {output:?}");
        }
        let passphrase = self.dir.path().join("passphrase");
        std::fs::write(&passphrase, format!("{PASSPHRASE}\n")).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&passphrase, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let output = self
            .command(0, false)
            .args(["init-vault", "--passphrase-file"])
            .arg(&passphrase)
            .output()
            .unwrap();
        assert!(output.status.success(), "init-vault: {output:?}");
        std::fs::create_dir_all(self.homes[1].join("palisade")).unwrap();
        let status = Command::new("cp")
            .arg("-a")
            .arg(self.homes[0].join("palisade/vault"))
            .arg(self.homes[1].join("palisade/"))
            .status()
            .unwrap();
        assert!(status.success());
        for file in ["config/priv_validator_key.json", "config/node_key.json"] {
            let _ = std::fs::remove_file(self.homes[1].join(file));
        }
    }

    fn start(&mut self, v: usize) {
        let mut command = self.command(v, true);
        command
            .args(["run", "start", "--home"])
            .arg(&self.homes[v])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        self.supervisors[v] = Some(common::Supervisor::spawn(command));
        common::wait_for_status(&self.sockets[v], LONG, "the control socket", |_| true);
    }

    fn ctl(&self, v: usize, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        let socket = self.sockets[v].to_str().unwrap();
        let all: Vec<&str> = ["--socket", socket].iter().chain(args).copied().collect();
        common::run_ctl(self.dir.path(), &all, stdin)
    }

    fn unlock(&self, v: usize) {
        let output = self.ctl(
            v,
            &["unlock", "--passphrase-stdin"],
            Some(&format!("{PASSPHRASE}\n")),
        );
        assert!(output.status.success(), "{} unlock: {output:?}", HOSTS[v]);
    }

    fn wait_state(&self, v: usize, state: &str) -> serde_json::Value {
        common::wait_for_status(
            &self.sockets[v],
            LONG,
            &format!("{} {state}", HOSTS[v]),
            |s| s["node"]["state"] == state,
        )
    }

    fn record(&self) -> Record {
        let address = format!("127.0.0.1:{CHAIN_HTTP_PORT}");
        let (status, body) = self.chain.in_netns(|| {
            palisade_simchain::http::request(
                &address,
                "GET",
                "/record",
                None,
                Duration::from_secs(5),
            )
            .unwrap()
        });
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    fn wait_signing(&self, blocks: u64) -> u64 {
        let start = self.record().validators["val1"].signed_heights;
        let deadline = Instant::now() + LONG;
        loop {
            let record = self.record();
            let val1 = &record.validators["val1"];
            if val1.signed_heights >= start + blocks {
                return val1.last_signed_height.unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "val1 did not sign {blocks} more heights: {val1:?}\n{}",
                self.tails()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn tails(&self) -> String {
        (0..2)
            .map(|v| {
                format!(
                    "--- {}:\n{}",
                    HOSTS[v],
                    self.supervisors[v]
                        .as_ref()
                        .map(|s| common::tail(&s.output(), 40))
                        .unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn assert_safe(&self) {
        let record = self.record();
        if !record.double_signs.is_empty() {
            eprintln!(
                "record of val1: {}\nnetwork log:\n{}",
                serde_json::to_string_pretty(&record.validators["val1"]).unwrap(),
                std::fs::read_to_string(self.dir.path().join("network.log")).unwrap_or_default()
            );
            for v in 0..2 {
                if let Some(supervisor) = &self.supervisors[v] {
                    let out = supervisor.output();
                    for line in out.lines().filter(|l| {
                        l.contains("vote")
                            || l.contains("takeover")
                            || l.contains("handoff")
                            || l.contains("leadership")
                    }) {
                        eprintln!("{}: {line}", HOSTS[v]);
                    }
                }
            }
        }
        assert!(
            record.double_signs.is_empty(),
            "double signs: {:?}\n{}",
            record.double_signs,
            self.tails()
        );
    }
}

/// Home of v1 (the validator key made there) and v2 (the same key); the validator's info.
fn prepare_homes(dir: &Path) -> ValidatorKeyInfo {
    let home_a = dir.join("v1/home");
    let home_b = dir.join("v2/home");
    let validator =
        palisade_simchain::testkit::write_validator_home(&home_a, "val1", "sim-1", "", 26657)
            .unwrap();
    std::fs::create_dir_all(home_b.join("config")).unwrap();
    std::fs::copy(
        home_a.join("config/priv_validator_key.json"),
        home_b.join("config/priv_validator_key.json"),
    )
    .unwrap();
    let validator_b =
        palisade_simchain::testkit::write_validator_home(&home_b, "val1", "sim-1", "", 26657)
            .unwrap();
    assert_eq!(validator.address, validator_b.address);
    for home in [&home_a, &home_b] {
        palisade_simchain::testkit::set_simchain_option(home, "p2p_time_scale", "0.1").unwrap();
    }
    validator
}

/// simchain-net in `chain`: sentry-N on 0.0.0.0:2660(N-1) with its RPC on 2670(N-1).
fn spawn_network(chain: &Netns, dir: &Path, validator: &ValidatorKeyInfo) -> NsProcess {
    let mut command = chain.command(common::workspace_binary("simchain-net"));
    for b in 0..BASTIONS {
        let name = format!("sentry-{}", b + 1);
        command
            .args(["--listen", &format!("{name}=0.0.0.0:{}", sentry_port(b))])
            .arg("--node-key")
            .arg(dir.join(format!("{name}.node_key.json")))
            .args(["--rpc", &format!("{name}=0.0.0.0:{}", rpc_port(b))]);
    }
    let genesis = Genesis {
        chain_id: Some("sim-1".into()),
        validators: vec![GenesisValidator {
            name: validator.moniker.clone(),
            pub_key: TypedKey {
                key_type: PUB_KEY_TYPE.into(),
                value: validator.pub_key.clone(),
            },
            power: validator.power,
        }],
    };
    let path = dir.join("genesis.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&genesis).unwrap()).unwrap();
    let log = dir.join("network.log");
    command
        .args(["--http", &format!("0.0.0.0:{CHAIN_HTTP_PORT}")])
        .args(["--chain-id", "sim-1"])
        .arg("--block-time")
        .arg(format!("{}ms", MESH_BLOCK.as_millis()))
        .arg("--genesis")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut network = chain.spawn(&mut command);
    let stdout = network.child.stdout.take().unwrap();
    let mut reader = std::io::BufReader::new(stdout);
    let mut line = String::new();
    let _ = std::io::BufRead::read_line(&mut reader, &mut line);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    assert!(
        line.starts_with("simchain-net listening "),
        "simchain-net did not start (got {line:?}): {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    network
}

#[test]
fn handoff_partition_and_host_kill_through_the_bastions_never_double_sign() {
    let mut topology = Topology::build();
    topology.start(0);
    topology.start(1);
    topology.unlock(0);
    topology.wait_state(0, "running");
    topology.wait_signing(3);
    topology.unlock(1);
    topology.wait_state(1, "standby");

    // A planned handoff, v1 → v2, through the tunnels' etcd.
    let output = topology.ctl(0, &["failover", "handoff", "--to", "val-b"], None);
    assert!(
        output.status.success(),
        "handoff: {output:?}\n{}",
        topology.tails()
    );
    topology.wait_state(1, "running");
    topology.wait_signing(3);
    topology.wait_state(0, "standby");
    topology.assert_safe();

    // A handoff back, v2 → v1, with bastion 3's sshd down (one etcd member, one sentry and one
    // view of the chain gone), then the other way again once it is back.
    topology.sshd[2].kill();
    let output = topology.ctl(1, &["failover", "handoff", "--to", "val-a"], None);
    assert!(
        output.status.success(),
        "handoff back: {output:?}\n{}",
        topology.tails()
    );
    topology.wait_state(0, "running");
    topology.wait_signing(3);
    let bastion = &topology.bastions[2];
    topology.sshd[2].restart(bastion);
    let output = topology.ctl(0, &["failover", "handoff", "--to", "val-b"], None);
    assert!(
        output.status.success(),
        "handoff: {output:?}\n{}",
        topology.tails()
    );
    topology.wait_state(1, "running");
    topology.wait_signing(3);
    topology.assert_safe();

    // v2's whole host stalled (SIGSTOP) past its lease: v1 takes over; on SIGCONT (the node
    // first) v2's supervisor kills its node before it can sign again.
    let stalled = topology.supervisors[1].as_ref().unwrap().child.id();
    let node = common::status(&topology.sockets[1]).unwrap()["node"]["pid"]
        .as_u64()
        .unwrap() as u32;
    palisade_testkit::kill_tree(stalled, nix::sys::signal::Signal::SIGSTOP);
    topology.wait_state(0, "running");
    topology.wait_signing(3);
    palisade_testkit::kill_tree(stalled, nix::sys::signal::Signal::SIGCONT);
    common::wait_until(Duration::from_secs(5), "v2's node killed on resume", || {
        !common::process_alive(node)
    });
    topology.wait_state(1, "standby");
    topology.wait_signing(3);
    topology.assert_safe();

    // Back to v2 as the primary for the partition.
    let output = topology.ctl(0, &["failover", "handoff", "--to", "val-b"], None);
    assert!(
        output.status.success(),
        "handoff: {output:?}\n{}",
        topology.tails()
    );
    topology.wait_state(1, "running");
    topology.wait_signing(3);

    // v2 (the primary) cut from every bastion: no etcd, no chain. It fences itself; v1 takes
    // over.
    let cut = Instant::now();
    for link in &topology.vb_links[1] {
        link.set_down();
    }
    topology.wait_state(1, "standby");
    let fenced = cut.elapsed();
    assert!(
        fenced < Duration::from_secs(3),
        "v2 fenced after {fenced:?}"
    );
    topology.wait_state(0, "running");
    topology.wait_signing(3);
    eprintln!(
        "partition: v2 fenced after {fenced:?}; v1 signing {:?} after the cut",
        cut.elapsed()
    );
    topology.assert_safe();

    // Healed: v2 sees v1 leading and stays standby.
    for link in &topology.vb_links[1] {
        link.set_up();
    }
    common::wait_for_status(&topology.sockets[1], LONG, "v2 sees v1 leading", |s| {
        s["failover"]["leader"] == "val-a"
    });
    topology.wait_signing(3);
    assert_eq!(
        common::node_state(&topology.sockets[1]).as_deref(),
        Some("standby")
    );
    topology.assert_safe();

    // Bastion 1's sshd killed (v2's first etcd member and first view of the chain go with it),
    // then v1's whole host killed: v2 takes over through the two other bastions.
    topology.sshd[0].kill();
    topology.wait_signing(3);
    let pid = topology.supervisors[0].as_ref().unwrap().child.id();
    palisade_testkit::kill_tree(pid, nix::sys::signal::Signal::SIGKILL);
    let killed = Instant::now();
    topology.wait_state(1, "running");
    topology.wait_signing(3);
    eprintln!(
        "takeover after v1's host was killed: {:?}",
        killed.elapsed()
    );
    topology.assert_safe();
}
