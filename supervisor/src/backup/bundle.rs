//! Building a backup bundle: tar (metadata, signature, files), then age.
//!
//! The exact format is specified in `docs/backup-format.md`; this module is
//! its writer. The tar is assembled in one [`Zeroizing`] buffer whose capacity
//! is computed before the first byte is written, because it holds key
//! material and a reallocation would leave an unzeroized copy on the heap.

use std::fmt;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::Signer;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::sign_state::Watermark;

/// The only bundle format this code writes and accepts.
pub const FORMAT_VERSION: u32 = 1;

/// Tar member holding the signed metadata.
pub const METADATA_NAME: &str = "metadata.json";
/// Tar member holding the base64 ed25519 signature over `metadata.json`.
pub const SIGNATURE_NAME: &str = "metadata.json.sig";
/// CometBFT's sign state; present in every bundle.
pub const STATE_NAME: &str = "priv_validator_state.json";
/// CometBFT's consensus key; present when the caller includes it.
pub const VALIDATOR_KEY_NAME: &str = "priv_validator_key.json";
/// The node's P2P key; present when the caller includes it.
pub const NODE_KEY_NAME: &str = "node_key.json";

/// The age payload is cut into chunks of this many plaintext bytes. The tar
/// is padded with zero blocks to a whole number of chunks, so a bundle whose
/// payload is not a whole number of encrypted chunks was cut short (see
/// [`crate::backup::Rejection::Truncated`]).
pub(crate) const AGE_CHUNK_BYTES: usize = 64 * 1024;
/// An encrypted age chunk: plaintext plus the 16-byte Poly1305 tag.
pub(crate) const AGE_ENCRYPTED_CHUNK_BYTES: usize = AGE_CHUNK_BYTES + 16;
/// Largest file accepted inside a bundle. CometBFT's JSON files are a few
/// hundred bytes; the cap keeps a hostile bundle from costing memory.
pub(crate) const MAX_MEMBER_BYTES: usize = 1024 * 1024;

const TAR_BLOCK: usize = 512;

/// Parses the watermark out of a bundle's [`STATE_NAME`] member, CometBFT's
/// `priv_validator_state.json` (`{"height":"123","round":0,"step":3,...}`;
/// height is a decimal string in CometBFT, a bare number is accepted too).
/// Other fields are ignored. The writer checks it against the declared
/// watermark and [`crate::backup::open`] against the signed metadata.
pub fn parse_state_watermark(bytes: &[u8]) -> Result<Watermark, String> {
    crate::sign_state::SignState::parse(bytes)
        .map(|state| state.watermark())
        .map_err(|error| error.to_string())
}

/// The signed description of a bundle: `metadata.json`.
///
/// Field order is the serialization order; the signature covers the exact
/// bytes written, so readers must verify before parsing and never
/// re-serialize.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupMetadata {
    /// Format version, [`FORMAT_VERSION`].
    pub format: u32,
    /// CometBFT chain ID, e.g. `cosmoshub-4`.
    pub chain_id: String,
    /// Validator consensus address, 40 uppercase hex characters.
    pub validator_address: String,
    /// The sign state in this bundle, as (height, round, step).
    pub watermark: Watermark,
    /// Monotonic per validator: a later backup always has a larger sequence,
    /// which is what lets a restore reject a replayed older bundle even at
    /// the same watermark.
    pub sequence: u64,
    /// Which validator host wrote the bundle.
    pub host_id: String,
    /// RFC 3339 UTC creation time, whole seconds.
    pub created_at: String,
    /// `palisade-supervisor` version that wrote the bundle.
    pub software_version: String,
    /// Standard base64 of the 32-byte ed25519 public key that signed.
    pub signer: String,
    /// Every other tar member, pinned by hash and size, in tar order.
    pub files: Vec<FileEntry>,
}

/// One file of a bundle as pinned by the metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Tar member name, one of the CometBFT file names.
    pub name: String,
    /// Lowercase hex SHA-256 of the file's bytes.
    pub sha256: String,
    /// File length in bytes.
    pub bytes: u64,
}

/// What goes into a bundle. `files` and `signer` of the metadata are
/// computed by [`create_bundle`].
pub struct BundleInput {
    /// CometBFT chain ID.
    pub chain_id: String,
    /// Validator consensus address as hex (any case; written uppercase).
    pub validator_address: String,
    /// Watermark of `priv_validator_state`; must match its content.
    pub watermark: Watermark,
    /// Monotonic per validator (see [`BackupMetadata::sequence`]).
    pub sequence: u64,
    /// Which host writes the bundle.
    pub host_id: String,
    /// Creation time, written as RFC 3339 (seconds) and as tar mtimes.
    pub created_at: SystemTime,
    /// Software version string.
    pub software_version: String,
    /// Bytes of `priv_validator_state.json`, as on disk.
    pub priv_validator_state: Vec<u8>,
    /// Bytes of `priv_validator_key.json`, when the key is backed up too.
    pub priv_validator_key: Option<Zeroizing<Vec<u8>>>,
    /// Bytes of `node_key.json`, when the node key is backed up too.
    pub node_key: Option<Zeroizing<Vec<u8>>>,
}

impl fmt::Debug for BundleInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BundleInput")
            .field("chain_id", &self.chain_id)
            .field("validator_address", &self.validator_address)
            .field("watermark", &self.watermark)
            .field("sequence", &self.sequence)
            .field("host_id", &self.host_id)
            .field("created_at", &self.created_at)
            .field("software_version", &self.software_version)
            .field(
                "priv_validator_state",
                &String::from_utf8_lossy(&self.priv_validator_state),
            )
            .field(
                "priv_validator_key",
                &self.priv_validator_key.as_ref().map(|_| "REDACTED"),
            )
            .field("node_key", &self.node_key.as_ref().map(|_| "REDACTED"))
            .finish()
    }
}

impl BundleInput {
    /// The store file name this bundle should be published under.
    pub fn file_name(&self) -> BackupFileName {
        BackupFileName {
            chain_id: self.chain_id.clone(),
            validator_address: self.validator_address.to_ascii_uppercase(),
            sequence: self.sequence,
            height: self.watermark.height,
        }
    }
}

/// Why a bundle could not be built. Nothing is written anywhere on error.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// A metadata field is unusable (bad chain ID, address, empty host ID…).
    #[error("backup input field `{field}` is invalid: {reason}")]
    InvalidInput { field: &'static str, reason: String },
    /// `priv_validator_state.json` could not be parsed for its watermark.
    #[error("priv_validator_state.json is not a CometBFT sign state: {0}")]
    UnparseableState(String),
    /// The declared watermark differs from the one in the state file; the
    /// bundle would be rejected on restore, so it is not written.
    #[error("declared watermark ({declared}) differs from priv_validator_state.json ({state})")]
    WatermarkMismatch {
        declared: Watermark,
        state: Watermark,
    },
    /// A file is larger than a bundle accepts.
    #[error("{name} is {bytes} bytes, more than the {limit}-byte limit")]
    FileTooLarge {
        name: &'static str,
        bytes: usize,
        limit: usize,
    },
    /// No recipients, or age refused them.
    #[error("cannot encrypt the backup: {0}")]
    Encrypt(String),
    /// Writing the in-memory tar or age stream failed.
    #[error("cannot assemble the backup: {0}")]
    Assemble(#[from] std::io::Error),
}

/// A store file name: `backup-<chain_id>-<ADDRESS>-<sequence:020>-h<height>.age`
/// (the one rule, in `palisade-wire`, shared with the RPC's params).
pub use palisade_wire::backup_store::BackupFileName;

/// The name a bundle with this metadata is published under.
pub fn file_name_for(metadata: &BackupMetadata) -> BackupFileName {
    BackupFileName {
        chain_id: metadata.chain_id.clone(),
        validator_address: metadata.validator_address.clone(),
        sequence: metadata.sequence,
        height: metadata.watermark.height,
    }
}

/// Chain IDs appear in file names, so only CometBFT-style IDs are accepted
/// (`palisade_wire::backup_store::chain_id_problem`).
pub(crate) fn validate_chain_id(chain_id: &str) -> Result<(), String> {
    match palisade_wire::backup_store::chain_id_problem(chain_id) {
        Some(problem) => Err(problem.to_owned()),
        None => Ok(()),
    }
}

/// A CometBFT address is 20 bytes; returns it as 40 uppercase hex characters.
pub(crate) fn validate_validator_address(address: &str) -> Result<String, String> {
    if address.len() != 40 || !address.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "`{address}` is not 40 hex characters (a 20-byte CometBFT address)"
        ));
    }
    Ok(address.to_ascii_uppercase())
}

fn validate_text(field: &'static str, value: &str) -> Result<(), BackupError> {
    if value.is_empty() || value.len() > 256 || value.chars().any(char::is_control) {
        return Err(BackupError::InvalidInput {
            field,
            reason: "must be 1 to 256 printable characters".into(),
        });
    }
    Ok(())
}

/// Builds a bundle: signs the metadata with `signing_key` and encrypts the
/// tar to every recipient (binary age format). Returns the ciphertext; name
/// it with [`BundleInput::file_name`].
pub fn create_bundle(
    input: &BundleInput,
    signing_key: &ed25519_dalek::SigningKey,
    recipients: &[Box<dyn age::Recipient + Send>],
) -> Result<Vec<u8>, BackupError> {
    validate_chain_id(&input.chain_id).map_err(|reason| BackupError::InvalidInput {
        field: "chain_id",
        reason,
    })?;
    let validator_address =
        validate_validator_address(&input.validator_address).map_err(|reason| {
            BackupError::InvalidInput {
                field: "validator_address",
                reason,
            }
        })?;
    validate_text("host_id", &input.host_id)?;
    validate_text("software_version", &input.software_version)?;
    if recipients.is_empty() {
        return Err(BackupError::Encrypt("no recipients".into()));
    }

    let state_watermark = parse_state_watermark(&input.priv_validator_state)
        .map_err(BackupError::UnparseableState)?;
    if state_watermark != input.watermark {
        return Err(BackupError::WatermarkMismatch {
            declared: input.watermark,
            state: state_watermark,
        });
    }

    let mut files: Vec<(&'static str, &[u8])> = vec![(STATE_NAME, &input.priv_validator_state)];
    if let Some(key) = &input.priv_validator_key {
        files.push((VALIDATOR_KEY_NAME, key.as_slice()));
    }
    if let Some(key) = &input.node_key {
        files.push((NODE_KEY_NAME, key.as_slice()));
    }
    for (name, bytes) in &files {
        if bytes.len() > MAX_MEMBER_BYTES {
            return Err(BackupError::FileTooLarge {
                name,
                bytes: bytes.len(),
                limit: MAX_MEMBER_BYTES,
            });
        }
    }

    let created_secs = input
        .created_at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let metadata = BackupMetadata {
        format: FORMAT_VERSION,
        chain_id: input.chain_id.clone(),
        validator_address,
        watermark: input.watermark,
        sequence: input.sequence,
        host_id: input.host_id.clone(),
        created_at: humantime::format_rfc3339_seconds(input.created_at).to_string(),
        software_version: input.software_version.clone(),
        signer: BASE64.encode(signing_key.verifying_key().to_bytes()),
        files: files
            .iter()
            .map(|(name, bytes)| FileEntry {
                name: (*name).to_owned(),
                sha256: hex::encode(Sha256::digest(bytes)),
                bytes: bytes.len() as u64,
            })
            .collect(),
    };
    let mut metadata_json = serde_json::to_vec_pretty(&metadata)
        .map_err(|e| BackupError::Assemble(std::io::Error::other(e)))?;
    metadata_json.push(b'\n');
    let signature = signing_key.sign(&metadata_json);
    let signature_text = format!("{}\n", BASE64.encode(signature.to_bytes()));

    let mut members: Vec<(&str, &[u8])> = vec![
        (METADATA_NAME, &metadata_json),
        (SIGNATURE_NAME, signature_text.as_bytes()),
    ];
    members.extend(files.iter().copied());
    let tar = build_tar(&members, created_secs)?;
    encrypt(&tar, recipients)
}

/// Writes `members` as a ustar archive into a buffer allocated once, padded
/// with zero blocks to a whole number of age chunks.
pub(crate) fn build_tar(
    members: &[(&str, &[u8])],
    mtime: u64,
) -> Result<Zeroizing<Vec<u8>>, BackupError> {
    let round_up = |n: usize, to: usize| n.div_ceil(to) * to;
    let tar_len = members
        .iter()
        .map(|(_, data)| TAR_BLOCK + round_up(data.len(), TAR_BLOCK))
        .sum::<usize>()
        + 2 * TAR_BLOCK;
    let padded_len = round_up(tar_len, AGE_CHUNK_BYTES);
    let mut buffer = Zeroizing::new(Vec::with_capacity(padded_len));
    {
        let mut builder = tar::Builder::new(&mut *buffer);
        for (name, data) in members {
            let mut header = tar::Header::new_ustar();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(data.len() as u64);
            header.set_mode(0o600);
            header.set_mtime(mtime);
            header.set_uid(0);
            header.set_gid(0);
            builder.append_data(&mut header, name, *data)?;
        }
        builder.finish()?;
    }
    debug_assert_eq!(buffer.len(), tar_len);
    buffer.resize(padded_len, 0);
    debug_assert_eq!(buffer.capacity(), padded_len, "tar buffer reallocated");
    Ok(buffer)
}

/// age-encrypts `plaintext` to every recipient, binary (not armored).
pub(crate) fn encrypt(
    plaintext: &[u8],
    recipients: &[Box<dyn age::Recipient + Send>],
) -> Result<Vec<u8>, BackupError> {
    let encryptor = age::Encryptor::with_recipients(
        recipients.iter().map(|r| r.as_ref() as &dyn age::Recipient),
    )
    .map_err(|e| BackupError::Encrypt(e.to_string()))?;
    let chunks = plaintext.len().div_ceil(AGE_CHUNK_BYTES).max(1);
    let mut ciphertext = Vec::with_capacity(1024 + chunks * AGE_ENCRYPTED_CHUNK_BYTES);
    let mut writer = encryptor.wrap_output(&mut ciphertext)?;
    writer.write_all(plaintext)?;
    writer.finish()?;
    Ok(ciphertext)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_are_checked_because_they_go_into_file_names() {
        for good in ["cosmoshub-4", "osmosis-1", "test_chain.v2"] {
            assert!(validate_chain_id(good).is_ok(), "{good}");
        }
        let too_long = "x".repeat(51);
        for bad in ["", "a/b", "../x", ".hidden", "-x", "a b", too_long.as_str()] {
            assert!(validate_chain_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_tar_fills_whole_age_chunks_without_reallocating() {
        let data = vec![7u8; 70_000];
        let tar = build_tar(&[("a", b"x"), ("b", &data)], 0).unwrap();
        assert_eq!(tar.len(), 2 * AGE_CHUNK_BYTES);
        assert_eq!(tar.capacity(), tar.len());
        let mut archive = tar::Archive::new(tar.as_slice());
        assert_eq!(archive.entries().unwrap().count(), 2);
    }
}
