//! End-to-end upgrades: the real supervisor binary, the simulated chain,
//! Cosmovisor's layout and environment.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::timing::{BLOCK, LONG};
use common::{Chain, default_socket, holds_for, serve_files, sha256_hex, wait_for_node_state};

fn assert_upgraded(chain: &Chain, dir_name: &str, upgrade_height: u64) {
    assert_eq!(
        chain.current_target(),
        std::path::Path::new("upgrades").join(dir_name)
    );
    let plan_copy = chain
        .cosmovisor()
        .join("upgrades")
        .join(dir_name)
        .join("upgrade-info.json");
    assert!(plan_copy.exists(), "{} missing", plan_copy.display());
    // Signing resumed above the upgrade height, with the new binary.
    let last = chain.wait_signing(3, LONG);
    assert!(
        last > upgrade_height,
        "last signed {last} <= {upgrade_height}"
    );
    chain.assert_no_double_sign();
}

#[test]
fn upgrade_through_upgrade_info_json() {
    let chain = Chain::start(&[("v2", 12)], BLOCK);
    chain.add_upgrade("v2", &chain.version_binary("v2", &["v2"]), &[]);
    let supervisor = chain.run_supervisor(&[]);
    chain.wait_signing(2, LONG);
    chain.wait_for_upgrade_completed("v2", LONG);
    assert_upgraded(&chain, "v2", 12);

    let records = chain.upgrade_records();
    assert_eq!(records.len(), 1, "{records:?}");
    let record = &records[0];
    assert_eq!(record["name"], "v2");
    assert_eq!(record["height"], 12);
    assert_eq!(record["outcome"]["status"], "completed");
    let steps: Vec<&str> = record["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|step| step["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "stop_old",
            "data_backup",
            "pre_upgrade",
            "switch",
            "start_new"
        ],
        "{record}"
    );
    assert!(record["switch_ms"].as_u64().is_some());
    // The data backup sits in DAEMON_HOME, named after the upgrade.
    let backups: Vec<_> = std::fs::read_dir(&chain.home)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .starts_with("data-backup-v2-")
        })
        .collect();
    assert_eq!(backups.len(), 1);
    assert!(backups[0].path().join("priv_validator_state.json").exists());
    supervisor.stop();
}

/// The node's log forms the halt line comes in (docs/simchain.md "Output"):
/// a config.toml setting, and how the `UPGRADE "v2" NEEDED` line looks in it.
#[derive(Debug, Clone, Copy)]
enum LogForm {
    /// The SDK's console default: zerolog's coloured console writer.
    Coloured,
    /// `log_no_color = true`.
    Plain,
    /// `log_format = "json"`: the message is a JSON string, quotes escaped.
    Json,
}

/// With no upgrade-info.json written, the halt line alone triggers the
/// upgrade, whichever form gaiad logs it in; the name and height are taken
/// exactly.
fn upgrade_through_the_output_line_only(form: LogForm) {
    let chain = Chain::start(&[("v2", 12)], BLOCK);
    let set = |key, value| {
        palisade_simchain::testkit::set_base_option(&chain.home, key, value).unwrap();
    };
    match form {
        LogForm::Coloured => set("log_no_color", "false"),
        LogForm::Plain => set("log_no_color", "true"),
        LogForm::Json => set("log_format", "\"json\""),
    }
    palisade_simchain::testkit::set_simchain_option(&chain.home, "write_upgrade_info", "false")
        .unwrap();
    chain.add_upgrade("v2", &chain.version_binary("v2", &["v2"]), &[]);
    let supervisor = chain.run_supervisor(&[("UNSAFE_SKIP_BACKUP", "true")]);
    chain.wait_for_upgrade_completed("v2", LONG);
    assert!(!chain.home.join("data/upgrade-info.json").exists());
    let record = &chain.upgrade_records()[0];
    assert_eq!(record["detected_by"], "output_line", "{record}");
    assert_eq!(record["name"], "v2", "{record}");
    assert_eq!(record["height"], 12, "{record}");
    // The line really came in that form (the node's output passes through).
    let output = supervisor.output();
    let halt = output
        .lines()
        .find(|line| line.contains("NEEDED at height: 12"))
        .unwrap_or_else(|| panic!("no halt line in:\n{}", common::tail(&output, 40)));
    match form {
        LogForm::Coloured => assert!(halt.contains("\u{1b}["), "{halt:?}"),
        LogForm::Plain => {
            assert!(!halt.contains('\u{1b}'), "{halt:?}");
            assert!(halt.contains("UPGRADE \"v2\" NEEDED"), "{halt:?}");
        }
        LogForm::Json => {
            let json: serde_json::Value = serde_json::from_str(halt.trim())
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {halt:?}"));
            assert!(halt.contains("UPGRADE \\\"v2\\\" NEEDED"), "{halt:?}");
            assert_eq!(json["level"], "error", "{halt}");
        }
    }
    assert_upgraded(&chain, "v2", 12);
    // With no upgrade-info.json to confirm it, the line is acted on alone,
    // and the log says so.
    assert!(
        supervisor.has_line("acting on the output line alone"),
        "{}",
        supervisor.output()
    );
    supervisor.stop();
}

#[test]
fn upgrade_through_a_coloured_console_line_only() {
    upgrade_through_the_output_line_only(LogForm::Coloured);
}

#[test]
fn upgrade_through_a_plain_console_line_only() {
    upgrade_through_the_output_line_only(LogForm::Plain);
}

#[test]
fn upgrade_through_a_json_log_line_only() {
    upgrade_through_the_output_line_only(LogForm::Json);
}

#[test]
fn mixed_case_upgrade_name_is_recased_by_default() {
    let chain = Chain::start(&[("V2-Upper", 12)], BLOCK);
    chain.add_upgrade("V2-Upper", &chain.version_binary("v2", &["V2-Upper"]), &[]);
    assert!(
        chain
            .cosmovisor()
            .join("upgrades/v2-upper/bin/simd")
            .exists()
    );
    let supervisor = chain.run_supervisor(&[("UNSAFE_SKIP_BACKUP", "true")]);
    chain.wait_for_upgrade_completed("V2-Upper", LONG);
    assert_upgraded(&chain, "v2-upper", 12);
    supervisor.stop();
}

#[test]
fn mixed_case_upgrade_name_kept_with_disable_recase() {
    let chain = Chain::start(&[("V2-Upper", 12)], BLOCK);
    let env = [
        ("COSMOVISOR_DISABLE_RECASE", "true"),
        ("UNSAFE_SKIP_BACKUP", "true"),
    ];
    chain.add_upgrade("V2-Upper", &chain.version_binary("v2", &["V2-Upper"]), &env);
    assert!(
        chain
            .cosmovisor()
            .join("upgrades/V2-Upper/bin/simd")
            .exists()
    );
    let supervisor = chain.run_supervisor(&env);
    chain.wait_for_upgrade_completed("V2-Upper", LONG);
    assert_upgraded(&chain, "V2-Upper", 12);
    supervisor.stop();
}

#[test]
fn missing_binary_halts_without_crash_loop_then_continues_when_installed() {
    let chain = Chain::start(&[("v2", 12)], BLOCK);
    let supervisor = chain.run_supervisor(&[("UNSAFE_SKIP_BACKUP", "true")]);
    // The operator is told why the node halted, and what to do.
    supervisor.wait_for_line("DAEMON_ALLOW_DOWNLOAD_BINARIES is off", LONG);
    assert!(supervisor.has_line("palisade-supervisor add-upgrade v2"));
    // Halted: the old binary is not restarted into a crash loop.
    let socket = default_socket(&chain.home);
    wait_for_node_state(&socket, "halted", LONG);
    holds_for(Duration::from_secs(1), "halted, with no daemon", || {
        common::node_state(&socket).as_deref() == Some("halted") && supervisor.children().is_empty()
    });
    assert_eq!(chain.current_target(), std::path::Path::new("genesis"));

    chain.add_upgrade("v2", &chain.version_binary("v2", &["v2"]), &[]);
    chain.wait_for_upgrade_completed("v2", LONG);
    assert_upgraded(&chain, "v2", 12);
    supervisor.stop();
}

#[test]
fn non_executable_upgrade_binary_is_refused() {
    let chain = Chain::start(&[("v2", 12)], BLOCK);
    let binary = chain.cosmovisor().join("upgrades/v2/bin/simd");
    std::fs::create_dir_all(binary.parent().unwrap()).unwrap();
    std::fs::copy(chain.version_binary("v2", &["v2"]), &binary).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o644)).unwrap();
    let supervisor = chain.run_supervisor(&[("UNSAFE_SKIP_BACKUP", "true")]);
    supervisor.wait_for_line("is not executable (mode 644)", LONG);
    assert_eq!(chain.current_target(), std::path::Path::new("genesis"));
    // Fixing the mode lets the waiting supervisor finish the upgrade.
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    chain.wait_for_upgrade_completed("v2", LONG);
    assert_upgraded(&chain, "v2", 12);
    supervisor.stop();
}

fn tar_gz_with_binary(script: &[u8]) -> Vec<u8> {
    let mut archive = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let mut header = tar::Header::new_gnu();
    header.set_size(script.len() as u64);
    header.set_mode(0o755);
    header.set_cksum();
    archive
        .append_data(&mut header, "bin/simd", script)
        .unwrap();
    archive.into_inner().unwrap().finish().unwrap()
}

#[test]
fn auto_download_with_checksum_installs_and_runs() {
    let scratch = tempfile::tempdir().unwrap();
    let script_path = scratch.path().join("simd");
    palisade_simchain::testkit::write_versioned_binary(
        &script_path,
        &common::simd(),
        "v2",
        &["v2"],
    )
    .unwrap();
    let script = std::fs::read(&script_path).unwrap();
    let archive = tar_gz_with_binary(&script);
    let base = serve_files(vec![("/simd-v2.tar.gz".into(), archive.clone())]);
    let info = format!(
        r#"{{"binaries":{{"any":"{base}/simd-v2.tar.gz?checksum=sha256:{}"}}}}"#,
        sha256_hex(&archive)
    );
    let chain = Chain::start(&[], BLOCK);
    chain.network.schedule_upgrade("v2", 14, &info).unwrap();
    let supervisor = chain.run_supervisor(&[
        ("DAEMON_ALLOW_DOWNLOAD_BINARIES", "true"),
        ("UNSAFE_SKIP_BACKUP", "true"),
    ]);
    let record = chain.wait_for_upgrade_completed("v2", LONG);
    assert_upgraded(&chain, "v2", 14);
    let steps = record["steps"].as_array().unwrap();
    assert_eq!(steps[1]["step"], "download");
    assert!(
        steps[2]["detail"].as_str().unwrap().contains("verified"),
        "{record}"
    );
    supervisor.stop();
}

#[test]
fn auto_download_with_bad_checksum_installs_nothing_and_stays_halted() {
    let archive = tar_gz_with_binary(b"#!/bin/sh\nexit 0\n");
    let base = serve_files(vec![("/simd-v2.tar.gz".into(), archive)]);
    let info = format!(
        r#"{{"binaries":{{"any":"{base}/simd-v2.tar.gz?checksum=sha256:{}"}}}}"#,
        "0".repeat(64)
    );
    let chain = Chain::start(&[], BLOCK);
    chain.network.schedule_upgrade("v2", 12, &info).unwrap();
    let supervisor = chain.run_supervisor(&[
        ("DAEMON_ALLOW_DOWNLOAD_BINARIES", "true"),
        ("UNSAFE_SKIP_BACKUP", "true"),
    ]);
    // Why the upgrade failed, for the operator.
    supervisor.wait_for_line("download failed", LONG);
    assert!(
        supervisor.output().contains("checksum"),
        "{}",
        supervisor.output()
    );
    // Halted on the old version: not restarted, nothing running.
    wait_for_node_state(&default_socket(&chain.home), "halted", LONG);
    assert!(
        supervisor.children().is_empty(),
        "a daemon is running while halted"
    );
    assert!(!chain.cosmovisor().join("upgrades/v2").exists());
    let leftovers: Vec<_> = std::fs::read_dir(chain.cosmovisor().join("upgrades"))
        .unwrap()
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(chain.current_target(), std::path::Path::new("genesis"));
    let records = chain.upgrade_records();
    assert!(records.is_empty() || records[0]["outcome"]["status"] == "failed");
    supervisor.stop();
}

#[test]
fn auto_download_without_checksum_is_refused_by_default() {
    let archive = tar_gz_with_binary(b"#!/bin/sh\nexit 0\n");
    let base = serve_files(vec![("/simd-v2.tar.gz".into(), archive)]);
    let info = format!(r#"{{"binaries":{{"any":"{base}/simd-v2.tar.gz"}}}}"#);
    let chain = Chain::start(&[], BLOCK);
    chain.network.schedule_upgrade("v2", 12, &info).unwrap();
    let supervisor = chain.run_supervisor(&[
        ("DAEMON_ALLOW_DOWNLOAD_BINARIES", "true"),
        ("UNSAFE_SKIP_BACKUP", "true"),
    ]);
    supervisor.wait_for_line("download failed", LONG);
    assert!(!chain.cosmovisor().join("upgrades/v2").exists());
    assert_eq!(chain.current_target(), std::path::Path::new("genesis"));
    supervisor.stop();
}

#[test]
fn invalid_plan_file_is_reported_and_the_node_keeps_signing() {
    let chain = Chain::start(&[], BLOCK);
    let supervisor = chain.run_supervisor(&[]);
    chain.wait_signing(2, LONG);
    let socket = default_socket(&chain.home);
    let daemon = wait_for_node_state(&socket, "running", LONG)["node"]["pid"].clone();
    std::fs::write(
        chain.home.join("data/upgrade-info.json"),
        br#"{"name":"v9","height":-3}"#,
    )
    .unwrap();
    // The operator is told the plan is invalid and ignored.
    supervisor.wait_for_line("ignoring invalid upgrade plan", LONG);
    chain.wait_signing(3, LONG);
    // The same daemon still runs: never stopped for the plan.
    let status = common::status(&socket).expect("status");
    assert_eq!(status["node"]["state"], "running", "{status}");
    assert_eq!(status["node"]["pid"], daemon, "{status}");
    supervisor.stop();
}
