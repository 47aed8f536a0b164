//! The supervisor's readers against the conformance set (`conformance/` at
//! the repository root): golden copies of what CometBFT v0.38 and the
//! Cosmos SDK v0.50 (and older versions) write, each derived from the
//! upstream source named in `conformance/README.md`. `simd` is not involved:
//! these files are what real gaiad produces, including the forms `simd`
//! never writes.
//!
//! Every golden the supervisor reads must be read exactly; every golden
//! marked invalid must be refused with an error that says why; a
//! half-written `upgrade-info.json` must be waited out, not refused. Where a
//! reader is internal to the crate (`upgrade::plan`, the supervisor's use of
//! `/status`), the test goes through the real binary: `show-upgrade-info`,
//! or `run` with a small fake daemon that prints a golden log line, with a
//! loopback HTTP server answering `/status` with the golden response. The
//! `/commit` reader (`node::rpc::parse_commit`, `signed_in_last`) is public
//! and read directly.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use secrecy::SecretString;
use sha2::{Digest, Sha256};

use common::timing::LONG;
use common::{Supervisor, default_socket, serve_files, serve_http, wait_for_status, wait_until};
use palisade_supervisor::node::files::NodePaths;
use palisade_supervisor::node::rpc::{ChainRpcError, CommitError, parse_commit, signed_in_last};
use palisade_supervisor::sign_state::{SignState, SignStateError, Step};
use palisade_supervisor::vault::{self, KeyKind, WorkFactor};

/// The values `conformance/generate.py` builds the goldens around.
const CHAIN_ID: &str = "cosmoshub-4";
/// The block the validator last precommitted, and `/status`'s latest height.
const SIGNED_HEIGHT: u64 = 25_010_342;
const UPGRADE_NAME: &str = "v25";
const UPGRADE_HEIGHT: u64 = 25_010_343;

fn conformance_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("conformance")
}

fn golden(name: &str) -> Vec<u8> {
    let path = conformance_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

fn golden_text(name: &str) -> String {
    String::from_utf8(golden(name)).unwrap()
}

fn golden_json(name: &str) -> serde_json::Value {
    serde_json::from_slice(&golden(name)).unwrap_or_else(|error| panic!("{name}: {error}"))
}

/// The `info` of the plan in the `binaries` goldens, as the plan holds it.
fn binaries_info() -> String {
    golden_json("sdk-v0.50/upgrade-info.binaries.json")["info"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The same binaries as JSON with spaces, as a real plan had them.
fn spaced_binaries_info() -> String {
    golden_json("sdk-v0.50/upgrade-info.binaries-spaced.json")["info"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The plan info a golden log line carries, by its file name.
fn info_of_line(name: &str) -> String {
    if name.contains("empty-info") {
        String::new()
    } else if name.contains("binaries-spaced") {
        spaced_binaries_info()
    } else {
        binaries_info()
    }
}

// ---------------------------------------------------------------- key files

/// The key files are validated when imported into the vault (the only
/// public way in): both goldens must be accepted, and the validator address
/// the vault derives from the key pair must be the one the file states.
#[test]
fn key_files_are_accepted_and_the_address_is_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir(&config).unwrap();
    // Import destroys the originals: import copies.
    for kind in KeyKind::ALL {
        std::fs::write(
            config.join(kind.file_name()),
            golden(&format!("cometbft-v0.38/{}", kind.file_name())),
        )
        .unwrap();
    }
    let vault_dir = dir.path().join("vault");
    let passphrase = SecretString::from("conformance");
    vault::init_vault(&vault_dir, &passphrase, WorkFactor::new(10).unwrap(), &[]).unwrap();
    let mut unlocked = vault::unlock(&vault_dir, &passphrase).unwrap();
    vault::import_key_files(
        &mut unlocked,
        &KeyKind::ALL.map(|kind| (kind, config.join(kind.file_name()))),
    )
    .unwrap_or_else(|error| panic!("a CometBFT key file was refused: {error}"));
    let key_file = golden_json("cometbft-v0.38/priv_validator_key.json");
    assert_eq!(
        unlocked.validator_address().unwrap(),
        key_file["address"].as_str().unwrap()
    );
    // What the vault hands gaiad is the file byte for byte.
    for kind in KeyKind::ALL {
        assert_eq!(
            *unlocked.decrypt_key(kind).unwrap(),
            golden(&format!("cometbft-v0.38/{}", kind.file_name())),
            "{kind}"
        );
    }
}

// --------------------------------------------------------------- sign state

#[test]
fn initial_sign_state_is_read_as_nothing_signed() {
    let state = SignState::parse(&golden("cometbft-v0.38/priv_validator_state.initial.json"))
        .expect("the state `cometbft init` writes");
    assert_eq!((state.height, state.round, state.step), (0, 0, Step::None));
    assert!(state.signature.is_empty() && state.signbytes.is_empty());
    // The supervisor writes the same bytes FilePV does.
    assert_eq!(
        state.to_json(),
        golden("cometbft-v0.38/priv_validator_state.initial.json")
    );
}

#[test]
fn signed_sign_state_is_read_exactly() {
    let bytes = golden("cometbft-v0.38/priv_validator_state.signed.json");
    let state = SignState::parse(&bytes).expect("the state after a precommit");
    assert_eq!(
        (state.height, state.round, state.step),
        (SIGNED_HEIGHT, 0, Step::Precommit)
    );
    let file = golden_json("cometbft-v0.38/priv_validator_state.signed.json");
    assert_eq!(
        state.signbytes,
        hex::decode(file["signbytes"].as_str().unwrap()).unwrap()
    );
    assert_eq!(
        state.signature,
        BASE64.decode(file["signature"].as_str().unwrap()).unwrap()
    );
    // Written back, it is the file FilePV wrote, byte for byte.
    assert_eq!(state.to_json(), bytes);
}

/// The invalid forms are refused with the error that names the problem
/// (CometBFT refuses them too: `libs/json` wants a string for an int64, Go's
/// `encoding/json` a number for an int32).
#[test]
fn sign_states_cometbft_refuses_are_refused() {
    let cases = [
        (
            "cometbft-v0.38/invalid/priv_validator_state.height-number.json",
            SignStateError::HeightNotString,
        ),
        (
            "cometbft-v0.38/invalid/priv_validator_state.round-string.json",
            SignStateError::BadRound,
        ),
    ];
    for (name, expected) in cases {
        let error = SignState::parse(&golden(name)).expect_err(name);
        assert_eq!(error, expected, "{name}");
        assert!(
            error.to_string().contains(match expected {
                SignStateError::HeightNotString => "\"height\" must be a decimal string",
                _ => "\"round\" must be an integer",
            }),
            "{name}: {error}"
        );
    }
}

// -------------------------------------------------------------- config.toml

/// `cometbft init`'s config.toml, unchanged: the paths are CometBFT's
/// defaults, relative to the home.
#[test]
fn config_toml_names_the_node_files() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join("config")).unwrap();
    std::fs::write(
        home.path().join("config/config.toml"),
        golden("cometbft-v0.38/config.toml"),
    )
    .unwrap();
    let paths = NodePaths::read(home.path()).expect("the default config.toml");
    assert_eq!(
        paths,
        NodePaths {
            state: home.path().join("data/priv_validator_state.json"),
            priv_validator_key: home.path().join("config/priv_validator_key.json"),
            node_key: home.path().join("config/node_key.json"),
        }
    );
    // And the sections the supervisor's other readers and writers look at
    // are where CometBFT v0.38 puts them.
    let table: toml::Table = golden_text("cometbft-v0.38/config.toml").parse().unwrap();
    assert_eq!(
        table["rpc"]["laddr"].as_str(),
        Some("tcp://127.0.0.1:26657")
    );
    assert_eq!(table["p2p"]["allow_duplicate_ip"].as_bool(), Some(false));
    assert_eq!(table["p2p"]["pex"].as_bool(), Some(true));
    assert_eq!(
        table["consensus"]["double_sign_check_height"].as_integer(),
        Some(0)
    );
    assert_eq!(table["log_format"].as_str(), Some("plain"));
}

// --------------------------------------------- the goldens agree with each other

/// The goldens are one node's view of one chain: the precommit in the sign
/// state is signed by the key file's key over its signbytes, `/commit`
/// carries that same signature for the validator's address, and `/status`
/// names the key and the node key. A hand edit that breaks one of them
/// breaks this.
#[test]
fn the_goldens_describe_one_node() {
    let key_file = golden_json("cometbft-v0.38/priv_validator_key.json");
    let public: [u8; 32] = BASE64
        .decode(key_file["pub_key"]["value"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let address = hex::encode_upper(&Sha256::digest(public)[..20]);
    assert_eq!(key_file["address"], address.as_str());

    let state =
        SignState::parse(&golden("cometbft-v0.38/priv_validator_state.signed.json")).unwrap();
    let signature = Signature::from_slice(&state.signature).unwrap();
    VerifyingKey::from_bytes(&public)
        .unwrap()
        .verify(&state.signbytes, &signature)
        .expect("the state's signature is the key's, over its signbytes");
    // The sign bytes end with the chain id (CanonicalVote field 6).
    assert!(state.signbytes.ends_with(CHAIN_ID.as_bytes()));

    let commit = golden_json("cometbft-v0.38/commit.json");
    let signed_header = &commit["result"]["signed_header"];
    assert_eq!(signed_header["commit"]["height"], SIGNED_HEIGHT.to_string());
    let ours = signed_header["commit"]["signatures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|sig| sig["validator_address"] == address.as_str())
        .expect("our precommit is in the commit");
    assert_eq!(ours["block_id_flag"], 2);
    assert_eq!(
        ours["signature"].as_str().unwrap(),
        BASE64.encode(&state.signature)
    );

    let status = golden_json("cometbft-v0.38/status.json");
    let result = &status["result"];
    assert_eq!(result["validator_info"]["address"], address.as_str());
    assert_eq!(result["validator_info"]["pub_key"], key_file["pub_key"]);
    assert_eq!(
        result["sync_info"]["latest_block_hash"],
        signed_header["commit"]["block_id"]["hash"]
    );
    let node_key = golden_json("cometbft-v0.38/node_key.json");
    let node_private = BASE64
        .decode(node_key["priv_key"]["value"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        result["node_info"]["id"],
        hex::encode(&Sha256::digest(&node_private[32..])[..20]).as_str()
    );
}

// ------------------------------------------------------------------- /commit

/// The golden `/commit` is read exactly: its height, time and block hash,
/// the two validators whose precommit is in it (flag 2), none nil, the
/// absent one (flag 1) in neither list, and `canonical`.
#[test]
fn commit_is_read_exactly() {
    let view = parse_commit(&golden("cometbft-v0.38/commit.json")).unwrap();
    let golden = golden_json("cometbft-v0.38/commit.json");
    let signed_header = &golden["result"]["signed_header"];
    assert_eq!(view.height, SIGNED_HEIGHT);
    assert_eq!(view.time, signed_header["header"]["time"].as_str().unwrap());
    assert_eq!(
        view.block_hash,
        signed_header["commit"]["block_id"]["hash"]
            .as_str()
            .unwrap()
    );
    let key_file = golden_json("cometbft-v0.38/priv_validator_key.json");
    let ours = key_file["address"].as_str().unwrap();
    assert_eq!(
        view.signed,
        vec![
            "E88187840CF563F6C0FB269BDF454EE054923426".to_string(),
            "2647C7C51F76ED6090359315226474209F56D8CD".to_string()
        ]
    );
    assert!(view.signed.iter().any(|a| a == ours), "{view:?}");
    assert!(view.nil_voted.is_empty());
    assert!(view.canonical);
}

/// The golden with one thing broken is refused, naming the thing.
#[test]
fn commit_variants_cometbft_would_not_write_are_refused() {
    let text = golden_text("cometbft-v0.38/commit.json");
    let height = format!("\"height\":\"{SIGNED_HEIGHT}\",\"round\"");
    let cases = [
        (
            text.replacen(&height, &format!("\"height\":{SIGNED_HEIGHT},\"round\""), 1),
            "invalid type: integer",
        ),
        (
            text.replacen(&height, "\"height\":\"25O10342\",\"round\"", 1),
            "commit.height is not a decimal height",
        ),
        (
            text.replacen(",\"canonical\":true", "", 1),
            "missing field `canonical`",
        ),
        (
            text.replacen("\"block_id_flag\":1", "\"block_id_flag\":7", 1),
            "unknown block_id_flag 7",
        ),
    ];
    for (variant, expected) in cases {
        let error = parse_commit(variant.as_bytes()).unwrap_err().to_string();
        assert!(error.contains(expected), "{expected:?} not in {error:?}");
    }
}

/// The client against a loopback server answering the golden `/status` and
/// `/commit` (whatever the height asked): a one-block window finds the
/// validator's precommit; a wider one gets the golden block for the other
/// heights too and refuses it as the wrong height, never reading it as a
/// block without the validator.
#[tokio::test(flavor = "multi_thread")]
async fn signed_in_last_reads_the_golden_answers() {
    let base = serve_files(vec![
        ("/status".to_string(), golden("cometbft-v0.38/status.json")),
        ("/commit".to_string(), golden("cometbft-v0.38/commit.json")),
    ]);
    let key_file = golden_json("cometbft-v0.38/priv_validator_key.json");
    let ours = key_file["address"].as_str().unwrap().to_lowercase();
    let window = signed_in_last(&base, &ours, 1).await.unwrap();
    assert_eq!(window.latest, SIGNED_HEIGHT);
    assert_eq!(window.heights_checked, vec![SIGNED_HEIGHT]);
    assert_eq!(window.signed_heights, vec![SIGNED_HEIGHT]);
    assert!(window.key_active());
    let someone_else = signed_in_last(&base, &"AB".repeat(20), 1).await.unwrap();
    assert!(!someone_else.key_active(), "{someone_else:?}");
    let error = signed_in_last(&base, &ours, 3).await.unwrap_err();
    assert!(
        matches!(error, ChainRpcError::WrongHeight { asked, got, .. } if asked == SIGNED_HEIGHT - 2 && got == SIGNED_HEIGHT),
        "{error}"
    );
    let error_body = br#"{"jsonrpc":"2.0","id":-1,"error":{"code":-32603,"message":"Internal error","data":"height 25010343 must be less than or equal to the current blockchain height 25010342"}}"#;
    assert!(matches!(
        parse_commit(error_body),
        Err(CommitError::Rpc { code: -32603, .. })
    ));
}

// ------------------------------------- a node home for the end-to-end tests

/// A node home with the Cosmovisor layout: a fake `gaiad` (a shell script)
/// as the genesis binary, the golden config.toml and initial sign state.
struct Home {
    dir: tempfile::TempDir,
    home: PathBuf,
}

impl Home {
    /// `daemon` is the genesis binary's shell script body. `rpc` replaces
    /// `[rpc] laddr` (the one change to the golden config.toml, so the
    /// supervisor asks this test's server for `/status`).
    fn new(daemon: &str, rpc: Option<&str>) -> Home {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        for sub in ["config", "data", "cosmovisor/genesis/bin"] {
            std::fs::create_dir_all(home.join(sub)).unwrap();
        }
        let mut config = golden_text("cometbft-v0.38/config.toml");
        if let Some(address) = rpc {
            let default = "laddr = \"tcp://127.0.0.1:26657\"";
            assert!(config.contains(default));
            config = config.replace(default, &format!("laddr = \"tcp://{address}\""));
        } else {
            // No node RPC: a port nothing listens on, so that a real node
            // on this machine's default port is never asked.
            config = config.replace(
                "laddr = \"tcp://127.0.0.1:26657\"",
                "laddr = \"tcp://127.0.0.1:1\"",
            );
        }
        std::fs::write(home.join("config/config.toml"), config).unwrap();
        std::fs::write(
            home.join("data/priv_validator_state.json"),
            golden("cometbft-v0.38/priv_validator_state.initial.json"),
        )
        .unwrap();
        write_script(&home.join("cosmovisor/genesis/bin/gaiad"), daemon);
        Home { dir, home }
    }

    fn command(&self) -> Command {
        let mut command = common::supervisor_command_for(&self.home, "gaiad");
        // The data backup before an upgrade is not what these tests check;
        // skipping it keeps each run short.
        command.env("UNSAFE_SKIP_BACKUP", "true");
        command
    }

    /// Install the upgrade's binary: a daemon that runs until stopped, and
    /// answers Cosmovisor's `pre-upgrade` call with exit 1 ("not
    /// implemented", as a gaiad without the hook does).
    fn add_upgrade(&self, name: &str) {
        let binary = self.dir.path().join(format!("gaiad-{name}"));
        write_script(&binary, RUNS_UNTIL_STOPPED);
        let output = self
            .command()
            .args(["add-upgrade", name])
            .arg(&binary)
            .output()
            .unwrap();
        assert!(output.status.success(), "add-upgrade: {output:?}");
    }

    fn run(&self) -> Supervisor {
        let mut command = self.command();
        command
            .args(["run", "start", "--home"])
            .arg(&self.home)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Supervisor::spawn(command)
    }

    fn upgrade_info(&self) -> PathBuf {
        self.home.join("data/upgrade-info.json")
    }

    fn records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.home.join("cosmovisor/palisade-upgrades.jsonl"))
            .unwrap_or_default()
            .split_inclusive('\n')
            // A last line still being appended is left out.
            .filter(|line| line.ends_with('\n'))
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    fn wait_for_record(&self, supervisor: &Supervisor) -> serde_json::Value {
        let mut record = None;
        let deadline = std::time::Instant::now() + LONG;
        while record.is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "no upgrade record within {LONG:?}; output:\n{}",
                common::tail(&supervisor.output(), 60)
            );
            record = self.records().pop();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        record.unwrap()
    }

    /// `show-upgrade-info` on this home's `data/upgrade-info.json`.
    fn show_upgrade_info(&self) -> std::process::Output {
        self.command().arg("show-upgrade-info").output().unwrap()
    }
}

/// A fake gaiad that runs until stopped; `pre-upgrade` is not implemented.
const RUNS_UNTIL_STOPPED: &str = "[ \"$1\" = pre-upgrade ] && exit 1\nexec sleep 600\n";

fn write_script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

// -------------------------------------------------------- upgrade-info.json

/// Every complete `upgrade-info.json` golden, with the plan it holds.
#[test]
fn upgrade_info_files_are_read_exactly() {
    let binaries = binaries_info();
    let spaced = spaced_binaries_info();
    let cases: [(&str, &str, u64, &str); 6] = [
        // SDK v0.50: `time` present, an empty `info` left out.
        (
            "sdk-v0.50/upgrade-info.json",
            UPGRADE_NAME,
            UPGRADE_HEIGHT,
            "",
        ),
        (
            "sdk-v0.50/upgrade-info.binaries.json",
            UPGRADE_NAME,
            UPGRADE_HEIGHT,
            &binaries,
        ),
        (
            "sdk-v0.50/upgrade-info.binaries-spaced.json",
            UPGRADE_NAME,
            UPGRADE_HEIGHT,
            &spaced,
        ),
        // Go's `\u0026` for `&` decodes to the URL the chain holds.
        (
            "sdk-v0.50/upgrade-info.html-escaped.json",
            UPGRADE_NAME,
            UPGRADE_HEIGHT,
            "{\"binaries\":{\"linux/amd64\":\"https://downloads.example.org/gaiad-v25.0.0-linux-amd64\
             ?X-Amz-Expires=604800&X-Amz-Signature=5f1d&checksum=sha256:\
             9c2f5d1f4c6e1b7a0f3e2d5c8b9a6f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a\"}}",
        ),
        // SDK v0.45/v0.46: no `time`.
        (
            "older/upgrade-info.sdk-v0.46.json",
            "v9-Lambda",
            14_470_501,
            &binaries,
        ),
        // The plan as the query CLI prints it: height as a string.
        (
            "older/upgrade-info.height-string.json",
            UPGRADE_NAME,
            UPGRADE_HEIGHT,
            "",
        ),
    ];
    let home = Home::new("exit 0\n", None);
    for (name, plan_name, height, info) in cases {
        std::fs::write(home.upgrade_info(), golden(name)).unwrap();
        let output = home.show_upgrade_info();
        assert!(output.status.success(), "{name}: {output:?}");
        let shown: serde_json::Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|error| panic!("{name}: {error}: {output:?}"));
        assert_eq!(shown["name"], plan_name, "{name}: {shown}");
        assert_eq!(shown["height"], height, "{name}: {shown}");
        assert_eq!(shown["info"], info, "{name}: {shown}");
    }
}

/// The SDK writes the file with a plain `os.WriteFile`: a reader can see
/// it half-written. That is "incomplete" (wait), never "invalid".
#[test]
fn a_truncated_upgrade_info_is_incomplete_not_invalid() {
    let home = Home::new("exit 0\n", None);
    std::fs::write(
        home.upgrade_info(),
        golden("sdk-v0.50/incomplete/upgrade-info.truncated.json"),
    )
    .unwrap();
    let output = home.show_upgrade_info();
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is empty or incomplete"), "{stderr}");
    assert!(!stderr.contains("not a valid upgrade plan"), "{stderr}");
}

/// While gaiad runs, a half-written plan is waited out: nothing happens
/// until the SDK's write completes, then the upgrade is the plan's exactly.
#[test]
fn a_half_written_upgrade_info_is_waited_out_while_the_node_runs() {
    let home = Home::new(RUNS_UNTIL_STOPPED, None);
    home.add_upgrade(UPGRADE_NAME);
    let supervisor = home.run();
    let socket = default_socket(&home.home);
    wait_for_status(&socket, LONG, "the node running", |status| {
        status["node"]["state"] == "running"
    });
    std::fs::write(
        home.upgrade_info(),
        golden("sdk-v0.50/incomplete/upgrade-info.truncated.json"),
    )
    .unwrap();
    // Well past the watcher's polls (50 ms) and within its 5 s patience:
    // no upgrade, no complaint.
    common::holds_for(
        std::time::Duration::from_secs(2),
        "the node running, no upgrade",
        || home.records().is_empty() && common::node_state(&socket).as_deref() == Some("running"),
    );
    assert!(
        !supervisor.has_line("invalid upgrade"),
        "{}",
        supervisor.output()
    );
    // The rest of the write lands.
    std::fs::write(
        home.upgrade_info(),
        golden("sdk-v0.50/upgrade-info.binaries.json"),
    )
    .unwrap();
    let record = home.wait_for_record(&supervisor);
    assert_eq!(record["name"], UPGRADE_NAME, "{record}");
    assert_eq!(record["height"], UPGRADE_HEIGHT, "{record}");
    assert_eq!(record["detected_by"], "upgrade_info_file", "{record}");
    assert_eq!(record["outcome"]["status"], "completed", "{record}");
    supervisor.stop();
}

// ------------------------------------------------------------------- /status

/// The golden `/status` answered on the node's RPC address: the supervisor
/// reports the node's height from it, and holds a plan above that height
/// (a plan at the next height would be due, one further up is not).
#[test]
fn node_height_is_read_from_status() {
    let body = golden("cometbft-v0.38/status.json");
    let base = serve_http(move |path, mut stream| {
        use std::io::Write;
        if path == "/status" {
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(&body);
        } else {
            let _ = write!(
                stream,
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    let address = base.strip_prefix("http://").unwrap();
    let home = Home::new(RUNS_UNTIL_STOPPED, Some(address));
    home.add_upgrade(UPGRADE_NAME);
    let supervisor = home.run();
    let socket = default_socket(&home.home);
    let status = wait_for_status(&socket, LONG, "the node's height", |status| {
        status["node"]["state"] == "running" && !status["node"]["height"].is_null()
    });
    assert_eq!(status["node"]["height"], SIGNED_HEIGHT, "{status}");

    // A plan two blocks ahead of the golden's latest height is held.
    let ahead = SIGNED_HEIGHT + 2;
    std::fs::write(
        home.upgrade_info(),
        format!(r#"{{"name":"{UPGRADE_NAME}","time":"0001-01-01T00:00:00Z","height":{ahead}}}"#),
    )
    .unwrap();
    let held = wait_for_status(&socket, LONG, "the plan to be held", |status| {
        status["upgrades"]["scheduled"].is_string()
    });
    let scheduled = held["upgrades"]["scheduled"].as_str().unwrap();
    assert!(
        scheduled.contains(UPGRADE_NAME) && scheduled.contains(&ahead.to_string()),
        "{held}"
    );
    assert!(home.records().is_empty());
    supervisor.stop();
}

// ---------------------------------------------------------- upgrade log lines

/// Run the supervisor over a fake gaiad that prints the golden line (on
/// stdout, where `cosmossdk.io/log` and the Tendermint-era logger write,
/// or stderr, where SDK v0.45-v0.47's logger did) and exits as a panicking Go program does; the upgrade record
/// must name the plan exactly, detected from the line (there is no
/// `upgrade-info.json`).
fn upgrade_from_log_line(golden_name: &str, stderr: bool) {
    let info = info_of_line(golden_name);
    let line = conformance_dir().join(golden_name);
    assert!(line.exists(), "{}", line.display());
    let redirect = if stderr { " >&2" } else { "" };
    let home = Home::new(
        &format!("cat '{}'{redirect}\nexit 2\n", line.display()),
        None,
    );
    home.add_upgrade(UPGRADE_NAME);
    let supervisor = home.run();
    let record = home.wait_for_record(&supervisor);
    assert!(!home.upgrade_info().exists());
    assert_eq!(record["name"], UPGRADE_NAME, "{golden_name}: {record}");
    assert_eq!(record["height"], UPGRADE_HEIGHT, "{golden_name}: {record}");
    assert_eq!(
        record["detected_by"], "output_line",
        "{golden_name}: {record}"
    );
    assert_eq!(
        record["outcome"]["status"], "completed",
        "{golden_name}: {record}"
    );
    // The upgrade is the one installed under the plan's name.
    wait_until(LONG, "current -> upgrades/v25", || {
        std::fs::read_link(home.home.join("cosmovisor/current")).ok()
            == Some(PathBuf::from("upgrades/v25"))
    });
    // The plan as read from the line, info included (the info is what an
    // auto-download would fetch from), is kept beside the upgrade's binary.
    let copy: serde_json::Value = serde_json::from_slice(
        &std::fs::read(home.home.join("cosmovisor/upgrades/v25/upgrade-info.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(copy["name"], UPGRADE_NAME, "{golden_name}: {copy}");
    assert_eq!(copy["height"], UPGRADE_HEIGHT, "{golden_name}: {copy}");
    assert_eq!(copy["info"], info, "{golden_name}: {copy}");
    supervisor.stop();
}

#[test]
fn upgrade_line_plain_with_empty_info() {
    upgrade_from_log_line("sdk-v0.50/upgrade-line.plain.empty-info.log", false);
}

#[test]
fn upgrade_line_plain_with_binaries_info() {
    upgrade_from_log_line("sdk-v0.50/upgrade-line.plain.binaries.log", false);
}

#[test]
fn upgrade_line_coloured_with_empty_info() {
    upgrade_from_log_line("sdk-v0.50/upgrade-line.color.empty-info.log", false);
}

#[test]
fn upgrade_line_coloured_with_binaries_info() {
    upgrade_from_log_line("sdk-v0.50/upgrade-line.color.binaries.log", false);
}

#[test]
fn upgrade_line_json_with_empty_info() {
    upgrade_from_log_line("sdk-v0.50/upgrade-line.json.empty-info.log", false);
}

#[test]
fn upgrade_line_json_with_binaries_info() {
    upgrade_from_log_line("sdk-v0.50/upgrade-line.json.binaries.log", false);
}

#[test]
fn upgrade_line_plain_with_spaced_binaries_info() {
    upgrade_from_log_line("sdk-v0.50/upgrade-line.plain.binaries-spaced.log", false);
}

#[test]
fn upgrade_line_coloured_with_spaced_binaries_info() {
    upgrade_from_log_line("sdk-v0.50/upgrade-line.color.binaries-spaced.log", false);
}

#[test]
fn upgrade_line_json_with_spaced_binaries_info() {
    upgrade_from_log_line("sdk-v0.50/upgrade-line.json.binaries-spaced.log", false);
}

#[test]
fn upgrade_line_sdk_v047_coloured_with_empty_info() {
    upgrade_from_log_line("older/upgrade-line.sdk-v0.47.color.empty-info.log", true);
}

#[test]
fn upgrade_line_sdk_v047_coloured_with_binaries_info() {
    upgrade_from_log_line("older/upgrade-line.sdk-v0.47.color.binaries.log", true);
}

#[test]
fn upgrade_line_tendermint_era_plain_with_empty_info() {
    upgrade_from_log_line("older/upgrade-line.tendermint.plain.empty-info.log", false);
}

#[test]
fn upgrade_line_tendermint_era_plain_with_binaries_info() {
    upgrade_from_log_line("older/upgrade-line.tendermint.plain.binaries.log", false);
}

#[test]
fn upgrade_line_tendermint_era_json_with_empty_info() {
    upgrade_from_log_line("older/upgrade-line.tendermint.json.empty-info.log", false);
}

#[test]
fn upgrade_line_tendermint_era_json_with_binaries_info() {
    upgrade_from_log_line("older/upgrade-line.tendermint.json.binaries.log", false);
}

/// The goldens hold what the README says: each upgrade line carries the
/// SDK's message for the plan in `upgrade-info.binaries.json` (or with an
/// empty info), so the end-to-end tests above test that plan.
#[test]
fn upgrade_lines_carry_the_sdk_message() {
    for entry in ["sdk-v0.50", "older"] {
        for file in std::fs::read_dir(conformance_dir().join(entry)).unwrap() {
            let path = file.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !name.starts_with("upgrade-line.") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(text.ends_with('\n') && text.lines().count() == 1, "{name}");
            let info = info_of_line(&name);
            let message =
                format!("UPGRADE \"{UPGRADE_NAME}\" NEEDED at height: {UPGRADE_HEIGHT}: {info}");
            if name.contains(".json.") {
                let object: serde_json::Value = serde_json::from_str(&text).unwrap();
                // zerolog's field, or the Tendermint logger's `_msg`.
                let field = if name.contains("tendermint") {
                    "_msg"
                } else {
                    "message"
                };
                assert_eq!(object[field], message.as_str(), "{name}");
                assert_eq!(object["level"], "error", "{name}");
            } else {
                assert!(text.contains(&message), "{name}: {text:?}");
            }
        }
    }
}
