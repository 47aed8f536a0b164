//! End-to-end upgrade paths beyond the basic switch: pre-upgrade exit
//! codes, the custom pre-upgrade script, no restart after upgrade,
//! restarting on an already applied upgrade, manual (height-scheduled)
//! upgrades, raw and zip downloads, orphans, systemd notifications.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::timing::{BLOCK, LONG};
use common::{
    Chain, FakeSystemd, default_socket, process_alive, serve_files, sha256_hex,
    wait_for_node_state, wait_for_status, wait_until,
};

const NO_BACKUP: (&str, &str) = ("UNSAFE_SKIP_BACKUP", "true");

#[test]
fn preupgrade_abort_keeps_the_old_version_and_halts() {
    let chain = Chain::start(&[("v2", 12)], BLOCK);
    chain.add_upgrade("v2", &chain.version_binary("v2", &["v2"]), &[]);
    let mut supervisor = chain.run_supervisor(&[NO_BACKUP, ("SIMD_PREUPGRADE_EXIT", "30")]);
    // The record says the upgrade failed and why; the node stays halted.
    let record = chain.wait_for_upgrade_record("v2", LONG);
    assert_eq!(record["outcome"]["status"], "failed", "{record}");
    let reason = "the new binary aborted the upgrade (exit 30)";
    assert!(
        record["outcome"]["reason"]
            .as_str()
            .is_some_and(|text| text.contains(reason)),
        "{record}"
    );
    wait_for_node_state(&default_socket(&chain.home), "halted", LONG);
    // The operator reads why in the log.
    supervisor.wait_for_line(reason, LONG);
    assert_eq!(chain.current_target(), Path::new("genesis"));
    assert!(supervisor.children().is_empty());
    supervisor.signal("TERM");
    assert!(supervisor.wait_exit(LONG).success());
}

#[test]
fn preupgrade_retry_is_bounded_by_max_retries() {
    let chain = Chain::start(&[("v2", 12)], BLOCK);
    chain.add_upgrade("v2", &chain.version_binary("v2", &["v2"]), &[]);
    let supervisor = chain.run_supervisor(&[
        NO_BACKUP,
        ("SIMD_PREUPGRADE_EXIT", "31"),
        ("DAEMON_PREUPGRADE_MAX_RETRIES", "2"),
    ]);
    // Two retries, then the third attempt gives up: the record's reason
    // counts the attempts, and the operator reads it in the log.
    let record = chain.wait_for_upgrade_record("v2", LONG);
    assert_eq!(record["outcome"]["status"], "failed", "{record}");
    let reason = "still asking to retry (exit 31) after 3 attempts";
    assert!(
        record["outcome"]["reason"]
            .as_str()
            .is_some_and(|text| text.contains(reason)),
        "{record}"
    );
    supervisor.wait_for_line(reason, LONG);
    assert_eq!(chain.current_target(), Path::new("genesis"));
    supervisor.stop();
}

#[test]
fn preupgrade_not_implemented_is_fine_and_custom_script_gets_name_and_height() {
    let chain = Chain::start(&[("v2", 12)], BLOCK);
    chain.add_upgrade("v2", &chain.version_binary("v2", &["v2"]), &[]);
    let marker = chain.dir.path().join("custom-preupgrade-ran");
    let script = chain.cosmovisor().join("pre-upgrade.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho \"$1 $2\" > '{}'\n", marker.display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let supervisor = chain.run_supervisor(&[
        NO_BACKUP,
        ("SIMD_PREUPGRADE_EXIT", "1"),
        ("COSMOVISOR_CUSTOM_PREUPGRADE", "pre-upgrade.sh"),
    ]);
    let record = chain.wait_for_upgrade_completed("v2", LONG);
    assert_eq!(std::fs::read_to_string(&marker).unwrap().trim(), "v2 12");
    let detail = record["steps"][1]["detail"].as_str().unwrap();
    assert!(detail.contains("not implemented"), "{record}");
    assert!(detail.contains("custom script"), "{record}");
    supervisor.stop();
}

#[test]
fn no_restart_after_upgrade_exits_and_a_restart_runs_the_new_binary_once() {
    let chain = Chain::start(&[("v2", 12)], BLOCK);
    chain.add_upgrade("v2", &chain.version_binary("v2", &["v2"]), &[]);
    let mut supervisor =
        chain.run_supervisor(&[NO_BACKUP, ("DAEMON_RESTART_AFTER_UPGRADE", "false")]);
    let status = supervisor.wait_exit(LONG);
    assert!(status.success(), "{}", supervisor.output());
    assert_eq!(chain.current_target(), Path::new("upgrades/v2"));
    assert_eq!(
        chain.upgrade_records()[0]["outcome"]["status"],
        "switched_not_restarted"
    );

    // Started again (as systemd would), it runs v2 and does not upgrade
    // again although data/upgrade-info.json still names v2.
    assert!(chain.home.join("data/upgrade-info.json").exists());
    let supervisor = chain.run_supervisor(&[NO_BACKUP]);
    let socket = default_socket(&chain.home);
    let daemon = wait_for_node_state(&socket, "running", LONG)["node"]["pid"].clone();
    let last = chain.wait_signing(3, LONG);
    assert!(last > 12);
    // Not upgraded again: at start (that would have left a second record
    // before the node signed) nor later (that would have replaced the
    // daemon, or would show now).
    assert_eq!(chain.upgrade_records().len(), 1);
    let status = common::status(&socket).expect("status");
    assert_eq!(status["node"]["state"], "running", "{status}");
    assert_eq!(status["node"]["pid"], daemon, "{status}");
    chain.assert_no_double_sign();
    supervisor.stop();
}

#[test]
fn plan_left_while_the_supervisor_was_down_is_applied_at_start() {
    let chain = Chain::start(&[("v2", 10)], BLOCK);
    chain.add_upgrade("v2", &chain.version_binary("v2", &["v2"]), &[]);
    // Run the old node without Palisade until it halts for the upgrade.
    let mut node = palisade_simchain::testkit::SimdProcess::start(
        &chain.cosmovisor().join("genesis/bin/simd"),
        &chain.home,
        &[],
        &[],
    )
    .unwrap();
    node.wait_for_output("UPGRADE \"v2\" NEEDED", LONG).unwrap();
    node.kill();
    let systemd = FakeSystemd::start(chain.dir.path());
    let notify = systemd.env(LONG);
    let mut env: Vec<(&str, &str)> = notify.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(NO_BACKUP);
    let supervisor = chain.run_supervisor(&env);
    let record = chain.wait_for_upgrade_completed("v2", LONG);
    assert_eq!(record["detected_by"], "upgrade_info_file", "{record}");
    assert_eq!(chain.current_target(), Path::new("upgrades/v2"));
    // Applied at start, before any daemon ran: the first daemon the
    // supervisor reported ready is the new binary's.
    let socket = default_socket(&chain.home);
    let status = wait_for_node_state(&socket, "running", LONG);
    systemd.wait_for("READY=1", LONG);
    let first = systemd
        .messages()
        .into_iter()
        .map(|(_, text)| text)
        .find(|text| text.contains("READY=1"))
        .unwrap();
    assert!(
        first.contains(&format!("(pid {})", status["node"]["pid"])),
        "the first daemon was not the new binary: {first}; {status}"
    );
    chain.wait_signing(3, LONG);
    chain.assert_no_double_sign();
    supervisor.stop();
}

#[test]
fn manual_upgrade_waits_for_the_height() {
    let chain = Chain::start(&[], BLOCK);
    let supervisor = chain.run_supervisor(&[NO_BACKUP]);
    chain.wait_signing(2, LONG);
    let height = chain.network.height().unwrap() + 12;
    let v2 = chain.version_binary("v2", &[]);
    let output = chain
        .supervisor_command(&[])
        .args(["add-upgrade", "v2"])
        .arg(&v2)
        .args(["--upgrade-height", &height.to_string()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    // The plan is held until the node reaches its height…
    let socket = default_socket(&chain.home);
    let held = wait_for_status(&socket, LONG, "the plan to be held", |status| {
        status["upgrades"]["scheduled"].is_string()
    });
    let scheduled = held["upgrades"]["scheduled"].as_str().unwrap();
    assert!(
        scheduled.contains("v2") && scheduled.contains(&height.to_string()),
        "{held}"
    );
    assert_eq!(chain.current_target(), Path::new("genesis"));
    // …and released (the upgrade begins) only once the node has committed
    // height - 1.
    wait_for_status(&socket, LONG, "the held plan to be due", |status| {
        status["upgrades"]["scheduled"].is_null()
    });
    let chain_height = chain.network.height().unwrap();
    assert!(
        chain_height + 2 >= height,
        "upgraded at chain height {chain_height}, plan height {height}"
    );
    chain.wait_for_upgrade_completed("v2", LONG);
    assert_eq!(chain.current_target(), Path::new("upgrades/v2"));
    chain.wait_signing(2, LONG);
    supervisor.stop();
}

fn v2_script() -> Vec<u8> {
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join("simd");
    palisade_simchain::testkit::write_versioned_binary(&path, &common::simd(), "v2", &["v2"])
        .unwrap();
    std::fs::read(path).unwrap()
}

fn zip_with_binary(script: &[u8]) -> Vec<u8> {
    let mut buffer = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut buffer);
    let options = zip::write::SimpleFileOptions::default().unix_permissions(0o755);
    zip.start_file("bin/simd", options).unwrap();
    zip.write_all(script).unwrap();
    zip.finish().unwrap();
    buffer.into_inner()
}

fn download_and_run(artifact: Vec<u8>, name: &str) {
    let base = serve_files(vec![(format!("/{name}"), artifact.clone())]);
    let info = format!(
        r#"{{"binaries":{{"linux/amd64":"{base}/{name}?checksum=sha256:{sum}","linux/arm64":"{base}/{name}?checksum=sha256:{sum}"}}}}"#,
        sum = sha256_hex(&artifact)
    );
    let chain = Chain::start(&[], BLOCK);
    chain.network.schedule_upgrade("v2", 14, &info).unwrap();
    let supervisor = chain.run_supervisor(&[("DAEMON_ALLOW_DOWNLOAD_BINARIES", "true"), NO_BACKUP]);
    chain.wait_for_upgrade_completed("v2", LONG);
    assert_eq!(chain.current_target(), Path::new("upgrades/v2"));
    let last = chain.wait_signing(3, LONG);
    assert!(last > 14);
    supervisor.stop();
}

#[test]
fn auto_download_raw_binary_runs() {
    download_and_run(v2_script(), "simd");
}

#[test]
fn auto_download_zip_runs() {
    download_and_run(zip_with_binary(&v2_script()), "simd-v2.zip");
}

#[test]
fn orphans_left_by_the_daemon_are_killed_on_stop() {
    let chain = Chain::start(&[], BLOCK);
    let pid_file = chain.dir.path().join("orphan.pid");
    let wrapper = chain.dir.path().join("wrapper");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nsetsid sleep 300 &\necho $! > '{}'\nexec '{}' \"$@\"\n",
            pid_file.display(),
            chain.cosmovisor().join("genesis/bin/simd.real").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let genesis = chain.cosmovisor().join("genesis/bin/simd");
    std::fs::rename(&genesis, genesis.with_file_name("simd.real")).unwrap();
    std::fs::copy(&wrapper, &genesis).unwrap();

    let supervisor = chain.run_supervisor(&[]);
    chain.wait_signing(1, LONG);
    wait_until(LONG, "orphan pid", || pid_file.exists());
    let orphan: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(process_alive(orphan));
    supervisor.stop();
    wait_until(Duration::from_secs(5), "the orphan to die", || {
        !process_alive(orphan)
    });
}

#[test]
fn systemd_notifications_ready_status_watchdog_stopping() {
    let chain = Chain::start(&[], BLOCK);
    let socket_path = chain.dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let supervisor = chain.run_supervisor(&[
        ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
        ("WATCHDOG_USEC", "300000"),
    ]);
    let mut messages = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = Instant::now() + LONG;
    while messages
        .iter()
        .filter(|m: &&String| m.contains("WATCHDOG=1"))
        .count()
        < 3
    {
        assert!(Instant::now() < deadline, "messages so far: {messages:?}");
        if let Ok(n) = socket.recv(&mut buffer) {
            messages.push(String::from_utf8_lossy(&buffer[..n]).into_owned());
        }
    }
    let ready = messages
        .iter()
        .find(|m| m.contains("READY=1"))
        .expect("READY");
    assert!(ready.contains("STATUS=running simd"), "{ready}");
    // The daemon does not inherit the notification socket.
    let daemon = supervisor.children()[0];
    let environ = std::fs::read(format!("/proc/{daemon}/environ")).unwrap();
    assert!(!String::from_utf8_lossy(&environ).contains("NOTIFY_SOCKET"));
    supervisor.stop();
    let mut stopping = false;
    while let Ok(n) = socket.recv(&mut buffer) {
        stopping |= String::from_utf8_lossy(&buffer[..n]).contains("STOPPING=1");
    }
    assert!(stopping, "no STOPPING=1");
}

#[test]
fn shutdown_during_a_long_upgrade_step_stops_before_the_switch_and_feeds_the_watchdog() {
    let chain = Chain::start(&[("v2", 12)], BLOCK);
    chain.add_upgrade("v2", &chain.version_binary("v2", &["v2"]), &[]);
    let started = chain.dir.path().join("slow-step-started");
    let script = chain.cosmovisor().join("slow.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\ntouch '{}'\nsleep 60\n", started.display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket_path = chain.dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut supervisor = chain.run_supervisor(&[
        NO_BACKUP,
        ("COSMOVISOR_CUSTOM_PREUPGRADE", "slow.sh"),
        ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
        ("WATCHDOG_USEC", "200000"),
    ]);
    let deadline = Instant::now() + LONG;
    while !started.exists() {
        assert!(
            Instant::now() < deadline,
            "slow step never ran:\n{}",
            supervisor.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Drain what was queued so far (pings keep coming, so bound it by
    // time), then count pings during the slow step.
    let mut buffer = [0u8; 4096];
    let drain = Instant::now();
    while drain.elapsed() < Duration::from_millis(300) {
        let _ = socket.recv(&mut buffer);
    }
    let mut pings = 0;
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(1) {
        if let Ok(n) = socket.recv(&mut buffer) {
            pings += String::from_utf8_lossy(&buffer[..n])
                .matches("WATCHDOG=1")
                .count();
        }
    }
    assert!(
        pings >= 3,
        "only {pings} watchdog pings during a long upgrade step"
    );
    let stop = Instant::now();
    supervisor.signal("TERM");
    assert!(supervisor.wait_exit(LONG).success());
    assert!(
        stop.elapsed() < Duration::from_secs(5),
        "{:?}",
        stop.elapsed()
    );
    assert!(
        supervisor.has_line("shutdown requested during the upgrade"),
        "{}",
        supervisor
            .output()
            .lines()
            .filter(|l| !l.contains("signed and pushed") && !l.contains("committed state"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(chain.current_target(), Path::new("genesis"));
    assert_eq!(
        chain.upgrade_records()[0]["outcome"]["reason"],
        "interrupted by shutdown"
    );
}
