//! The signed handoff record: what a primary leaves for the host it hands
//! the validator to (`docs/failover.md` §5).
//!
//! ```json
//! {"record":{"version":1,"group":"/palisade/ab12…","from":"val-a","to":"val-b",
//!            "from_token":42,"watermark":{"height":9,"round":0,"step":3},
//!            "sequence":17,"at_ms":1795390000000},
//!  "signature":"<base64 ed25519>"}
//! ```
//!
//! The signature is the vault's backup key's (the hosts share the vault),
//! over [`DOMAIN`] followed by the record's JSON exactly as serialized: a
//! bastion or an etcd member that holds the bytes can neither forge nor
//! alter one. A genuine record can be replayed, so the reader also checks
//! that it hands over the leadership it last saw (`from_token`) and that
//! it names itself ([`check`]).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::sign_state::Watermark;

/// What the signature covers before the record's JSON.
pub const DOMAIN: &[u8] = b"palisade handoff record v1\n";
/// The only version written and read.
pub const VERSION: u32 = 1;
/// Largest record accepted, in bytes.
pub const MAX_RECORD_BYTES: usize = 4096;

/// A handoff, as signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandoffRecord {
    pub version: u32,
    /// The etcd key prefix of this validator's hosts.
    pub group: String,
    pub from: String,
    pub to: String,
    /// The fencing token `from` gave up.
    pub from_token: i64,
    /// `from`'s final sign state (`None`: it had never signed).
    pub watermark: Option<Watermark>,
    /// The final backup's sequence (0: none was written).
    pub sequence: u64,
    /// When it was written, Unix milliseconds, by `from`'s clock.
    pub at_ms: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Signed {
    record: HandoffRecord,
    signature: String,
}

/// Why a record is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("the handoff record is {0} bytes, more than {MAX_RECORD_BYTES}")]
    TooLarge(usize),
    #[error("the handoff record is malformed: {0}")]
    Malformed(String),
    #[error("the handoff record has version {0}, not {VERSION}")]
    Version(u32),
    #[error(
        "the handoff record's signature does not verify with the vault's backup key (forged or altered)"
    )]
    BadSignature,
    #[error("the handoff record is for {found}, not this validator's hosts ({expected})")]
    OtherGroup { found: String, expected: String },
}

fn signed_bytes(record: &HandoffRecord) -> Vec<u8> {
    let mut bytes = DOMAIN.to_vec();
    // Serializing a struct of strings and integers cannot fail.
    bytes.extend(serde_json::to_vec(record).unwrap_or_default());
    bytes
}

/// The record, signed, as stored.
pub fn sign(record: &HandoffRecord, key: &SigningKey) -> Vec<u8> {
    let signature = key.sign(&signed_bytes(record));
    serde_json::to_vec(&Signed {
        record: record.clone(),
        signature: BASE64.encode(signature.to_bytes()),
    })
    .unwrap_or_default()
}

/// The record in `bytes`, if it is `group`'s and signed by `key`.
pub fn verify(bytes: &[u8], key: &VerifyingKey, group: &str) -> Result<HandoffRecord, RecordError> {
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(RecordError::TooLarge(bytes.len()));
    }
    let signed: Signed =
        serde_json::from_slice(bytes).map_err(|error| RecordError::Malformed(error.to_string()))?;
    let signature = BASE64
        .decode(signed.signature.as_bytes())
        .ok()
        .and_then(|raw| <[u8; 64]>::try_from(raw).ok())
        .map(|raw| Signature::from_bytes(&raw))
        .ok_or_else(|| RecordError::Malformed("the signature is not 64 bytes of base64".into()))?;
    key.verify(&signed_bytes(&signed.record), &signature)
        .map_err(|_| RecordError::BadSignature)?;
    let record = signed.record;
    if record.version != VERSION {
        return Err(RecordError::Version(record.version));
    }
    if record.group != group {
        return Err(RecordError::OtherGroup {
            found: record.group,
            expected: group.to_string(),
        });
    }
    Ok(record)
}

/// Whether a verified record lets `me` take over now: it names `me`, it
/// hands over the leadership `me` last saw held (`last_seen_token`, so a
/// replayed older record is refused), and it is not older than
/// `max_age_ms` by `now_ms`.
pub fn check(
    record: &HandoffRecord,
    me: &str,
    last_seen_token: Option<i64>,
    now_ms: u64,
    max_age_ms: u64,
) -> Result<(), String> {
    if record.to != me {
        return Err(format!("it names {}, not this host", record.to));
    }
    match last_seen_token {
        Some(token) if token == record.from_token => {}
        Some(token) => {
            return Err(format!(
                "it hands over token {}, but the last leadership seen here was token {token} (a replayed or stale record)",
                record.from_token
            ));
        }
        None => {
            return Err(format!(
                "this host never saw token {} held, so it cannot tell the record from a replay; the takeover rule applies instead",
                record.from_token
            ));
        }
    }
    if now_ms.saturating_sub(record.at_ms) > max_age_ms {
        return Err(format!(
            "it is {} ms old, more than the handoff timeout",
            now_ms.saturating_sub(record.at_ms)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign_state::Step;

    fn record() -> HandoffRecord {
        HandoffRecord {
            version: VERSION,
            group: "/palisade/g".into(),
            from: "val-a".into(),
            to: "val-b".into(),
            from_token: 42,
            watermark: Some(Watermark {
                height: 9,
                round: 0,
                step: Step::Precommit,
            }),
            sequence: 17,
            at_ms: 1_000_000,
        }
    }

    #[test]
    fn signed_records_verify_and_every_alteration_is_refused() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let other = SigningKey::from_bytes(&[8; 32]);
        let bytes = sign(&record(), &key);
        assert_eq!(
            verify(&bytes, &key.verifying_key(), "/palisade/g").unwrap(),
            record()
        );

        let text = String::from_utf8(bytes.clone()).unwrap();
        let tampered = |from: &str, to: &str| {
            assert!(text.contains(from), "{from} in {text}");
            text.replacen(from, to, 1).into_bytes()
        };
        let cases: Vec<(&str, Vec<u8>, RecordError)> = vec![
            (
                "forged with another key",
                sign(&record(), &other),
                RecordError::BadSignature,
            ),
            (
                "target changed",
                tampered("\"to\":\"val-b\"", "\"to\":\"val-c\""),
                RecordError::BadSignature,
            ),
            (
                "token changed",
                tampered("\"from_token\":42", "\"from_token\":43"),
                RecordError::BadSignature,
            ),
            (
                "watermark lowered",
                tampered("\"height\":9", "\"height\":8"),
                RecordError::BadSignature,
            ),
            (
                "another group",
                sign(
                    &HandoffRecord {
                        group: "/palisade/other".into(),
                        ..record()
                    },
                    &key,
                ),
                RecordError::OtherGroup {
                    found: "/palisade/other".into(),
                    expected: "/palisade/g".into(),
                },
            ),
            (
                "a future version",
                sign(
                    &HandoffRecord {
                        version: 2,
                        ..record()
                    },
                    &key,
                ),
                RecordError::Version(2),
            ),
            (
                "oversized",
                vec![b' '; MAX_RECORD_BYTES + 1],
                RecordError::TooLarge(MAX_RECORD_BYTES + 1),
            ),
        ];
        for (what, bytes, expected) in cases {
            assert_eq!(
                verify(&bytes, &key.verifying_key(), "/palisade/g").unwrap_err(),
                expected,
                "{what}"
            );
        }
        for garbage in [
            &b"not json"[..],
            b"{}",
            b"{\"record\":{},\"signature\":\"\"}",
        ] {
            assert!(matches!(
                verify(garbage, &key.verifying_key(), "/palisade/g"),
                Err(RecordError::Malformed(_))
            ));
        }
        let unknown_member = tampered("\"sequence\":17", "\"sequence\":17,\"extra\":1");
        assert!(matches!(
            verify(&unknown_member, &key.verifying_key(), "/palisade/g"),
            Err(RecordError::Malformed(_))
        ));
    }

    #[test]
    fn only_a_fresh_record_for_me_handing_over_what_i_saw_is_usable() {
        let r = record();
        let cases: &[(&str, Option<i64>, u64, Option<&str>)] = &[
            ("val-b", Some(42), 1_010_000, None),
            ("val-c", Some(42), 1_010_000, Some("names val-b")),
            ("val-b", Some(50), 1_010_000, Some("replayed or stale")),
            ("val-b", None, 1_010_000, Some("never saw token 42")),
            ("val-b", Some(42), 1_070_001, Some("ms old")),
        ];
        for (me, seen, now, expected) in cases {
            let result = check(&r, me, *seen, *now, 60_000);
            match expected {
                None => assert!(result.is_ok(), "{me} {seen:?}: {result:?}"),
                Some(words) => {
                    let error = result.unwrap_err();
                    assert!(error.contains(words), "{words:?} in {error}");
                }
            }
        }
    }
}
