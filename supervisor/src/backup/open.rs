//! Opening a backup bundle: decrypt, unpack, verify, and check that it is the
//! bundle the caller expects (chain, validator, not older than known).
//!
//! Decrypting proves nothing (anyone can encrypt to a public age recipient),
//! so no metadata field is trusted before the signature over the exact
//! `metadata.json` bytes verifies under the caller's expected key. Every
//! failure is a [`Rejection`] naming the reason; nothing is partially
//! accepted.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::bundle::{
    AGE_ENCRYPTED_CHUNK_BYTES, BackupMetadata, FORMAT_VERSION, MAX_MEMBER_BYTES, METADATA_NAME,
    NODE_KEY_NAME, SIGNATURE_NAME, STATE_NAME, VALIDATOR_KEY_NAME, parse_state_watermark,
};
use crate::sign_state::Watermark;

/// Largest ciphertext [`open_bundle`] looks at. Real bundles are a few KiB
/// (one age chunk); the cap bounds the memory and work a hostile store can
/// make a restore spend.
pub const MAX_CIPHERTEXT_BYTES: usize = 1024 * 1024;
/// Largest age header [`open_bundle`] hands to age. A real one has a stanza
/// per recipient (the vault and the recovery recipients), about 100–200
/// bytes each.
pub const MAX_AGE_HEADER_BYTES: usize = 16 * 1024;
/// Most recipient stanzas in an age header. Each costs age a scalar
/// multiplication (and age 0.11 re-parses the header per line), so a
/// header stuffed with stanzas is a CPU bomb.
pub const MAX_AGE_STANZAS: usize = 32;
/// The first line of a binary age file.
const AGE_MAGIC: &[u8] = b"age-encryption.org/v1\n";
/// Most tar entries [`open_bundle`] reads before giving up.
pub const MAX_TAR_ENTRIES: usize = 64;

/// What the caller knows and requires of a bundle.
#[derive(Debug, Clone)]
pub struct Expectations {
    /// The validator's backup signing key (public half). A bundle signed by
    /// any other key is a forgery.
    pub verifying_key: ed25519_dalek::VerifyingKey,
    /// The chain this validator signs for.
    pub chain_id: String,
    /// The validator's consensus address (hex, any case).
    pub validator_address: String,
    /// Reject bundles with a sequence strictly below this (a replay of an
    /// older backup).
    pub min_sequence: Option<u64>,
    /// Reject bundles whose watermark is strictly below this.
    pub min_watermark: Option<Watermark>,
}

/// Why a bundle was rejected. Each kind is distinct so that reports and
/// alerts can tell a dead bastion from a hostile one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The ciphertext exceeds [`MAX_CIPHERTEXT_BYTES`].
    #[error("bundle is {bytes} bytes, more than the {limit}-byte limit")]
    TooLarge { bytes: usize, limit: usize },
    /// Not encrypted to our identity, not an age file, or the ciphertext was
    /// altered.
    #[error("bundle cannot be decrypted: {0}")]
    NotDecryptable(String),
    /// The age stream or the tar archive ends early.
    #[error("bundle is truncated: {0}")]
    Truncated(String),
    /// The plaintext is not a tar archive.
    #[error("bundle content is not a tar archive: {0}")]
    NotATar(String),
    /// The tar or the metadata is structurally wrong (duplicate or non-file
    /// entries, too many entries, metadata that does not parse…).
    #[error("bundle is malformed: {0}")]
    Malformed(String),
    /// A file the metadata lists, or one every bundle must have, is absent.
    #[error("bundle lacks {0}")]
    MissingFile(String),
    /// The bundle has no `metadata.json.sig`.
    #[error("bundle is unsigned (no metadata.json.sig)")]
    Unsigned,
    /// The signature does not verify, or the signer is not the expected key:
    /// a forged bundle (e.g. encrypted to our public recipient but signed by
    /// someone else).
    #[error("bundle signature is bad (forged or damaged): {0}")]
    BadSignature(String),
    /// A file's SHA-256 or size differs from the signed metadata.
    #[error("{name} does not match the hash pinned by the signed metadata")]
    FileHashMismatch { name: String },
    /// The tar has a file that neither the format nor the metadata allows.
    #[error("bundle has an unexpected file {0}")]
    UnexpectedFile(String),
    /// The bundle is for another chain.
    #[error("bundle is for chain {found}, expected {expected}")]
    OtherChain { expected: String, found: String },
    /// The bundle is for another validator.
    #[error("bundle is for validator {found}, expected {expected}")]
    OtherValidator { expected: String, found: String },
    /// The bundle's sequence is older than one already known: a replay.
    #[error("bundle sequence {sequence} is older than the known sequence {min} (rollback)")]
    RolledBack { sequence: u64, min: u64 },
    /// The bundle's watermark is below the known watermark.
    #[error("bundle watermark ({found}) is below the known watermark ({min})")]
    BelowWatermark { found: Watermark, min: Watermark },
    /// The signed metadata's watermark differs from the one in the bundled
    /// `priv_validator_state.json`.
    #[error("metadata watermark ({metadata}) differs from priv_validator_state.json ({state})")]
    WatermarkMismatch {
        metadata: Watermark,
        state: Watermark,
    },
    /// A format version this code does not understand.
    #[error("bundle format {0} is not supported (this build reads format 1)")]
    UnsupportedFormat(u32),
    /// The store file name does not match the signed metadata (a renamed
    /// bundle).
    #[error("file name {file_name} does not match its signed metadata (expected {expected})")]
    NameMismatch { file_name: String, expected: String },
}

/// A verified bundle.
pub struct OpenedBundle {
    /// The signed metadata.
    pub metadata: BackupMetadata,
    /// `priv_validator_state.json`, byte for byte.
    pub state: Vec<u8>,
    /// `priv_validator_key.json` when the bundle has it.
    pub priv_validator_key: Option<Zeroizing<Vec<u8>>>,
    /// `node_key.json` when the bundle has it.
    pub node_key: Option<Zeroizing<Vec<u8>>>,
}

impl fmt::Debug for OpenedBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenedBundle")
            .field("metadata", &self.metadata)
            .field("state", &String::from_utf8_lossy(&self.state))
            .field(
                "priv_validator_key",
                &self.priv_validator_key.as_ref().map(|_| "REDACTED"),
            )
            .field("node_key", &self.node_key.as_ref().map(|_| "REDACTED"))
            .finish()
    }
}

/// Decrypts and verifies a bundle. See the module docs for the order of
/// checks; the first failing one is returned.
pub fn open_bundle(
    ciphertext: &[u8],
    identity: &age::x25519::Identity,
    expected: &Expectations,
) -> Result<OpenedBundle, Rejection> {
    if ciphertext.len() > MAX_CIPHERTEXT_BYTES {
        return Err(Rejection::TooLarge {
            bytes: ciphertext.len(),
            limit: MAX_CIPHERTEXT_BYTES,
        });
    }
    check_age_header(ciphertext)?;
    let plaintext = decrypt(ciphertext, identity)?;
    let mut members = read_tar(&plaintext)?;

    let metadata_bytes = members
        .remove(METADATA_NAME)
        .ok_or_else(|| Rejection::MissingFile(METADATA_NAME.into()))?;
    let signature_text = members.remove(SIGNATURE_NAME).ok_or(Rejection::Unsigned)?;
    verify_signature(&metadata_bytes, &signature_text, &expected.verifying_key)?;

    // Authentic from here on: the expected key signed these exact bytes.
    let metadata = parse_metadata(&metadata_bytes)?;
    let expected_signer = BASE64.encode(expected.verifying_key.to_bytes());
    if metadata.signer != expected_signer {
        return Err(Rejection::BadSignature(format!(
            "metadata names signer {}, expected {expected_signer}",
            metadata.signer
        )));
    }

    let mut state = None;
    let mut priv_validator_key = None;
    let mut node_key = None;
    for entry in &metadata.files {
        let content = members
            .remove(entry.name.as_str())
            .ok_or_else(|| Rejection::MissingFile(entry.name.clone()))?;
        if content.len() as u64 != entry.bytes
            || hex::encode(Sha256::digest(content.as_slice())) != entry.sha256
        {
            return Err(Rejection::FileHashMismatch {
                name: entry.name.clone(),
            });
        }
        let slot = match entry.name.as_str() {
            STATE_NAME => &mut state,
            VALIDATOR_KEY_NAME => &mut priv_validator_key,
            NODE_KEY_NAME => &mut node_key,
            other => return Err(Rejection::UnexpectedFile(other.to_owned())),
        };
        if slot.replace(content).is_some() {
            return Err(Rejection::Malformed(format!(
                "metadata lists {} twice",
                entry.name
            )));
        }
    }
    if let Some(extra) = members.keys().next() {
        return Err(Rejection::UnexpectedFile((*extra).to_owned()));
    }
    let mut state = state.ok_or_else(|| Rejection::MissingFile(STATE_NAME.into()))?;

    if metadata.chain_id != expected.chain_id {
        return Err(Rejection::OtherChain {
            expected: expected.chain_id.clone(),
            found: metadata.chain_id.clone(),
        });
    }
    if !metadata
        .validator_address
        .eq_ignore_ascii_case(&expected.validator_address)
    {
        return Err(Rejection::OtherValidator {
            expected: expected.validator_address.to_ascii_uppercase(),
            found: metadata.validator_address.clone(),
        });
    }
    let state_watermark = parse_state_watermark(&state)
        .map_err(|reason| Rejection::Malformed(format!("priv_validator_state.json: {reason}")))?;
    if state_watermark != metadata.watermark {
        return Err(Rejection::WatermarkMismatch {
            metadata: metadata.watermark,
            state: state_watermark,
        });
    }
    if let Some(min) = expected.min_sequence
        && metadata.sequence < min
    {
        return Err(Rejection::RolledBack {
            sequence: metadata.sequence,
            min,
        });
    }
    if let Some(min) = expected.min_watermark
        && metadata.watermark < min
    {
        return Err(Rejection::BelowWatermark {
            found: metadata.watermark,
            min,
        });
    }

    Ok(OpenedBundle {
        metadata,
        // The sign state is not secret; move it out of its zeroizing wrapper.
        state: std::mem::take(&mut *state),
        priv_validator_key,
        node_key,
    })
}

/// Bounds the age header before age parses it: the binary magic, a header
/// that ends (`--- ` line) within [`MAX_AGE_HEADER_BYTES`], and at most
/// [`MAX_AGE_STANZAS`] recipient stanzas (`-> ` lines).
fn check_age_header(ciphertext: &[u8]) -> Result<(), Rejection> {
    if !ciphertext.starts_with(AGE_MAGIC) {
        return Err(Rejection::NotDecryptable(
            "not a binary age file (no age-encryption.org/v1 header)".into(),
        ));
    }
    let window = &ciphertext[..ciphertext.len().min(MAX_AGE_HEADER_BYTES)];
    let mut stanzas = 0usize;
    for line in window.split(|&byte| byte == b'\n') {
        if line.starts_with(b"--- ") {
            return Ok(());
        }
        if line.starts_with(b"-> ") {
            stanzas += 1;
            if stanzas > MAX_AGE_STANZAS {
                return Err(Rejection::Malformed(format!(
                    "age header has more than {MAX_AGE_STANZAS} recipient stanzas"
                )));
            }
        }
    }
    if ciphertext.len() <= MAX_AGE_HEADER_BYTES {
        Err(Rejection::Truncated("age header: no --- line".into()))
    } else {
        Err(Rejection::Malformed(format!(
            "age header is longer than {MAX_AGE_HEADER_BYTES} bytes"
        )))
    }
}

fn decrypt(
    ciphertext: &[u8],
    identity: &age::x25519::Identity,
) -> Result<Zeroizing<Vec<u8>>, Rejection> {
    let decryptor = age::Decryptor::new_buffered(ciphertext).map_err(|e| match e {
        age::DecryptError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            Rejection::Truncated(format!("age header: {io}"))
        }
        other => Rejection::NotDecryptable(other.to_string()),
    })?;
    let mut reader = decryptor
        .decrypt(std::iter::once(identity as &dyn age::Identity))
        .map_err(|e| Rejection::NotDecryptable(e.to_string()))?;
    // The plaintext is shorter than the ciphertext, so this capacity is never
    // outgrown and no unzeroized copy of key bytes is left by a reallocation.
    let mut plaintext = Zeroizing::new(Vec::with_capacity(ciphertext.len()));
    if let Err(error) = reader.read_to_end(&mut plaintext) {
        return Err(classify_stream_error(ciphertext, &error));
    }
    Ok(plaintext)
}

/// A decryption failure inside the payload is either a cut-short file or an
/// altered one; AEAD cannot say which. Bundles written by this module have
/// payloads of whole chunks, so a partial last chunk means truncation.
fn classify_stream_error(ciphertext: &[u8], error: &std::io::Error) -> Rejection {
    if error.kind() == std::io::ErrorKind::UnexpectedEof {
        return Rejection::Truncated(error.to_string());
    }
    let payload_len = age_header_len(ciphertext)
        .and_then(|header| ciphertext.len().checked_sub(header + 16))
        .unwrap_or(0);
    if !payload_len.is_multiple_of(AGE_ENCRYPTED_CHUNK_BYTES) {
        Rejection::Truncated(format!(
            "age payload of {payload_len} bytes is not a whole number of chunks"
        ))
    } else {
        Rejection::NotDecryptable(error.to_string())
    }
}

/// Length of the textual age v1 header, through the newline ending the
/// `--- <mac>` line (stanza lines never start with `---`).
fn age_header_len(ciphertext: &[u8]) -> Option<usize> {
    let marker = b"\n--- ";
    let start = ciphertext
        .windows(marker.len())
        .position(|window| window == marker)?;
    let end = ciphertext[start + 1..].iter().position(|&b| b == b'\n')?;
    Some(start + 1 + end + 1)
}

/// Reads every tar member into memory, keyed by name. Only the member names
/// the format defines are accepted, each at most once.
fn read_tar(plaintext: &[u8]) -> Result<BTreeMap<&'static str, Zeroizing<Vec<u8>>>, Rejection> {
    const KNOWN: [&str; 5] = [
        METADATA_NAME,
        SIGNATURE_NAME,
        STATE_NAME,
        VALIDATOR_KEY_NAME,
        NODE_KEY_NAME,
    ];
    let tar_error = |error: std::io::Error, first: bool| {
        if error.kind() == std::io::ErrorKind::UnexpectedEof {
            Rejection::Truncated(format!("tar: {error}"))
        } else if first {
            Rejection::NotATar(error.to_string())
        } else {
            Rejection::Malformed(format!("tar: {error}"))
        }
    };
    if plaintext.len() < 512 {
        return Err(Rejection::NotATar(format!(
            "{} bytes is shorter than one tar block",
            plaintext.len()
        )));
    }
    let mut archive = tar::Archive::new(plaintext);
    let entries = archive.entries().map_err(|e| tar_error(e, true))?;
    let mut members = BTreeMap::new();
    for (index, entry) in entries.enumerate() {
        if index >= MAX_TAR_ENTRIES {
            return Err(Rejection::Malformed(format!(
                "more than {MAX_TAR_ENTRIES} tar entries"
            )));
        }
        let mut entry = entry.map_err(|e| tar_error(e, index == 0))?;
        let raw_path = entry.path_bytes().into_owned();
        let path = raw_path.strip_prefix(b"./").unwrap_or(&raw_path);
        let name = String::from_utf8_lossy(path).into_owned();
        let Some(known) = KNOWN.iter().copied().find(|k| k.as_bytes() == path) else {
            return Err(Rejection::UnexpectedFile(name));
        };
        let entry_type = entry.header().entry_type();
        if !matches!(
            entry_type,
            tar::EntryType::Regular | tar::EntryType::Continuous
        ) {
            return Err(Rejection::Malformed(format!(
                "{name} is not a regular file ({entry_type:?})"
            )));
        }
        let size = entry
            .header()
            .entry_size()
            .map_err(|e| Rejection::Malformed(format!("{name}: {e}")))?;
        if size > MAX_MEMBER_BYTES as u64 {
            return Err(Rejection::Malformed(format!(
                "{name} is {size} bytes, more than the {MAX_MEMBER_BYTES}-byte limit"
            )));
        }
        let size = size as usize;
        let mut content = Zeroizing::new(Vec::with_capacity(size));
        (&mut entry)
            .take(size as u64)
            .read_to_end(&mut content)
            .map_err(|e| tar_error(e, false))?;
        if content.len() != size {
            return Err(Rejection::Truncated(format!(
                "tar member {name} has {} of {size} bytes",
                content.len()
            )));
        }
        if members.insert(known, content).is_some() {
            return Err(Rejection::Malformed(format!("{name} appears twice")));
        }
    }
    Ok(members)
}

fn verify_signature(
    metadata: &[u8],
    signature_text: &[u8],
    key: &ed25519_dalek::VerifyingKey,
) -> Result<(), Rejection> {
    let text = std::str::from_utf8(signature_text)
        .map_err(|_| Rejection::BadSignature("signature file is not text".into()))?;
    let raw = BASE64
        .decode(text.trim())
        .map_err(|e| Rejection::BadSignature(format!("signature is not base64: {e}")))?;
    let raw: [u8; 64] = raw.try_into().map_err(|raw: Vec<u8>| {
        Rejection::BadSignature(format!("signature is {} bytes, not 64", raw.len()))
    })?;
    let signature = ed25519_dalek::Signature::from_bytes(&raw);
    key.verify_strict(metadata, &signature).map_err(|_| {
        Rejection::BadSignature(
            "signature over metadata.json does not verify under the expected key".into(),
        )
    })
}

fn parse_metadata(bytes: &[u8]) -> Result<BackupMetadata, Rejection> {
    // Read the version alone first so a newer format reports itself as
    // such rather than as unknown fields.
    #[derive(serde::Deserialize)]
    struct Version {
        format: u32,
    }
    let version: Version = serde_json::from_slice(bytes)
        .map_err(|e| Rejection::Malformed(format!("metadata.json: {e}")))?;
    if version.format != FORMAT_VERSION {
        return Err(Rejection::UnsupportedFormat(version.format));
    }
    serde_json::from_slice(bytes).map_err(|e| Rejection::Malformed(format!("metadata.json: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign_state::Step;

    type Expected = Option<(u64, u32, Step)>;

    /// The age header is bounded before age parses it (issue 16, finding
    /// 1): stanza count and header size.
    #[test]
    fn the_age_header_is_bounded_before_age_sees_it() {
        let header = |stanzas: usize, padding: usize| {
            let mut file = AGE_MAGIC.to_vec();
            for _ in 0..stanzas {
                file.extend_from_slice(b"-> X25519 AAAA\nBBBB\n");
            }
            file.extend_from_slice(&vec![b'x'; padding]);
            file.extend_from_slice(b"\n--- CCCC\npayload");
            file
        };
        // (file, accepted?, words in the rejection)
        let table: Vec<(Vec<u8>, bool, &str)> = vec![
            (header(1, 0), true, ""),
            (header(MAX_AGE_STANZAS, 0), true, ""),
            (header(MAX_AGE_STANZAS + 1, 0), false, "recipient stanzas"),
            (header(10_000, 0), false, "recipient stanzas"),
            (header(1, MAX_AGE_HEADER_BYTES), false, "longer than"),
            (
                b"-----BEGIN AGE ENCRYPTED FILE-----\n".to_vec(),
                false,
                "not a binary age file",
            ),
            (
                b"age-encryption.org/v1\n-> X25519 AAAA\n".to_vec(),
                false,
                "no --- line",
            ),
            (Vec::new(), false, "not a binary age file"),
        ];
        for (file, accepted, words) in table {
            match check_age_header(&file) {
                Ok(()) => assert!(accepted, "{} bytes accepted", file.len()),
                Err(rejection) => {
                    assert!(!accepted, "{rejection}");
                    assert!(rejection.to_string().contains(words), "{rejection}");
                }
            }
        }
    }

    #[test]
    fn parses_the_watermark_of_cometbft_state_files() {
        let cases: [(&[u8], Expected); 7] = [
            (
                br#"{"height":"0","round":0,"step":0}"#,
                Some((0, 0, Step::None)),
            ),
            (
                br#"{"height":"1234","round":2,"step":3,"signature":"AAEC","signbytes":"0A0B"}"#,
                Some((1234, 2, Step::Precommit)),
            ),
            // CometBFT always writes the height as a string; the one
            // sign-state parser is strict about it.
            (br#"{"height":77,"round":0,"step":2}"#, None),
            (br#"{"height":"-1","round":0,"step":0}"#, None),
            (br#"{"height":"1","round":0,"step":4}"#, None),
            (br#"{"round":0,"step":1}"#, None),
            (b"", None),
        ];
        for (bytes, expected) in cases {
            let parsed = parse_state_watermark(bytes)
                .map(|w| (w.height, w.round, w.step))
                .ok();
            assert_eq!(parsed, expected, "{}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn finds_the_end_of_the_age_header() {
        let file = b"age-encryption.org/v1\n-> X25519 abc\ndef\n--- MAC\nNONCE...";
        assert_eq!(age_header_len(file), Some(file.len() - 8));
        assert_eq!(
            age_header_len(b"age-encryption.org/v1\n-> X25519 abc\n"),
            None
        );
    }

    #[test]
    fn debug_of_an_opened_bundle_redacts_keys() {
        let bundle = OpenedBundle {
            metadata: BackupMetadata {
                format: 1,
                chain_id: "c".into(),
                validator_address: "A".into(),
                watermark: Watermark {
                    height: 1,
                    round: 0,
                    step: Step::None,
                },
                sequence: 1,
                host_id: "h".into(),
                created_at: "t".into(),
                software_version: "v".into(),
                signer: "s".into(),
                files: vec![],
            },
            state: b"{}".to_vec(),
            priv_validator_key: Some(Zeroizing::new(b"TOP-SECRET".to_vec())),
            node_key: Some(Zeroizing::new(b"TOP-SECRET".to_vec())),
        };
        let debug = format!("{bundle:?}");
        assert!(!debug.contains("TOP-SECRET") && debug.contains("REDACTED"));
    }
}
