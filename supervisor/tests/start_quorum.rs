//! The fail-closed start on one host, against the real supervisor, simd
//! and (for the bastion store) a tunnel that cannot connect:
//!
//! - a start with fewer readable backup stores than `[backup] start-quorum`
//!   is refused and the vault locked again, naming the store and both ways
//!   out; the operator's `unlock --accept-unreachable-stores` then starts
//!   it, and the override is recorded; `run --accept-unreachable-stores`
//!   does the same for the unattended start;
//! - the high-water record beside the vault refuses a state file that went
//!   back, even when no backup is left to tell;
//! - a backup at the local state's height/round/step with other sign bytes
//!   refuses the start.

mod common;

use std::path::PathBuf;

use common::timing::{BLOCK, LONG};
use common::{Supervisor, VaultRpc, wait_for_node_state};
use palisade_simchain::testkit::free_port;

const PASSPHRASE: &str = "quorum passphrase";

/// A vault fixture whose `[backup]` has `settings` and which names one
/// bastion with a backup store that never answers (nothing listens on its
/// port), so the stores are `local` (answers) and `bastion:b1` (does not).
fn with_dead_bastion(settings: &str) -> VaultRpc {
    let fixture = VaultRpc::setup(BLOCK, PASSPHRASE, "", "");
    let dir = fixture.chain.dir.path();
    let key = dir.join("tunnel_key");
    palisade_testkit::ssh_keygen(&key).unwrap();
    let config = std::fs::read_to_string(&fixture.config).unwrap();
    let config = config.replace("[backup]\n", &format!("[backup]\n{settings}\n"));
    let config = format!(
        "{config}\n[tunnel]\nkey-file = {key:?}\nconnect-timeout = \"1s\"\n\
         [[bastion]]\nname = \"b1\"\nhost = \"127.0.0.1\"\nport = {port}\nuser = \"palisade\"\n\
         host-key-fingerprints = [\"SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU\"]\n\
         backup-command = \"palisade-bastion backup-session\"\n",
        port = free_port(),
    );
    std::fs::write(&fixture.config, config).unwrap();
    fixture
}

fn vault_dir(fixture: &VaultRpc) -> PathBuf {
    fixture.chain.home.join("palisade").join("vault")
}

fn state_path(fixture: &VaultRpc) -> PathBuf {
    fixture
        .chain
        .home
        .join("data")
        .join("priv_validator_state.json")
}

fn overrides(fixture: &VaultRpc) -> Vec<serde_json::Value> {
    std::fs::read_to_string(vault_dir(fixture).join("start-overrides.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn unlock(fixture: &VaultRpc, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["unlock", "--passphrase-stdin"];
    args.extend(extra);
    fixture.ctl(&args, Some(&format!("{PASSPHRASE}\n")))
}

#[test]
fn a_missing_store_quorum_refuses_the_start_until_an_operator_accepts_it() {
    let fixture = with_dead_bastion("start-quorum-wait = \"2s\"");
    let state_before = std::fs::read(state_path(&fixture)).unwrap();
    let supervisor = fixture.run();
    wait_for_node_state(&fixture.socket, "locked", LONG);

    let output = unlock(&fixture, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{output:?}");
    for words in [
        "refusing to start",
        "only 1 of 2 backup stores",
        "bastion:b1",
        "--accept-unreachable-stores",
        "palisade-ctl unlock",
    ] {
        assert!(stderr.contains(words), "{words:?} not in {stderr}");
    }
    // Locked again, nothing started, nothing changed, nothing recorded.
    let status = wait_for_node_state(&fixture.socket, "locked", LONG);
    assert_eq!(status["vault"]["locked"], true, "{status}");
    assert!(
        !supervisor.has_line("daemon started"),
        "{}",
        supervisor.output()
    );
    assert_eq!(std::fs::read(state_path(&fixture)).unwrap(), state_before);
    assert!(overrides(&fixture).is_empty());
    assert!(
        supervisor.has_line("waiting for backup stores"),
        "{}",
        supervisor.output()
    );

    // The operator accepts the unreachable store: it starts, and says so.
    let output = unlock(&fixture, &["--accept-unreachable-stores"]);
    assert!(output.status.success(), "{output:?}");
    fixture.chain.wait_signing(3, LONG);
    let recorded = overrides(&fixture);
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0]["required"], 2);
    assert_eq!(recorded[0]["answered"], serde_json::json!(["local"]));
    assert_eq!(recorded[0]["unreachable"][0]["store"], "bastion:b1");
    assert!(
        recorded[0]["accepted_by"]
            .as_str()
            .is_some_and(|by| by.contains("vault.unlock")),
        "{recorded:?}"
    );
    assert!(
        supervisor.has_line("starting without the store quorum"),
        "{}",
        supervisor.output()
    );
    fixture.chain.assert_no_double_sign();
    supervisor.stop();
}

#[test]
fn run_accepts_unreachable_stores_for_the_unattended_start_only_when_told() {
    let fixture = with_dead_bastion("start-quorum-wait = \"1s\"");
    let passphrase = fixture.chain.dir.path().join("passphrase");
    let config = std::fs::read_to_string(&fixture.config).unwrap();
    let config = config.replace(
        "[vault]\n",
        &format!("[vault]\npassphrase-file = {passphrase:?}\n"),
    );
    std::fs::write(&fixture.config, config).unwrap();

    // Without the flag the unattended start is refused and waits locked.
    let supervisor = fixture.run();
    wait_for_node_state(&fixture.socket, "locked", LONG);
    common::wait_until(LONG, "the refusal", || {
        supervisor.has_line("refusing to start: only 1 of 2 backup stores")
    });
    assert!(!supervisor.has_line("daemon started"));
    supervisor.stop();

    let mut command = fixture.command();
    command
        .args(["run", "--accept-unreachable-stores", "start", "--home"])
        .arg(&fixture.chain.home)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let supervisor = Supervisor::spawn(command);
    fixture.chain.wait_signing(3, LONG);
    let recorded = overrides(&fixture);
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert!(
        recorded[0]["accepted_by"]
            .as_str()
            .is_some_and(|by| by.contains("run --accept-unreachable-stores")),
        "{recorded:?}"
    );
    supervisor.stop();
}

#[test]
fn a_start_quorum_of_one_starts_with_a_store_down() {
    let fixture = with_dead_bastion("start-quorum = 1");
    let supervisor = fixture.run();
    wait_for_node_state(&fixture.socket, "locked", LONG);
    fixture.unlock();
    fixture.chain.wait_signing(2, LONG);
    assert!(overrides(&fixture).is_empty());
    supervisor.stop();
}

#[test]
fn bad_start_quorum_settings_are_refused_by_the_config_check() {
    for (setting, words) in [
        ("start-quorum = 0", "backup.start-quorum"),
        (
            "start-quorum = \"most\"",
            "must be \"all\" or a number of stores",
        ),
        ("start-quorum-wait = \"soon\"", "backup.start-quorum-wait"),
    ] {
        let fixture = with_dead_bastion(setting);
        let output = fixture.command().arg("config").output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{setting}: {output:?}");
        assert!(stderr.contains(words), "{words:?} not in {stderr}");
    }
}

/// Runs a vault fixture until it has signed, then stops it (final backup).
fn signed_and_stopped(fixture: &VaultRpc, blocks: u64) {
    let supervisor = fixture.run();
    wait_for_node_state(&fixture.socket, "locked", LONG);
    fixture.unlock();
    fixture.chain.wait_signing(blocks, LONG);
    supervisor.stop();
}

fn start_refusal(fixture: &VaultRpc) -> (String, String) {
    let mut supervisor = fixture.run();
    wait_for_node_state(&fixture.socket, "locked", LONG);
    let output = unlock(fixture, &[]);
    assert!(!output.status.success(), "{output:?}");
    let status = supervisor.wait_exit(LONG);
    assert_eq!(status.code(), Some(4), "{}", supervisor.output());
    assert!(
        !supervisor.has_line("daemon started"),
        "{}",
        supervisor.output()
    );
    (
        String::from_utf8_lossy(&output.stderr).into_owned(),
        supervisor.output(),
    )
}

#[test]
fn a_state_file_below_the_high_water_record_is_refused_without_any_backup() {
    let fixture = VaultRpc::setup(BLOCK, PASSPHRASE, "", "");
    let state = state_path(&fixture);
    signed_and_stopped(&fixture, 2);
    let early = std::fs::read(&state).unwrap();
    signed_and_stopped(&fixture, 3);
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(vault_dir(&fixture).join("high-water.json")).unwrap(),
    )
    .unwrap();
    let final_state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(record["height"], final_state["height"], "{record}");
    assert!(
        record["sequence"].as_str().unwrap().parse::<u64>().unwrap() > 0,
        "{record}"
    );

    // The state file goes back (an old disk snapshot) and every backup is
    // gone: only the host's own record knows.
    std::fs::write(&state, &early).unwrap();
    let backups = fixture.chain.home.join("palisade").join("backups");
    std::fs::remove_dir_all(&backups).unwrap();
    let (stderr, output) = start_refusal(&fixture);
    for words in ["high-water record", "high-water.json", "went back"] {
        assert!(stderr.contains(words), "{words:?} not in {stderr}");
    }
    assert!(output.contains("refusing to start"), "{output}");
    assert_eq!(
        std::fs::read(&state).unwrap(),
        early,
        "the state file changed"
    );

    // A damaged record is not a reset: the start stops, naming it.
    std::fs::write(vault_dir(&fixture).join("high-water.json"), b"{").unwrap();
    let mut supervisor = fixture.run();
    wait_for_node_state(&fixture.socket, "locked", LONG);
    let output = unlock(&fixture, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("high-water.json") && stderr.contains("damaged"),
        "{stderr}"
    );
    assert_eq!(
        supervisor.wait_exit(LONG).code(),
        Some(1),
        "{}",
        supervisor.output()
    );
}

#[test]
fn equal_height_round_step_with_other_sign_bytes_refuses_the_start() {
    let fixture = VaultRpc::setup(BLOCK, PASSPHRASE, "", "");
    let state = state_path(&fixture);
    signed_and_stopped(&fixture, 3);
    // The final backup holds this very state. A second signer would have
    // signed something else at the same height, round and step.
    let mut value: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    let signbytes = value["signbytes"].as_str().unwrap().to_owned();
    assert!(!signbytes.is_empty(), "{value}");
    let flipped: String = signbytes
        .chars()
        .enumerate()
        .map(|(index, c)| {
            if index == signbytes.len() - 1 {
                if c == '0' { '1' } else { '0' }
            } else {
                c
            }
        })
        .collect();
    value["signbytes"] = serde_json::Value::String(flipped);
    let altered = serde_json::to_vec(&value).unwrap();
    std::fs::write(&state, &altered).unwrap();

    let (stderr, _) = start_refusal(&fixture);
    for words in [
        "different sign bytes",
        "priv_validator_state.json",
        "written by host",
    ] {
        assert!(stderr.contains(words), "{words:?} not in {stderr}");
    }
    assert_eq!(std::fs::read(&state).unwrap(), altered);
}
