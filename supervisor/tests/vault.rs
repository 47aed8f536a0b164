//! Key vault end to end: init, unlock, import, tmpfs materialization, wipe,
//! crash leftovers, recovery recipients — and a scan proving no plaintext key
//! is left on persistent disk (safety invariant 3).

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use palisade_simchain::key::ValidatorKey;
use palisade_supervisor::vault::{
    self, IDENTITY_FILE, INFO_FILE, KEYS_DIR, KeyKind, TmpfsKeys, UnlockedVault, VaultError,
    WorkFactor,
};
use secrecy::{ExposeSecret, SecretString};
use tempfile::TempDir;

const CONFIG_TOML: &str = r#"# This is a TOML config file.
# For more information, see https://github.com/toml-lang/toml

proxy_app = "tcp://127.0.0.1:26658"
moniker = "val1"

# Path to the JSON file containing the private key to use as a validator in the consensus protocol
priv_validator_key_file = "config/priv_validator_key.json"

# Path to the JSON file containing the last sign state of a validator
priv_validator_state_file = "data/priv_validator_state.json"

# Path to the JSON file containing the private key to use for node authentication in the p2p protocol
node_key_file = "config/node_key.json"   # keep me

[rpc]
# TCP or UNIX socket address for the RPC server to listen on
laddr = "tcp://127.0.0.1:26657"
"#;

/// Tests only: the lowest scrypt work factor, so unlocks take milliseconds.
fn work_factor() -> WorkFactor {
    WorkFactor::new(10).unwrap()
}

fn passphrase() -> SecretString {
    SecretString::from("correct horse battery staple")
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

/// A daemon home with config/config.toml and both plaintext key files, plus
/// the keys' private bytes for the scans.
struct Fixture {
    root: TempDir,
    validator: ValidatorKey,
    node: ValidatorKey,
}

impl Fixture {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let fixture = Self {
            root,
            validator: ValidatorKey::generate(),
            node: ValidatorKey::generate(),
        };
        fs::create_dir_all(fixture.home().join("config")).unwrap();
        fs::write(fixture.config_toml(), CONFIG_TOML).unwrap();
        fs::set_permissions(fixture.config_toml(), fs::Permissions::from_mode(0o640)).unwrap();
        fixture
            .validator
            .save(&fixture.key_path(KeyKind::PrivValidatorKey))
            .unwrap();
        fixture
            .node
            .save_as_node_key(&fixture.key_path(KeyKind::NodeKey))
            .unwrap();
        fixture
    }

    fn home(&self) -> PathBuf {
        self.root.path().join("home")
    }

    fn vault_dir(&self) -> PathBuf {
        self.home().join("palisade").join("vault")
    }

    fn config_toml(&self) -> PathBuf {
        self.home().join("config").join("config.toml")
    }

    fn key_path(&self, kind: KeyKind) -> PathBuf {
        self.home().join("config").join(kind.file_name())
    }

    fn init(&self, recovery: &[String]) -> UnlockedVault {
        vault::init_vault(&self.vault_dir(), &passphrase(), work_factor(), recovery).unwrap();
        vault::unlock(&self.vault_dir(), &passphrase()).unwrap()
    }

    fn import_both(&self, unlocked: &mut UnlockedVault) {
        let report = vault::import_key_files(
            unlocked,
            &[
                (
                    KeyKind::PrivValidatorKey,
                    self.key_path(KeyKind::PrivValidatorKey),
                ),
                (KeyKind::NodeKey, self.key_path(KeyKind::NodeKey)),
            ],
        )
        .unwrap();
        assert_eq!(report.imported.len(), 2);
        assert!(report.imported.iter().all(|key| key.original_removed));
    }

    /// Byte strings that must never appear on persistent disk: for each key,
    /// the 64 decoded private bytes, the 32-byte seed, and the base64 text.
    fn secret_needles(&self) -> Vec<(String, Vec<u8>)> {
        let mut needles = Vec::new();
        for (name, key) in [("validator", &self.validator), ("node", &self.node)] {
            let text = key.to_file().priv_key.value;
            let bytes = BASE64.decode(&text).unwrap();
            assert_eq!(bytes.len(), 64);
            needles.push((format!("{name} private key (64 bytes)"), bytes.clone()));
            needles.push((format!("{name} seed (32 bytes)"), bytes[..32].to_vec()));
            needles.push((format!("{name} private key base64"), text.into_bytes()));
        }
        needles
    }
}

/// Every file under `dir` (recursively, symlinks not followed) with its mode
/// and contents: a snapshot to compare before/after an operation.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            let metadata = fs::symlink_metadata(&path).unwrap();
            if metadata.is_dir() {
                files.insert(path.clone(), (metadata.mode(), Vec::new()));
                pending.push(path);
            } else {
                let contents = if metadata.is_file() {
                    fs::read(&path).unwrap()
                } else {
                    Vec::new()
                };
                files.insert(path, (metadata.mode(), contents));
            }
        }
    }
    files
}

/// Asserts no needle occurs in any file under any of `roots`.
fn assert_no_secret_on_disk(roots: &[&Path], needles: &[(String, Vec<u8>)]) {
    let mut scanned = 0;
    for root in roots {
        for (path, (_, contents)) in snapshot(root) {
            scanned += 1;
            for (name, needle) in needles {
                assert!(
                    !contents
                        .windows(needle.len())
                        .any(|window| window == needle.as_slice()),
                    "{name} found in {}",
                    path.display()
                );
            }
        }
    }
    assert!(scanned > 0, "the scan saw no files");
}

fn tmpfs_root() -> TempDir {
    tempfile::Builder::new()
        .prefix("palisade-vault-test-")
        .tempdir_in("/dev/shm")
        .unwrap()
}

#[test]
fn init_writes_private_files_without_secrets_and_refuses_reinit() {
    let fixture = Fixture::new();
    let dir = fixture.vault_dir();
    let info = vault::init_vault(&dir, &passphrase(), work_factor(), &[]).unwrap();
    assert_eq!(info.scrypt_work_factor, 10);
    assert!(info.age_recipient.starts_with("age1"));
    assert!(info.keys.is_empty());

    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join(KEYS_DIR)), 0o700);
    assert_eq!(mode(&dir.join(INFO_FILE)), 0o600);
    assert_eq!(mode(&dir.join(IDENTITY_FILE)), 0o600);
    let names: Vec<_> = snapshot(&dir).into_keys().collect();
    assert_eq!(
        names,
        vec![
            dir.join(IDENTITY_FILE),
            dir.join(KEYS_DIR),
            dir.join(INFO_FILE)
        ]
    );
    assert!(
        fs::read(dir.join(IDENTITY_FILE))
            .unwrap()
            .starts_with(b"age-encryption.org/v1\n")
    );

    // vault.json is public: no identity, no signing seed.
    let unlocked = vault::unlock(&dir, &passphrase()).unwrap();
    let json = fs::read_to_string(dir.join(INFO_FILE)).unwrap();
    let identity_text = unlocked.age_identity().to_string();
    assert!(!json.contains("AGE-SECRET-KEY"));
    assert!(!json.contains(identity_text.expose_secret()));
    let seed = unlocked.signing_key().to_bytes();
    assert!(!json.contains(&BASE64.encode(seed)));
    assert!(!json.contains(&hex::encode(seed)));
    assert_eq!(vault::read_info(&dir).unwrap(), info);
    assert_eq!(unlocked.info(), &info);
    assert_eq!(unlocked.recipient().to_string(), info.age_recipient);
    assert_eq!(
        BASE64.encode(unlocked.verifying_key().to_bytes()),
        info.backup_verifying_key
    );

    // Debug never shows secrets.
    let debug = format!("{unlocked:?}");
    assert!(debug.contains("REDACTED"));
    assert!(!debug.contains("AGE-SECRET-KEY"));
    assert!(!format!("{:?}", passphrase()).contains("horse"));

    let before = snapshot(&dir);
    let error =
        vault::init_vault(&dir, &SecretString::from("other"), work_factor(), &[]).unwrap_err();
    assert!(
        matches!(error, VaultError::AlreadyInitialized { ref path } if path == &dir.join(INFO_FILE)),
        "{error}"
    );
    assert_eq!(snapshot(&dir), before);
}

#[test]
fn bad_recovery_recipients_are_listed_by_value_and_nothing_is_created() {
    let fixture = Fixture::new();
    let good = age::x25519::Identity::generate().to_public().to_string();
    let secret = age::x25519::Identity::generate()
        .to_string()
        .expose_secret()
        .to_string();
    let recipients = vec![
        "age1bogus".to_string(),
        good,
        "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ op@laptop".to_string(),
        secret.clone(),
    ];
    let error = vault::init_vault(
        &fixture.vault_dir(),
        &passphrase(),
        work_factor(),
        &recipients,
    )
    .unwrap_err();
    let VaultError::InvalidRecoveryRecipients { ref invalid } = error else {
        panic!("unexpected error {error}");
    };
    let values: Vec<&str> = invalid.iter().map(|entry| entry.value.as_str()).collect();
    assert_eq!(
        values,
        vec![
            "age1bogus",
            "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ op@laptop",
            "<secret key, not shown>"
        ]
    );
    let message = error.to_string();
    assert!(
        message.contains("age1bogus") && message.contains("ssh-rsa"),
        "{message}"
    );
    assert!(!message.contains(&secret));
    assert!(!fixture.vault_dir().exists());

    let error = vault::init_vault(
        &fixture.vault_dir(),
        &SecretString::from("  "),
        work_factor(),
        &[],
    )
    .unwrap_err();
    assert!(matches!(error, VaultError::EmptyPassphrase), "{error}");
    assert!(!fixture.vault_dir().exists());
}

#[test]
fn wrong_passphrase_is_reported_and_changes_nothing() {
    let fixture = Fixture::new();
    let mut unlocked = fixture.init(&[]);
    fixture.import_both(&mut unlocked);
    let dir = fixture.vault_dir();
    let before = snapshot(&dir);

    let wrong = SecretString::from("wrong horse battery staple");
    let error = vault::unlock(&dir, &wrong).unwrap_err();
    assert!(
        matches!(error, VaultError::WrongPassphrase { ref path } if path == &dir.join(IDENTITY_FILE)),
        "{error}"
    );
    assert!(!error.to_string().contains("wrong horse"));
    assert_eq!(snapshot(&dir), before);

    // Distinct from corrupt and missing files.
    let identity = dir.join(IDENTITY_FILE);
    let original = fs::read(&identity).unwrap();
    let mut truncated = original.clone();
    truncated.truncate(original.len() - 10);
    fs::write(&identity, &truncated).unwrap();
    let error = vault::unlock(&dir, &passphrase()).unwrap_err();
    assert!(matches!(error, VaultError::Corrupt { .. }), "{error}");
    fs::write(&identity, b"not an age file").unwrap();
    let error = vault::unlock(&dir, &passphrase()).unwrap_err();
    assert!(matches!(error, VaultError::Corrupt { .. }), "{error}");
    fs::remove_file(&identity).unwrap();
    let error = vault::unlock(&dir, &passphrase()).unwrap_err();
    assert!(
        matches!(error, VaultError::MissingFile { ref path } if path == &identity),
        "{error}"
    );
    fs::write(&identity, &original).unwrap();
    vault::unlock(&dir, &passphrase()).unwrap();

    let error = vault::unlock(&fixture.root.path().join("nowhere"), &passphrase()).unwrap_err();
    assert!(
        matches!(error, VaultError::NotInitialized { .. }),
        "{error}"
    );
}

#[test]
fn tampered_metadata_is_detected_at_unlock() {
    let fixture = Fixture::new();
    let honest = age::x25519::Identity::generate().to_public().to_string();
    fixture.init(std::slice::from_ref(&honest));
    let info_path = fixture.vault_dir().join(INFO_FILE);
    let original = fs::read_to_string(&info_path).unwrap();

    // An attacker swaps the recovery recipient to receive every backup.
    let attacker = age::x25519::Identity::generate().to_public().to_string();
    fs::write(&info_path, original.replace(&honest, &attacker)).unwrap();
    let error = vault::unlock(&fixture.vault_dir(), &passphrase()).unwrap_err();
    assert!(
        matches!(
            error,
            VaultError::MetadataMismatch {
                field: "recovery_recipients",
                ..
            }
        ),
        "{error}"
    );

    // ... or the vault recipient itself.
    let info = vault::read_info(&fixture.vault_dir()).unwrap();
    fs::write(&info_path, original.replace(&info.age_recipient, &attacker)).unwrap();
    let error = vault::unlock(&fixture.vault_dir(), &passphrase()).unwrap_err();
    assert!(
        matches!(
            error,
            VaultError::MetadataMismatch {
                field: "age_recipient",
                ..
            }
        ),
        "{error}"
    );
    fs::write(&info_path, &original).unwrap();
    vault::unlock(&fixture.vault_dir(), &passphrase()).unwrap();
}

#[test]
fn import_destroys_originals_and_decrypts_back_to_the_same_bytes() {
    let fixture = Fixture::new();
    let mut unlocked = fixture.init(&[]);
    let originals: Vec<(KeyKind, Vec<u8>)> = KeyKind::ALL
        .iter()
        .map(|kind| (*kind, fs::read(fixture.key_path(*kind)).unwrap()))
        .collect();
    let report = vault::import_key_files(
        &mut unlocked,
        &[
            (
                KeyKind::PrivValidatorKey,
                fixture.key_path(KeyKind::PrivValidatorKey),
            ),
            (KeyKind::NodeKey, fixture.key_path(KeyKind::NodeKey)),
        ],
    )
    .unwrap();
    for (entry, kind) in report.imported.iter().zip(KeyKind::ALL) {
        assert_eq!(entry.kind, kind);
        assert_eq!(entry.original, fixture.key_path(kind));
        assert!(entry.original_removed);
        assert_eq!(mode(&entry.stored), 0o600);
    }
    assert!(
        report
            .to_string()
            .contains("overwritten with zeros and removed")
    );
    for (kind, original) in &originals {
        assert!(
            !fixture.key_path(*kind).exists(),
            "{kind} original still present"
        );
        assert_eq!(
            unlocked.decrypt_key(*kind).unwrap().as_slice(),
            original.as_slice()
        );
    }
    assert_eq!(unlocked.info().keys, KeyKind::ALL.to_vec());
    assert_eq!(
        vault::read_info(&fixture.vault_dir()).unwrap().keys,
        KeyKind::ALL.to_vec()
    );

    // A fresh unlock sees the same keys.
    let again = vault::unlock(&fixture.vault_dir(), &passphrase()).unwrap();
    for (kind, original) in &originals {
        assert_eq!(
            again.decrypt_key(*kind).unwrap().as_slice(),
            original.as_slice()
        );
    }
    assert_no_secret_on_disk(&[&fixture.home()], &fixture.secret_needles());
}

#[test]
fn malformed_key_files_are_refused_and_left_in_place() {
    let fixture = Fixture::new();
    let mut unlocked = fixture.init(&[]);
    let node_path = fixture.key_path(KeyKind::NodeKey);
    let validator_path = fixture.key_path(KeyKind::PrivValidatorKey);

    // A node_key.json given as a priv_validator_key.json: missing fields.
    let keys_dir = fixture.vault_dir().join(KEYS_DIR);
    let cases: Vec<(KeyKind, Vec<u8>, &str)> = vec![
        (
            KeyKind::PrivValidatorKey,
            fs::read(&node_path).unwrap(),
            "missing field `address`",
        ),
        (
            KeyKind::NodeKey,
            b"{\"priv_key\": 42}".to_vec(),
            "expected types",
        ),
        (
            KeyKind::NodeKey,
            b"not json at all".to_vec(),
            "not valid JSON",
        ),
        (
            KeyKind::PrivValidatorKey,
            fs::read_to_string(&validator_path)
                .unwrap()
                .replace("tendermint/PrivKeyEd25519", "tendermint/PrivKeySecp256k1")
                .into_bytes(),
            "priv_key.type",
        ),
    ];
    let bad_path = fixture.home().join("config").join("bad.json");
    for (kind, contents, expected) in cases {
        fs::write(&bad_path, &contents).unwrap();
        let vault_before = snapshot(&fixture.vault_dir());
        // The valid file given alongside is not imported either: all or nothing.
        let other = if kind == KeyKind::NodeKey {
            KeyKind::PrivValidatorKey
        } else {
            KeyKind::NodeKey
        };
        let error = vault::import_key_files(
            &mut unlocked,
            &[(other, fixture.key_path(other)), (kind, bad_path.clone())],
        )
        .unwrap_err();
        assert!(
            matches!(&error, VaultError::InvalidKeyFile { kind: k, path, reason } if *k == kind && path == &bad_path && reason.contains(expected)),
            "{error}"
        );
        assert_eq!(fs::read(&bad_path).unwrap(), contents);
        assert!(fixture.key_path(other).exists());
        assert_eq!(snapshot(&fixture.vault_dir()), vault_before);
        assert_eq!(fs::read_dir(&keys_dir).unwrap().count(), 0);
        assert!(unlocked.info().keys.is_empty());
    }

    // Symlinks are refused rather than followed.
    let link = fixture.home().join("link.json");
    std::os::unix::fs::symlink(&validator_path, &link).unwrap();
    let error =
        vault::import_key_files(&mut unlocked, &[(KeyKind::PrivValidatorKey, link)]).unwrap_err();
    assert!(
        matches!(error, VaultError::NotRegularFile { .. }),
        "{error}"
    );
    assert!(validator_path.exists());
}

#[test]
fn duplicate_imports_are_refused() {
    let fixture = Fixture::new();
    let mut unlocked = fixture.init(&[]);
    let validator_path = fixture.key_path(KeyKind::PrivValidatorKey);
    let error = vault::import_key_files(
        &mut unlocked,
        &[
            (KeyKind::PrivValidatorKey, validator_path.clone()),
            (KeyKind::PrivValidatorKey, validator_path.clone()),
        ],
    )
    .unwrap_err();
    assert!(
        matches!(
            error,
            VaultError::DuplicateKeyKind {
                kind: KeyKind::PrivValidatorKey
            }
        ),
        "{error}"
    );
    assert!(validator_path.exists());

    let mut stale = vault::unlock(&fixture.vault_dir(), &passphrase()).unwrap();
    vault::import_key_files(
        &mut unlocked,
        &[(KeyKind::PrivValidatorKey, validator_path.clone())],
    )
    .unwrap();
    let stored_before = fs::read(unlocked.key_path(KeyKind::PrivValidatorKey)).unwrap();

    // A second validator key would silently replace the first: refused.
    ValidatorKey::generate().save(&validator_path).unwrap();
    let replacement = fs::read(&validator_path).unwrap();
    let error = vault::import_key_files(
        &mut unlocked,
        &[(KeyKind::PrivValidatorKey, validator_path.clone())],
    )
    .unwrap_err();
    assert!(
        matches!(
            error,
            VaultError::KeyAlreadyImported {
                kind: KeyKind::PrivValidatorKey,
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(fs::read(&validator_path).unwrap(), replacement);
    assert_eq!(
        fs::read(unlocked.key_path(KeyKind::PrivValidatorKey)).unwrap(),
        stored_before
    );

    // A second handle unlocked before the import does not know about it:
    // the existing encrypted file still stops it.
    let error = vault::import_key_files(
        &mut stale,
        &[(KeyKind::PrivValidatorKey, validator_path.clone())],
    )
    .unwrap_err();
    assert!(
        matches!(error, VaultError::KeyAlreadyImported { .. }),
        "{error}"
    );
    assert_eq!(fs::read(&validator_path).unwrap(), replacement);
}

#[test]
fn materialize_into_tmpfs_edits_config_and_wipe_leaves_nothing() {
    let fixture = Fixture::new();
    let mut unlocked = fixture.init(&[]);
    fixture.import_both(&mut unlocked);
    let shm = tmpfs_root();
    let tmpfs_dir = shm.path().join("keys");

    let keys = vault::materialize(&unlocked, &tmpfs_dir, &fixture.home(), None).unwrap();
    assert_eq!(keys.dir(), fs::canonicalize(&tmpfs_dir).unwrap());
    assert_eq!(mode(&tmpfs_dir), 0o700);
    for kind in KeyKind::ALL {
        let path = keys.path(kind).unwrap();
        assert_eq!(path, tmpfs_dir.join(kind.file_name()));
        assert_eq!(mode(path), 0o600);
        assert_eq!(
            fs::read(path).unwrap(),
            unlocked.decrypt_key(kind).unwrap().as_slice()
        );
    }
    assert!(!format!("{keys:?}").contains("PrivKeyEd25519"));

    let config = fs::read_to_string(fixture.config_toml()).unwrap();
    let expected = CONFIG_TOML
        .replace(
            "priv_validator_key_file = \"config/priv_validator_key.json\"",
            &format!(
                "priv_validator_key_file = \"{}\"",
                tmpfs_dir.join("priv_validator_key.json").display()
            ),
        )
        .replace(
            "node_key_file = \"config/node_key.json\"",
            &format!(
                "node_key_file = \"{}\"",
                tmpfs_dir.join("node_key.json").display()
            ),
        );
    assert_eq!(
        config, expected,
        "only the two values change; comments and layout stay"
    );
    assert_eq!(
        mode(&fixture.config_toml()),
        0o640,
        "config.toml keeps its mode"
    );
    let config_dir_entries: Vec<_> = fs::read_dir(fixture.home().join("config"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        config_dir_entries,
        vec!["config.toml".to_string()],
        "no temp files left"
    );

    let wiped = keys.wipe().unwrap();
    assert_eq!(
        wiped,
        vec![
            tmpfs_dir.join("node_key.json"),
            tmpfs_dir.join("priv_validator_key.json")
        ]
    );
    assert!(!tmpfs_dir.exists());
    assert_eq!(fs::read_dir(shm.path()).unwrap().count(), 0);
    // config.toml still points at the (now empty) tmpfs paths: a node
    // started without Palisade finds no key rather than a stale one.
    assert_eq!(fs::read_to_string(fixture.config_toml()).unwrap(), expected);

    // Materializing again works (config unchanged this time).
    let keys = vault::materialize(&unlocked, &tmpfs_dir, &fixture.home(), None).unwrap();
    drop(keys); // Drop wipes as a fallback.
    assert!(!tmpfs_dir.exists());
}

#[test]
fn materialize_refuses_a_disk_filesystem_and_changes_nothing() {
    let fixture = Fixture::new();
    let mut unlocked = fixture.init(&[]);
    fixture.import_both(&mut unlocked);
    let disk_dir = fixture.root.path().join("not-tmpfs").join("keys");
    let config_before = fs::read(fixture.config_toml()).unwrap();

    let error = vault::materialize(&unlocked, &disk_dir, &fixture.home(), None).unwrap_err();
    let VaultError::NotTmpfs {
        ref path,
        ref filesystem,
    } = error
    else {
        panic!("unexpected error {error}");
    };
    assert_eq!(path.as_path(), fixture.root.path());
    assert!(!filesystem.contains("tmpfs"), "{filesystem}");
    let message = error.to_string();
    assert!(
        message.contains(&fixture.root.path().display().to_string())
            && message.contains("not tmpfs"),
        "{message}"
    );
    assert!(!disk_dir.exists() && !disk_dir.parent().unwrap().exists());
    assert_eq!(fs::read(fixture.config_toml()).unwrap(), config_before);

    // A group-readable tmpfs directory is refused too.
    let shm = tmpfs_root();
    let shared = shm.path().join("shared");
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o750)).unwrap();
    let error = vault::materialize(&unlocked, &shared, &fixture.home(), None).unwrap_err();
    assert!(
        matches!(error, VaultError::InsecureDirectory { .. }),
        "{error}"
    );
    assert_eq!(fs::read_dir(&shared).unwrap().count(), 0);

    // A broken config.toml is refused before any key is written.
    fs::write(fixture.config_toml(), "moniker = [unclosed").unwrap();
    let tmpfs_dir = shm.path().join("keys");
    let error = vault::materialize(&unlocked, &tmpfs_dir, &fixture.home(), None).unwrap_err();
    assert!(matches!(error, VaultError::Config { .. }), "{error}");
    assert!(!tmpfs_dir.exists());
}

#[test]
fn wipe_leftovers_cleans_up_after_a_crash() {
    let fixture = Fixture::new();
    let mut unlocked = fixture.init(&[]);
    fixture.import_both(&mut unlocked);
    let shm = tmpfs_root();
    let tmpfs_dir = shm.path().join("keys");

    assert_eq!(
        vault::wipe_leftovers(&tmpfs_dir).unwrap(),
        Vec::<PathBuf>::new()
    );
    // Simulated SIGKILL: neither wipe() nor Drop runs.
    let keys: TmpfsKeys = vault::materialize(&unlocked, &tmpfs_dir, &fixture.home(), None).unwrap();
    std::mem::forget(keys);
    assert!(tmpfs_dir.join("priv_validator_key.json").exists());

    // Materializing over leftovers is refused.
    let error = vault::materialize(&unlocked, &tmpfs_dir, &fixture.home(), None).unwrap_err();
    assert!(
        matches!(error, VaultError::TmpfsFileExists { .. }),
        "{error}"
    );

    // A hard link (same filesystem) lets the test see what the wipe did to the bytes.
    let witness = shm.path().join("witness");
    fs::hard_link(tmpfs_dir.join("priv_validator_key.json"), &witness).unwrap();
    let length = fs::metadata(&witness).unwrap().len() as usize;

    let wiped = vault::wipe_leftovers(&tmpfs_dir).unwrap();
    assert_eq!(
        wiped,
        vec![
            tmpfs_dir.join("node_key.json"),
            tmpfs_dir.join("priv_validator_key.json")
        ]
    );
    assert!(!tmpfs_dir.exists());
    assert_eq!(fs::read(&witness).unwrap(), vec![0u8; length]);
    fs::remove_file(&witness).unwrap();

    // Without Palisade's marker only the known key names are touched.
    fs::create_dir(&tmpfs_dir).unwrap();
    fs::write(tmpfs_dir.join("node_key.json"), b"leftover").unwrap();
    fs::write(tmpfs_dir.join("unrelated"), b"keep me").unwrap();
    let wiped = vault::wipe_leftovers(&tmpfs_dir).unwrap();
    assert_eq!(wiped, vec![tmpfs_dir.join("node_key.json")]);
    assert_eq!(fs::read(tmpfs_dir.join("unrelated")).unwrap(), b"keep me");
}

#[test]
fn no_plaintext_key_reaches_persistent_disk() {
    let fixture = Fixture::new();
    let mut unlocked = fixture.init(&[]);
    fixture.import_both(&mut unlocked);
    let shm = tmpfs_root();
    let tmpfs_dir = shm.path().join("keys");
    let keys = vault::materialize(&unlocked, &tmpfs_dir, &fixture.home(), None).unwrap();
    // Sanity check of the scanner: the tmpfs copy does contain the needles.
    let needles = fixture.secret_needles();
    let tmpfs_copy = fs::read(keys.path(KeyKind::PrivValidatorKey).unwrap()).unwrap();
    assert!(
        tmpfs_copy
            .windows(needles[2].1.len())
            .any(|window| window == needles[2].1.as_slice())
    );
    keys.wipe().unwrap();

    assert_no_secret_on_disk(
        &[&fixture.home(), &fixture.vault_dir(), shm.path()],
        &needles,
    );
    assert_eq!(fs::read_dir(shm.path()).unwrap().count(), 0);
}

#[test]
fn backups_to_backup_recipients_decrypt_with_the_recovery_identity() {
    let fixture = Fixture::new();
    let recovery_identity = age::x25519::Identity::generate();
    let ssh_line = {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let mut blob = Vec::new();
        blob.extend(11u32.to_be_bytes());
        blob.extend(b"ssh-ed25519");
        blob.extend(32u32.to_be_bytes());
        blob.extend(key.verifying_key().to_bytes());
        format!("ssh-ed25519 {} ops@recovery", BASE64.encode(blob))
    };
    let unlocked = fixture.init(&[recovery_identity.to_public().to_string(), ssh_line]);
    assert_eq!(unlocked.recovery_recipients().unwrap().len(), 2);
    let recipients = unlocked.backup_recipients().unwrap();
    assert_eq!(recipients.len(), 3);

    let blob = b"signed backup payload".to_vec();
    let encryptor = age::Encryptor::with_recipients(
        recipients.iter().map(|r| r.as_ref() as &dyn age::Recipient),
    )
    .unwrap();
    let mut ciphertext = Vec::new();
    let mut writer = encryptor.wrap_output(&mut ciphertext).unwrap();
    writer.write_all(&blob).unwrap();
    writer.finish().unwrap();

    for identity in [&recovery_identity, unlocked.age_identity()] {
        let decryptor = age::Decryptor::new(&ciphertext[..]).unwrap();
        let mut plaintext = Vec::new();
        decryptor
            .decrypt(std::iter::once(identity as &dyn age::Identity))
            .unwrap()
            .read_to_end(&mut plaintext)
            .unwrap();
        assert_eq!(plaintext, blob);
    }

    // The stock age CLI (Debian package `age`) decrypts with the recovery identity.
    let shm = tmpfs_root();
    let identity_file = shm.path().join("recovery.txt");
    fs::write(
        &identity_file,
        recovery_identity.to_string().expose_secret(),
    )
    .unwrap();
    let encrypted_file = shm.path().join("backup.age");
    fs::write(&encrypted_file, &ciphertext).unwrap();
    match Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&identity_file)
        .arg(&encrypted_file)
        .output()
    {
        Ok(output) => {
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            assert_eq!(output.stdout, blob);
        }
        Err(error) => panic!("the age CLI is required (apt-get install age): {error}"),
    }
    assert!(age::x25519::Recipient::from_str(&unlocked.info().recovery_recipients[0]).is_ok());
}
