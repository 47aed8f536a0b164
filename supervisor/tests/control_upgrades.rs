//! Staging upgrades over the control RPC, end to end with the real
//! binaries: `palisade-ctl upgrade add` (by path, by URL from a loopback
//! HTTP server), `palisade-ctl upgrades`, `palisade-ctl upgrade cancel`
//! against a supervisor running its node on the simulated chain — then the
//! chain reaches the plan height and the live upgrade uses the staged
//! binary without downloading anything. Bad input is refused with a clear
//! error, exit code 1, and nothing installed.
//!
//! The supervisor runs without a vault or config file: its socket is the
//! default `$DAEMON_HOME/palisade/run/supervisor.sock`, and `palisade-ctl`
//! calls it as a trusted local user (plaintext, admin role).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::timing::{BLOCK, LONG};
use common::{Chain, Supervisor, default_socket, serve_files, serve_http, sha256_hex};
use serde_json::Value;

/// Appears in a staging URL's query string: must never be echoed or logged.
const URL_TOKEN: &str = "s3cr3t-download-token";

struct Running {
    chain: Chain,
    supervisor: Supervisor,
    socket: PathBuf,
}

/// A chain whose validator runs under the supervisor; downloads are
/// allowed, so "no download" below is a property of staging, not of the
/// configuration.
fn start() -> Running {
    let chain = Chain::start(&[], BLOCK);
    let supervisor = chain.run_supervisor(&[
        ("DAEMON_ALLOW_DOWNLOAD_BINARIES", "true"),
        ("UNSAFE_SKIP_BACKUP", "true"),
    ]);
    let socket = default_socket(&chain.home);
    chain.wait_signing(2, LONG);
    common::wait_for_node_state(&socket, "running", LONG);
    Running {
        chain,
        supervisor,
        socket,
    }
}

impl Running {
    fn ctl_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(common::workspace_binary("palisade-ctl"));
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.chain.dir.path())
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_command(args).output().unwrap()
    }

    /// A call that must succeed; its JSON result.
    fn ctl_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let output = self.ctl(&all);
        assert!(output.status.success(), "{args:?}: {}", describe(&output));
        serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|error| panic!("{args:?}: {error}: {}", describe(&output)))
    }

    /// A call that must fail with `exit`; its stderr.
    fn ctl_fails(&self, args: &[&str], exit: i32) -> String {
        let output = self.ctl(args);
        assert_eq!(
            output.status.code(),
            Some(exit),
            "{args:?}: {}",
            describe(&output)
        );
        assert!(output.stdout.is_empty(), "{args:?}: {}", describe(&output));
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    fn list(&self) -> Value {
        self.ctl_json(&["upgrades"])
    }

    fn upgrades_dir(&self) -> PathBuf {
        self.chain.cosmovisor().join("upgrades")
    }

    /// Everything in `upgrades/`, hidden staging leftovers included.
    fn upgrades_entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.upgrades_dir())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn staged_binary(&self, dir: &str) -> PathBuf {
        self.upgrades_dir().join(dir).join("bin/simd")
    }
}

fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn staged_names(listing: &Value) -> Vec<String> {
    listing["staged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn staged_upgrades_are_listed_cancelled_and_used_at_the_plan_height() {
    let running = start();
    let chain = &running.chain;

    // Nothing staged yet.
    let listing = running.list();
    assert_eq!(listing["current"], "genesis", "{listing}");
    assert_eq!(listing["staged"], serde_json::json!([]), "{listing}");
    assert_eq!(listing["plan_on_disk"], Value::Null, "{listing}");
    let readable = running.ctl(&["upgrades"]);
    assert!(readable.status.success(), "{}", describe(&readable));
    let text = String::from_utf8_lossy(&readable.stdout);
    assert!(text.contains("current: genesis\nstaged: none\n"), "{text}");

    // Stage by path: copied into place, the source left alone.
    let v2 = chain.version_binary("v2", &["v2"]);
    let v2_bytes = std::fs::read(&v2).unwrap();
    let added = running.ctl_json(&["upgrade", "add", "v2", "--path", v2.to_str().unwrap()]);
    assert_eq!(added["name"], "v2", "{added}");
    assert_eq!(added["dir"], "v2", "{added}");
    assert_eq!(added["sha256"], sha256_hex(&v2_bytes), "{added}");
    assert_eq!(added["size"], v2_bytes.len(), "{added}");
    let staged_v2 = running.staged_binary("v2");
    assert_eq!(
        Path::new(added["path"].as_str().unwrap()),
        staged_v2,
        "{added}"
    );
    assert_eq!(std::fs::read(&staged_v2).unwrap(), v2_bytes);
    assert!(v2.exists(), "the source was moved");

    // Staged already: refused, unchanged, also in another case (recased).
    for name in ["v2", "V2"] {
        let stderr =
            running.ctl_fails(&["upgrade", "add", name, "--path", v2.to_str().unwrap()], 1);
        assert!(
            stderr.contains("is already staged") && stderr.contains("cancel it first"),
            "{stderr}"
        );
        assert!(stderr.contains("code -32004"), "{stderr}");
    }
    assert_eq!(std::fs::read(&staged_v2).unwrap(), v2_bytes);

    // Stage by URL (with a token in the query) and a good checksum.
    let v3 = chain.version_binary("v3", &["v3"]);
    let v3_bytes = std::fs::read(&v3).unwrap();
    let base = serve_files(vec![("/simd-v3".into(), v3_bytes.clone())]);
    let url = format!("{base}/simd-v3?token={URL_TOKEN}");
    let good = format!("sha256:{}", sha256_hex(&v3_bytes));
    let readable = running.ctl(&["upgrade", "add", "v3", "--url", &url, "--checksum", &good]);
    assert!(readable.status.success(), "{}", describe(&readable));
    let text = String::from_utf8_lossy(&readable.stdout);
    assert!(text.starts_with("staged v3 as upgrades/v3\n"), "{text}");
    assert!(text.contains(&sha256_hex(&v3_bytes)), "{text}");
    assert!(
        !text.contains(URL_TOKEN),
        "the URL's token was echoed: {text}"
    );
    assert_eq!(
        std::fs::read(running.staged_binary("v3")).unwrap(),
        v3_bytes
    );

    // A wrong checksum: a clear error, exit 1, nothing installed, no
    // staging directory left behind.
    let wrong = format!("sha256:{}", "0".repeat(64));
    let stderr = running.ctl_fails(
        &["upgrade", "add", "v4", "--url", &url, "--checksum", &wrong],
        1,
    );
    assert!(stderr.contains("checksum mismatch"), "{stderr}");
    assert!(stderr.contains(&sha256_hex(&v3_bytes)), "{stderr}");
    assert!(stderr.contains("nothing was installed"), "{stderr}");
    assert!(stderr.contains(r#""field":"checksum""#), "{stderr}");
    assert!(!stderr.contains(URL_TOKEN), "{stderr}");
    // A URL that is not there.
    let stderr = running.ctl_fails(
        &[
            "upgrade",
            "add",
            "v4",
            "--url",
            &format!("{base}/missing"),
            "--checksum",
            &good,
        ],
        1,
    );
    assert!(stderr.contains("HTTP 404"), "{stderr}");
    assert!(stderr.contains("nothing was installed"), "{stderr}");
    assert_eq!(running.upgrades_entries(), ["v2", "v3"]);

    // Bad params: named field, exit 1 (sent --unchecked, so that the
    // supervisor itself refuses them); client-side usage errors exit 2.
    let bad: &[(&str, &str)] = &[
        (
            r#"{"name":"v5","path":"/bin/true","force":true}"#,
            "unknown field `force`",
        ),
        (
            r#"{"name":"v5","url":"http://127.0.0.1:1/x"}"#,
            "is required with `url`",
        ),
        (r#"{"name":"../v5","path":"/bin/true"}"#, "path separator"),
        (r#"{"name":5,"path":"/bin/true"}"#, "must be a string"),
        (r#"{"name":"v5","path":"bin/true"}"#, "must be absolute"),
        (
            r#"{"name":"v5","url":"http://127.0.0.1:1/x","checksum":"md5:d41d8cd98f00b204e9800998ecf8427e"}"#,
            "cryptographically broken",
        ),
    ];
    for (params, expected) in bad {
        let stderr = running.ctl_fails(
            &["call", "upgrade.add", "--unchecked", "--params", params],
            1,
        );
        assert!(stderr.contains(expected), "{params}: {stderr}");
        assert!(stderr.contains("code -32602"), "{params}: {stderr}");
    }
    let not_executable = chain.dir.path().join("not-executable");
    std::fs::write(&not_executable, b"#!/bin/sh\n").unwrap();
    let stderr = running.ctl_fails(
        &[
            "upgrade",
            "add",
            "v5",
            "--path",
            not_executable.to_str().unwrap(),
        ],
        1,
    );
    assert!(stderr.contains("not executable"), "{stderr}");
    let stderr = running.ctl_fails(&["upgrade", "add", "v5", "--path", "simd"], 2);
    assert!(stderr.contains("must be absolute"), "{stderr}");
    assert_eq!(running.upgrades_entries(), ["v2", "v3"]);

    // The list: both, with their digests; neither is current.
    let listing = running.list();
    assert_eq!(staged_names(&listing), ["v2", "v3"], "{listing}");
    assert_eq!(listing["staged"][0]["sha256"], sha256_hex(&v2_bytes));
    assert_eq!(listing["staged"][1]["sha256"], sha256_hex(&v3_bytes));
    assert_eq!(listing["staged"][1]["size"], v3_bytes.len());
    assert_eq!(listing["staged"][0]["current"], false);
    let readable = running.ctl(&["upgrades"]);
    let text = String::from_utf8_lossy(&readable.stdout);
    assert!(text.contains("  NAME  CURRENT  SIZE"), "{text}");
    assert!(
        text.contains(&format!("  v3    -        {}", v3_bytes.len())),
        "{text}"
    );

    // Cancel: gone; a second cancel says it is not staged.
    let cancelled = running.ctl_json(&["upgrade", "cancel", "v3"]);
    assert_eq!(
        cancelled["removed"],
        serde_json::json!(running.upgrades_dir().join("v3"))
    );
    assert_eq!(
        running.upgrades_entries(),
        ["v2"],
        "rename aside, then delete"
    );
    let stderr = running.ctl_fails(&["upgrade", "cancel", "v3"], 1);
    assert!(stderr.contains("upgrade v3 is not staged"), "{stderr}");
    assert!(stderr.contains("code -32004"), "{stderr}");
    assert_eq!(staged_names(&running.list()), ["v2"]);

    // The node kept signing through all of it.
    let last = chain.wait_signing(2, LONG);

    // The point of staging: at the plan height the staged binary is used.
    // The plan's info names a URL that does not exist, so any attempt to
    // download would fail the upgrade.
    let height = last + 10;
    let info = format!(
        r#"{{"binaries":{{"any":"{base}/not-served?checksum=sha256:{}"}}}}"#,
        "1".repeat(64)
    );
    chain.network.schedule_upgrade("v2", height, &info).unwrap();
    chain.wait_for_upgrade_completed("v2", LONG);
    assert_eq!(chain.current_target(), Path::new("upgrades/v2"));
    let records = chain.upgrade_records();
    assert_eq!(records.len(), 1, "{records:?}");
    let steps: Vec<&str> = records[0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|step| step["step"].as_str().unwrap())
        .collect();
    // No `download` step: the staged binary was used as it is.
    assert!(
        !steps.contains(&"download"),
        "the upgrade downloaded: {steps:?}"
    );
    assert_eq!(steps, ["stop_old", "pre_upgrade", "switch", "start_new"]);
    let resumed = chain.wait_signing(3, LONG);
    assert!(resumed > height, "signed {resumed}, plan height {height}");
    chain.assert_no_double_sign();
    assert_eq!(std::fs::read(&staged_v2).unwrap(), v2_bytes);

    // Now current: listed as such, with the plan applied and the record.
    let listing = running.list();
    assert_eq!(listing["current"], "upgrades/v2", "{listing}");
    assert_eq!(listing["staged"][0]["current"], true, "{listing}");
    assert_eq!(listing["plan_on_disk"]["name"], "v2", "{listing}");
    assert_eq!(listing["plan_on_disk"]["applied"], true, "{listing}");
    assert_eq!(listing["records"][0]["name"], "v2", "{listing}");
    assert_eq!(
        listing["records"][0]["outcome"]["status"], "completed",
        "{listing}"
    );
    let readable = running.ctl(&["upgrades"]);
    let text = String::from_utf8_lossy(&readable.stdout);
    assert!(text.contains("applied (current)"), "{text}");
    assert!(text.contains("upgrade record (last 1):"), "{text}");

    // What the node runs can be neither cancelled nor replaced.
    let stderr = running.ctl_fails(&["upgrade", "cancel", "v2"], 1);
    assert!(stderr.contains("the version the node runs"), "{stderr}");
    let stderr = running.ctl_fails(&["upgrade", "add", "v2", "--path", v2.to_str().unwrap()], 1);
    assert!(stderr.contains("cannot be replaced"), "{stderr}");
    assert!(staged_v2.exists());
    chain.wait_signing(2, LONG);

    let output = running.supervisor.stop();
    assert!(!output.contains(URL_TOKEN), "the URL's token was logged");
    assert!(
        output.contains("upgrade binary staged"),
        "staging is logged"
    );
}

/// Serves `body` on every path, but holds the second half of it until
/// `release` is set: an `upgrade.add` from it stays in flight meanwhile.
fn serve_held(body: Vec<u8>, release: Arc<AtomicBool>) -> String {
    serve_http(move |_path, mut stream| {
        let half = body.len() / 2;
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = stream.write_all(&body[..half]);
        let _ = stream.flush();
        while !release.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = stream.write_all(&body[half..]);
    })
}

#[test]
fn one_writer_per_name_while_a_download_runs_and_the_node_keeps_signing() {
    let running = start();
    let chain = &running.chain;
    let v2 = chain.version_binary("v2", &["v2"]);
    let v2_bytes = std::fs::read(&v2).unwrap();
    let checksum = format!("sha256:{}", sha256_hex(&v2_bytes));
    let release = Arc::new(AtomicBool::new(false));
    let base = serve_held(v2_bytes.clone(), release.clone());

    // A download held mid-body.
    let first = running
        .ctl_command(&[
            "--json",
            "upgrade",
            "add",
            "v2",
            "--url",
            &format!("{base}/simd"),
            "--checksum",
            &checksum,
        ])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + LONG;
    loop {
        let listing = running.list();
        if listing["staging"] == serde_json::json!(["v2"]) {
            break;
        }
        assert!(Instant::now() < deadline, "never in flight: {listing}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // No second writer for the name, by path or by cancel.
    let stderr = running.ctl_fails(&["upgrade", "add", "v2", "--path", v2.to_str().unwrap()], 1);
    assert!(
        stderr.contains("another upgrade.add or upgrade.cancel for upgrade v2 is running"),
        "{stderr}"
    );
    let stderr = running.ctl_fails(&["upgrade", "cancel", "v2"], 1);
    assert!(stderr.contains("is running"), "{stderr}");

    // A client that gives up does not stop the staging: it finishes on
    // the supervisor and shows up in the list.
    let stderr = running.ctl_fails(
        &[
            "--timeout",
            "1",
            "upgrade",
            "add",
            "v3",
            "--url",
            &format!("{base}/simd"),
            "--checksum",
            &checksum,
        ],
        3,
    );
    assert!(
        stderr.contains("no answer to upgrade.add within 1 s"),
        "{stderr}"
    );

    // Meanwhile the node signs and the RPC answers.
    chain.wait_signing(3, LONG);
    let listing = running.list();
    assert_eq!(
        listing["staging"],
        serde_json::json!(["v2", "v3"]),
        "{listing}"
    );
    assert_eq!(listing["staged"], serde_json::json!([]), "{listing}");
    assert!(
        !running.upgrades_dir().join("v2").exists(),
        "visible before it is complete"
    );

    release.store(true, Ordering::SeqCst);
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success(), "{}", describe(&first));
    let added: Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(added["sha256"], sha256_hex(&v2_bytes), "{added}");
    let deadline = Instant::now() + LONG;
    loop {
        let listing = running.list();
        if staged_names(&listing) == ["v2", "v3"] && listing["staging"] == serde_json::json!([]) {
            break;
        }
        assert!(Instant::now() < deadline, "v3 never finished: {listing}");
        std::thread::sleep(Duration::from_millis(50));
    }
    for dir in ["v2", "v3"] {
        assert_eq!(std::fs::read(running.staged_binary(dir)).unwrap(), v2_bytes);
    }
    assert_eq!(running.upgrades_entries(), ["v2", "v3"]);
    running.supervisor.stop();
}
