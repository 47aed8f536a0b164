//! `backup.list`, `backup.restore` and `host.shutdown` end to end: the real
//! supervisor on the simulated chain, driven by the real `palisade-ctl` as
//! a trusted local user over the plaintext local socket.
//!
//! - Backups are listed per store, newest first; a restore is refused while
//!   the node runs and while the vault is locked; with the node stopped, a
//!   backup at or below the local state, a backup below another valid one,
//!   a junk file and an unknown store are refused and the state file stays
//!   byte for byte the same; after a simulated loss of recent state the
//!   newest backup raises it, and the node signs on without a double sign.
//! - `host.shutdown`: wrong and malformed tokens and a wrong typed name
//!   change nothing; the confirmed shutdown answers, takes the final
//!   backup, wipes the keys, runs the configured command (a marker file
//!   here) and the supervisor exits 0.

mod common;

use std::path::{Path, PathBuf};

use common::timing::{BLOCK, LONG};
use common::{Supervisor, VaultRpc};
use serde_json::Value;

const PASSPHRASE: &str = "control backups passphrase";

/// The shared vault-and-RPC fixture ([`common::VaultRpc`]).
struct Fixture(VaultRpc);

impl std::ops::Deref for Fixture {
    type Target = VaultRpc;

    fn deref(&self) -> &VaultRpc {
        &self.0
    }
}

/// A chain, a vault, and a config with `extra` appended (whole sections).
fn setup(extra: &str) -> Fixture {
    Fixture(VaultRpc::setup(BLOCK, PASSPHRASE, "", extra))
}

impl Fixture {
    /// Runs the supervisor and waits until it is locked and answering.
    fn run(&self) -> Supervisor {
        let supervisor = self.0.run();
        common::wait_for_node_state(&self.socket, "locked", LONG);
        supervisor
    }

    /// A call that must succeed; its `--json` result.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let output = self.ctl(&all, None);
        assert!(output.status.success(), "{args:?}: {output:?}");
        serde_json::from_slice(&output.stdout).unwrap()
    }

    /// A call that must fail with exit code 1 and `words` in its error.
    fn refused(&self, args: &[&str], words: &[&str]) -> String {
        let output = self.ctl(args, None);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(output.status.code(), Some(1), "{args:?}: {output:?}");
        for word in words {
            assert!(stderr.contains(word), "{args:?}: {word:?} in {stderr}");
        }
        stderr
    }

    fn unlock(&self) {
        let output = self.ctl(
            &["unlock", "--passphrase-stdin"],
            Some(&format!("{PASSPHRASE}\n")),
        );
        assert!(output.status.success(), "unlock: {output:?}");
    }

    fn state_path(&self) -> PathBuf {
        self.chain.home.join("data/priv_validator_state.json")
    }

    fn state_bytes(&self) -> Vec<u8> {
        std::fs::read(self.state_path()).unwrap()
    }

    fn state_height(&self) -> u64 {
        let state: Value = serde_json::from_slice(&self.state_bytes()).unwrap();
        state["height"].as_str().unwrap().parse().unwrap()
    }

    fn backup_dir(&self) -> PathBuf {
        self.chain.home.join("palisade/backups")
    }

    /// The local store's listing, newest first.
    fn local_backups(&self) -> Vec<Value> {
        let listing = self.json(&["backups", "--limit", "100"]);
        let local = listing["stores"]
            .as_array()
            .unwrap()
            .iter()
            .find(|store| store["store"] == "local")
            .unwrap_or_else(|| panic!("no local store in {listing}"))
            .clone();
        assert_eq!(local["reachable"], true, "{listing}");
        local["backups"].as_array().unwrap().clone()
    }
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| entries.count())
        .unwrap_or(0)
}

/// A CometBFT sign state at `height`, precommit of round 0.
fn state_at(height: u64) -> String {
    format!("{{\n  \"height\": \"{height}\",\n  \"round\": 0,\n  \"step\": 3\n}}")
}

#[test]
fn backups_are_listed_and_restored_without_ever_lowering_the_sign_state() {
    let fixture = setup("");
    let supervisor = fixture.run();

    // Locked: the listing needs no secret; a restore cannot decrypt.
    let listing = fixture.json(&["backups"]);
    assert_eq!(listing["stores"][0]["store"], "local", "{listing}");
    assert_eq!(listing["stores"][0]["reachable"], true, "{listing}");
    fixture.refused(
        &[
            "restore",
            "local",
            "backup-sim-1-0000000000000000000000000000000000000000-00000000000000000001-h1.age",
        ],
        &["vault is locked", "restore-state", "code -32004"],
    );

    fixture.unlock();
    fixture.chain.wait_signing(10, LONG);
    let written = fixture.json(&["backup-now"]);
    let newest = written["backup"]["file"].as_str().unwrap().to_string();

    // Listed newest first (the node still signs, so more may follow).
    let backups = fixture.local_backups();
    assert!(backups.len() >= 2, "{backups:?}");
    assert!(
        backups.iter().any(|b| b["file"] == newest.as_str()),
        "{newest} not in {backups:?}"
    );
    assert!(backups[0]["at"].as_u64().unwrap() > 1_600_000_000);
    let sequences: Vec<u64> = backups
        .iter()
        .map(|b| b["sequence"].as_u64().unwrap())
        .collect();
    assert!(
        sequences.windows(2).all(|pair| pair[0] > pair[1]),
        "{sequences:?}"
    );
    // The readable rendering names the store and the file.
    let readable = fixture.ctl(&["backups"], None);
    let text = String::from_utf8_lossy(&readable.stdout);
    assert!(
        readable.status.success() && text.contains("local: ") && text.contains(&newest),
        "{readable:?}"
    );

    // Running: refused, whatever the backup.
    fixture.refused(
        &["restore", "local", &newest],
        &["stop the node first (node.stop)", "code -32004"],
    );

    // Stopped, with the final state backed up.
    let stop = fixture.ctl(&["node", "stop"], None);
    assert!(stop.status.success(), "{stop:?}");
    let final_backup = fixture.json(&["backup-now"]);
    let final_file = final_backup["backup"]["file"].as_str().unwrap().to_string();
    let stopped_state = fixture.state_bytes();
    let final_height = fixture.state_height();
    // The newest is the last one written: its full watermark is known.
    let backups = fixture.local_backups();
    assert_eq!(backups[0]["file"], final_file.as_str(), "{backups:?}");
    assert_eq!(backups[0]["height"], final_height);
    assert_eq!(backups[0]["sequence"], final_backup["backup"]["sequence"]);
    assert_eq!(backups[0]["watermark"], final_backup["backup"]["watermark"]);
    assert_eq!(backups[1]["watermark"], Value::Null, "{backups:?}");
    let oldest = backups.last().unwrap()["file"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        backups.last().unwrap()["height"].as_u64().unwrap() < final_height,
        "{backups:?}"
    );

    // Never lower, never rewrite: the state file stays byte for byte.
    for file in [&oldest, &final_file] {
        fixture.refused(
            &["restore", "local", file],
            &[
                "not above the local sign state",
                "never lowers",
                "nothing was changed",
            ],
        );
        assert_eq!(fixture.state_bytes(), stopped_state, "{file}");
    }
    // Unknown store, malformed name, file not there, junk under a backup
    // name (one above everything, so only verification stops it).
    fixture.refused(
        &["restore", "nowhere", &final_file],
        &["no backup store named nowhere", "code -32602"],
    );
    fixture.refused(
        &[
            "call",
            "backup.restore",
            "--unchecked",
            "--params",
            r#"{"store":"local","file":"../data/priv_validator_state.json"}"#,
        ],
        &["code -32602"],
    );
    let (prefix, _) = final_file.rsplit_once("-h").unwrap();
    let (prefix, _) = prefix.rsplit_once('-').unwrap();
    let absent = format!("{prefix}-09999999999999999999-h1.age");
    fixture.refused(
        &["restore", "local", &absent],
        &["is not in store local", "nothing was changed"],
    );
    let junk = format!("{prefix}-09999999999999999998-h{}.age", final_height + 1000);
    std::fs::write(fixture.backup_dir().join(&junk), b"not an age file at all").unwrap();
    fixture.refused(
        &["restore", "local", &junk],
        &["is rejected", "nothing was changed"],
    );
    std::fs::remove_file(fixture.backup_dir().join(&junk)).unwrap();
    assert_eq!(fixture.state_bytes(), stopped_state);

    // The local state loses its recent heights (a restored disk snapshot).
    assert!(final_height > 8, "signed only up to {final_height}");
    let lagged = final_height - 5;
    std::fs::write(fixture.state_path(), state_at(lagged)).unwrap();
    // A backup above the lagged state but below the newest is still refused.
    let middle = fixture
        .local_backups()
        .into_iter()
        .find(|b| {
            let height = b["height"].as_u64().unwrap();
            height > lagged && height < final_height
        })
        .unwrap_or_else(|| panic!("no backup between {lagged} and {final_height}"));
    fixture.refused(
        &["restore", "local", middle["file"].as_str().unwrap()],
        &[
            "never restore below the highest known backup",
            &final_file,
            "nothing was changed",
        ],
    );
    assert_eq!(fixture.state_height(), lagged);

    // The newest backup raises it back.
    let restored = fixture.json(&["restore", "local", &final_file]);
    assert_eq!(
        restored["restored"]["file"],
        final_file.as_str(),
        "{restored}"
    );
    assert_eq!(
        restored["restored"]["watermark"], final_backup["backup"]["watermark"],
        "{restored}"
    );
    assert_eq!(
        restored["previous"],
        format!("height {lagged} round 0 step 3"),
        "{restored}"
    );
    assert_eq!(fixture.state_height(), final_height);
    let status = fixture.json(&["status"]);
    assert_eq!(status["watermark"]["height"], final_height, "{status}");
    assert_eq!(status["node"]["state"], "stopped", "{status}");
    assert!(
        supervisor.children().is_empty(),
        "gaiad ran during a restore"
    );

    // The node signs on from there, with no double sign.
    let start = fixture.ctl(&["node", "start"], None);
    assert!(start.status.success(), "{start:?}");
    let last = fixture.chain.wait_signing(3, LONG);
    assert!(
        last > final_height,
        "signed {last}, restored {final_height}"
    );
    fixture.chain.assert_no_double_sign();

    let output = supervisor.stop();
    assert!(output.contains("sign state restored from a backup"));
    assert!(!output.contains(PASSPHRASE));
}

#[test]
fn host_shutdown_is_confirmed_then_stops_backs_up_wipes_and_runs_the_command() {
    let probe = tempfile::tempdir().unwrap();
    let marker = probe.path().join("host-shut-down");
    let fixture = setup(&format!(
        "[host]\nshutdown-command = [\"/bin/sh\", \"-c\", \"echo poweroff > '{}'\"]\n",
        marker.display()
    ));
    let mut supervisor = fixture.run();
    fixture.unlock();
    fixture.chain.wait_signing(3, LONG);

    // Tokens that were never issued, or are not tokens: nothing happens.
    fixture.refused(
        &[
            "call",
            "host.shutdown",
            "--params",
            r#"{"confirm":"00000000000000000000000000000000"}"#,
        ],
        &[
            "unknown confirmation token",
            "nothing was changed",
            "code -32004",
        ],
    );
    fixture.refused(
        &[
            "call",
            "host.shutdown",
            "--unchecked",
            "--params",
            r#"{"confirm":"yes"}"#,
        ],
        &["code -32602", "confirm"],
    );
    fixture.refused(
        &[
            "call",
            "host.shutdown",
            "--unchecked",
            "--params",
            r#"{"now":true}"#,
        ],
        &["code -32602", "unknown field"],
    );
    // A token, then the wrong name typed: not confirmed, and that token
    // was replaced by the one shutdown-host asked for.
    let offer = fixture.json(&["call", "host.shutdown"]);
    let token = offer["confirm"].as_str().unwrap().to_string();
    assert_eq!(offer["expires_in_s"], 60, "{offer}");
    assert_eq!(offer["command"][0], "/bin/sh", "{offer}");
    let declined = fixture.ctl(&["shutdown-host"], Some("val2\n"));
    assert_eq!(declined.status.code(), Some(1), "{declined:?}");
    let stderr = String::from_utf8_lossy(&declined.stderr);
    assert!(
        stderr.contains("Type the validator's name (val1)"),
        "{stderr}"
    );
    assert!(stderr.contains("not confirmed"), "{stderr}");
    fixture.refused(
        &[
            "call",
            "host.shutdown",
            "--params",
            &format!(r#"{{"confirm":"{token}"}}"#),
        ],
        &["unknown confirmation token"],
    );
    assert!(!marker.exists(), "the command ran before a confirmation");
    let status = fixture.json(&["status"]);
    assert_eq!(status["node"]["state"], "running", "{status}");
    fixture.chain.wait_signing(2, LONG);

    let backups_before = count_files(&fixture.backup_dir());
    let descendants = common::all_descendants(supervisor.child.id());
    assert!(!descendants.is_empty(), "no node running");
    let confirmed = fixture.ctl(&["shutdown-host"], Some("val1\n"));
    assert!(confirmed.status.success(), "{confirmed:?}");
    let stdout = String::from_utf8_lossy(&confirmed.stdout);
    assert!(stdout.contains("host shutdown under way"), "{stdout}");

    let exit = supervisor.wait_exit(LONG);
    assert!(exit.success(), "supervisor exit {exit:?}");
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap_or_default().trim(),
        "poweroff"
    );
    assert!(
        count_files(&fixture.backup_dir()) > backups_before,
        "no final backup"
    );
    assert_eq!(count_files(&fixture.tmpfs), 0, "keys left in tmpfs");
    assert!(!fixture.socket.exists(), "control socket left behind");
    let lines = supervisor.output();
    let confirmed_at = lines
        .find("host shutdown confirmed over the control RPC")
        .expect("the confirmation logged");
    let final_backup = lines
        .find("reason=\"final backup on stop\"")
        .expect("a final backup");
    let wiped = lines
        .find("wiped the validator keys from tmpfs")
        .expect("keys wiped");
    let command = lines
        .find("running the host shutdown command")
        .expect("the command run");
    assert!(
        confirmed_at < final_backup && final_backup < wiped && wiped < command,
        "out of order:\n{}",
        common::tail(&lines, 40)
    );
    for pid in descendants {
        assert!(!common::process_alive(pid), "{pid} outlived the supervisor");
    }
    fixture.chain.assert_no_double_sign();
}
