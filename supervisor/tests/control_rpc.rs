//! End to end through the control RPC with the real binaries: a supervisor
//! that starts locked is unlocked with `palisade-ctl unlock`, its node signs
//! on the simulated chain, `status` reports it, and `node stop` / `node
//! start` stop and resume signing — all as a trusted local user (root or
//! the supervisor's own user) over the plaintext local socket.

mod common;

use std::time::Duration;

use common::VaultRpc;
use common::timing::{BLOCK, LONG};

const PASSPHRASE: &str = "control rpc passphrase";

/// The shared vault-and-RPC fixture, started locked.
type Locked = VaultRpc;

fn setup() -> Locked {
    VaultRpc::setup(BLOCK, PASSPHRASE, "", "")
}

impl VaultRpc {
    fn status(&self) -> serde_json::Value {
        let output = self.ctl(&["--json", "status"], None);
        assert!(output.status.success(), "status: {output:?}");
        serde_json::from_slice(&output.stdout).unwrap()
    }
}

#[test]
fn locked_supervisor_is_unlocked_and_driven_over_the_control_rpc() {
    let locked = setup();
    let supervisor = locked.run();
    common::wait_for_node_state(&locked.socket, "locked", LONG);
    let status = locked.status();
    assert_eq!(status["node"]["state"], "locked", "{status}");
    assert_eq!(status["vault"]["locked"], true, "{status}");
    assert_eq!(status["validator"], "val1");

    // Calls that need an unlocked vault say so, and change nothing.
    let refused = locked.ctl(&["node", "start"], None);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("unlock it first"),
        "{refused:?}"
    );

    // A wrong passphrase: refused (auth exit code), nothing changes, the
    // next attempt is rate-limited, and the passphrase is logged nowhere.
    let wrong = locked.ctl(
        &["unlock", "--passphrase-stdin"],
        Some("not the passphrase\n"),
    );
    assert_eq!(wrong.status.code(), Some(4), "{wrong:?}");
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("wrong passphrase"));
    let limited = locked.ctl(
        &["unlock", "--passphrase-stdin"],
        Some(&format!("{PASSPHRASE}\n")),
    );
    assert_eq!(limited.status.code(), Some(1), "{limited:?}");
    assert!(
        String::from_utf8_lossy(&limited.stderr).contains("too many failed unlocks"),
        "{limited:?}"
    );
    assert!(
        supervisor.children().is_empty(),
        "gaiad started while locked"
    );
    std::thread::sleep(Duration::from_millis(1100));

    let unlocked = locked.ctl(
        &["unlock", "--passphrase-stdin"],
        Some(&format!("{PASSPHRASE}\n")),
    );
    assert!(unlocked.status.success(), "{unlocked:?}");
    locked.chain.wait_signing(3, LONG);
    let status = locked.status();
    assert_eq!(status["node"]["state"], "running", "{status}");
    assert_eq!(status["vault"]["locked"], false, "{status}");
    assert!(
        status["watermark"]["height"].as_u64().unwrap() > 0,
        "{status}"
    );
    let again = locked.ctl(
        &["unlock", "--passphrase-stdin"],
        Some(&format!("{PASSPHRASE}\n")),
    );
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    assert!(String::from_utf8_lossy(&again.stderr).contains("already unlocked"));

    // logs.tail: the node's recent output, bounded; bad params refused.
    let logs = locked.ctl(&["--json", "logs", "--lines", "5"], None);
    assert!(logs.status.success(), "{logs:?}");
    let logs: serde_json::Value = serde_json::from_slice(&logs.stdout).unwrap();
    let lines = logs["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 5, "{logs}");
    assert!(
        lines
            .iter()
            .any(|line| line.as_str().unwrap().contains("height=")),
        "{logs}"
    );
    let too_many = locked.ctl(
        &[
            "call",
            "logs.tail",
            "--unchecked",
            "--params",
            r#"{"lines":5000}"#,
        ],
        None,
    );
    assert_eq!(too_many.status.code(), Some(1), "{too_many:?}");
    assert!(String::from_utf8_lossy(&too_many.stderr).contains("lines must be"));

    // backup.now writes a backup and says which stores took it.
    let backup = locked.ctl(&["--json", "backup-now"], None);
    assert!(backup.status.success(), "{backup:?}");
    let backup: serde_json::Value = serde_json::from_slice(&backup.stdout).unwrap();
    assert_eq!(backup["backup"]["stores"][0], "local", "{backup}");

    // Stop: the node stops signing and stays stopped; start: it signs again.
    let stop = locked.ctl(&["node", "stop"], None);
    assert!(stop.status.success(), "{stop:?}");
    assert_eq!(locked.status()["node"]["state"], "stopped");
    let stopped = locked.chain.network.record().unwrap();
    let stopped_at = stopped.validators["val1"].signed_heights;
    let record = locked
        .chain
        .network
        .wait_for(LONG, |record| record.height >= stopped.height + 6)
        .unwrap();
    assert!(
        record.validators["val1"].signed_heights <= stopped_at + 1,
        "still signing while stopped"
    );
    assert!(supervisor.children().is_empty(), "gaiad still running");
    let start = locked.ctl(&["node", "start"], None);
    assert!(start.status.success(), "{start:?}");
    locked.chain.wait_signing(3, LONG);
    let restart = locked.ctl(&["node", "restart"], None);
    assert!(restart.status.success(), "{restart:?}");
    locked.chain.wait_signing(3, LONG);

    // Lock: the node stops, a final backup is taken, the keys leave tmpfs;
    // an unlock brings it back.
    let backups_before = std::fs::read_dir(locked.chain.home.join("palisade/backups"))
        .unwrap()
        .count();
    let lock = locked.ctl(&["lock"], None);
    assert!(lock.status.success(), "{lock:?}");
    let status = locked.status();
    assert_eq!(status["vault"]["locked"], true, "{status}");
    assert_eq!(status["node"]["state"], "locked", "{status}");
    assert!(
        supervisor.children().is_empty(),
        "gaiad still running after lock"
    );
    let left_in_tmpfs = std::fs::read_dir(&locked.tmpfs)
        .map(|entries| entries.count())
        .unwrap_or(0);
    assert_eq!(left_in_tmpfs, 0, "keys left in tmpfs after lock");
    assert!(
        std::fs::read_dir(locked.chain.home.join("palisade/backups"))
            .unwrap()
            .count()
            >= backups_before,
        "backups disappeared"
    );
    // The final backup was taken before the keys were wiped: the audit
    // trail says so in that order (both lines came before the answer).
    supervisor.wait_for_line("wiped the validator keys from tmpfs", LONG);
    let lines = supervisor.output();
    let final_backup = lines
        .find("reason=\"final backup on stop\"")
        .expect("a final backup at lock");
    let wiped = lines
        .find("wiped the validator keys from tmpfs")
        .expect("keys wiped at lock");
    assert!(final_backup < wiped, "wiped before the final backup");
    let unlocked = locked.ctl(
        &["unlock", "--passphrase-stdin"],
        Some(&format!("{PASSPHRASE}\n")),
    );
    assert!(unlocked.status.success(), "{unlocked:?}");
    locked.chain.wait_signing(3, LONG);
    locked.chain.assert_no_double_sign();

    let output = supervisor.stop();
    assert!(
        !output.contains(PASSPHRASE),
        "passphrase in the supervisor's output"
    );
    assert!(!output.contains("not the passphrase"));
    assert!(output.contains("node stop requested over the control RPC"));
}
