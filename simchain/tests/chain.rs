//! End-to-end tests: real `simchain-net` and `simd` processes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use palisade_simchain::sign_state::SignState;
use palisade_simchain::testkit::{
    SimNetwork, SimNetworkOptions, SimdProcess, ValidatorKeyInfo, free_port, set_base_option,
    set_network_address, set_simchain_option, write_validator_home, write_versioned_binary,
};

const WAIT: Duration = Duration::from_secs(15);

fn simd() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_simd"))
}

fn net_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_simchain-net"))
}

struct Setup {
    dir: tempfile::TempDir,
    net: SimNetwork,
    validators: Vec<ValidatorKeyInfo>,
}

fn setup(monikers: &[&str], options: SimNetworkOptions) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let validators: Vec<_> = monikers
        .iter()
        .map(|m| {
            write_validator_home(
                &dir.path().join(m),
                m,
                &options.chain_id,
                "127.0.0.1:1",
                free_port(),
            )
            .unwrap()
        })
        .collect();
    let net = SimNetwork::spawn(net_bin(), &validators, &options).unwrap();
    for v in &validators {
        net.attach_home(&v.home).unwrap();
    }
    Setup {
        dir,
        net,
        validators,
    }
}

fn fast() -> SimNetworkOptions {
    SimNetworkOptions {
        block_time: Duration::from_millis(100),
        ..SimNetworkOptions::default()
    }
}

fn signed(net: &SimNetwork, name: &str) -> u64 {
    net.record().unwrap().validators[name].signed_heights
}

#[test]
fn node_signs_blocks_and_reports_cometbft_status() {
    let s = setup(&["val1"], fast());
    let home = &s.validators[0].home;
    let _node = SimdProcess::start(simd(), home, &[], &[]).unwrap();
    let record = s
        .net
        .wait_for(WAIT, |r| r.validators["val1"].signed_heights >= 5)
        .unwrap();
    assert!(record.double_signs.is_empty());
    assert_eq!(record.invalid_votes, 0);
    assert_eq!(record.validators["val1"].address, s.validators[0].address);

    let output = Command::new(simd())
        .args(["status", "--home"])
        .arg(home)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(status["node_info"]["network"], "sim-1");
    assert_eq!(status["node_info"]["version"], "0.38.17");
    assert_eq!(status["node_info"]["moniker"], "val1");
    let height: u64 = status["sync_info"]["latest_block_height"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(height >= 4, "{status}");
    assert_eq!(status["sync_info"]["catching_up"], false);
    assert_eq!(
        status["validator_info"]["address"],
        s.validators[0].address.as_str()
    );
    assert_eq!(
        status["validator_info"]["pub_key"]["type"],
        "tendermint/PubKeyEd25519"
    );
    assert_eq!(status["validator_info"]["voting_power"], "10");

    let version = Command::new(simd()).arg("version").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&version.stdout).trim(), "v1.0.0");
    let shown = Command::new(simd())
        .args(["show-validator", "--home"])
        .arg(home)
        .output()
        .unwrap();
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["key"], s.validators[0].pub_key.as_str());
}

#[test]
fn stopped_node_shows_missed_heights() {
    let s = setup(&["val1"], fast());
    let mut node = SimdProcess::start(simd(), &s.validators[0].home, &[], &[]).unwrap();
    s.net
        .wait_for(WAIT, |r| r.validators["val1"].signed_heights >= 3)
        .unwrap();
    node.kill();
    let stopped_at = s.net.height().unwrap() + 1;
    let record = s
        .net
        .wait_for(WAIT, |r| {
            r.missed_between("val1", stopped_at + 1, u64::MAX).len() >= 5
        })
        .unwrap();
    let last_signed = record.validators["val1"].last_signed_height.unwrap();
    assert!(last_signed <= stopped_at + 1, "{record:?}");
    assert!(record.height > last_signed + 4);
}

#[test]
fn two_nodes_with_one_key_are_flagged_as_double_signing() {
    let s = setup(&["val1"], fast());
    let original = &s.validators[0].home;
    let copy = s.dir.path().join("val1-copy");
    copy_dir(original, &copy);
    let _a = SimdProcess::start(simd(), original, &[], &[]).unwrap();
    // Same key, its own RPC port. A port from free_port() can be taken by a
    // parallel test before the node binds it; the node then exits at once
    // (and can never sign), so it is started again on another port.
    let mut second = None;
    for _ in 0..3 {
        write_validator_home(&copy, "val1", "sim-1", s.net.node_addr(), free_port()).unwrap();
        let mut node = SimdProcess::start(simd(), &copy, &[], &[]).unwrap();
        if node.wait_for_output("connected to network", WAIT).is_ok() && node.is_running() {
            second = Some(node);
            break;
        }
        eprintln!("second node did not come up, retrying:\n{}", node.tail(10));
    }
    let _b = second.expect("the second node never connected to the network");
    let record = s
        .net
        .wait_for(WAIT, |r| !r.double_signs.is_empty())
        .unwrap();
    let double_sign = &record.double_signs[0];
    assert_eq!(double_sign.validator, "val1");
    assert_ne!(double_sign.sign_bytes_a, double_sign.sign_bytes_b);
}

#[test]
fn state_file_ahead_of_chain_prevents_signing_below_it() {
    let s = setup(&["val1"], fast());
    let home = &s.validators[0].home;
    // Far enough ahead that the node starts (even on a loaded machine) below it.
    let ahead = s.net.wait_for_height(2, WAIT).unwrap() + 30;
    let state_path = home.join("data/priv_validator_state.json");
    SignState {
        height: ahead,
        round: 0,
        step: 3,
        signature: None,
        signbytes: None,
    }
    .save(&state_path)
    .unwrap();
    let node = SimdProcess::start(simd(), home, &[], &[]).unwrap();
    node.wait_for_output("height regression", WAIT).unwrap();
    let record = s
        .net
        .wait_for(WAIT, |r| r.validators["val1"].signed_heights >= 2)
        .unwrap();
    let val1 = &record.validators["val1"];
    assert!(val1.first_signed_height.unwrap() > ahead, "{record:?}");
    assert!(record.double_signs.is_empty());
    assert!(SignState::load(&state_path).unwrap().height > ahead);
}

#[test]
fn upgrade_halts_old_binary_and_new_binary_takes_over() {
    let s = setup(&["val1"], fast());
    let home = &s.validators[0].home;
    let bin_dir = s.dir.path().join("bin");
    let v1 = bin_dir.join("v1/simd");
    let v2 = bin_dir.join("v2/simd");
    write_versioned_binary(&v1, simd(), "v1", &[]).unwrap();
    write_versioned_binary(&v2, simd(), "v2", &["v2"]).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&Command::new(&v2).arg("version").output().unwrap().stdout).trim(),
        "v2"
    );

    let mut old = SimdProcess::start(&v1, home, &[], &[]).unwrap();
    s.net
        .wait_for(WAIT, |r| r.validators["val1"].signed_heights >= 2)
        .unwrap();
    let upgrade_height = s.net.height().unwrap() + 6;
    let info = r#"{"binaries":{"linux/amd64":"https://example.invalid/v2"}}"#;
    s.net.schedule_upgrade("v2", upgrade_height, info).unwrap();

    let line = old.wait_for_output("NEEDED at height", WAIT).unwrap();
    assert!(
        line.contains(&format!(
            "UPGRADE \"v2\" NEEDED at height: {upgrade_height}: {info}"
        )),
        "{line}"
    );
    let info_path = home.join("data/upgrade-info.json");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&info_path).unwrap()).unwrap();
    assert_eq!(
        written,
        serde_json::json!({"name": "v2", "time": "0001-01-01T00:00:00Z", "height": upgrade_height, "info": info})
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&info_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // Halted: the chain goes on, the node stays alive and serves RPC, but never signs again.
    let record = s.net.wait_for_height(upgrade_height + 3, WAIT).unwrap();
    assert!(record >= upgrade_height + 3);
    let val1 = s.net.record().unwrap().validators["val1"].clone();
    assert_eq!(
        val1.last_signed_height,
        Some(upgrade_height - 1),
        "{val1:?}"
    );
    assert!(val1.missed_heights.contains(&upgrade_height));
    assert!(old.is_running());
    let status = Command::new(simd())
        .args(["status", "--home"])
        .arg(home)
        .output()
        .unwrap();
    assert!(status.status.success());
    old.kill();

    // The old binary restarted past the upgrade height refuses to run.
    let mut again = SimdProcess::start(&v1, home, &[], &[]).unwrap();
    let exit = again.wait_exit(WAIT).unwrap();
    assert!(!exit.success());
    again
        .wait_for_output(
            &format!("UPGRADE \"v2\" NEEDED at height: {upgrade_height}"),
            WAIT,
        )
        .unwrap();

    // The new binary applies the upgrade and signs at the chain's current height.
    let new = SimdProcess::start(&v2, home, &[], &[]).unwrap();
    new.wait_for_output("applying upgrade \"v2\"", WAIT)
        .unwrap();
    let resumed_from = s.net.height().unwrap();
    let record = s
        .net
        .wait_for(WAIT, |r| {
            r.validators["val1"].last_signed_height.unwrap_or(0) > resumed_from + 2
        })
        .unwrap();
    assert!(record.double_signs.is_empty());
    let app: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(home.join("data/application.db")).unwrap())
            .unwrap();
    assert_eq!(app["applied_upgrades"][0]["name"], "v2");
}

#[test]
fn binary_with_handler_before_the_upgrade_height_refuses_to_start() {
    let mut options = fast();
    options.upgrades = vec![palisade_simchain::protocol::UpgradePlan {
        name: "v2".into(),
        height: 10_000,
        info: String::new(),
    }];
    let s = setup(&["val1"], options);
    let mut node = SimdProcess::start(
        simd(),
        &s.validators[0].home,
        &["--sim-upgrade-handler", "v2"],
        &[],
    )
    .unwrap();
    assert!(!node.wait_exit(WAIT).unwrap().success());
    node.wait_for_output("BINARY UPDATED BEFORE TRIGGER! UPGRADE \"v2\"", WAIT)
        .unwrap();
}

#[test]
fn signals_crashes_and_preupgrade_knobs() {
    let s = setup(&["val1"], fast());
    let home = &s.validators[0].home;

    // Unknown flags before the subcommand are an error, as in gaiad.
    let mut node = SimdProcess::start(simd(), home, &["--x-unknown-flag-before"], &[]).unwrap();
    assert!(!node.wait_exit(WAIT).unwrap().success());

    let mut node = SimdProcess::spawn(
        simd(),
        &[
            "start".into(),
            "--x-crisis-skip-assert-invariants".into(),
            "--home".into(),
            home.display().to_string(),
        ],
        &[],
    )
    .unwrap();
    node.wait_for_output("signed and pushed vote", WAIT)
        .unwrap();
    node.terminate().unwrap();
    let started = Instant::now();
    assert_eq!(
        node.wait_exit(Duration::from_secs(2)).unwrap().code(),
        Some(0)
    );
    assert!(started.elapsed() < Duration::from_secs(1));

    let mut stubborn =
        SimdProcess::start(simd(), home, &[], &[("SIMD_IGNORE_SIGINT", "1")]).unwrap();
    stubborn
        .wait_for_output("signed and pushed vote", WAIT)
        .unwrap();
    stubborn.terminate().unwrap();
    stubborn.wait_for_output("ignoring signal", WAIT).unwrap();
    assert!(stubborn.is_running());
    stubborn.kill();

    let mut crashing =
        SimdProcess::start(simd(), home, &[], &[("SIMD_CRASH_AFTER", "300ms")]).unwrap();
    assert_eq!(crashing.wait_exit(WAIT).unwrap().code(), Some(2));

    for (env, expected) in [(None, 0), (Some("3"), 3)] {
        let mut command = Command::new(simd());
        command.arg("pre-upgrade");
        if let Some(value) = env {
            command.env("SIMD_PREUPGRADE_EXIT", value);
        }
        assert_eq!(command.status().unwrap().code(), Some(expected));
    }
}

#[test]
fn log_flood_does_not_stop_signing() {
    let s = setup(&["val1"], fast());
    let home = &s.validators[0].home;
    palisade_simchain::testkit::set_simchain_option(home, "log_flood", "true").unwrap();
    let _node = SimdProcess::start(simd(), home, &[], &[]).unwrap();
    s.net
        .wait_for(WAIT, |r| r.validators["val1"].signed_heights >= 5)
        .unwrap();
    let before = signed(&s.net, "val1");
    s.net
        .wait_for(WAIT, |r| r.validators["val1"].signed_heights >= before + 5)
        .unwrap();
}

#[test]
fn network_writes_record_file_and_accepts_runtime_upgrades() {
    let dir = tempfile::tempdir().unwrap();
    let record_file: PathBuf = dir.path().join("record.json");
    let val = write_validator_home(
        &dir.path().join("v"),
        "val1",
        "sim-1",
        "127.0.0.1:1",
        free_port(),
    )
    .unwrap();
    let net = SimNetwork::spawn(
        net_bin(),
        &[val],
        &SimNetworkOptions {
            record_file: Some(record_file.clone()),
            ..fast()
        },
    )
    .unwrap();
    net.wait_for_height(3, WAIT).unwrap();
    assert!(
        net.schedule_upgrade("v2", 1, "").is_err(),
        "past heights are refused"
    );
    net.schedule_upgrade("v2", 500, "x").unwrap();
    let height = net.height().unwrap();
    assert!(net.stop().unwrap().success());
    let record: palisade_simchain::record::Record =
        serde_json::from_str(&std::fs::read_to_string(&record_file).unwrap()).unwrap();
    assert!(record.height >= height);
    assert_eq!(record.upgrade_plans[0].name, "v2");
    assert_eq!(record.validators["val1"].missed_count, record.height);
}

#[test]
fn node_fails_over_from_a_dead_address_to_the_next_one() {
    let s = setup(&["val1"], fast());
    let home = &s.validators[0].home;
    // These lines are matched as `key=value`: no colour codes between key and value.
    set_base_option(home, "log_no_color", "true").unwrap();
    // Bound and released: nothing listens there, connecting is refused.
    let closed = format!("127.0.0.1:{}", free_port());
    let real = s.net.node_addr().to_string();
    set_network_address(home, &format!("{closed}, {real}")).unwrap();
    let started = Instant::now();
    let node = SimdProcess::start(simd(), home, &[], &[]).unwrap();
    let record = s
        .net
        .wait_for(WAIT, |r| r.validators["val1"].signed_heights >= 3)
        .unwrap();
    assert!(record.double_signs.is_empty());
    node.wait_for_output(&format!("cannot reach network addr={closed}"), WAIT)
        .unwrap();
    node.wait_for_output(&format!("connected to network addr={real}"), WAIT)
        .unwrap();
    // Failing over to a healthy second address costs no backoff: the node votes within a
    // few blocks of starting (a 30 s idle timeout or retry loop on the first would not).
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // Once connected it stays on the healthy address.
    let output = node.output();
    let dials = |addr: &str| {
        output
            .iter()
            .filter(|l| l.contains("connecting to network") && l.contains(addr))
            .count()
    };
    assert_eq!((dials(&closed), dials(&real)), (1, 1), "{}", node.tail(30));
}

#[test]
fn silent_network_is_dropped_after_the_idle_timeout_and_the_next_address_takes_over() {
    let s = setup(&["val1"], fast());
    let home = &s.validators[0].home;
    // These lines are matched as `key=value`: no colour codes between key and value.
    set_base_option(home, "log_no_color", "true").unwrap();
    // A peer that accepts and then never says anything (a half-dead link or a hung process).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming() {
            held.push(stream);
        }
    });
    let real = s.net.node_addr().to_string();
    set_network_address(home, &format!("{silent_addr},{real}")).unwrap();
    set_simchain_option(home, "network_idle_timeout", "\"600ms\"").unwrap();
    let started = Instant::now();
    let node = SimdProcess::start(simd(), home, &[], &[]).unwrap();
    node.wait_for_output(&format!("connected to network addr={silent_addr}"), WAIT)
        .unwrap();
    let lost = node
        .wait_for_output("lost connection to network; reconnecting", WAIT)
        .unwrap();
    assert!(
        lost.contains(&format!("addr={silent_addr}")) && lost.contains("network silent for 600ms"),
        "{lost}"
    );
    s.net
        .wait_for(WAIT, |r| r.validators["val1"].signed_heights >= 3)
        .unwrap();
    node.wait_for_output(&format!("connected to network addr={real}"), WAIT)
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the default 30 s idle timeout was used: {:?}",
        started.elapsed()
    );
}

#[test]
fn lost_session_moves_on_to_the_next_address_first() {
    let s = setup(&["val1"], fast());
    let home = &s.validators[0].home;
    // These lines are matched as `key=value`: no colour codes between key and value.
    set_base_option(home, "log_no_color", "true").unwrap();
    // A second network with the same genesis, as a second sentry would be.
    let other = SimNetwork::spawn(net_bin(), &s.validators, &fast()).unwrap();
    let first = s.net.node_addr().to_string();
    let second = other.node_addr().to_string();
    set_network_address(home, &format!("{first},{second}")).unwrap();
    let node = SimdProcess::start(simd(), home, &[], &[]).unwrap();
    s.net
        .wait_for(WAIT, |r| r.validators["val1"].signed_heights >= 3)
        .unwrap();
    let Setup { net, .. } = s;
    drop(net);
    let lost_at = Instant::now();
    node.wait_for_output(&format!("connected to network addr={second}"), WAIT)
        .unwrap();
    assert!(
        lost_at.elapsed() < Duration::from_secs(5),
        "{:?}",
        lost_at.elapsed()
    );
    let output = node.output();
    let lost = output
        .iter()
        .position(|l| l.contains("lost connection to network") && l.contains(&first))
        .unwrap_or_else(|| panic!("no lost-connection line:\n{}", node.tail(30)));
    let next_dial = output[lost..]
        .iter()
        .find(|l| l.contains("connecting to network"))
        .unwrap();
    assert!(next_dial.contains(&format!("addr={second}")), "{next_dial}");
    // It signs on the second network once that one passes the heights already signed.
    let record = other
        .wait_for(WAIT, |r| r.validators["val1"].signed_heights >= 2)
        .unwrap();
    assert!(record.double_signs.is_empty());
}

#[test]
fn bad_network_list_is_refused_naming_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("v");
    write_validator_home(&home, "val1", "sim-1", "127.0.0.1:1", free_port()).unwrap();
    set_network_address(&home, "127.0.0.1:1,,127.0.0.1:2").unwrap();
    let output = Command::new(simd())
        .args(["start", "--home"])
        .arg(&home)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&home.join("config/config.toml").display().to_string())
            && stderr.contains("[simchain] network")
            && stderr.contains("entry 2 of 3 is empty"),
        "{stderr}"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
