//! Issue 16, finding 4 (rest): the node (gaiad) under an account of its own
//! (`[daemon] user`), with the supervisor as an unprivileged user holding
//! only the capabilities it needs (the unit's `AmbientCapabilities=`),
//! started here with `setpriv` from util-linux. Needs root (CI runs as
//! root); numeric uids, so the host's passwd is not touched.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};

use common::timing::{BLOCK, LONG};
use common::{SUPERVISOR, Supervisor, VaultRpc, supervisor_env};

const PASSPHRASE: &str = "node account passphrase";
/// The supervisor's account.
const SUPERVISOR_UID: u32 = 61_001;
/// The node's account (and its group).
const NODE_UID: u32 = 61_002;
const CAPABILITIES: &str = "+setuid,+setgid,+kill,+chown,+dac_override";

fn chown_tree(path: &Path, uid: u32) {
    let status = Command::new("chown")
        .args(["-R", &format!("{uid}:{uid}")])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The fixture's files owned as on a host set up per docs/supervisor.md:
/// everything the supervisor's, the node's `config/` and `data/` the node's.
fn fixture() -> VaultRpc {
    assert!(
        nix::unistd::geteuid().is_root(),
        "needs root: the test switches between two uids"
    );
    let fixture = VaultRpc::setup(
        BLOCK,
        PASSPHRASE,
        "",
        &format!("[daemon]\nuser = \"{NODE_UID}\"\ngroup = \"{NODE_UID}\"\n"),
    );
    let dir = fixture.chain.dir.path();
    chown_tree(dir, SUPERVISOR_UID);
    chmod(dir, 0o755);
    chmod(&fixture.chain.home, 0o755);
    for part in ["config", "data"] {
        chown_tree(&fixture.chain.home.join(part), NODE_UID);
    }
    // The key directory's parent: private to root, searchable by the node.
    let shm = fixture.tmpfs.parent().unwrap();
    chmod(shm, 0o755);
    fixture
}

/// `palisade-supervisor run start` as SUPERVISOR_UID, with `capabilities`
/// (ambient, as the unit gives them) or none.
fn run_as_supervisor_user(fixture: &VaultRpc, capabilities: Option<&str>) -> Supervisor {
    let mut command = Command::new("setpriv");
    command.args([
        &format!("--reuid={SUPERVISOR_UID}"),
        &format!("--regid={SUPERVISOR_UID}"),
        "--clear-groups",
    ]);
    if let Some(capabilities) = capabilities {
        command.args([
            format!("--inh-caps={capabilities}"),
            format!("--ambient-caps={capabilities}"),
        ]);
    }
    command.arg("--").arg(SUPERVISOR);
    supervisor_env(&mut command, &fixture.chain.home, "simd");
    command
        .env("PALISADE_CONFIG", &fixture.config)
        .args(["run", "start", "--home"])
        .arg(&fixture.chain.home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Supervisor::spawn(command)
}

/// `/proc/PID/status` field `name`, whitespace-separated.
fn status_field(pid: u32, name: &str) -> Vec<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_node_runs_under_its_own_account_with_no_capability_and_signs() {
    let fixture = fixture();
    let supervisor = run_as_supervisor_user(&fixture, Some(CAPABILITIES));
    common::wait_until(LONG, "the control socket", || fixture.socket.exists());
    let unlock = fixture.ctl(
        &[
            "--server-user",
            &SUPERVISOR_UID.to_string(),
            "unlock",
            "--passphrase-stdin",
        ],
        Some(&format!("{PASSPHRASE}\n")),
    );
    assert!(unlock.status.success(), "unlock: {unlock:?}");
    fixture.chain.wait_signing(2, LONG);

    let own = supervisor.child.id();
    assert_eq!(
        status_field(own, "Uid"),
        vec![SUPERVISOR_UID.to_string(); 4]
    );
    let children = supervisor.children();
    assert!(!children.is_empty(), "the node is not running");
    for pid in children {
        let node = NODE_UID.to_string();
        assert_eq!(
            status_field(pid, "Uid"),
            vec![node.clone(); 4],
            "node {pid}"
        );
        assert_eq!(
            status_field(pid, "Gid"),
            vec![node.clone(); 4],
            "node {pid}"
        );
        // The supervisor's groups are gone; only the node's own is left.
        assert_eq!(
            status_field(pid, "Groups"),
            vec![node.clone()],
            "node {pid}"
        );
        for capabilities in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
            assert_eq!(
                status_field(pid, capabilities),
                ["0000000000000000"],
                "node {pid}: {capabilities}"
            );
        }
        assert_eq!(status_field(pid, "NoNewPrivs"), ["1"], "node {pid}");
    }

    // The keys: the supervisor's files, readable (not writable) by the node's group.
    let keys = std::fs::metadata(&fixture.tmpfs).unwrap();
    assert_eq!(
        (keys.uid(), keys.gid(), keys.mode() & 0o7777),
        (SUPERVISOR_UID, NODE_UID, 0o750)
    );
    let key = std::fs::metadata(fixture.tmpfs.join("priv_validator_key.json")).unwrap();
    assert_eq!(
        (key.uid(), key.gid(), key.mode() & 0o7777),
        (SUPERVISOR_UID, NODE_UID, 0o640)
    );
    // config.toml, rewritten to name the keys, is still the node's.
    let config = std::fs::metadata(fixture.chain.home.join("config/config.toml")).unwrap();
    assert_eq!((config.uid(), config.gid()), (NODE_UID, NODE_UID));
    // The node's account cannot read the vault.
    let vault = fixture.chain.home.join("palisade/vault/identity.age");
    let read = Command::new("setpriv")
        .args([
            &format!("--reuid={NODE_UID}"),
            &format!("--regid={NODE_UID}"),
            "--clear-groups",
            "--",
            "cat",
        ])
        .arg(&vault)
        .output()
        .unwrap();
    assert!(
        !read.status.success(),
        "the node's account read the vault: {read:?}"
    );
    assert!(
        String::from_utf8_lossy(&read.stderr).contains("Permission denied"),
        "{read:?}"
    );
    supervisor.stop();
    fixture.chain.assert_no_double_sign();
}

/// Without the capabilities it needs, the supervisor refuses to start
/// (rather than run the node as itself), and says what to set.
#[test]
fn without_the_capabilities_the_supervisor_refuses_to_start() {
    let fixture = fixture();
    let mut supervisor = run_as_supervisor_user(&fixture, None);
    let status = supervisor.wait_exit(LONG);
    assert!(!status.success());
    let output = supervisor.output();
    assert!(output.contains("lacks CAP_SETUID"), "{output}");
    assert!(output.contains("AmbientCapabilities="), "{output}");
    assert!(!output.contains("daemon started"), "{output}");
}

/// The sign state the supervisor writes (a restore, a raise from a backup) into the node's
/// `data/` stays the node's own, mode 0600 as CometBFT writes it, so that gaiad can keep
/// rewriting it; in the supervisor's own directory it stays the supervisor's.
#[test]
fn a_sign_state_written_into_the_nodes_directory_stays_the_nodes() {
    use palisade_supervisor::sign_state::{SignState, Step, Watermark, write_atomic};
    assert!(
        nix::unistd::geteuid().is_root(),
        "needs root: the test chowns a directory"
    );
    let dir = tempfile::tempdir().unwrap();
    let nodes = dir.path().join("data");
    std::fs::create_dir(&nodes).unwrap();
    chown_tree(&nodes, NODE_UID);
    let state = SignState::from_watermark(Watermark {
        height: 7,
        round: 0,
        step: Step::Precommit,
    });
    for (directory, owner) in [(&nodes, NODE_UID), (&dir.path().to_path_buf(), 0)] {
        let path = directory.join("priv_validator_state.json");
        write_atomic(&path, &state, None).unwrap();
        let metadata = std::fs::metadata(&path).unwrap();
        assert_eq!(
            (metadata.uid(), metadata.gid(), metadata.mode() & 0o7777),
            (owner, owner, 0o600),
            "{}",
            path.display()
        );
    }
}
