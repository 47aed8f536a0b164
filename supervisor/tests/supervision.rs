//! End-to-end process supervision: crash restarts, crash loops, graceful
//! and forced stops, no orphans, output floods, bad configuration.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::timing::{BLOCK, LONG};
use common::{Chain, default_socket, process_alive, wait_for_node_state};

fn write_config(chain: &Chain, body: &str) -> String {
    let path = chain.dir.path().join("palisade.toml");
    std::fs::write(&path, body).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn sigterm_stops_the_daemon_gracefully_and_leaves_no_orphans() {
    let chain = Chain::start(&[], BLOCK);
    let supervisor = chain.run_supervisor(&[]);
    chain.wait_signing(2, LONG);
    let daemon = supervisor.children();
    assert_eq!(daemon.len(), 1, "expected one daemon, got {daemon:?}");
    let output = supervisor.stop();
    assert!(!process_alive(daemon[0]));
    assert!(output.contains("stopping the daemon"), "{output}");
    assert!(
        output.contains("daemon stopped") && output.contains("exit=exit status 0"),
        "daemon did not exit cleanly: {output}"
    );
    chain.assert_no_double_sign();
}

#[test]
fn daemon_ignoring_sigint_is_killed_after_the_grace() {
    let chain = Chain::start(&[], BLOCK);
    let mut supervisor = chain.run_supervisor(&[
        ("SIMD_IGNORE_SIGINT", "1"),
        ("DAEMON_SHUTDOWN_GRACE", "700ms"),
    ]);
    chain.wait_signing(1, LONG);
    let daemon = supervisor.children();
    let started = Instant::now();
    supervisor.signal("INT");
    let status = supervisor.wait_exit(Duration::from_secs(10));
    let took = started.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(
        took >= Duration::from_millis(700),
        "killed before the grace: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(supervisor.has_line("did not exit within the shutdown grace"));
    for pid in daemon {
        assert!(!process_alive(pid));
    }
}

#[test]
fn second_signal_kills_immediately() {
    let chain = Chain::start(&[], BLOCK);
    let mut supervisor = chain.run_supervisor(&[
        ("SIMD_IGNORE_SIGINT", "1"),
        ("DAEMON_SHUTDOWN_GRACE", "60s"),
    ]);
    chain.wait_signing(1, LONG);
    let started = Instant::now();
    supervisor.signal("TERM");
    // The first signal is being honoured (the daemon ignores its SIGINT):
    // the second one escalates.
    wait_for_node_state(&default_socket(&chain.home), "stopping", LONG);
    supervisor.signal("TERM");
    let status = supervisor.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(supervisor.has_line("second shutdown signal"));
}

#[test]
fn crash_is_restarted_with_backoff() {
    let chain = Chain::start(&[], BLOCK);
    let config = write_config(
        &chain,
        "[restart]\nbackoff-initial = \"200ms\"\nbackoff-max = \"1s\"\ncrash-loop-max-crashes = 50\n",
    );
    let supervisor =
        chain.run_supervisor(&[("PALISADE_CONFIG", &config), ("SIMD_CRASH_AFTER", "1s")]);
    // Each daemon lives a second before it crashes: polling `status` sees
    // every one of them. Three daemons: two crashes, each restarted.
    let socket = default_socket(&chain.home);
    let mut daemons = BTreeSet::new();
    common::wait_until(LONG, "the third daemon (two restarts)", || {
        if let Some(pid) = common::status(&socket).and_then(|status| status["node"]["pid"].as_u64())
        {
            daemons.insert(pid);
        }
        daemons.len() >= 3
    });
    // Each crash is explained: why the daemon ended, and that it restarts.
    supervisor.wait_for_line("daemon crashed; restarting after backoff", LONG);
    supervisor.wait_for_line("exit=exit status 2", LONG);
    // Restarted nodes keep signing and never double sign.
    chain.wait_signing(1, LONG);
    chain.assert_no_double_sign();
    supervisor.stop();
}

#[test]
fn crash_loop_stops_restarting_and_says_why() {
    let chain = Chain::start(&[], BLOCK);
    let state_before = std::fs::read(chain.home.join("data/priv_validator_state.json")).unwrap();
    let config = write_config(
        &chain,
        "[restart]\nbackoff-initial = \"50ms\"\nbackoff-max = \"100ms\"\ncrash-loop-max-crashes = 3\ncrash-loop-window = \"1m\"\n",
    );
    // A daemon that cannot start at all: an unknown flag makes simd exit 1.
    let mut command = chain.supervisor_command(&[("PALISADE_CONFIG", &config)]);
    command
        .args(["run", "--definitely-not-a-simd-flag"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut supervisor = common::Supervisor::spawn(command);
    let status = supervisor.wait_exit(LONG);
    assert_eq!(status.code(), Some(3), "{}", supervisor.output());
    assert!(
        supervisor.has_line("crashed 3 times within 1m"),
        "{}",
        supervisor.output()
    );
    assert!(supervisor.has_line("No state was changed"));
    let state_after = std::fs::read(chain.home.join("data/priv_validator_state.json")).unwrap();
    assert_eq!(state_before, state_after);
}

#[test]
fn flooding_daemon_misses_no_blocks_because_of_the_supervisor() {
    // A slower block time keeps the test about the supervisor, not about
    // CPU starvation on a 2-core CI machine running other tests.
    let chain = Chain::start(&[], common::timing::FLOOD_BLOCK);
    palisade_simchain::testkit::set_simchain_option(&chain.home, "log_flood", "true").unwrap();
    let supervisor = chain.run_supervisor(&[]);
    let first = chain.wait_signing(1, LONG);
    // Let it flood for a while: hundreds of MB pass through the supervisor.
    let last = chain.wait_signing(20, Duration::from_secs(60));
    let record = chain.network.record().unwrap();
    let missed = record.missed_between("val1", first + 1, last);
    assert!(
        missed.is_empty(),
        "missed heights {missed:?} while flooding"
    );
    let output = supervisor.stop();
    let statistics = output
        .lines()
        .find(|line| line.contains("daemon output statistics"))
        .unwrap_or_else(|| panic!("no output statistics logged"));
    let bytes_read: u64 = statistics
        .split_whitespace()
        .find_map(|field| field.strip_prefix("bytes_read="))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no bytes_read in {statistics}"));
    eprintln!("flood: {statistics}");
    assert!(
        bytes_read > 100 << 20,
        "the flood was only {bytes_read} bytes; the test needs hundreds of MB"
    );
}

#[test]
fn bad_configuration_is_reported_at_once_and_changes_nothing() {
    let chain = Chain::start(&[], BLOCK);
    let before = std::fs::read_link(chain.cosmovisor().join("current")).unwrap();
    let config = write_config(
        &chain,
        "[restart]\nbackoff-initial = \"soon\"\nunknown-key = 1\n",
    );
    let output = chain
        .supervisor_command(&[("PALISADE_CONFIG", &config)])
        .args(["run", "start"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown field `unknown-key`"), "{stderr}");

    let config = write_config(&chain, "[restart]\nbackoff-initial = \"soon\"\n");
    let output = chain
        .supervisor_command(&[
            ("PALISADE_CONFIG", &config),
            ("DAEMON_POLL_INTERVAL", "often"),
            ("DAEMON_RESTART_AFTER_UPGRADE", "perhaps"),
        ])
        .args(["run", "start"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for needle in [
        "environment variable DAEMON_POLL_INTERVAL: 'often' is not a duration",
        "environment variable DAEMON_RESTART_AFTER_UPGRADE: 'perhaps' is not a boolean",
        "key `restart.backoff-initial`: 'soon' is not a duration",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?} in {stderr}");
    }
    assert_eq!(
        std::fs::read_link(chain.cosmovisor().join("current")).unwrap(),
        before
    );
    assert_eq!(
        chain.network.record().unwrap().validators["val1"].signed_heights,
        0
    );
}

#[test]
fn cosmovisor_commands() {
    let chain = Chain::start(&[], BLOCK);
    let run = |args: &[&str]| {
        let output = chain.supervisor_command(&[]).args(args).output().unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, stdout, _) = run(&["version"]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("palisade-supervisor version"), "{stdout}");
    assert!(stdout.contains("v1"), "daemon version missing: {stdout}");

    let (code, stdout, _) = run(&["config"]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("DAEMON_NAME=simd"), "{stdout}");
    assert!(
        stdout.contains("DAEMON_DOWNLOAD_MUST_HAVE_CHECKSUM=true"),
        "{stdout}"
    );

    let (code, stdout, _) = run(&["show-upgrade-info"]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("no upgrade plan"), "{stdout}");

    let v2 = chain.version_binary("v2", &["v2"]);
    let v2 = v2.to_str().unwrap();
    let (code, _, stderr) = run(&["add-upgrade", "v2", v2, "--upgrade-height", "500"]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, _, stderr) = run(&["add-upgrade", "v2", v2]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("already exists; pass --force"), "{stderr}");
    let (code, stdout, _) = run(&["show-upgrade-info"]);
    assert_eq!(code, Some(0));
    let shown: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(shown["height"], 500);
    assert_eq!(shown["binary_installed"], true);
    assert_eq!(shown["applied"], false);

    let (code, _, stderr) = run(&["add-upgrade", "..", v2]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("not usable as a directory name"),
        "{stderr}"
    );
    let (code, _, stderr) = run(&["init", "/nonexistent/simd"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("does not exist"), "{stderr}");
}

#[test]
fn a_node_config_toml_that_cannot_be_read_stops_the_start_and_names_it() {
    let chain = Chain::start(&[], BLOCK);
    let config_toml = chain.home.join("config/config.toml");
    let original = std::fs::read_to_string(&config_toml).unwrap();
    for (broken, words) in [
        ("[p2p\nladdr = 1\n", "is not valid TOML"),
        (
            "priv_validator_state_file = 42\n",
            "`priv_validator_state_file` must be a string",
        ),
    ] {
        std::fs::write(&config_toml, broken).unwrap();
        let output = chain
            .supervisor_command(&[])
            .args(["run", "start"])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("config/config.toml"), "{stderr}");
        assert!(stderr.contains(words), "{stderr}");
        // Nothing started: no daemon, no control socket left behind.
        assert!(!common::default_socket(&chain.home).exists(), "{stderr}");
    }
    std::fs::write(&config_toml, original).unwrap();
}

/// A [`common::VaultRpc`] whose config has no `[backup] chain-id`: the
/// supervisor takes the chain id from `config/genesis.json` at unlock.
fn vault_reading_the_genesis() -> common::VaultRpc {
    let fixture = common::VaultRpc::setup(BLOCK, "genesis passphrase", "", "");
    let config = std::fs::read_to_string(&fixture.config).unwrap();
    let without = config.replace("chain-id = \"sim-1\"\n", "");
    assert_ne!(config, without, "the fixture's config changed: {config}");
    std::fs::write(&fixture.config, without).unwrap();
    fixture
}

/// A long-running chain's genesis.json is gigabytes. Reading its chain id
/// (here at unlock, for the backups) streams up to that field: the
/// supervisor's peak memory stays far below the file's size.
#[test]
fn a_256_mib_genesis_keeps_the_supervisor_under_32_mib() {
    let fixture = vault_reading_the_genesis();
    let genesis = fixture.chain.home.join("config/genesis.json");
    palisade_simchain::testkit::write_large_genesis(&fixture.chain.home, "sim-1", 256 << 20)
        .unwrap();
    let size = std::fs::metadata(&genesis).unwrap().len();
    assert!(size >= 256 << 20, "genesis is only {size} bytes");

    let supervisor = fixture.run();
    wait_for_node_state(&fixture.socket, "locked", LONG);
    fixture.unlock();
    fixture.chain.wait_signing(3, LONG);
    // The chain id came from the genesis: backups carry it.
    let status = common::wait_for_status(&fixture.socket, LONG, "a backup", |status| {
        status["last_backup"]["file"]
            .as_str()
            .is_some_and(|file| file.starts_with("backup-sim-1-"))
    });
    let peak_kib = common::proc_status_kib(supervisor.child.id(), "VmHWM").unwrap();
    eprintln!(
        "supervisor peak RSS {:.1} MiB with a {:.0} MiB genesis",
        peak_kib as f64 / 1024.0,
        size as f64 / (1 << 20) as f64
    );
    assert!(
        peak_kib < 32 * 1024,
        "peak RSS {peak_kib} KiB with a {size}-byte genesis; status: {status}"
    );
    supervisor.stop();
}

/// A genesis.json the chain id cannot be read from is an error naming the
/// file and the problem, never a guess: the unlock is answered with it, the
/// start is refused (the supervisor exits 1, as for any start rule that
/// cannot run) and the node never starts.
#[test]
fn an_unreadable_genesis_refuses_the_start_and_names_the_file() {
    let fixture = vault_reading_the_genesis();
    let genesis = fixture.chain.home.join("config/genesis.json");
    let state = fixture.chain.home.join("data/priv_validator_state.json");
    let state_before = std::fs::read(&state).unwrap();
    for (content, words) in [
        (
            &b"{\"genesis_time\": \"2026-01-01T00:00:00Z\", \"chain_id\": 7}"[..],
            "expected a string",
        ),
        (b"{\"app_state\": {}}", "no chain_id"),
        (b"{\"genesis_time\": \"2026-01-01", "EOF"),
        (b"", "EOF"),
    ] {
        std::fs::write(&genesis, content).unwrap();
        let mut supervisor = fixture.run();
        wait_for_node_state(&fixture.socket, "locked", LONG);
        let output = fixture.ctl(
            &["unlock", "--passphrase-stdin"],
            Some(&format!("{}\n", fixture.passphrase)),
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{output:?}");
        assert!(stderr.contains("config/genesis.json"), "{stderr}");
        assert!(stderr.contains(words), "{words:?} not in {stderr}");
        let status = supervisor.wait_exit(LONG);
        assert_eq!(status.code(), Some(1), "{}", supervisor.output());
        assert!(
            !supervisor.has_line("daemon started"),
            "the node started: {}",
            supervisor.output()
        );
        assert_eq!(std::fs::read(&state).unwrap(), state_before);
    }
}
