//! The encrypted vault directory: creation, unlocking, key import, and the
//! public metadata a locked supervisor may read.

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::iter;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{SigningKey, VerifyingKey};
use palisade_daemon::durable::{self, AtomicWrite, Existing};
use rand::TryRng;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::VaultError;
use super::error::InvalidRecipient;
use super::key_file::{self, KeyKind};
use super::secure_fs::{self, PRIVATE_FILE_MODE};
use crate::sys::SecretCell;

/// Format version written to `vault.json` and inside `identity.age`.
pub const FORMAT_VERSION: u32 = 1;
/// Public metadata file.
pub const INFO_FILE: &str = "vault.json";
/// Passphrase-encrypted secrets file.
pub const IDENTITY_FILE: &str = "identity.age";
/// Directory of encrypted key files.
pub const KEYS_DIR: &str = "keys";

/// Largest key file accepted for import (CometBFT's are under 1 KiB).
const MAX_KEY_FILE_BYTES: usize = 64 * 1024;
/// Largest vault file read back (identity, encrypted keys, vault.json).
const MAX_VAULT_FILE_BYTES: usize = 1024 * 1024;
/// Bound on recovery recipients, so the metadata stays small.
const MAX_RECOVERY_RECIPIENTS: usize = 64;

/// scrypt work factor (log2 of N) protecting `identity.age`.
///
/// Production vaults use [`WorkFactor::PRODUCTION`] (18, about a second per
/// unlock). Values below 16 are for tests only: they make a stolen
/// `identity.age` cheap to brute-force. Above 22 is refused (gigabytes of RAM
/// and minutes per unlock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct WorkFactor(u8);

impl WorkFactor {
    /// The production default: N = 2^18.
    pub const PRODUCTION: WorkFactor = WorkFactor(18);
    /// The lowest accepted value, N = 2^10. Tests only.
    pub const MIN_FOR_TESTS: WorkFactor = WorkFactor(10);
    /// The lowest value suitable for a real vault.
    pub const MIN_FOR_PRODUCTION: WorkFactor = WorkFactor(16);
    /// The highest accepted value, N = 2^22; also the cap when decrypting, so
    /// an altered `identity.age` cannot demand unbounded work.
    pub const MAX: WorkFactor = WorkFactor(22);

    /// Validates `log_n` (10..=22; below 16 is for tests only).
    pub fn new(log_n: u8) -> Result<Self, VaultError> {
        if (Self::MIN_FOR_TESTS.0..=Self::MAX.0).contains(&log_n) {
            Ok(Self(log_n))
        } else {
            Err(VaultError::InvalidWorkFactor {
                value: log_n,
                min: Self::MIN_FOR_TESTS.0,
                max: Self::MAX.0,
            })
        }
    }

    /// log2 of scrypt's N.
    pub fn get(self) -> u8 {
        self.0
    }

    /// Whether this is too weak for a production vault.
    pub fn is_test_only(self) -> bool {
        self < Self::MIN_FOR_PRODUCTION
    }
}

impl Default for WorkFactor {
    fn default() -> Self {
        Self::PRODUCTION
    }
}

/// `vault.json`: the vault's public metadata. Contains no secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultInfo {
    /// [`FORMAT_VERSION`] at creation.
    pub format_version: u32,
    /// Creation time, RFC 3339 UTC.
    pub created_at: String,
    /// The vault's age X25519 recipient (`age1…`): key files and backups are
    /// encrypted to it.
    pub age_recipient: String,
    /// Backup signing public key (ed25519, standard base64 of 32 bytes).
    pub backup_verifying_key: String,
    /// scrypt work factor of `identity.age`.
    pub scrypt_work_factor: u8,
    /// Key files imported so far.
    pub keys: Vec<KeyKind>,
    /// Extra recipients of every backup (age X25519 or ssh-ed25519 public
    /// keys), for recovery when this host and its passphrase are lost.
    pub recovery_recipients: Vec<String>,
}

impl VaultInfo {
    /// The vault's age recipient, parsed.
    pub fn recipient(&self) -> Result<age::x25519::Recipient, String> {
        age::x25519::Recipient::from_str(&self.age_recipient)
            .map_err(|reason| format!("age_recipient: {reason}"))
    }

    /// The backup verifying key, parsed.
    pub fn verifying_key(&self) -> Result<VerifyingKey, String> {
        let bytes = BASE64
            .decode(&self.backup_verifying_key)
            .map_err(|_| "backup_verifying_key is not base64".to_string())?;
        let array: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "backup_verifying_key is not 32 bytes".to_string())?;
        VerifyingKey::from_bytes(&array)
            .map_err(|_| "backup_verifying_key is not an ed25519 point".to_string())
    }

    /// Whether the vault holds a key of this kind.
    pub fn has_key(&self, kind: KeyKind) -> bool {
        self.keys.contains(&kind)
    }

    /// Every structural check that needs no passphrase.
    fn validate(&self) -> Result<(), String> {
        self.recipient()?;
        self.verifying_key()?;
        WorkFactor::new(self.scrypt_work_factor).map_err(|_| {
            format!(
                "scrypt_work_factor {} out of range",
                self.scrypt_work_factor
            )
        })?;
        let invalid = invalid_recipients(&self.recovery_recipients);
        if let Some(first) = invalid.first() {
            return Err(format!("recovery_recipients: {first}"));
        }
        Ok(())
    }
}

/// Parses a backup/recovery recipient (kept with the configuration, which
/// checks `logs.recipients` with it).
pub use crate::config::parse_recipient;

/// Every recipient in `values` that does not parse, by value; values that
/// look like secret keys are replaced so they never reach a log.
fn invalid_recipients(values: &[String]) -> Vec<InvalidRecipient> {
    values
        .iter()
        .filter_map(|value| {
            parse_recipient(value).err().map(|reason| InvalidRecipient {
                value: if reason.contains("secret key") {
                    "<secret key, not shown>".into()
                } else {
                    value.chars().take(200).collect()
                },
                reason,
            })
        })
        .collect()
}

/// What `identity.age` decrypts to. Public parts are repeated so `unlock`
/// can detect an altered `vault.json`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretBundle<'a> {
    format_version: u32,
    /// `AGE-SECRET-KEY-1…`; borrowed from the zeroizing plaintext buffer.
    age_identity: &'a str,
    /// Backup signing key seed, base64 of 32 bytes; borrowed likewise.
    backup_signing_seed: &'a str,
    recovery_recipients: Vec<String>,
}

impl fmt::Debug for SecretBundle<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretBundle")
            .field("format_version", &self.format_version)
            .field("age_identity", &"REDACTED")
            .field("backup_signing_seed", &"REDACTED")
            .finish_non_exhaustive()
    }
}

/// An unlocked vault: the decrypted identity and signing key, in memory only.
pub struct UnlockedVault {
    dir: PathBuf,
    /// In pages of their own that core dumps leave out (`sys::SecretCell`).
    secrets: SecretCell<VaultSecrets>,
    info: VaultInfo,
}

/// What an unlocked vault keeps for its session.
struct VaultSecrets {
    identity: age::x25519::Identity,
    signing_key: SigningKey,
}

impl fmt::Debug for UnlockedVault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnlockedVault")
            .field("dir", &self.dir)
            .field("identity", &"REDACTED")
            .field("signing_key", &"REDACTED")
            .field("info", &self.info)
            .finish()
    }
}

impl UnlockedVault {
    /// The vault directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The public metadata (verified against the encrypted identity at unlock).
    pub fn info(&self) -> &VaultInfo {
        &self.info
    }

    /// The vault's age X25519 recipient.
    pub fn recipient(&self) -> age::x25519::Recipient {
        self.secrets.identity.to_public()
    }

    /// The vault's age identity, to decrypt backups made to [`Self::recipient`].
    pub fn age_identity(&self) -> &age::x25519::Identity {
        &self.secrets.identity
    }

    /// The backup signing key.
    pub fn signing_key(&self) -> &SigningKey {
        &self.secrets.signing_key
    }

    /// The backup verifying key.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.secrets.signing_key.verifying_key()
    }

    /// Path of the encrypted copy of `kind`.
    pub fn key_path(&self, kind: KeyKind) -> PathBuf {
        self.dir.join(KEYS_DIR).join(kind.encrypted_file_name())
    }

    /// Decrypts an imported key file.
    pub fn decrypt_key(&self, kind: KeyKind) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        let path = self.key_path(kind);
        if !self.info.has_key(kind) {
            return Err(VaultError::KeyNotImported {
                dir: self.dir.clone(),
                kind,
            });
        }
        let ciphertext = read_vault_file(&path)?;
        decrypt(&self.secrets.identity, &ciphertext).map_err(|failure| VaultError::Corrupt {
            path,
            reason: failure.reason(),
        })
    }

    /// Decrypts the vault file `name` written by [`seal_file`]; `None` when
    /// there is none.
    pub fn open_sealed(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, VaultError> {
        let path = self.dir.join(name);
        let ciphertext = match read_vault_file(&path) {
            Err(VaultError::MissingFile { .. }) => return Ok(None),
            other => other?,
        };
        decrypt(&self.secrets.identity, &ciphertext)
            .map(Some)
            .map_err(|failure| VaultError::Corrupt {
                path,
                reason: failure.reason(),
            })
    }

    /// The validator's consensus address (upper-case hex), read from the
    /// vault's `priv_validator_key.json` through the key-file parser, which
    /// keeps the private key in zeroizing memory and checks that the
    /// address belongs to the key.
    pub fn validator_address(&self) -> Result<String, VaultError> {
        let kind = KeyKind::PrivValidatorKey;
        let plaintext = self.decrypt_key(kind)?;
        key_file::validator_address(&plaintext).map_err(|reason| VaultError::InvalidKeyFile {
            path: self.key_path(kind),
            kind,
            reason,
        })
    }

    /// The recovery recipients, parsed.
    pub fn recovery_recipients(&self) -> Result<Vec<Box<dyn age::Recipient + Send>>, VaultError> {
        self.info
            .recovery_recipients
            .iter()
            .map(|text| {
                parse_recipient(text).map_err(|reason| VaultError::Corrupt {
                    path: self.dir.join(INFO_FILE),
                    reason: format!("recovery recipient {text:?}: {reason}"),
                })
            })
            .collect()
    }

    /// Everyone a backup is encrypted to: this vault, then every recovery recipient.
    pub fn backup_recipients(&self) -> Result<Vec<Box<dyn age::Recipient + Send>>, VaultError> {
        let mut recipients: Vec<Box<dyn age::Recipient + Send>> = vec![Box::new(self.recipient())];
        recipients.extend(self.recovery_recipients()?);
        Ok(recipients)
    }
}

/// Creates a vault in `dir` (created 0700 if missing; if present it must be
/// private). Refuses if a vault, or part of one, is already there.
///
/// Generates a fresh age X25519 identity and ed25519 backup signing key from
/// OS randomness, encrypts them to `passphrase` with scrypt at `work_factor`,
/// and writes `identity.age`, `keys/` and, last, `vault.json` (whose presence
/// marks a complete vault).
pub fn init_vault(
    dir: &Path,
    passphrase: &SecretString,
    work_factor: WorkFactor,
    recovery_recipients: &[String],
) -> Result<VaultInfo, VaultError> {
    if passphrase.expose_secret().trim().is_empty() {
        return Err(VaultError::EmptyPassphrase);
    }
    let mut invalid = invalid_recipients(recovery_recipients);
    if recovery_recipients.len() > MAX_RECOVERY_RECIPIENTS {
        invalid.push(InvalidRecipient {
            value: format!("{} recipients", recovery_recipients.len()),
            reason: format!("at most {MAX_RECOVERY_RECIPIENTS} recovery recipients are allowed"),
        });
    }
    if !invalid.is_empty() {
        return Err(VaultError::InvalidRecoveryRecipients { invalid });
    }
    let recovery_recipients: Vec<String> = recovery_recipients
        .iter()
        .map(|text| text.trim().to_string())
        .collect();

    secure_fs::ensure_private_dir(dir)?;
    let info_path = dir.join(INFO_FILE);
    let identity_path = dir.join(IDENTITY_FILE);
    let keys_dir = dir.join(KEYS_DIR);
    for existing in [&info_path, &identity_path, &keys_dir] {
        if fs::symlink_metadata(existing).is_ok() {
            return Err(VaultError::AlreadyInitialized {
                path: existing.clone(),
            });
        }
    }

    let identity = age::x25519::Identity::generate();
    let seed = random_seed()?;
    let signing_key = SigningKey::from_bytes(&seed);

    let plaintext = {
        let identity_text = identity.to_string();
        let seed_text = Zeroizing::new(BASE64.encode(*seed));
        let bundle = SecretBundle {
            format_version: FORMAT_VERSION,
            age_identity: identity_text.expose_secret(),
            backup_signing_seed: &seed_text,
            recovery_recipients: recovery_recipients.clone(),
        };
        // Sized up front so serialization never reallocates (a reallocation
        // would leave an unzeroized copy in freed memory).
        let capacity = 4096
            + recovery_recipients
                .iter()
                .map(|r| 2 * r.len() + 8)
                .sum::<usize>();
        let mut buffer = Zeroizing::new(Vec::with_capacity(capacity));
        serde_json::to_writer(&mut *buffer, &bundle).expect("secret bundle serializes");
        buffer
    };
    let mut passphrase_recipient =
        age::scrypt::Recipient::new(SecretString::from(passphrase.expose_secret()));
    passphrase_recipient.set_work_factor(work_factor.get());
    let ciphertext = encrypt(&[&passphrase_recipient], &plaintext, &identity_path)?;
    AtomicWrite::new(PRIVATE_FILE_MODE, Existing::Refuse).write(&identity_path, &ciphertext)?;

    secure_fs::ensure_private_dir(&keys_dir)?;

    let info = VaultInfo {
        format_version: FORMAT_VERSION,
        created_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        age_recipient: identity.to_public().to_string(),
        backup_verifying_key: BASE64.encode(signing_key.verifying_key().to_bytes()),
        scrypt_work_factor: work_factor.get(),
        keys: Vec::new(),
        recovery_recipients,
    };
    write_info(&info_path, &info, Existing::Refuse)?;
    tracing::info!(
        vault = %dir.display(),
        work_factor = work_factor.get(),
        recovery_recipients = info.recovery_recipients.len(),
        "vault initialized"
    );
    Ok(info)
}

/// Reads and checks `vault.json` without the passphrase. The data is
/// unverified until [`unlock`] cross-checks it with the encrypted identity.
pub fn read_info(dir: &Path) -> Result<VaultInfo, VaultError> {
    let path = dir.join(INFO_FILE);
    let bytes = match secure_fs::read_bounded(&path, MAX_VAULT_FILE_BYTES) {
        Err(VaultError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Err(VaultError::NotInitialized {
                dir: dir.to_path_buf(),
                path,
            });
        }
        other => other?,
    };
    let corrupt = |reason: String| VaultError::Corrupt {
        path: path.clone(),
        reason,
    };
    let version: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|error| corrupt(format!("not valid JSON: {error}")))?;
    let found = version
        .get("format_version")
        .and_then(serde_json::Value::as_u64);
    match found {
        Some(found) if found == u64::from(FORMAT_VERSION) => {}
        Some(found) => {
            return Err(VaultError::UnsupportedVersion {
                path,
                found: u32::try_from(found).unwrap_or(u32::MAX),
                supported: FORMAT_VERSION,
            });
        }
        None => return Err(corrupt("format_version is missing".into())),
    }
    let info: VaultInfo =
        serde_json::from_value(version).map_err(|error| corrupt(error.to_string()))?;
    info.validate().map_err(corrupt)?;
    Ok(info)
}

/// Unlocks the vault with `passphrase`.
///
/// A passphrase that does not decrypt `identity.age` gives
/// [`VaultError::WrongPassphrase`]; a missing file, a file that is not an age
/// passphrase file, or a payload that fails authentication gives
/// [`VaultError::MissingFile`] / [`VaultError::Corrupt`]. (age cannot tell a
/// wrong passphrase from an altered passphrase stanza; both read as wrong.)
/// Nothing on disk is changed.
pub fn unlock(dir: &Path, passphrase: &SecretString) -> Result<UnlockedVault, VaultError> {
    let info = read_info(dir)?;
    let info_path = dir.join(INFO_FILE);
    let identity_path = dir.join(IDENTITY_FILE);
    let ciphertext = read_vault_file(&identity_path)?;
    let corrupt = |reason: String| VaultError::Corrupt {
        path: identity_path.clone(),
        reason,
    };

    let decryptor = age::Decryptor::new_buffered(&ciphertext[..])
        .map_err(|error| corrupt(format!("not an age file: {error}")))?;
    if !decryptor.is_scrypt() {
        return Err(corrupt("not encrypted to a passphrase".into()));
    }
    let mut passphrase_identity =
        age::scrypt::Identity::new(SecretString::from(passphrase.expose_secret()));
    passphrase_identity.set_max_work_factor(WorkFactor::MAX.get());
    let reader = decryptor
        .decrypt(iter::once(&passphrase_identity as &dyn age::Identity))
        .map_err(|error| match error {
            age::DecryptError::DecryptionFailed => VaultError::WrongPassphrase {
                path: identity_path.clone(),
            },
            age::DecryptError::ExcessiveWork { required, .. } => corrupt(format!(
                "demands scrypt work factor {required}, above the maximum {}",
                WorkFactor::MAX.get()
            )),
            other => corrupt(other.to_string()),
        })?;
    let plaintext = read_plaintext(reader, ciphertext.len())
        .map_err(|_| corrupt("payload failed authentication".into()))?;

    let bundle: SecretBundle<'_> = serde_json::from_slice(&plaintext).map_err(|error| {
        corrupt(format!(
            "decrypted content is not a Palisade identity (line {}, column {})",
            error.line(),
            error.column()
        ))
    })?;
    if bundle.format_version != FORMAT_VERSION {
        return Err(VaultError::UnsupportedVersion {
            path: identity_path,
            found: bundle.format_version,
            supported: FORMAT_VERSION,
        });
    }
    let identity = age::x25519::Identity::from_str(bundle.age_identity)
        .map_err(|_| corrupt("the stored age identity does not parse".into()))?;
    let mut seed = Zeroizing::new([0u8; 48]);
    let seed_length = BASE64
        .decode_slice(bundle.backup_signing_seed.as_bytes(), &mut seed[..])
        .map_err(|_| corrupt("the stored signing seed is not base64".into()))?;
    if seed_length != 32 {
        return Err(corrupt("the stored signing seed is not 32 bytes".into()));
    }
    let mut seed32 = Zeroizing::new([0u8; 32]);
    seed32.copy_from_slice(&seed[..32]);
    let signing_key = SigningKey::from_bytes(&seed32);

    let mismatch = |field: &'static str| VaultError::MetadataMismatch {
        path: info_path.clone(),
        field,
    };
    if identity.to_public().to_string() != info.age_recipient {
        return Err(mismatch("age_recipient"));
    }
    if BASE64.encode(signing_key.verifying_key().to_bytes()) != info.backup_verifying_key {
        return Err(mismatch("backup_verifying_key"));
    }
    if bundle.recovery_recipients != info.recovery_recipients {
        return Err(mismatch("recovery_recipients"));
    }
    let secrets = SecretCell::new(VaultSecrets {
        identity,
        signing_key,
    })
    .map_err(|error| VaultError::SecretMemory(error.to_string()))?;
    tracing::info!(vault = %dir.display(), keys = ?info.keys, "vault unlocked");
    Ok(UnlockedVault {
        dir: dir.to_path_buf(),
        secrets,
        info,
    })
}

/// One imported key file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedKey {
    /// Its kind.
    pub kind: KeyKind,
    /// The plaintext original.
    pub original: PathBuf,
    /// The encrypted copy in the vault.
    pub stored: PathBuf,
    /// Whether the original was overwritten with zeros and removed (always
    /// true in a returned report; a failure to remove is an error instead).
    pub original_removed: bool,
}

/// What [`import_key_files`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Each imported file, in the order given.
    pub imported: Vec<ImportedKey>,
}

impl fmt::Display for ImportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for key in &self.imported {
            writeln!(
                f,
                "{}: {} -> {}; original {}",
                key.kind,
                key.original.display(),
                key.stored.display(),
                if key.original_removed {
                    "overwritten with zeros and removed"
                } else {
                    "left in place"
                }
            )?;
        }
        Ok(())
    }
}

/// Imports plaintext CometBFT key files into the vault and destroys the originals.
///
/// Everything is checked before anything changes: no kind twice, none already
/// in the vault, every file a regular file holding valid JSON of its kind.
/// Then, for each file: encrypt to the vault recipient, write atomically
/// (never over an existing copy), read back, decrypt, compare byte for byte
/// with the original, record the kind in `vault.json`, and only then
/// overwrite the original with zeros, fsync, unlink it and fsync its
/// directory.
pub fn import_key_files(
    vault: &mut UnlockedVault,
    files: &[(KeyKind, PathBuf)],
) -> Result<ImportReport, VaultError> {
    secure_fs::check_private_dir(&vault.dir)?;
    let keys_dir = vault.dir.join(KEYS_DIR);
    secure_fs::ensure_private_dir(&keys_dir)?;

    let mut plaintexts = Vec::with_capacity(files.len());
    for (index, (kind, path)) in files.iter().enumerate() {
        if files[..index].iter().any(|(earlier, _)| earlier == kind) {
            return Err(VaultError::DuplicateKeyKind { kind: *kind });
        }
        let stored = vault.key_path(*kind);
        if vault.info.has_key(*kind) || fs::symlink_metadata(&stored).is_ok() {
            return Err(VaultError::KeyAlreadyImported {
                kind: *kind,
                path: stored,
            });
        }
        let plaintext = secure_fs::read_bounded(path, MAX_KEY_FILE_BYTES)?;
        key_file::validate(*kind, &plaintext).map_err(|reason| VaultError::InvalidKeyFile {
            kind: *kind,
            path: path.clone(),
            reason,
        })?;
        plaintexts.push(plaintext);
    }

    let mut report = ImportReport::default();
    for ((kind, original), plaintext) in files.iter().zip(&plaintexts) {
        let stored = vault.key_path(*kind);
        let ciphertext = encrypt(&[&vault.recipient()], plaintext, &stored)?;
        AtomicWrite::new(PRIVATE_FILE_MODE, Existing::Refuse)
            .write(&stored, &ciphertext)
            .map_err(|error| match error.kind() {
                io::ErrorKind::AlreadyExists => VaultError::KeyAlreadyImported {
                    kind: *kind,
                    path: stored.clone(),
                },
                _ => VaultError::from(error),
            })?;

        if let Err(reason) = verify_stored(vault, &stored, plaintext) {
            // The copy is ours and bad; the original is untouched.
            let _ = fs::remove_file(&stored);
            let _ = durable::fsync_dir(&keys_dir);
            return Err(VaultError::VerificationFailed {
                stored,
                original: original.clone(),
                reason,
            });
        }

        let mut info = vault.info.clone();
        info.keys.push(*kind);
        info.keys.sort();
        write_info(&vault.dir.join(INFO_FILE), &info, Existing::Replace)?;
        vault.info = info;

        secure_fs::destroy_file(original)?;
        tracing::info!(
            vault = %vault.dir.display(),
            kind = %kind,
            original = %original.display(),
            "key imported; original overwritten and removed"
        );
        report.imported.push(ImportedKey {
            kind: *kind,
            original: original.clone(),
            stored,
            original_removed: true,
        });
    }
    Ok(report)
}

/// Reads `stored` back from disk and checks it decrypts to `expected`.
fn verify_stored(vault: &UnlockedVault, stored: &Path, expected: &[u8]) -> Result<(), String> {
    let ciphertext = read_vault_file(stored).map_err(|error| error.to_string())?;
    let decrypted =
        decrypt(&vault.secrets.identity, &ciphertext).map_err(|failure| failure.reason())?;
    if decrypted.as_slice() == expected {
        Ok(())
    } else {
        Err("decrypted content differs from the original".into())
    }
}

fn write_info(path: &Path, info: &VaultInfo, existing: Existing) -> Result<(), VaultError> {
    let mut json = serde_json::to_vec_pretty(info).expect("vault info serializes");
    json.push(b'\n');
    AtomicWrite::new(PRIVATE_FILE_MODE, existing)
        .write(path, &json)
        .map_err(|error| match error.kind() {
            io::ErrorKind::AlreadyExists => VaultError::AlreadyInitialized {
                path: path.to_path_buf(),
            },
            _ => VaultError::from(error),
        })
}

/// Encrypts `plaintext` to the vault's own age recipient (read from
/// `vault.json`: no passphrase is needed, and only an unlocked vault can
/// read it back with [`UnlockedVault::open_sealed`]) and writes it as the
/// vault file `name` (0600, atomically, replacing an earlier one).
pub fn seal_file(dir: &Path, name: &str, plaintext: &[u8]) -> Result<PathBuf, VaultError> {
    secure_fs::check_private_dir(dir)?;
    let info = read_info(dir)?;
    let path = dir.join(name);
    let recipient: age::x25519::Recipient =
        info.age_recipient
            .parse()
            .map_err(|reason: &str| VaultError::Corrupt {
                path: dir.join(INFO_FILE),
                reason: format!("age_recipient: {reason}"),
            })?;
    let ciphertext = encrypt(&[&recipient], plaintext, &path)?;
    AtomicWrite::new(PRIVATE_FILE_MODE, Existing::Replace).write(&path, &ciphertext)?;
    Ok(path)
}

fn read_vault_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    match secure_fs::read_bounded(path, MAX_VAULT_FILE_BYTES) {
        Err(VaultError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            Err(VaultError::MissingFile {
                path: path.to_path_buf(),
            })
        }
        other => other,
    }
}

fn random_seed() -> Result<Zeroizing<[u8; 32]>, VaultError> {
    let mut seed = Zeroizing::new([0u8; 32]);
    rand::rngs::SysRng
        .try_fill_bytes(&mut seed[..])
        .map_err(|error| VaultError::Randomness {
            reason: error.to_string(),
        })?;
    Ok(seed)
}

/// age-encrypts `plaintext` to `recipients`. `path` only names the error.
fn encrypt(
    recipients: &[&dyn age::Recipient],
    plaintext: &[u8],
    path: &Path,
) -> Result<Vec<u8>, VaultError> {
    let failure = |reason: String| VaultError::Encrypt {
        path: path.to_path_buf(),
        reason,
    };
    let encryptor = age::Encryptor::with_recipients(recipients.iter().copied())
        .map_err(|error| failure(error.to_string()))?;
    let mut ciphertext = Vec::with_capacity(plaintext.len() + 1024);
    let mut writer = encryptor
        .wrap_output(&mut ciphertext)
        .map_err(|error| failure(error.to_string()))?;
    writer
        .write_all(plaintext)
        .and_then(|()| writer.finish().map(drop))
        .map_err(|error| failure(error.to_string()))?;
    Ok(ciphertext)
}

/// Why a decryption failed, without secrets.
enum DecryptFailure {
    Header(age::DecryptError),
    Payload,
}

impl DecryptFailure {
    fn reason(&self) -> String {
        match self {
            DecryptFailure::Header(error) => format!("cannot decrypt: {error}"),
            DecryptFailure::Payload => "payload failed authentication".into(),
        }
    }
}

/// Decrypts an age file with `identity` into a zeroizing buffer.
fn decrypt(
    identity: &dyn age::Identity,
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, DecryptFailure> {
    let decryptor = age::Decryptor::new_buffered(ciphertext).map_err(DecryptFailure::Header)?;
    let reader = decryptor
        .decrypt(iter::once(identity))
        .map_err(DecryptFailure::Header)?;
    read_plaintext(reader, ciphertext.len()).map_err(|_| DecryptFailure::Payload)
}

/// Reads a decrypted stream into a buffer large enough never to reallocate
/// (the plaintext is shorter than the ciphertext).
fn read_plaintext(
    mut reader: impl Read,
    ciphertext_length: usize,
) -> io::Result<Zeroizing<Vec<u8>>> {
    let mut plaintext = Zeroizing::new(Vec::with_capacity(ciphertext_length + 2));
    reader.read_to_end(&mut plaintext)?;
    Ok(plaintext)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_factor_bounds() {
        assert!(WorkFactor::new(9).is_err());
        assert!(WorkFactor::new(23).is_err());
        assert!(WorkFactor::new(10).unwrap().is_test_only());
        assert!(!WorkFactor::new(16).unwrap().is_test_only());
        assert_eq!(WorkFactor::default().get(), 18);
        assert_eq!(WorkFactor::new(22).unwrap(), WorkFactor::MAX);
        let message = WorkFactor::new(30).unwrap_err().to_string();
        assert!(
            message.contains("30") && message.contains("10..=22"),
            "{message}"
        );
    }

    /// An OpenSSH public key line for a deterministic ed25519 key.
    fn ssh_ed25519_line(seed: u8) -> String {
        let public = SigningKey::from_bytes(&[seed; 32])
            .verifying_key()
            .to_bytes();
        let mut blob = Vec::new();
        blob.extend(11u32.to_be_bytes());
        blob.extend(b"ssh-ed25519");
        blob.extend(32u32.to_be_bytes());
        blob.extend(public);
        format!("ssh-ed25519 {} op@laptop", BASE64.encode(blob))
    }

    #[test]
    fn recipients_table() {
        let x25519 = age::x25519::Identity::generate().to_public().to_string();
        let ssh_ed25519 = &ssh_ed25519_line(5);
        let secret = age::x25519::Identity::generate();
        let secret_text = secret.to_string().expose_secret().to_string();
        let cases: Vec<(&str, Result<(), &str>)> = vec![
            (&x25519, Ok(())),
            (ssh_ed25519, Ok(())),
            ("", Err("empty")),
            ("age1notakey", Err("not a valid age X25519 recipient")),
            ("ssh-ed25519 AAAAnotbase64!", Err("not a valid ssh-ed25519")),
            (
                "ssh-rsa AAAAB3NzaC1yc2E",
                Err("expected an age X25519 recipient"),
            ),
            (&secret_text, Err("secret key")),
        ];
        for (text, expected) in cases {
            let got = parse_recipient(text).map(drop);
            match (got, expected) {
                (Ok(()), Ok(())) => {}
                (Err(reason), Err(fragment)) => {
                    assert!(reason.contains(fragment), "{text}: {reason}")
                }
                (got, expected) => panic!("{text}: got {:?}, expected {expected:?}", got.err()),
            }
        }
        let invalid = invalid_recipients(&[secret_text.clone(), "bogus".into()]);
        assert_eq!(invalid.len(), 2);
        assert!(!format!("{invalid:?}").contains(&secret_text));
        assert_eq!(invalid[1].value, "bogus");
    }

    #[test]
    fn decrypt_distinguishes_header_and_payload_failures() {
        let identity = age::x25519::Identity::generate();
        let mut ciphertext = encrypt(&[&identity.to_public()], b"payload", Path::new("x")).unwrap();
        assert_eq!(
            decrypt(&identity, &ciphertext).ok().unwrap().as_slice(),
            b"payload"
        );
        let last = ciphertext.len() - 1;
        ciphertext[last] ^= 1;
        assert!(matches!(
            decrypt(&identity, &ciphertext),
            Err(DecryptFailure::Payload)
        ));
        let other = age::x25519::Identity::generate();
        assert!(matches!(
            decrypt(&other, &ciphertext),
            Err(DecryptFailure::Header(_))
        ));
    }
}
