//! The multi-host topology the validator runs in, built from network namespaces (see
//! `common/netns.rs`), and a test proving it isolates the validator:
//!
//! ```text
//!            10.77.1.0/24                 10.77.3.0/24
//!   val ─── 10.77.1.2 ↔ 10.77.1.1 ─── ba ─── 10.77.3.1 ↔ 10.77.3.2 ───┐
//!    │                                (sshd :22)                      chain (simchain-net
//!    └──── 10.77.2.2 ↔ 10.77.2.1 ─── bb ─── 10.77.4.1 ↔ 10.77.4.2 ───┘  :26600, HTTP :26680)
//!            10.77.2.0/24                 10.77.4.0/24
//! ```
//!
//! `val` (validator host) reaches only the two bastions' sshd; only the bastions reach the
//! chain. No default routes, no IP forwarding. Needs root (CI runs as root); fails otherwise.
//!
//! [`Mesh::build`] is the reusable part: multi-host tests (the supervisor in `val` with
//! tunnels through both bastions) start from it.

#![allow(dead_code)] // `Mesh` is the base for the multi-host tests; not all of it is used here.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::netns::{Link, Netns, NsProcess, NsSshd, link, require_root, run_ok, ssh_keygen};
use palisade_simchain::key::{PUB_KEY_TYPE, TypedKey};
use palisade_simchain::network::{Genesis, GenesisValidator};
use palisade_simchain::record::Record;
use palisade_simchain::testkit::{SimNetworkOptions, ValidatorKeyInfo};

/// val's end of the val↔ba link.
pub const VAL_BA_IP: &str = "10.77.1.2";
/// ba's end of the val↔ba link, where ba's sshd listens.
pub const BA_IP: &str = "10.77.1.1";
/// val's end of the val↔bb link.
pub const VAL_BB_IP: &str = "10.77.2.2";
/// bb's end of the val↔bb link, where bb's sshd listens.
pub const BB_IP: &str = "10.77.2.1";
/// ba's end of the ba↔chain link.
pub const BA_CHAIN_SIDE_IP: &str = "10.77.3.1";
/// The chain as ba sees it.
pub const CHAIN_VIA_BA_IP: &str = "10.77.3.2";
/// bb's end of the bb↔chain link.
pub const BB_CHAIN_SIDE_IP: &str = "10.77.4.1";
/// The chain as bb sees it.
pub const CHAIN_VIA_BB_IP: &str = "10.77.4.2";
/// sshd port on both bastions.
pub const SSH_PORT: u16 = 22;
/// simchain-net's node port (listening on 0.0.0.0 in `chain`).
pub const CHAIN_NODE_PORT: u16 = 26600;
/// simchain-net's HTTP port (listening on 0.0.0.0 in `chain`).
pub const CHAIN_HTTP_PORT: u16 = 26680;

const WAIT: Duration = Duration::from_secs(15);

/// What to run in the mesh.
#[derive(Debug, Clone)]
pub struct MeshOptions {
    /// External validators in simchain-net's genesis (none: internal validators only).
    pub validators: Vec<ValidatorKeyInfo>,
    /// simchain-net settings (chain ID, block time, internal validators, upgrades, record
    /// file). `log_file` defaults to `network.log` in the mesh directory.
    pub network: SimNetworkOptions,
    /// authorized_keys options for the client key on ba (the key itself is appended).
    pub ba_key_options: String,
    /// authorized_keys options for the client key on bb.
    pub bb_key_options: String,
    /// Extra sshd_config lines for both bastions (they override the defaults).
    pub sshd_extra_config: String,
}

impl Default for MeshOptions {
    fn default() -> Self {
        Self {
            validators: Vec::new(),
            network: SimNetworkOptions {
                block_time: Duration::from_millis(200),
                ..SimNetworkOptions::default()
            },
            ba_key_options: format!(
                "restrict,port-forwarding,permitopen=\"{CHAIN_VIA_BA_IP}:{CHAIN_NODE_PORT}\""
            ),
            bb_key_options: format!(
                "restrict,port-forwarding,permitopen=\"{CHAIN_VIA_BB_IP}:{CHAIN_NODE_PORT}\""
            ),
            sshd_extra_config: String::new(),
        }
    }
}

/// The running topology. Fields drop in order: processes, then links, then namespaces (each
/// killing whatever still runs inside), then the directory.
pub struct Mesh {
    /// simchain-net, running in `chain`.
    pub network: NsProcess,
    /// sshd in `ba` on 10.77.1.1:22.
    pub sshd_ba: NsSshd,
    /// sshd in `bb` on 10.77.2.1:22.
    pub sshd_bb: NsSshd,
    /// val (10.77.1.2) ↔ ba (10.77.1.1).
    pub val_ba: Link,
    /// val (10.77.2.2) ↔ bb (10.77.2.1).
    pub val_bb: Link,
    /// ba (10.77.3.1) ↔ chain (10.77.3.2).
    pub ba_chain: Link,
    /// bb (10.77.4.1) ↔ chain (10.77.4.2).
    pub bb_chain: Link,
    /// The validator host.
    pub val: Netns,
    /// Bastion A.
    pub ba: Netns,
    /// Bastion B.
    pub bb: Netns,
    /// Where the chain runs.
    pub chain: Netns,
    /// Private key authorized on both bastions (public key: `client_ed25519.pub`).
    pub client_key: PathBuf,
    /// Its public key line.
    pub client_public_key: String,
    /// Scratch directory (keys, genesis, network log, known_hosts).
    pub dir: tempfile::TempDir,
}

impl Mesh {
    /// Builds the namespaces and links, starts sshd on both bastions and simchain-net in
    /// `chain`, and waits until all of them listen. A panic half-way cleans up what exists.
    pub fn build(options: &MeshOptions) -> Mesh {
        require_root();
        let dir = tempfile::tempdir().unwrap();
        let val = Netns::new("val");
        let ba = Netns::new("ba");
        let bb = Netns::new("bb");
        let chain = Netns::new("chain");
        let val_ba = link(
            &val,
            &format!("{VAL_BA_IP}/24"),
            &ba,
            &format!("{BA_IP}/24"),
        );
        let val_bb = link(
            &val,
            &format!("{VAL_BB_IP}/24"),
            &bb,
            &format!("{BB_IP}/24"),
        );
        let ba_chain = link(
            &ba,
            &format!("{BA_CHAIN_SIDE_IP}/24"),
            &chain,
            &format!("{CHAIN_VIA_BA_IP}/24"),
        );
        let bb_chain = link(
            &bb,
            &format!("{BB_CHAIN_SIDE_IP}/24"),
            &chain,
            &format!("{CHAIN_VIA_BB_IP}/24"),
        );

        let client_key = dir.path().join("client_ed25519");
        let client_public_key = ssh_keygen(&client_key);
        let sshd_ba = NsSshd::start_with(
            &ba,
            BA_IP,
            SSH_PORT,
            &format!("{} {client_public_key}", options.ba_key_options),
            &options.sshd_extra_config,
        );
        let sshd_bb = NsSshd::start_with(
            &bb,
            BB_IP,
            SSH_PORT,
            &format!("{} {client_public_key}", options.bb_key_options),
            &options.sshd_extra_config,
        );
        std::fs::write(
            dir.path().join("known_hosts"),
            format!(
                "{}\n{}\n",
                sshd_ba.known_hosts_line(),
                sshd_bb.known_hosts_line()
            ),
        )
        .unwrap();

        let network = spawn_network(&chain, dir.path(), options);
        chain.wait_reachable("127.0.0.1", CHAIN_NODE_PORT, WAIT);
        Mesh {
            network,
            sshd_ba,
            sshd_bb,
            val_ba,
            val_bb,
            ba_chain,
            bb_chain,
            val,
            ba,
            bb,
            chain,
            client_key,
            client_public_key,
            dir,
        }
    }

    /// The sshd listening on `bastion_ip` ([`BA_IP`] or [`BB_IP`]).
    pub fn sshd(&self, bastion_ip: &str) -> &NsSshd {
        match bastion_ip {
            BA_IP => &self.sshd_ba,
            BB_IP => &self.sshd_bb,
            other => panic!("no bastion at {other}"),
        }
    }

    /// A known_hosts file holding both bastions' host keys.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// Names of the four namespaces.
    pub fn namespace_names(&self) -> Vec<String> {
        [&self.val, &self.ba, &self.bb, &self.chain]
            .iter()
            .map(|n| n.name().to_string())
            .collect()
    }

    /// OpenSSH's `ssh` client inside `val`, logging in to `bastion_ip` with the mesh's client
    /// key and host keys pinned through [`Mesh::known_hosts`]; add `-W`/`-L`/… and a command.
    pub fn ssh_from_val(&self, bastion_ip: &str) -> Command {
        let mut command = self.val.command("ssh");
        command
            .arg("-i")
            .arg(&self.client_key)
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                self.known_hosts().display()
            ))
            .args([
                "-o",
                "GlobalKnownHostsFile=/dev/null",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=5",
                "-l",
                "root",
                "-p",
                &SSH_PORT.to_string(),
            ]);
        command.arg(bastion_ip);
        command
    }

    /// simchain-net's record, fetched from inside `chain` (the test process cannot reach it).
    pub fn record(&self) -> Record {
        let body = self.chain_http("/record");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("bad /record ({e}): {body}"))
    }

    /// The chain's latest committed height.
    pub fn height(&self) -> u64 {
        let body = self.chain_http("/status");
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        value["height"].as_u64().unwrap()
    }

    /// Polls the record until `condition` holds.
    pub fn wait_for(
        &self,
        timeout: Duration,
        mut condition: impl FnMut(&Record) -> bool,
    ) -> Record {
        let deadline = Instant::now() + timeout;
        loop {
            let record = self.record();
            if condition(&record) {
                return record;
            }
            assert!(
                Instant::now() < deadline,
                "condition not met within {timeout:?}; last record: {record:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn chain_http(&self, path: &str) -> String {
        let address = format!("127.0.0.1:{CHAIN_HTTP_PORT}");
        let (status, body) = self.chain.in_netns(|| {
            palisade_simchain::http::request(&address, "GET", path, None, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("GET {path} in chain: {e}"))
        });
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }
}

/// simchain-net in `chain` on 0.0.0.0:26600 (nodes) and 0.0.0.0:26680 (HTTP).
fn spawn_network(chain: &Netns, dir: &std::path::Path, options: &MeshOptions) -> NsProcess {
    let settings = &options.network;
    let mut command = chain.command(common::workspace_binary("simchain-net"));
    command
        .args(["--listen", &format!("0.0.0.0:{CHAIN_NODE_PORT}")])
        .args(["--http", &format!("0.0.0.0:{CHAIN_HTTP_PORT}")])
        .args(["--chain-id", &settings.chain_id])
        .arg("--block-time")
        .arg(format!("{}ms", settings.block_time.as_millis()))
        .arg("--internal-validators")
        .arg(settings.internal_validators.to_string())
        .arg("--internal-power")
        .arg(settings.internal_power.to_string());
    if !options.validators.is_empty() {
        let genesis = Genesis {
            chain_id: Some(settings.chain_id.clone()),
            validators: options
                .validators
                .iter()
                .map(|v| GenesisValidator {
                    name: v.moniker.clone(),
                    pub_key: TypedKey {
                        key_type: PUB_KEY_TYPE.into(),
                        value: v.pub_key.clone(),
                    },
                    power: v.power,
                })
                .collect(),
        };
        let path = dir.join("genesis.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&genesis).unwrap()).unwrap();
        command.arg("--genesis").arg(path);
    }
    for plan in &settings.upgrades {
        command
            .arg("--upgrade")
            .arg(format!("{}:{}:{}", plan.name, plan.height, plan.info));
    }
    if let Some(record) = &settings.record_file {
        command.arg("--record").arg(record);
    }
    let log = settings
        .log_file
        .clone()
        .unwrap_or_else(|| dir.join("network.log"));
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut network = chain.spawn(&mut command);
    let stdout = network.child.stdout.take().unwrap();
    let mut reader = std::io::BufReader::new(stdout);
    let mut line = String::new();
    let _ = std::io::BufRead::read_line(&mut reader, &mut line);
    // Keep draining stdout so the network can never block on it.
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    assert!(
        line.starts_with("simchain-net listening "),
        "simchain-net did not start in chain (got {line:?}): {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    network
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn netns_list() -> String {
    run_ok(Command::new("ip").args(["netns", "list"]))
}

#[test]
fn topology_isolates_the_validator() {
    require_root();
    let mesh = Mesh::build(&MeshOptions::default());

    // The validator host reaches both bastions' sshd …
    mesh.val.assert_reachable(BA_IP, SSH_PORT);
    mesh.val.assert_reachable(BB_IP, SSH_PORT);
    // … and not the chain, on either side: it has no route there and no default route.
    for ip in [CHAIN_VIA_BA_IP, CHAIN_VIA_BB_IP] {
        mesh.val.assert_unreachable(ip, CHAIN_NODE_PORT);
    }
    let routes = mesh.val.ip(&["route", "show"]);
    assert!(!routes.contains("default"), "{routes}");
    // Even a route through a bastion does not help: bastions do not forward.
    for ns in [&mesh.ba, &mesh.bb] {
        let forwarding = ns.run("cat", &["/proc/sys/net/ipv4/ip_forward"]);
        assert_eq!(forwarding.trim(), "0", "forwarding in {}", ns.label());
    }
    mesh.val.ip(&["route", "add", "10.77.3.0/24", "via", BA_IP]);
    let through_ba = mesh.val.probe(CHAIN_VIA_BA_IP, CHAIN_NODE_PORT);
    mesh.val.ip(&["route", "del", "10.77.3.0/24"]);
    // The SYN reaches ba, which drops it: a timeout, not "unreachable".
    assert!(
        through_ba
            .as_ref()
            .is_err_and(|why| why.contains("timed out")),
        "ba forwarded val's packets to the chain: {through_ba:?}"
    );

    // Each bastion reaches the chain on its own link only.
    mesh.ba.assert_reachable(CHAIN_VIA_BA_IP, CHAIN_NODE_PORT);
    mesh.bb.assert_reachable(CHAIN_VIA_BB_IP, CHAIN_NODE_PORT);
    mesh.ba.assert_unreachable(CHAIN_VIA_BB_IP, CHAIN_NODE_PORT);
    mesh.ba.assert_unreachable(VAL_BB_IP, SSH_PORT);
    // The chain commits blocks (queried from inside `chain`).
    let height = mesh.height();
    mesh.wait_for(WAIT, |record| record.height > height);

    // The only way from val to the chain: SSH to a bastion (host key pinned through the
    // known_hosts lines), inside what its authorized_keys line permits.
    for (bastion, chain_ip) in [(BA_IP, CHAIN_VIA_BA_IP), (BB_IP, CHAIN_VIA_BB_IP)] {
        let allowed = mesh
            .ssh_from_val(bastion)
            .args(["-W", &format!("{chain_ip}:{CHAIN_NODE_PORT}")])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            allowed.status.success(),
            "ssh -W via {bastion}: {allowed:?}\nsshd log:\n{}",
            mesh.sshd(bastion).log()
        );
        let refused = mesh
            .ssh_from_val(bastion)
            .args(["-W", &format!("{chain_ip}:{CHAIN_HTTP_PORT}")])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!refused.status.success(), "outside permitopen: {refused:?}");
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("administratively prohibited"),
            "{refused:?}"
        );
    }

    // Cutting val↔ba isolates ba only; restoring it brings it back.
    mesh.val_ba.set_down();
    mesh.val.assert_unreachable(BA_IP, SSH_PORT);
    mesh.val.assert_reachable(BB_IP, SSH_PORT);
    mesh.val_ba.set_up();
    mesh.val
        .wait_reachable(BA_IP, SSH_PORT, Duration::from_secs(5));
    mesh.val.assert_reachable(BA_IP, SSH_PORT);

    // Dropping the mesh kills everything in it and deletes every namespace.
    let names = mesh.namespace_names();
    let pids: Vec<u32> = [&mesh.val, &mesh.ba, &mesh.bb, &mesh.chain]
        .iter()
        .flat_map(|ns| ns.pids())
        .collect();
    assert!(pids.len() >= 3, "sshd ×2 and simchain-net: {pids:?}");
    drop(mesh);
    let listed = netns_list();
    for name in &names {
        assert!(
            !listed.contains(name.as_str()),
            "{name} left behind: {listed}"
        );
    }
    for pid in pids {
        assert!(!pid_alive(pid), "process {pid} outlived its namespace");
    }

    // A panicking test leaves nothing behind either.
    let created = Mutex::new(Vec::new());
    let outcome = std::panic::catch_unwind(|| {
        let a = Netns::new("panic-a");
        let b = Netns::new("panic-b");
        let _link = link(&a, "10.77.9.1/24", &b, "10.77.9.2/24");
        let sleeper = a.spawn(a.command("sleep").arg("600"));
        created
            .lock()
            .unwrap()
            .extend([a.name().to_string(), b.name().to_string()]);
        created.lock().unwrap().push(sleeper.pid().to_string());
        std::mem::forget(sleeper); // only the namespace's Drop can kill it now
        panic!("deliberate panic to exercise cleanup");
    });
    assert!(outcome.is_err());
    let created = created.into_inner().unwrap();
    let listed = netns_list();
    for name in &created[..2] {
        assert!(
            !listed.contains(name.as_str()),
            "{name} left behind: {listed}"
        );
    }
    let sleeper: u32 = created[2].parse().unwrap();
    assert!(
        !pid_alive(sleeper) || is_zombie(sleeper),
        "sleep {sleeper} survived"
    );
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}
