//! The lifecycle's promises seen from outside the process, with the real
//! supervisor and the simulated chain: the systemd protocol (the watchdog
//! is fed through a long grace and a long crash backoff; `STOPPING=1` only
//! when the supervisor itself shuts down) and commands answered at once
//! whatever the supervisor is doing (a backoff, an upgrade step), with a
//! clear answer for vault commands when there is no vault.
//!
//! Each was a defect of the loop before the supervision machine (issue
//! 12): these tests fail against it.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::timing::{BLOCK, LONG, PROMPT};
use common::{
    Chain, FakeSystemd, VaultRpc, holds_for, longest_silence, node_state, rpc_call, wait_until,
};
use serde_json::json;

/// systemd's `WatchdogSec=` in these tests: the supervisor pings every
/// half of it.
const WATCHDOG: Duration = Duration::from_secs(1);

fn env_of<'a>(pairs: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    pairs
        .iter()
        .map(|(key, value)| (*key, value.as_str()))
        .collect()
}

/// A config with a control socket in the test's directory.
fn config_with_socket(chain: &Chain, extra: &str) -> (String, PathBuf) {
    let socket = chain.dir.path().join("run").join("supervisor.sock");
    let path = chain.dir.path().join("palisade.toml");
    std::fs::write(
        &path,
        format!("[rpc]\nsocket = {socket:?}\nname = \"val1\"\n{extra}"),
    )
    .unwrap();
    (path.display().to_string(), socket)
}

#[test]
fn the_watchdog_is_fed_through_a_long_shutdown_grace() {
    let chain = Chain::start(&[], BLOCK);
    let systemd = FakeSystemd::start(chain.dir.path());
    let notify = systemd.env(WATCHDOG);
    let mut env = env_of(&notify);
    env.extend([
        ("SIMD_IGNORE_SIGINT", "1"),
        // Four watchdog periods: systemd would kill a supervisor that
        // stops pinging while it waits.
        ("DAEMON_SHUTDOWN_GRACE", "4s"),
    ]);
    let mut supervisor = chain.run_supervisor(&env);
    chain.wait_signing(1, LONG);
    let asked = Instant::now();
    supervisor.signal("TERM");
    assert!(supervisor.wait_exit(LONG).success());
    let done = Instant::now();
    assert!(
        done - asked >= Duration::from_secs(4),
        "the daemon ignores signals: only SIGKILL after the grace stops it"
    );
    let pings = systemd.pings(asked, done);
    let silence = longest_silence(&pings, asked, done);
    assert!(
        silence < WATCHDOG,
        "{silence:?} without a watchdog ping during the grace ({} pings): systemd would have killed the supervisor",
        pings.len()
    );
    assert_eq!(systemd.count("STOPPING=1"), 1);
}

#[test]
fn a_long_backoff_feeds_the_watchdog_and_answers_commands_at_once() {
    let chain = Chain::start(&[], BLOCK);
    let (config, socket) = config_with_socket(
        &chain,
        // The first restart waits 3 to 6 s (half fixed, half jitter).
        "[restart]\nbackoff-initial = \"6s\"\nbackoff-max = \"6s\"\ncrash-loop-max-crashes = 50\n",
    );
    let systemd = FakeSystemd::start(chain.dir.path());
    let notify = systemd.env(WATCHDOG);
    let mut env = env_of(&notify);
    env.extend([
        ("PALISADE_CONFIG", config.as_str()),
        ("SIMD_CRASH_AFTER", "1s"),
    ]);
    let supervisor = chain.run_supervisor(&env);
    let crashed = systemd.wait_for("daemon crashed", LONG);
    assert_eq!(node_state(&socket).as_deref(), Some("restarting"));
    std::thread::sleep(Duration::from_millis(2500));
    let checked = Instant::now();
    let pings = systemd.pings(crashed, checked);
    let silence = longest_silence(&pings, crashed, checked);
    assert!(
        silence < WATCHDOG,
        "{silence:?} without a watchdog ping during the backoff ({} pings)",
        pings.len()
    );

    // A stop during the backoff is answered at once and cancels the
    // restart: the node stays stopped after the backoff would have ended.
    let (answer, took) = rpc_call(&socket, "node.stop", None, None);
    assert_eq!(answer["result"], json!({"node": "stopped"}), "{answer}");
    assert!(took < PROMPT, "node.stop took {took:?} during a backoff");
    holds_for(
        Duration::from_secs(4),
        "the node stopped, past the backoff",
        || node_state(&socket).as_deref() == Some("stopped") && supervisor.children().is_empty(),
    );
    // systemd heard of one daemon only: the restart never happened.
    assert_eq!(systemd.count("STATUS=running simd (pid"), 1);
    supervisor.stop();
}

#[test]
fn commands_get_an_answer_at_once_during_an_upgrade_step() {
    let chain = Chain::start(&[("v2", 8)], BLOCK);
    chain.add_upgrade("v2", &chain.version_binary("v2", &["v2"]), &[]);
    // The upgrade's pre-upgrade step takes 5 s.
    let script = chain.cosmovisor().join("slow.sh");
    std::fs::write(&script, "#!/bin/sh\nsleep 5\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (config, socket) = config_with_socket(&chain, "");
    let supervisor = chain.run_supervisor(&[
        ("PALISADE_CONFIG", config.as_str()),
        ("UNSAFE_SKIP_BACKUP", "true"),
        ("COSMOVISOR_CUSTOM_PREUPGRADE", "slow.sh"),
    ]);
    wait_until(LONG, "the upgrade to begin", || {
        node_state(&socket).as_deref() == Some("upgrading")
    });
    for method in ["node.stop", "node.restart", "node.start"] {
        let (answer, took) = rpc_call(&socket, method, None, None);
        assert!(
            took < PROMPT,
            "{method} took {took:?} during an upgrade step"
        );
        assert_eq!(answer["error"]["code"], -32004, "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!(
                "{method} is not possible now: upgrade v2 is in progress"
            )),
            "{message}"
        );
    }
    // The upgrade was not disturbed.
    wait_until(LONG, "the new binary", || {
        node_state(&socket).as_deref() == Some("running")
            && chain.current_target() == std::path::Path::new("upgrades/v2")
    });
    supervisor.stop();
    chain.assert_no_double_sign();
}

#[test]
fn vault_commands_without_a_vault_say_there_is_none() {
    let chain = Chain::start(&[], BLOCK);
    let (config, socket) = config_with_socket(&chain, "");
    let supervisor = chain.run_supervisor(&[("PALISADE_CONFIG", config.as_str())]);
    wait_until(LONG, "the node", || {
        node_state(&socket).as_deref() == Some("running")
    });
    let cases = [
        (
            "vault.unlock",
            None,
            Some("any passphrase"),
            "no [vault] is configured",
        ),
        ("vault.lock", None, None, "no [vault] is configured"),
        (
            "backup.restore",
            Some(
                json!({"store": "local", "file": "backup-sim-1-0000000000000000000000000000000000000000-00000000000000000001-h1.age"}),
            ),
            None,
            "no [vault]: there are no signed backups to restore from",
        ),
    ];
    for (method, params, secret, words) in cases {
        let (answer, took) = rpc_call(&socket, method, params, secret);
        assert!(took < PROMPT, "{method} took {took:?}");
        assert_eq!(answer["error"]["code"], -32004, "{method}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(words), "{method}: {message}");
        assert!(!message.contains("already unlocked"), "{method}: {message}");
    }
    assert_eq!(node_state(&socket).as_deref(), Some("running"));
    supervisor.stop();
}

#[test]
fn stopping_is_notified_only_when_the_supervisor_itself_shuts_down() {
    let fixture = VaultRpc::setup(BLOCK, "lifecycle passphrase", "", "");
    let systemd = FakeSystemd::start(fixture.chain.dir.path());
    let mut command = fixture.command();
    command.envs(systemd.env(WATCHDOG));
    command
        .args(["run", "start", "--home"])
        .arg(&fixture.chain.home)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut supervisor = common::Supervisor::spawn(command);
    systemd.wait_for("READY=1", LONG);
    fixture.unlock();
    let socket = &fixture.socket;
    let running = || node_state(socket).as_deref() == Some("running");
    wait_until(LONG, "the node", running);
    for (method, expected) in [
        ("node.stop", json!({"node": "stopped"})),
        ("node.start", json!({"node": "starting"})),
        ("node.restart", json!({"node": "starting"})),
        ("vault.lock", json!({"locked": true})),
    ] {
        wait_until(LONG, "a steady node", || {
            method == "node.start" || running()
        });
        let (answer, _) = rpc_call(socket, method, None, None);
        assert_eq!(answer["result"], expected, "{method}: {answer}");
    }
    fixture.unlock();
    wait_until(LONG, "the node after the new unlock", running);
    assert_eq!(
        systemd.count("STOPPING=1"),
        0,
        "STOPPING=1 for a node stop, restart or lock: systemd would kill the unit after TimeoutStopSec"
    );
    supervisor.signal("TERM");
    assert!(supervisor.wait_exit(LONG).success());
    assert_eq!(systemd.count("STOPPING=1"), 1);
}
