//! CometBFT key files: `priv_validator_key.json` and `node_key.json`.
//!
//! Formats (byte-for-byte what CometBFT writes):
//!
//! ```json
//! {"address":"<UPPERHEX of first 20 bytes of sha256(pubkey)>",
//!  "pub_key":{"type":"tendermint/PubKeyEd25519","value":"<b64 32 bytes>"},
//!  "priv_key":{"type":"tendermint/PrivKeyEd25519","value":"<b64 64 bytes: seed || pubkey>"}}
//! ```
//!
//! `node_key.json` is `{"priv_key":{"type":"tendermint/PrivKeyEd25519","value":"<b64 64 bytes>"}}`;
//! the node ID is the lowercase hex of the same address derivation.
//!
//! Key files are created 0600. Secret bytes never appear in `Debug` output.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Amino type name of an ed25519 public key.
pub const PUB_KEY_TYPE: &str = "tendermint/PubKeyEd25519";
/// Amino type name of an ed25519 private key.
pub const PRIV_KEY_TYPE: &str = "tendermint/PrivKeyEd25519";

/// Errors loading or decoding key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read or written.
    #[error("key file {path}: {source}")]
    Io {
        /// File involved.
        path: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The key file is not the JSON CometBFT writes.
    #[error("key file {path}: invalid JSON: {source}")]
    Json {
        /// File involved.
        path: String,
        /// Underlying error.
        source: serde_json::Error,
    },
    /// A key has the wrong type tag, encoding or length.
    #[error("invalid key: {0}")]
    Invalid(String),
}

/// `{"type": ..., "value": ...}` — Amino JSON for a typed key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypedKey {
    /// Amino type name.
    #[serde(rename = "type")]
    pub key_type: String,
    /// Base64 of the key bytes.
    pub value: String,
}

impl std::fmt::Debug for TypedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.key_type == PRIV_KEY_TYPE {
            write!(f, "TypedKey({}, REDACTED)", self.key_type)
        } else {
            write!(f, "TypedKey({}, {})", self.key_type, self.value)
        }
    }
}

/// Contents of `priv_validator_key.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrivValidatorKeyFile {
    /// Uppercase hex validator address.
    pub address: String,
    /// Public key.
    pub pub_key: TypedKey,
    /// Private key (seed || public key).
    pub priv_key: TypedKey,
}

/// Contents of `node_key.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeKeyFile {
    /// Private key (seed || public key).
    pub priv_key: TypedKey,
}

/// A validator's signing key with its derived identities.
pub struct ValidatorKey {
    signing_key: SigningKey,
}

impl std::fmt::Debug for ValidatorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ValidatorKey(address={}, REDACTED)", self.address())
    }
}

/// Uppercase hex of the first 20 bytes of sha256(pubkey): CometBFT's ed25519 address.
pub fn address_of(pub_key: &[u8; 32]) -> String {
    let digest = Sha256::digest(pub_key);
    hex::encode_upper(&digest[..20])
}

/// Decodes a base64 ed25519 public key.
pub fn decode_pub_key(b64: &str) -> Result<VerifyingKey, KeyError> {
    let bytes = B64
        .decode(b64.trim())
        .map_err(|e| KeyError::Invalid(format!("public key is not base64: {e}")))?;
    let array: [u8; 32] = bytes
        .try_into()
        .map_err(|_| KeyError::Invalid("public key is not 32 bytes".into()))?;
    VerifyingKey::from_bytes(&array).map_err(|e| KeyError::Invalid(format!("public key: {e}")))
}

impl ValidatorKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        let seed: [u8; 32] = rand::random();
        Self {
            signing_key: SigningKey::from_bytes(&seed),
        }
    }

    /// A key from a 32-byte seed (deterministic keys for tests).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            signing_key: SigningKey::from_bytes(&seed),
        }
    }

    /// Raw public key bytes.
    pub fn pub_key_bytes(&self) -> [u8; 32] {
        self.signing_key.verifying_key().to_bytes()
    }

    /// Base64 public key, as in `pub_key.value`.
    pub fn pub_key_b64(&self) -> String {
        B64.encode(self.pub_key_bytes())
    }

    /// Uppercase hex address.
    pub fn address(&self) -> String {
        address_of(&self.pub_key_bytes())
    }

    /// Signs `message` with ed25519.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing_key.sign(message).to_bytes()
    }

    /// The `priv_validator_key.json` document for this key.
    pub fn to_file(&self) -> PrivValidatorKeyFile {
        PrivValidatorKeyFile {
            address: self.address(),
            pub_key: TypedKey {
                key_type: PUB_KEY_TYPE.into(),
                value: self.pub_key_b64(),
            },
            priv_key: TypedKey {
                key_type: PRIV_KEY_TYPE.into(),
                value: B64.encode(self.signing_key.to_keypair_bytes()),
            },
        }
    }

    /// Decodes a `priv_validator_key.json` document, checking that address and public key agree
    /// with the private key.
    pub fn from_file(file: &PrivValidatorKeyFile) -> Result<Self, KeyError> {
        let key = Self::from_priv_key(&file.priv_key)?;
        if file.pub_key.value != key.pub_key_b64() {
            return Err(KeyError::Invalid("pub_key does not match priv_key".into()));
        }
        if !file.address.eq_ignore_ascii_case(&key.address()) {
            return Err(KeyError::Invalid("address does not match pub_key".into()));
        }
        Ok(key)
    }

    fn from_priv_key(priv_key: &TypedKey) -> Result<Self, KeyError> {
        if priv_key.key_type != PRIV_KEY_TYPE {
            return Err(KeyError::Invalid(format!(
                "unsupported private key type {:?}",
                priv_key.key_type
            )));
        }
        let bytes = B64
            .decode(&priv_key.value)
            .map_err(|_| KeyError::Invalid("private key is not base64".into()))?;
        let array: [u8; 64] = bytes
            .try_into()
            .map_err(|_| KeyError::Invalid("private key is not 64 bytes".into()))?;
        let signing_key = SigningKey::from_keypair_bytes(&array)
            .map_err(|_| KeyError::Invalid("private key halves do not match".into()))?;
        Ok(Self { signing_key })
    }

    /// Loads `priv_validator_key.json`.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let file: PrivValidatorKeyFile =
            serde_json::from_str(&text).map_err(|source| KeyError::Json {
                path: path.display().to_string(),
                source,
            })?;
        Self::from_file(&file)
    }

    /// Writes `priv_validator_key.json` (mode 0600), creating parent directories (0700).
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        let json = serde_json::to_string_pretty(&self.to_file()).expect("key file serializes");
        write_secret_file(path, json.as_bytes())
    }

    /// Writes `node_key.json` (mode 0600) for this key.
    pub fn save_as_node_key(&self, path: &Path) -> Result<(), KeyError> {
        let file = NodeKeyFile {
            priv_key: self.to_file().priv_key,
        };
        let json = serde_json::to_string(&file).expect("node key serializes");
        write_secret_file(path, json.as_bytes())
    }

    /// Loads `node_key.json`.
    pub fn load_node_key(path: &Path) -> Result<Self, KeyError> {
        let text = fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let file: NodeKeyFile = serde_json::from_str(&text).map_err(|source| KeyError::Json {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_priv_key(&file.priv_key)
    }

    /// CometBFT node ID: lowercase hex address.
    pub fn node_id(&self) -> String {
        self.address().to_lowercase()
    }
}

fn write_secret_file(path: &Path, contents: &[u8]) -> Result<(), KeyError> {
    let io_err = |source| KeyError::Io {
        path: path.display().to_string(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(io_err)?;
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err)?;
    file.write_all(contents).map_err(io_err)?;
    file.sync_all().map_err(io_err)
}

use std::os::unix::fs::DirBuilderExt;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_is_first_20_bytes_of_sha256_upper_hex() {
        // sha256 of 32 zero bytes = 66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925
        assert_eq!(
            address_of(&[0u8; 32]),
            "66687AADF862BD776C8FC18B8E9F8E20089714856EE233B3902A591D0D5F2925"[..40]
        );
    }

    #[test]
    fn key_file_round_trips_and_has_cometbft_shape() {
        let key = ValidatorKey::from_seed([7; 32]);
        let file = key.to_file();
        let json: serde_json::Value = serde_json::to_value(&file).unwrap();
        assert_eq!(json["pub_key"]["type"], PUB_KEY_TYPE);
        assert_eq!(json["priv_key"]["type"], PRIV_KEY_TYPE);
        assert_eq!(json["address"].as_str().unwrap().len(), 40);
        let priv_bytes = B64
            .decode(json["priv_key"]["value"].as_str().unwrap())
            .unwrap();
        assert_eq!(priv_bytes.len(), 64);
        assert_eq!(&priv_bytes[..32], &[7; 32]);
        assert_eq!(&priv_bytes[32..], &key.pub_key_bytes());
        let back = ValidatorKey::from_file(&file).unwrap();
        assert_eq!(back.address(), key.address());
    }

    #[test]
    fn mismatched_key_files_are_rejected() {
        let key = ValidatorKey::from_seed([1; 32]);
        let other = ValidatorKey::from_seed([2; 32]);
        let mut wrong_pub = key.to_file();
        wrong_pub.pub_key.value = other.pub_key_b64();
        let mut wrong_address = key.to_file();
        wrong_address.address = other.address();
        let mut wrong_type = key.to_file();
        wrong_type.priv_key.key_type = "tendermint/PrivKeySecp256k1".into();
        for file in [wrong_pub, wrong_address, wrong_type] {
            assert!(ValidatorKey::from_file(&file).is_err());
        }
    }

    #[test]
    fn debug_never_prints_the_private_key() {
        let key = ValidatorKey::from_seed([3; 32]);
        let file = key.to_file();
        assert!(!format!("{file:?}").contains(&file.priv_key.value));
        assert!(format!("{key:?}").contains("REDACTED"));
    }
}
