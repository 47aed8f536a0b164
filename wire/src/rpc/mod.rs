//! The supervisor's control RPC: the greeting, JSON-RPC 2.0 messages, roles,
//! the method catalogue and the authentication message (see `docs/rpc.md`).
//!
//! The supervisor listens on a Unix socket (`[rpc] socket`); the tunnels
//! publish it on every bastion with an SSH reverse Unix-socket forward. On
//! every new connection the supervisor first writes one line, the
//! [`Greeting`]: a JSON object terminated by `\n`, at most
//! [`MAX_GREETING_BYTES`] bytes including the newline. It carries no secret
//! and no state, only who is answering, so a bastion's health check can
//! prove the whole path (bastion socket → sshd → tunnel → supervisor) is
//! alive without any credentials.
//!
//! The request protocol that follows the greeting (JSON-RPC, TLS and
//! operator authentication) is below and in `docs/rpc.md`; a client that
//! only wants liveness reads the greeting and closes the connection.
//!
//! What each method takes and answers is typed in [`methods`] (one type
//! per method, and [`methods::parse_params`]), [`params`] (the params and
//! their value rules) and [`results`] (the answers); a test holds
//! `docs/rpc.md` to those types.

use std::fmt;

use serde::{Deserialize, Serialize};

pub mod methods;
pub mod params;
pub mod results;

#[cfg(test)]
mod docs_check;

/// Value of [`Greeting::service`].
pub const SERVICE: &str = "palisade-supervisor";

/// Version of the control protocol announced in the greeting.
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest greeting line, newline included. A reader gives up after this
/// many bytes without a newline.
pub const MAX_GREETING_BYTES: usize = 1024;

/// First line the supervisor writes on every control-socket connection.
///
/// ```json
/// {"service":"palisade-supervisor","protocol":1,"version":"0.1.0","validator":"val-a"}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Greeting {
    /// Always [`SERVICE`].
    pub service: String,
    /// [`PROTOCOL_VERSION`] of the answering supervisor.
    pub protocol: u32,
    /// The supervisor's release (`CARGO_PKG_VERSION`).
    pub version: String,
    /// The validator's name (`[rpc] name`, default the host name), so a
    /// bastion serving several validators can tell it reached the right one.
    pub validator: String,
    /// Whether this connection must switch to TLS after the greeting. Absent
    /// from older supervisors, which served only the greeting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsRequirement>,
}

/// [`Greeting::tls`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsRequirement {
    /// Not a trusted local user: TLS, then authentication.
    Required,
    /// A trusted local user (uid 0 or the supervisor's): plaintext allowed.
    Optional,
}

/// Why a greeting line was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GreetingError {
    /// More than [`MAX_GREETING_BYTES`] without a newline.
    TooLong,
    /// Not a JSON greeting object.
    Malformed(String),
    /// Valid JSON from something other than a palisade supervisor.
    WrongService(String),
}

impl std::fmt::Display for GreetingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GreetingError::TooLong => {
                write!(f, "greeting longer than {MAX_GREETING_BYTES} bytes")
            }
            GreetingError::Malformed(reason) => write!(f, "malformed greeting: {reason}"),
            GreetingError::WrongService(service) => {
                write!(f, "peer is {service:?}, not {SERVICE:?}")
            }
        }
    }
}

impl std::error::Error for GreetingError {}

impl Greeting {
    /// The greeting of this build for `validator`.
    pub fn new(validator: impl Into<String>, version: impl Into<String>) -> Greeting {
        Greeting {
            service: SERVICE.to_string(),
            protocol: PROTOCOL_VERSION,
            version: version.into(),
            validator: validator.into(),
            tls: None,
        }
    }

    /// The line as written on the socket, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).expect("greeting serializes");
        line.push(b'\n');
        line
    }

    /// Parse one line (with or without its trailing newline).
    ///
    /// Whatever answers on a validator's socket writes this line, so every
    /// string in the result — `version`, `validator`, a wrong `service` and
    /// serde's error text, which quotes the line — is passed through
    /// [`peer_text::clean`](crate::peer_text::clean) here, where it enters:
    /// no caller can print or log it raw.
    pub fn parse(line: &[u8]) -> Result<Greeting, GreetingError> {
        use crate::peer_text::clean;
        if line.len() > MAX_GREETING_BYTES {
            return Err(GreetingError::TooLong);
        }
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let mut greeting: Greeting = serde_json::from_slice(line)
            .map_err(|error| GreetingError::Malformed(clean(&error.to_string())))?;
        if greeting.service != SERVICE {
            return Err(GreetingError::WrongService(clean(&greeting.service)));
        }
        greeting.version = clean(&greeting.version);
        greeting.validator = clean(&greeting.validator);
        Ok(greeting)
    }
}

/// Longest request or response line, newline included.
pub const MAX_LINE_BYTES: usize = 65536;

/// Longest secret (`vault.unlock`'s passphrase), in bytes: the supervisor's
/// own limit for a passphrase (`passphrase.rs`).
pub const MAX_SECRET_BYTES: usize = 4096;

/// The byte a secret is padded with (`docs/rpc.md` §4). It never occurs in
/// UTF-8, so it can neither be confused with a secret's text nor appear in
/// an unpadded (UTF-8) secret line.
pub const SECRET_PAD_BYTE: u8 = 0xFF;

/// Length of a padded secret line before its newline: the longest secret
/// and at least one pad byte. Every padded secret line has this length,
/// so its length tells nothing about the secret.
pub const PADDED_SECRET_BYTES: usize = MAX_SECRET_BYTES + 1;

/// Longest secret line (`vault.unlock`), newline included: a padded one.
pub const MAX_SECRET_LINE_BYTES: usize = PADDED_SECRET_BYTES + 1;

/// Why a secret line cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretLineError {
    /// The secret is longer than [`MAX_SECRET_BYTES`].
    TooLong,
    /// Pad bytes, but not a well-formed padded line: not exactly
    /// [`PADDED_SECRET_BYTES`] long, or text after the padding started.
    BadPadding,
}

impl fmt::Display for SecretLineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretLineError::TooLong => {
                write!(f, "the secret is longer than {MAX_SECRET_BYTES} bytes")
            }
            SecretLineError::BadPadding => write!(
                f,
                "the secret line is not padded as docs/rpc.md §4 says (the secret, then 0xFF \
                 bytes up to {PADDED_SECRET_BYTES} bytes, then the newline)"
            ),
        }
    }
}

impl std::error::Error for SecretLineError {}

/// Append `secret` padded to [`PADDED_SECRET_BYTES`] with
/// [`SECRET_PAD_BYTE`] (no newline) to `line`. `line` should already have
/// the capacity, so that a zeroizing buffer is never reallocated.
pub fn pad_secret(secret: &str, line: &mut Vec<u8>) -> Result<(), SecretLineError> {
    if secret.len() > MAX_SECRET_BYTES {
        return Err(SecretLineError::TooLong);
    }
    line.extend_from_slice(secret.as_bytes());
    line.resize(
        line.len() + PADDED_SECRET_BYTES - secret.len(),
        SECRET_PAD_BYTE,
    );
    Ok(())
}

/// The secret in a secret line (its newline already removed): a padded
/// line's text before the padding, or an unpadded line as it is (the old
/// form, accepted; it shows the secret's length to whoever sees record
/// sizes). Whether the secret is UTF-8 is the caller's check.
pub fn unpad_secret(line: &[u8]) -> Result<&[u8], SecretLineError> {
    match line.iter().position(|&byte| byte == SECRET_PAD_BYTE) {
        None if line.len() > MAX_SECRET_BYTES => Err(SecretLineError::TooLong),
        None => Ok(line),
        Some(end)
            if line.len() == PADDED_SECRET_BYTES
                && line[end..].iter().all(|&byte| byte == SECRET_PAD_BYTE) =>
        {
            Ok(&line[..end])
        }
        Some(_) => Err(SecretLineError::BadPadding),
    }
}

/// TLS exporter label for the authentication channel binding.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-palisade-rpc-auth-v1";

/// Length of a challenge and of the channel binding.
pub const CHALLENGE_BYTES: usize = 32;

/// The pin of a certificate given its DER ([`format_fingerprint`] of its
/// SHA-256), as `palisade-ctl` compares it with the pinned one.
pub fn fingerprint_of(cert_der: &[u8]) -> String {
    use sha2::Digest;
    let digest: [u8; 32] = sha2::Sha256::digest(cert_der).into();
    format_fingerprint(&digest)
}

/// What an operator signs to log in: see `docs/rpc.md` §2.
pub fn auth_message(
    validator: &str,
    challenge: &[u8; CHALLENGE_BYTES],
    channel_binding: &[u8; CHALLENGE_BYTES],
) -> Vec<u8> {
    let mut message = Vec::with_capacity(32 + validator.len() + 2 * CHALLENGE_BYTES);
    message.extend_from_slice(b"palisade-rpc-auth-v1\n");
    message.extend_from_slice(validator.as_bytes());
    message.push(b'\n');
    message.extend_from_slice(challenge);
    message.extend_from_slice(channel_binding);
    message
}

/// Prefix of a certificate pin: `sha256:` and 64 lower-case hex digits of
/// the SHA-256 of the certificate's DER (`docs/rpc.md` §1).
pub const FINGERPRINT_PREFIX: &str = "sha256:";

/// The pin of a certificate whose DER has SHA-256 `digest`:
/// `sha256:<64 lower-case hex>`.
pub fn format_fingerprint(digest: &[u8; 32]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(FINGERPRINT_PREFIX.len() + 64);
    text.push_str(FINGERPRINT_PREFIX);
    for byte in digest {
        text.push(char::from(HEX[usize::from(byte >> 4)]));
        text.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    text
}

/// The SHA-256 digest a pin names. Accepts upper- or lower-case hex; the
/// `sha256:` prefix is required, so a pin of another kind is never
/// mistaken for this one.
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], String> {
    let Some(hex) = text.trim().strip_prefix(FINGERPRINT_PREFIX) else {
        return Err(format!(
            "'{text}' is not a certificate pin: expected {FINGERPRINT_PREFIX}<64 hex digits>"
        ));
    };
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "'{text}' is not a certificate pin: expected {FINGERPRINT_PREFIX}<64 hex digits>"
        ));
    }
    let mut digest = [0u8; 32];
    for (index, pair) in hex.as_bytes().chunks(2).enumerate() {
        let pair = std::str::from_utf8(pair).map_err(|error| error.to_string())?;
        digest[index] = u8::from_str_radix(pair, 16).map_err(|error| error.to_string())?;
    }
    Ok(digest)
}

/// An operator's role; ordered, each includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Status, health, logs, listings.
    Viewer,
    /// Start/stop the node, backups, upgrades, tunnels.
    Operator,
    /// Unlock/lock, restore, host shutdown, failover, IP rotation.
    Admin,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        })
    }
}

/// Every method, with the role it needs (`None`: the authentication calls,
/// open to anyone). Methods under the reserved prefixes `failover.` and
/// `ip.` are admin-only and answered "unknown method" until they exist.
/// Each has a type in [`methods`]; a test keeps [`methods::CATALOGUE`] and
/// this list in step.
pub const METHODS: &[(&str, Option<Role>)] = &[
    ("auth.challenge", None),
    ("auth.login", None),
    ("status", Some(Role::Viewer)),
    ("health", Some(Role::Viewer)),
    ("logs.tail", Some(Role::Viewer)),
    ("tunnel.list", Some(Role::Viewer)),
    ("upgrade.list", Some(Role::Viewer)),
    ("backup.list", Some(Role::Viewer)),
    ("node.start", Some(Role::Operator)),
    ("node.stop", Some(Role::Operator)),
    ("node.restart", Some(Role::Operator)),
    ("backup.now", Some(Role::Operator)),
    ("upgrade.add", Some(Role::Admin)),
    ("upgrade.cancel", Some(Role::Admin)),
    ("tunnel.reconnect", Some(Role::Operator)),
    ("vault.unlock", Some(Role::Admin)),
    ("vault.lock", Some(Role::Admin)),
    ("backup.restore", Some(Role::Admin)),
    ("host.shutdown", Some(Role::Admin)),
    ("failover.status", Some(Role::Viewer)),
    ("failover.handoff", Some(Role::Admin)),
    ("failover.pause", Some(Role::Admin)),
    ("failover.resume", Some(Role::Admin)),
    ("eip.list", Some(Role::Admin)),
    ("eip.rotate", Some(Role::Admin)),
    ("eip.status", Some(Role::Admin)),
];

/// Methods whose request is followed by a secret line (`docs/rpc.md` §4).
pub const SECRET_METHODS: &[&str] = &["vault.unlock"];

/// The role `method` needs: `Some(None)` for the authentication calls,
/// `None` for an unknown method.
pub fn required_role(method: &str) -> Option<Option<Role>> {
    METHODS
        .iter()
        .find(|(name, _)| *name == method)
        .map(|(_, role)| *role)
}

/// A JSON-RPC 2.0 request (one line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Always `"2.0"`.
    pub jsonrpc: String,
    /// Echoed in the response; a number or a string.
    pub id: serde_json::Value,
    pub method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<serde_json::Value>,
}

/// A JSON-RPC 2.0 response (one line): exactly one of `result` and `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Response {
    pub jsonrpc: String,
    pub id: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RpcError>,
}

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

/// Error codes (`docs/rpc.md` §5).
pub mod code {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const UNAUTHENTICATED: i64 = -32001;
    pub const FORBIDDEN: i64 = -32002;
    pub const RATE_LIMITED: i64 = -32003;
    pub const WRONG_STATE: i64 = -32004;
    pub const LINE_TOO_LONG: i64 = -32005;
    pub const INTERNAL: i64 = -32010;

    /// Every code above: all a supervisor ever answers with (the table in
    /// `docs/rpc.md` §5, which a test keeps in step).
    pub const ALL: &[i64] = &[
        PARSE_ERROR,
        INVALID_REQUEST,
        METHOD_NOT_FOUND,
        INVALID_PARAMS,
        UNAUTHENTICATED,
        FORBIDDEN,
        RATE_LIMITED,
        WRONG_STATE,
        LINE_TOO_LONG,
        INTERNAL,
    ];
}

impl RpcError {
    /// An error without data.
    pub fn new(code: i64, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// −32602 naming the params member at fault: `data: {"field": …}`.
    pub fn invalid_params(field: &str, message: impl Into<String>) -> RpcError {
        RpcError {
            code: code::INVALID_PARAMS,
            message: message.into(),
            data: Some(serde_json::json!({ "field": field })),
        }
    }

    /// −32602 for a name that the supervisor does not know (a store, a
    /// bastion): `data: {"field": …, "known": [the names it knows]}`.
    pub fn unknown_name<S: Into<String>>(
        field: &str,
        message: impl Into<String>,
        known: impl IntoIterator<Item = S>,
    ) -> RpcError {
        let known: Vec<String> = known.into_iter().map(Into::into).collect();
        RpcError {
            code: code::INVALID_PARAMS,
            message: message.into(),
            data: Some(serde_json::json!({ "field": field, "known": known })),
        }
    }

    /// `data.field`, when the error names one.
    pub fn field(&self) -> Option<&str> {
        self.data.as_ref()?.get("field")?.as_str()
    }
}

impl Response {
    /// A success.
    pub fn ok(id: serde_json::Value, result: serde_json::Value) -> Response {
        Response {
            jsonrpc: "2.0".into(),
            id,
            result: Some(result),
            error: None,
        }
    }

    /// A failure.
    pub fn err(id: serde_json::Value, error: RpcError) -> Response {
        Response {
            jsonrpc: "2.0".into(),
            id,
            result: None,
            error: Some(error),
        }
    }

    /// The line as written, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).expect("response serializes");
        line.push(b'\n');
        line
    }
}

/// Parse one request line (without or with its newline). On failure, the
/// error to answer with id `null`.
pub fn parse_request(line: &[u8]) -> Result<Request, RpcError> {
    if line.len() > MAX_LINE_BYTES {
        return Err(RpcError::new(
            code::LINE_TOO_LONG,
            format!("request longer than {MAX_LINE_BYTES} bytes"),
        ));
    }
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let value: serde_json::Value = serde_json::from_slice(line)
        .map_err(|error| RpcError::new(code::PARSE_ERROR, format!("not JSON: {error}")))?;
    let request: Request = serde_json::from_value(value).map_err(|error| {
        RpcError::new(
            code::INVALID_REQUEST,
            format!("not a JSON-RPC 2.0 request: {error}"),
        )
    })?;
    if request.jsonrpc != "2.0" {
        return Err(RpcError::new(
            code::INVALID_REQUEST,
            format!("jsonrpc must be \"2.0\", not {:?}", request.jsonrpc),
        ));
    }
    if !(request.id.is_number() || request.id.is_string()) {
        return Err(RpcError::new(
            code::INVALID_REQUEST,
            "id must be a number or a string",
        ));
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_secrets_all_have_one_length_and_unpad_to_themselves() {
        for secret in [
            "",
            "a",
            "correct horse battery staple",
            "ünïcödé ✓",
            &"x".repeat(MAX_SECRET_BYTES),
        ] {
            let mut line = Vec::with_capacity(PADDED_SECRET_BYTES);
            pad_secret(secret, &mut line).unwrap();
            assert_eq!(line.len(), PADDED_SECRET_BYTES, "{secret:?}");
            assert_eq!(line.capacity(), PADDED_SECRET_BYTES, "never reallocated");
            assert_eq!(unpad_secret(&line), Ok(secret.as_bytes()));
        }
        let mut line = Vec::new();
        assert_eq!(
            pad_secret(&"x".repeat(MAX_SECRET_BYTES + 1), &mut line),
            Err(SecretLineError::TooLong)
        );
    }

    #[test]
    fn secret_lines_unpad_unambiguously() {
        let pad = |text: &[u8], total: usize| {
            let mut line = text.to_vec();
            line.resize(total, SECRET_PAD_BYTE);
            line
        };
        let long = vec![b'x'; MAX_SECRET_BYTES + 1];
        type Unpadded<'a> = Result<&'a [u8], SecretLineError>;
        let cases: Vec<(Vec<u8>, Unpadded)> = vec![
            // The old, unpadded form.
            (b"plain passphrase".to_vec(), Ok(b"plain passphrase")),
            (Vec::new(), Ok(b"")),
            (long.clone(), Err(SecretLineError::TooLong)),
            // Padded: only the exact length, only pad bytes after the text.
            (pad(b"abc", PADDED_SECRET_BYTES), Ok(b"abc")),
            (
                pad(b"abc", PADDED_SECRET_BYTES - 1),
                Err(SecretLineError::BadPadding),
            ),
            (
                pad(b"abc", PADDED_SECRET_BYTES + 1),
                Err(SecretLineError::BadPadding),
            ),
            (
                [pad(b"abc", PADDED_SECRET_BYTES - 1), b"d".to_vec()].concat(),
                Err(SecretLineError::BadPadding),
            ),
        ];
        for (line, expected) in cases {
            assert_eq!(
                unpad_secret(&line),
                expected,
                "{:?}",
                &line[..line.len().min(20)]
            );
        }
    }

    #[test]
    fn requests_parse_strictly() {
        let good = br#"{"jsonrpc":"2.0","id":7,"method":"status"}"#;
        assert_eq!(parse_request(good).unwrap().method, "status");
        let cases: [(&[u8], i64); 7] = [
            (b"status", code::PARSE_ERROR),
            (b"", code::PARSE_ERROR),
            (
                br#"{"jsonrpc":"1.0","id":1,"method":"status"}"#,
                code::INVALID_REQUEST,
            ),
            (
                br#"{"jsonrpc":"2.0","method":"status"}"#,
                code::INVALID_REQUEST,
            ),
            (
                br#"{"jsonrpc":"2.0","id":{},"method":"status"}"#,
                code::INVALID_REQUEST,
            ),
            (
                br#"{"jsonrpc":"2.0","id":1,"method":"status","x":1}"#,
                code::INVALID_REQUEST,
            ),
            (&[b' '; MAX_LINE_BYTES + 1], code::LINE_TOO_LONG),
        ];
        for (line, expected) in cases {
            let error = parse_request(line).unwrap_err();
            assert_eq!(error.code, expected, "{:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn fingerprint_is_sha256_lowercase_hex() {
        // SHA-256 of the empty input.
        assert_eq!(
            fingerprint_of(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn roles_are_ordered_and_every_method_is_known() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        assert_eq!(required_role("status"), Some(Some(Role::Viewer)));
        assert_eq!(required_role("auth.login"), Some(None));
        assert_eq!(required_role("vault.unlock"), Some(Some(Role::Admin)));
        assert_eq!(required_role("format.disk"), None);
        for method in SECRET_METHODS {
            assert!(required_role(method).is_some(), "{method}");
        }
        let message = auth_message("val-a", &[1; 32], &[0; 32]);
        assert!(message.starts_with(b"palisade-rpc-auth-v1\nval-a\n"));
        assert_eq!(message.len(), 21 + 6 + 64);
    }

    #[test]
    fn fingerprints_round_trip_and_reject_other_forms() {
        let digest: [u8; 32] = std::array::from_fn(|i| (i * 9) as u8);
        let text = format_fingerprint(&digest);
        assert_eq!(text.len(), 7 + 64);
        assert!(text.starts_with("sha256:000912"));
        assert_eq!(parse_fingerprint(&text), Ok(digest));
        assert_eq!(
            parse_fingerprint(&text.to_uppercase().replace("SHA256:", "sha256:")),
            Ok(digest)
        );
        for bad in [
            "",
            "sha256:",
            "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s",
            &text[..70],
            &format!("{text}0"),
            &text.replace('0', "g"),
        ] {
            assert!(parse_fingerprint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn greeting_round_trips_and_rejects_bad_lines() {
        let greeting = Greeting::new("val-a", "0.1.0");
        let line = greeting.to_line();
        assert_eq!(
            line,
            b"{\"service\":\"palisade-supervisor\",\"protocol\":1,\"version\":\"0.1.0\",\"validator\":\"val-a\"}\n"
        );
        assert_eq!(Greeting::parse(&line), Ok(greeting));
        type Expect = fn(&GreetingError) -> bool;
        let cases: [(&[u8], Expect); 4] = [
            (b"", |e| matches!(e, GreetingError::Malformed(_))),
            (b"SSH-2.0-OpenSSH_9.2\n", |e| {
                matches!(e, GreetingError::Malformed(_))
            }),
            (
                b"{\"service\":\"other\",\"protocol\":1,\"version\":\"1\",\"validator\":\"v\"}\n",
                |e| matches!(e, GreetingError::WrongService(_)),
            ),
            (&[b'x'; MAX_GREETING_BYTES + 1], |e| {
                matches!(e, GreetingError::TooLong)
            }),
        ];
        for (line, expected) in cases {
            let error = Greeting::parse(line).unwrap_err();
            assert!(
                expected(&error),
                "{:?}: {error:?}",
                String::from_utf8_lossy(line)
            );
        }
    }
}
