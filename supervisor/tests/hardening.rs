//! Attacks and mistakes from the hardening review (issue 16), each
//! reproduced against the real supervisor; each test fails without its fix.

mod common;

use common::timing::{BLOCK, LONG};
use common::{VaultRpc, wait_for_node_state};

const PASSPHRASE: &str = "hardening passphrase";

/// Finding 9: `restore-state` while the supervisor runs would write a state
/// that gaiad, still signing, overwrites with its own: refused, naming the
/// ways that work, and nothing is changed.
#[test]
fn restore_state_is_refused_while_a_supervisor_runs() {
    let fixture = VaultRpc::setup(BLOCK, PASSPHRASE, "", "");
    let passphrase = fixture.chain.dir.path().join("passphrase");
    let state = fixture
        .chain
        .home
        .join("data")
        .join("priv_validator_state.json");
    let supervisor = fixture.run();
    wait_for_node_state(&fixture.socket, "locked", LONG);
    fixture.unlock();
    fixture.chain.wait_signing(2, LONG);

    // The local state lost its recent heights while gaiad runs.
    let backups_before = std::fs::read_dir(fixture.chain.home.join("palisade/backups"))
        .unwrap()
        .count();
    assert!(backups_before > 0);
    let output = fixture
        .command()
        .args(["restore-state", "--passphrase-file"])
        .arg(&passphrase)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{output:?}");
    for words in [
        "a supervisor is running",
        fixture.socket.to_str().unwrap(),
        "palisade-ctl node stop",
        "nothing was changed",
    ] {
        assert!(stderr.contains(words), "{words:?} not in {stderr}");
    }
    let status = common::status(&fixture.socket).unwrap();
    assert_eq!(status["node"]["state"], "running", "{status}");
    supervisor.stop();
    // Stopped, it works (nothing to restore: the state is the newest).
    let output = fixture
        .command()
        .args(["restore-state", "--passphrase-file"])
        .arg(&passphrase)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("a supervisor is running"), "{stderr}");
    assert!(state.exists());
}
