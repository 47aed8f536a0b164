//! The bastion's backup-store protocol, spoken over the store's Unix socket.
//! The validator reaches it through an SSH session whose forced command,
//! `palisade-bastion backup-session --validator NAME`, relays the session to
//! the socket and refuses requests for any other validator.
//!
//! A bastion stores ciphertext it cannot read (DESIGN invariant 4): it checks
//! only names, sizes and framing, never the contents of a bundle.
//!
//! # Framing
//!
//! Every frame is a 4-byte big-endian length followed by that many bytes.
//! A message is a *header frame* holding one JSON object, followed, for a
//! `put` request and a successful `get` response only, by a *payload frame*
//! holding the raw bytes. A connection carries one request or several
//! sequential requests; the client waits for each response before sending
//! the next request.
//!
//! # Requests (client → bastion)
//!
//! ```json
//! {"op":"put","validator":"val-a","file":"backup-….age","bytes":65536}   + payload frame
//! {"op":"list","validator":"val-a"}
//! {"op":"get","validator":"val-a","file":"backup-….age"}
//! {"op":"remove","validator":"val-a","file":"backup-….age"}
//! ```
//!
//! Unknown fields and unknown ops are rejected (`bad_frame`). `remove` exists
//! for the supervisor's retention; the bastion also enforces its own.
//!
//! # Kinds of object
//!
//! Every request may carry `"kind"`: `"backup"` (the default, and what a
//! request without the field means, so older clients and bastions speak the
//! same protocol as before) or `"log"` (the supervisor's encrypted log
//! segments, `docs/log-format.md`). Each kind lives apart on the bastion,
//! with its own quota and retention; a request sees only its kind's files.
//!
//! ```json
//! {"op":"put","validator":"val-a","file":"log-host-00000000000000000007.age","bytes":9000,"kind":"log"}
//! {"op":"list","validator":"val-a","kind":"log","after":"log-host-00000000000000000007.sig"}
//! ```
//!
//! `list` may carry `"after"`: then the answer is the first
//! [`MAX_LIST_ENTRIES`] names sorting strictly after it (oldest first), so a
//! client can page through more names than one answer holds; without it,
//! the newest [`MAX_LIST_ENTRIES`].
//!
//! # Responses (bastion → client)
//!
//! ```json
//! {"ok":true}                                  put, remove
//! {"ok":true,"files":["a.age","b.age"]}         list (sorted)
//! {"ok":true,"bytes":65536}  + payload frame    get
//! {"ok":false,"error":{"kind":"not_found","message":"…"}}
//! ```
//!
//! Error kinds: see [`ErrorKind`]. After a `bad_frame` or `too_large` error
//! the bastion closes the connection (the stream may be out of step), and
//! after a `busy` one (the validator already holds as many connections as
//! the bastion allows it).
//!
//! # Limits
//!
//! - request header frame: at most [`MAX_REQUEST_HEADER_BYTES`] (8 KiB);
//! - response header frame: at most [`MAX_RESPONSE_HEADER_BYTES`] (a listing
//!   of up to [`MAX_LIST_ENTRIES`] names);
//! - payload frame: at most [`MAX_PAYLOAD_BYTES`] (1 MiB, the supervisor's
//!   own cap on a bundle's ciphertext; a bundle is about 64 KiB) for a
//!   backup, [`MAX_LOG_PAYLOAD_BYTES`] for a log object
//!   ([`max_payload_bytes`]), and exactly the announced `bytes`;
//! - file names: [`file_name_problem`]; validator names: those configured on
//!   the bastion.
//!
//! Both sides bound every read and write with a timeout.
//!
//! This module is data shapes and pure encoding only; the I/O lives in
//! `palisade-bastion` (server) and `palisade-supervisor` (client).

use serde::{Deserialize, Serialize};

/// Largest request header frame (the JSON object), in bytes.
pub const MAX_REQUEST_HEADER_BYTES: usize = 8 * 1024;

/// Largest response header frame, in bytes: room for a listing of
/// [`MAX_LIST_ENTRIES`] names of up to 255 bytes each, JSON-escaped.
pub const MAX_RESPONSE_HEADER_BYTES: usize = 4 * 1024 * 1024;

/// Most names a `list` response carries (the newest ones).
pub const MAX_LIST_ENTRIES: usize = 4096;

/// Largest payload frame (one stored file), in bytes: the supervisor's cap
/// on a bundle's ciphertext (`palisade_supervisor::backup::MAX_CIPHERTEXT_BYTES`),
/// which refuses to write or open anything larger, so the bastion has no
/// reason to accept or serve more. (It was 16 MiB before the supervisor
/// capped bundles.)
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// Largest payload frame of a log object: a segment of at most 1 MiB of
/// plaintext, compressed (zstd's bound for incompressible input adds under
/// 0.5%) and age-encrypted (16 bytes per 64 KiB chunk and a header of a few
/// hundred bytes per recipient), with room to spare.
pub const MAX_LOG_PAYLOAD_BYTES: usize = 1024 * 1024 + 64 * 1024;

/// The largest payload frame of `kind`.
pub fn max_payload_bytes(kind: ObjectKind) -> usize {
    match kind {
        ObjectKind::Backup => MAX_PAYLOAD_BYTES,
        ObjectKind::Log => MAX_LOG_PAYLOAD_BYTES,
    }
}

/// What kind of object a request is about; each kind is stored apart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    /// Signed, encrypted sign-state backups (`docs/backup-format.md`).
    #[default]
    Backup,
    /// Signed, encrypted log segments (`docs/log-format.md`).
    Log,
}

impl ObjectKind {
    /// True for the default kind, which is left out on the wire.
    pub fn is_backup(&self) -> bool {
        *self == ObjectKind::Backup
    }

    /// The name as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Backup => "backup",
            ObjectKind::Log => "log",
        }
    }
}

impl std::fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Longest file name, in bytes.
pub const MAX_FILE_NAME_BYTES: usize = 255;

/// A request header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Store `bytes` bytes (sent in the following payload frame) as `file`;
    /// never overwrites.
    Put {
        validator: String,
        file: String,
        bytes: u64,
        #[serde(default, skip_serializing_if = "ObjectKind::is_backup")]
        kind: ObjectKind,
    },
    /// Names of the validator's stored files of `kind`, sorted; with
    /// `after`, only the names sorting after it.
    List {
        validator: String,
        #[serde(default, skip_serializing_if = "ObjectKind::is_backup")]
        kind: ObjectKind,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
    },
    /// One stored file.
    Get {
        validator: String,
        file: String,
        #[serde(default, skip_serializing_if = "ObjectKind::is_backup")]
        kind: ObjectKind,
    },
    /// Delete one stored file.
    Remove {
        validator: String,
        file: String,
        #[serde(default, skip_serializing_if = "ObjectKind::is_backup")]
        kind: ObjectKind,
    },
}

impl Request {
    /// The validator this request is about.
    pub fn validator(&self) -> &str {
        match self {
            Request::Put { validator, .. }
            | Request::List { validator, .. }
            | Request::Get { validator, .. }
            | Request::Remove { validator, .. } => validator,
        }
    }

    /// The kind of object this request is about.
    pub fn kind(&self) -> ObjectKind {
        match self {
            Request::Put { kind, .. }
            | Request::List { kind, .. }
            | Request::Get { kind, .. }
            | Request::Remove { kind, .. } => *kind,
        }
    }

    /// The op name as on the wire.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Put { .. } => "put",
            Request::List { .. } => "list",
            Request::Get { .. } => "get",
            Request::Remove { .. } => "remove",
        }
    }
}

/// A response header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Response {
    pub ok: bool,
    /// `list`: the file names, sorted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<String>>,
    /// `get`: the length of the payload frame that follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Set when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl Response {
    /// `{"ok":true}`.
    pub fn ok() -> Response {
        Response {
            ok: true,
            files: None,
            bytes: None,
            error: None,
        }
    }

    /// `{"ok":true,"files":[…]}`.
    pub fn listing(files: Vec<String>) -> Response {
        Response {
            files: Some(files),
            ..Response::ok()
        }
    }

    /// `{"ok":true,"bytes":N}`, followed by a payload frame.
    pub fn payload(bytes: u64) -> Response {
        Response {
            bytes: Some(bytes),
            ..Response::ok()
        }
    }

    /// `{"ok":false,"error":{…}}`.
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Response {
        Response {
            ok: false,
            files: None,
            bytes: None,
            error: Some(ErrorBody {
                kind,
                message: message.into(),
            }),
        }
    }
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    pub kind: ErrorKind,
    /// Human-readable detail; never parsed.
    pub message: String,
}

/// Error kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// A file of that name exists; stored files are never overwritten.
    AlreadyExists,
    /// No such file.
    NotFound,
    /// A header or payload frame larger than the limits.
    TooLarge,
    /// The file name breaks [`file_name_problem`].
    InvalidName,
    /// The validator is not configured on this bastion.
    UnknownValidator,
    /// Not a valid frame or request (bad JSON, unknown field or op, payload
    /// length differing from the announced one).
    BadFrame,
    /// The validator's size cap would be exceeded even after retention.
    Quota,
    /// The bastion failed to read or write its own storage.
    Internal,
    /// The validator already has as many connections open as the bastion
    /// allows one validator (`backups.max-connections-per-validator`); the
    /// bastion closes this one. Try again later.
    Busy,
}

impl ErrorKind {
    /// The name as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::NotFound => "not_found",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::InvalidName => "invalid_name",
            ErrorKind::UnknownValidator => "unknown_validator",
            ErrorKind::BadFrame => "bad_frame",
            ErrorKind::Quota => "quota",
            ErrorKind::Internal => "internal",
            ErrorKind::Busy => "busy",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a stored file name is not acceptable, or `None` when it is: a plain
/// name of 1–255 bytes, without `/` or `\`, not starting with `.`, without
/// control, bidirectional-override or format characters
/// ([`peer_text::is_unsafe`](crate::peer_text::is_unsafe)), so a stored
/// name can be logged and shown as it is. The supervisor's
/// `validate_file_name` allows a subset of these names.
pub fn file_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("empty")
    } else if name.len() > MAX_FILE_NAME_BYTES {
        Some("longer than 255 bytes")
    } else if name.contains('/') || name.contains('\\') {
        Some("contains a path separator")
    } else if name.starts_with('.') {
        Some("starts with '.'")
    } else if name.chars().any(crate::peer_text::is_unsafe) {
        Some("contains control characters")
    } else {
        None
    }
}

/// A backup's file name as the supervisor publishes it:
/// `backup-<chain_id>-<ADDRESS>-<sequence:020>-h<height>.age`.
///
/// The zero-padded sequence makes lexical order equal sequence order for one
/// validator. A name carries no authority: a restore checks it against the
/// signed metadata inside the bundle. (The supervisor's
/// `backup::BackupFileName` follows the same rules.)
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackupFileName {
    /// The chain ID ([`chain_id_problem`]).
    pub chain_id: String,
    /// The validator's 20-byte CometBFT address, 40 upper-case hex digits.
    pub validator_address: String,
    /// The backup's sequence number, increasing with every backup written.
    pub sequence: u64,
    /// The sign state's height when the backup was taken.
    pub height: u64,
}

impl std::fmt::Display for BackupFileName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "backup-{}-{}-{:020}-h{}.age",
            self.chain_id, self.validator_address, self.sequence, self.height
        )
    }
}

impl BackupFileName {
    /// Parses a name written by [`Display`](std::fmt::Display); `None` for
    /// anything else (other files in a store are ignored, not errors).
    pub fn parse(name: &str) -> Option<BackupFileName> {
        let core = name.strip_prefix("backup-")?.strip_suffix(".age")?;
        // The chain ID may itself contain '-', so split from the right.
        let mut parts = core.rsplitn(4, '-');
        let height_part = parts.next()?;
        let sequence_part = parts.next()?;
        let address = parts.next()?;
        let chain_id = parts.next()?;
        let height_digits = height_part.strip_prefix('h')?;
        if height_digits.is_empty() || !height_digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if sequence_part.len() != 20 || !sequence_part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Upper-case only: the supervisor always writes it so, and one
        // backup must have one name.
        if address.len() != 40
            || !address
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
        {
            return None;
        }
        if chain_id_problem(chain_id).is_some() {
            return None;
        }
        Some(BackupFileName {
            chain_id: chain_id.to_owned(),
            validator_address: address.to_owned(),
            sequence: sequence_part.parse().ok()?,
            height: height_digits.parse().ok()?,
        })
    }
}

/// Why a chain ID cannot go into a backup file name, or `None`: it must be
/// 1–50 characters of `[A-Za-z0-9._-]`, not starting with `.` or `-`
/// (CometBFT-style IDs), so that it can never leave or hide in a store.
pub fn chain_id_problem(chain_id: &str) -> Option<&'static str> {
    if chain_id.is_empty() || chain_id.len() > 50 {
        Some("must be 1 to 50 characters")
    } else if chain_id.starts_with('.') || chain_id.starts_with('-') {
        Some("must not start with '.' or '-'")
    } else if !chain_id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("may contain only letters, digits, '.', '_' and '-'")
    } else {
        None
    }
}

/// The 4-byte big-endian length prefix for a frame of `length` bytes, or
/// `None` when `length` does not fit in 32 bits.
pub fn length_prefix(length: usize) -> Option<[u8; 4]> {
    u32::try_from(length).ok().map(u32::to_be_bytes)
}

/// A complete header frame (length prefix + JSON) for `header`.
pub fn encode_header<T: Serialize>(header: &T) -> Vec<u8> {
    let json = serde_json::to_vec(header).expect("protocol headers always serialize");
    let mut frame = Vec::with_capacity(4 + json.len());
    frame.extend_from_slice(&(json.len() as u32).to_be_bytes());
    frame.extend_from_slice(&json);
    frame
}

/// Parses a request header frame's body (without the length prefix). The
/// error text quotes the frame, so it is cleaned
/// ([`peer_text::clean`](crate::peer_text::clean)) before anyone logs it.
pub fn decode_request(body: &[u8]) -> Result<Request, String> {
    serde_json::from_slice(body)
        .map_err(|error| crate::peer_text::clean(&format!("invalid request header: {error}")))
}

/// Parses a response header frame's body (without the length prefix). An
/// error's message is the bastion's text, cleaned here
/// ([`peer_text::clean`](crate::peer_text::clean)) before anyone logs it;
/// so is serde's error text, which may quote the frame.
pub fn decode_response(body: &[u8]) -> Result<Response, String> {
    use crate::peer_text::clean;
    let mut response: Response = serde_json::from_slice(body)
        .map_err(|error| clean(&format!("invalid response header: {error}")))?;
    if let Some(error) = &mut response.error {
        error.message = clean(&error.message);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_in_the_documented_shape() {
        let put = Request::Put {
            validator: "val-a".into(),
            file: "f.age".into(),
            bytes: 3,
            kind: ObjectKind::Backup,
        };
        let frame = encode_header(&put);
        assert_eq!(&frame[..4], &((frame.len() - 4) as u32).to_be_bytes());
        assert_eq!(
            std::str::from_utf8(&frame[4..]).unwrap(),
            r#"{"op":"put","validator":"val-a","file":"f.age","bytes":3}"#
        );
        assert_eq!(decode_request(&frame[4..]).unwrap(), put);
        let list = decode_request(br#"{"op":"list","validator":"v"}"#).unwrap();
        assert_eq!(list.validator(), "v");
        assert_eq!(list.op(), "list");
        assert_eq!(list.kind(), ObjectKind::Backup);
    }

    #[test]
    fn the_kind_is_left_out_for_backups_and_named_for_logs() {
        let log = Request::Get {
            validator: "v".into(),
            file: "log-h-00000000000000000001.age".into(),
            kind: ObjectKind::Log,
        };
        let frame = encode_header(&log);
        assert_eq!(
            std::str::from_utf8(&frame[4..]).unwrap(),
            r#"{"op":"get","validator":"v","file":"log-h-00000000000000000001.age","kind":"log"}"#
        );
        assert_eq!(decode_request(&frame[4..]).unwrap(), log);
        let list =
            decode_request(br#"{"op":"list","validator":"v","kind":"log","after":"a"}"#).unwrap();
        assert_eq!(
            list,
            Request::List {
                validator: "v".into(),
                kind: ObjectKind::Log,
                after: Some("a".into())
            }
        );
        assert!(decode_request(br#"{"op":"list","validator":"v","kind":"movie"}"#).is_err());
        assert_eq!(max_payload_bytes(ObjectKind::Backup), MAX_PAYLOAD_BYTES);
        assert!(max_payload_bytes(ObjectKind::Log) > MAX_PAYLOAD_BYTES);
    }

    #[test]
    fn unknown_fields_and_ops_are_rejected() {
        for body in [
            &br#"{"op":"list","validator":"v","extra":1}"#[..],
            br#"{"op":"format","validator":"v"}"#,
            br#"{"validator":"v"}"#,
            br#"{"op":"get","validator":"v"}"#,
            b"not json",
        ] {
            assert!(decode_request(body).is_err(), "{body:?}");
        }
        assert!(decode_response(br#"{"ok":true,"surprise":1}"#).is_err());
    }

    #[test]
    fn responses_have_the_documented_shape() {
        let error = Response::error(ErrorKind::AlreadyExists, "x exists");
        assert_eq!(
            serde_json::to_string(&error).unwrap(),
            r#"{"ok":false,"error":{"kind":"already_exists","message":"x exists"}}"#
        );
        assert_eq!(
            serde_json::to_string(&Response::ok()).unwrap(),
            r#"{"ok":true}"#
        );
        assert_eq!(
            decode_response(br#"{"ok":true,"files":["a"]}"#).unwrap(),
            Response::listing(vec!["a".into()])
        );
        for kind in [
            ErrorKind::AlreadyExists,
            ErrorKind::NotFound,
            ErrorKind::TooLarge,
            ErrorKind::InvalidName,
            ErrorKind::UnknownValidator,
            ErrorKind::BadFrame,
            ErrorKind::Quota,
            ErrorKind::Internal,
            ErrorKind::Busy,
        ] {
            assert_eq!(
                serde_json::to_string(&kind).unwrap(),
                format!("\"{}\"", kind.as_str())
            );
        }
    }

    #[test]
    fn file_names_follow_the_store_rules() {
        assert_eq!(file_name_problem("backup-x.age"), None);
        assert_eq!(file_name_problem(&"a".repeat(255)), None);
        for bad in ["", ".hidden", "a/b", "a\\b", "a\nb", "..", &"a".repeat(256)] {
            assert!(file_name_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn backup_file_names_round_trip_and_sort_by_sequence() {
        let name = |sequence| BackupFileName {
            chain_id: "cosmoshub-4".into(),
            validator_address: "A1B2C3D4E5F60718293A4B5C6D7E8F9012345678".into(),
            sequence,
            height: 20_000_000,
        };
        let text = name(42).to_string();
        assert_eq!(
            text,
            "backup-cosmoshub-4-A1B2C3D4E5F60718293A4B5C6D7E8F9012345678-00000000000000000042-h20000000.age"
        );
        assert_eq!(BackupFileName::parse(&text), Some(name(42)));
        assert!(name(9).to_string() < name(10).to_string());
        let simulated =
            "backup-sim-1-0000000000000000000000000000000000000000-00000000000000000001-h1.age";
        assert_eq!(BackupFileName::parse(simulated).unwrap().chain_id, "sim-1");
    }

    #[test]
    fn foreign_backup_file_names_do_not_parse() {
        let too_long_chain = format!(
            "backup-{}-A1B2C3D4E5F60718293A4B5C6D7E8F9012345678-00000000000000000042-h1.age",
            "c".repeat(51)
        );
        for text in [
            "README",
            "backup-x.age",
            "backup-c-A1B2C3D4E5F60718293A4B5C6D7E8F9012345678-42-h1.age",
            "backup-c-a1b2c3d4e5f60718293a4b5c6d7e8f9012345678-00000000000000000042-h1.age",
            "backup-c-A1B2C3D4E5F60718293A4B5C6D7E8F901234567-00000000000000000042-h1.age",
            "backup-c-A1B2C3D4E5F60718293A4B5C6D7E8F9012345678-00000000000000000042-1.age",
            "backup-c-A1B2C3D4E5F60718293A4B5C6D7E8F9012345678-00000000000000000042-h.age",
            "backup-c-A1B2C3D4E5F60718293A4B5C6D7E8F9012345678-0000000000000000004x-h1.age",
            "backup-.c-A1B2C3D4E5F60718293A4B5C6D7E8F9012345678-00000000000000000042-h1.age",
            "backup--A1B2C3D4E5F60718293A4B5C6D7E8F9012345678-00000000000000000042-h1.age",
            "backup-c-A1B2C3D4E5F60718293A4B5C6D7E8F9012345678-00000000000000000042-h1.tar",
            &too_long_chain,
        ] {
            assert_eq!(BackupFileName::parse(text), None, "{text}");
        }
    }

    #[test]
    fn chain_ids_are_checked_because_they_go_into_file_names() {
        for good in ["cosmoshub-4", "osmosis-1", "test_chain.v2", "sim-1"] {
            assert_eq!(chain_id_problem(good), None, "{good}");
        }
        let too_long = "x".repeat(51);
        for bad in ["", "a/b", "../x", ".hidden", "-x", "a b", too_long.as_str()] {
            assert!(chain_id_problem(bad).is_some(), "{bad}");
        }
    }
}
