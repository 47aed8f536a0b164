//! Signed, encrypted backup bundles end to end: round trips, recovery with
//! the stock `age` and `tar` CLIs, one test per rejection kind (each crafted
//! the way an attacker or a broken bastion would produce it), the local
//! directory store, publishing with a store down, and gathering the best
//! bundle from several stores.
//!
//! The CLI test needs `/usr/bin/age` (Debian package `age`) and GNU tar.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::timing::OPERATION;
use ed25519_dalek::{Signer, SigningKey};
use palisade_supervisor::backup::{
    BackupFileName, BackupMetadata, BackupStore, BoxFuture, BundleInput, Expectations,
    LocalDirStore, OpenedBundle, Rejection, RejectionReason, StoreError, apply_retention,
    create_bundle, gather_and_verify, open_bundle, publish,
};
use palisade_supervisor::sign_state::{Step, Watermark};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

const CHAIN: &str = "testchain-1";
const ADDRESS: &str = "A1B2C3D4E5F60718293A4B5C6D7E8F9012345678";
const OTHER_ADDRESS: &str = "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF";

const VALIDATOR_KEY: &[u8] = br#"{
  "address": "A1B2C3D4E5F60718293A4B5C6D7E8F9012345678",
  "pub_key": {"type": "tendermint/PubKeyEd25519", "value": "cHViLWtleS1ub3QtcmVhbC1idXQtMzItYnl0ZXMhISE="},
  "priv_key": {"type": "tendermint/PrivKeyEd25519", "value": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldC0hISEhIQ=="}
}"#;
const NODE_KEY: &[u8] =
    br#"{"priv_key":{"type":"tendermint/PrivKeyEd25519","value":"bm9kZS1rZXktbm9kZS1rZXk="}}"#;

/// Keys and identity for one validator, freshly generated per test.
struct Fixture {
    signing_key: SigningKey,
    identity: age::x25519::Identity,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            signing_key: SigningKey::from_bytes(&rand::random()),
            identity: age::x25519::Identity::generate(),
        }
    }

    fn recipients(&self) -> Vec<Box<dyn age::Recipient + Send>> {
        vec![Box::new(self.identity.to_public())]
    }

    fn expectations(&self) -> Expectations {
        Expectations {
            verifying_key: self.signing_key.verifying_key(),
            chain_id: CHAIN.into(),
            validator_address: ADDRESS.into(),
            min_sequence: None,
            min_watermark: None,
        }
    }

    fn bundle(&self, input: &BundleInput) -> Vec<u8> {
        create_bundle(input, &self.signing_key, &self.recipients()).unwrap()
    }

    fn open(&self, ciphertext: &[u8]) -> Result<OpenedBundle, Rejection> {
        open_bundle(ciphertext, &self.identity, &self.expectations())
    }

    fn decrypt(&self, ciphertext: &[u8]) -> Vec<u8> {
        let decryptor = age::Decryptor::new_buffered(ciphertext).unwrap();
        let mut reader = decryptor
            .decrypt(std::iter::once(&self.identity as &dyn age::Identity))
            .unwrap();
        let mut plaintext = Vec::new();
        reader.read_to_end(&mut plaintext).unwrap();
        plaintext
    }

    /// Encrypts an arbitrary tar to our public recipient, as anyone can.
    fn encrypt(&self, plaintext: &[u8]) -> Vec<u8> {
        let recipient = self.identity.to_public();
        let encryptor =
            age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
                .unwrap();
        let mut out = Vec::new();
        let mut writer = encryptor.wrap_output(&mut out).unwrap();
        writer.write_all(plaintext).unwrap();
        writer.finish().unwrap();
        out
    }
}

fn wm(height: u64, round: u32, step: Step) -> Watermark {
    Watermark {
        height,
        round,
        step,
    }
}

fn state_json(watermark: Watermark) -> Vec<u8> {
    format!(
        "{{\n  \"height\": \"{}\",\n  \"round\": {},\n  \"step\": {},\n  \"signature\": \"c2lnbmF0dXJl\",\n  \"signbytes\": \"6B080211\"\n}}",
        watermark.height, watermark.round, watermark.step as u8
    )
    .into_bytes()
}

fn input(sequence: u64, watermark: Watermark) -> BundleInput {
    BundleInput {
        chain_id: CHAIN.into(),
        validator_address: ADDRESS.to_ascii_lowercase(),
        watermark,
        sequence,
        host_id: "validator-a".into(),
        created_at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        software_version: "0.1.0-test".into(),
        priv_validator_state: state_json(watermark),
        priv_validator_key: Some(Zeroizing::new(VALIDATOR_KEY.to_vec())),
        node_key: Some(Zeroizing::new(NODE_KEY.to_vec())),
    }
}

fn name_of(input: &BundleInput) -> String {
    input.file_name().to_string()
}

/// Tar members of a plaintext, in order.
fn tar_members(plaintext: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut archive = tar::Archive::new(plaintext);
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            let name = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            (name, data)
        })
        .collect()
}

fn build_tar(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in members {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o600);
        // Raw name bytes: `set_path` refuses `..`, which an attacker would not.
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_cksum();
        builder.append(&header, data.as_slice()).unwrap();
    }
    builder.into_inner().unwrap()
}

/// A bundle an attacker (or a bug) could produce: arbitrary metadata and
/// files, signed with `key`, encrypted to our recipient.
fn craft(
    fixture: &Fixture,
    key: &SigningKey,
    metadata: &BackupMetadata,
    files: &[(&str, Vec<u8>)],
) -> Vec<u8> {
    let metadata_json = serde_json::to_vec_pretty(metadata).unwrap();
    let signature = BASE64.encode(key.sign(&metadata_json).to_bytes());
    let mut members = vec![
        ("metadata.json".to_owned(), metadata_json),
        ("metadata.json.sig".to_owned(), signature.into_bytes()),
    ];
    members.extend(files.iter().map(|(n, d)| ((*n).to_owned(), d.clone())));
    fixture.encrypt(&build_tar(&members))
}

fn metadata_for(
    fixture: &Fixture,
    sequence: u64,
    watermark: Watermark,
    state: &[u8],
) -> BackupMetadata {
    BackupMetadata {
        format: 1,
        chain_id: CHAIN.into(),
        validator_address: ADDRESS.into(),
        watermark,
        sequence,
        host_id: "validator-a".into(),
        created_at: "2023-11-14T22:13:20Z".into(),
        software_version: "0.1.0-test".into(),
        signer: BASE64.encode(fixture.signing_key.verifying_key().to_bytes()),
        files: vec![palisade_supervisor::backup::FileEntry {
            name: "priv_validator_state.json".into(),
            sha256: hex::encode(Sha256::digest(state)),
            bytes: state.len() as u64,
        }],
    }
}

#[test]
fn round_trip_returns_every_file_and_the_signed_metadata() {
    let fixture = Fixture::new();
    let watermark = wm(1234, 1, Step::Precommit);
    let input = input(7, watermark);
    let ciphertext = fixture.bundle(&input);
    assert!(
        ciphertext.starts_with(b"age-encryption.org/v1\n"),
        "binary age, not armored"
    );

    let opened = fixture.open(&ciphertext).unwrap();
    assert_eq!(opened.state, state_json(watermark));
    assert_eq!(
        opened.priv_validator_key.as_deref().unwrap().as_slice(),
        VALIDATOR_KEY
    );
    assert_eq!(opened.node_key.as_deref().unwrap().as_slice(), NODE_KEY);
    let metadata = &opened.metadata;
    assert_eq!(metadata.format, 1);
    assert_eq!(metadata.chain_id, CHAIN);
    assert_eq!(metadata.validator_address, ADDRESS, "uppercased");
    assert_eq!(metadata.watermark, watermark);
    assert_eq!(metadata.sequence, 7);
    assert_eq!(metadata.created_at, "2023-11-14T22:13:20Z");
    assert_eq!(metadata.files.len(), 3);
    assert_eq!(
        input.file_name().to_string(),
        format!("backup-{CHAIN}-{ADDRESS}-00000000000000000007-h1234.age")
    );

    let debug = format!("{opened:?}");
    assert!(
        debug.contains("REDACTED") && !debug.contains("c2VjcmV0"),
        "{debug}"
    );
}

#[test]
fn round_trip_with_the_state_only() {
    let fixture = Fixture::new();
    let mut input = input(1, wm(0, 0, Step::None));
    input.priv_validator_key = None;
    input.node_key = None;
    let opened = fixture.open(&fixture.bundle(&input)).unwrap();
    assert!(opened.priv_validator_key.is_none() && opened.node_key.is_none());
    assert_eq!(opened.metadata.files.len(), 1);
}

#[test]
fn create_refuses_a_watermark_that_differs_from_the_state_file() {
    let fixture = Fixture::new();
    let mut input = input(1, wm(10, 0, Step::Precommit));
    input.watermark = wm(11, 0, Step::Precommit);
    let error = create_bundle(&input, &fixture.signing_key, &fixture.recipients()).unwrap_err();
    assert!(error.to_string().contains("differs"), "{error}");
}

#[test]
fn stock_age_and_tar_recover_the_bundle_by_hand() {
    let fixture = Fixture::new();
    let watermark = wm(500, 0, Step::Prevote);
    let dir = tempfile::tempdir().unwrap();
    let bundle_path = dir.path().join("bundle.age");
    std::fs::write(&bundle_path, fixture.bundle(&input(3, watermark))).unwrap();
    let key_path = dir.path().join("recovery.key");
    std::fs::write(
        &key_path,
        format!("{}\n", fixture.identity.to_string().expose_secret()),
    )
    .unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();

    let run = |script: &str| {
        let output = Command::new("bash")
            .args(["-o", "pipefail", "-c", script])
            .current_dir(dir.path())
            .output()
            .expect("bash runs");
        assert!(
            output.status.success(),
            "{script} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    // Decrypt to a file, as docs/backup-format.md says: piping into tar can
    // end with age writing the zero padding into a pipe tar has closed.
    run("age -d -i recovery.key -o bundle.tar bundle.age");
    let listing = run("tar -tf bundle.tar");
    assert_eq!(
        listing.lines().collect::<Vec<_>>(),
        [
            "metadata.json",
            "metadata.json.sig",
            "priv_validator_state.json",
            "priv_validator_key.json",
            "node_key.json"
        ]
    );
    run("tar -xf bundle.tar -C out");

    let read = |name: &str| std::fs::read(out.join(name)).unwrap();
    assert_eq!(read("priv_validator_state.json"), state_json(watermark));
    assert_eq!(read("priv_validator_key.json"), VALIDATOR_KEY);
    assert_eq!(read("node_key.json"), NODE_KEY);
    let mode = std::fs::metadata(out.join("priv_validator_key.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "keys extract owner-only, mode {mode:o}");

    let metadata_bytes = read("metadata.json");
    let metadata: serde_json::Value = serde_json::from_slice(&metadata_bytes).unwrap();
    assert_eq!(metadata["chain_id"], CHAIN);
    assert_eq!(metadata["validator_address"], ADDRESS);
    assert_eq!(metadata["sequence"], 3);
    assert_eq!(metadata["watermark"]["height"], 500);
    assert_eq!(metadata["watermark"]["step"], 2);
    assert_eq!(
        metadata["signer"],
        BASE64.encode(fixture.signing_key.verifying_key().to_bytes())
    );
    for file in metadata["files"].as_array().unwrap() {
        let content = read(file["name"].as_str().unwrap());
        assert_eq!(file["sha256"], hex::encode(Sha256::digest(&content)));
        assert_eq!(file["bytes"], content.len());
    }
    // The signature file is base64 text of a raw 64-byte ed25519 signature
    // over the exact bytes of metadata.json, as the format document says.
    let signature_text = String::from_utf8(read("metadata.json.sig")).unwrap();
    let signature: [u8; 64] = BASE64
        .decode(signature_text.trim())
        .unwrap()
        .try_into()
        .unwrap();
    fixture
        .signing_key
        .verifying_key()
        .verify_strict(
            &metadata_bytes,
            &ed25519_dalek::Signature::from_bytes(&signature),
        )
        .unwrap();
}

#[test]
fn rejects_a_tampered_ciphertext_byte() {
    let fixture = Fixture::new();
    let mut ciphertext = fixture.bundle(&input(1, wm(10, 0, Step::Precommit)));
    let middle = ciphertext.len() - 1000;
    ciphertext[middle] ^= 0x01;
    assert!(matches!(
        fixture.open(&ciphertext),
        Err(Rejection::NotDecryptable(_))
    ));
}

#[test]
fn rejects_a_bundle_for_someone_else_or_not_age_at_all() {
    let fixture = Fixture::new();
    let ciphertext = Fixture::new().bundle(&input(1, wm(10, 0, Step::Precommit)));
    assert!(matches!(
        fixture.open(&ciphertext),
        Err(Rejection::NotDecryptable(_))
    ));
    assert!(matches!(
        fixture.open(b"PK\x03\x04 definitely not age"),
        Err(Rejection::NotDecryptable(_))
    ));
}

#[test]
fn rejects_a_truncated_ciphertext() {
    let fixture = Fixture::new();
    let ciphertext = fixture.bundle(&input(1, wm(10, 0, Step::Precommit)));
    for keep in [ciphertext.len() - 1, ciphertext.len() / 2, 300, 40] {
        let result = fixture.open(&ciphertext[..keep]);
        assert!(
            matches!(result, Err(Rejection::Truncated(_))),
            "cut to {keep} of {} bytes: {result:?}",
            ciphertext.len()
        );
    }
}

#[test]
fn rejects_a_forgery_encrypted_to_us_but_signed_by_another_key() {
    let fixture = Fixture::new();
    let attacker = Fixture {
        signing_key: SigningKey::from_bytes(&rand::random()),
        identity: fixture.identity.clone(),
    };
    // The attacker knows only our public recipient and encrypts to it.
    let forged = create_bundle(
        &input(99, wm(9_999_999, 0, Step::Precommit)),
        &attacker.signing_key,
        &fixture.recipients(),
    )
    .unwrap();
    assert!(matches!(
        fixture.open(&forged),
        Err(Rejection::BadSignature(_))
    ));

    // Copying our public key into `signer` does not help either.
    let state = state_json(wm(9_999_999, 0, Step::Precommit));
    let metadata = metadata_for(&fixture, 99, wm(9_999_999, 0, Step::Precommit), &state);
    let forged = craft(
        &fixture,
        &attacker.signing_key,
        &metadata,
        &[("priv_validator_state.json", state)],
    );
    assert!(matches!(
        fixture.open(&forged),
        Err(Rejection::BadSignature(_))
    ));
}

#[test]
fn rejects_an_unsigned_bundle() {
    let fixture = Fixture::new();
    let plaintext = fixture.decrypt(&fixture.bundle(&input(1, wm(10, 0, Step::Precommit))));
    let members: Vec<_> = tar_members(&plaintext)
        .into_iter()
        .filter(|(name, _)| name != "metadata.json.sig")
        .collect();
    let unsigned = fixture.encrypt(&build_tar(&members));
    assert_eq!(fixture.open(&unsigned).unwrap_err(), Rejection::Unsigned);
}

#[test]
fn rejects_a_file_changed_inside_the_tar() {
    let fixture = Fixture::new();
    let mut plaintext = fixture.decrypt(&fixture.bundle(&input(1, wm(10, 0, Step::Precommit))));
    // Change the state's signbytes in place; tar checksums cover headers
    // only, so the archive stays valid and only the signed hash can tell.
    let needle = b"6B080211";
    let at = plaintext
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    plaintext[at] = b'7';
    let tampered = fixture.encrypt(&plaintext);
    assert_eq!(
        fixture.open(&tampered).unwrap_err(),
        Rejection::FileHashMismatch {
            name: "priv_validator_state.json".into()
        }
    );
}

#[test]
fn rejects_an_extra_file() {
    let fixture = Fixture::new();
    let plaintext = fixture.decrypt(&fixture.bundle(&input(1, wm(10, 0, Step::Precommit))));
    let mut members = tar_members(&plaintext);
    members.push((
        "../../etc/cron.d/evil".into(),
        b"* * * * * root sh".to_vec(),
    ));
    let extra = fixture.encrypt(&build_tar(&members));
    assert_eq!(
        fixture.open(&extra).unwrap_err(),
        Rejection::UnexpectedFile("../../etc/cron.d/evil".into())
    );
}

#[test]
fn rejects_other_chain_and_other_validator() {
    let fixture = Fixture::new();
    let mut other_chain = input(1, wm(10, 0, Step::Precommit));
    other_chain.chain_id = "otherchain-2".into();
    assert_eq!(
        fixture.open(&fixture.bundle(&other_chain)).unwrap_err(),
        Rejection::OtherChain {
            expected: CHAIN.into(),
            found: "otherchain-2".into()
        }
    );
    let mut other_validator = input(1, wm(10, 0, Step::Precommit));
    other_validator.validator_address = OTHER_ADDRESS.into();
    assert_eq!(
        fixture.open(&fixture.bundle(&other_validator)).unwrap_err(),
        Rejection::OtherValidator {
            expected: ADDRESS.into(),
            found: OTHER_ADDRESS.into()
        }
    );
}

#[test]
fn rejects_a_rolled_back_sequence_and_a_lower_watermark() {
    let fixture = Fixture::new();
    let ciphertext = fixture.bundle(&input(5, wm(100, 0, Step::Prevote)));

    let mut expectations = fixture.expectations();
    expectations.min_sequence = Some(5);
    expectations.min_watermark = Some(wm(100, 0, Step::Prevote));
    assert!(
        open_bundle(&ciphertext, &fixture.identity, &expectations).is_ok(),
        "equal is fine"
    );

    expectations.min_sequence = Some(6);
    assert_eq!(
        open_bundle(&ciphertext, &fixture.identity, &expectations).unwrap_err(),
        Rejection::RolledBack {
            sequence: 5,
            min: 6
        }
    );

    expectations.min_sequence = None;
    expectations.min_watermark = Some(wm(100, 0, Step::Precommit));
    assert_eq!(
        open_bundle(&ciphertext, &fixture.identity, &expectations).unwrap_err(),
        Rejection::BelowWatermark {
            found: wm(100, 0, Step::Prevote),
            min: wm(100, 0, Step::Precommit)
        }
    );
}

#[test]
fn rejects_metadata_whose_watermark_differs_from_the_state_file() {
    let fixture = Fixture::new();
    let state = state_json(wm(100, 0, Step::Prevote));
    // Validly signed by our key (a bug, not an attacker), but inconsistent.
    let metadata = metadata_for(&fixture, 1, wm(200, 0, Step::Precommit), &state);
    let ciphertext = craft(
        &fixture,
        &fixture.signing_key,
        &metadata,
        &[("priv_validator_state.json", state)],
    );
    assert_eq!(
        fixture.open(&ciphertext).unwrap_err(),
        Rejection::WatermarkMismatch {
            metadata: wm(200, 0, Step::Precommit),
            state: wm(100, 0, Step::Prevote)
        }
    );
}

#[test]
fn rejects_an_unknown_format_and_a_missing_state() {
    let fixture = Fixture::new();
    let state = state_json(wm(1, 0, Step::None));
    let mut metadata = metadata_for(&fixture, 1, wm(1, 0, Step::None), &state);
    metadata.format = 2;
    let future = craft(
        &fixture,
        &fixture.signing_key,
        &metadata,
        &[("priv_validator_state.json", state.clone())],
    );
    assert_eq!(
        fixture.open(&future).unwrap_err(),
        Rejection::UnsupportedFormat(2)
    );

    metadata.format = 1;
    let missing = craft(&fixture, &fixture.signing_key, &metadata, &[]);
    assert_eq!(
        fixture.open(&missing).unwrap_err(),
        Rejection::MissingFile("priv_validator_state.json".into())
    );
}

#[test]
fn rejects_a_plaintext_that_is_not_a_tar() {
    let fixture = Fixture::new();
    let ciphertext = fixture.encrypt(&[b'x'; 4096]);
    assert!(matches!(
        fixture.open(&ciphertext),
        Err(Rejection::NotATar(_))
    ));
}

#[test]
fn rejects_an_oversized_ciphertext_without_decrypting() {
    let fixture = Fixture::new();
    let huge = vec![0u8; palisade_supervisor::backup::MAX_CIPHERTEXT_BYTES + 1];
    assert!(matches!(
        fixture.open(&huge),
        Err(Rejection::TooLarge { .. })
    ));
}

// ---- LocalDirStore ----

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn local_store_writes_atomically_with_private_modes() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("store");
    // A temporary file left by a crash mid-write is cleaned up on open.
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join(".tmp-1-0-backup-x.age"), b"partial").unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();

    let store = LocalDirStore::new(&dir, "local").unwrap();
    assert_eq!(store.name(), "local");
    assert_eq!(mode_of(&dir), 0o700);
    assert!(!dir.join(".tmp-1-0-backup-x.age").exists());

    store.put("backup-a.age", b"ciphertext").await.unwrap();
    assert_eq!(mode_of(&dir.join("backup-a.age")), 0o600);
    assert_eq!(store.get("backup-a.age").await.unwrap(), b"ciphertext");
    let on_disk: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(on_disk, ["backup-a.age"], "no temporary file remains");

    std::fs::write(dir.join(".hidden"), b"x").unwrap();
    std::fs::create_dir(dir.join("subdir")).unwrap();
    assert_eq!(store.list().await.unwrap(), ["backup-a.age"]);

    store.remove("backup-a.age").await.unwrap();
    assert!(matches!(
        store.get("backup-a.age").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.remove("backup-a.age").await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn local_store_never_overwrites() {
    let root = tempfile::tempdir().unwrap();
    let store = LocalDirStore::new(root.path().join("s"), "local").unwrap();
    store.put("backup-a.age", b"first").await.unwrap();
    let error = store.put("backup-a.age", b"second").await.unwrap_err();
    assert!(matches!(error, StoreError::AlreadyExists(_)), "{error}");
    assert_eq!(store.get("backup-a.age").await.unwrap(), b"first");
    assert_eq!(store.list().await.unwrap(), ["backup-a.age"]);
}

#[tokio::test]
async fn local_store_rejects_names_that_could_escape_or_hide() {
    let root = tempfile::tempdir().unwrap();
    let store = LocalDirStore::new(root.path().join("s"), "local").unwrap();
    for name in [
        "",
        "../escape.age",
        "a/b.age",
        "/etc/passwd",
        ".hidden.age",
        "..",
        "a\nb",
    ] {
        assert!(
            matches!(
                store.put(name, b"x").await,
                Err(StoreError::InvalidName { .. })
            ),
            "put {name:?}"
        );
        assert!(
            matches!(store.get(name).await, Err(StoreError::InvalidName { .. })),
            "get {name:?}"
        );
        assert!(
            matches!(
                store.remove(name).await,
                Err(StoreError::InvalidName { .. })
            ),
            "remove {name:?}"
        );
    }
    assert!(!root.path().join("escape.age").exists());
    assert!(store.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn retention_keeps_the_newest_per_validator() {
    let root = tempfile::tempdir().unwrap();
    let store = LocalDirStore::new(root.path().join("s"), "local").unwrap();
    let name = |address: &str, sequence: u64| {
        BackupFileName {
            chain_id: CHAIN.into(),
            validator_address: address.into(),
            sequence,
            height: 1000 + sequence,
        }
        .to_string()
    };
    // Sequence 10 sorts after 9 only because of the zero padding.
    for sequence in [1, 2, 9, 10, 3] {
        store.put(&name(ADDRESS, sequence), b"x").await.unwrap();
    }
    store.put(&name(OTHER_ADDRESS, 1), b"x").await.unwrap();
    store.put("notes.txt", b"operator notes").await.unwrap();

    assert!(matches!(
        apply_retention(&store, 0).await,
        Err(StoreError::InvalidRetention)
    ));
    let mut removed = apply_retention(&store, 2).await.unwrap();
    removed.sort();
    assert_eq!(
        removed,
        [name(ADDRESS, 1), name(ADDRESS, 2), name(ADDRESS, 3)]
    );
    let mut expected = vec![
        name(ADDRESS, 9),
        name(ADDRESS, 10),
        name(OTHER_ADDRESS, 1),
        "notes.txt".to_owned(),
    ];
    expected.sort();
    assert_eq!(store.list().await.unwrap(), expected);
}

/// A sequence that started over (new bundles with small sequences but the
/// highest sign state) never makes retention delete the highest bundles.
#[tokio::test]
async fn retention_never_deletes_the_highest_bundles_after_a_sequence_reset() {
    let root = tempfile::tempdir().unwrap();
    let store = LocalDirStore::new(root.path().join("s"), "local").unwrap();
    let name = |sequence: u64, height: u64| {
        BackupFileName {
            chain_id: CHAIN.into(),
            validator_address: ADDRESS.into(),
            sequence,
            height,
        }
        .to_string()
    };
    // Before the reset: sequences 50..=54 up to height 500; after it:
    // sequences 1..=3 at heights 501..=503.
    for (sequence, height) in [(50, 100), (51, 200), (52, 300), (53, 400), (54, 500)] {
        store.put(&name(sequence, height), b"x").await.unwrap();
    }
    for (sequence, height) in [(1, 501), (2, 502), (3, 503)] {
        store.put(&name(sequence, height), b"x").await.unwrap();
    }
    let mut removed = apply_retention(&store, 2).await.unwrap();
    removed.sort();
    // Kept: the two highest sequences (53, 54) and the two highest heights
    // (502, 503); everything else goes.
    let mut expected = vec![name(50, 100), name(51, 200), name(52, 300), name(1, 501)];
    expected.sort();
    assert_eq!(removed, expected);
    let mut left = vec![name(53, 400), name(54, 500), name(2, 502), name(3, 503)];
    left.sort();
    assert_eq!(store.list().await.unwrap(), left);
}

// ---- publish and gather ----

/// A store whose host is down: every call fails at once.
struct DownStore;

impl BackupStore for DownStore {
    fn name(&self) -> &str {
        "down"
    }
    fn put<'a>(&'a self, _: &'a str, _: &'a [u8]) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Err(StoreError::Unavailable("connection refused".into())) })
    }
    fn list(&self) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        Box::pin(async { Err(StoreError::Unavailable("connection refused".into())) })
    }
    fn get<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Vec<u8>, StoreError>> {
        Box::pin(async { Err(StoreError::Unavailable("connection refused".into())) })
    }
    fn remove<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Err(StoreError::Unavailable("connection refused".into())) })
    }
}

/// A store behind a dead link: every call hangs.
struct HangingStore;

impl BackupStore for HangingStore {
    fn name(&self) -> &str {
        "hanging"
    }
    fn put<'a>(&'a self, _: &'a str, _: &'a [u8]) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(std::future::pending())
    }
    fn list(&self) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        Box::pin(std::future::pending())
    }
    fn get<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Vec<u8>, StoreError>> {
        Box::pin(std::future::pending())
    }
    fn remove<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(std::future::pending())
    }
}

#[tokio::test]
async fn publish_reaches_the_healthy_store_when_others_fail() {
    let root = tempfile::tempdir().unwrap();
    let local = Arc::new(LocalDirStore::new(root.path().join("s"), "bastion-1").unwrap());
    let stores: Vec<Arc<dyn BackupStore>> =
        vec![Arc::new(DownStore), local.clone(), Arc::new(HangingStore)];
    let started = std::time::Instant::now();
    let report = publish(
        &stores,
        "backup-x.age",
        b"ciphertext",
        Duration::from_millis(300),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "bounded by the timeout"
    );
    assert_eq!(report.file_name, "backup-x.age");
    assert_eq!(report.stored, ["bastion-1"]);
    assert!(report.stored_anywhere() && !report.stored_everywhere());
    let failed: Vec<_> = report.failed.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(failed, ["down", "hanging"]);
    assert!(
        report.failed[0].1.contains("connection refused"),
        "{:?}",
        report.failed
    );
    assert!(
        report.failed[1].1.contains("did not answer"),
        "{:?}",
        report.failed
    );
    assert_eq!(local.get("backup-x.age").await.unwrap(), b"ciphertext");
}

#[tokio::test]
async fn gather_picks_the_best_bundle_and_reports_every_rejection() {
    let fixture = Fixture::new();
    let root = tempfile::tempdir().unwrap();
    let store_a = Arc::new(LocalDirStore::new(root.path().join("a"), "bastion-a").unwrap());
    let store_b = Arc::new(LocalDirStore::new(root.path().join("b"), "bastion-b").unwrap());

    // Good bundles: sequence 1 on both, sequence 2 (the best) on A only.
    let first = input(1, wm(100, 0, Step::Precommit));
    let first_bytes = fixture.bundle(&first);
    store_a.put(&name_of(&first), &first_bytes).await.unwrap();
    store_b.put(&name_of(&first), &first_bytes).await.unwrap();
    let second = input(2, wm(101, 1, Step::Precommit));
    store_a
        .put(&name_of(&second), &fixture.bundle(&second))
        .await
        .unwrap();

    // B is hostile: a forgery claiming a much higher watermark,
    let forged = input(3, wm(900, 0, Step::Precommit));
    let forged_bytes = create_bundle(
        &forged,
        &SigningKey::from_bytes(&rand::random()),
        &fixture.recipients(),
    )
    .unwrap();
    store_b.put(&name_of(&forged), &forged_bytes).await.unwrap();
    // a damaged file,
    let mut damaged = fixture.bundle(&input(4, wm(102, 0, Step::Propose)));
    let at = damaged.len() - 100;
    damaged[at] ^= 0xff;
    store_b
        .put(&name_of(&input(4, wm(102, 0, Step::Propose))), &damaged)
        .await
        .unwrap();
    // an old bundle renamed to look new,
    let renamed = name_of(&input(5, wm(103, 0, Step::Precommit)));
    store_b.put(&renamed, &first_bytes).await.unwrap();
    // a replay below the known sequence,
    let replay = input(0, wm(99, 0, Step::Precommit));
    store_b
        .put(&name_of(&replay), &fixture.bundle(&replay))
        .await
        .unwrap();
    // and files of no interest (another validator; not a bundle).
    let mut unrelated = input(9, wm(5000, 0, Step::Precommit));
    unrelated.validator_address = OTHER_ADDRESS.into();
    store_b
        .put(&name_of(&unrelated), &fixture.bundle(&unrelated))
        .await
        .unwrap();
    store_b.put("README", b"hello").await.unwrap();

    let stores: Vec<Arc<dyn BackupStore>> = vec![store_a, store_b, Arc::new(DownStore)];
    let mut expectations = fixture.expectations();
    expectations.min_sequence = Some(1);
    let report = gather_and_verify(&stores, &fixture.identity, &expectations, OPERATION).await;

    let best = report.best.as_ref().expect("a bundle is accepted");
    assert_eq!(best.store, "bastion-a");
    assert_eq!(best.file_name, name_of(&second));
    assert_eq!(best.bundle.metadata.watermark, wm(101, 1, Step::Precommit));
    assert_eq!(best.bundle.state, state_json(wm(101, 1, Step::Precommit)));
    assert_eq!(report.max_sequence(), Some(2));

    let mut accepted: Vec<_> = report
        .accepted
        .iter()
        .map(|a| (a.store.as_str(), a.sequence, a.watermark))
        .collect();
    accepted.sort();
    // Each store is read newest first (height, then sequence, from the
    // name) and stops at its first valid bundle.
    assert_eq!(
        accepted,
        [
            ("bastion-a", 2, wm(101, 1, Step::Precommit)),
            ("bastion-b", 1, wm(100, 0, Step::Precommit)),
        ]
    );

    let reason_for = |file: Option<&str>| {
        report
            .rejected
            .iter()
            .find(|r| r.file_name.as_deref() == file)
            .map(|r| r.reason.clone())
            .unwrap_or_else(|| panic!("{file:?} not rejected: {:#?}", report.rejected))
    };
    assert!(matches!(
        reason_for(Some(&name_of(&forged))),
        RejectionReason::Bundle(Rejection::BadSignature(_))
    ));
    assert!(matches!(
        reason_for(Some(&name_of(&input(4, wm(102, 0, Step::Propose))))),
        RejectionReason::Bundle(Rejection::NotDecryptable(_))
    ));
    assert!(matches!(
        reason_for(Some(&renamed)),
        RejectionReason::Bundle(Rejection::NameMismatch { .. })
    ));
    // The replay (height 99) sorts after B's valid bundle (height 100): it
    // is never fetched.
    assert!(
        report
            .rejected
            .iter()
            .all(|r| r.file_name.as_deref() != Some(&name_of(&replay))),
        "{:#?}",
        report.rejected
    );
    assert!(report.superseded.is_empty(), "{:?}", report.superseded);
    match reason_for(None) {
        RejectionReason::Store(reason) => assert!(reason.contains("connection refused")),
        other => panic!("{other:?}"),
    }
    assert_eq!(report.rejected.len(), 4, "{:#?}", report.rejected);
    assert_eq!(report.answered, ["bastion-a", "bastion-b"]);
    assert_eq!(report.unreachable().len(), 1);
    assert!(report.rejected.iter().all(|r| r.store != "bastion-a"));
}

#[tokio::test]
async fn gather_with_every_store_down_finds_nothing() {
    let fixture = Fixture::new();
    let stores: Vec<Arc<dyn BackupStore>> = vec![Arc::new(DownStore), Arc::new(HangingStore)];
    let report = gather_and_verify(
        &stores,
        &fixture.identity,
        &fixture.expectations(),
        Duration::from_millis(200),
    )
    .await;
    assert!(report.best.is_none() && report.accepted.is_empty());
    assert_eq!(report.rejected.len(), 2);
    assert!(
        report.rejected[1]
            .reason
            .to_string()
            .contains("did not answer")
    );
}

#[test]
fn created_at_defaults_sensibly_for_now() {
    // A bundle made "now" opens and carries an RFC 3339 UTC timestamp.
    let fixture = Fixture::new();
    let mut input = input(1, wm(1, 0, Step::Propose));
    input.created_at = SystemTime::now();
    let opened = fixture.open(&fixture.bundle(&input)).unwrap();
    assert!(opened.metadata.created_at.ends_with('Z'));
    assert!(humantime::parse_rfc3339(&opened.metadata.created_at).is_ok());
}
