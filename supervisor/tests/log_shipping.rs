//! Log shipping end to end (`docs/log-format.md`): a real supervisor with
//! `[logs]` and the simulated chain, a real OpenSSH sshd as the bastion
//! whose keys' forced commands are `palisade-bastion backup-session` (the
//! validator's) and `palisade-bastion rpc-relay` (the operator's), a real
//! `palisade-bastion serve-backups` store, and the real `age`, `zstd` and
//! `palisade-ctl`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};

use common::timing::{BLOCK, FLOOD_BLOCK, LONG, TUNNEL};
use common::{KillOnDrop, VaultRpc};
use palisade_simchain::testkit::free_port;
use palisade_testkit::http_receiver::{HttpReceiver, Received};
use palisade_testkit::{Sshd, SshdOptions, current_user};

const PASSPHRASE: &str = "log shipping passphrase 71c3";
/// The supervisor's `[rpc] name` (VaultRpc's) and the bastion's validator.
const VALIDATOR: &str = "val1";
/// Loki's push path.
const PUSH_PATH: &str = "/loki/api/v1/push";

/// The bastion: its store and its sshd, and the operator's identity.
struct Bastion {
    dir: tempfile::TempDir,
    keys: common::SshKeys,
    sshd: Sshd,
    _store: KillOnDrop,
    /// The store's directory of this validator's log objects.
    logs: PathBuf,
    known_hosts: PathBuf,
    /// The operator's age identity file and its recipient.
    identity: PathBuf,
    recipient: String,
}

fn bastion() -> Bastion {
    let dir = tempfile::Builder::new()
        .prefix("pl")
        .rand_bytes(4)
        .tempdir()
        .unwrap();
    let root = dir.path();
    let keys = common::SshKeys::new(&["tunnel", "alice"]);
    let bin = common::workspace_binary("palisade-bastion");
    let run = root.join("run");
    std::fs::create_dir(&run).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let listen = run.join("bastion.sock");
    let backups = root.join("b");
    let config = root.join("bastion.toml");
    std::fs::write(
        &config,
        format!(
            "listen-socket = {listen:?}\nbackup-dir = {backups:?}\n\
             [[validator]]\nname = {VALIDATOR:?}\nsocket = \"{}\"\n",
            run.join("v.sock").display()
        ),
    )
    .unwrap();
    let store = KillOnDrop(
        Command::new(&bin)
            .args(["serve-backups", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(root.join("store.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    common::wait_until(LONG, "the backup store listens", || listen.exists());
    let sshd = Sshd::start(SshdOptions::new(
        "127.0.0.1",
        free_port(),
        format!(
            "command=\"{bin} backup-session --config {config} --validator {VALIDATOR}\",\
             restrict,port-forwarding,permitopen=\"127.0.0.1:9\" {tunnel}\n\
             command=\"{bin} rpc-relay --config {config}\",restrict {alice}\n",
            bin = bin.display(),
            config = config.display(),
            tunnel = keys.public("tunnel"),
            alice = keys.public("alice"),
        ),
    ))
    .unwrap();
    let known_hosts = root.join("known_hosts");
    std::fs::write(&known_hosts, format!("{}\n", sshd.known_hosts_line())).unwrap();
    let identity = root.join("operator.age");
    let generated = Command::new("age-keygen")
        .arg("-o")
        .arg(&identity)
        .output()
        .unwrap();
    assert!(generated.status.success(), "age-keygen: {generated:?}");
    let recipient = String::from_utf8(
        Command::new("age-keygen")
            .arg("-y")
            .arg(&identity)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    Bastion {
        logs: backups.join(VALIDATOR).join("logs"),
        dir,
        keys,
        sshd,
        _store: store,
        known_hosts,
        identity,
        recipient,
    }
}

impl Bastion {
    /// The supervisor's `[tunnel]`, `[[bastion]]` and `[logs]` sections.
    fn supervisor_sections(&self, spool: &Path, logs_extra: &str) -> String {
        format!(
            "[tunnel]\nkey-file = {tunnel_key:?}\nkeepalive-interval = \"1s\"\n\
             reconnect-max-delay = \"1s\"\nprobe-interval = \"200ms\"\n\
             [[bastion]]\nname = \"b1\"\nhost = \"127.0.0.1\"\nport = {port}\nuser = {user:?}\n\
             host-key-fingerprints = [{fingerprint:?}]\n\
             backup-command = \"palisade-bastion backup-session\"\n\
             [logs]\nrecipients = [{recipient:?}]\nspool-dir = {spool:?}\nhost = \"host-a\"\n\
             {logs_extra}\n",
            tunnel_key = self.keys.path("tunnel"),
            port = self.sshd.port(),
            user = current_user().unwrap(),
            fingerprint = self.sshd.fingerprint(),
            recipient = self.recipient,
        )
    }

    /// The names of the segments (stems) with both objects in `dir`.
    fn complete_segments(dir: &Path) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let names: Vec<String> = entries
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .collect();
        let mut stems: Vec<String> = names
            .iter()
            .filter_map(|name| name.strip_suffix(".sig"))
            .filter(|stem| names.contains(&format!("{stem}.age")))
            .map(str::to_string)
            .collect();
        stems.sort();
        stems
    }

    /// `palisade-ctl … logs --archive ARGS` through this bastion as alice.
    fn archive(&self, home: &Path, signer: &str, args: &[&str]) -> Output {
        let via = format!("{}@127.0.0.1:{}", current_user().unwrap(), self.sshd.port());
        let alice = self.keys.path("alice");
        let mut all = vec![
            "--via",
            &via,
            "--validator",
            VALIDATOR,
            "--known-hosts",
            self.known_hosts.to_str().unwrap(),
            "--ssh-key",
            alice.to_str().unwrap(),
            "logs",
            "--archive",
            "--identity",
            self.identity.to_str().unwrap(),
            "--signer",
            signer,
        ];
        all.extend_from_slice(args);
        common::run_ctl(home, &all, None)
    }
}

/// `age -d -i IDENTITY FILE | zstd -d`, with the stock tools.
fn stock_read(identity: &Path, file: &Path) -> String {
    let output = Command::new("sh")
        .arg("-c")
        .arg("age -d -i \"$1\" \"$2\" | zstd -d")
        .arg("sh")
        .arg(identity)
        .arg(file)
        .output()
        .unwrap();
    assert!(output.status.success(), "age -d | zstd -d: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn segments_ship_while_locked_wait_out_an_outage_and_are_read_only_when_intact() {
    let mut bastion = bastion();
    let spool = bastion.dir.path().join("spool");
    let vault = VaultRpc::setup(
        BLOCK,
        PASSPHRASE,
        "",
        &bastion.supervisor_sections(&spool, "segment-interval = \"300ms\""),
    );
    let supervisor = vault.run();

    // Locked: the supervisor's own lines ship already (the tunnel's key
    // signs them; the vault is not needed).
    common::wait_until(LONG, "a first segment on the bastion", || {
        !Bastion::complete_segments(&bastion.logs).is_empty()
    });
    vault.unlock();
    vault.chain.wait_signing(3, LONG);

    // The bastion goes away: segments wait in the spool.
    let before_outage = Bastion::complete_segments(&bastion.logs);
    bastion.sshd.kill();
    common::wait_for_all_tunnels_down(&vault.socket, TUNNEL);
    let mut waiting = Vec::new();
    common::wait_until(LONG, "segments spooled during the outage", || {
        waiting = Bastion::complete_segments(&spool);
        waiting.len() >= 3
    });
    for stem in &waiting {
        assert!(
            !before_outage.contains(stem),
            "{stem} reached the bastion before the outage yet is still spooled"
        );
    }
    let mode = |path: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode(&spool), 0o700);
    assert_eq!(mode(&spool.join(format!("{}.age", waiting[0]))), 0o600);

    // The link returns: what waited arrives, and leaves the spool.
    bastion.sshd.restart().unwrap();
    common::wait_until(LONG, "the spooled segments on the bastion", || {
        let stored = Bastion::complete_segments(&bastion.logs);
        waiting.iter().all(|stem| stored.contains(stem))
    });
    common::wait_until(LONG, "the spool emptied of them", || {
        let spooled = Bastion::complete_segments(&spool);
        waiting.iter().all(|stem| !spooled.contains(stem))
    });

    // Stock tools read a segment: JSON lines with the documented keys.
    let text = stock_read(
        &bastion.identity,
        &bastion.logs.join(format!("{}.age", waiting[0])),
    );
    let mut sources = std::collections::BTreeSet::new();
    for line in text.lines() {
        let record: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|error| panic!("not a JSON line ({error}): {line}"));
        for key in ["ts", "stream", "level", "source", "msg"] {
            assert!(record.get(key).is_some(), "no {key} in {line}");
        }
        assert!(record["ts"].as_str().unwrap().ends_with('Z'), "{line}");
        sources.insert(record["source"].as_str().unwrap().to_string());
    }
    assert!(!text.is_empty());

    // palisade-ctl reads the archive through the bastion, as an operator.
    let signer = bastion.keys.public("tunnel").to_string();
    let home = vault.chain.dir.path();
    let read = bastion.archive(home, &signer, &[]);
    assert!(read.status.success(), "logs --archive: {read:?}");
    let stdout = String::from_utf8_lossy(&read.stdout);
    assert!(
        stdout.contains("\"source\":\"gaiad\"") && stdout.contains("\"source\":\"supervisor\""),
        "{}",
        common::tail(&stdout, 20)
    );
    assert!(
        stdout.contains("log shipping started"),
        "{}",
        common::tail(&stdout, 20)
    );
    assert!(stderr(&read).contains(" 0 refused"), "{}", stderr(&read));
    let grep = bastion.archive(
        home,
        &signer,
        &[
            "--grep",
            "\"stream\":\"stderr\"|\"source\":\"gaiad\"",
            "--since",
            "1h",
        ],
    );
    assert!(grep.status.success(), "{grep:?}");
    let grepped = String::from_utf8_lossy(&grep.stdout);
    assert!(!grepped.is_empty());
    assert!(
        grepped.lines().all(|line| line.contains("gaiad")),
        "{grepped}"
    );
    let future = bastion.archive(home, &signer, &["--since", "2999-01-01T00:00:00Z"]);
    assert!(
        future.status.success() && future.stdout.is_empty(),
        "{future:?}"
    );

    // A signer that did not sign them: every segment refused, exit 1.
    let wrong = bastion.archive(home, bastion.keys.public("alice"), &[]);
    assert_eq!(wrong.status.code(), Some(1), "{wrong:?}");
    assert!(wrong.stdout.is_empty());
    assert!(
        stderr(&wrong).contains("does not verify under the pinned signer key"),
        "{}",
        stderr(&wrong)
    );

    let output = supervisor.stop();
    assert!(
        output.contains("log shipping statistics"),
        "{}",
        common::tail(&output, 30)
    );

    // A restart: what the last run sealed at its stop waits in the spool,
    // ships now, and the sequence goes on from there.
    let left_over = Bastion::complete_segments(&spool);
    assert!(
        !left_over.is_empty(),
        "the stop sealed the last lines into the spool"
    );
    let highest_before = Bastion::complete_segments(&bastion.logs)
        .into_iter()
        .chain(left_over.iter().cloned())
        .max()
        .unwrap();
    let supervisor = vault.run();
    common::wait_until(LONG, "the left-over segments on the bastion", || {
        let stored = Bastion::complete_segments(&bastion.logs);
        left_over.iter().all(|stem| stored.contains(stem))
            && stored.iter().any(|stem| *stem > highest_before)
    });
    let output = supervisor.stop();
    assert!(
        output.contains("log shipping started"),
        "{}",
        common::tail(&output, 30)
    );

    // Tampering on the bastion: one segment altered, one renamed, one
    // unsigned. Each is refused by name; the others still print.
    // An upload the stop cut short (a `.age` without its `.sig`) would be
    // noted only as the newest; the renamed segment below becomes the
    // newest, so such a leftover goes first.
    for entry in std::fs::read_dir(&bastion.logs).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "age") && !path.with_extension("sig").exists()
        {
            std::fs::remove_file(&path).unwrap();
        }
    }
    let stored = Bastion::complete_segments(&bastion.logs);
    // The newest (possibly in flight when cut) is left alone.
    assert!(stored.len() >= 5, "{stored:?}");
    let altered = bastion.logs.join(format!("{}.age", stored[1]));
    let mut bytes = std::fs::read(&altered).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    std::fs::write(&altered, &bytes).unwrap();
    let renamed_to = "log-host-a-00000000000000999999";
    for suffix in [".age", ".sig"] {
        std::fs::rename(
            bastion.logs.join(format!("{}{suffix}", stored[2])),
            bastion.logs.join(format!("{renamed_to}{suffix}")),
        )
        .unwrap();
    }
    std::fs::remove_file(bastion.logs.join(format!("{}.sig", stored[3]))).unwrap();
    let tampered = bastion.archive(home, &signer, &[]);
    assert_eq!(tampered.status.code(), Some(1), "{tampered:?}");
    let message = stderr(&tampered);
    for (stem, reason) in [
        (stored[1].as_str(), "SHA-256 differs from the signed one"),
        (renamed_to, "(renamed)"),
        (stored[3].as_str(), "unsigned"),
    ] {
        assert!(
            message
                .lines()
                .any(|line| line.contains(&format!("refused segment {stem}: "))
                    && line.contains(reason)),
            "{stem}: {message}"
        );
    }
    assert!(message.contains(" 3 refused"), "{message}");
    assert!(
        message.contains("palisade-ctl: 3 log segment(s) refused"),
        "{message}"
    );
    assert!(
        !tampered.stdout.is_empty(),
        "the intact segments still print"
    );

    // The same reader on a copy of the directory (recovery); a truncated
    // segment is refused too.
    let copy = bastion.dir.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    for entry in std::fs::read_dir(&bastion.logs).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
    }
    let truncated = copy.join(format!("{}.age", stored[0]));
    let bytes = std::fs::read(&truncated).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let from_dir = common::run_ctl(
        home,
        &[
            "--validator",
            VALIDATOR,
            "logs",
            "--archive",
            "--from-dir",
            copy.to_str().unwrap(),
            "--identity",
            bastion.identity.to_str().unwrap(),
            "--signer",
            &signer,
        ],
        None,
    );
    assert_eq!(from_dir.status.code(), Some(1), "{from_dir:?}");
    let message = stderr(&from_dir);
    assert!(
        message.contains(&format!("refused segment {}: ", stored[0]))
            && message.contains("truncated or extended"),
        "{message}"
    );
    assert!(message.contains(" 4 refused"), "{message}");
}

#[test]
fn a_flood_of_output_ships_while_the_node_misses_no_block() {
    let bastion = bastion();
    let spool = bastion.dir.path().join("spool");
    let vault = VaultRpc::setup(
        FLOOD_BLOCK,
        PASSPHRASE,
        "",
        &bastion.supervisor_sections(&spool, ""),
    );
    palisade_simchain::testkit::set_simchain_option(&vault.chain.home, "log_flood", "true")
        .unwrap();
    let supervisor = vault.run();
    common::wait_until(LONG, "the control socket", || vault.socket.exists());
    vault.unlock();
    let first = vault.chain.wait_signing(1, LONG);
    let last = vault.chain.wait_signing(20, Duration::from_secs(60));
    let record = vault.chain.network.record().unwrap();
    let missed = record.missed_between("val1", first + 1, last);
    assert!(
        missed.is_empty(),
        "missed heights {missed:?} while flooding"
    );
    common::wait_until(LONG, "flood segments on the bastion", || {
        Bastion::complete_segments(&bastion.logs).len() >= 3
    });
    let output = supervisor.stop();
    let field = |line_marker: &str, name: &str| -> u64 {
        let line = output
            .lines()
            .find(|line| line.contains(line_marker))
            .unwrap_or_else(|| panic!("no {line_marker:?} in {}", common::tail(&output, 30)));
        line.split_whitespace()
            .find_map(|field| field.strip_prefix(&format!("{name}=")))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line}"))
    };
    let bytes_read = field("daemon output statistics", "bytes_read");
    let lines_written = field("log shipping statistics", "lines_written");
    let segments = field("log shipping statistics", "segments_written");
    eprintln!("flood: {bytes_read} bytes read, {lines_written} lines in {segments} segments");
    assert!(
        bytes_read > 100 << 20,
        "the flood was only {bytes_read} bytes; the test needs hundreds of MB"
    );
    assert!(
        segments >= 3 && lines_written > 10_000,
        "{segments} {lines_written}"
    );
    // A flood segment reads back with the stock tools.
    let stored = Bastion::complete_segments(&bastion.logs);
    let text = stock_read(
        &bastion.identity,
        &bastion
            .logs
            .join(format!("{}.age", stored[stored.len() / 2])),
    );
    assert!(text.lines().count() > 100, "{}", text.len());
}

#[test]
fn an_unusable_signing_key_stops_the_start_with_a_clear_error() {
    let bastion = bastion();
    let spool = bastion.dir.path().join("spool");
    let rsa = bastion.dir.path().join("rsa_key");
    let generated = Command::new("ssh-keygen")
        .args(["-q", "-t", "rsa", "-b", "2048", "-N", "", "-f"])
        .arg(&rsa)
        .output()
        .unwrap();
    assert!(generated.status.success(), "{generated:?}");
    let vault = VaultRpc::setup(
        BLOCK,
        PASSPHRASE,
        "",
        &bastion.supervisor_sections(&spool, &format!("signing-key = {rsa:?}")),
    );
    let output = vault
        .chain
        .supervisor_command(&[("PALISADE_CONFIG", vault.config.to_str().unwrap())])
        .args(["run", "start"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let message = stderr(&output);
    assert!(
        message.contains("cannot start log shipping")
            && message.contains(&format!("logs.signing-key {}", rsa.display()))
            && message.contains("segments are signed with ed25519"),
        "{message}"
    );
    assert!(!spool.exists(), "nothing was created");
}

#[test]
fn a_full_spool_drops_the_oldest_segments_and_counts_them() {
    let mut bastion = bastion();
    let spool = bastion.dir.path().join("spool");
    // The smallest spool (four segments' worth), filled by a flood while
    // the bastion is gone.
    let limit: u64 = 4 * (1024 * 1024 + 64 * 1024);
    let vault = VaultRpc::setup(
        FLOOD_BLOCK,
        PASSPHRASE,
        "",
        &bastion.supervisor_sections(&spool, &format!("spool-bytes = {limit}")),
    );
    palisade_simchain::testkit::set_simchain_option(&vault.chain.home, "log_flood", "true")
        .unwrap();
    let supervisor = vault.run();
    common::wait_until(LONG, "the control socket", || vault.socket.exists());
    vault.unlock();
    let first = vault.chain.wait_signing(1, LONG);
    bastion.sshd.kill();
    let spooled_bytes = || -> u64 {
        std::fs::read_dir(&spool)
            .unwrap()
            .filter_map(|entry| entry.ok()?.metadata().ok())
            .map(|metadata| metadata.len())
            .sum()
    };
    let oldest = || Bastion::complete_segments(&spool).first().cloned();
    common::wait_until(LONG, "a full spool", || spooled_bytes() > limit / 2);
    let oldest_then = oldest().unwrap();
    common::wait_until(LONG, "the oldest spooled segment dropped", || {
        oldest().is_some_and(|now| now > oldest_then)
    });
    for _ in 0..20 {
        // The bound holds at every look (the sequence file is a few bytes).
        assert!(
            spooled_bytes() <= limit + 64,
            "{} > {limit}",
            spooled_bytes()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let last = vault.chain.wait_signing(10, LONG);
    let record = vault.chain.network.record().unwrap();
    let missed = record.missed_between("val1", first + 1, last);
    assert!(
        missed.is_empty(),
        "missed heights {missed:?} with a full spool"
    );
    let output = supervisor.stop();
    let statistics = output
        .lines()
        .find(|line| line.contains("log shipping statistics"))
        .unwrap_or_else(|| panic!("no statistics in {}", common::tail(&output, 30)));
    let dropped: u64 = statistics
        .split_whitespace()
        .find_map(|field| field.strip_prefix("segments_dropped="))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no segments_dropped in {statistics}"));
    assert!(dropped > 0, "{statistics}");
    assert!(
        output.contains("log spool full: dropped the oldest segment(s)"),
        "{}",
        common::tail(&output, 30)
    );
}

fn unix_nanos(time: SystemTime) -> u128 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Checks one push against Loki's JSON push API and returns its lines by
/// the `stream` label.
fn check_push(
    request: &Received,
    started: u128,
    until: u128,
) -> BTreeMap<String, Vec<serde_json::Value>> {
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, PUSH_PATH);
    assert_eq!(request.header("content-type"), Some("application/json"));
    let body = request.json();
    let object = body.as_object().expect("a JSON object");
    assert_eq!(object.keys().collect::<Vec<_>>(), ["streams"], "{body}");
    let mut lines: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for stream in body["streams"].as_array().expect("streams: an array") {
        assert_eq!(
            stream.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["stream", "values"],
            "{stream}"
        );
        let labels = stream["stream"].as_object().expect("labels: an object");
        let name = labels["stream"].as_str().unwrap().to_string();
        assert!(
            ["stdout", "stderr", "supervisor"].contains(&name.as_str()),
            "{stream}"
        );
        assert_eq!(
            stream["stream"],
            serde_json::json!({"validator": "val1", "host": "host-a", "stream": name}),
        );
        let mut previous = 0u128;
        for value in stream["values"].as_array().expect("values: an array") {
            let pair = value.as_array().expect("a value: [ts, line]");
            assert_eq!(pair.len(), 2, "{value}");
            let ts: u128 = pair[0]
                .as_str()
                .expect("the timestamp: a string")
                .parse()
                .expect("the timestamp: Unix nanoseconds");
            assert!(
                ts >= started && ts <= until,
                "{ts} not in [{started}, {until}]"
            );
            assert!(ts >= previous, "entries not in time order: {stream}");
            previous = ts;
            // The line is the segment's record (logs.format = "json").
            let line = pair[1].as_str().expect("the line: a string");
            let record: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("not the JSON record ({error}): {line}"));
            assert_eq!(record["stream"], name.as_str(), "{line}");
            let source = if name == "supervisor" {
                "supervisor"
            } else {
                "gaiad"
            };
            assert_eq!(record["source"], source, "{line}");
            lines.entry(name.clone()).or_default().push(record);
        }
    }
    lines
}

/// `[logs.loki]` (docs/loki.md): a real supervisor pushes gaiad's lines and
/// its own to a local HTTP receiver standing in for Loki (Loki is not
/// packaged here), every request in the exact shape of Loki's JSON push API;
/// when that endpoint goes away, the node keeps signing and segments keep
/// shipping.
#[test]
fn lines_are_pushed_to_loki_in_its_shape_and_an_unreachable_loki_stops_nothing() {
    let loki = HttpReceiver::start().unwrap();
    let bastion = bastion();
    let spool = bastion.dir.path().join("spool");
    let vault = VaultRpc::setup(
        BLOCK,
        PASSPHRASE,
        "",
        &bastion.supervisor_sections(
            &spool,
            &format!(
                "segment-interval = \"300ms\"\n[logs.loki]\nurl = {:?}\n\
                 batch-interval = \"200ms\"\ntimeout = \"1s\"",
                loki.url(PUSH_PATH)
            ),
        ),
    );
    let started = unix_nanos(SystemTime::now());
    let supervisor = vault.run();
    common::wait_until(LONG, "the control socket", || vault.socket.exists());
    vault.unlock();
    vault.chain.wait_signing(3, LONG);

    // gaiad's lines and the supervisor's own arrive, each request in
    // Loki's JSON push shape with the validator, host and stream labels.
    let mut lines = BTreeMap::new();
    loki.wait_until("gaiad's and the supervisor's lines", LONG, |requests| {
        let until = unix_nanos(SystemTime::now());
        lines = BTreeMap::new();
        for request in requests {
            for (stream, records) in check_push(request, started, until) {
                lines.entry(stream).or_insert_with(Vec::new).extend(records);
            }
        }
        let messages = |stream: &str| -> BTreeSet<String> {
            lines
                .get(stream)
                .into_iter()
                .flatten()
                .map(|record| record["msg"].as_str().unwrap().to_string())
                .collect()
        };
        messages("supervisor")
            .iter()
            .any(|msg| msg.contains("log shipping started"))
            && !(messages("stdout").is_empty() && messages("stderr").is_empty())
    })
    .unwrap();
    let before = Bastion::complete_segments(&bastion.logs).len();
    assert!(before > 0, "no segment shipped beside the Loki push");

    // Loki goes away: the node keeps signing and segments keep coming.
    let port = loki.port();
    drop(loki);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the receiver still listens"
    );
    supervisor.wait_for_line("loki: push failed; retrying", LONG);
    vault.chain.wait_signing(10, LONG);
    common::wait_until(LONG, "segments shipped while Loki is down", || {
        Bastion::complete_segments(&bastion.logs).len() >= before + 3
    });
    assert_eq!(
        common::node_state(&vault.socket).as_deref(),
        Some("running"),
        "{}",
        common::tail(&supervisor.output(), 30)
    );
    let output = supervisor.stop();
    let statistics = output
        .lines()
        .find(|line| line.contains("loki push statistics"))
        .unwrap_or_else(|| panic!("no loki statistics in {}", common::tail(&output, 30)));
    let pushed: u64 = statistics
        .split_whitespace()
        .find_map(|field| field.strip_prefix("lines_pushed="))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no lines_pushed in {statistics}"));
    assert!(pushed > 0, "{statistics}");
    assert!(
        !output.contains(&format!(":{port}{PUSH_PATH}")),
        "the URL was logged"
    );
}
