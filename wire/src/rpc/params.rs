//! The params of the control RPC's methods (`docs/rpc.md` §3) and the
//! rules their values follow, written once for the supervisor and its
//! clients.
//!
//! Every params type is strict: `deny_unknown_fields`; an optional field is
//! left out when `None`, and an explicit `null` for it is refused (a typo'd
//! value must not silently mean "absent"); [`Validate::validate`] checks
//! the value rules. The supervisor parses incoming params with
//! [`parse_params`](super::methods::parse_params), which runs both and
//! answers every failure with −32602 naming the field; `palisade-ctl`
//! builds these types and runs the same `validate` before connecting.
//!
//! What stays out of here: checks that need the supervisor's state or
//! heavy dependencies — whether a store or a bastion of that name exists,
//! parsing a download URL (and redacting its tokens), the recased directory
//! name of an upgrade. The supervisor makes those after `parse_params`.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Unexpected, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::RpcError;
use crate::backup_store::{BackupFileName, file_name_problem};

/// Value rules of a params type that serde's types cannot express (ranges,
/// name syntax, which fields go together).
pub trait Validate {
    /// `Ok` when every rule holds; otherwise −32602 with `data.field`
    /// naming the field at fault, and a message that says what is expected.
    fn validate(&self) -> Result<(), RpcError>;
}

// ------------------------------------------------------------ no params

/// The params of a method that takes none: JSON `null` (or no `params`
/// member) or `{}`. A member is refused as an unknown field. Serializes to
/// `null`, which a client leaves out of the request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoParams;

impl Serialize for NoParams {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_unit()
    }
}

impl<'de> Deserialize<'de> for NoParams {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<NoParams, D::Error> {
        struct Nothing;
        impl<'de> Visitor<'de> for Nothing {
            type Value = NoParams;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("no params (null or {})")
            }
            fn visit_unit<E: de::Error>(self) -> Result<NoParams, E> {
                Ok(NoParams)
            }
            fn visit_none<E: de::Error>(self) -> Result<NoParams, E> {
                Ok(NoParams)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NoParams, A::Error> {
                match map.next_key::<String>()? {
                    None => Ok(NoParams),
                    Some(key) => Err(de::Error::unknown_field(&key, &[])),
                }
            }
        }
        deserializer.deserialize_any(Nothing)
    }
}

impl Validate for NoParams {
    fn validate(&self) -> Result<(), RpcError> {
        Ok(())
    }
}

// ---------------------------------------------------------- field helpers

/// For optional fields: present means a value of `T`, so an explicit
/// `null` is a type error (serde would otherwise read it as absent).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

/// A count whose type error already states the range, so that `-1`,
/// `2.5`, `"5"` and `null` get the same message as an out-of-range count
/// ("lines must be an integer from 1 to 1000, not -1"). The range itself
/// is checked by `validate`, which also sees values built in code.
struct Count {
    min: u64,
    max: u64,
}

impl<'de> Visitor<'de> for Count {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an integer from {} to {}", self.min, self.max)
    }
    fn visit_u64<E: de::Error>(self, value: u64) -> Result<u64, E> {
        Ok(value)
    }
    fn visit_i64<E: de::Error>(self, value: i64) -> Result<u64, E> {
        u64::try_from(value).map_err(|_| E::invalid_value(Unexpected::Signed(value), &self))
    }
}

fn tail_lines<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    deserializer
        .deserialize_any(Count {
            min: 1,
            max: MAX_TAIL_LINES,
        })
        .map(Some)
}

fn list_limit<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    deserializer
        .deserialize_any(Count {
            min: 1,
            max: MAX_LIST_LIMIT,
        })
        .map(Some)
}

/// `-32602` for a count outside `1..=max`.
fn check_count(field: &str, value: Option<u64>, max: u64) -> Result<(), RpcError> {
    match value {
        Some(count) if !(1..=max).contains(&count) => Err(RpcError::invalid_params(
            field,
            format!("{field} must be an integer from 1 to {max}, not {count}"),
        )),
        _ => Ok(()),
    }
}

/// `-32602` for an empty string; `see` names where valid values are listed.
fn check_non_empty(field: &str, value: &str, see: &str) -> Result<(), RpcError> {
    if value.is_empty() {
        return Err(RpcError::invalid_params(
            field,
            format!("{field} must be a non-empty string (see {see})"),
        ));
    }
    Ok(())
}

// ------------------------------------------------------------ auth.login

/// `auth.login`: who logs in and their signature (`docs/rpc.md` §2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthLoginParams {
    /// The operator's configured name.
    pub operator: String,
    /// Standard base64 (with padding) of the 64-byte ed25519 signature of
    /// [`auth_message`](super::auth_message).
    pub signature: String,
}

impl Validate for AuthLoginParams {
    /// Nothing beyond the types: an unknown operator or a signature that
    /// is not base64 of 64 bytes is a refused login (−32001), answered
    /// like a wrong signature so that it tells an attacker nothing; the
    /// login checks those, not the params parser.
    fn validate(&self) -> Result<(), RpcError> {
        Ok(())
    }
}

// ------------------------------------------------------------- logs.tail

/// Lines `logs.tail` returns when the call does not say.
pub const DEFAULT_TAIL_LINES: u64 = 100;
/// Most lines `logs.tail` returns.
pub const MAX_TAIL_LINES: u64 = 1000;

/// `logs.tail`: `{}` or `{"lines": N}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsTailParams {
    /// How many of the daemon's last output lines, 1–[`MAX_TAIL_LINES`];
    /// `None`: [`DEFAULT_TAIL_LINES`].
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "tail_lines"
    )]
    pub lines: Option<u64>,
}

impl LogsTailParams {
    /// The number of lines asked for, the default filled in.
    pub fn lines(&self) -> u64 {
        self.lines.unwrap_or(DEFAULT_TAIL_LINES)
    }
}

impl Validate for LogsTailParams {
    fn validate(&self) -> Result<(), RpcError> {
        check_count("lines", self.lines, MAX_TAIL_LINES)
    }
}

// ----------------------------------------------------------- backup.list

/// Backups `backup.list` shows per store when the call does not say.
pub const DEFAULT_LIST_LIMIT: u64 = 20;
/// Most backups `backup.list` shows per store.
pub const MAX_LIST_LIMIT: u64 = 100;

/// `backup.list`: `{}` or `{"limit": N}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupListParams {
    /// Most backups listed per store, 1–[`MAX_LIST_LIMIT`]; `None`:
    /// [`DEFAULT_LIST_LIMIT`].
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "list_limit"
    )]
    pub limit: Option<u64>,
}

impl BackupListParams {
    /// The per-store limit asked for, the default filled in.
    pub fn limit(&self) -> u64 {
        self.limit.unwrap_or(DEFAULT_LIST_LIMIT)
    }
}

impl Validate for BackupListParams {
    fn validate(&self) -> Result<(), RpcError> {
        check_count("limit", self.limit, MAX_LIST_LIMIT)
    }
}

/// `vault.unlock`: `{}` or `{"accept_unreachable_stores": true}` (the
/// method is admin only): start even if fewer backup stores than the
/// supervisor's start quorum can be read; logged and recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultUnlockParams {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub accept_unreachable_stores: bool,
}

impl Validate for VaultUnlockParams {
    fn validate(&self) -> Result<(), RpcError> {
        Ok(())
    }
}

// --------------------------------------------------------- upgrade names

/// Longest upgrade name accepted over the RPC, in bytes.
pub const MAX_UPGRADE_NAME_BYTES: usize = 128;

/// Why an upgrade name given over the RPC is refused, or `None`. Plan
/// names become directory names, so anything that could leave `upgrades/`,
/// hide there or confuse a terminal is refused outright rather than
/// escaped. (The supervisor also refuses a name whose escaped directory
/// name is too long; that needs its recasing setting.)
pub fn upgrade_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.len() > MAX_UPGRADE_NAME_BYTES {
        Some("is longer than 128 bytes")
    } else if name == "." || name == ".." {
        Some("is a relative path component")
    } else if name.contains('/') || name.contains('\\') {
        Some("contains a path separator ('/' or '\\')")
    } else if name.chars().any(char::is_control) {
        Some("contains a control character")
    } else if name.starts_with('.') {
        Some("starts with '.' (hidden and reserved names)")
    } else if name.trim() != name {
        Some("starts or ends with whitespace")
    } else {
        None
    }
}

/// `-32602` naming `name` when [`upgrade_name_problem`] finds one.
pub fn check_upgrade_name(name: &str) -> Result<(), RpcError> {
    match upgrade_name_problem(name) {
        Some(problem) => Err(RpcError::invalid_params(
            "name",
            format!("upgrade name {name:?} {problem}"),
        )),
        None => Ok(()),
    }
}

// ------------------------------------------------------------ checksums

/// A checksum's algorithm: the two Palisade accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumAlgorithm {
    Sha256,
    Sha512,
}

impl ChecksumAlgorithm {
    /// Its name as written before the `:`.
    pub fn name(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Sha256 => "sha256",
            ChecksumAlgorithm::Sha512 => "sha512",
        }
    }

    /// The digest's length in bytes.
    pub fn digest_bytes(self) -> usize {
        match self {
            ChecksumAlgorithm::Sha256 => 32,
            ChecksumAlgorithm::Sha512 => 64,
        }
    }
}

/// Why a checksum (`sha256:HEX` or `sha512:HEX`) is not usable: the one
/// rule, for `upgrade.add`'s `checksum` and for the supervisor's download
/// checksums (a URL's `?checksum=`, a plan's `binaries`), which words each
/// case with where the checksum came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChecksumProblem {
    /// No `algorithm:` prefix.
    NoAlgorithm { value: String },
    /// md5 or sha1: refused as cryptographically broken.
    Weak { algorithm: String },
    /// Anything else that is not sha256 or sha512 (`file:` checksum files
    /// among them).
    Unknown { algorithm: String },
    /// The digest is not hex (the reason as the `hex` crate words it).
    NotHex {
        algorithm: ChecksumAlgorithm,
        reason: String,
    },
    /// The digest has the wrong length.
    WrongLength {
        algorithm: ChecksumAlgorithm,
        hex_digits: usize,
    },
}

impl ChecksumProblem {
    /// The malformed cases' reason, without where the checksum came from
    /// (the weak and unknown algorithms are worded by the caller).
    pub fn malformed_reason(&self) -> Option<String> {
        match self {
            ChecksumProblem::NoAlgorithm { value } => Some(format!(
                "{value:?} has no algorithm; write sha256:HEX or sha512:HEX"
            )),
            ChecksumProblem::NotHex { algorithm, reason } => {
                Some(format!("{} digest is not hex: {reason}", algorithm.name()))
            }
            ChecksumProblem::WrongLength {
                algorithm,
                hex_digits,
            } => Some(format!(
                "{} digest has {hex_digits} hex digits, expected {}",
                algorithm.name(),
                algorithm.digest_bytes() * 2
            )),
            ChecksumProblem::Weak { .. } | ChecksumProblem::Unknown { .. } => None,
        }
    }

    /// The whole message, for a checksum found in `place` (e.g. "the
    /// checksum field").
    pub fn message(&self, place: &str) -> String {
        match self {
            ChecksumProblem::Weak { algorithm } => format!(
                "checksum algorithm {algorithm} in {place} is refused as cryptographically \
                 broken; use sha256 or sha512"
            ),
            ChecksumProblem::Unknown { algorithm } => {
                format!("unknown checksum algorithm {algorithm:?} in {place}; use sha256 or sha512")
            }
            malformed => format!(
                "malformed checksum in {place}: {}",
                malformed.malformed_reason().unwrap_or_default()
            ),
        }
    }
}

/// Parse `sha256:HEX` or `sha512:HEX` (the algorithm in any case, blanks
/// around the parts ignored) into its algorithm and digest bytes.
pub fn parse_checksum(text: &str) -> Result<(ChecksumAlgorithm, Vec<u8>), ChecksumProblem> {
    let value = text.trim();
    let Some((algorithm, digest)) = value.split_once(':') else {
        return Err(ChecksumProblem::NoAlgorithm {
            value: value.to_owned(),
        });
    };
    let name = algorithm.trim().to_ascii_lowercase();
    let algorithm = match name.as_str() {
        "sha256" => ChecksumAlgorithm::Sha256,
        "sha512" => ChecksumAlgorithm::Sha512,
        "md5" | "sha1" => return Err(ChecksumProblem::Weak { algorithm: name }),
        "file" => {
            return Err(ChecksumProblem::Unknown {
                algorithm: "file (checksum files are not supported)".into(),
            });
        }
        _ => return Err(ChecksumProblem::Unknown { algorithm: name }),
    };
    let digest = digest.trim();
    let bytes =
        decode_hex(digest).map_err(|reason| ChecksumProblem::NotHex { algorithm, reason })?;
    if bytes.len() != algorithm.digest_bytes() {
        return Err(ChecksumProblem::WrongLength {
            algorithm,
            hex_digits: digest.len(),
        });
    }
    Ok((algorithm, bytes))
}

/// Why `text` is not a usable download checksum, or `None`: the message
/// for `upgrade.add`'s `checksum` field.
pub fn checksum_problem(text: &str) -> Option<String> {
    parse_checksum(text)
        .err()
        .map(|problem| problem.message("the checksum field"))
}

/// Decode hex, with the reasons worded as the `hex` crate words them
/// (what operators saw before this rule moved here).
fn decode_hex(text: &str) -> Result<Vec<u8>, String> {
    if !text.len().is_multiple_of(2) {
        return Err("Odd number of digits".into());
    }
    if let Some((index, byte)) = text
        .bytes()
        .enumerate()
        .find(|(_, byte)| !byte.is_ascii_hexdigit())
    {
        return Err(format!(
            "Invalid character {:?} at position {index}",
            byte as char
        ));
    }
    Ok(text
        .as_bytes()
        .chunks(2)
        .map(|pair| {
            let digit = |byte: u8| (byte as char).to_digit(16).unwrap_or(0) as u8;
            digit(pair[0]) << 4 | digit(pair[1])
        })
        .collect())
}

// ----------------------------------------------------------- upgrade.add

/// The two shapes `upgrade.add` takes, for messages.
pub const UPGRADE_ADD_SHAPE: &str = r#"{"name","url","checksum"} or {"name","path"[,"checksum"]}"#;

/// `upgrade.add`: exactly `{"name","url","checksum"}` (the supervisor
/// downloads) or `{"name","path"}` with an optional `checksum` (a file on
/// the validator host, copied).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpgradeAddParams {
    /// The upgrade's on-chain name ([`upgrade_name_problem`]).
    pub name: String,
    /// An http(s) URL of the binary, a zip or a tar.gz.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub url: Option<String>,
    /// `sha256:HEX` or `sha512:HEX` ([`checksum_problem`]): required with
    /// `url`, optional with `path`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub checksum: Option<String>,
    /// Absolute path of an executable file on the validator host.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub path: Option<String>,
}

/// Where a valid `upgrade.add` takes its binary from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeSource<'a> {
    /// Downloaded by the supervisor, checked against `checksum`.
    Url { url: &'a str, checksum: &'a str },
    /// Copied from the validator host, checked when a checksum is given.
    Path {
        path: &'a str,
        checksum: Option<&'a str>,
    },
}

impl UpgradeAddParams {
    /// The binary's source, or `None` when the fields do not form one of
    /// the two shapes ([`Validate::validate`] says why).
    pub fn source(&self) -> Option<UpgradeSource<'_>> {
        match (&self.url, &self.path, &self.checksum) {
            (Some(url), None, Some(checksum)) => Some(UpgradeSource::Url { url, checksum }),
            (None, Some(path), checksum) => Some(UpgradeSource::Path {
                path,
                checksum: checksum.as_deref(),
            }),
            _ => None,
        }
    }
}

impl Validate for UpgradeAddParams {
    /// In the supervisor's order: the name, the checksum's syntax, then
    /// the shape, then the source's own rules. The URL itself is parsed by
    /// the supervisor (it redacts tokens in its messages).
    fn validate(&self) -> Result<(), RpcError> {
        check_upgrade_name(&self.name)?;
        if let Some(problem) = self.checksum.as_deref().and_then(checksum_problem) {
            return Err(RpcError::invalid_params("checksum", problem));
        }
        match (&self.url, &self.path) {
            (Some(_), Some(_)) => Err(RpcError::invalid_params(
                "path",
                "give either `url` (with `checksum`) or `path`, not both",
            )),
            (None, None) => Err(RpcError::invalid_params(
                "url",
                format!("a binary source is required: {UPGRADE_ADD_SHAPE}"),
            )),
            (Some(_), None) if self.checksum.is_none() => Err(RpcError::invalid_params(
                "checksum",
                "`checksum` (sha256:HEX or sha512:HEX) is required with `url`",
            )),
            (Some(_), None) => Ok(()),
            (None, Some(path)) => {
                if path.is_empty() || path.contains('\0') {
                    return Err(RpcError::invalid_params(
                        "path",
                        "`path` is empty or contains NUL",
                    ));
                }
                if !std::path::Path::new(path).is_absolute() {
                    return Err(RpcError::invalid_params(
                        "path",
                        format!(
                            "`path` must be absolute (a file on the validator host), not {path}"
                        ),
                    ));
                }
                Ok(())
            }
        }
    }
}

// -------------------------------------------------------- upgrade.cancel

/// `upgrade.cancel`: exactly `{"name"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpgradeCancelParams {
    /// The upgrade's on-chain name, as given to `upgrade.add`.
    pub name: String,
}

impl Validate for UpgradeCancelParams {
    fn validate(&self) -> Result<(), RpcError> {
        check_upgrade_name(&self.name)
    }
}

// ------------------------------------------------------ tunnel.reconnect

/// `tunnel.reconnect`: exactly `{"bastion"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelReconnectParams {
    /// The bastion's configured name, as `tunnel.list` shows it. Whether
    /// one of that name exists is the supervisor's check (−32602 with
    /// `data.known`).
    pub bastion: String,
}

impl Validate for TunnelReconnectParams {
    fn validate(&self) -> Result<(), RpcError> {
        check_non_empty("bastion", &self.bastion, "tunnel.list")
    }
}

// ------------------------------------------------------------ eip.rotate

/// `eip.rotate`: `{"bastion"}` and optionally `"keep_old": true`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EipRotateParams {
    /// The bastion's configured name, as `eip.list` shows it. Whether one
    /// of that name with an `[bastion.eip]` exists is the supervisor's check
    /// (−32602 with `data.known`).
    pub bastion: String,
    /// Keep the old address allocated (only disassociated) instead of
    /// releasing it. Default `false`.
    #[serde(default)]
    pub keep_old: bool,
}

impl Validate for EipRotateParams {
    fn validate(&self) -> Result<(), RpcError> {
        check_non_empty("bastion", &self.bastion, "eip.list")
    }
}

// -------------------------------------------------------- backup.restore

/// `backup.restore`: exactly `{"store","file"}`, as `backup.list` names
/// them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupRestoreParams {
    /// The store (`local`, `dir<N>:<path>`, `bastion:<name>`); whether it
    /// exists is the supervisor's check (−32602 with `data.known`).
    pub store: String,
    /// A backup file name ([`BackupFileName`]).
    pub file: String,
}

impl BackupRestoreParams {
    /// What the file name says (sequence, height, …), once valid.
    pub fn backup(&self) -> Option<BackupFileName> {
        BackupFileName::parse(&self.file)
    }
}

impl Validate for BackupRestoreParams {
    fn validate(&self) -> Result<(), RpcError> {
        check_non_empty("store", &self.store, "backup.list")?;
        check_non_empty("file", &self.file, "backup.list")?;
        if let Some(reason) = file_name_problem(&self.file) {
            return Err(RpcError::invalid_params(
                "file",
                format!("invalid backup file name {:?}: {reason}", self.file),
            ));
        }
        if self.backup().is_none() {
            return Err(RpcError::invalid_params(
                "file",
                format!(
                    "{:?} is not a backup file name \
                     (backup-<chain>-<ADDRESS>-<sequence>-h<height>.age, see backup.list)",
                    self.file
                ),
            ));
        }
        Ok(())
    }
}

// --------------------------------------------------------- host.shutdown

/// Length of a `host.shutdown` confirmation token: 16 random bytes as
/// lower-case hex.
pub const TOKEN_HEX_CHARS: usize = 32;

/// Whether `text` has the form of a confirmation token.
pub fn is_confirmation_token(text: &str) -> bool {
    text.len() == TOKEN_HEX_CHARS
        && text
            .bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
}

/// `host.shutdown`: `{}` asks for a confirmation token, `{"confirm":
/// TOKEN}` spends it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostShutdownParams {
    /// The token an earlier `host.shutdown {}` returned
    /// ([`TOKEN_HEX_CHARS`] lower-case hex digits).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub confirm: Option<String>,
}

/// `failover.handoff`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverHandoffParams {
    /// The host to hand over to (one of `[failover] peers`).
    pub to: String,
}

impl Validate for FailoverHandoffParams {
    fn validate(&self) -> Result<(), RpcError> {
        let valid = (1..=64).contains(&self.to.len())
            && self
                .to
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if valid {
            Ok(())
        } else {
            Err(RpcError::invalid_params(
                "to",
                "to must be a host id: 1 to 64 letters, digits, '.', '_' or '-'",
            ))
        }
    }
}

impl HostShutdownParams {
    /// The first call: ask for a token.
    pub fn request() -> HostShutdownParams {
        HostShutdownParams { confirm: None }
    }

    /// The second call: shut down, spending `token`.
    pub fn confirm(token: impl Into<String>) -> HostShutdownParams {
        HostShutdownParams {
            confirm: Some(token.into()),
        }
    }
}

impl Validate for HostShutdownParams {
    fn validate(&self) -> Result<(), RpcError> {
        match &self.confirm {
            Some(token) if !is_confirmation_token(token) => Err(RpcError::invalid_params(
                "confirm",
                format!(
                    "confirm must be the {TOKEN_HEX_CHARS}-hex-digit token that host.shutdown {{}} \
                     returned"
                ),
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::super::code;
    use super::super::methods::{
        AuthChallenge, AuthLogin, BackupList, BackupRestore, HostShutdown, LogsTail, Method,
        Status, TunnelReconnect, UpgradeAdd, UpgradeCancel, parse_params,
    };
    use super::*;

    /// What a case expects: the parsed params, or −32602 naming a field
    /// with a message containing the fragment.
    type Expected<P> = Result<P, (&'static str, &'static str)>;

    /// Run `cases` through [`parse_params`] for `M`.
    fn table<M: Method>(cases: Vec<(Value, Expected<M::Params>)>) {
        for (params, expected) in cases {
            let got = parse_params::<M>(params.clone());
            match (got, expected) {
                (Ok(got), Ok(expected)) => assert_eq!(got, expected, "{} {params}", M::NAME),
                (Err(error), Err((field, fragment))) => {
                    assert_eq!(error.code, code::INVALID_PARAMS, "{} {params}", M::NAME);
                    assert_eq!(
                        error.data,
                        Some(json!({ "field": field })),
                        "{} {params}: {error:?}",
                        M::NAME
                    );
                    assert!(
                        error.message.contains(fragment),
                        "{} {params}: {:?} lacks {fragment:?}",
                        M::NAME,
                        error.message
                    );
                }
                (got, expected) => {
                    panic!("{} {params}: got {got:?}, expected {expected:?}", M::NAME)
                }
            }
        }
    }

    #[test]
    fn no_params_takes_null_or_an_empty_object_only() {
        table::<Status>(vec![
            (Value::Null, Ok(NoParams)),
            (json!({}), Ok(NoParams)),
            (
                json!({"verbose": true}),
                Err(("verbose", "status params: unknown field `verbose`")),
            ),
            (
                json!([]),
                Err(("params", "status takes no params (null or {}), not []")),
            ),
            (json!("x"), Err(("params", "takes no params"))),
            (json!(0), Err(("params", "takes no params"))),
        ]);
        table::<AuthChallenge>(vec![(json!({"a": 1}), Err(("a", "unknown field `a`")))]);
        // Directly through serde too (not only through parse_params).
        assert_eq!(
            serde_json::from_value::<NoParams>(Value::Null).unwrap(),
            NoParams
        );
        assert_eq!(serde_json::to_value(NoParams).unwrap(), Value::Null);
    }

    #[test]
    fn logs_tail_params() {
        let lines = |lines| LogsTailParams { lines: Some(lines) };
        table::<LogsTail>(vec![
            (Value::Null, Ok(LogsTailParams::default())),
            (json!({}), Ok(LogsTailParams::default())),
            (json!({"lines": 1}), Ok(lines(1))),
            (json!({"lines": 1000}), Ok(lines(1000))),
            (
                json!({"lines": 5000}),
                Err(("lines", "lines must be an integer from 1 to 1000, not 5000")),
            ),
            (
                json!({"lines": 0}),
                Err(("lines", "lines must be an integer from 1 to 1000, not 0")),
            ),
            (
                json!({"lines": -1}),
                Err(("lines", "lines must be an integer from 1 to 1000, not -1")),
            ),
            (
                json!({"lines": 2.5}),
                Err(("lines", "lines must be an integer from 1 to 1000, not 2.5")),
            ),
            (
                json!({"lines": "5"}),
                Err((
                    "lines",
                    "lines must be an integer from 1 to 1000, not \"5\"",
                )),
            ),
            (
                json!({"lines": null}),
                Err(("lines", "lines must be an integer from 1 to 1000, not null")),
            ),
            (json!({"line": 5}), Err(("line", "unknown field `line`"))),
            (
                json!([5]),
                Err(("params", "logs.tail params must be an object, not [5]")),
            ),
        ]);
        assert_eq!(LogsTailParams::default().lines(), DEFAULT_TAIL_LINES);
        assert_eq!(lines(7).lines(), 7);
    }

    #[test]
    fn backup_list_params() {
        let limit = |limit| BackupListParams { limit: Some(limit) };
        table::<BackupList>(vec![
            (Value::Null, Ok(BackupListParams::default())),
            (json!({}), Ok(BackupListParams::default())),
            (json!({"limit": 1}), Ok(limit(1))),
            (json!({"limit": 100}), Ok(limit(100))),
            (
                json!({"limit": 0}),
                Err(("limit", "limit must be an integer from 1 to 100, not 0")),
            ),
            (
                json!({"limit": 101}),
                Err(("limit", "limit must be an integer from 1 to 100, not 101")),
            ),
            (
                json!({"limit": -1}),
                Err(("limit", "from 1 to 100, not -1")),
            ),
            (
                json!({"limit": 2.5}),
                Err(("limit", "from 1 to 100, not 2.5")),
            ),
            (
                json!({"limit": "5"}),
                Err(("limit", "from 1 to 100, not \"5\"")),
            ),
            (
                json!({"store": "local"}),
                Err(("store", "unknown field `store`")),
            ),
            (json!([1]), Err(("params", "must be an object"))),
            (json!("all"), Err(("params", "must be an object"))),
        ]);
        assert_eq!(BackupListParams::default().limit(), DEFAULT_LIST_LIMIT);
    }

    const SHA256: &str = "aec070645fe53ee3b3763059376134f058cc337247c978add178b6ccdfb0019f";

    #[test]
    fn upgrade_add_params() {
        let url = "http://127.0.0.1:9/simd";
        let checksum = format!("sha256:{SHA256}");
        let sha512 = format!("SHA512:{}", "ab".repeat(64));
        let add =
            |url: Option<&str>, checksum: Option<&str>, path: Option<&str>| UpgradeAddParams {
                name: "v2".into(),
                url: url.map(Into::into),
                checksum: checksum.map(Into::into),
                path: path.map(Into::into),
            };
        table::<UpgradeAdd>(vec![
            (
                json!({"name": "v2", "url": url, "checksum": checksum}),
                Ok(add(Some(url), Some(&checksum), None)),
            ),
            (
                json!({"name": "v2", "url": url, "checksum": sha512}),
                Ok(add(Some(url), Some(&sha512), None)),
            ),
            (
                json!({"name": "v2", "url": url, "checksum": format!(" sha256 : {SHA256} ")}),
                Ok(add(Some(url), Some(&format!(" sha256 : {SHA256} ")), None)),
            ),
            (
                json!({"name": "v2", "path": "/opt/gaiad"}),
                Ok(add(None, None, Some("/opt/gaiad"))),
            ),
            (
                json!({"name": "v2", "path": "/opt/gaiad", "checksum": checksum}),
                Ok(add(None, Some(&checksum), Some("/opt/gaiad"))),
            ),
            (
                Value::Null,
                Err(("name", "upgrade.add params: missing field `name`")),
            ),
            (json!({}), Err(("name", "missing field `name`"))),
            (
                json!({"url": url, "checksum": checksum}),
                Err(("name", "missing field `name`")),
            ),
            (
                json!([1]),
                Err(("params", "upgrade.add params must be an object, not [1]")),
            ),
            (json!("v2"), Err(("params", "must be an object"))),
            (
                json!({"name": 2, "path": "/x"}),
                Err(("name", "name must be a string, not 2")),
            ),
            (
                json!({"name": null, "path": "/x"}),
                Err(("name", "name must be a string, not null")),
            ),
            (
                json!({"name": "../x", "path": "/x"}),
                Err(("name", "upgrade name \"../x\" contains a path separator")),
            ),
            (
                json!({"name": "", "path": "/x"}),
                Err(("name", "upgrade name \"\" is empty")),
            ),
            (
                json!({"name": "v2"}),
                Err((
                    "url",
                    "a binary source is required: {\"name\",\"url\",\"checksum\"}",
                )),
            ),
            (
                json!({"name": "v2", "path": "/x", "force": true}),
                Err((
                    "force",
                    "unknown field `force`, expected one of `name`, `url`",
                )),
            ),
            (
                json!({"name": "v2", "url": url, "checksum": checksum, "Path": "/x"}),
                Err(("Path", "unknown field `Path`")),
            ),
            (
                json!({"name": "v2", "url": url, "checksum": checksum, "path": "/x"}),
                Err((
                    "path",
                    "give either `url` (with `checksum`) or `path`, not both",
                )),
            ),
            (
                json!({"name": "v2", "url": url}),
                Err((
                    "checksum",
                    "`checksum` (sha256:HEX or sha512:HEX) is required with `url`",
                )),
            ),
            (
                json!({"name": "v2", "url": url, "checksum": null}),
                Err(("checksum", "checksum must be a string, not null")),
            ),
            (
                json!({"name": "v2", "url": url, "checksum": SHA256}),
                Err((
                    "checksum",
                    "has no algorithm; write sha256:HEX or sha512:HEX",
                )),
            ),
            (
                json!({"name": "v2", "url": url,
                       "checksum": "md5:d41d8cd98f00b204e9800998ecf8427e"}),
                Err((
                    "checksum",
                    "checksum algorithm md5 in the checksum field is refused as \
                     cryptographically broken; use sha256 or sha512",
                )),
            ),
            (
                json!({"name": "v2", "path": "/x",
                       "checksum": "sha1:da39a3ee5e6b4b0d3255bfef95601890afd80709"}),
                Err(("checksum", "cryptographically broken")),
            ),
            (
                json!({"name": "v2", "url": url, "checksum": "blake3:00"}),
                Err(("checksum", "unknown checksum algorithm \"blake3\"")),
            ),
            (
                json!({"name": "v2", "url": url, "checksum": "file:/x.sha256"}),
                Err(("checksum", "checksum files are not supported")),
            ),
            (
                json!({"name": "v2", "url": url, "checksum": "sha256:abcd"}),
                Err(("checksum", "sha256 digest has 4 hex digits, expected 64")),
            ),
            (
                json!({"name": "v2", "url": url, "checksum": "sha256:zz"}),
                Err((
                    "checksum",
                    "sha256 digest is not hex: Invalid character 'z' at position 0",
                )),
            ),
            (
                json!({"name": "v2", "url": url, "checksum": "sha512:abc"}),
                Err(("checksum", "sha512 digest is not hex: Odd number of digits")),
            ),
            (
                json!({"name": "v2", "url": url, "checksum": 7}),
                Err(("checksum", "checksum must be a string, not 7")),
            ),
            (
                json!({"name": "v2", "url": ["http://x"], "checksum": checksum}),
                Err(("url", "url must be a string, not [\"http://x\"]")),
            ),
            (
                json!({"name": "v2", "path": "gaiad"}),
                Err((
                    "path",
                    "`path` must be absolute (a file on the validator host), not gaiad",
                )),
            ),
            (
                json!({"name": "v2", "path": "./bin/gaiad"}),
                Err(("path", "must be absolute")),
            ),
            (json!({"name": "v2", "path": ""}), Err(("path", "empty"))),
            (
                json!({"name": "v2", "path": "/x\u{0}y"}),
                Err(("path", "NUL")),
            ),
            (
                json!({"name": "v2", "path": 1}),
                Err(("path", "path must be a string, not 1")),
            ),
        ]);
    }

    #[test]
    fn upgrade_sources() {
        let params =
            |url: Option<&str>, checksum: Option<&str>, path: Option<&str>| UpgradeAddParams {
                name: "v2".into(),
                url: url.map(Into::into),
                checksum: checksum.map(Into::into),
                path: path.map(Into::into),
            };
        assert_eq!(
            params(Some("https://x"), Some("sha256:00"), None).source(),
            Some(UpgradeSource::Url {
                url: "https://x",
                checksum: "sha256:00"
            })
        );
        assert_eq!(
            params(None, None, Some("/x")).source(),
            Some(UpgradeSource::Path {
                path: "/x",
                checksum: None
            })
        );
        assert_eq!(params(Some("https://x"), None, None).source(), None);
        assert_eq!(params(Some("https://x"), None, Some("/x")).source(), None);
        // Optional fields stay out of the JSON when unset.
        assert_eq!(
            serde_json::to_value(params(None, None, Some("/x"))).unwrap(),
            json!({"name": "v2", "path": "/x"})
        );
    }

    #[test]
    fn upgrade_names() {
        let long = "a".repeat(MAX_UPGRADE_NAME_BYTES + 1);
        let max = "a".repeat(MAX_UPGRADE_NAME_BYTES);
        let cases: &[(&str, Option<&str>)] = &[
            ("v2", None),
            ("V2-Gaia", None),
            ("v2.0.0-rc1", None),
            ("v2 beta", None),
            ("ünï", None),
            (&max, None),
            ("", Some("is empty")),
            (".", Some("relative path component")),
            ("..", Some("relative path component")),
            ("a/b", Some("path separator")),
            ("../etc", Some("path separator")),
            ("/abs", Some("path separator")),
            ("a\\b", Some("path separator")),
            ("v2\n", Some("control character")),
            ("v2\u{1b}[31m", Some("control character")),
            ("nul\0", Some("control character")),
            (".staging-v2", Some("starts with '.'")),
            (".cancelled-v2-00", Some("starts with '.'")),
            (" v2", Some("whitespace")),
            ("v2 ", Some("whitespace")),
            (&long, Some("longer than 128 bytes")),
        ];
        for (name, expected) in cases {
            let problem = upgrade_name_problem(name);
            match expected {
                None => assert_eq!(problem, None, "{name:?}"),
                Some(fragment) => {
                    assert!(
                        problem.is_some_and(|p| p.contains(fragment)),
                        "{name:?}: {problem:?}"
                    )
                }
            }
        }
        table::<UpgradeCancel>(vec![
            (
                json!({"name": "v2"}),
                Ok(UpgradeCancelParams { name: "v2".into() }),
            ),
            (
                json!({"name": "V2"}),
                Ok(UpgradeCancelParams { name: "V2".into() }),
            ),
            (Value::Null, Err(("name", "missing field `name`"))),
            (json!({}), Err(("name", "missing field `name`"))),
            (
                json!({"name": "v2", "force": true}),
                Err(("force", "unknown field")),
            ),
            (
                json!({"name": 3}),
                Err(("name", "name must be a string, not 3")),
            ),
            (json!({"name": "a/b"}), Err(("name", "path separator"))),
            (
                json!({"name": ".."}),
                Err(("name", "relative path component")),
            ),
            (json!(["v2"]), Err(("params", "must be an object"))),
        ]);
    }

    #[test]
    fn tunnel_reconnect_params() {
        table::<TunnelReconnect>(vec![
            (
                json!({"bastion": "b1"}),
                Ok(TunnelReconnectParams {
                    bastion: "b1".into(),
                }),
            ),
            (Value::Null, Err(("bastion", "missing field `bastion`"))),
            (
                json!({"bastion": ""}),
                Err((
                    "bastion",
                    "bastion must be a non-empty string (see tunnel.list)",
                )),
            ),
            (
                json!({"bastion": 1}),
                Err(("bastion", "bastion must be a string, not 1")),
            ),
            (
                json!({"bastion": "b1", "all": true}),
                Err(("all", "unknown field `all`")),
            ),
            (json!("b1"), Err(("params", "must be an object"))),
        ]);
    }

    #[test]
    fn backup_restore_params() {
        let file =
            "backup-sim-1-0000000000000000000000000000000000000000-00000000000000000001-h1.age";
        let restore = |store: &str| BackupRestoreParams {
            store: store.into(),
            file: file.into(),
        };
        table::<BackupRestore>(vec![
            (
                json!({"store": "local", "file": file}),
                Ok(restore("local")),
            ),
            (
                json!({"store": "bastion:b1", "file": file}),
                Ok(restore("bastion:b1")),
            ),
            (Value::Null, Err(("store", "missing field `store`"))),
            (
                json!({"file": file}),
                Err(("store", "missing field `store`")),
            ),
            (
                json!({"store": "local"}),
                Err(("file", "missing field `file`")),
            ),
            (
                json!({"store": "", "file": file}),
                Err((
                    "store",
                    "store must be a non-empty string (see backup.list)",
                )),
            ),
            (
                json!({"store": 1, "file": file}),
                Err(("store", "store must be a string, not 1")),
            ),
            (
                json!({"store": "local", "file": 7}),
                Err(("file", "file must be a string, not 7")),
            ),
            (
                json!({"store": "local", "file": ""}),
                Err(("file", "file must be a non-empty string")),
            ),
            (
                json!({"store": "local", "file": "../../etc/passwd"}),
                Err((
                    "file",
                    "invalid backup file name \"../../etc/passwd\": contains a path separator",
                )),
            ),
            (
                json!({"store": "local", "file": ".hidden.age"}),
                Err(("file", "starts with '.'")),
            ),
            (
                json!({"store": "local", "file": "notes.txt"}),
                Err((
                    "file",
                    "\"notes.txt\" is not a backup file name \
                     (backup-<chain>-<ADDRESS>-<sequence>-h<height>.age, see backup.list)",
                )),
            ),
            (
                json!({"store": "local", "file": file, "force": true}),
                Err(("force", "unknown field `force`")),
            ),
            (json!(["local", file]), Err(("params", "must be an object"))),
        ]);
        let parsed = restore("local").backup().unwrap();
        assert_eq!((parsed.sequence, parsed.height), (1, 1));
    }

    #[test]
    fn host_shutdown_params() {
        let token = "0123456789abcdef0123456789abcdef";
        table::<HostShutdown>(vec![
            (Value::Null, Ok(HostShutdownParams::request())),
            (json!({}), Ok(HostShutdownParams::request())),
            (
                json!({"confirm": token}),
                Ok(HostShutdownParams::confirm(token)),
            ),
            (
                json!({"confirm": "yes"}),
                Err((
                    "confirm",
                    "confirm must be the 32-hex-digit token that host.shutdown {} returned",
                )),
            ),
            (
                json!({"confirm": token.to_uppercase()}),
                Err(("confirm", "32-hex-digit token")),
            ),
            (
                json!({"confirm": &token[1..]}),
                Err(("confirm", "32-hex-digit token")),
            ),
            (
                json!({"confirm": format!("{token}0")}),
                Err(("confirm", "32-hex-digit token")),
            ),
            (
                json!({"confirm": null}),
                Err(("confirm", "confirm must be a string, not null")),
            ),
            (
                json!({"confirm": 5}),
                Err(("confirm", "confirm must be a string, not 5")),
            ),
            (
                json!({"token": token}),
                Err(("token", "unknown field `token`")),
            ),
            (json!("go"), Err(("params", "must be an object"))),
        ]);
        assert_eq!(
            serde_json::to_value(HostShutdownParams::request()).unwrap(),
            json!({})
        );
    }

    #[test]
    fn auth_login_params() {
        let login = AuthLoginParams {
            operator: "alice".into(),
            signature: "AAAA".into(),
        };
        table::<AuthLogin>(vec![
            (json!({"operator": "alice", "signature": "AAAA"}), Ok(login)),
            (
                // Not base64 of 64 bytes: the login refuses it (−32001),
                // not the params parser.
                json!({"operator": "alice", "signature": "<base64>"}),
                Ok(AuthLoginParams {
                    operator: "alice".into(),
                    signature: "<base64>".into(),
                }),
            ),
            (Value::Null, Err(("operator", "missing field `operator`"))),
            (
                json!({"operator": "alice"}),
                Err(("signature", "missing field")),
            ),
            (
                json!({"operator": "alice", "signature": 1}),
                Err(("signature", "signature must be a string, not 1")),
            ),
            (
                json!({"operator": "alice", "signature": "AAAA", "role": "admin"}),
                Err(("role", "unknown field `role`")),
            ),
        ]);
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let huge = "x".repeat(10_000);
        let error = parse_params::<UpgradeAdd>(json!({"name": "v2", "path": [huge]})).unwrap_err();
        assert_eq!(error.field(), Some("path"));
        assert!(error.message.len() < 200, "{}", error.message);
        assert!(error.message.ends_with('…'), "{}", error.message);
    }
}
