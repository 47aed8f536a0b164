//! `palisade-ctl`'s own config file: the validators it can reach and the
//! operator identity for each (`~/.config/palisade/ctl.toml` by default).
//!
//! ```toml
//! default = "val-a"
//!
//! [[validator]]
//! name = "val-a"
//! socket = "/run/palisade/supervisor.sock"      # local mode
//! via = "palisade-ops@bastion1.example.com:22" # or remote mode
//! # remote-socket = "/run/palisade-validators/val-a.sock"  # only for a bastion that forwards sockets
//! known-hosts = "~/.ssh/known_hosts"            # default; or:
//! host-key-fingerprints = ["SHA256:…"]          # the bastion's, ssh-keygen -lf
//! ssh-key = "~/.ssh/palisade_alice"             # default: `key`
//! pin = "sha256:…"                              # from `palisade-supervisor init-rpc`
//! server-user = "gaia"                          # local mode: the supervisor's user
//! operator = "alice"
//! key = "~/.ssh/palisade_alice"
//! log-signer = "ssh-ed25519 AAAA…"              # logs --archive: the segments' signer
//! log-identity = "~/.config/palisade/age.key"   # logs --archive: the age identity
//! ```
//!
//! Parsed raw (serde, `deny_unknown_fields`, kebab-case), then validated
//! into [`CtlConfig`], collecting every problem into one message that names
//! the file and the key. Nothing here touches the network.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use palisade_client::Fingerprint;
use palisade_wire::names::validator_name_problem;
use serde::Deserialize;

use crate::log_archive::parse_ssh_ed25519_public;
use crate::{Via, parse_via};

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    /// The validator used without `--validator`. Default: the only one,
    /// when there is exactly one.
    default: Option<String>,
    /// The validators, each with a unique name.
    #[serde(default)]
    validator: Vec<RawValidator>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawValidator {
    /// Name used with `--validator`.
    name: String,
    /// The supervisor's control socket on this host (`[rpc] socket`).
    socket: Option<String>,
    /// `user@bastion[:port]` for remote mode.
    via: Option<String>,
    /// The socket the validator publishes on that bastion. Default:
    /// `/run/palisade-bastion/<name>.sock`.
    remote_socket: Option<String>,
    /// The SSH key for the bastion login. Default: `key`.
    ssh_key: Option<String>,
    /// known_hosts file with the bastion's host key. Default:
    /// `~/.ssh/known_hosts`.
    known_hosts: Option<String>,
    /// The bastion's host key fingerprints (`ssh-keygen -lf`), pinned in
    /// addition to known_hosts.
    host_key_fingerprints: Option<Vec<String>>,
    /// The supervisor's certificate fingerprint, `sha256:<hex>`. No
    /// default: without it TLS connections are refused.
    pin: Option<String>,
    /// Local mode: the user (name or uid) the supervisor runs as, when it
    /// is neither root nor the user running palisade-ctl. Default: none.
    server_user: Option<String>,
    /// Operator name to log in as; needs `key`.
    operator: Option<String>,
    /// The operator's OpenSSH ed25519 private key (with a passphrase: held
    /// by ssh-agent); needs `operator`. `~/` is the home directory.
    key: Option<String>,
    /// `logs --archive`: the pinned public key of the supervisor's
    /// `logs.signing-key`, an `ssh-ed25519 AAAA…` line (the key itself, not
    /// a file). Used when neither `--signer` nor `PALISADE_LOG_SIGNER` is.
    log_signer: Option<String>,
    /// `logs --archive`: the operator's age identity file (as
    /// `--identity`). `~/` is the home directory.
    log_identity: Option<String>,
}

/// A validated config.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CtlConfig {
    pub default: Option<String>,
    pub validators: Vec<ValidatorEntry>,
}

/// One validated `[[validator]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatorEntry {
    pub name: String,
    pub socket: Option<PathBuf>,
    pub via: Option<Via>,
    pub remote_socket: Option<PathBuf>,
    pub ssh_key: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
    pub host_key_fingerprints: Vec<String>,
    pub pin: Option<Fingerprint>,
    /// Local mode: who besides root and the caller may serve the socket.
    pub server_user: Option<String>,
    /// Operator name and key file, always both or neither.
    pub operator: Option<(String, PathBuf)>,
    /// `logs --archive`'s pinned segment signer (`log-signer`).
    pub log_signer: Option<VerifyingKey>,
    /// `logs --archive`'s age identity file (`log-identity`), checked when
    /// it is used.
    pub log_identity: Option<PathBuf>,
}

/// Why the config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}: {reason}", path.display())]
    Read { path: PathBuf, reason: String },
    /// Problems in the file, each `file: key: reason`.
    #[error("invalid config:\n  {}", problems.join("\n  "))]
    Invalid { problems: Vec<String> },
}

/// The default location: `$XDG_CONFIG_HOME/palisade/ctl.toml`, else
/// `~/.config/palisade/ctl.toml`.
pub fn default_path() -> Option<PathBuf> {
    if let Some(base) = std::env::var_os("XDG_CONFIG_HOME").filter(|base| !base.is_empty()) {
        return Some(PathBuf::from(base).join("palisade/ctl.toml"));
    }
    std::env::var_os("HOME")
        .filter(|home| !home.is_empty())
        .map(|home| PathBuf::from(home).join(".config/palisade/ctl.toml"))
}

/// Read and validate `path`. `required = false` (the default location)
/// treats a missing file as an empty config.
pub fn load(path: &Path, required: bool) -> Result<CtlConfig, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, &path.display().to_string()),
        Err(error) if !required && error.kind() == std::io::ErrorKind::NotFound => {
            Ok(CtlConfig::default())
        }
        Err(error) => Err(ConfigError::Read {
            path: path.to_path_buf(),
            reason: error.to_string(),
        }),
    }
}

/// Parse and validate config text; `file` names it in messages.
pub fn parse(text: &str, file: &str) -> Result<CtlConfig, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|error| ConfigError::Invalid {
        problems: vec![format!("{file}: {}", error.to_string().trim_end())],
    })?;
    let mut problems = Vec::new();
    let mut problem =
        |key: String, reason: String| problems.push(format!("{file}: {key}: {reason}"));
    let mut names = HashSet::new();
    let mut validators = Vec::new();
    for (index, raw) in raw.validator.into_iter().enumerate() {
        let key = |field: &str| format!("validator[{index}].{field}");
        if let Some(reason) = validator_name_problem(&raw.name) {
            problem(key("name"), reason);
        } else if !names.insert(raw.name.clone()) {
            problem(key("name"), format!("'{}' appears twice", raw.name));
        }
        let no_endpoint = raw.socket.is_none() && raw.via.is_none();
        let remote_without_via = raw.via.is_none()
            && (raw.remote_socket.is_some()
                || raw.ssh_key.is_some()
                || raw.known_hosts.is_some()
                || raw.host_key_fingerprints.is_some());
        let mut path_field = |field: &str, value: Option<String>| -> Option<PathBuf> {
            let path = expand_home(&value?);
            if !path.is_absolute() {
                problem(
                    key(field),
                    format!("'{}' is not an absolute path", path.display()),
                );
                return None;
            }
            Some(path)
        };
        let socket = path_field("socket", raw.socket);
        let remote_socket = path_field("remote-socket", raw.remote_socket);
        let key_path = path_field("key", raw.key.clone());
        let ssh_key = path_field("ssh-key", raw.ssh_key);
        let known_hosts = path_field("known-hosts", raw.known_hosts);
        let log_identity = path_field("log-identity", raw.log_identity);
        let via = raw.via.as_deref().and_then(|text| {
            parse_via(text)
                .map_err(|reason| problem(key("via"), reason))
                .ok()
        });
        if no_endpoint {
            problem(
                key("socket"),
                "neither `socket` (local) nor `via` (remote) is set".into(),
            );
        }
        if remote_without_via {
            problem(
                key("via"),
                "`remote-socket`, `ssh-key`, `known-hosts` and `host-key-fingerprints` \
                 are for remote mode and need `via`"
                    .into(),
            );
        }
        let host_key_fingerprints = raw.host_key_fingerprints.unwrap_or_default();
        for fingerprint in &host_key_fingerprints {
            if let Err(error) = palisade_ssh::host_key::parse_fingerprint(fingerprint) {
                problem(key("host-key-fingerprints"), error.to_string());
            }
        }
        let pin = raw.pin.as_deref().and_then(|text| {
            Fingerprint::parse(text)
                .map_err(|reason| problem(key("pin"), reason))
                .ok()
        });
        let log_signer = raw.log_signer.as_deref().and_then(|text| {
            let text = text.trim();
            let parsed = if text.starts_with("ssh-") {
                parse_ssh_ed25519_public(text)
            } else {
                Err("not an ssh-ed25519 public key: give the key line itself \
                     (\"ssh-ed25519 AAAA…\", the .pub of the supervisor's logs.signing-key), \
                     not a file"
                    .into())
            };
            parsed
                .map_err(|reason| problem(key("log-signer"), reason))
                .ok()
        });
        let operator = match (raw.operator, raw.key) {
            (Some(operator), Some(_)) => {
                if operator.is_empty() || operator.chars().any(|c| c.is_whitespace()) {
                    problem(
                        key("operator"),
                        format!("'{operator}' is not an operator name"),
                    );
                }
                key_path.map(|path| (operator, path))
            }
            (Some(_), None) => {
                problem(key("key"), "`operator` is set but `key` is not".into());
                None
            }
            (None, Some(_)) => {
                problem(key("operator"), "`key` is set but `operator` is not".into());
                None
            }
            (None, None) => None,
        };
        validators.push(ValidatorEntry {
            name: raw.name,
            socket,
            via,
            remote_socket,
            ssh_key,
            known_hosts,
            host_key_fingerprints,
            pin,
            server_user: raw.server_user,
            operator,
            log_signer,
            log_identity,
        });
    }
    if let Some(default) = &raw.default
        && !validators.iter().any(|entry| &entry.name == default)
    {
        problem(
            "default".into(),
            format!("no [[validator]] is named '{default}'"),
        );
    }
    if problems.is_empty() {
        Ok(CtlConfig {
            default: raw.default,
            validators,
        })
    } else {
        Err(ConfigError::Invalid { problems })
    }
}

impl CtlConfig {
    /// The validator `name`, else the default, else the only one.
    pub fn select(&self, name: Option<&str>) -> Result<Option<&ValidatorEntry>, String> {
        let find = |name: &str| {
            self.validators
                .iter()
                .find(|entry| entry.name == name)
                .ok_or_else(|| {
                    let known: Vec<&str> =
                        self.validators.iter().map(|v| v.name.as_str()).collect();
                    format!(
                        "no validator '{name}' in the config (known: {})",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    )
                })
        };
        match (name, &self.default) {
            (Some(name), _) => find(name).map(Some),
            (None, Some(default)) => find(default).map(Some),
            (None, None) if self.validators.len() == 1 => Ok(self.validators.first()),
            (None, None) => Ok(None),
        }
    }
}

/// `$HOME/<relative>`, if HOME is set.
pub fn expand_home_dir(relative: &str) -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|home| !home.is_empty())
        .map(|home| PathBuf::from(home).join(relative))
}

/// `~/x` → `$HOME/x`; anything else unchanged.
pub fn expand_home(text: &str) -> PathBuf {
    match (text.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) if !home.is_empty() => PathBuf::from(home).join(rest),
        _ => PathBuf::from(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIN: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn a_full_config_parses() {
        let text = format!(
            r#"
default = "val-b"
[[validator]]
name = "val-a"
socket = "/run/palisade/supervisor.sock"
[[validator]]
name = "val-b"
via = "ops@bastion1:2222"
remote-socket = "/run/palisade-bastion/val-b.sock"
pin = "{PIN}"
operator = "alice"
key = "/home/alice/.ssh/palisade_alice"
"#
        );
        let config = parse(&text, "ctl.toml").unwrap();
        assert_eq!(config.validators.len(), 2);
        let b = config.select(None).unwrap().unwrap();
        assert_eq!(b.name, "val-b");
        assert_eq!(b.via.as_ref().unwrap().port, Some(2222));
        assert_eq!(b.pin.as_ref().unwrap().as_str(), PIN);
        assert_eq!(
            b.operator,
            Some((
                "alice".to_string(),
                PathBuf::from("/home/alice/.ssh/palisade_alice")
            ))
        );
        let a = config.select(Some("val-a")).unwrap().unwrap();
        assert_eq!(
            a.socket.as_deref(),
            Some(Path::new("/run/palisade/supervisor.sock"))
        );
        assert!(
            config
                .select(Some("val-c"))
                .unwrap_err()
                .contains("val-a, val-b")
        );
        assert_eq!(parse("", "f").unwrap(), CtlConfig::default());
    }

    #[test]
    fn bad_configs_name_file_key_and_reason() {
        // (body, expected fragments of the message)
        let rows: &[(&str, &[&str])] = &[
            ("nonsense = 1", &["ctl.toml: ", "unknown field `nonsense`"]),
            (
                "[[validator]]\nname = \"a\"\nsocket = \"/s\"\nport = 1",
                &["unknown field `port`"],
            ),
            (
                "[[validator]]\nname = \"a\"\nremote_socket = \"/s\"",
                &["unknown field `remote_socket`"],
            ),
            ("[[validator]]\nsocket = \"/s\"", &["missing field `name`"]),
            (
                "default = \"x\"\n[[validator]]\nname = \"a\"\nsocket = \"/s\"",
                &["ctl.toml: default: no [[validator]] is named 'x'"],
            ),
            (
                "[[validator]]\nname = \"a\"",
                &["ctl.toml: validator[0].socket: neither"],
            ),
            (
                "[[validator]]\nname = \"a\"\nsocket = \"relative.sock\"",
                &["validator[0].socket: 'relative.sock' is not an absolute path"],
            ),
            (
                "[[validator]]\nname = \"a\"\nsocket = \"/s\"\npin = \"sha256:abc\"",
                &["validator[0].pin: 'sha256:abc' is not a certificate pin"],
            ),
            (
                "[[validator]]\nname = \"a\"\nvia = \"bastion\"\nremote-socket = \"/r\"",
                &["validator[0].via: 'bastion' is not user@bastion[:port]"],
            ),
            (
                "[[validator]]\nname = \"a\"\nsocket = \"/s\"\nremote-socket = \"/r\"",
                &["validator[0].via: `remote-socket`, `ssh-key`"],
            ),
            (
                "[[validator]]\nname = \"a\"\nvia = \"ops@b\"\nhost-key-fingerprints = [\"MD5:ab\"]",
                &["validator[0].host-key-fingerprints: pinned fingerprint \"MD5:ab\""],
            ),
            (
                "[[validator]]\nname = \"a\"\nsocket = \"/s\"\noperator = \"alice\"",
                &["validator[0].key: `operator` is set but `key` is not"],
            ),
            (
                "[[validator]]\nname = \"a\"\nsocket = \"/s\"\nkey = \"/k\"",
                &["validator[0].operator: `key` is set but `operator` is not"],
            ),
            (
                "[[validator]]\nname = \"a\"\nsocket = \"/s\"\n[[validator]]\nname = \"a\"\nsocket = \"/t\"",
                &["validator[1].name: 'a' appears twice"],
            ),
            (
                "[[validator]]\nname = \"a b\"\nsocket = \"/s\"",
                &["validator[0].name: \"a b\" may use only ASCII letters"],
            ),
            (
                "[[validator]]\nname = \"-a\"\nsocket = \"/s\"",
                &["validator[0].name: \"-a\" must not start with '-' or '.'"],
            ),
            (
                "[[validator]]\nname = \"a\"\nsocket = \"/s\"\nlog-signer = \"ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ x\"",
                &["validator[0].log-signer: not an ssh-ed25519 public key"],
            ),
            (
                "[[validator]]\nname = \"a\"\nsocket = \"/s\"\nlog-signer = \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9\"",
                &["validator[0].log-signer: not an ssh-ed25519 key blob"],
            ),
            (
                "[[validator]]\nname = \"a\"\nsocket = \"/s\"\nlog-signer = \"/home/alice/val-a.pub\"",
                &[
                    "validator[0].log-signer: not an ssh-ed25519 public key: give the key line itself",
                ],
            ),
            (
                "[[validator]]\nname = \"a\"\nsocket = \"/s\"\nlog-identity = \"age.key\"",
                &["validator[0].log-identity: 'age.key' is not an absolute path"],
            ),
            (
                "[[validator]]\nname = \"a\"\nsocket = \"/s\"\nlog_signer = \"x\"",
                &["unknown field `log_signer`"],
            ),
            // Every problem at once.
            (
                "default = \"zz\"\n[[validator]]\nname = \"a\"\nsocket = \"x\"\npin = \"p\"",
                &[
                    "validator[0].socket: 'x'",
                    "validator[0].pin: 'p'",
                    "default: no [[validator]] is named 'zz'",
                ],
            ),
        ];
        for (body, fragments) in rows {
            let error = parse(body, "ctl.toml").unwrap_err().to_string();
            for fragment in *fragments {
                assert!(error.contains(fragment), "{body:?}:\n{error}");
            }
        }
    }

    #[test]
    fn log_archive_settings_parse() {
        let signer = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice";
        let text = format!(
            "[[validator]]\nname = \"a\"\nsocket = \"/s\"\nlog-signer = \"  {signer} \"\n\
             log-identity = \"/home/alice/.config/palisade/age.key\"\n\
             [[validator]]\nname = \"b\"\nsocket = \"/t\""
        );
        let config = parse(&text, "ctl.toml").unwrap();
        let a = config.select(Some("a")).unwrap().unwrap();
        assert_eq!(
            a.log_signer,
            Some(crate::log_archive::parse_ssh_ed25519_public(signer).unwrap())
        );
        assert_eq!(
            a.log_identity.as_deref(),
            Some(Path::new("/home/alice/.config/palisade/age.key"))
        );
        let b = config.select(Some("b")).unwrap().unwrap();
        assert_eq!((b.log_signer, b.log_identity.as_ref()), (None, None));
    }

    #[test]
    fn missing_default_file_is_empty_but_explicit_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("ctl.toml");
        assert_eq!(load(&missing, false).unwrap(), CtlConfig::default());
        assert!(matches!(
            load(&missing, true),
            Err(ConfigError::Read { .. })
        ));
    }
}
