//! Sealing a segment: the [`Sealer`] turns a segment's plaintext into its
//! two objects (the writer thread that cuts segments is `super::writer`).
//!
//! Sealing, in order: zstd (one frame, level 3), age (binary, to every
//! recipient), then the signed metadata ([`SegmentMetadata`]: names, times,
//! counts, and the ciphertext's length and SHA-256) with an ed25519
//! signature over [`signed_message`]. The signature covers the ciphertext
//! through its hash, so a reader checks it before decrypting.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::SystemTime;

use ed25519_dalek::{Signer, SigningKey};
use palisade_wire::log_segment::{
    FORMAT, SegmentMetadata, SegmentName, SignatureFile, signed_message, to_hex,
};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::record::timestamp;

/// zstd's level: fast (hundreds of MB/s) and a good ratio on log text.
const ZSTD_LEVEL: i32 = 3;

/// Loads an unencrypted OpenSSH ed25519 private key (mode 0600 or
/// stricter), as the tunnel uses it.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, String> {
    let metadata = std::fs::metadata(path).map_err(|error| error.to_string())?;
    if metadata.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "permissions {:o} are too open (others can read the key); chmod 600 it",
            metadata.permissions().mode() & 0o777
        ));
    }
    let text = Zeroizing::new(std::fs::read(path).map_err(|error| error.to_string())?);
    let key = russh::keys::ssh_key::PrivateKey::from_openssh(&*text)
        .map_err(|error| format!("not an OpenSSH private key: {error}"))?;
    if key.is_encrypted() {
        return Err("the key has a passphrase, which the supervisor cannot type".into());
    }
    let keypair = key.key_data().ed25519().ok_or_else(|| {
        format!(
            "a {} key: segments are signed with ed25519; set logs.signing-key to an ed25519 key",
            key.algorithm()
        )
    })?;
    let seed = Zeroizing::new(keypair.private.to_bytes());
    Ok(SigningKey::from_bytes(&seed))
}

/// Seals segments: who writes them, to whom, signed with what.
pub struct Sealer {
    validator: String,
    host: String,
    recipients: Vec<Box<dyn age::Recipient + Send>>,
    key: SigningKey,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("validator", &self.validator)
            .field("host", &self.host)
            .field("recipients", &self.recipients.len())
            .field("key", &"REDACTED")
            .finish()
    }
}

/// A sealed segment: its name and its two objects.
#[derive(Debug, Clone)]
pub struct Sealed {
    pub name: SegmentName,
    pub ciphertext: Vec<u8>,
    pub signature: Vec<u8>,
}

/// The lines of a segment being written.
#[derive(Debug, Default)]
pub struct Plaintext {
    pub bytes: Vec<u8>,
    pub lines: u64,
    pub first: Option<SystemTime>,
    pub last: Option<SystemTime>,
}

impl Sealer {
    pub fn new(
        validator: &str,
        host: &str,
        recipients: Vec<Box<dyn age::Recipient + Send>>,
        key: SigningKey,
    ) -> Sealer {
        Sealer {
            validator: validator.to_owned(),
            host: host.to_owned(),
            recipients,
            key,
        }
    }

    /// Compress, encrypt and sign `plaintext` as segment `sequence`.
    pub fn seal(
        &self,
        sequence: u64,
        plaintext: &Plaintext,
        lines_dropped_before: u64,
    ) -> Result<Sealed, String> {
        let compressed = zstd::bulk::compress(&plaintext.bytes, ZSTD_LEVEL)
            .map_err(|error| format!("zstd: {error}"))?;
        let encryptor = age::Encryptor::with_recipients(
            self.recipients
                .iter()
                .map(|recipient| recipient.as_ref() as &dyn age::Recipient),
        )
        .map_err(|error| format!("age: {error}"))?;
        let mut ciphertext = Vec::with_capacity(compressed.len() + 4096);
        let mut writer = encryptor
            .wrap_output(&mut ciphertext)
            .map_err(|error| format!("age: {error}"))?;
        writer
            .write_all(&compressed)
            .and_then(|()| writer.finish().map(drop))
            .map_err(|error| format!("age: {error}"))?;
        let now = SystemTime::now();
        let metadata = SegmentMetadata {
            format: FORMAT.into(),
            validator: self.validator.clone(),
            host: self.host.clone(),
            sequence,
            first_ts: timestamp(plaintext.first.unwrap_or(now)),
            last_ts: timestamp(plaintext.last.unwrap_or(now)),
            lines: plaintext.lines,
            lines_dropped_before,
            plaintext_bytes: plaintext.bytes.len() as u64,
            ciphertext_bytes: ciphertext.len() as u64,
            ciphertext_sha256: to_hex(&Sha256::digest(&ciphertext)),
        };
        let signature = self.key.sign(&signed_message(&metadata));
        let name = metadata.name();
        let signature = SignatureFile {
            metadata,
            signature: to_hex(&signature.to_bytes()),
        }
        .to_bytes();
        Ok(Sealed {
            name,
            ciphertext,
            signature,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_sealed_segment_verifies_and_decrypts_to_its_lines() {
        let identity = age::x25519::Identity::generate();
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let sealer = Sealer::new(
            "val-a",
            "host-1",
            vec![Box::new(identity.to_public())],
            key.clone(),
        );
        let plaintext = Plaintext {
            bytes: b"one\ntwo\n".to_vec(),
            lines: 2,
            first: Some(SystemTime::UNIX_EPOCH),
            last: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(5)),
        };
        let sealed = sealer.seal(9, &plaintext, 4).unwrap();
        assert_eq!(
            sealed.name.ciphertext_file(),
            "log-host-1-00000000000000000009.age"
        );
        let file = SignatureFile::parse(&sealed.signature).unwrap();
        assert_eq!(file.metadata.lines, 2);
        assert_eq!(file.metadata.lines_dropped_before, 4);
        assert_eq!(file.metadata.first_ts, "1970-01-01T00:00:00.000Z");
        assert_eq!(file.metadata.last_ts, "1970-01-01T00:00:00.005Z");
        assert_eq!(
            file.metadata.ciphertext_sha256,
            to_hex(&Sha256::digest(&sealed.ciphertext))
        );
        let signature = ed25519_dalek::Signature::from_bytes(&file.signature_bytes().unwrap());
        key.verifying_key()
            .verify_strict(&signed_message(&file.metadata), &signature)
            .unwrap();
        let decryptor = age::Decryptor::new_buffered(&sealed.ciphertext[..]).unwrap();
        let mut reader = decryptor
            .decrypt(std::iter::once(&identity as &dyn age::Identity))
            .unwrap();
        let mut compressed = Vec::new();
        std::io::Read::read_to_end(&mut reader, &mut compressed).unwrap();
        assert_eq!(zstd::decode_all(&compressed[..]).unwrap(), b"one\ntwo\n");
    }

    #[test]
    fn signing_keys_must_be_private_ed25519_and_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let status = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
        assert!(load_signing_key(&path).is_ok());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_signing_key(&path).unwrap_err().contains("too open"));
        let rsa = dir.path().join("rsa");
        let status = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "rsa", "-b", "2048", "-N", "", "-f"])
            .arg(&rsa)
            .status()
            .unwrap();
        assert!(status.success());
        assert!(load_signing_key(&rsa).unwrap_err().contains("ed25519"));
        assert!(load_signing_key(&dir.path().join("missing")).is_err());
    }
}
