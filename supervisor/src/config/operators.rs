//! `[[operator]]`: who may log in to the control RPC over TLS, with which
//! key and which role (see `docs/rpc.md` §2 and `docs/configuration.md`).
//!
//! ```toml
//! [[operator]]
//! name = "alice"
//! key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI… alice@laptop"
//! role = "operator"     # viewer | operator | admin
//! ```
//!
//! Every field is required: a role is a security choice, so it has no
//! default. Names are unique and use the bastion-name charset, so that they
//! log cleanly.

use std::collections::BTreeSet;

use palisade_wire::names::validator_name_problem;
use palisade_wire::rpc::Role;
use serde::Deserialize;

use super::Resolver;

/// One `[[operator]]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawOperator {
    /// Required: a name by the rule of validator names
    /// ([`validator_name_problem`]): letters, digits, `-`, `_`, `.`, neither
    /// `-` nor `.` first, at most 64 bytes.
    pub name: Option<String>,
    /// Required: the operator's public key as one OpenSSH line,
    /// `ssh-ed25519 AAAA… comment` (only ed25519 keys).
    pub key: Option<String>,
    /// Required: `viewer`, `operator` or `admin`.
    pub role: Option<String>,
}

/// One validated `[[operator]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorSettings {
    pub name: String,
    /// The key that signs the login challenge.
    pub key: ed25519_dalek::VerifyingKey,
    pub role: Role,
}

/// Parse an OpenSSH public-key line that must hold an ed25519 key.
pub fn parse_operator_key(line: &str) -> Result<ed25519_dalek::VerifyingKey, String> {
    let key = russh::keys::PublicKey::from_openssh(line.trim()).map_err(|error| {
        format!("is not an OpenSSH public key line (\"ssh-ed25519 AAAA… comment\"): {error}")
    })?;
    let Some(ed25519) = key.key_data().ed25519() else {
        return Err(format!(
            "is a {} key; operators log in with ed25519 keys only (ssh-keygen -t ed25519)",
            key.algorithm()
        ));
    };
    ed25519_dalek::VerifyingKey::from_bytes(&ed25519.0)
        .map_err(|error| format!("is not a valid ed25519 public key: {error}"))
}

fn parse_role(text: &str) -> Option<Role> {
    match text {
        "viewer" => Some(Role::Viewer),
        "operator" => Some(Role::Operator),
        "admin" => Some(Role::Admin),
        _ => None,
    }
}

pub(super) fn validate_operators(
    r: &mut Resolver<'_>,
    operators: Vec<RawOperator>,
) -> Vec<OperatorSettings> {
    let mut names = BTreeSet::new();
    let mut settings = Vec::new();
    for (index, raw) in operators.into_iter().enumerate() {
        let key = |field: &str| format!("operator[{}].{field}", index + 1);
        let problem = |r: &mut Resolver<'_>, field: &str, reason: String| {
            let origin = r.file_origin(key(field));
            r.report(origin, reason);
        };
        let name = raw.name.unwrap_or_default();
        if name.is_empty() {
            problem(r, "name", "is required".into());
        } else if let Some(reason) = validator_name_problem(&name) {
            problem(r, "name", reason);
        } else if !names.insert(name.clone()) {
            problem(
                r,
                "name",
                format!("'{name}' is used by another [[operator]]"),
            );
        }
        let verifying_key = match raw.key.as_deref() {
            None => {
                problem(
                    r,
                    "key",
                    "is required: the operator's \"ssh-ed25519 AAAA…\" public key line".into(),
                );
                None
            }
            Some(line) => match parse_operator_key(line) {
                Ok(key) => Some(key),
                Err(reason) => {
                    problem(r, "key", reason);
                    None
                }
            },
        };
        let role = match raw.role.as_deref() {
            None => {
                problem(
                    r,
                    "role",
                    "is required: viewer, operator or admin (no default: it is a security choice)"
                        .into(),
                );
                None
            }
            Some(text) => match parse_role(text) {
                Some(role) => Some(role),
                None => {
                    problem(
                        r,
                        "role",
                        format!("'{text}' is not a role: use viewer, operator or admin"),
                    );
                    None
                }
            },
        };
        if let (Some(key), Some(role)) = (verifying_key, role) {
            settings.push(OperatorSettings { name, key, role });
        }
    }
    settings
}

#[cfg(test)]
mod tests {
    use palisade_wire::rpc::Role;

    const ALICE: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDScXHDpte7Y+6lBWCe5HCqfwdWjJ/2uOZUmU5UJS9+k alice@laptop";
    const RSA: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDOpiR9d9LmXa3xUJlOmy5SJUZWqs0Cixd/Nssut0glg9QjjuwidJjmBOWOhMoSW3PaEv0gMBA9c0uOhk2rFRi5Mx+dxWCLaCTZpykdSiXWH8Fji/CzcDvorl/aD+1ItHG06EvOPnVt/blPJP3Xr4EoLmWKATThYyCu2FeeqJwXQQ== bob";

    use crate::config::test_support::load;

    #[test]
    fn operators_and_rpc_keys_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let config = load(
            dir.path(),
            &format!(
                "[rpc]\nidle-timeout = \"5s\"\n\
                 [[operator]]\nname = \"alice\"\nkey = \"{ALICE}\"\nrole = \"operator\"\n\
                 [[operator]]\nname = \"root.admin\"\nkey = \"{ALICE}\"\nrole = \"admin\"\n"
            ),
        )
        .unwrap();
        assert_eq!(config.operators.len(), 2);
        assert_eq!(config.operators[0].name, "alice");
        assert_eq!(config.operators[0].role, Role::Operator);
        assert_eq!(config.operators[1].role, Role::Admin);
        assert_eq!(config.rpc.idle_timeout, std::time::Duration::from_secs(5));
        assert_eq!(config.rpc.tls_dir, dir.path().join("palisade/rpc"));

        let defaults = load(dir.path(), "").unwrap();
        assert!(defaults.operators.is_empty());
        assert_eq!(
            defaults.rpc.idle_timeout,
            std::time::Duration::from_secs(60)
        );
    }

    #[test]
    fn every_bad_operator_value_is_reported_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let good =
            format!("[[operator]]\nname = \"alice\"\nkey = \"{ALICE}\"\nrole = \"viewer\"\n");
        assert!(load(dir.path(), &good).is_ok());
        let cases: Vec<(String, &str)> = vec![
            (
                format!("{good}{good}"),
                "key `operator[2].name`: 'alice' is used by another [[operator]]",
            ),
            (
                format!("[[operator]]\nkey = \"{ALICE}\"\nrole = \"viewer\"\n"),
                "key `operator[1].name`: is required",
            ),
            (
                format!("[[operator]]\nname = \"al ice\"\nkey = \"{ALICE}\"\nrole = \"viewer\"\n"),
                "key `operator[1].name`: \"al ice\" may use only ASCII letters",
            ),
            (
                format!("[[operator]]\nname = \"-alice\"\nkey = \"{ALICE}\"\nrole = \"viewer\"\n"),
                "key `operator[1].name`: \"-alice\" must not start with '-' or '.'",
            ),
            (
                "[[operator]]\nname = \"alice\"\nrole = \"viewer\"\n".into(),
                "key `operator[1].key`: is required",
            ),
            (
                "[[operator]]\nname = \"alice\"\nkey = \"ssh-ed25519 !!!\"\nrole = \"viewer\"\n"
                    .into(),
                "key `operator[1].key`: is not an OpenSSH public key line",
            ),
            (
                format!("[[operator]]\nname = \"alice\"\nkey = \"{RSA}\"\nrole = \"viewer\"\n"),
                "key `operator[1].key`: is a ssh-rsa key; operators log in with ed25519 keys only",
            ),
            (
                format!("[[operator]]\nname = \"alice\"\nkey = \"{ALICE}\"\n"),
                "key `operator[1].role`: is required",
            ),
            (
                format!("[[operator]]\nname = \"alice\"\nkey = \"{ALICE}\"\nrole = \"root\"\n"),
                "key `operator[1].role`: 'root' is not a role",
            ),
            (format!("{good}rol = \"admin\"\n"), "unknown field `rol`"),
            (
                "[rpc]\nidle-timeout = \"soon\"\n".into(),
                "key `rpc.idle-timeout`: 'soon' is not a duration",
            ),
            (
                "[rpc]\nidle-timeout = \"10ms\"\n".into(),
                "key `rpc.idle-timeout`: must be between 100ms and 1h",
            ),
            (
                "[rpc]\ntls-dir = \"relative/rpc\"\n".into(),
                "key `rpc.tls-dir`: 'relative/rpc' must be an absolute path",
            ),
        ];
        for (text, expected) in cases {
            let error = load(dir.path(), &text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text}\n→ {error}");
        }
        // Every problem at once.
        let error = load(
            dir.path(),
            "[[operator]]\nname = \"\"\n[[operator]]\nname = \"b\"\nkey = \"x\"\nrole = \"god\"\n",
        )
        .unwrap_err()
        .to_string();
        for expected in [
            "operator[1].name",
            "operator[1].key",
            "operator[1].role",
            "operator[2].key",
            "operator[2].role",
        ] {
            assert!(error.contains(expected), "{expected}\n→ {error}");
        }
    }
}
