//! The JSON shapes of etcd's v3 gateway: requests built, answers parsed. Pure, no I/O.
//!
//! The messages are those of `etcdserver/etcdserverpb/rpc.proto` (etcd-io/etcd, release-3.4)
//! and `mvcc/mvccpb/kv.proto` (`KeyValue`), rendered by grpc-gateway v1 with the proto field
//! names (`create_revision`, but `dbSize` and `TTL`, spelled so in the proto). What the real
//! 3.4.23 server does, checked by hand and in `tests/cluster.rs`:
//!
//! - `bytes` fields (keys, values) are standard base64 with padding.
//! - `int64`/`uint64` fields are JSON **strings** (`"revision":"6"`); the server accepts both
//!   strings and numbers in requests. We send strings and accept both.
//! - Fields holding their zero value are **omitted**: no `kvs` when nothing matched, no
//!   `succeeded` when a txn's compare failed, no `lease` on a key without one, no `TTL` in a
//!   keep-alive answer for a lease that is gone, no `deleted` when nothing was deleted.
//! - `LeaseKeepAlive` is a bidirectional stream; over the gateway one request body gives one
//!   message wrapped as `{"result":{…}}` (an in-stream failure would be `{"error":{…}}`).
//! - An error is an HTTP 4xx/5xx with `{"error":"…","message":"…","code":N}` (`code` is the
//!   gRPC status code), e.g. 404 with code 5 `etcdserver: requested lease not found`.
//! - `LeaseTimeToLive` for a lease that is gone answers 200 with `"TTL":"-1"`.
//!
//! Nothing here trusts the server: every field is optional or defaulted, numbers are checked,
//! base64 is decoded with errors, never with a panic.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_json::{Value, json};
use std::fmt;

/// The id of an etcd lease (`int64` in the proto).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(pub i64);

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // etcdctl prints lease ids in hex; so do we, so that logs can be compared.
        write!(f, "{:x}", self.0)
    }
}

/// One key as etcd stores it (`mvccpb.KeyValue`).
#[derive(Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key's bytes.
    pub key: Vec<u8>,
    /// The value's bytes (never logged: values may one day hold records).
    pub value: Vec<u8>,
    /// Revision of the last creation of this key; 0 never occurs for a key that exists.
    pub create_revision: i64,
    /// Revision of the last modification.
    pub mod_revision: i64,
    /// Number of modifications since creation (1 after the create).
    pub version: i64,
    /// The lease the key is attached to, if any.
    pub lease: Option<LeaseId>,
}

impl fmt::Debug for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyValue")
            .field("key", &String::from_utf8_lossy(&self.key))
            .field("value", &format_args!("<{} bytes>", self.value.len()))
            .field("create_revision", &self.create_revision)
            .field("mod_revision", &self.mod_revision)
            .field("version", &self.version)
            .field("lease", &self.lease)
            .finish()
    }
}

/// What is wrong with an answer; the caller adds operation and endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An `int64`/`uint64` field: a JSON string of digits or a JSON integer; absent or `null`
/// is the zero value.
fn int64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    struct Int64;
    impl Visitor<'_> for Int64 {
        type Value = i64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a 64-bit integer as a string or a number")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| E::custom(format!("{v} is out of range")))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<i64, E> {
            if let Ok(n) = v.parse::<i64>() {
                return Ok(n);
            }
            // uint64 fields (member ids) may exceed i64; keep their bits.
            v.parse::<u64>()
                .map(|n| n as i64)
                .map_err(|_| E::custom(format!("{v:?} is not a 64-bit integer")))
        }
        fn visit_unit<E: de::Error>(self) -> Result<i64, E> {
            Ok(0)
        }
    }
    deserializer.deserialize_any(Int64)
}

/// A `bytes` field, still base64.
#[derive(Deserialize, Default)]
#[serde(transparent)]
struct Base64Field(Option<String>);

impl Base64Field {
    fn decode(&self, field: &str) -> Result<Vec<u8>, Malformed> {
        match &self.0 {
            None => Ok(Vec::new()),
            Some(text) => BASE64
                .decode(text)
                .map_err(|e| Malformed(format!("field `{field}` is not base64: {e}"))),
        }
    }
}

/// `etcdserverpb.ResponseHeader`, the part we use.
#[derive(Deserialize, Default, Debug)]
pub struct Header {
    #[serde(default, deserialize_with = "int64")]
    pub revision: i64,
    #[serde(default, deserialize_with = "int64")]
    pub member_id: i64,
    #[serde(default, deserialize_with = "int64")]
    pub raft_term: i64,
}

#[derive(Deserialize)]
struct RawKeyValue {
    #[serde(default)]
    key: Base64Field,
    #[serde(default)]
    value: Base64Field,
    #[serde(default, deserialize_with = "int64")]
    create_revision: i64,
    #[serde(default, deserialize_with = "int64")]
    mod_revision: i64,
    #[serde(default, deserialize_with = "int64")]
    version: i64,
    #[serde(default, deserialize_with = "int64")]
    lease: i64,
}

impl RawKeyValue {
    fn decode(self) -> Result<KeyValue, Malformed> {
        if self.create_revision <= 0 || self.mod_revision < self.create_revision {
            return Err(Malformed(format!(
                "a key with create_revision {} and mod_revision {}",
                self.create_revision, self.mod_revision
            )));
        }
        Ok(KeyValue {
            key: self.key.decode("key")?,
            value: self.value.decode("value")?,
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            lease: (self.lease != 0).then_some(LeaseId(self.lease)),
        })
    }
}

/// `RangeResponse` (also nested in a `TxnResponse`).
#[derive(Deserialize)]
struct RawRange {
    header: Option<Header>,
    #[serde(default)]
    kvs: Vec<RawKeyValue>,
}

/// The answer to a single-key range: the header revision and the key, if it exists.
#[derive(Debug)]
pub struct Range {
    pub header: Header,
    pub kv: Option<KeyValue>,
}

fn single_key(kvs: Vec<RawKeyValue>, key: &[u8]) -> Result<Option<KeyValue>, Malformed> {
    if kvs.len() > 1 {
        return Err(Malformed(format!(
            "{} keys for a single-key range",
            kvs.len()
        )));
    }
    let Some(raw) = kvs.into_iter().next() else {
        return Ok(None);
    };
    let kv = raw.decode()?;
    if kv.key != key {
        return Err(Malformed("a range answered with another key".into()));
    }
    Ok(Some(kv))
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8], what: &str) -> Result<T, Malformed> {
    serde_json::from_slice(body).map_err(|e| Malformed(format!("not a {what} answer: {e}")))
}

/// Parses a `RangeResponse` for exactly `key`.
pub fn parse_range(body: &[u8], key: &[u8]) -> Result<Range, Malformed> {
    let raw: RawRange = parse(body, "range")?;
    let header = raw
        .header
        .ok_or_else(|| Malformed("a range answer without a header".into()))?;
    Ok(Range {
        kv: single_key(raw.kvs, key)?,
        header,
    })
}

/// A `PutResponse`, a `LeaseRevokeResponse` or anything else of which we use the header only.
#[derive(Deserialize)]
struct HeaderOnly {
    header: Option<Header>,
}

/// The header of an answer that carries nothing else we use; a missing header is malformed
/// (every etcd answer has one, and a bare `{}` from something else must not pass as success).
pub fn parse_header(body: &[u8], what: &str) -> Result<Header, Malformed> {
    let raw: HeaderOnly = parse(body, what)?;
    raw.header
        .ok_or_else(|| Malformed(format!("a {what} answer without a header")))
}

/// `DeleteRangeResponse`: header and number of keys deleted.
pub fn parse_delete(body: &[u8]) -> Result<(Header, i64), Malformed> {
    #[derive(Deserialize)]
    struct Raw {
        header: Option<Header>,
        #[serde(default, deserialize_with = "int64")]
        deleted: i64,
    }
    let raw: Raw = parse(body, "delete")?;
    let header = raw
        .header
        .ok_or_else(|| Malformed("a delete answer without a header".into()))?;
    Ok((header, raw.deleted))
}

/// `LeaseGrantResponse`: id and granted TTL in seconds (etcd may raise a short TTL to its
/// minimum, 1.5 × the election timeout rounded up).
pub fn parse_grant(body: &[u8]) -> Result<(LeaseId, i64), Malformed> {
    #[derive(Deserialize)]
    struct Raw {
        #[serde(default, rename = "ID", deserialize_with = "int64")]
        id: i64,
        #[serde(default, rename = "TTL", deserialize_with = "int64")]
        ttl: i64,
        #[serde(default)]
        error: Option<String>,
    }
    let raw: Raw = parse(body, "lease grant")?;
    if let Some(error) = raw.error.filter(|e| !e.is_empty()) {
        return Err(Malformed(format!("lease grant refused: {error}")));
    }
    if raw.id == 0 || raw.ttl <= 0 {
        return Err(Malformed(format!(
            "a lease grant with ID {} and TTL {}",
            raw.id, raw.ttl
        )));
    }
    Ok((LeaseId(raw.id), raw.ttl))
}

/// What a keep-alive said about the lease.
#[derive(Debug, PartialEq, Eq)]
pub enum KeepAlive {
    /// Renewed: the remaining TTL in seconds, counted from when the server renewed it.
    Renewed(i64),
    /// The lease does not exist any more (the answer has no or a non-positive TTL).
    Gone,
}

/// The streamed `LeaseKeepAliveResponse`: `{"result":{…,"ID":…,"TTL":…}}`.
pub fn parse_keep_alive(body: &[u8], lease: LeaseId) -> Result<KeepAlive, Malformed> {
    #[derive(Deserialize)]
    struct Message {
        #[serde(default, rename = "ID", deserialize_with = "int64")]
        id: i64,
        #[serde(default, rename = "TTL", deserialize_with = "int64")]
        ttl: i64,
    }
    #[derive(Deserialize)]
    struct Raw {
        result: Option<Message>,
        error: Option<Value>,
    }
    let raw: Raw = parse(body, "lease keep-alive")?;
    if let Some(error) = raw.error {
        return Err(Malformed(format!(
            "the keep-alive stream failed: {}",
            bounded(&error.to_string())
        )));
    }
    let message = raw
        .result
        .ok_or_else(|| Malformed("a keep-alive answer without a result".into()))?;
    if message.id != lease.0 {
        return Err(Malformed(format!(
            "a keep-alive answer for lease {:x}, not {lease}",
            message.id
        )));
    }
    Ok(if message.ttl > 0 {
        KeepAlive::Renewed(message.ttl)
    } else {
        KeepAlive::Gone
    })
}

/// `LeaseTimeToLiveResponse`: remaining and granted TTL; `None` if the lease is gone
/// (`TTL` -1).
pub fn parse_time_to_live(body: &[u8], lease: LeaseId) -> Result<Option<(i64, i64)>, Malformed> {
    #[derive(Deserialize)]
    struct Raw {
        header: Option<Header>,
        #[serde(default, rename = "ID", deserialize_with = "int64")]
        id: i64,
        #[serde(default, rename = "TTL", deserialize_with = "int64")]
        ttl: i64,
        #[serde(default, rename = "grantedTTL", deserialize_with = "int64")]
        granted_ttl: i64,
    }
    let raw: Raw = parse(body, "lease time-to-live")?;
    if raw.header.is_none() || raw.id != lease.0 {
        return Err(Malformed(format!(
            "a time-to-live answer for lease {:x}, not {lease}",
            raw.id
        )));
    }
    // A lease about to expire answers TTL 0 (it still exists, for under a second).
    Ok((raw.ttl >= 0).then_some((raw.ttl, raw.granted_ttl)))
}

/// What the `Maintenance.Status` RPC says about one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    /// The answering member's id (`uint64`, kept as its bits).
    pub member_id: u64,
    /// The id of the leader this member knows, 0 if none.
    pub leader: u64,
    /// The Raft term.
    pub raft_term: u64,
    /// The Raft index.
    pub raft_index: u64,
    /// The server version, e.g. `3.4.23`.
    pub version: String,
    /// The backend database size in bytes.
    pub db_size: i64,
}

/// `StatusResponse`.
pub fn parse_status(body: &[u8]) -> Result<MemberStatus, Malformed> {
    #[derive(Deserialize)]
    struct Raw {
        header: Option<Header>,
        #[serde(default)]
        version: String,
        #[serde(default, rename = "dbSize", deserialize_with = "int64")]
        db_size: i64,
        #[serde(default, deserialize_with = "int64")]
        leader: i64,
        #[serde(default, rename = "raftIndex", deserialize_with = "int64")]
        raft_index: i64,
        #[serde(default, rename = "raftTerm", deserialize_with = "int64")]
        raft_term: i64,
    }
    let raw: Raw = parse(body, "status")?;
    let header = raw
        .header
        .ok_or_else(|| Malformed("a status answer without a header".into()))?;
    // Bits, not values: uint64 ids were read into i64.
    Ok(MemberStatus {
        member_id: header.member_id as u64,
        leader: raw.leader as u64,
        raft_term: raw.raft_term as u64,
        raft_index: raw.raft_index as u64,
        version: bounded(&raw.version),
        db_size: raw.db_size,
    })
}

/// A `TxnResponse`: whether the compares held, and the single range answered by the failure
/// branch (when the txn asked for one).
#[derive(Debug)]
pub struct Txn {
    pub header: Header,
    pub succeeded: bool,
    pub range: Option<Option<KeyValue>>,
    pub deleted: Option<i64>,
}

/// Parses a `TxnResponse` whose branches hold at most one operation; `key` checks a range.
pub fn parse_txn(body: &[u8], key: &[u8]) -> Result<Txn, Malformed> {
    #[derive(Deserialize)]
    struct RawDelete {
        #[serde(default, deserialize_with = "int64")]
        deleted: i64,
    }
    #[derive(Deserialize)]
    struct RawOp {
        response_range: Option<RawRange>,
        response_delete_range: Option<RawDelete>,
    }
    #[derive(Deserialize)]
    struct Raw {
        header: Option<Header>,
        #[serde(default)]
        succeeded: bool,
        #[serde(default)]
        responses: Vec<RawOp>,
    }
    let raw: Raw = parse(body, "txn")?;
    let header = raw
        .header
        .ok_or_else(|| Malformed("a txn answer without a header".into()))?;
    if raw.responses.len() > 1 {
        return Err(Malformed(format!(
            "{} responses in a one-operation txn",
            raw.responses.len()
        )));
    }
    let mut range = None;
    let mut deleted = None;
    if let Some(op) = raw.responses.into_iter().next() {
        if let Some(r) = op.response_range {
            range = Some(single_key(r.kvs, key)?);
        }
        if let Some(d) = op.response_delete_range {
            deleted = Some(d.deleted);
        }
    }
    Ok(Txn {
        header,
        succeeded: raw.succeeded,
        range,
        deleted,
    })
}

/// An etcd error answer: `{"error":"…","message":"…","code":N}`.
#[derive(Debug, PartialEq, Eq)]
pub struct ErrorAnswer {
    /// The gRPC status code (5 NotFound, 14 Unavailable, …).
    pub code: i64,
    /// The message, bounded and with control characters escaped.
    pub message: String,
}

/// Parses an error body; `None` if it is not etcd's shape.
pub fn parse_error(body: &[u8]) -> Option<ErrorAnswer> {
    #[derive(Deserialize)]
    struct Raw {
        #[serde(default)]
        error: Option<String>,
        #[serde(default)]
        message: Option<String>,
        #[serde(default, deserialize_with = "int64")]
        code: i64,
    }
    let raw: Raw = serde_json::from_slice(body).ok()?;
    let message = raw.message.or(raw.error)?;
    Some(ErrorAnswer {
        code: raw.code,
        message: bounded(&message),
    })
}

/// At most 200 characters of server-supplied text, control characters escaped, for error
/// messages.
pub fn bounded(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(200)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().count() > 200 {
        out.push('…');
    }
    out
}

fn b64(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

/// A request body for `/v3/kv/range` of exactly one key (linearizable, the default).
pub fn range_request(key: &[u8]) -> Value {
    json!({ "key": b64(key) })
}

/// A request body for `/v3/kv/put` (as a txn operation too).
pub fn put_request(key: &[u8], value: &[u8], lease: Option<LeaseId>) -> Value {
    let mut body = json!({ "key": b64(key), "value": b64(value) });
    if let Some(lease) = lease {
        body["lease"] = Value::String(lease.0.to_string());
    }
    body
}

/// A request body for `/v3/kv/deleterange` of exactly one key.
pub fn delete_request(key: &[u8]) -> Value {
    json!({ "key": b64(key) })
}

/// A request body for the lease RPCs that take only an `ID`.
pub fn lease_request(lease: LeaseId) -> Value {
    json!({ "ID": lease.0.to_string() })
}

/// A request body for `/v3/lease/grant`.
pub fn grant_request(ttl_secs: i64) -> Value {
    json!({ "TTL": ttl_secs.to_string() })
}

/// Which revision of the key a txn compares (`Compare.CompareTarget`).
#[derive(Clone, Copy, Debug)]
pub enum CompareTarget {
    /// `CREATE`: the key's create_revision (0 when absent).
    Create,
    /// `MOD`: the key's mod_revision.
    Mod,
}

/// What a txn does when its compare holds.
#[derive(Debug)]
pub enum TxnOp {
    Put(Value),
    Delete(Value),
}

/// A `/v3/kv/txn` body: if the key's `target` revision equals `revision`, do `then`; else
/// read the key (so that the caller learns who holds it).
pub fn txn_request(key: &[u8], target: CompareTarget, revision: i64, then: TxnOp) -> Value {
    let (target, field) = match target {
        CompareTarget::Create => ("CREATE", "create_revision"),
        CompareTarget::Mod => ("MOD", "mod_revision"),
    };
    let mut compare = json!({ "target": target, "key": b64(key), "result": "EQUAL" });
    compare[field] = Value::String(revision.to_string());
    let success = match then {
        TxnOp::Put(put) => json!({ "request_put": put }),
        TxnOp::Delete(delete) => json!({ "request_delete_range": delete }),
    };
    json!({
        "compare": [compare],
        "success": [success],
        "failure": [{ "request_range": range_request(key) }],
    })
}

/// A `/v3/kv/txn` body like [`txn_request`], doing every operation of `then` in order when the
/// compare holds.
pub fn txn_request_many(
    key: &[u8],
    target: CompareTarget,
    revision: i64,
    then: Vec<TxnOp>,
) -> Value {
    let mut request = txn_request(key, target, revision, TxnOp::Delete(delete_request(key)));
    request["success"] = Value::Array(
        then.into_iter()
            .map(|op| match op {
                TxnOp::Put(put) => json!({ "request_put": put }),
                TxnOp::Delete(delete) => json!({ "request_delete_range": delete }),
            })
            .collect(),
    );
    request
}

/// Whether a `TxnResponse` says its compare held (any number of operations).
pub fn parse_txn_succeeded(body: &[u8]) -> Result<bool, Malformed> {
    #[derive(Deserialize)]
    struct Raw {
        header: Option<Header>,
        #[serde(default)]
        succeeded: bool,
    }
    let raw: Raw = parse(body, "txn")?;
    if raw.header.is_none() {
        return Err(Malformed("a txn answer without a header".into()));
    }
    Ok(raw.succeeded)
}

/// Serializes a request body.
pub fn to_body(value: &Value) -> Vec<u8> {
    // Serializing a `Value` cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers captured from etcd 3.4.23.
    const RANGE_HIT: &str = r#"{"header":{"cluster_id":"8199270909090631516","member_id":"688433646064620814","revision":"3","raft_term":"2"},"kvs":[{"key":"azE=","create_revision":"3","mod_revision":"3","version":"1","value":"dg==","lease":"6129014595099893519"}],"count":"1"}"#;
    const RANGE_MISS: &str = r#"{"header":{"cluster_id":"8199270909090631516","member_id":"688433646064620814","revision":"1","raft_term":"2"}}"#;
    const TXN_WON: &str = r#"{"header":{"revision":"6","raft_term":"2"},"succeeded":true,"responses":[{"response_put":{"header":{"revision":"6"}}}]}"#;
    const TXN_LOST: &str = r#"{"header":{"revision":"6","raft_term":"2"},"responses":[{"response_range":{"header":{"revision":"6"},"kvs":[{"key":"bGVhZA==","create_revision":"6","mod_revision":"6","version":"1","value":"aG9zdC1h"}],"count":"1"}}]}"#;
    const KEEP_ALIVE: &str = r#"{"result":{"header":{"revision":"2","raft_term":"2"},"ID":"6129014595099893519","TTL":"5"}}"#;
    const KEEP_ALIVE_GONE: &str =
        r#"{"result":{"header":{"revision":"4","raft_term":"2"},"ID":"6129014595099893519"}}"#;
    const ERROR: &str = r#"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}"#;

    #[test]
    fn range_answers_decode_int64_strings_base64_and_omitted_fields() {
        let range = parse_range(RANGE_HIT.as_bytes(), b"k1").unwrap();
        assert_eq!(range.header.revision, 3);
        let kv = range.kv.unwrap();
        assert_eq!(
            (kv.key.as_slice(), kv.value.as_slice()),
            (&b"k1"[..], &b"v"[..])
        );
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (3, 3, 1));
        assert_eq!(kv.lease, Some(LeaseId(6129014595099893519)));
        let miss = parse_range(RANGE_MISS.as_bytes(), b"k1").unwrap();
        assert_eq!((miss.header.revision, miss.kv.is_none()), (1, true));
        // member_id is a uint64 above i64::MAX in some clusters: its bits are kept.
        let header: Header =
            serde_json::from_str(r#"{"member_id":"18446744073709551615","revision":7}"#).unwrap();
        assert_eq!((header.member_id, header.revision), (-1, 7));
    }

    #[test]
    fn hostile_answers_are_errors_not_panics() {
        let cases: &[(&str, &[u8])] = &[
            ("garbage", b"\x00\xffnot json"),
            ("empty", b""),
            ("bad base64", br#"{"header":{},"kvs":[{"key":"!!!","create_revision":"1","mod_revision":"1"}]}"#),
            ("another key", br#"{"header":{},"kvs":[{"key":"eA==","create_revision":"1","mod_revision":"1"}]}"#),
            ("two keys", br#"{"header":{},"kvs":[{"key":"azE=","create_revision":"1","mod_revision":"1"},{"key":"azE=","create_revision":"1","mod_revision":"1"}]}"#),
            ("revision not a number", br#"{"header":{},"kvs":[{"key":"azE=","create_revision":"x","mod_revision":"1"}]}"#),
            ("revision out of range", br#"{"header":{},"kvs":[{"key":"azE=","create_revision":18446744073709551616,"mod_revision":"1"}]}"#),
            ("created at 0", br#"{"header":{},"kvs":[{"key":"azE="}]}"#),
            ("kvs not a list", br#"{"header":{},"kvs":"azE="}"#),
        ];
        for (name, body) in cases {
            assert!(parse_range(body, b"k1").is_err(), "{name}");
        }
        assert!(parse_header(b"{}", "put").is_err(), "no header");
        assert!(parse_range(b"{}", b"k1").is_err(), "no header");
        assert!(parse_delete(b"[]").is_err());
        assert!(parse_grant(br#"{"ID":"0","TTL":"5"}"#).is_err());
        assert!(parse_grant(br#"{"ID":"1","TTL":"-1"}"#).is_err());
        assert!(parse_keep_alive(br#"{"result":{"ID":"9","TTL":"5"}}"#, LeaseId(1)).is_err());
        assert!(
            parse_keep_alive(br#"{"error":{"grpc_code":14,"message":"x"}}"#, LeaseId(1)).is_err()
        );
        assert!(parse_keep_alive(b"{}", LeaseId(1)).is_err());
        assert!(parse_txn(br#"{"header":{},"responses":[{},{}]}"#, b"k").is_err());
        assert!(parse_status(b"{}").is_err());
    }

    #[test]
    fn txn_answers_say_who_won() {
        let won = parse_txn(TXN_WON.as_bytes(), b"lead").unwrap();
        assert!(won.succeeded && won.range.is_none());
        assert_eq!(won.header.revision, 6);
        let lost = parse_txn(TXN_LOST.as_bytes(), b"lead").unwrap();
        assert!(!lost.succeeded);
        let holder = lost.range.unwrap().unwrap();
        assert_eq!(
            (holder.value.as_slice(), holder.create_revision),
            (&b"host-a"[..], 6)
        );
    }

    #[test]
    fn keep_alive_without_ttl_means_the_lease_is_gone() {
        let lease = LeaseId(6129014595099893519);
        assert_eq!(
            parse_keep_alive(KEEP_ALIVE.as_bytes(), lease),
            Ok(KeepAlive::Renewed(5))
        );
        assert_eq!(
            parse_keep_alive(KEEP_ALIVE_GONE.as_bytes(), lease),
            Ok(KeepAlive::Gone)
        );
        let gone = br#"{"header":{"revision":"4"},"ID":"6129014595099893519","TTL":"-1"}"#;
        assert_eq!(parse_time_to_live(gone, lease), Ok(None));
        let live = br#"{"header":{},"ID":"6129014595099893519","TTL":"4","grantedTTL":"5"}"#;
        assert_eq!(parse_time_to_live(live, lease), Ok(Some((4, 5))));
    }

    #[test]
    fn error_answers_keep_code_and_a_bounded_message() {
        let error = parse_error(ERROR.as_bytes()).unwrap();
        assert_eq!(error.code, 5);
        assert_eq!(error.message, "etcdserver: requested lease not found");
        assert_eq!(parse_error(b"Not Found\n"), None);
        let long = format!(r#"{{"message":"{}\n","code":2}}"#, "x".repeat(500));
        let error = parse_error(long.as_bytes()).unwrap();
        assert!(error.message.len() < 210 && error.message.ends_with('…'));
        assert_eq!(bounded("a\nb\u{1b}"), "a\\nb\\u{1b}");
    }

    #[test]
    fn requests_carry_base64_and_int64_strings() {
        let txn = txn_request(
            b"lead",
            CompareTarget::Create,
            0,
            TxnOp::Put(put_request(b"lead", b"host-a", Some(LeaseId(42)))),
        );
        assert_eq!(
            txn,
            json!({
                "compare": [{"target": "CREATE", "key": "bGVhZA==", "result": "EQUAL", "create_revision": "0"}],
                "success": [{"request_put": {"key": "bGVhZA==", "value": "aG9zdC1h", "lease": "42"}}],
                "failure": [{"request_range": {"key": "bGVhZA=="}}],
            })
        );
        assert_eq!(
            put_request(b"k", b"", None),
            json!({"key": "aw==", "value": ""})
        );
        assert_eq!(lease_request(LeaseId(-3)), json!({"ID": "-3"}));
        assert_eq!(LeaseId(255).to_string(), "ff");
    }
}
