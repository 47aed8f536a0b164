//! End-to-end: the key vault, the sign-state start rule and backups, with
//! the real supervisor, the simulated chain and the stock `age` CLI.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use common::timing::{BLOCK, LONG};
use common::{
    Chain, Supervisor, default_socket, process_alive, wait_for_node_state, wait_for_status,
    wait_until,
};

const PASSPHRASE: &str = "correct horse battery staple";

/// A chain plus a vault configuration: tmpfs dir in a private dir under /dev/shm, two
/// backup stores, a recovery identity made with the stock `age-keygen`.
struct Vaulted {
    chain: Chain,
    config: PathBuf,
    passphrase_file: PathBuf,
    tmpfs: PathBuf,
    stores: [PathBuf; 2],
    recovery_key: PathBuf,
    /// Secret key material to scan for: raw bytes and their base64.
    secrets: Vec<Vec<u8>>,
    /// The tmpfs dir's private parent.
    _shm: tempfile::TempDir,
}

impl Drop for Vaulted {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.tmpfs);
    }
}

fn key_secrets(path: &Path) -> Vec<Vec<u8>> {
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let text = json["priv_key"]["value"].as_str().unwrap().to_string();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&text)
        .unwrap();
    // The seed half alone is what matters most.
    vec![text.into_bytes(), raw[..32].to_vec()]
}

fn setup(passphrase_in_config: bool) -> Vaulted {
    let chain = Chain::start(&[], BLOCK);
    let dir = chain.dir.path();
    let mut secrets = key_secrets(&chain.home.join("config/priv_validator_key.json"));
    secrets.extend(key_secrets(&chain.home.join("config/node_key.json")));
    let passphrase_file = dir.join("passphrase");
    std::fs::write(&passphrase_file, format!("{PASSPHRASE}\n")).unwrap();
    std::fs::set_permissions(&passphrase_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let recovery_key = dir.join("recovery.key");
    let output = Command::new("age-keygen")
        .arg("-o")
        .arg(&recovery_key)
        .output()
        .expect("age-keygen (Debian package age) is required");
    assert!(output.status.success(), "{output:?}");
    let recipient = String::from_utf8_lossy(&output.stderr)
        .trim()
        .trim_start_matches("Public key: ")
        .to_string();
    let shm = common::private_shm_dir();
    let tmpfs = shm.path().join("keys");
    let stores = [dir.join("store-a"), dir.join("store-b")];
    let config = dir.join("palisade.toml");
    std::fs::write(
        &config,
        format!(
            "[vault]\nswap = \"warn\"\ntmpfs-dir = {tmpfs:?}\nscrypt-work-factor = 10\n\
             recovery-recipients = [{recipient:?}]\n{}\
             [backup]\ndir = {:?}\nextra-dirs = [{:?}]\ndebounce = \"100ms\"\nchain-id = \"sim-1\"\n",
            if passphrase_in_config {
                format!("passphrase-file = {passphrase_file:?}\n")
            } else {
                String::new()
            },
            stores[0],
            stores[1],
        ),
    )
    .unwrap();
    Vaulted {
        chain,
        config,
        passphrase_file,
        tmpfs,
        stores,
        recovery_key,
        secrets,
        _shm: shm,
    }
}

impl Vaulted {
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![(
            "PALISADE_CONFIG",
            self.config.to_string_lossy().into_owned(),
        )]
    }

    fn command(&self, args: &[&str]) -> std::process::Output {
        let env = self.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.chain
            .supervisor_command(&env)
            .args(args)
            .output()
            .unwrap()
    }

    /// The control socket (the default one: the config has no `[rpc]`).
    fn socket(&self) -> PathBuf {
        default_socket(&self.chain.home)
    }

    fn run(&self) -> Supervisor {
        let env = self.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.chain.run_supervisor(&env)
    }

    fn init_vault(&self) -> String {
        let output = self.command(&[
            "init-vault",
            "--passphrase-file",
            self.passphrase_file.to_str().unwrap(),
        ]);
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn backups(&self, store: usize) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.stores[store])
            .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.retain(|path| path.extension().is_some_and(|ext| ext == "age"));
        files.sort();
        files
    }

    /// No secret byte sequence in any file under `root`.
    fn assert_no_secrets_under(&self, root: &Path) {
        for entry in walk(root) {
            let Ok(bytes) = std::fs::read(&entry) else {
                continue;
            };
            for secret in &self.secrets {
                assert!(
                    !bytes
                        .windows(secret.len())
                        .any(|window| window == secret.as_slice()),
                    "key material found in {}",
                    entry.display()
                );
            }
        }
    }

    fn assert_no_secrets_in(&self, text: &str) {
        for secret in &self.secrets {
            assert!(
                !text
                    .as_bytes()
                    .windows(secret.len())
                    .any(|w| w == secret.as_slice()),
                "key material in output"
            );
        }
    }
}

fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                out.push(path);
            }
        }
    }
    out
}

fn tmpfs_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[test]
fn full_lifecycle_locked_unlock_sign_from_tmpfs_backup_stop_and_crash_recovery() {
    let vaulted = setup(false);
    let home = &vaulted.chain.home;

    // init-vault imports both keys and removes the plaintext originals.
    let said = vaulted.init_vault();
    assert!(said.contains("removed"), "{said}");
    assert!(!home.join("config/priv_validator_key.json").exists());
    assert!(!home.join("config/node_key.json").exists());

    // Without a passphrase source the supervisor stays locked: no gaiad,
    // and no vote while the chain goes on.
    let supervisor = vaulted.run();
    wait_for_node_state(&vaulted.socket(), "locked", LONG);
    let record = vaulted.chain.network.record().unwrap();
    vaulted
        .chain
        .network
        .wait_for_height(record.height + 3, LONG)
        .unwrap();
    assert!(
        supervisor.children().is_empty(),
        "gaiad started while locked"
    );
    assert_eq!(
        vaulted.chain.network.record().unwrap().validators["val1"].signed_heights,
        record.validators["val1"].signed_heights,
        "signed while locked"
    );
    assert_eq!(
        common::node_state(&vaulted.socket()).as_deref(),
        Some("locked")
    );
    supervisor.stop();

    // With the passphrase (inherited descriptor) it unlocks and signs with
    // keys from tmpfs.
    let supervisor = run_with_passphrase_fd(&vaulted);
    wait_for_status(&vaulted.socket(), LONG, "the vault unlocked", |status| {
        status["vault"]["locked"] == false
    });
    vaulted.chain.wait_signing(3, LONG);
    let config = std::fs::read_to_string(home.join("config/config.toml")).unwrap();
    assert!(
        config.contains(&format!(
            "{}/priv_validator_key.json",
            vaulted.tmpfs.display()
        )),
        "config.toml not pointed at tmpfs:\n{config}"
    );
    let mode = std::fs::metadata(&vaulted.tmpfs)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700);
    for file in tmpfs_files(&vaulted.tmpfs) {
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", file.display());
    }
    // Backups land in both stores as the watermark moves.
    wait_until(LONG, "backups in both stores", || {
        !vaulted.backups(0).is_empty() && !vaulted.backups(1).is_empty()
    });
    // And on demand.
    supervisor.signal("USR1");
    supervisor.wait_for_line("reason=\"on demand (SIGUSR1)\"", LONG);
    let output = supervisor.stop();
    assert!(
        tmpfs_files(&vaulted.tmpfs).is_empty(),
        "keys left in tmpfs after stop"
    );
    vaulted.assert_no_secrets_in(&output);

    // The stock age CLI opens a backup with the recovery identity.
    let newest = vaulted.backups(0).pop().unwrap();
    let decrypted = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&vaulted.recovery_key)
        .arg(&newest)
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(decrypted.status.success(), "{decrypted:?}");
    let listing = Command::new("tar")
        .arg("-t")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(&decrypted.stdout)?;
            child.wait_with_output()
        })
        .unwrap();
    let names = String::from_utf8_lossy(&listing.stdout);
    for name in [
        "metadata.json",
        "priv_validator_state.json",
        "priv_validator_key.json",
    ] {
        assert!(names.contains(name), "{name} missing from {names}");
    }

    // kill -9: the daemon dies with the supervisor, keys stay in tmpfs
    // until the next start wipes them before anything else.
    let mut supervisor = run_with_passphrase_fd(&vaulted);
    vaulted.chain.wait_signing(2, LONG);
    let daemon = supervisor.children();
    supervisor.signal("KILL");
    supervisor.wait_exit(LONG);
    wait_until(Duration::from_secs(5), "the daemon to die", || {
        daemon.iter().all(|pid| !process_alive(*pid))
    });
    assert!(!tmpfs_files(&vaulted.tmpfs).is_empty());
    // The wipe comes before the control socket, which answers only once
    // the supervisor is locked and waiting.
    let supervisor = vaulted.run();
    wait_for_node_state(&vaulted.socket(), "locked", LONG);
    assert!(tmpfs_files(&vaulted.tmpfs).is_empty());
    // The operator learns that the last run did not stop cleanly.
    supervisor.wait_for_line("wiped leftover keys", LONG);
    let output = supervisor.stop();
    vaulted.assert_no_secrets_in(&output);

    // Nothing of the keys reached persistent disk through Palisade.
    vaulted.assert_no_secrets_under(home);
    vaulted.assert_no_secrets_under(vaulted.chain.dir.path());
    vaulted.chain.assert_no_double_sign();
}

/// Run with the passphrase on an inherited pipe, as `--passphrase-fd 3`.
/// `bash` moves the pipe onto descriptor 3 and execs the supervisor (dash
/// cannot redirect descriptors above 9).
fn run_with_passphrase_fd(vaulted: &Vaulted) -> Supervisor {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let (reader, mut writer) = std::io::pipe().unwrap();
    writer.write_all(PASSPHRASE.as_bytes()).unwrap();
    drop(writer);
    let reader: std::os::fd::OwnedFd = reader.into();
    nix::fcntl::fcntl(
        &reader,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .unwrap();
    let fd = reader.as_raw_fd();
    let env = vaulted.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let template = vaulted.chain.supervisor_command(&env);
    let mut command = Command::new("/bin/bash");
    command
        .arg("-c")
        .arg(if fd == 3 {
            // Already where it should be.
            "exec \"$@\"".to_string()
        } else {
            format!("exec 3<&{fd} {fd}<&-; exec \"$@\"")
        })
        .arg("sh")
        .arg(common::SUPERVISOR)
        .args(["run", "--passphrase-fd", "3", "start", "--home"])
        .arg(&vaulted.chain.home)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in template.get_envs() {
        if let Some(value) = value {
            command.env(key, value);
        }
    }
    let supervisor = Supervisor::spawn(command);
    drop(reader);
    supervisor
}

#[test]
fn stale_local_state_with_newer_backup_refuses_then_restore_starts_higher() {
    let vaulted = setup(true);
    let home = &vaulted.chain.home;
    vaulted.init_vault();
    let state_path = home.join("data/priv_validator_state.json");

    let supervisor = vaulted.run();
    vaulted.chain.wait_signing(3, LONG);
    let stale = std::fs::read(&state_path).unwrap();
    vaulted.chain.wait_signing(6, LONG);
    wait_until(LONG, "a backup", || !vaulted.backups(0).is_empty());
    supervisor.stop();
    let newest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();

    // A rushed migration restores an old state file.
    std::fs::write(&state_path, &stale).unwrap();
    let mut supervisor = vaulted.run();
    let status = supervisor.wait_exit(LONG);
    assert_eq!(status.code(), Some(4), "{}", supervisor.output());
    let output = supervisor.output();
    assert!(output.contains("refusing to start"), "{output}");
    assert!(output.contains("local file"), "{output}");
    assert!(output.contains("backup"), "{output}");
    assert!(output.contains("restore-state"), "{output}");
    assert!(supervisor.children().is_empty());
    assert!(tmpfs_files(&vaulted.tmpfs).is_empty());
    assert_eq!(
        std::fs::read(&state_path).unwrap(),
        stale,
        "state changed by a refusal"
    );

    // The explicit, logged restore.
    let output = vaulted.command(&["restore-state"]);
    assert!(output.status.success(), "{output:?}");
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(said.contains("restored"), "{said}");
    let restored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    assert!(
        restored["height"].as_str().unwrap().parse::<u64>().unwrap()
            >= newest["height"].as_str().unwrap().parse::<u64>().unwrap()
    );

    let supervisor = vaulted.run();
    vaulted.chain.wait_signing(3, LONG);
    supervisor.stop();
    vaulted.chain.assert_no_double_sign();
}

#[test]
fn wrong_passphrase_is_a_clear_error_and_changes_nothing() {
    let vaulted = setup(true);
    vaulted.init_vault();
    let vault_dir = vaulted.chain.home.join("palisade/vault");
    let before: Vec<(PathBuf, Vec<u8>)> = walk(&vault_dir)
        .into_iter()
        .map(|path| (path.clone(), std::fs::read(&path).unwrap()))
        .collect();
    std::fs::write(&vaulted.passphrase_file, "wrong horse\n").unwrap();

    let supervisor = vaulted.run();
    // Told why, then locked and waiting for an unlock.
    supervisor.wait_for_line("wrong passphrase", LONG);
    wait_for_node_state(&vaulted.socket(), "locked", LONG);
    assert!(supervisor.children().is_empty());
    let output = supervisor.stop();
    vaulted.assert_no_secrets_in(&output);
    assert!(!output.contains("wrong horse"), "passphrase in the log");

    let output = vaulted.command(&["restore-state"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("wrong passphrase"));

    let after: Vec<(PathBuf, Vec<u8>)> = walk(&vault_dir)
        .into_iter()
        .map(|path| (path.clone(), std::fs::read(&path).unwrap()))
        .collect();
    assert_eq!(before, after, "the vault changed");
    assert!(tmpfs_files(&vaulted.tmpfs).is_empty());
}
