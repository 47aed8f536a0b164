//! What `simd` writes, in the shapes gaiad (Cosmos SDK v0.50, CometBFT v0.38) writes it: log
//! lines (plain, coloured, JSON), `data/upgrade-info.json`, `/status`, a large
//! `genesis.json`; and what it refuses (`priv_validator_state.json` with a numeric height).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use palisade_simchain::testkit::{
    SimNetwork, SimNetworkOptions, SimdProcess, ValidatorKeyInfo, free_port, set_base_option,
    write_validator_home,
};

const WAIT: Duration = Duration::from_secs(20);

fn simd() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_simd"))
}

fn net_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_simchain-net"))
}

struct Setup {
    _dir: tempfile::TempDir,
    net: SimNetwork,
    validator: ValidatorKeyInfo,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let validator = write_validator_home(
        &dir.path().join("val1"),
        "val1",
        "sim-1",
        "127.0.0.1:1",
        free_port(),
    )
    .unwrap();
    let net = SimNetwork::spawn(
        net_bin(),
        std::slice::from_ref(&validator),
        &SimNetworkOptions {
            block_time: Duration::from_millis(100),
            ..SimNetworkOptions::default()
        },
    )
    .unwrap();
    net.attach_home(&validator.home).unwrap();
    Setup {
        _dir: dir,
        net,
        validator,
    }
}

/// Schedules `v2` a few blocks ahead; returns its height.
fn schedule_upgrade(s: &Setup, info: &str) -> u64 {
    s.net
        .wait_for(WAIT, |r| r.validators["val1"].signed_heights >= 2)
        .unwrap();
    let height = s.net.height().unwrap() + 5;
    s.net.schedule_upgrade("v2", height, info).unwrap();
    height
}

#[test]
fn json_logs_carry_the_upgrade_message_as_an_escaped_json_string() {
    let s = setup();
    set_base_option(&s.validator.home, "log_format", "\"json\"").unwrap();
    let node = SimdProcess::start(simd(), &s.validator.home, &[], &[]).unwrap();
    let height = schedule_upgrade(&s, "");
    let line = node.wait_for_output("NEEDED at height", WAIT).unwrap();
    // zerolog writes the logger's context in order and never de-duplicates it.
    let expected_start =
        r#"{"level":"error","module":"server","module":"baseapp","module":"x/upgrade","time":""#;
    assert!(line.starts_with(expected_start), "{line}");
    let expected_end = format!(r#"","message":"UPGRADE \"v2\" NEEDED at height: {height}: "}}"#);
    assert!(line.ends_with(&expected_end), "{line}");
    // Valid JSON (duplicate keys allowed: the last wins in a map).
    let value: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        value["message"],
        format!("UPGRADE \"v2\" NEEDED at height: {height}: ")
    );
    assert_eq!(value["module"], "x/upgrade");
    let time = value["time"].as_str().unwrap();
    assert!(
        time.len() == 20 && time.ends_with('Z') && humantime::parse_rfc3339(time).is_ok(),
        "{time}"
    );
    // Every line is JSON, CometBFT's with their module context.
    for line in node.output() {
        let value: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(
            value["level"].is_string() && value["time"].is_string(),
            "{line}"
        );
    }
    assert!(
        node.output().iter().any(|l| l.starts_with(
            r#"{"level":"info","module":"server","server":"node","module":"consensus","height":"#
        ) && l.contains(r#""message":"signed and pushed vote"}"#)),
        "{}",
        node.tail(10)
    );
}

#[test]
fn json_format_is_also_taken_from_the_command_line() {
    let s = setup();
    let node =
        SimdProcess::start(simd(), &s.validator.home, &["--log_format", "json"], &[]).unwrap();
    let line = node
        .wait_for_output("signed and pushed vote", WAIT)
        .unwrap();
    assert!(line.starts_with(r#"{"level":"info""#), "{line}");
    // Anything but plain or json is refused, as CometBFT's config validation does.
    let output = Command::new(simd())
        .args(["start", "--log_format", "xml", "--home"])
        .arg(&s.validator.home)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("unknown log_format (must be 'plain' or 'json')"),
        "{output:?}"
    );
}

#[test]
fn console_logs_are_coloured_unless_log_no_color() {
    let s = setup();
    // --log_no_color, and the NO_COLOR environment variable zerolog honours.
    for (args, envs) in [
        (vec!["--log_no_color"], vec![]),
        (vec![], vec![("NO_COLOR", "1")]),
    ] {
        let node = SimdProcess::start(simd(), &s.validator.home, &args, &envs).unwrap();
        let line = node
            .wait_for_output("signed and pushed vote", WAIT)
            .unwrap();
        assert!(!line.contains('\x1b'), "{line:?}");
        let (time, rest) = line.split_once(' ').unwrap();
        assert!(time.ends_with("AM") || time.ends_with("PM"), "{line}");
        assert!(
            rest.starts_with("INF signed and pushed vote height="),
            "{line}"
        );
        assert!(
            rest.contains(" module=consensus round=0 server=node type="),
            "{line}"
        );
    }

    // The default: coloured, as the SDK's console writer is even on a pipe.
    let info = r#"{"binaries":{"linux/amd64":"https://example.invalid/v2"}}"#;
    let node = SimdProcess::start(simd(), &s.validator.home, &[], &[]).unwrap();
    let vote = node
        .wait_for_output("signed and pushed vote", WAIT)
        .unwrap();
    assert!(
        vote.contains(
            "\x1b[32mINF\x1b[0m \x1b[1msigned and pushed vote\x1b[0m \x1b[36mheight=\x1b[0m"
        ),
        "{vote:?}"
    );
    assert!(
        vote.contains("\x1b[36mserver=\x1b[0mnode \x1b[36mtype=\x1b[0mpre"),
        "{vote:?}"
    );
    let height = schedule_upgrade(&s, info);
    let line = node.wait_for_output("NEEDED at height", WAIT).unwrap();
    // zerolog's console writer: grey time, red level, bold message, cyan field names; the
    // last `module` of the context chain wins.
    let expected = format!(
        "\x1b[31mERR\x1b[0m \x1b[1mUPGRADE \"v2\" NEEDED at height: {height}: {info}\x1b[0m \x1b[36mmodule=\x1b[0mx/upgrade"
    );
    assert!(line.starts_with("\x1b[90m"), "{line:?}");
    assert!(line.ends_with(&expected), "{line:?}\n{expected:?}");
}

#[test]
fn upgrade_info_is_written_in_place_the_sdk_way() {
    let s = setup();
    let home = &s.validator.home;
    let path = home.join("data/upgrade-info.json");
    // A file left from an earlier upgrade, with another mode: os.WriteFile truncates and
    // rewrites it in place, keeping its inode and mode (no temporary file, no rename).
    std::fs::write(
        &path,
        "stale contents that are longer than the new ones will be .....",
    )
    .unwrap();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let inode = std::fs::metadata(&path).unwrap().ino();
    let node = SimdProcess::start(simd(), home, &["--log_no_color"], &[]).unwrap();
    let height = schedule_upgrade(&s, "");
    node.wait_for_output("NEEDED at height", WAIT).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        text,
        format!(r#"{{"name":"v2","time":"0001-01-01T00:00:00Z","height":{height}}}"#)
    );
    let metadata = std::fs::metadata(&path).unwrap();
    assert_eq!(metadata.ino(), inode);
    assert_eq!(metadata.permissions().mode() & 0o777, 0o640);
    // A fresh file is created 0600.
    drop(node);
    std::fs::remove_file(&path).unwrap();
    let mut again = SimdProcess::start(simd(), home, &["--log_no_color"], &[]).unwrap();
    assert_eq!(again.wait_exit(WAIT).unwrap().code(), Some(1));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!(r#"{{"name":"v2","time":"0001-01-01T00:00:00Z","height":{height}}}"#)
    );
}

#[test]
fn a_numeric_height_in_the_state_file_stops_the_node_at_start() {
    let s = setup();
    let home = &s.validator.home;
    let path = home.join("data/priv_validator_state.json");
    std::fs::write(&path, r#"{"height":5,"round":0,"step":3}"#).unwrap();
    let output = Command::new(simd())
        .args(["start", "--home"])
        .arg(home)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!(
            "Error reading PrivValidator state from {}: invalid 64-bit integer encoding \"5\", expected string",
            path.display()
        )),
        "{output:?}"
    );
    // It never signed, and never served RPC.
    assert_eq!(s.net.record().unwrap().validators["val1"].signed_heights, 0);
    let quoted = r#"{"height":"5","round":0,"step":3}"#;
    std::fs::write(&path, quoted).unwrap();
    let node = SimdProcess::start(simd(), home, &["--log_no_color"], &[]).unwrap();
    node.wait_for_output("signed and pushed vote", WAIT)
        .unwrap();
}

fn status(s: &Setup) -> serde_json::Value {
    let output = Command::new(simd())
        .args(["status", "--home"])
        .arg(&s.validator.home)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).unwrap()
}

/// RFC 3339 in UTC as Go's `time.RFC3339Nano` writes it: no trailing zeros in the fraction.
fn assert_go_rfc3339(text: &str) -> SystemTime {
    assert!(text.ends_with('Z'), "{text}");
    if let Some((_, fraction)) = text.trim_end_matches('Z').split_once('.') {
        assert!(
            !fraction.is_empty() && fraction.len() <= 9 && !fraction.ends_with('0'),
            "{text}"
        );
    }
    humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

#[test]
fn status_reports_real_shaped_times() {
    let s = setup();
    let _node = SimdProcess::start(simd(), &s.validator.home, &[], &[]).unwrap();
    s.net
        .wait_for(WAIT, |r| r.validators["val1"].signed_heights >= 5)
        .unwrap();
    let status = status(&s);
    let sync = &status["sync_info"];
    let latest = assert_go_rfc3339(sync["latest_block_time"].as_str().unwrap());
    let earliest = assert_go_rfc3339(sync["earliest_block_time"].as_str().unwrap());
    let age = SystemTime::now().duration_since(latest).unwrap_or_default();
    assert!(age < Duration::from_secs(10), "{status}");
    assert!(earliest <= latest, "{status}");
    let height: u64 = sync["latest_block_height"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let earliest_height: u64 = sync["earliest_block_height"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        earliest_height >= 1 && earliest_height <= height,
        "{status}"
    );
    for key in [
        "latest_block_hash",
        "latest_app_hash",
        "earliest_block_hash",
        "earliest_app_hash",
    ] {
        let hash = sync[key].as_str().unwrap();
        assert!(
            hash.len() == 64
                && hash
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase()),
            "{key}: {status}"
        );
    }
    assert_eq!(sync["catching_up"], false);
    let node_info = &status["node_info"];
    for (key, value) in [("p2p", "8"), ("block", "11"), ("app", "0")] {
        assert_eq!(node_info["protocol_version"][key], value);
    }
    assert_eq!(node_info["other"]["tx_index"], "on");
    assert!(
        node_info["listen_addr"]
            .as_str()
            .unwrap()
            .starts_with("tcp://")
    );
    assert_eq!(node_info["id"].as_str().unwrap().len(), 40);
    assert_eq!(status["validator_info"]["voting_power"], "10");
}

#[test]
fn init_generates_a_large_genesis_of_realistic_shape() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("big");
    let output = Command::new(simd())
        .args([
            "init",
            "val1",
            "--chain-id",
            "sim-big",
            "--genesis-size",
            "4MiB",
            "--home",
        ])
        .arg(&home)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let path = home.join("config/genesis.json");
    let size = std::fs::metadata(&path).unwrap().len();
    assert!((4 << 20..(4 << 20) + 4096).contains(&size), "{size}");
    let value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(value["chain_id"], "sim-big");
    assert_eq!(value["initial_height"], 1);
    let accounts = value["app_state"]["auth"]["accounts"].as_array().unwrap();
    assert!(accounts.len() > 5000, "{}", accounts.len());
    assert_eq!(accounts[0]["@type"], "/cosmos.auth.v1beta1.BaseAccount");
    assert!(
        accounts[0]["address"]
            .as_str()
            .unwrap()
            .starts_with("cosmos1")
    );
    assert_eq!(
        value["app_state"]["bank"]["balances"]
            .as_array()
            .unwrap()
            .len(),
        accounts.len()
    );
    assert_eq!(
        value["consensus"]["params"]["validator"]["pub_key_types"][0],
        "ed25519"
    );
    assert!(
        Command::new(simd())
            .args(["init", "v", "--genesis-size", "12 parsecs", "--home"])
            .arg(dir.path().join("bad"))
            .output()
            .unwrap()
            .status
            .code()
            == Some(2)
    );
}
