//! CometBFT key files (`priv_validator_key.json`, `node_key.json`): their
//! kinds and the validation done before a file is imported.
//!
//! Validation parses the secret-bearing JSON without copying the private key
//! into non-zeroizing memory and reports errors without quoting any value.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Amino type of an ed25519 private key.
const PRIV_KEY_TYPE: &str = "tendermint/PrivKeyEd25519";
/// Amino type of an ed25519 public key.
const PUB_KEY_TYPE: &str = "tendermint/PubKeyEd25519";

/// A key file the vault can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    /// CometBFT `priv_validator_key.json`: the consensus signing key.
    PrivValidatorKey,
    /// CometBFT `node_key.json`: the P2P identity key.
    NodeKey,
}

impl KeyKind {
    /// Every kind, in a stable order.
    pub const ALL: [KeyKind; 2] = [KeyKind::PrivValidatorKey, KeyKind::NodeKey];

    /// CometBFT's file name for this kind.
    pub fn file_name(self) -> &'static str {
        match self {
            KeyKind::PrivValidatorKey => "priv_validator_key.json",
            KeyKind::NodeKey => "node_key.json",
        }
    }

    /// The top-level `config.toml` key that points to this file.
    pub fn config_key(self) -> &'static str {
        match self {
            KeyKind::PrivValidatorKey => "priv_validator_key_file",
            KeyKind::NodeKey => "node_key_file",
        }
    }

    /// Name of the encrypted copy under `keys/`.
    pub fn encrypted_file_name(self) -> String {
        format!("{}.age", self.file_name())
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.file_name())
    }
}

/// A JSON string holding key material: deserialized straight into a
/// zeroizing buffer.
struct SecretText(Zeroizing<String>);

impl<'de> Deserialize<'de> for SecretText {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = SecretText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a base64 string")
            }
            // The default visit_* would echo the value in the error message:
            // only the type is named here.
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<SecretText, E> {
                let mut owned = Zeroizing::new(String::with_capacity(text.len()));
                owned.push_str(text);
                Ok(SecretText(owned))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[derive(Deserialize)]
struct PrivateKeyJson {
    #[serde(rename = "type")]
    key_type: String,
    value: SecretText,
}

#[derive(Deserialize)]
struct PublicKeyJson {
    #[serde(rename = "type")]
    key_type: String,
    value: String,
}

#[derive(Deserialize)]
struct PrivValidatorKeyJson {
    address: String,
    pub_key: PublicKeyJson,
    priv_key: PrivateKeyJson,
}

#[derive(Deserialize)]
struct NodeKeyJson {
    priv_key: PrivateKeyJson,
}

/// Checks that `bytes` is the CometBFT JSON of `kind`. The error is a reason
/// fit for a log: it never contains key material.
pub(super) fn validate(kind: KeyKind, bytes: &[u8]) -> Result<(), String> {
    match kind {
        KeyKind::PrivValidatorKey => {
            let file: PrivValidatorKeyJson = parse_json(bytes)?;
            let signing_key = decode_private_key(&file.priv_key)?;
            let public = signing_key.verifying_key().to_bytes();
            if file.pub_key.key_type != PUB_KEY_TYPE {
                return Err(format!(
                    "pub_key.type is {:?}, expected {PUB_KEY_TYPE:?}",
                    shorten(&file.pub_key.key_type)
                ));
            }
            if BASE64.decode(file.pub_key.value.as_bytes()).ok().as_deref() != Some(&public[..]) {
                return Err("pub_key.value does not match the private key".into());
            }
            let digest = Sha256::digest(public);
            if !file
                .address
                .eq_ignore_ascii_case(&hex::encode(&digest[..20]))
            {
                return Err("address does not match the public key".into());
            }
            Ok(())
        }
        KeyKind::NodeKey => {
            let file: NodeKeyJson = parse_json(bytes)?;
            decode_private_key(&file.priv_key).map(drop)
        }
    }
}

/// The consensus address (upper-case hex) of a `priv_validator_key.json`,
/// after the same checks as [`validate`]: the address must be the one its
/// key pair gives. The private key is parsed into zeroizing memory only
/// and dropped here; the error never contains key material.
pub(super) fn validator_address(bytes: &[u8]) -> Result<String, String> {
    validate(KeyKind::PrivValidatorKey, bytes)?;
    let file: PrivValidatorKeyJson = parse_json(bytes)?;
    Ok(file.address.to_ascii_uppercase())
}

/// Parses JSON; on error names only the category and position, since
/// serde's messages may quote (secret) values.
fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|error| {
        let message = error.to_string();
        let what = if message.starts_with("missing field") {
            message
                .split(" at line")
                .next()
                .unwrap_or("missing field")
                .to_string()
        } else if error.is_data() {
            "fields do not have the expected types".to_string()
        } else {
            "not valid JSON".to_string()
        };
        format!("{what} (line {}, column {})", error.line(), error.column())
    })
}

/// Decodes `priv_key` (type, base64, 64 bytes = seed || public key, halves
/// consistent) into a signing key that zeroizes on drop.
fn decode_private_key(priv_key: &PrivateKeyJson) -> Result<SigningKey, String> {
    if priv_key.key_type != PRIV_KEY_TYPE {
        return Err(format!(
            "priv_key.type is {:?}, expected {PRIV_KEY_TYPE:?}",
            shorten(&priv_key.key_type)
        ));
    }
    let mut decoded = Zeroizing::new([0u8; 128]);
    let length = BASE64
        .decode_slice(priv_key.value.0.as_bytes(), &mut decoded[..])
        .map_err(|_| "priv_key.value is not base64 of 64 bytes".to_string())?;
    if length != 64 {
        return Err(format!(
            "priv_key.value decodes to {length} bytes, expected 64"
        ));
    }
    let mut keypair = Zeroizing::new([0u8; 64]);
    keypair.copy_from_slice(&decoded[..64]);
    SigningKey::from_keypair_bytes(&keypair)
        .map_err(|_| "priv_key.value: the public half does not match the private half".into())
}

/// A public, possibly hostile string cut to a loggable length.
fn shorten(text: &str) -> String {
    text.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_file(seed: u8) -> (String, String) {
        let signing_key = SigningKey::from_bytes(&[seed; 32]);
        let public = signing_key.verifying_key().to_bytes();
        let address = hex::encode_upper(&Sha256::digest(public)[..20]);
        let private_b64 = BASE64.encode(signing_key.to_keypair_bytes());
        let priv_validator = format!(
            r#"{{"address":"{address}","pub_key":{{"type":"{PUB_KEY_TYPE}","value":"{}"}},"priv_key":{{"type":"{PRIV_KEY_TYPE}","value":"{private_b64}"}}}}"#,
            BASE64.encode(public)
        );
        let node =
            format!(r#"{{"priv_key":{{"type":"{PRIV_KEY_TYPE}","value":"{private_b64}"}}}}"#);
        (priv_validator, node)
    }

    #[test]
    fn valid_files_pass() {
        let (priv_validator, node) = key_file(7);
        validate(KeyKind::PrivValidatorKey, priv_validator.as_bytes()).unwrap();
        validate(KeyKind::NodeKey, node.as_bytes()).unwrap();
        // A node key is not a priv_validator_key (no address / pub_key).
        let error = validate(KeyKind::PrivValidatorKey, node.as_bytes()).unwrap_err();
        assert!(error.contains("missing field"), "{error}");
    }

    #[test]
    fn malformed_files_are_refused_without_quoting_secrets() {
        let (priv_validator, _) = key_file(9);
        let secret = BASE64.encode(SigningKey::from_bytes(&[9; 32]).to_keypair_bytes());
        let other = BASE64.encode(SigningKey::from_bytes(&[10; 32]).to_keypair_bytes());
        let short = BASE64.encode([1u8; 32]);
        let cases: Vec<(String, &str)> = vec![
            ("not json".into(), "not valid JSON"),
            (
                priv_validator.replace(PRIV_KEY_TYPE, "tendermint/PrivKeySecp256k1"),
                "priv_key.type",
            ),
            (
                priv_validator.replace(&secret, &short),
                "decodes to 32 bytes",
            ),
            (priv_validator.replace(&secret, "!!!"), "not base64"),
            (
                priv_validator.replace(&secret, &other),
                "pub_key.value does not match",
            ),
            (
                priv_validator.replacen("\"address\":\"", "\"address\":\"00", 1),
                "address does not match",
            ),
            // A secret where an object is expected: serde would quote it.
            (format!(r#"{{"priv_key":"{secret}"}}"#), "expected types"),
        ];
        for (text, expected) in cases {
            let kind = if text.starts_with(r#"{"priv_key""#) {
                KeyKind::NodeKey
            } else {
                KeyKind::PrivValidatorKey
            };
            let error = validate(kind, text.as_bytes()).unwrap_err();
            assert!(
                error.contains(expected),
                "{error:?} should contain {expected:?}"
            );
            assert!(
                !error.contains(&secret[..20]),
                "error quotes the secret: {error}"
            );
        }
    }

    #[test]
    fn halves_must_match() {
        let mut keypair = SigningKey::from_bytes(&[3; 32]).to_keypair_bytes();
        keypair[40] ^= 1;
        let text = format!(
            r#"{{"priv_key":{{"type":"{PRIV_KEY_TYPE}","value":"{}"}}}}"#,
            BASE64.encode(keypair)
        );
        let error = validate(KeyKind::NodeKey, text.as_bytes()).unwrap_err();
        assert!(error.contains("public half"), "{error}");
    }
}
