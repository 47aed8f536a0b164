//! The multi-host topology the validator runs in, built from network namespaces (see
//! `common/netns.rs`), and a test proving it isolates the validator:
//!
//! ```text
//!            10.77.1.0/24                 10.77.3.0/24
//!   val ─── 10.77.1.2 ↔ 10.77.1.1 ─── ba ─── 10.77.3.1 ↔ 10.77.3.2 ───┐  chain (simchain-net:
//!    │                                (sshd :22)                      sentry-a :26600,
//!    └──── 10.77.2.2 ↔ 10.77.2.1 ─── bb ─── 10.77.4.1 ↔ 10.77.4.2 ───┘  sentry-b :26601,
//!            10.77.2.0/24                 10.77.4.0/24                   HTTP :26680)
//! ```
//!
//! `val` (validator host) reaches only the two bastions' sshd; only the bastions reach the
//! chain. No default routes, no IP forwarding. Needs root (CI runs as root); fails otherwise.
//! The chain listens as two sentries with node IDs of their own: sentry-a is the node behind
//! ba, sentry-b the one behind bb (each bastion may forward only to its own).
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
use common::timing::{LONG, MESH_BLOCK, TUNNEL};
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
/// simchain-net's listener `sentry-a`, the sentry behind ba (on 0.0.0.0 in `chain`).
pub const SENTRY_A_PORT: u16 = 26600;
/// simchain-net's listener `sentry-b`, the sentry behind bb (on 0.0.0.0 in `chain`).
pub const SENTRY_B_PORT: u16 = 26601;
/// The listeners' names, as the chain's record shows them in `connected_via`.
pub const SENTRY_NAMES: [&str; 2] = ["sentry-a", "sentry-b"];
/// simchain-net's HTTP port (listening on 0.0.0.0 in `chain`).
pub const CHAIN_HTTP_PORT: u16 = 26680;

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
    /// ba's sshd listens on every address (0.0.0.0), as a cloud instance does on the public
    /// addresses its provider routes to it: the Elastic IP test moves ba's address.
    pub ba_listens_anywhere: bool,
}

impl Default for MeshOptions {
    fn default() -> Self {
        Self {
            validators: Vec::new(),
            network: SimNetworkOptions {
                block_time: MESH_BLOCK,
                ..SimNetworkOptions::default()
            },
            ba_key_options: format!(
                "restrict,port-forwarding,permitopen=\"{CHAIN_VIA_BA_IP}:{SENTRY_A_PORT}\""
            ),
            bb_key_options: format!(
                "restrict,port-forwarding,permitopen=\"{CHAIN_VIA_BB_IP}:{SENTRY_B_PORT}\""
            ),
            sshd_extra_config: String::new(),
            ba_listens_anywhere: false,
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
    /// The node IDs of sentry-a and sentry-b (their `node_key.json`s are in the directory).
    pub sentry_ids: [String; 2],
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
            if options.ba_listens_anywhere {
                "0.0.0.0"
            } else {
                BA_IP
            },
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
                "{BA_IP} {}\n{}\n",
                sshd_ba.host_public_key(),
                sshd_bb.known_hosts_line()
            ),
        )
        .unwrap();

        let sentry_ids = SENTRY_NAMES.map(|name| {
            palisade_simchain::testkit::write_node_key(&sentry_key(dir.path(), name)).unwrap()
        });
        let network = spawn_network(&chain, dir.path(), options);
        chain.wait_reachable("127.0.0.1", SENTRY_A_PORT, TUNNEL);
        chain.wait_reachable("127.0.0.1", SENTRY_B_PORT, TUNNEL);
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
            sentry_ids,
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

/// Where a sentry's `node_key.json` is kept in the mesh's directory.
fn sentry_key(dir: &std::path::Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.node_key.json"))
}

/// simchain-net in `chain`: sentry-a on 0.0.0.0:26600 and sentry-b on 0.0.0.0:26601 (with
/// the node keys [`Mesh::build`] wrote), HTTP on 0.0.0.0:26680.
fn spawn_network(chain: &Netns, dir: &std::path::Path, options: &MeshOptions) -> NsProcess {
    let settings = &options.network;
    let mut command = chain.command(common::workspace_binary("simchain-net"));
    for (name, port) in SENTRY_NAMES.iter().zip([SENTRY_A_PORT, SENTRY_B_PORT]) {
        command
            .args(["--listen", &format!("{name}=0.0.0.0:{port}")])
            .arg("--node-key")
            .arg(sentry_key(dir, name));
    }
    command
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

/// Whether `pid` still runs a few seconds after its namespace was torn
/// down: a zombie (dead, not yet reaped — e.g. an orphan whose new parent
/// is a container's init) counts as gone.
fn pid_alive(pid: u32) -> bool {
    let running = || {
        std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|status| {
            !status
                .lines()
                .any(|line| line.starts_with("State:") && line.contains('Z'))
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while running() {
        if std::time::Instant::now() >= deadline {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
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
    for (ip, port) in [
        (CHAIN_VIA_BA_IP, SENTRY_A_PORT),
        (CHAIN_VIA_BB_IP, SENTRY_B_PORT),
    ] {
        mesh.val.assert_unreachable(ip, port);
    }
    let routes = mesh.val.ip(&["route", "show"]);
    assert!(!routes.contains("default"), "{routes}");
    // Even a route through a bastion does not help: bastions do not forward.
    for ns in [&mesh.ba, &mesh.bb] {
        let forwarding = ns.run("cat", &["/proc/sys/net/ipv4/ip_forward"]);
        assert_eq!(forwarding.trim(), "0", "forwarding in {}", ns.label());
    }
    mesh.val.ip(&["route", "add", "10.77.3.0/24", "via", BA_IP]);
    let through_ba = mesh.val.probe(CHAIN_VIA_BA_IP, SENTRY_A_PORT);
    mesh.val.ip(&["route", "del", "10.77.3.0/24"]);
    // The SYN reaches ba, which drops it: a timeout, not "unreachable".
    assert!(
        through_ba
            .as_ref()
            .is_err_and(|why| why.contains("timed out")),
        "ba forwarded val's packets to the chain: {through_ba:?}"
    );

    // Each bastion reaches the chain on its own link only.
    mesh.ba.assert_reachable(CHAIN_VIA_BA_IP, SENTRY_A_PORT);
    mesh.bb.assert_reachable(CHAIN_VIA_BB_IP, SENTRY_B_PORT);
    mesh.ba.assert_unreachable(CHAIN_VIA_BB_IP, SENTRY_B_PORT);
    mesh.ba.assert_unreachable(VAL_BB_IP, SSH_PORT);
    // The chain commits blocks (queried from inside `chain`).
    let height = mesh.height();
    mesh.wait_for(TUNNEL, |record| record.height > height);

    // The only way from val to the chain: SSH to a bastion (host key pinned through the
    // known_hosts lines), inside what its authorized_keys line permits.
    for (bastion, chain_ip, port) in [
        (BA_IP, CHAIN_VIA_BA_IP, SENTRY_A_PORT),
        (BB_IP, CHAIN_VIA_BB_IP, SENTRY_B_PORT),
    ] {
        let allowed = mesh
            .ssh_from_val(bastion)
            .args(["-W", &format!("{chain_ip}:{port}")])
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

// ---------------------------------------------------------------------------
// The validator in the mesh: the real supervisor in `val`, tunnels through
// both bastions, the bastions' backup stores, the node voting through them.
// ---------------------------------------------------------------------------

const VALIDATOR: &str = "val-a";
const PASSPHRASE: &str = "netns mesh passphrase";
/// The local forwards of [`Peering::SharedLoopbackIp`].
const SHARED_IP_PEERS: [&str; 2] = ["127.0.0.1:26701", "127.0.0.1:26702"];

/// How gaiad's peering is set up on the validator host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peering {
    /// `[[bastion]] sentry = { node-id, target }`: the supervisor forwards one loopback
    /// address per sentry (127.0.0.2, 127.0.0.3) and writes `[p2p] persistent_peers`.
    Sentries,
    /// As `docs/supervisor.md` told operators before the supervisor managed peering: local
    /// forwards on 127.0.0.1:26701 and :26702, `persistent_peers` pointing at them by hand,
    /// CometBFT's default `allow_duplicate_ip = false` left alone.
    SharedLoopbackIp,
}

/// Everything on the validator host's disk plus the bastions' stores.
struct ValidatorHost {
    scratch: tempfile::TempDir,
    home: PathBuf,
    config: PathBuf,
    passphrase_file: PathBuf,
    tmpfs: PathBuf,
    local_backups: PathBuf,
    /// Per bastion (ba, bb): the backup store's directory for this validator.
    bastion_backups: [PathBuf; 2],
    /// Per bastion: where sshd publishes the supervisor's control socket.
    rpc_sockets: [PathBuf; 2],
    /// Per bastion: palisade-bastion's configuration.
    bastion_configs: [PathBuf; 2],
    _stores: Vec<NsProcess>,
    /// The tmpfs dir's private parent.
    _shm: tempfile::TempDir,
}

impl Drop for ValidatorHost {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.tmpfs);
    }
}

fn mode_0700(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).unwrap();
}

impl ValidatorHost {
    /// The validator's home and its config; the mesh is built with the
    /// validator in its genesis.
    fn prepare() -> (tempfile::TempDir, PathBuf, ValidatorKeyInfo, MeshOptions) {
        let scratch = tempfile::tempdir().unwrap();
        let home = scratch.path().join("home");
        // No peers yet: `[p2p] persistent_peers` is written by the supervisor
        // (Peering::Sentries) or by hand once the sentries' IDs are known.
        let validator =
            palisade_simchain::testkit::write_validator_home(&home, VALIDATOR, "sim-1", "", 26657)
                .unwrap();
        // CometBFT's redial and keep-alive waits, ten times faster (the rules
        // are the same; see docs/simchain.md).
        palisade_simchain::testkit::set_simchain_option(&home, "p2p_time_scale", "0.1").unwrap();
        // The validator's key on each bastion, exactly as docs/bastion-sshd.md
        // shows it: forwarding to the chain's P2P port only, and every
        // session forced into the backup-store relay for this validator.
        let key_options = |label: &str, chain_ip: &str, port: u16| {
            format!(
                "command=\"{} backup-session --config {} --validator {VALIDATOR}\",\
                 restrict,port-forwarding,permitopen=\"{chain_ip}:{port}\"",
                common::workspace_binary("palisade-bastion").display(),
                scratch.path().join(label).join("bastion.toml").display(),
            )
        };
        let options = MeshOptions {
            validators: vec![validator.clone()],
            ba_key_options: key_options("ba", CHAIN_VIA_BA_IP, SENTRY_A_PORT),
            bb_key_options: key_options("bb", CHAIN_VIA_BB_IP, SENTRY_B_PORT),
            ..MeshOptions::default()
        };
        (scratch, home, validator, options)
    }

    fn start(
        mesh: &Mesh,
        scratch: tempfile::TempDir,
        home: PathBuf,
        peering: Peering,
    ) -> ValidatorHost {
        ValidatorHost::start_with(mesh, scratch, home, peering, "", "")
    }

    /// [`ValidatorHost::start`] with `ba_extra` added to ba's `[[bastion]]` table and
    /// `sections` (whole tables) at the end of the config.
    fn start_with(
        mesh: &Mesh,
        scratch: tempfile::TempDir,
        home: PathBuf,
        peering: Peering,
        ba_extra: &str,
        sections: &str,
    ) -> ValidatorHost {
        let dir = scratch.path().to_path_buf();
        let binary = dir.join("binaries/v1/simd");
        palisade_simchain::testkit::write_versioned_binary(&binary, &common::simd(), "v1", &[])
            .unwrap();
        let mut stores = Vec::new();
        let mut bastion_backups = Vec::new();
        let mut rpc_sockets = Vec::new();
        let mut bastion_configs = Vec::new();
        let mut bastion_tables = String::new();
        for (index, (label, ns, ip, target)) in [
            (
                "ba",
                &mesh.ba,
                BA_IP,
                format!("{CHAIN_VIA_BA_IP}:{SENTRY_A_PORT}"),
            ),
            (
                "bb",
                &mesh.bb,
                BB_IP,
                format!("{CHAIN_VIA_BB_IP}:{SENTRY_B_PORT}"),
            ),
        ]
        .into_iter()
        .enumerate()
        {
            // The bastion's side: a runtime directory for sockets, the store.
            let run = dir.join(label).join("run");
            mode_0700(&run);
            let store_dir = dir.join(label).join("backups");
            let listen = run.join("backups.sock");
            let rpc_socket = run.join(format!("{VALIDATOR}.sock"));
            let bastion_config = dir.join(label).join("bastion.toml");
            std::fs::write(
                &bastion_config,
                format!(
                    "listen-socket = {listen:?}\nbackup-dir = {store_dir:?}\n\
                     [health]\ninterval = \"300ms\"\ntimeout = \"250ms\"\n\
                     [[validator]]\nname = {VALIDATOR:?}\nsocket = {rpc_socket:?}\n"
                ),
            )
            .unwrap();
            let mut command = ns.command(common::workspace_binary("palisade-bastion"));
            command
                .arg("run")
                .arg("--config")
                .arg(&bastion_config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join(label).join("store.log")).unwrap());
            stores.push(ns.spawn(&mut command));
            common::wait_until(TUNNEL, "the bastion's backup store listens", || {
                listen.exists()
            });
            // ba is pinned through known_hosts, bb by fingerprint: both paths.
            let pin = if label == "ba" {
                String::new()
            } else {
                format!(
                    "host-key-fingerprints = [{:?}]\n",
                    mesh.sshd(ip).fingerprint()
                )
            };
            let peer = match peering {
                Peering::Sentries => format!(
                    "sentry = {{ node-id = {:?}, target = {target:?} }}\n",
                    mesh.sentry_ids[index]
                ),
                Peering::SharedLoopbackIp => format!(
                    "local-forwards = [{{ listen = {:?}, target = {target:?} }}]\n",
                    SHARED_IP_PEERS[index]
                ),
            };
            bastion_tables.push_str(&format!(
                "[[bastion]]\nname = {label:?}\nhost = {ip:?}\nuser = \"root\"\n{pin}\
                 rpc-socket = {rpc_socket:?}\nbackup-command = \"palisade-bastion backup-session\"\n\
                 {peer}{}",
                if label == "ba" { ba_extra } else { "" }
            ));
            bastion_backups.push(store_dir.join(VALIDATOR));
            rpc_sockets.push(rpc_socket);
            bastion_configs.push(bastion_config);
        }
        // ba's key comes from known_hosts only; bb's line is removed so that
        // its pin really is the fingerprint.
        if peering == Peering::SharedLoopbackIp {
            let peers = format!(
                "{}@{},{}@{}",
                mesh.sentry_ids[0], SHARED_IP_PEERS[0], mesh.sentry_ids[1], SHARED_IP_PEERS[1]
            );
            palisade_simchain::testkit::set_persistent_peers(&home, &peers).unwrap();
        }
        let known_hosts = dir.join("known_hosts");
        std::fs::write(
            &known_hosts,
            format!("{BA_IP} {}\n", mesh.sshd_ba.host_public_key()),
        )
        .unwrap();

        let passphrase_file = dir.join("passphrase");
        std::fs::write(&passphrase_file, format!("{PASSPHRASE}\n")).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&passphrase_file, std::fs::Permissions::from_mode(0o600))
                .unwrap();
        }
        let shm = common::private_shm_dir();
        let tmpfs = shm.path().join("keys");
        let local_backups = dir.join("local-backups");
        let config = dir.join("palisade.toml");
        std::fs::write(
            &config,
            format!(
                "[vault]\nswap = \"warn\"\ntmpfs-dir = {tmpfs:?}\nscrypt-work-factor = 10\n\
                 passphrase-file = {passphrase_file:?}\n\
                 [backup]\ndir = {local_backups:?}\ndebounce = \"100ms\"\nchain-id = \"sim-1\"\n\
                 [rpc]\nsocket = {:?}\nname = {VALIDATOR:?}\n\
                 [tunnel]\nkey-file = {:?}\nknown-hosts = {known_hosts:?}\nconnect-timeout = \"3s\"\n\
                 keepalive-interval = \"500ms\"\nkeepalive-max = 2\nreconnect-max-delay = \"500ms\"\n\
                 {bastion_tables}{sections}",
                dir.join("run/supervisor.sock"),
                mesh.client_key,
            ),
        )
        .unwrap();
        let host = ValidatorHost {
            home,
            config,
            passphrase_file,
            tmpfs,
            local_backups,
            bastion_backups: [bastion_backups[0].clone(), bastion_backups[1].clone()],
            rpc_sockets: [rpc_sockets[0].clone(), rpc_sockets[1].clone()],
            bastion_configs: [bastion_configs[0].clone(), bastion_configs[1].clone()],
            _stores: stores,
            scratch,
            _shm: shm,
        };
        let init = host
            .command(None)
            .arg("init")
            .arg(&binary)
            .output()
            .unwrap();
        assert!(init.status.success(), "init: {init:?}");
        let vault = host
            .command(None)
            .arg("init-vault")
            .arg("--passphrase-file")
            .arg(&host.passphrase_file)
            .output()
            .unwrap();
        assert!(vault.status.success(), "init-vault: {vault:?}");
        host
    }

    /// `palisade-supervisor` with this host's environment, inside `ns` if given.
    fn command(&self, ns: Option<&Netns>) -> Command {
        let mut command = match ns {
            Some(ns) => ns.command(common::SUPERVISOR),
            None => Command::new(common::SUPERVISOR),
        };
        common::supervisor_env(&mut command, &self.home, "simd");
        command.env("PALISADE_CONFIG", &self.config);
        command
    }

    fn run(&self, mesh: &Mesh) -> common::Supervisor {
        let mut command = self.command(Some(&mesh.val));
        command
            .args(["run", "start", "--home"])
            .arg(&self.home)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        common::Supervisor::spawn(command)
    }

    fn restore_state(&self, mesh: &Mesh) -> std::process::Output {
        self.command(Some(&mesh.val))
            .arg("restore-state")
            .arg("--passphrase-file")
            .arg(&self.passphrase_file)
            .output()
            .unwrap()
    }

    fn backups_on(&self, bastion: usize) -> usize {
        std::fs::read_dir(&self.bastion_backups[bastion])
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".age"))
                    .count()
            })
            .unwrap_or(0)
    }

    /// `palisade-bastion status --json` on one bastion: (exit code, the
    /// validator's state).
    fn bastion_status(&self, bastion: usize) -> (i32, String) {
        let output = Command::new(common::workspace_binary("palisade-bastion"))
            .args(["status", "--json", "--config"])
            .arg(&self.bastion_configs[bastion])
            .output()
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("status --json ({e}): {output:?}"));
        let state = json["validators"]
            .as_array()
            .and_then(|validators| validators.iter().find(|v| v["name"] == VALIDATOR))
            .map(|v| v["state"].as_str().unwrap_or_default().to_string())
            .unwrap_or_else(|| panic!("no {VALIDATOR} in {json}"));
        (output.status.code().unwrap_or(-1), state)
    }

    /// The supervisor's control socket (`[rpc] socket`), reachable from
    /// the test's own namespace: a path, not an address.
    fn socket(&self) -> PathBuf {
        self.scratch.path().join("run/supervisor.sock")
    }

    fn state_file(&self) -> PathBuf {
        self.home.join("data/priv_validator_state.json")
    }
}

fn signed(record: &Record) -> (u64, Option<u64>) {
    let validator = &record.validators[VALIDATOR];
    (validator.signed_heights, validator.last_signed_height)
}

/// Read the greeting through a bastion's reverse-forwarded control socket.
/// The connection then stays open for TLS (it came through a bastion, so
/// the supervisor requires it); one line is all a liveness check reads.
fn greeting_through(socket: &std::path::Path) -> palisade_wire::rpc::Greeting {
    use std::io::{BufRead, Read};
    let stream = std::os::unix::net::UnixStream::connect(socket)
        .unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    stream.set_read_timeout(Some(TUNNEL)).unwrap();
    let mut line = Vec::new();
    std::io::BufReader::new(stream.take(palisade_wire::rpc::MAX_GREETING_BYTES as u64))
        .read_until(b'\n', &mut line)
        .unwrap();
    let greeting = palisade_wire::rpc::Greeting::parse(&line).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: {:?}",
            socket.display(),
            String::from_utf8_lossy(&line)
        )
    });
    assert_eq!(
        greeting.tls,
        Some(palisade_wire::rpc::TlsRequirement::Required),
        "a connection through a bastion must be told to use TLS"
    );
    greeting
}

/// The sentries the validator is connected to right now, from the chain's side.
fn connected_via(record: &Record) -> Vec<String> {
    record.validators[VALIDATOR].connected_via.clone()
}

/// Whether the validator holds a session with `sentry` opened after `height`.
fn session_since(record: &Record, sentry: &str, height: u64) -> bool {
    record.validators[VALIDATOR]
        .connections
        .iter()
        .any(|c| c.listener == sentry && c.since_height > height)
}

/// Cuts `link` and returns the blocks the validator missed in the next ten.
fn missed_in_ten_blocks_after_cutting(mesh: &Mesh, link: &Link) -> (u64, Vec<u64>) {
    link.set_down();
    let cut = mesh.height();
    let record = mesh.wait_for(LONG, |record| {
        record.validators[VALIDATOR]
            .missed_heights
            .iter()
            .chain(record.validators[VALIDATOR].last_signed_height.iter())
            .any(|&h| h >= cut + 10)
    });
    (cut, record.missed_between(VALIDATOR, cut, cut + 10))
}

#[test]
fn validator_votes_through_either_bastion_misses_without_both_and_heals() {
    require_root();
    let (scratch, home, _validator, options) = ValidatorHost::prepare();
    let mesh = Mesh::build(&options);
    let host = ValidatorHost::start(&mesh, scratch, home, Peering::Sentries);
    let mut supervisor = host.run(&mesh);

    // Votes reach the chain, which the validator host cannot reach itself.
    mesh.val.assert_unreachable(CHAIN_VIA_BA_IP, SENTRY_A_PORT);
    let record = mesh.wait_for(LONG, |record| signed(record).0 >= 5);
    eprintln!("signing through the tunnels: {:?}", signed(&record));
    let socket = host.socket();
    common::wait_for_all_tunnels_up(&socket, TUNNEL);

    // The supervisor wrote gaiad's peering: one loopback address per sentry.
    let config_toml = std::fs::read_to_string(host.home.join("config/config.toml")).unwrap();
    let peers = format!(
        "persistent_peers = \"{}@127.0.0.2:26756,{}@127.0.0.3:26756\"",
        mesh.sentry_ids[0], mesh.sentry_ids[1]
    );
    assert!(
        config_toml.contains(&peers),
        "{peers} not in:\n{config_toml}"
    );
    // With CometBFT's duplicate-IP filter on (simd's default, as gaiad's),
    // the validator holds a session with both sentries at once — seen from
    // the chain's side.
    let record = mesh.wait_for(TUNNEL, |record| connected_via(record) == SENTRY_NAMES);
    assert_eq!(record.validators[VALIDATOR].sessions, 2, "{record:?}");

    // Both bastions reach the supervisor through the reverse-forwarded
    // control socket, and both hold backups.
    for socket in &host.rpc_sockets {
        assert_eq!(greeting_through(socket).validator, VALIDATOR);
    }
    for bastion in 0..2 {
        common::wait_until(
            TUNNEL,
            "the bastion's health check sees the validator up",
            || host.bastion_status(bastion) == (0, "up".to_string()),
        );
    }
    let deadline = Instant::now() + TUNNEL;
    while host.backups_on(0) == 0 || host.backups_on(1) == 0 {
        assert!(
            Instant::now() < deadline,
            "no backups on both bastions (ba {}, bb {}); supervisor output:\n{}",
            host.backups_on(0),
            host.backups_on(1),
            common::tail(&supervisor.output(), 40)
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Cut ba: the votes already travel through bb too, so no block is missed.
    let (cut, missed) = missed_in_ten_blocks_after_cutting(&mesh, &mesh.val_ba);
    assert!(missed.is_empty(), "ba cut at {cut}: missed {missed:?}");
    let bb_backups = host.backups_on(1);
    common::wait_until(TUNNEL, "backups keep reaching bb", || {
        host.backups_on(1) > bb_backups
    });
    // Restore ba: gaiad redials its sentry (CometBFT's reconnect rules) and
    // a new session opens. (The sentry's end of the old one may linger: the
    // bastion's sshd does not notice a silent client.)
    mesh.val_ba.set_up();
    mesh.wait_for(LONG, |record| session_since(record, SENTRY_NAMES[0], cut));

    // Cut bb: the same the other way round.
    let (cut, missed) = missed_in_ten_blocks_after_cutting(&mesh, &mesh.val_bb);
    assert!(missed.is_empty(), "bb cut at {cut}: missed {missed:?}");

    // Cut ba too: no way to the chain; the record shows the misses.
    mesh.val_ba.set_down();
    let both_cut = mesh.height();
    let record = mesh.wait_for(LONG, |record| record.height >= both_cut + 25);
    let missed = record.missed_between(VALIDATOR, both_cut + 10, both_cut + 25);
    assert!(
        missed.len() >= 14,
        "with both bastions cut the validator should miss blocks {}..{}: missed {missed:?}",
        both_cut + 10,
        both_cut + 25
    );
    // The supervisor keeps supervising and says why; both bastions report
    // the validator down.
    assert!(supervisor.child.try_wait().unwrap().is_none());
    let status = common::wait_for_all_tunnels_down(&socket, TUNNEL);
    for tunnel in status["tunnels"].as_array().unwrap() {
        assert!(
            tunnel["last_error"].is_string(),
            "no reason given: {status}"
        );
    }
    for bastion in 0..2 {
        common::wait_until(
            TUNNEL,
            "the bastion's health check sees the validator down",
            || host.bastion_status(bastion) == (3, "down".to_string()),
        );
    }

    // Restore both: the tunnels heal and voting resumes.
    let restored_at = Instant::now();
    mesh.val_ba.set_up();
    mesh.val_bb.set_up();
    let restored = mesh.height();
    mesh.wait_for(LONG, |record| {
        signed(record).1.is_some_and(|last| last > restored)
    });
    eprintln!(
        "voting again {:?} after the links came back",
        restored_at.elapsed()
    );
    mesh.wait_for(LONG, |record| {
        SENTRY_NAMES
            .iter()
            .all(|sentry| session_since(record, sentry, both_cut))
    });
    eprintln!(
        "both sentries connected again {:?} after the links came back",
        restored_at.elapsed()
    );
    for socket in &host.rpc_sockets {
        common::wait_until(TUNNEL, "control socket reachable again", || {
            std::os::unix::net::UnixStream::connect(socket).is_ok()
        });
        assert_eq!(greeting_through(socket).validator, VALIDATOR);
    }
    for bastion in 0..2 {
        common::wait_until(
            TUNNEL,
            "the bastion's health check sees the validator up again",
            || host.bastion_status(bastion) == (0, "up".to_string()),
        );
    }
    let record = mesh.record();
    assert!(record.double_signs.is_empty(), "{:?}", record.double_signs);

    // Stop (the final backup goes to both bastions).
    let before = [host.backups_on(0), host.backups_on(1)];
    supervisor.signal("TERM");
    let status = supervisor.wait_exit(TUNNEL);
    assert!(status.success(), "{status:?}\n{}", supervisor.output());
    assert!(host.backups_on(0) > before[0] || host.backups_on(1) > before[1]);
    let last_signed = signed(&mesh.record()).1.unwrap();

    // The host loses its disk state: restore from either bastion alone.
    for (down, expected_store) in [(&mesh.val_bb, "bastion:ba"), (&mesh.val_ba, "bastion:bb")] {
        mesh.val_ba.set_up();
        mesh.val_bb.set_up();
        down.set_down();
        std::fs::remove_file(host.state_file()).unwrap();
        let _ = std::fs::remove_dir_all(&host.local_backups);
        let output = host.restore_state(&mesh);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "restore-state: {output:?}");
        assert!(
            stdout.contains(&format!("in store {expected_store} ")),
            "{stdout}"
        );
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(host.state_file()).unwrap()).unwrap();
        let height: u64 = state["height"].as_str().unwrap().parse().unwrap();
        assert!(
            height >= last_signed,
            "restored height {height} below the last signed {last_signed}"
        );
    }

    // And the validator signs on from the restored state, with no double sign.
    mesh.val_ba.set_up();
    mesh.val_bb.set_up();
    let mut supervisor = host.run(&mesh);
    let now = mesh.height();
    mesh.wait_for(LONG, |record| {
        signed(record).1.is_some_and(|last| last > now + 3)
    });
    let record = mesh.record();
    assert!(record.double_signs.is_empty(), "{:?}", record.double_signs);
    supervisor.signal("TERM");
    assert!(supervisor.wait_exit(TUNNEL).success());
}

/// Where the bulk stream lands on ba (its chain-side address; a namespace's
/// loopback is down) and where it enters on
/// the validator host (a second local forward of ba's tunnel).
const BULK_SINK_PORT: u16 = 27000;
const BULK_LISTEN_PORT: u16 = 27100;
/// The shaped uplink: slow enough that a few hundred KiB queued ahead of
/// a vote cost more than a 200 ms block.
const SHAPED_RATE: &str = "4mbit";
const SHAPED_BYTES_PER_SECOND: f64 = 4_000_000.0 / 8.0;

/// Votes first: with ba as the only bastion, its link shaped to 4 Mbit/s
/// and a bulk stream saturating it through another forward of the same
/// tunnel, the validator misses no block. The sentry's forward has an SSH
/// connection of its own, with a small unsent queue, so votes wait behind
/// no more than the link's own queue (10 ms); sharing one SSH connection,
/// they waited behind megabytes (seconds at this rate).
#[test]
fn votes_pass_bulk_traffic_on_a_saturated_link_without_a_missed_block() {
    require_root();
    let (scratch, home, _validator, mut options) = ValidatorHost::prepare();
    options.ba_key_options.push_str(&format!(
        ",permitopen=\"{BA_CHAIN_SIDE_IP}:{BULK_SINK_PORT}\""
    ));
    let mesh = Mesh::build(&options);
    let host = ValidatorHost::start_with(
        &mesh,
        scratch,
        home,
        Peering::Sentries,
        &format!(
            "local-forwards = [{{ listen = \"127.0.0.1:{BULK_LISTEN_PORT}\", \
             target = \"{BA_CHAIN_SIDE_IP}:{BULK_SINK_PORT}\" }}]\n"
        ),
        "",
    );
    let mut supervisor = host.run(&mesh);
    mesh.wait_for(LONG, |record| signed(record).0 >= 5);
    // Then bb is cut (the start needed both stores): every vote goes
    // through ba, shaped.
    mesh.val_bb.set_down();
    mesh.val_ba.shape(SHAPED_RATE);
    let shaped = mesh.height();
    mesh.wait_for(LONG, |record| record.height >= shaped + 5);

    // A sink on ba counting what arrives, and a writer on the validator
    // host that sends as fast as the tunnel takes it.
    let counted = host.scratch.path().join("bulk-bytes");
    let sink_script = format!(
        "import socket, sys, threading\n\
         s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('{BA_CHAIN_SIDE_IP}', {BULK_SINK_PORT})); s.listen(8)\n\
         total = 0; lock = threading.Lock()\n\
         def serve(c):\n\
         \x20   global total\n\
         \x20   while True:\n\
         \x20       d = c.recv(65536)\n\
         \x20       if not d: return\n\
         \x20       with lock:\n\
         \x20           total += len(d)\n\
         \x20           open(sys.argv[1] + '.tmp', 'w').write(str(total))\n\
         \x20       __import__('os').replace(sys.argv[1] + '.tmp', sys.argv[1])\n\
         while True:\n\
         \x20   c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()\n"
    );
    let _sink = mesh.ba.spawn(
        mesh.ba
            .command("/usr/bin/python3")
            .args(["-c", &sink_script])
            .arg(&counted)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(host.scratch.path().join("sink.log")).unwrap()),
    );
    let bytes = || -> u64 {
        std::fs::read_to_string(&counted)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0)
    };
    let connects = |netns: &Netns, address: &str, port: u16| {
        netns
            .command("bash")
            .args(["-c", &format!("exec 3<>/dev/tcp/{address}/{port}")])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    common::wait_until(TUNNEL, "the sink on ba to listen", || {
        connects(&mesh.ba, BA_CHAIN_SIDE_IP, BULK_SINK_PORT)
    });
    common::wait_until(TUNNEL, "the bulk forward to listen", || {
        connects(&mesh.val, "127.0.0.1", BULK_LISTEN_PORT)
    });
    let _writer = mesh.val.spawn(
        mesh.val
            .command("bash")
            .args([
                "-c",
                &format!("exec 3<>/dev/tcp/127.0.0.1/{BULK_LISTEN_PORT}; exec cat /dev/zero >&3"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    // Saturated: the first second fills every queue on the way.
    let flowing = Instant::now() + TUNNEL;
    while bytes() <= 256 * 1024 {
        assert!(
            Instant::now() < flowing,
            "bulk does not flow ({} bytes); sink: {}; supervisor:\n{}",
            bytes(),
            std::fs::read_to_string(host.scratch.path().join("sink.log")).unwrap_or_default(),
            supervisor
                .output()
                .lines()
                .filter(|line| line.contains("forward") || line.contains("WARN"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1));

    let (from_bytes, started, from) = (bytes(), Instant::now(), mesh.height());
    let record = mesh.wait_for(LONG, |record| record.height >= from + 25);
    let elapsed = started.elapsed().as_secs_f64();
    let carried = bytes() - from_bytes;
    let rate = carried as f64 / elapsed;
    let missed = record.missed_between(VALIDATOR, from + 1, from + 25);
    eprintln!(
        "under bulk: {} blocks in {elapsed:.1} s, bulk {:.2} Mbit/s, missed {missed:?}",
        record.height - from,
        rate * 8.0 / 1e6
    );
    assert!(
        rate >= 0.6 * SHAPED_BYTES_PER_SECOND,
        "the bulk stream did not saturate the link: {:.2} Mbit/s of {SHAPED_RATE}",
        rate * 8.0 / 1e6
    );
    assert!(
        missed.is_empty(),
        "votes waited behind the bulk stream: missed {missed:?} of blocks {}..{}",
        from + 1,
        from + 25
    );
    assert!(record.double_signs.is_empty(), "{:?}", record.double_signs);
    supervisor.signal("TERM");
    assert!(supervisor.wait_exit(TUNNEL).success());
}

/// The same mesh set up as `docs/supervisor.md` told operators before the
/// supervisor managed gaiad's peering: both sentries forwarded on
/// 127.0.0.1, CometBFT's defaults. Its duplicate-IP filter keeps one
/// sentry; the other is refused at start and never redialed (CometBFT's
/// `reconnectToPeer` gives up on a duplicate), so losing the bastion in use
/// loses the validator's votes while the other bastion is up and idle.
/// This is the failure the supervisor's per-sentry loopback addresses fix.
#[test]
fn sentries_forwarded_on_one_loopback_ip_leave_one_session_and_miss_blocks() {
    require_root();
    let (scratch, home, _validator, options) = ValidatorHost::prepare();
    let mesh = Mesh::build(&options);
    let host = ValidatorHost::start(&mesh, scratch, home, Peering::SharedLoopbackIp);
    let mut supervisor = host.run(&mesh);
    mesh.wait_for(LONG, |record| signed(record).0 >= 5);
    let socket = host.socket();
    common::wait_for_all_tunnels_up(&socket, TUNNEL);

    // One session, and fifteen blocks later still one: both tunnels are up,
    // yet the second sentry is not dialed again.
    let start = mesh.height();
    let record = mesh.wait_for(LONG, |record| record.height >= start + 15);
    let via = connected_via(&record);
    assert_eq!(via.len(), 1, "expected one sentry session: {record:?}");
    assert_eq!(record.validators[VALIDATOR].sessions, 1, "{record:?}");

    // Cut the bastion of the connected sentry: the validator misses blocks
    // although the other bastion's tunnel stays up.
    let (link, other) = if via[0] == SENTRY_NAMES[0] {
        (&mesh.val_ba, "bb")
    } else {
        (&mesh.val_bb, "ba")
    };
    let (cut, missed) = missed_in_ten_blocks_after_cutting(&mesh, link);
    eprintln!("{} cut at {cut}: missed {missed:?}", via[0]);
    // Votes already on their way may land in the first blocks; from then on
    // every one is missed.
    let expected: Vec<u64> = (cut + 3..=cut + 10).collect();
    assert!(
        expected.iter().all(|h| missed.contains(h)),
        "with its only sentry's bastion cut the validator should miss blocks {}..={}: \
         missed {missed:?}",
        cut + 3,
        cut + 10
    );
    let status = common::status(&socket).expect("the supervisor answers status");
    let other_tunnel = status["tunnels"]
        .as_array()
        .and_then(|tunnels| tunnels.iter().find(|t| t["name"] == other))
        .unwrap_or_else(|| panic!("no tunnel {other}: {status}"));
    assert_eq!(other_tunnel["connected"], true, "{status}");
    // Still no session with the other sentry.
    let record = mesh.record();
    assert!(
        !connected_via(&record).iter().any(|v| v != &via[0]),
        "{record:?}"
    );

    link.set_up();
    supervisor.signal("TERM");
    assert!(supervisor.wait_exit(TUNNEL).success());
    assert!(mesh.record().double_signs.is_empty());
}

/// The Elastic IP test's region (moto answers in any).
const EIP_REGION: &str = "eu-west-1";

/// What the EC2 relay does to the calls it carries (see [`relay_into`]).
#[derive(Default)]
struct RelayControl {
    /// HTTP requests (`POST /`) carried since the last [`RelayControl::hold_request`].
    requests: std::sync::atomic::AtomicUsize,
    /// Hold back the answer to this request (counted from 1) and every later byte of its
    /// connection; 0: hold nothing.
    hold: std::sync::atomic::AtomicUsize,
    /// A held answer arrived from moto (so moto carried the call out).
    holding: std::sync::atomic::AtomicBool,
}

impl RelayControl {
    /// From now on, hold the answer to the `n`-th request (`None`: hold nothing).
    fn hold_request(&self, n: Option<usize>) {
        use std::sync::atomic::Ordering::SeqCst;
        self.requests.store(0, SeqCst);
        self.holding.store(false, SeqCst);
        self.hold.store(n.unwrap_or(0), SeqCst);
    }

    fn holding(&self) -> bool {
        self.holding.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A TCP relay listening on 127.0.0.1 inside `ns` to `target` in the test's own namespace:
/// the validator host's way to the EC2 API (moto), which runs beside the test. It counts the
/// HTTP requests it carries and can hold back an answer (`control`), so that a test can kill
/// the supervisor after moto acted on a call and before the supervisor learnt of it. Returns
/// the port; the relay lives as long as the test process.
fn relay_into(
    ns: &Netns,
    target: std::net::SocketAddr,
    control: std::sync::Arc<RelayControl>,
) -> u16 {
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering::SeqCst;
    let listener = ns.in_netns(|| std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for inbound in listener.incoming() {
            let Ok(inbound) = inbound else { break };
            let control = control.clone();
            std::thread::spawn(move || {
                let Ok(outbound) = std::net::TcpStream::connect(target) else {
                    return;
                };
                let held = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                let (mut from_client, mut to_moto) =
                    (inbound.try_clone().unwrap(), outbound.try_clone().unwrap());
                let (up_control, up_held) = (control.clone(), held.clone());
                let upstream = std::thread::spawn(move || {
                    let mut buffer = [0u8; 16 * 1024];
                    while let Ok(read) = from_client.read(&mut buffer) {
                        if read == 0 {
                            break;
                        }
                        let posts = buffer[..read].windows(6).filter(|w| w == b"POST /").count();
                        for _ in 0..posts {
                            let n = up_control.requests.fetch_add(1, SeqCst) + 1;
                            if n == up_control.hold.load(SeqCst) {
                                up_held.store(true, SeqCst);
                            }
                        }
                        if to_moto.write_all(&buffer[..read]).is_err() {
                            break;
                        }
                    }
                    let _ = to_moto.shutdown(std::net::Shutdown::Write);
                });
                let (mut from_moto, mut to_client) = (outbound, inbound);
                let mut buffer = [0u8; 16 * 1024];
                while let Ok(read) = from_moto.read(&mut buffer) {
                    if read == 0 {
                        break;
                    }
                    if held.load(SeqCst) {
                        // moto answered: it acted. The answer never reaches the supervisor.
                        control.holding.store(true, SeqCst);
                        continue;
                    }
                    if to_client.write_all(&buffer[..read]).is_err() {
                        break;
                    }
                }
                // With an answer held, the supervisor keeps waiting for it (moto closes its
                // side after answering): only the supervisor's end closes this connection.
                if !held.load(SeqCst) {
                    let _ = to_client.shutdown(std::net::Shutdown::Write);
                }
                let _ = upstream.join();
            });
        }
    });
    port
}

/// `palisade-ctl --socket … --json call METHOD --params PARAMS` → the result.
fn rpc_call(host: &ValidatorHost, method: &str, params: &str) -> serde_json::Value {
    let output = rpc_call_output(host, method, params);
    assert!(output.status.success(), "{method}: {output:?}");
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{method} answered no JSON ({e}): {output:?}"))
}

fn rpc_call_output(host: &ValidatorHost, method: &str, params: &str) -> std::process::Output {
    let socket = host.socket();
    common::run_ctl(
        host.scratch.path(),
        &[
            "--socket",
            socket.to_str().unwrap(),
            "--json",
            "call",
            method,
            "--params",
            params,
        ],
        None,
    )
}

/// The Elastic IP tests' world: the mesh with ba's sshd listening anywhere, moto with an
/// instance standing for ba that holds an Elastic IP (`a`), the cloud shim making moto's
/// associations true in the namespaces, the relay from `val` to moto, and the validator host
/// configured with `[eip]` and the AWS key imported into its vault. Fields drop in order:
/// the shim first, while the namespaces it changed still exist.
struct EipWorld {
    shim: common::cloud_shim::CloudShim,
    host: ValidatorHost,
    relay: std::sync::Arc<RelayControl>,
    instance: palisade_testkit::moto::MotoInstance,
    a: palisade_ec2::AllocatedAddress,
    ec2: palisade_ec2::Ec2Client,
    runtime: tokio::runtime::Runtime,
    moto: palisade_testkit::moto::Moto,
    mesh: Mesh,
}

/// The test's AWS key (moto takes any).
const EIP_KEY: (&str, &str) = (
    "AKIAIOSFODNN7EXAMPLE",
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
);

impl EipWorld {
    fn build() -> EipWorld {
        EipWorld::build_with("")
    }

    /// [`EipWorld::build`] with `eip_extra` after the `[eip]` table (`[eip.auto]`, say).
    fn build_with(eip_extra: &str) -> EipWorld {
        use common::cloud_shim::{CloudShim, ShimClient, ShimInstance};
        use palisade_ec2::{AssociationTarget, Credentials, Ec2Client, Ec2Config};
        use palisade_testkit::moto::run_instance;

        let (scratch, home, _validator, mut options) = ValidatorHost::prepare();
        options.ba_listens_anywhere = true;
        let mesh = Mesh::build(&options);
        let moto = palisade_testkit::moto::Moto::start().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (key_id, secret) = EIP_KEY;
        let ec2 = Ec2Client::new(
            Ec2Config::new(EIP_REGION).with_endpoint(moto.endpoint().parse().unwrap()),
            Credentials::new(
                key_id,
                palisade_ec2::Zeroizing::new(secret.to_string()),
                None,
            )
            .unwrap(),
        )
        .unwrap();
        // ba is an instance with an Elastic IP (A) already.
        let instance = runtime.block_on(run_instance(&moto.endpoint(), EIP_REGION));
        let a = runtime
            .block_on(ec2.allocate_address(&Default::default()))
            .unwrap();
        runtime
            .block_on(ec2.associate_address(
                &a.allocation_id,
                &AssociationTarget::Instance(instance.instance_id.clone()),
            ))
            .unwrap();
        let shim = CloudShim::start(
            &moto.endpoint(),
            EIP_REGION,
            vec![ShimInstance {
                instance_id: instance.instance_id.clone(),
                netns: mesh.ba.name().to_string(),
                ifname: mesh.val_ba.b.ifname.clone(),
            }],
            vec![ShimClient {
                netns: mesh.val.name().to_string(),
                routes: vec![(instance.instance_id.clone(), mesh.val_ba.a.ifname.clone())],
            }],
        );
        shim.wait_synced(TUNNEL);
        mesh.val
            .wait_reachable(&a.public_ip.to_string(), SSH_PORT, TUNNEL);

        let relay = std::sync::Arc::new(RelayControl::default());
        let endpoint_port = relay_into(
            &mesh.val,
            ([127, 0, 0, 1], moto.port()).into(),
            relay.clone(),
        );
        let host = ValidatorHost::start_with(
            &mesh,
            scratch,
            home,
            Peering::Sentries,
            &format!("eip = {{ instance-id = {:?} }}\n", instance.instance_id),
            &format!(
                "[eip]\nregion = {EIP_REGION:?}\nendpoint = \"http://127.0.0.1:{endpoint_port}\"\n\
                 tunnel-timeout = \"15s\"\nrequest-timeout = \"30s\"\n{eip_extra}"
            ),
        );
        // The AWS key goes into the vault; the profile file is not needed afterwards.
        let profile = host.scratch.path().join("aws-credentials");
        std::fs::write(
            &profile,
            format!("[palisade]\naws_access_key_id = {key_id}\naws_secret_access_key = {secret}\n"),
        )
        .unwrap();
        let import = host
            .command(None)
            .args([
                "import-aws-credentials",
                "--profile",
                "palisade",
                "--profile-file",
            ])
            .arg(&profile)
            .output()
            .unwrap();
        assert!(import.status.success(), "import: {import:?}");
        assert!(
            String::from_utf8_lossy(&import.stdout).contains(key_id),
            "{import:?}"
        );
        std::fs::remove_file(&profile).unwrap();
        let sealed = std::fs::read(host.home.join("palisade/vault/aws-credentials.age")).unwrap();
        assert!(!sealed.windows(secret.len()).any(|w| w == secret.as_bytes()));
        EipWorld {
            shim,
            host,
            relay,
            instance,
            a,
            ec2,
            runtime,
            moto,
            mesh,
        }
    }

    /// The public addresses EC2 shows on ba's instance.
    fn on_instance(&self) -> Vec<String> {
        let now = self
            .runtime
            .block_on(
                self.ec2
                    .describe_addresses(&palisade_ec2::AddressFilter::All),
            )
            .unwrap();
        now.iter()
            .filter(|address| {
                address.instance_id.as_deref() == Some(self.instance.instance_id.as_str())
            })
            .map(|address| address.public_ip.to_string())
            .collect()
    }

    /// Every allocation of the account.
    fn allocations(&self) -> Vec<String> {
        self.runtime
            .block_on(
                self.ec2
                    .describe_addresses(&palisade_ec2::AddressFilter::All),
            )
            .unwrap()
            .into_iter()
            .map(|address| address.allocation_id)
            .collect()
    }

    /// ba's entry of `tunnel.list`.
    fn ba_tunnel(&self) -> serde_json::Value {
        let tunnels = rpc_call(&self.host, "tunnel.list", "{}");
        tunnels["tunnels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|tunnel| tunnel["name"] == "ba")
            .unwrap()
            .clone()
    }

    /// Waits until the journal's last record is a `done` (`what` names the wait); the
    /// address the bastion moved to.
    fn wait_rotation_done(&self, what: &str) -> String {
        common::wait_until(LONG, what, || {
            self.journal()
                .last()
                .is_some_and(|record| record["step"] == "done")
        });
        self.journal().last().unwrap()["public_ip"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The journal's records.
    fn journal(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.host.home.join("palisade/eip/journal.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }
}

/// Issue 14, the latency half of the trigger: ba's uplink is flooded (a slow token bucket with a
/// long queue on ba's end of the link, and a bulk stream from ba to the validator filling it),
/// so ba's tunnel stays up but every reply waits behind the flood. The tunnel's measured round
/// trip rises above `slow-above` while bb's stays quick, and the trigger moves ba to a fresh
/// address; the flood, aimed at the old address, stops once the new one is associated.
#[test]
fn the_automatic_trigger_moves_a_bastion_whose_round_trip_stays_slow() {
    use std::io::{Read, Write};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

    let world = EipWorld::build_with(
        "[eip.auto]\nafter = \"3s\"\ncooldown = \"1h\"\nslow-above = \"200ms\"\n",
    );
    // Patient keepalives (10 s of silence), so that the flooded link, whose packets are
    // dropped and retransmitted, stays up and slow rather than being declared dead.
    let config = std::fs::read_to_string(&world.host.config).unwrap();
    assert!(config.contains("keepalive-max = 2\n"), "{config}");
    std::fs::write(
        &world.host.config,
        config.replace("keepalive-max = 2\n", "keepalive-max = 20\n"),
    )
    .unwrap();
    let supervisor = world.host.run(&world.mesh);
    world.mesh.wait_for(LONG, |record| signed(record).0 >= 3);
    common::wait_until(LONG, "a quick round trip measured on ba's tunnel", || {
        world.ba_tunnel()["round_trip_ms"]
            .as_u64()
            .is_some_and(|ms| ms < 200)
    });
    // The flood: a bulk stream from ba to a sink on the validator's side of the same link.
    let sink = world
        .mesh
        .val
        .in_netns(|| std::net::TcpListener::bind((VAL_BA_IP, 0)).unwrap());
    let sink_port = sink.local_addr().unwrap().port();
    std::thread::spawn(move || {
        while let Ok((mut inbound, _)) = sink.accept() {
            std::thread::spawn(move || {
                let mut buffer = [0u8; 64 * 1024];
                while inbound.read(&mut buffer).is_ok_and(|read| read > 0) {}
            });
        }
    });
    world.mesh.val_ba.b.congest("256kbit", "1500ms");
    let flooding = Arc::new(AtomicBool::new(true));
    let mut flood = world
        .mesh
        .ba
        .in_netns(|| std::net::TcpStream::connect((VAL_BA_IP, sink_port)).unwrap());
    let still_flooding = flooding.clone();
    let flooder = std::thread::spawn(move || {
        let chunk = [0x55u8; 16 * 1024];
        while still_flooding.load(SeqCst) && flood.write_all(&chunk).is_ok() {}
    });
    common::wait_until(LONG, "the trigger to move ba's address", || {
        world
            .journal()
            .iter()
            .any(|record| record["step"] == "associated")
    });
    // The attacker's target has moved.
    flooding.store(false, SeqCst);
    flooder.join().unwrap();
    world.mesh.val_ba.b.clear_shaping();
    let new = world.wait_rotation_done("the rotation done");
    common::wait_until(LONG, "ba's tunnel quick again on the new address", || {
        let tunnel = world.ba_tunnel();
        tunnel["connected"] == true
            && tunnel["address"].as_str() == Some(new.as_str())
            && tunnel["round_trip_ms"].as_u64().is_some_and(|ms| ms < 200)
    });
    assert_eq!(world.on_instance(), vec![new]);
    let output = supervisor.stop();
    assert!(
        output.contains(
            "automatic elastic IP rotation of bastion ba: its tunnel's round trip has stayed above 200 ms for"
        ),
        "{output}"
    );
    assert!(output.contains("while bb is up"), "{output}");
    let record = world.mesh.record();
    assert!(record.double_signs.is_empty(), "{:?}", record.double_signs);
}

/// Issue 14: ba is moved to a fresh Elastic IP through EC2 (moto), and the cloud shim makes
/// moto's associations true in the namespaces, so the validator's tunnel must really redial
/// the new address (its host key still pinned to ba's configured name). The AWS key comes
/// from the vault. The old address is released, every step is journaled with its duration,
/// and, with ba's configured address removed and bb cut off, the chain goes on through the
/// tunnel on the new address alone.
#[test]
fn an_elastic_ip_rotation_moves_the_tunnel_to_the_new_address_and_the_chain_goes_on() {
    use palisade_ec2::AddressFilter;
    let world = EipWorld::build();
    let (mesh, host, a, ec2, runtime, instance) = (
        &world.mesh,
        &world.host,
        &world.a,
        &world.ec2,
        &world.runtime,
        &world.instance,
    );
    let supervisor = host.run(mesh);
    let start = mesh.wait_for(LONG, |record| signed(record).0 >= 3);
    let list = rpc_call(host, "eip.list", "{}");
    let ba = &list["bastions"][0];
    assert_eq!(ba["bastion"], "ba", "{list}");
    assert_eq!(ba["dialing"], BA_IP, "{list}");
    assert!(
        ba["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|address| address["allocation_id"] == a.allocation_id.as_str()),
        "{list}"
    );

    let asked = Instant::now();
    let rotated = rpc_call(host, "eip.rotate", r#"{"bastion":"ba"}"#);
    let took = asked.elapsed();
    let b = rotated["public_ip"].as_str().unwrap().to_string();
    assert_ne!(b, a.public_ip.to_string(), "{rotated}");
    assert_eq!(
        rotated["old_public_ip"],
        a.public_ip.to_string(),
        "{rotated}"
    );
    assert_eq!(rotated["released_old"], true, "{rotated}");
    let steps: Vec<&str> = rotated["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|step| step["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "started",
            "allocated",
            "associated",
            "tunnel-up",
            "health-up",
            "released"
        ],
        "{rotated}"
    );
    assert!(
        rotated["tunnel_up_ms"].as_u64().unwrap() < 5_000,
        "the design's target: tunnel up on the new address within 5 s ({rotated}, {took:?})"
    );

    // EC2: B on the instance, A gone.
    let now = runtime
        .block_on(ec2.describe_addresses(&AddressFilter::All))
        .unwrap();
    let on_instance: Vec<String> = now
        .iter()
        .filter(|address| address.instance_id.as_deref() == Some(instance.instance_id.as_str()))
        .map(|address| address.public_ip.to_string())
        .collect();
    assert_eq!(on_instance, vec![b.clone()], "{now:?}");
    assert!(
        !now.iter()
            .any(|address| address.allocation_id == a.allocation_id),
        "{now:?}"
    );
    let tunnels = rpc_call(host, "tunnel.list", "{}");
    let ba_tunnel = tunnels["tunnels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|tunnel| tunnel["name"] == "ba")
        .unwrap()
        .clone();
    assert_eq!(ba_tunnel["address"], b.as_str(), "{tunnels}");
    assert_eq!(ba_tunnel["connected"], true, "{tunnels}");

    // Only the new address leads to ba now: its configured one is unreachable from the
    // validator (ba keeps its private address, as an instance behind a public IP does, so
    // that it can answer) and bb is cut off. A reconnect must find ba at B, and the
    // validator must keep signing through it.
    world.shim.wait_synced(TUNNEL);
    mesh.val
        .ip(&["route", "add", "unreachable", &format!("{BA_IP}/32")]);
    mesh.val.assert_unreachable(BA_IP, SSH_PORT);
    mesh.val_bb.set_down();
    rpc_call(host, "tunnel.reconnect", r#"{"bastion":"ba"}"#);
    let before = signed(&mesh.record()).0;
    mesh.wait_for(LONG, |record| signed(record).0 >= before + 5);

    // The journal: every step, with its duration; nothing unfinished.
    let status = rpc_call(host, "eip.status", "{}");
    assert!(status["in_progress"].is_null(), "{status}");
    let journal: Vec<(&str, bool)> = status["journal"]
        .as_array()
        .unwrap()
        .iter()
        .map(|record| (record["step"].as_str().unwrap(), record["took_ms"].is_u64()))
        .collect();
    assert_eq!(
        journal,
        [
            ("started", true),
            ("allocated", true),
            ("associated", true),
            ("tunnel-up", true),
            ("health-up", true),
            ("released", true),
            ("done", true)
        ],
        "{status}"
    );
    let saved: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(host.home.join("palisade/eip/addresses.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(saved["ba"]["public_ip"], b.as_str(), "{saved}");
    let output = supervisor.stop();
    assert!(output.contains("elastic IP rotation"), "{output}");
    let record = mesh.record();
    assert!(record.double_signs.is_empty(), "{:?}", record.double_signs);
    assert!(signed(&record).0 > signed(&start).0);
}

/// Issue 14: a supervisor killed (SIGKILL) after each step of a rotation finishes it at its
/// next start, once the vault is unlocked: before the tunnel was confirmed on the new address
/// it rolls back (the old address on ba's instance again, the new one released, even when the
/// crash came between moto allocating it and the journal recording it), after it it rolls
/// forward (the old one released). Each time exactly one address is on the instance, no
/// allocation is left behind, the tunnel is up on that address, and the chain goes on.
#[test]
fn a_rotation_interrupted_after_each_step_is_rolled_back_or_finished_at_the_next_start() {
    use std::sync::atomic::Ordering::SeqCst;
    let mut world = EipWorld::build();
    let mut supervisor = world.host.run(&world.mesh);
    world.mesh.wait_for(LONG, |record| signed(record).0 >= 3);
    let mut current = world.a.public_ip.to_string();
    // (the step the crash follows, the EC2 request whose answer is held back: 1 Describe,
    // 2 Allocate, 3 Associate, 4 Describe the old address, 5 Release; the outcome)
    let cases: [(&str, Option<usize>, &str); 4] = [
        ("started", Some(2), "rolled-back"),
        ("allocated", Some(3), "rolled-back"),
        ("associated", None, "rolled-back"),
        ("health-up", Some(4), "done"),
    ];
    for (after, hold, outcome) in cases {
        world.relay.hold_request(hold);
        let records_before = world.journal().len();
        if hold.is_none() {
            // ba's sshd is gone: the tunnel cannot come up on the new address, and the
            // rotation waits after `associated`.
            world.mesh.sshd_ba.kill();
        }
        let caller = {
            let socket = world.host.socket();
            let home = world.host.scratch.path().to_path_buf();
            std::thread::spawn(move || {
                common::run_ctl(
                    &home,
                    &[
                        "--socket",
                        socket.to_str().unwrap(),
                        "--json",
                        "call",
                        "eip.rotate",
                        "--params",
                        r#"{"bastion":"ba"}"#,
                    ],
                    None,
                )
            })
        };
        let deadline = Instant::now() + LONG;
        loop {
            let journal = world.journal();
            if journal.len() > records_before
                && journal.last().unwrap()["step"] == after
                && (hold.is_none() || world.relay.holding())
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no `{after}` record with the next answer held: requests {}, holding {}, journal {journal:?}",
                world.relay.requests.load(SeqCst),
                world.relay.holding()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        supervisor.child.kill().unwrap();
        supervisor.child.wait().unwrap();
        let answer = caller.join().unwrap();
        assert!(
            !answer.status.success(),
            "{after}: the killed supervisor answered: {answer:?}"
        );
        let rotation = world.journal().last().unwrap()["rotation"]
            .as_str()
            .unwrap()
            .to_string();
        world.relay.hold_request(None);
        world.relay.holding.store(false, SeqCst);
        if hold.is_none() {
            world.mesh.sshd_ba.restart(&world.mesh.ba);
        }

        supervisor = world.host.run(&world.mesh);
        common::wait_until(
            LONG,
            &format!("{after}: the rotation resumed to `{outcome}`"),
            || {
                world.journal().last().is_some_and(|record| {
                    record["rotation"] == rotation.as_str() && record["step"] == outcome
                })
            },
        );
        let journal = world.journal();
        let last = journal.last().unwrap();
        if outcome == "done" {
            current = last["public_ip"].as_str().unwrap().to_string();
        }
        world.shim.wait_synced(TUNNEL);
        assert_eq!(
            world.on_instance(),
            vec![current.clone()],
            "{after}: {journal:?}"
        );
        assert_eq!(
            world.allocations().len(),
            1,
            "{after}: an allocation was left behind: {journal:?}"
        );
        common::wait_until(
            LONG,
            &format!("{after}: the tunnel up on {current}"),
            || {
                let tunnel = world.ba_tunnel();
                tunnel["connected"] == true && tunnel["address"].as_str() == Some(current.as_str())
            },
        );
        let status = rpc_call(&world.host, "eip.status", "{}");
        assert!(status["in_progress"].is_null(), "{after}: {status}");
        let before = signed(&world.mesh.record()).0;
        world
            .mesh
            .wait_for(LONG, |record| signed(record).0 >= before + 3);
    }
    let output = supervisor.stop();
    assert!(
        output.contains("resuming an elastic IP rotation"),
        "{output}"
    );
    let record = world.mesh.record();
    assert!(record.double_signs.is_empty(), "{:?}", record.double_signs);
}

/// Issue 14: the automatic trigger. ba's current address becomes unreachable from the
/// validator (a flood, as the validator sees it) while bb stays up: after `[eip.auto] after`
/// the supervisor moves ba to a new address on its own, logs why, and the tunnel comes back on
/// it. When ba goes down again within the cooldown, nothing more happens.
#[test]
fn the_automatic_trigger_moves_a_bastion_under_attack_once_per_cooldown() {
    let mut world = EipWorld::build_with("[eip.auto]\nafter = \"2s\"\ncooldown = \"1h\"\n");
    let supervisor = world.host.run(&world.mesh);
    world.mesh.wait_for(LONG, |record| signed(record).0 >= 3);
    // The attack: ba's address (the configured one) no longer answers the validator.
    world
        .mesh
        .val
        .ip(&["route", "add", "unreachable", &format!("{BA_IP}/32")]);
    let new = world.wait_rotation_done("an automatic rotation of ba");
    common::wait_until(LONG, "ba's tunnel up on the new address", || {
        let tunnel = world.ba_tunnel();
        tunnel["connected"] == true && tunnel["address"].as_str() == Some(new.as_str())
    });
    world.shim.wait_synced(TUNNEL);
    assert_eq!(world.on_instance(), vec![new.clone()]);
    // Down again, within the cooldown: no second rotation.
    world.mesh.sshd_ba.kill();
    common::wait_until(LONG, "ba's tunnel down", || {
        world.ba_tunnel()["connected"] == false
    });
    std::thread::sleep(Duration::from_secs(4));
    let rotations: std::collections::BTreeSet<String> = world
        .journal()
        .iter()
        .map(|record| record["rotation"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(rotations.len(), 1, "{:?}", world.journal());
    world.mesh.sshd_ba.restart(&world.mesh.ba);
    let output = supervisor.stop();
    assert!(
        output
            .contains("automatic elastic IP rotation of bastion ba: its tunnel has been down for"),
        "{output}"
    );
    assert!(
        output.contains("automatic elastic IP rotation done"),
        "{output}"
    );
    let record = world.mesh.record();
    assert!(record.double_signs.is_empty(), "{:?}", record.double_signs);
}
