//! `palisade-ctl --via` end to end through a real OpenSSH sshd: the
//! supervisor publishes its control socket on the bastion over its own
//! tunnel (reverse Unix-socket forward), and the operator reaches it with
//! SSH + `direct-streamlocal` + TLS (pinned) + operator login.
//!
//! What a compromised bastion sees is recorded: between the operator's
//! channel and the validator's forwarded socket sits a recording relay on
//! the bastion (sshd hands it the decrypted channel bytes, exactly what
//! sshd itself or anyone with root there could read). The recording must
//! hold neither the passphrase nor any JSON-RPC, and replaying it to the
//! supervisor must achieve nothing.
//!
//! Everything runs as the test's user (root in CI); sshd listens on
//! loopback only.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::timing::{BLOCK, LONG};
use common::{Chain, Supervisor, VaultRpc};
use palisade_simchain::testkit::free_port;
use palisade_testkit::{SshAgent, Sshd, SshdOptions, current_user, encrypted_copy};

const PASSPHRASE: &str = "via-the-bastion passphrase 7f3a";

/// Bytes of one relayed connection, per direction.
#[derive(Default, Clone)]
struct Recorded {
    to_supervisor: Vec<u8>,
    to_client: Vec<u8>,
    /// The client has closed its side: `to_supervisor` is complete.
    client_done: bool,
}

/// A relay on the bastion between `listen` and `target`, recording all
/// bytes: the view of a compromised bastion.
struct Recorder {
    connections: Arc<Mutex<Vec<Arc<Mutex<Recorded>>>>>,
}

impl Recorder {
    fn start(listen: &Path, target: &Path) -> Recorder {
        let listener = UnixListener::bind(listen).unwrap();
        let connections: Arc<Mutex<Vec<Arc<Mutex<Recorded>>>>> = Arc::default();
        let all = connections.clone();
        let target = target.to_path_buf();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = UnixStream::connect(&target) else {
                    continue;
                };
                let record = Arc::new(Mutex::new(Recorded::default()));
                all.lock().unwrap().push(record.clone());
                let pump = |mut from: UnixStream, mut to: UnixStream, up: bool| {
                    let record = record.clone();
                    std::thread::spawn(move || {
                        let mut buffer = [0u8; 16 * 1024];
                        loop {
                            let read = match from.read(&mut buffer) {
                                Ok(0) | Err(_) => break,
                                Ok(read) => read,
                            };
                            {
                                let mut record = record.lock().unwrap();
                                let direction = if up {
                                    &mut record.to_supervisor
                                } else {
                                    &mut record.to_client
                                };
                                direction.extend_from_slice(&buffer[..read]);
                            }
                            if to.write_all(&buffer[..read]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Write);
                        if up {
                            record.lock().unwrap().client_done = true;
                        }
                    })
                };
                pump(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    true,
                );
                pump(server, client, false);
            }
        });
        Recorder { connections }
    }

    fn recorded(&self) -> Vec<Recorded> {
        self.connections
            .lock()
            .unwrap()
            .iter()
            .map(|record| record.lock().unwrap().clone())
            .collect()
    }
}

struct Keys {
    all: common::SshKeys,
    alice: PathBuf,
    bob: PathBuf,
    mallory: PathBuf,
    outsider: PathBuf,
    tunnel: PathBuf,
}

fn keys() -> Keys {
    let all = common::SshKeys::new(&["alice", "bob", "mallory", "outsider", "tunnel"]);
    Keys {
        alice: all.path("alice"),
        bob: all.path("bob"),
        mallory: all.path("mallory"),
        outsider: all.path("outsider"),
        tunnel: all.path("tunnel"),
        all,
    }
}

struct Setup {
    /// The chain, the vault and the supervisor's config (`[rpc]` and the
    /// sections below).
    vault: VaultRpc,
    sshd: Sshd,
    keys: Keys,
    pin: String,
    known_hosts: PathBuf,
    /// Where sshd publishes the supervisor's socket (the tunnel's forward).
    forwarded: PathBuf,
    /// The recording relay in front of it.
    relayed: PathBuf,
}

fn setup() -> Setup {
    let keys = keys();
    // The bastion's authorized_keys: the validator's tunnel key may forward
    // (its reverse socket); the operators' keys may open channels but get
    // no shell (`command="/bin/false"`). See docs/bastion-sshd.md.
    let authorized_keys = format!(
        "restrict,port-forwarding {tunnel}\n\
         restrict,port-forwarding,command=\"/bin/false\" {alice}\n\
         restrict,port-forwarding,command=\"/bin/false\" {bob}\n\
         restrict,port-forwarding,command=\"/bin/false\" {mallory}\n",
        tunnel = keys.all.public("tunnel"),
        alice = keys.all.public("alice"),
        bob = keys.all.public("bob"),
        mallory = keys.all.public("mallory"),
    );
    let sshd = Sshd::start(SshdOptions::new("127.0.0.1", free_port(), authorized_keys)).unwrap();
    let forwarded = sshd.path("val1.sock");
    let relayed = sshd.path("relay.sock");

    let vault = VaultRpc::setup(
        BLOCK,
        PASSPHRASE,
        "",
        &format!(
            "[tunnel]\nkey-file = {tunnel_key:?}\nkeepalive-interval = \"1s\"\n\
             [[bastion]]\nname = \"b1\"\nhost = \"127.0.0.1\"\nport = {port}\nuser = {user:?}\n\
             host-key-fingerprints = [{fingerprint:?}]\nrpc-socket = {forwarded:?}\n\
             [[operator]]\nname = \"alice\"\nkey = {alice:?}\nrole = \"admin\"\n\
             [[operator]]\nname = \"bob\"\nkey = {bob:?}\nrole = \"viewer\"\n",
            tunnel_key = keys.tunnel,
            port = sshd.port(),
            user = current_user().unwrap(),
            fingerprint = sshd.fingerprint(),
            alice = keys.all.public("alice"),
            bob = keys.all.public("bob"),
        ),
    );
    let known_hosts = vault.chain.dir.path().join("known_hosts");
    std::fs::write(&known_hosts, format!("{}\n", sshd.known_hosts_line())).unwrap();
    // Hashed as OpenSSH writes it on Debian and Ubuntu (HashKnownHosts yes),
    // the operator's usual ~/.ssh/known_hosts (the supervisor's tunnels keep
    // the plain form in tunnel_sshd).
    let hashed = Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&known_hosts)
        .output()
        .unwrap();
    assert!(hashed.status.success(), "ssh-keygen -H: {hashed:?}");
    let text = std::fs::read_to_string(&known_hosts).unwrap();
    assert!(text.starts_with("|1|"), "{text}");
    let pin = vault.init_rpc();
    Setup {
        vault,
        sshd,
        keys,
        pin,
        known_hosts,
        forwarded,
        relayed,
    }
}

/// One `palisade-ctl` run's connection arguments, alice's by default, and
/// its environment beyond PATH and HOME.
#[derive(Clone)]
struct Ctl {
    args: Vec<String>,
    env: Vec<(&'static str, PathBuf)>,
}

impl Setup {
    fn run(&self) -> Supervisor {
        self.vault.run()
    }

    fn ctl_as(&self, operator: &str, key: &Path) -> Ctl {
        let via = format!("{}@127.0.0.1:{}", current_user().unwrap(), self.sshd.port());
        Ctl {
            args: vec![
                "--via".into(),
                via,
                "--remote-socket".into(),
                self.relayed.display().to_string(),
                "--known-hosts".into(),
                self.known_hosts.display().to_string(),
                "--pin".into(),
                self.pin.clone(),
                "--operator".into(),
                operator.into(),
                "--key".into(),
                key.display().to_string(),
                "--timeout".into(),
                "20".into(),
            ],
            env: Vec::new(),
        }
    }

    fn alice(&self) -> Ctl {
        self.ctl_as("alice", &self.keys.alice)
    }

    fn status(&self) -> serde_json::Value {
        let output = self
            .alice()
            .run(&self.vault.chain, &["--json", "status"], None);
        assert!(output.status.success(), "status: {output:?}");
        serde_json::from_slice(&output.stdout).unwrap()
    }
}

impl Ctl {
    /// Replace the value of `flag` (or add it).
    fn with(mut self, flag: &str, value: &str) -> Ctl {
        match self.args.iter().position(|arg| arg == flag) {
            Some(index) => self.args[index + 1] = value.to_string(),
            None => self.args.extend([flag.to_string(), value.to_string()]),
        }
        self
    }

    fn run(&self, chain: &Chain, command: &[&str], stdin: Option<&str>) -> Output {
        let args: Vec<&str> = self
            .args
            .iter()
            .map(String::as_str)
            .chain(command.iter().copied())
            .collect();
        let env: Vec<(&str, &Path)> = self
            .env
            .iter()
            .map(|(name, value)| (*name, value.as_path()))
            .collect();
        common::run_ctl_env(chain.dir.path(), &args, stdin, &env)
    }

    fn with_env(mut self, name: &'static str, value: &Path) -> Ctl {
        self.env.push((name, value.to_path_buf()));
        self
    }
}

/// A `palisade-ctl` run that must be refused: exit `code`, every
/// `expected` fragment in its message.
struct Refusal {
    what: &'static str,
    ctl: Ctl,
    command: &'static [&'static str],
    code: i32,
    expected: Vec<String>,
}

impl Refusal {
    fn new(
        what: &'static str,
        ctl: Ctl,
        command: &'static [&'static str],
        code: i32,
        expected: Vec<String>,
    ) -> Refusal {
        Refusal {
            what,
            ctl,
            command,
            code,
            expected,
        }
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The (content type, length) of each TLS record in `bytes`.
fn tls_records(bytes: &[u8]) -> Vec<(u8, usize)> {
    let mut records = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 5 {
        let length = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        records.push((rest[0], length));
        rest = &rest[(5 + length).min(rest.len())..];
    }
    assert!(
        rest.is_empty(),
        "{} bytes after the last whole record",
        rest.len()
    );
    records
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

#[test]
fn unlock_through_a_bastion_shows_the_bastion_nothing() {
    let setup = setup();
    let supervisor = setup.run();
    common::wait_for_node_state(&setup.vault.socket, "locked", LONG);
    common::wait_until(LONG, "the forwarded control socket on the bastion", || {
        setup.forwarded.exists()
    });
    let recorder = Recorder::start(&setup.relayed, &setup.forwarded);

    let status = setup.status();
    assert_eq!(status["node"]["state"], "locked", "{status}");
    assert_eq!(status["vault"]["locked"], true, "{status}");

    // Refusals, each with a clear message and the documented exit code.
    let chain = &setup.vault.chain;
    let other_fingerprint = {
        let output = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(setup.keys.outsider.with_extension("pub"))
            .output()
            .unwrap();
        String::from_utf8(output.stdout)
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string()
    };
    let empty_known_hosts = chain.dir.path().join("known_hosts.empty");
    std::fs::write(&empty_known_hosts, "").unwrap();
    let wrong_pin = format!("sha256:{}", "0".repeat(64));
    let not_there = setup.sshd.path("val9.sock").display().to_string();
    let cases: Vec<Refusal> = vec![
        Refusal::new(
            "a changed bastion host key",
            setup
                .alice()
                .with("--known-hosts", empty_known_hosts.to_str().unwrap())
                .with("--host-key", &other_fingerprint),
            &["status"],
            3,
            vec![
                "HOST KEY CHANGED".into(),
                other_fingerprint.clone(),
                setup.sshd.fingerprint().into(),
            ],
        ),
        Refusal::new(
            "an unknown bastion host key",
            setup
                .alice()
                .with("--known-hosts", empty_known_hosts.to_str().unwrap()),
            &["status"],
            3,
            vec!["is unknown".into(), setup.sshd.fingerprint().into()],
        ),
        Refusal::new(
            "a wrong certificate pin",
            setup.alice().with("--pin", &wrong_pin),
            &["status"],
            3,
            vec![wrong_pin.clone(), setup.pin.clone(), "is pinned".into()],
        ),
        Refusal::new(
            "an SSH key the bastion does not know",
            setup
                .alice()
                .with("--ssh-key", setup.keys.outsider.to_str().unwrap()),
            &["status"],
            4,
            vec!["rejected public-key authentication".into()],
        ),
        Refusal::new(
            "a key that is not an operator's",
            setup.ctl_as("alice", &setup.keys.mallory),
            &["status"],
            4,
            vec!["log in".into()],
        ),
        Refusal::new(
            "a viewer unlocking",
            setup.ctl_as("bob", &setup.keys.bob),
            &["unlock", "--passphrase-stdin"],
            4,
            vec!["role".into()],
        ),
        Refusal::new(
            "a validator that has no socket on the bastion",
            setup.alice().with("--remote-socket", &not_there),
            &["status"],
            3,
            vec!["val9.sock".into(), "connect failed".into()],
        ),
    ];
    for Refusal {
        what,
        ctl,
        command,
        code,
        expected,
    } in cases
    {
        let output = ctl.run(chain, command, Some(&format!("{PASSPHRASE}\n")));
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(code), "{what}: {output:?}");
        for needle in expected {
            assert!(
                message.contains(&needle),
                "{what}: {needle:?} not in {message}"
            );
        }
        assert!(!message.contains(PASSPHRASE), "{what}: {message}");
    }
    assert_eq!(setup.status()["vault"]["locked"], true);

    // The unlock itself, through the bastion.
    let unlocked = setup.alice().run(
        chain,
        &["unlock", "--passphrase-stdin"],
        Some(&format!("{PASSPHRASE}\n")),
    );
    assert!(unlocked.status.success(), "unlock: {unlocked:?}");
    chain.wait_signing(3, LONG);
    let viewer = setup
        .ctl_as("bob", &setup.keys.bob)
        .run(chain, &["--json", "status"], None);
    assert!(viewer.status.success(), "viewer status: {viewer:?}");
    let status: serde_json::Value = serde_json::from_slice(&viewer.stdout).unwrap();
    assert_eq!(status["vault"]["locked"], false, "{status}");
    assert_eq!(status["node"]["state"], "running", "{status}");

    // What the bastion saw: a greeting, then TLS records only.
    let recorded = recorder.recorded();
    assert!(
        recorded.len() >= 5,
        "expected every relayed run to be recorded, got {}",
        recorded.len()
    );
    let mut tls_sessions = 0;
    for connection in &recorded {
        let greeting_end = connection
            .to_client
            .iter()
            .position(|&byte| byte == b'\n')
            .expect("every connection starts with the greeting");
        let greeting = std::str::from_utf8(&connection.to_client[..greeting_end]).unwrap();
        assert!(greeting.contains("val1"), "{greeting}");
        if let Some(&first) = connection.to_supervisor.first() {
            // 0x16: a TLS handshake record. Nothing precedes it.
            assert_eq!(first, 0x16, "the client spoke before TLS");
            tls_sessions += 1;
        }
        for needle in [
            PASSPHRASE.as_bytes(),
            b"jsonrpc",
            b"\"method\"",
            b"vault.unlock",
            b"auth.login",
            b"alice",
            b"watermark",
        ] {
            for (direction, bytes) in [
                ("to the supervisor", connection.to_supervisor.as_slice()),
                ("to the client", &connection.to_client[greeting_end..]),
            ] {
                assert!(
                    !contains(bytes, needle),
                    "{:?} in clear {direction} through the bastion",
                    String::from_utf8_lossy(needle)
                );
            }
        }
    }
    assert!(tls_sessions >= 5, "{tls_sessions} TLS sessions recorded");

    // Lock, then replay everything the bastion recorded straight into the
    // validator's socket: a bastion that replays an unlock achieves nothing.
    let locked = setup.alice().run(chain, &["lock"], None);
    assert!(locked.status.success(), "lock: {locked:?}");
    common::wait_until(LONG, "the vault to be locked", || {
        setup.status()["vault"]["locked"] == true
    });
    for connection in &recorded {
        if connection.to_supervisor.is_empty() {
            continue;
        }
        let mut socket = UnixStream::connect(&setup.forwarded).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut greeting = [0u8; 1];
        while socket.read(&mut greeting).unwrap() == 1 && greeting[0] != b'\n' {}
        let _ = socket.write_all(&connection.to_supervisor);
        let mut answer = Vec::new();
        let _ = socket.read_to_end(&mut answer);
    }
    // Every replayed connection has ended; give a replayed unlock the
    // time to act, watching the local socket throughout: still locked, no
    // unlock even begun, no node.
    common::holds_for(
        Duration::from_millis(500),
        "locked after the replay",
        || {
            common::status(&setup.vault.socket).is_some_and(|status| {
                status["vault"]["locked"] == true && status["node"]["state"] == "locked"
            }) && supervisor.children().is_empty()
        },
    );
    let status = setup.status();
    assert_eq!(status["vault"]["locked"], true, "replay unlocked: {status}");

    let output = supervisor.stop();
    assert!(!output.contains(PASSPHRASE));
    chain.assert_no_double_sign();
}

/// Issue 16, finding 6: the request line and the secret line went out as
/// two TLS records, so the bastion read the passphrase's length off the
/// second record (its length + 18). Now the client pads the secret to one
/// length and writes both lines at once: every record of an unlock is the
/// same size whatever the passphrase.
#[test]
fn the_unlock_records_do_not_show_the_passphrase_length() {
    let setup = setup();
    let supervisor = setup.run();
    common::wait_for_node_state(&setup.vault.socket, "locked", LONG);
    common::wait_until(LONG, "the forwarded control socket on the bastion", || {
        setup.forwarded.exists()
    });
    let recorder = Recorder::start(&setup.relayed, &setup.forwarded);
    let chain = &setup.vault.chain;
    let long = "a much longer wrong passphrase ".repeat(100);
    let mut seen = Vec::new();
    for wrong in ["w", long.as_str()] {
        let before = recorder.recorded().len();
        let output = setup.alice().run(
            chain,
            &["unlock", "--passphrase-stdin"],
            Some(&format!("{wrong}\n")),
        );
        // Wrong (or, the second time, too soon after a wrong one).
        assert!(!output.status.success(), "{output:?}");
        assert!(stderr(&output).contains("(code -3200"), "{output:?}");
        common::wait_until(LONG, "the relay to see the client close", || {
            let recorded = recorder.recorded();
            recorded.len() == before + 1 && recorded[before].client_done
        });
        let connection = recorder.recorded().swap_remove(before);
        assert!(!contains(&connection.to_supervisor, long.as_bytes()));
        seen.push(tls_records(&connection.to_supervisor));
    }
    assert_eq!(
        seen[0], seen[1],
        "the client's TLS records differ with the passphrase's length"
    );
    // The unlock's record is there, with the padded secret in it.
    assert!(
        seen[0]
            .iter()
            .any(|&(kind, length)| kind == 0x17 && length > palisade_wire::rpc::PADDED_SECRET_BYTES),
        "{:?}",
        seen[0]
    );
    assert_eq!(setup.status()["vault"]["locked"], true);
    supervisor.stop();
}

/// An operator whose key has a passphrase adds it to ssh-agent once
/// (`ssh-add`), and palisade-ctl logs in to the bastion and to the
/// supervisor through the agent; without the agent, or with an agent that
/// lacks that key, it says what to do and exits 4.
#[test]
fn a_key_with_a_passphrase_is_used_through_ssh_agent() {
    let setup = setup();
    let supervisor = setup.run();
    common::wait_for_node_state(&setup.vault.socket, "locked", LONG);
    common::wait_until(LONG, "the forwarded control socket on the bastion", || {
        setup.forwarded.exists()
    });
    let chain = &setup.vault.chain;
    let locked_key = chain.dir.path().join("alice-with-passphrase");
    encrypted_copy(&setup.keys.alice, &locked_key, "alice's own ssh passphrase").unwrap();
    let ctl = setup
        .ctl_as("alice", &locked_key)
        .with("--remote-socket", setup.forwarded.to_str().unwrap());

    let no_agent = ctl.run(chain, &["status"], None);
    assert_eq!(no_agent.status.code(), Some(4), "{no_agent:?}");
    let message = stderr(&no_agent);
    for needle in [
        "has a passphrase",
        "SSH_AUTH_SOCK",
        "ssh-add",
        "alice-with-passphrase",
    ] {
        assert!(message.contains(needle), "{needle:?} missing: {message}");
    }
    // Only the public half (as for a hardware key): the same, said so.
    let public_only = chain.dir.path().join("alice-with-passphrase.pub");
    let by_public = |ctl: &Ctl| {
        ctl.clone()
            .with("--key", public_only.to_str().unwrap())
            .with("--ssh-key", public_only.to_str().unwrap())
    };
    let no_agent = by_public(&ctl).run(chain, &["status"], None);
    assert_eq!(no_agent.status.code(), Some(4), "{no_agent:?}");
    assert!(
        stderr(&no_agent).contains("is a public key")
            && stderr(&no_agent).contains("SSH_AUTH_SOCK"),
        "{no_agent:?}"
    );

    // An agent with other keys (bob's, which the bastion would accept) but
    // not this one: refused before any network, bob's key never offered.
    let agent = SshAgent::start().unwrap();
    agent.add(&setup.keys.bob, None).unwrap();
    let ctl = ctl.with_env("SSH_AUTH_SOCK", agent.socket());
    let connections_before = setup.sshd.log().matches("Accepted publickey").count();
    let lacking = ctl.run(chain, &["status"], None);
    assert_eq!(lacking.status.code(), Some(4), "{lacking:?}");
    assert!(
        stderr(&lacking).contains("does not hold the key"),
        "{lacking:?}"
    );
    assert_eq!(
        setup.sshd.log().matches("Accepted publickey").count(),
        connections_before,
        "palisade-ctl reached the bastion with a key it was not given"
    );

    agent
        .add(&locked_key, Some("alice's own ssh passphrase"))
        .unwrap();
    let unlocked = ctl.run(
        chain,
        &["unlock", "--passphrase-stdin"],
        Some(&format!("{PASSPHRASE}\n")),
    );
    assert!(unlocked.status.success(), "unlock: {unlocked:?}");
    chain.wait_signing(3, LONG);
    let status = ctl.run(chain, &["--json", "status"], None);
    assert!(status.status.success(), "status: {status:?}");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["vault"]["locked"], false, "{status}");
    // Given only the public key file (mode 0644 is fine for it), the agent
    // signs both logins just the same.
    std::fs::set_permissions(&public_only, std::fs::Permissions::from_mode(0o644)).unwrap();
    let status = by_public(&ctl).run(chain, &["--json", "status"], None);
    assert!(
        status.status.success(),
        "status by the public key: {status:?}"
    );
    assert!(
        supervisor.count_lines("operator=alice role=admin tls=true") >= 2,
        "the supervisor logs the logins as alice"
    );
    chain.assert_no_double_sign();
}
