//! The typed contract of the control RPC: one type per method of
//! [`METHODS`](super::METHODS), naming its role, its params and its
//! result, and the one params parser every side uses.
//!
//! The supervisor parses a call's params with [`parse_params`] (serde,
//! then [`Validate`]), so every malformed or out-of-range value gets the
//! same −32602 with `data.field`; `palisade-ctl` builds the same
//! [`Params`](Method::Params) types and validates them before it connects;
//! both read and write results as the [`Result`](Method::Result) types.
//! Code that only has a method's name (a raw `call`, the docs check) uses
//! [`method_info`].

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::params::{
    AuthLoginParams, BackupListParams, BackupRestoreParams, EipRotateParams, FailoverHandoffParams,
    HostShutdownParams, LogsTailParams, NoParams, TunnelReconnectParams, UpgradeAddParams,
    UpgradeCancelParams, Validate, VaultUnlockParams,
};
use super::results::{
    AuthChallengeResult, AuthLoginResult, BackupListResult, BackupNowResult, BackupRestoreResult,
    EipListResult, EipRotateResult, EipStatusResult, FailoverHandoffResult, FailoverPauseResult,
    FailoverStatus, HealthResult, HostShutdownResult, LogsTailResult, NodeResult, StatusResult,
    TunnelListResult, TunnelReconnectResult, UpgradeAddResult, UpgradeCancelResult,
    UpgradeListResult, VaultLockResult, VaultUnlockResult,
};
use super::{Role, RpcError};

/// One method of the control RPC.
pub trait Method {
    /// Its name on the wire (`"logs.tail"`).
    const NAME: &'static str;
    /// The role it needs; `None` for the authentication calls, open to
    /// anyone.
    const ROLE: Option<Role>;
    /// Whether its request is followed by a secret line (`docs/rpc.md` §4).
    const SECRET: bool = false;
    /// Its params; [`NoParams`] for a method that takes none.
    type Params: Serialize + DeserializeOwned + Validate + std::fmt::Debug + Clone + PartialEq;
    /// What it answers.
    type Result: Serialize + DeserializeOwned + std::fmt::Debug + Clone + PartialEq;
}

/// What code that has only a method's name can learn about it.
#[derive(Debug, Clone, Copy)]
pub struct MethodInfo {
    /// [`Method::NAME`].
    pub name: &'static str,
    /// [`Method::ROLE`].
    pub role: Option<Role>,
    /// [`Method::SECRET`].
    pub secret: bool,
    /// [`parse_params`] for this method, the parsed value dropped.
    pub check_params: fn(Value) -> Result<(), RpcError>,
    /// The members its params may have, in declaration order (none for
    /// [`NoParams`]).
    pub param_fields: fn() -> &'static [&'static str],
}

impl MethodInfo {
    /// The description of `M`.
    pub const fn of<M: Method>() -> MethodInfo {
        MethodInfo {
            name: M::NAME,
            role: M::ROLE,
            secret: M::SECRET,
            check_params: check_params::<M>,
            param_fields: struct_fields::<M::Params>,
        }
    }
}

fn check_params<M: Method>(params: Value) -> Result<(), RpcError> {
    parse_params::<M>(params).map(drop)
}

/// Declares the method types and [`CATALOGUE`] in one list, so that no
/// method type can be left out of the catalogue.
macro_rules! methods {
    ($(
        $(#[$doc:meta])*
        $ty:ident = $name:literal, $role:expr, $params:ty => $result:ty $(, secret = $secret:literal)?;
    )*) => {
        $(
            $(#[$doc])*
            #[derive(Debug, Clone, Copy, PartialEq, Eq)]
            pub struct $ty;

            impl Method for $ty {
                const NAME: &'static str = $name;
                const ROLE: Option<Role> = $role;
                $(const SECRET: bool = $secret;)?
                type Params = $params;
                type Result = $result;
            }
        )*

        /// Every method type, in the order of [`METHODS`](super::METHODS).
        pub const CATALOGUE: &[MethodInfo] = &[$(MethodInfo::of::<$ty>()),*];
    };
}

methods! {
    /// `auth.challenge`: a challenge to sign (one per connection).
    AuthChallenge = "auth.challenge", None, NoParams => AuthChallengeResult;
    /// `auth.login`: log in as an operator with a signed challenge.
    AuthLogin = "auth.login", None, AuthLoginParams => AuthLoginResult;
    /// `status`: supervisor, node, vault, watermark, last backup, tunnels,
    /// upgrades.
    Status = "status", Some(Role::Viewer), NoParams => StatusResult;
    /// `health`: whether everything is fine, and what is not.
    Health = "health", Some(Role::Viewer), NoParams => HealthResult;
    /// `logs.tail`: the daemon's last output lines.
    LogsTail = "logs.tail", Some(Role::Viewer), LogsTailParams => LogsTailResult;
    /// `tunnel.list`: the tunnels to the bastions.
    TunnelList = "tunnel.list", Some(Role::Viewer), NoParams => TunnelListResult;
    /// `upgrade.list`: staged upgrades, the plan on disk, the record.
    UpgradeList = "upgrade.list", Some(Role::Viewer), NoParams => UpgradeListResult;
    /// `backup.list`: every store's backups.
    BackupList = "backup.list", Some(Role::Viewer), BackupListParams => BackupListResult;
    /// `node.start`: start the node after `node.stop`.
    NodeStart = "node.start", Some(Role::Operator), NoParams => NodeResult;
    /// `node.stop`: stop the node and keep it stopped.
    NodeStop = "node.stop", Some(Role::Operator), NoParams => NodeResult;
    /// `node.restart`: stop the node and start it again.
    NodeRestart = "node.restart", Some(Role::Operator), NoParams => NodeResult;
    /// `backup.now`: take a backup now.
    BackupNow = "backup.now", Some(Role::Operator), NoParams => BackupNowResult;
    /// `upgrade.add`: stage an upgrade's binary.
    UpgradeAdd = "upgrade.add", Some(Role::Admin), UpgradeAddParams => UpgradeAddResult;
    /// `upgrade.cancel`: remove a staged upgrade.
    UpgradeCancel = "upgrade.cancel", Some(Role::Admin), UpgradeCancelParams => UpgradeCancelResult;
    /// `tunnel.reconnect`: reconnect one tunnel now.
    TunnelReconnect = "tunnel.reconnect", Some(Role::Operator), TunnelReconnectParams => TunnelReconnectResult;
    /// `vault.unlock`: unlock the vault with the passphrase on the secret
    /// line, then start the node.
    VaultUnlock = "vault.unlock", Some(Role::Admin), VaultUnlockParams => VaultUnlockResult, secret = true;
    /// `vault.lock`: stop the node, final backup, wipe the keys.
    VaultLock = "vault.lock", Some(Role::Admin), NoParams => VaultLockResult;
    /// `backup.restore`: replace the sign state by one backup's.
    BackupRestore = "backup.restore", Some(Role::Admin), BackupRestoreParams => BackupRestoreResult;
    /// `host.shutdown`: shut the validator host down, in two calls.
    HostShutdown = "host.shutdown", Some(Role::Admin), HostShutdownParams => HostShutdownResult;
    /// `failover.status`: this host's role, the leader, the lease.
    FailoverStatusMethod = "failover.status", Some(Role::Viewer), NoParams => FailoverStatus;
    /// `failover.handoff`: hand the validator over to another host.
    FailoverHandoff = "failover.handoff", Some(Role::Admin), FailoverHandoffParams => FailoverHandoffResult;
    /// `failover.pause`: no automatic takeover until `failover.resume`.
    FailoverPause = "failover.pause", Some(Role::Admin), NoParams => FailoverPauseResult;
    /// `failover.resume`: automatic takeover again.
    FailoverResume = "failover.resume", Some(Role::Admin), NoParams => FailoverPauseResult;
    /// `eip.list`: each bastion's Elastic IPs, as EC2 describes them.
    EipList = "eip.list", Some(Role::Admin), NoParams => EipListResult;
    /// `eip.rotate`: move a bastion to a fresh Elastic IP.
    EipRotate = "eip.rotate", Some(Role::Admin), EipRotateParams => EipRotateResult;
    /// `eip.status`: the rotation in progress and the journal's tail.
    EipStatus = "eip.status", Some(Role::Admin), NoParams => EipStatusResult;
}

/// The method called `name`, if it exists.
pub fn method_info(name: &str) -> Option<&'static MethodInfo> {
    CATALOGUE.iter().find(|info| info.name == name)
}

/// Parse and validate `params` for `M`. Absent params (`null`) read as
/// `{}`, so a method whose fields are all optional takes either, and a
/// missing required field is named. Every failure is −32602 with
/// `data.field`: an unknown field names it, a missing field names it, a
/// value of the wrong type names its path (`lines`, `command[1]`),
/// params that are not an object name `params`; [`Validate::validate`]
/// names the field whose value breaks a rule.
pub fn parse_params<M: Method>(params: Value) -> Result<M::Params, RpcError> {
    let params = match params {
        Value::Null => Value::Object(Map::new()),
        Value::Object(_) => params,
        other => {
            let message = if struct_fields::<M::Params>().is_empty() {
                format!(
                    "{} takes no params (null or {{}}), not {}",
                    M::NAME,
                    shown(&other)
                )
            } else {
                format!(
                    "{} params must be an object, not {}",
                    M::NAME,
                    shown(&other)
                )
            };
            return Err(RpcError::invalid_params("params", message));
        }
    };
    let parsed: M::Params = serde_path_to_error::deserialize(&params)
        .map_err(|error| params_error(M::NAME, &params, &error))?;
    parsed.validate()?;
    Ok(parsed)
}

/// The −32602 for a serde failure on `params`.
fn params_error(
    method: &str,
    params: &Value,
    error: &serde_path_to_error::Error<serde_json::Error>,
) -> RpcError {
    let message = error.inner().to_string();
    // serde's messages for these name the field between backticks; the
    // path cannot: a missing field is not there, and an unknown one is
    // reported where the map is.
    for prefix in ["unknown field `", "missing field `"] {
        if let Some(field) = message
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('`').next())
        {
            return RpcError::invalid_params(field, format!("{method} params: {message}"));
        }
    }
    let path = error.path().to_string();
    let field = if path == "." { "params" } else { path.as_str() };
    // "invalid type: integer `2`, expected a string" and "invalid value:
    // …": say what is expected and show the value as sent.
    if message.starts_with("invalid type: ") || message.starts_with("invalid value: ") {
        let expected = message
            .rsplit_once(", expected ")
            .map(|(_, expected)| expected);
        let given = value_at(params, error.path());
        if let (Some(expected), Some(given)) = (expected, given) {
            return RpcError::invalid_params(
                field,
                format!("{field} must be {expected}, not {}", shown(given)),
            );
        }
    }
    RpcError::invalid_params(field, format!("{method} params: {field}: {message}"))
}

/// The value `path` points at inside `root`.
fn value_at<'a>(root: &'a Value, path: &serde_path_to_error::Path) -> Option<&'a Value> {
    use serde_path_to_error::Segment;
    path.iter().try_fold(root, |value, segment| match segment {
        Segment::Map { key } => value.get(key.as_str()),
        Segment::Seq { index } => value.get(*index),
        Segment::Enum { .. } | Segment::Unknown => None,
    })
}

/// A value as JSON for a message, cut short so that an error never echoes
/// a huge request.
fn shown(value: &Value) -> String {
    const MAX_CHARS: usize = 64;
    let text = value.to_string();
    match text.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// The field names serde expects for `T` when it is a struct with named
/// fields (what its derived `Deserialize` passes to `deserialize_struct`);
/// none for anything else.
fn struct_fields<T: DeserializeOwned>() -> &'static [&'static str] {
    match T::deserialize(FieldProbe) {
        Err(ProbeResult(Some(fields))) => fields,
        _ => &[],
    }
}

/// A deserializer that feeds nothing and reports the struct fields it is
/// asked for.
struct FieldProbe;

/// [`FieldProbe`]'s "error": the fields, when a struct was asked for.
#[derive(Debug)]
struct ProbeResult(Option<&'static [&'static str]>);

impl std::fmt::Display for ProbeResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("field probe")
    }
}

impl std::error::Error for ProbeResult {}

impl serde::de::Error for ProbeResult {
    fn custom<T: std::fmt::Display>(_: T) -> ProbeResult {
        ProbeResult(None)
    }
}

impl<'de> serde::Deserializer<'de> for FieldProbe {
    type Error = ProbeResult;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, ProbeResult> {
        Err(ProbeResult(None))
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, ProbeResult> {
        Err(ProbeResult(Some(fields)))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::{METHODS, SECRET_METHODS, code};
    use super::*;

    #[test]
    fn the_catalogue_and_methods_name_the_same_methods_with_the_same_roles() {
        let typed: Vec<(&str, Option<Role>)> = CATALOGUE
            .iter()
            .map(|info| (info.name, info.role))
            .collect();
        assert_eq!(typed, METHODS, "CATALOGUE (the method types) and METHODS");
        let secret: Vec<&str> = CATALOGUE
            .iter()
            .filter(|info| info.secret)
            .map(|info| info.name)
            .collect();
        assert_eq!(secret, SECRET_METHODS);
        for (name, role) in METHODS {
            let info = method_info(name).unwrap_or_else(|| panic!("{name} has no type"));
            assert_eq!(info.role, *role, "{name}");
        }
        assert!(method_info("failover.start").is_none());
        assert_eq!(VaultUnlock::NAME, "vault.unlock");
        const { assert!(VaultUnlock::SECRET && !VaultLock::SECRET) };
    }

    #[test]
    fn param_fields_are_what_serde_expects() {
        let fields = |name: &str| (method_info(name).unwrap().param_fields)();
        assert_eq!(fields("status"), [] as [&str; 0]);
        assert_eq!(fields("vault.unlock"), ["accept_unreachable_stores"]);
        assert_eq!(fields("logs.tail"), ["lines"]);
        assert_eq!(fields("upgrade.add"), ["name", "url", "checksum", "path"]);
        assert_eq!(fields("host.shutdown"), ["confirm"]);
        assert_eq!(fields("auth.login"), ["operator", "signature"]);
        // Round trip: a value with every field set serializes to exactly
        // those members.
        let add = serde_json::to_value(super::super::params::UpgradeAddParams {
            name: "v2".into(),
            url: Some("https://x".into()),
            checksum: Some("sha256:00".into()),
            path: Some("/x".into()),
        })
        .unwrap();
        let members: Vec<String> = add.as_object().unwrap().keys().cloned().collect();
        let mut expected: Vec<&str> = fields("upgrade.add").to_vec();
        expected.sort_unstable();
        assert_eq!(members, expected);
    }

    #[test]
    fn check_params_by_name() {
        let check = |name: &str, params: Value| (method_info(name).unwrap().check_params)(params);
        assert!(check("tunnel.reconnect", json!({"bastion": "b1"})).is_ok());
        let error = check("tunnel.reconnect", json!({"bastio": "b1"})).unwrap_err();
        assert_eq!(error.code, code::INVALID_PARAMS);
        assert_eq!(error.field(), Some("bastio"));
        assert_eq!(
            error.message,
            "tunnel.reconnect params: unknown field `bastio`, expected `bastion`"
        );
        let error = check("node.stop", json!({"now": true})).unwrap_err();
        assert_eq!(error.field(), Some("now"));
    }

    #[test]
    fn wrong_types_inside_lists_are_named_by_their_path() {
        // No params type nests today; this probe method shows what a
        // nested one would get.
        #[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Nested {
            command: Vec<String>,
        }
        impl Validate for Nested {
            fn validate(&self) -> Result<(), RpcError> {
                Ok(())
            }
        }
        struct Probe;
        impl Method for Probe {
            const NAME: &'static str = "probe";
            const ROLE: Option<Role> = None;
            type Params = Nested;
            type Result = Nested;
        }
        let error = parse_params::<Probe>(json!({"command": ["a", 1]})).unwrap_err();
        assert_eq!(error.field(), Some("command[1]"));
        assert_eq!(error.message, "command[1] must be a string, not 1");
    }
}
