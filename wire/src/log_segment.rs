//! The shapes of a shipped log segment (`docs/log-format.md`): its file
//! names, its signed metadata record and the detached signature file.
//!
//! A segment is two objects of kind `log` in a bastion's store:
//!
//! - `log-<host>-<sequence:020>.age`: the lines, zstd-compressed, then
//!   age-encrypted (binary) to the log recipients — `age -d -i KEY | zstd -d`
//!   prints them;
//! - `log-<host>-<sequence:020>.sig`: a small JSON [`SignatureFile`]: the
//!   [`SegmentMetadata`] (validator, host, sequence, first and last line's
//!   time, line count, the ciphertext's length and SHA-256) and an ed25519
//!   signature over [`signed_message`] of it.
//!
//! A reader verifies the signature with the pinned public key *before* it
//! decrypts anything, then checks that the names, the validator asked for
//! and the ciphertext (length and hash) all match the signed record: so a
//! bastion can neither forge, alter, truncate nor rename a segment without
//! the reader noticing.
//!
//! Pure shapes and rules only; the writing is the supervisor's
//! (`palisade_supervisor::logs`) and the reading `palisade-ctl`'s.

use serde::{Deserialize, Serialize};

use crate::names::validator_name_problem;

/// What every segment's file name starts with.
pub const SEGMENT_PREFIX: &str = "log-";
/// The ciphertext object's suffix.
pub const CIPHERTEXT_SUFFIX: &str = ".age";
/// The signature object's suffix.
pub const SIGNATURE_SUFFIX: &str = ".sig";
/// [`SegmentMetadata::format`] of this version.
pub const FORMAT: &str = "palisade-log-segment-v1";
/// Put before the metadata in the signed message, so that the signature
/// can never be taken for one of another protocol's (an SSH login's signed
/// data starts with a 4-byte length; no challenge or handoff record starts
/// with these bytes).
pub const SIGNING_CONTEXT: &[u8] = b"palisade-log-segment-v1\n";
/// Largest signature file a reader accepts, in bytes.
pub const MAX_SIGNATURE_FILE_BYTES: usize = 4096;

/// Which of a segment's two objects a file name names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SegmentPart {
    Ciphertext,
    Signature,
}

/// A segment's name: the host that wrote it and its sequence number on
/// that host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentName {
    /// [`host_name_problem`] holds.
    pub host: String,
    pub sequence: u64,
}

impl SegmentName {
    /// `log-<host>-<sequence:020>`: lexical order is sequence order for one
    /// host.
    pub fn stem(&self) -> String {
        format!("{SEGMENT_PREFIX}{}-{:020}", self.host, self.sequence)
    }

    /// The ciphertext object's name.
    pub fn ciphertext_file(&self) -> String {
        format!("{}{CIPHERTEXT_SUFFIX}", self.stem())
    }

    /// The signature object's name.
    pub fn signature_file(&self) -> String {
        format!("{}{SIGNATURE_SUFFIX}", self.stem())
    }

    /// Parses a name written by [`SegmentName::ciphertext_file`] or
    /// [`SegmentName::signature_file`]; `None` for anything else.
    pub fn parse(name: &str) -> Option<(SegmentName, SegmentPart)> {
        let (stem, part) = if let Some(stem) = name.strip_suffix(CIPHERTEXT_SUFFIX) {
            (stem, SegmentPart::Ciphertext)
        } else {
            (name.strip_suffix(SIGNATURE_SUFFIX)?, SegmentPart::Signature)
        };
        let core = stem.strip_prefix(SEGMENT_PREFIX)?;
        let (host, sequence) = core.rsplit_once('-')?;
        if sequence.len() != 20 || !sequence.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if host_name_problem(host).is_some() {
            return None;
        }
        Some((
            SegmentName {
                host: host.to_owned(),
                sequence: sequence.parse().ok()?,
            },
            part,
        ))
    }
}

/// Why `host` cannot name a segment's writer, or `None`: the rule of
/// validator names ([`validator_name_problem`]): 1–64 of `[A-Za-z0-9._-]`,
/// not starting with `-` or `.`.
pub fn host_name_problem(host: &str) -> Option<String> {
    validator_name_problem(host)
}

/// The signed record of one segment. Field order is the serialization
/// order, and the signature covers that serialization
/// ([`signed_message`]); add fields only with a new [`FORMAT`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentMetadata {
    /// [`FORMAT`].
    pub format: String,
    /// The validator's name, as the bastions know it (`[rpc] name`).
    pub validator: String,
    /// The host that wrote it (`[logs] host`).
    pub host: String,
    /// Increasing by one per segment on that host, never reused (it
    /// survives restarts).
    pub sequence: u64,
    /// The first and last line's time, RFC 3339 UTC with milliseconds.
    pub first_ts: String,
    pub last_ts: String,
    /// Lines in the segment.
    pub lines: u64,
    /// Lines lost on the host (a full buffer) since the previous segment.
    pub lines_dropped_before: u64,
    /// Bytes of the lines (before compression).
    pub plaintext_bytes: u64,
    /// Bytes of the `.age` object.
    pub ciphertext_bytes: u64,
    /// SHA-256 of the `.age` object, lower-case hex.
    pub ciphertext_sha256: String,
}

impl SegmentMetadata {
    /// The segment's name as its metadata gives it.
    pub fn name(&self) -> SegmentName {
        SegmentName {
            host: self.host.clone(),
            sequence: self.sequence,
        }
    }
}

/// The bytes the signature covers: [`SIGNING_CONTEXT`], then the
/// metadata's JSON (its fields in declaration order, no whitespace).
pub fn signed_message(metadata: &SegmentMetadata) -> Vec<u8> {
    let json = serde_json::to_vec(metadata).expect("segment metadata always serializes");
    let mut message = Vec::with_capacity(SIGNING_CONTEXT.len() + json.len());
    message.extend_from_slice(SIGNING_CONTEXT);
    message.extend_from_slice(&json);
    message
}

/// The `.sig` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureFile {
    pub metadata: SegmentMetadata,
    /// The 64-byte ed25519 signature of [`signed_message`], lower-case hex.
    pub signature: String,
}

impl SignatureFile {
    /// The file's bytes (JSON and a newline).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec(self).expect("signature files always serialize");
        bytes.push(b'\n');
        bytes
    }

    /// Parses a `.sig` object; the error says why it is not one.
    pub fn parse(bytes: &[u8]) -> Result<SignatureFile, String> {
        if bytes.len() > MAX_SIGNATURE_FILE_BYTES {
            return Err(format!(
                "{} bytes, more than a signature file may hold ({MAX_SIGNATURE_FILE_BYTES})",
                bytes.len()
            ));
        }
        let file: SignatureFile = serde_json::from_slice(bytes)
            .map_err(|error| crate::peer_text::clean(&format!("not a signature file: {error}")))?;
        if file.metadata.format != FORMAT {
            return Err(crate::peer_text::clean(&format!(
                "unknown format {:?} (this reader knows {FORMAT})",
                file.metadata.format
            )));
        }
        Ok(file)
    }

    /// The signature's 64 bytes, or why the hex is not one.
    pub fn signature_bytes(&self) -> Result<[u8; 64], String> {
        let text = self.signature.as_bytes();
        if text.len() != 128 {
            return Err("the signature is not 64 bytes of hex".into());
        }
        let mut bytes = [0u8; 64];
        for (index, pair) in text.chunks(2).enumerate() {
            let digit = |b: u8| (b as char).to_digit(16);
            match (digit(pair[0]), digit(pair[1])) {
                (Some(high), Some(low)) => bytes[index] = (high * 16 + low) as u8,
                _ => return Err("the signature is not 64 bytes of hex".into()),
            }
        }
        Ok(bytes)
    }
}

/// Lower-case hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata() -> SegmentMetadata {
        SegmentMetadata {
            format: FORMAT.into(),
            validator: "val-a".into(),
            host: "host-1".into(),
            sequence: 7,
            first_ts: "2026-01-01T00:00:00.000Z".into(),
            last_ts: "2026-01-01T00:00:09.999Z".into(),
            lines: 3,
            lines_dropped_before: 0,
            plaintext_bytes: 300,
            ciphertext_bytes: 400,
            ciphertext_sha256: "ab".repeat(32),
        }
    }

    #[test]
    fn names_round_trip_and_sort_by_sequence() {
        let name = SegmentName {
            host: "host-1.example".into(),
            sequence: 42,
        };
        assert_eq!(
            name.ciphertext_file(),
            "log-host-1.example-00000000000000000042.age"
        );
        assert_eq!(
            SegmentName::parse(&name.ciphertext_file()),
            Some((name.clone(), SegmentPart::Ciphertext))
        );
        assert_eq!(
            SegmentName::parse(&name.signature_file()),
            Some((name.clone(), SegmentPart::Signature))
        );
        let next = SegmentName {
            sequence: 100,
            ..name.clone()
        };
        assert!(name.ciphertext_file() < next.ciphertext_file());
        for bad in [
            "log-h-42.age",
            "log--00000000000000000042.age",
            "log-.h-00000000000000000042.age",
            "log-h-00000000000000000042.txt",
            "backup-h-00000000000000000042.age",
            "log-h-0000000000000000004x.sig",
            "log-h/x-00000000000000000042.sig",
        ] {
            assert_eq!(SegmentName::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_signed_message_is_the_context_then_the_fields_in_order() {
        let message = signed_message(&metadata());
        let text = String::from_utf8(message).unwrap();
        assert!(text.starts_with("palisade-log-segment-v1\n{\"format\":\"palisade-log-segment-v1\",\"validator\":\"val-a\",\"host\":\"host-1\",\"sequence\":7,"));
    }

    #[test]
    fn signature_files_round_trip_and_bad_ones_are_refused() {
        let file = SignatureFile {
            metadata: metadata(),
            signature: "0f".repeat(64),
        };
        let parsed = SignatureFile::parse(&file.to_bytes()).unwrap();
        assert_eq!(parsed, file);
        assert_eq!(parsed.signature_bytes().unwrap(), [0x0f; 64]);
        let mut other = file.clone();
        other.metadata.format = "v0".into();
        assert!(
            SignatureFile::parse(&other.to_bytes())
                .unwrap_err()
                .contains("unknown format")
        );
        let mut short = file.clone();
        short.signature = "0f".into();
        assert!(short.signature_bytes().is_err());
        short.signature = "zz".repeat(64);
        assert!(short.signature_bytes().is_err());
        assert!(SignatureFile::parse(b"{}").is_err());
        assert!(SignatureFile::parse(&vec![b' '; MAX_SIGNATURE_FILE_BYTES + 1]).is_err());
        let extra = String::from_utf8(file.to_bytes())
            .unwrap()
            .replacen("{", "{\"x\":1,", 1);
        assert!(SignatureFile::parse(extra.as_bytes()).is_err());
    }
}
