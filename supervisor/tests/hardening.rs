//! Attacks and mistakes from the hardening review (issue 16), each
//! reproduced against the real supervisor; each test fails without its fix.

mod common;

use common::timing::{BLOCK, LONG};
use common::{VaultRpc, wait_for_node_state};

const PASSPHRASE: &str = "hardening passphrase";

/// Finding 9: `restore-state` while the supervisor runs would write a state
/// that gaiad, still signing, overwrites with its own: refused, naming the
/// ways that work, and nothing is changed.
#[test]
fn restore_state_is_refused_while_a_supervisor_runs() {
    let fixture = VaultRpc::setup(BLOCK, PASSPHRASE, "", "");
    let passphrase = fixture.chain.dir.path().join("passphrase");
    let state = fixture
        .chain
        .home
        .join("data")
        .join("priv_validator_state.json");
    let supervisor = fixture.run();
    wait_for_node_state(&fixture.socket, "locked", LONG);
    fixture.unlock();
    fixture.chain.wait_signing(2, LONG);

    // The local state lost its recent heights while gaiad runs. (The first backup follows the
    // first signature by the debounce and a write: wait for it rather than race it.)
    let backups = fixture.chain.home.join("palisade/backups");
    common::wait_until(LONG, "a first backup", || {
        std::fs::read_dir(&backups).map_or(0, |entries| entries.count()) > 0
    });
    let backups_before = std::fs::read_dir(&backups).unwrap().count();
    assert!(backups_before > 0);
    let output = fixture
        .command()
        .args(["restore-state", "--passphrase-file"])
        .arg(&passphrase)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{output:?}");
    for words in [
        "a supervisor is running",
        fixture.socket.to_str().unwrap(),
        "palisade-ctl node stop",
        "nothing was changed",
    ] {
        assert!(stderr.contains(words), "{words:?} not in {stderr}");
    }
    let status = common::status(&fixture.socket).unwrap();
    assert_eq!(status["node"]["state"], "running", "{status}");
    supervisor.stop();
    // Stopped, it works (nothing to restore: the state is the newest).
    let output = fixture
        .command()
        .args(["restore-state", "--passphrase-file"])
        .arg(&passphrase)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("a supervisor is running"), "{stderr}");
    assert!(state.exists());
}

/// A real age file encrypted to `stanzas` random X25519 recipients: to
/// find out that none is ours, age does a scalar multiplication per
/// stanza (and age 0.11 re-parses the header once per line).
fn stanza_bomb(stanzas: usize) -> Vec<u8> {
    use std::io::Write;
    let recipients: Vec<age::x25519::Recipient> = (0..stanzas)
        .map(|_| age::x25519::Identity::generate().to_public())
        .collect();
    let encryptor = age::Encryptor::with_recipients(
        recipients
            .iter()
            .map(|recipient| recipient as &dyn age::Recipient),
    )
    .unwrap();
    let mut file = Vec::new();
    let mut writer = encryptor.wrap_output(&mut file).unwrap();
    writer.write_all(b"not a bundle").unwrap();
    writer.finish().unwrap();
    file
}

/// Finding 1: a store full of bundles whose age headers hold thousands of
/// recipient stanzas. The supervisor bounds the header before age sees it
/// and verifies off its event loop, newest first, one at a time: through
/// the whole start check the watchdog is fed and `status` answers, and the
/// node starts from its genuine backup.
#[test]
fn hostile_bundles_never_stall_the_supervisor() {
    use common::{FakeSystemd, longest_silence};
    use std::time::{Duration, Instant};
    const WATCHDOG: Duration = Duration::from_secs(1);

    let fixture = VaultRpc::setup(BLOCK, PASSPHRASE, "", "");
    // A first run leaves genuine backups, whose names give the validator's
    // address.
    let supervisor = fixture.run();
    wait_for_node_state(&fixture.socket, "locked", LONG);
    fixture.unlock();
    fixture.chain.wait_signing(2, LONG);
    supervisor.stop();
    let genuine: Vec<String> = std::fs::read_dir(fixture.chain.home.join("palisade/backups"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with("backup-"))
        .collect();
    let address = genuine[0].split('-').nth(3).unwrap().to_owned();
    assert_eq!(address.len(), 40, "{genuine:?}");

    // A second store (another disk, or a bastion: the same code) serves
    // 32 stanza bombs named as the newest bundles, just under 1 MiB each.
    let hostile = fixture.chain.dir.path().join("hostile");
    std::fs::create_dir(&hostile).unwrap();
    let bomb = stanza_bomb(9_000);
    assert!(bomb.len() < 1024 * 1024, "{}", bomb.len());
    for index in 0..32u64 {
        let name = format!(
            "backup-sim-1-{address}-{:020}-h{}.age",
            1_000_000 + index,
            9_000_000 + index
        );
        std::fs::write(hostile.join(name), &bomb).unwrap();
    }
    let config = std::fs::read_to_string(&fixture.config).unwrap();
    let config = config.replace(
        "[backup]\n",
        &format!("[backup]\nextra-dirs = [{hostile:?}]\n"),
    );
    std::fs::write(&fixture.config, config).unwrap();

    let systemd = FakeSystemd::start(fixture.chain.dir.path());
    let notify = systemd.env(WATCHDOG);
    let mut env: Vec<(&str, &str)> = notify.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("PALISADE_CONFIG", fixture.config.to_str().unwrap()));
    let supervisor = fixture.chain.run_supervisor(&env);
    wait_for_node_state(&fixture.socket, "locked", LONG);
    let unlocked = Instant::now();
    let socket = fixture.socket.clone();
    let passphrase = format!("{PASSPHRASE}\n");
    let home = fixture.chain.dir.path().to_path_buf();
    let unlocking = std::thread::spawn(move || {
        common::run_ctl(
            &home,
            &[
                "--socket",
                socket.to_str().unwrap(),
                "unlock",
                "--passphrase-stdin",
            ],
            Some(&passphrase),
        )
    });
    // `status` answers promptly all through the start check.
    let mut slowest = Duration::ZERO;
    while !unlocking.is_finished() {
        let asked = Instant::now();
        let status = common::status(&fixture.socket);
        slowest = slowest.max(asked.elapsed());
        assert!(status.is_some(), "status did not answer");
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = unlocking.join().unwrap();
    assert!(output.status.success(), "unlock: {output:?}");
    fixture.chain.wait_signing(2, LONG);
    let signing = Instant::now();
    assert!(slowest < Duration::from_secs(1), "status took {slowest:?}");
    let pings = systemd.pings(unlocked, signing);
    let silence = longest_silence(&pings, unlocked, signing);
    assert!(
        silence < WATCHDOG,
        "{silence:?} without a watchdog ping during the start check ({} pings)",
        pings.len()
    );
    assert!(
        supervisor.has_line("recipient stanzas"),
        "{}",
        supervisor.output()
    );
    fixture.chain.assert_no_double_sign();
    supervisor.stop();
}

/// Finding 5: a key directory in a directory others may write (/dev/shm,
/// the old default) can be created first by any local user, and every
/// unlock then fails. It is refused with the way out, before a key is
/// decrypted; `config` shows where the keys will live.
#[test]
fn a_squattable_key_directory_is_refused_and_config_shows_every_setting() {
    use std::os::unix::fs::PermissionsExt;
    let fixture = VaultRpc::setup(BLOCK, PASSPHRASE, "", "");
    let output = fixture.command().arg("config").output().unwrap();
    let shown = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    for line in [
        format!("vault.tmpfs-dir={}", fixture.tmpfs.display()),
        "vault.swap=warn".to_owned(),
        "backup.start-quorum=all".to_owned(),
        "backup.start-quorum-wait=1m".to_owned(),
        "backup.chain-id=sim-1".to_owned(),
        format!("rpc.socket={}", fixture.socket.display()),
    ] {
        assert!(
            shown.lines().any(|shown| shown == line),
            "{line:?} not in:\n{shown}"
        );
    }

    // Another user got there first: a shared parent (1777, like /dev/shm)
    // holding the key directory under their name.
    let shared = common::private_shm_dir();
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let squatted = shared.path().join("keys");
    std::fs::create_dir(&squatted).unwrap();
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::chown(&squatted, Some(65534), Some(65534)).unwrap();
    }
    let config = std::fs::read_to_string(&fixture.config).unwrap();
    let config = config.replace(
        &format!("tmpfs-dir = {:?}", fixture.tmpfs),
        &format!("tmpfs-dir = {squatted:?}"),
    );
    std::fs::write(&fixture.config, config).unwrap();
    // Refused at start, before anything else, naming the fix.
    let mut supervisor = fixture.run();
    let status = supervisor.wait_exit(LONG);
    assert_eq!(status.code(), Some(1), "{}", supervisor.output());
    let output = supervisor.output();
    for words in [
        "other users can write to it (mode 1777)",
        "/run/palisade/keys",
        squatted.to_str().unwrap(),
    ] {
        assert!(output.contains(words), "{words:?} not in {output}");
    }
    assert!(!output.contains("daemon started"), "{output}");
    assert_eq!(
        std::fs::read_dir(&squatted).unwrap().count(),
        0,
        "a key was written"
    );
}

/// Finding 4 (in part): the unlocked supervisor, and the node it runs
/// with the key, cannot write a core dump (`RLIMIT_CORE` 0, inherited).
#[test]
fn the_supervisor_and_its_node_write_no_core_dumps() {
    let fixture = VaultRpc::setup(BLOCK, PASSPHRASE, "", "");
    let supervisor = fixture.run();
    wait_for_node_state(&fixture.socket, "locked", LONG);
    fixture.unlock();
    fixture.chain.wait_signing(1, LONG);
    let core_limit = |pid: u32| {
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        limits
            .lines()
            .find(|line| line.starts_with("Max core file size"))
            .map(|line| {
                line.split_whitespace()
                    .skip(4)
                    .take(2)
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .unwrap()
    };
    assert_eq!(core_limit(supervisor.child.id()), ["0", "0"]);
    let children = supervisor.children();
    assert!(!children.is_empty(), "the node is not running");
    for child in children {
        assert_eq!(core_limit(child), ["0", "0"], "node pid {child}");
    }
    supervisor.stop();
}

/// Finding 4 (in part): which local users are trusted is configuration (`[rpc] trusted-uids`),
/// not only "root or ours": with `[]`, a root connection gets the greeting a remote peer gets
/// (TLS required) and its plaintext is refused; by default root is trusted.
#[test]
fn trusted_uids_are_configuration_and_an_empty_list_trusts_nobody() {
    for (rpc_extra, tls, serves_plaintext) in [
        ("trusted-uids = []", "required", false),
        ("", "optional", true),
    ] {
        let fixture = VaultRpc::setup(BLOCK, PASSPHRASE, rpc_extra, "");
        let shown = fixture.command().arg("config").output().unwrap();
        let expected = if rpc_extra.is_empty() {
            "rpc.trusted-uids=[0]"
        } else {
            "rpc.trusted-uids=[]"
        };
        assert!(
            String::from_utf8_lossy(&shown.stdout)
                .lines()
                .any(|line| line == expected),
            "{expected:?} not in {shown:?}"
        );
        let supervisor = fixture.run();
        // The socket's file exists a moment before it listens (bind, then
        // listen): connect until it answers.
        let mut connected = None;
        common::wait_until(LONG, "the control socket", || {
            connected = common::RawRpc::connect(&fixture.socket, LONG).ok();
            connected.is_some()
        });
        let mut rpc = connected.unwrap();
        assert_eq!(rpc.greeting["tls"], tls, "{rpc_extra:?}: {}", rpc.greeting);
        rpc.send(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"status\"}\n")
            .unwrap();
        let answer = rpc.read_line();
        match serves_plaintext {
            true => assert!(
                answer
                    .as_ref()
                    .unwrap()
                    .as_deref()
                    .unwrap()
                    .contains("\"result\""),
                "{answer:?}"
            ),
            false => assert!(
                !matches!(&answer, Ok(Some(line)) if line.contains("\"result\"")),
                "{rpc_extra:?}: plaintext served: {answer:?}"
            ),
        }
        supervisor.stop();
    }
}

/// Finding 4 (rest): the keys an unlocked vault keeps for its session (the
/// vault's age identity and backup signing key) are in pages that core
/// dumps leave out (`MADV_DONTDUMP`). Root's `gcore` of the unlocked,
/// signing supervisor holds neither secret, nor the validator key it wrote
/// to tmpfs, while the vault's public recipient (ordinary heap) is there:
/// the search would find the secrets if they were dumped.
#[test]
fn a_core_of_the_unlocked_supervisor_holds_no_key() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "needs root: gcore must attach to a process that is not dumpable"
    );
    use base64::Engine;
    let fixture = VaultRpc::setup(BLOCK, PASSPHRASE, "", "");
    let supervisor = fixture.run();
    wait_for_node_state(&fixture.socket, "locked", LONG);
    fixture.unlock();
    fixture.chain.wait_signing(1, LONG);

    // The secrets, read the way an attacker with the passphrase would.
    let vault = fixture.chain.home.join("palisade").join("vault");
    let ciphertext = std::fs::read(vault.join("identity.age")).unwrap();
    let decryptor = age::Decryptor::new(&ciphertext[..]).unwrap();
    let identity = age::scrypt::Identity::new(PASSPHRASE.to_string().into());
    let mut plaintext = Vec::new();
    std::io::Read::read_to_end(
        &mut decryptor
            .decrypt(std::iter::once(&identity as &dyn age::Identity))
            .unwrap(),
        &mut plaintext,
    )
    .unwrap();
    let bundle: serde_json::Value = serde_json::from_slice(&plaintext).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let signing_seed = b64
        .decode(bundle["backup_signing_seed"].as_str().unwrap())
        .unwrap();
    let (_, data, _) = bech32::decode(bundle["age_identity"].as_str().unwrap()).unwrap();
    let age_secret: Vec<u8> = bech32::FromBase32::from_base32(&data).unwrap();
    let key_file: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fixture.tmpfs.join("priv_validator_key.json")).unwrap(),
    )
    .unwrap();
    let validator_text = key_file["priv_key"]["value"].as_str().unwrap().to_string();
    let validator_secret = b64.decode(&validator_text).unwrap();
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(vault.join("vault.json")).unwrap()).unwrap();
    let recipient = info["age_recipient"].as_str().unwrap().to_string();
    assert_eq!(signing_seed.len(), 32);
    assert_eq!(age_secret.len(), 32);

    let cores = tempfile::tempdir().unwrap();
    let prefix = cores.path().join("core");
    let pid = supervisor.child.id();
    let output = std::process::Command::new("gcore")
        .arg("-o")
        .arg(&prefix)
        .arg(pid.to_string())
        .output()
        .expect("gcore (package gdb) runs");
    let core_path = cores.path().join(format!("core.{pid}"));
    assert!(core_path.exists(), "gcore wrote no core: {output:?}");
    let core = std::fs::read(&core_path).unwrap();
    let holds = |needle: &[u8]| core.windows(needle.len()).any(|window| window == needle);
    assert!(
        holds(recipient.as_bytes()),
        "the core lacks ordinary heap contents ({} bytes): the search proves nothing",
        core.len()
    );
    for (what, secret) in [
        ("the vault's backup signing key", &signing_seed[..]),
        ("the vault's age identity", &age_secret[..]),
        ("the validator key", &validator_secret[..32]),
        ("the validator key (base64)", validator_text.as_bytes()),
        (
            "the vault's age identity (text)",
            bundle["age_identity"].as_str().unwrap().as_bytes(),
        ),
    ] {
        assert!(
            !holds(secret),
            "{what} is in the core of the unlocked supervisor"
        );
    }
    supervisor.stop();
}
