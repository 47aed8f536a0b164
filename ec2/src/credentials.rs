//! AWS credentials: an access key id, its secret, and a session token for temporary
//! credentials. The secret and the token live in zeroizing buffers, print as `REDACTED` in
//! `Debug`, and are never logged.
//!
//! Sources: the vault (Palisade's normal one, which stores the [`Credentials::to_toml`] form
//! encrypted and hands back [`Credentials::from_toml`] while unlocked), and, as explicit
//! opt-ins, the standard environment variables ([`Credentials::from_env`]) or a profile of an
//! AWS shared credentials file ([`Credentials::from_profile_file`]). Nothing here looks for
//! credentials on its own (no instance metadata, no default file): a source is always chosen.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The access key id's environment variable.
pub const ENV_ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
/// The secret access key's environment variable.
pub const ENV_SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
/// The session token's environment variable (temporary credentials only).
pub const ENV_SESSION_TOKEN: &str = "AWS_SESSION_TOKEN";
/// The largest credentials file read (they are a few hundred bytes per profile).
const MAX_PROFILE_FILE_BYTES: u64 = 1024 * 1024;

/// An AWS access key, with the session token of temporary credentials.
///
/// Serializes (serde, e.g. [`Credentials::to_toml`]) as `access-key-id`, `secret-access-key`
/// and `session-token` (absent for long-term keys); deserializing checks the same things as
/// [`Credentials::new`] and refuses unknown keys.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", try_from = "UncheckedCredentials")]
pub struct Credentials {
    /// The access key id (`AKIA…` for a user's key, `ASIA…` for temporary credentials); not a
    /// secret, and shown by `Debug` so that an operator can tell which key is in use.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: Zeroizing<String>,
    /// The session token of temporary (STS) credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<Zeroizing<String>>,
}

/// What [`Credentials`] deserializes through before the checks.
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct UncheckedCredentials {
    access_key_id: String,
    secret_access_key: Zeroizing<String>,
    #[serde(default)]
    session_token: Option<Zeroizing<String>>,
}

impl TryFrom<UncheckedCredentials> for Credentials {
    type Error = CredentialsError;

    fn try_from(unchecked: UncheckedCredentials) -> Result<Credentials, CredentialsError> {
        Credentials::new(
            unchecked.access_key_id,
            unchecked.secret_access_key,
            unchecked.session_token,
        )
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &format_args!("REDACTED"))
            .field(
                "session_token",
                &self
                    .session_token
                    .as_ref()
                    .map(|_| format_args!("REDACTED")),
            )
            .finish()
    }
}

/// Credentials that could not be had, or are not well-formed.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// A field is empty or holds characters AWS never issues (named; the value is not shown).
    #[error("AWS credentials: the {field} {reason}")]
    Invalid {
        /// `access key id`, `secret access key` or `session token`.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An environment variable that [`Credentials::from_env`] needs is not set (or empty).
    #[error(
        "AWS credentials from the environment: {variable} is not set (set {ENV_ACCESS_KEY_ID} and {ENV_SECRET_ACCESS_KEY}, and {ENV_SESSION_TOKEN} for temporary credentials)"
    )]
    MissingVariable {
        /// The variable.
        variable: &'static str,
    },
    /// An environment variable is not valid UTF-8.
    #[error("AWS credentials from the environment: {variable} is not valid UTF-8")]
    NotUnicode {
        /// The variable.
        variable: &'static str,
    },
    /// The credentials file could not be read.
    #[error("AWS credentials file {}: {reason}", path.display())]
    ProfileFile {
        /// The file.
        path: PathBuf,
        /// The I/O error or the size limit.
        reason: String,
    },
    /// The credentials file is not in the INI format AWS uses.
    #[error("AWS credentials file {}, line {line}: {reason}", path.display())]
    ProfileSyntax {
        /// The file.
        path: PathBuf,
        /// The line (1-based).
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The file has no `[profile]` section.
    #[error("AWS credentials file {}: no profile [{profile}]", path.display())]
    ProfileNotFound {
        /// The file.
        path: PathBuf,
        /// The profile asked for.
        profile: String,
    },
    /// The profile lacks a key it needs.
    #[error("AWS credentials file {}, profile [{profile}]: {key} is missing", path.display())]
    ProfileKeyMissing {
        /// The file.
        path: PathBuf,
        /// The profile.
        profile: String,
        /// `aws_access_key_id` or `aws_secret_access_key`.
        key: &'static str,
    },
    /// The stored form could not be read (the parser's message never quotes secret values).
    #[error("stored AWS credentials: {0}")]
    Stored(String),
}

impl Credentials {
    /// Long-term (`session_token: None`) or temporary credentials, checked: the access key id
    /// is 1 to 128 ASCII letters and digits (it is sent in the `Authorization` header), the secret is not empty and has no whitespace or
    /// control characters, the token (if any) is not empty and is printable ASCII (it is sent
    /// as a header).
    pub fn new(
        access_key_id: impl Into<String>,
        secret_access_key: Zeroizing<String>,
        session_token: Option<Zeroizing<String>>,
    ) -> Result<Credentials, CredentialsError> {
        let credentials = Credentials {
            access_key_id: access_key_id.into(),
            secret_access_key,
            session_token,
        };
        credentials.check()?;
        Ok(credentials)
    }

    /// The checks of [`Credentials::new`], for credentials built field by field.
    pub fn check(&self) -> Result<(), CredentialsError> {
        let invalid = |field, reason| Err(CredentialsError::Invalid { field, reason });
        let id = &self.access_key_id;
        if id.is_empty() {
            return invalid("access key id", "is empty");
        }
        if !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return invalid(
                "access key id",
                "has characters other than letters and digits",
            );
        }
        if id.len() > 128 {
            return invalid("access key id", "is longer than 128 characters");
        }
        if self.secret_access_key.is_empty() {
            return invalid("secret access key", "is empty");
        }
        if self
            .secret_access_key
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return invalid("secret access key", "has whitespace or control characters");
        }
        if let Some(token) = &self.session_token {
            if token.is_empty() {
                return invalid("session token", "is empty");
            }
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return invalid("session token", "has characters other than printable ASCII");
            }
        }
        Ok(())
    }

    /// Whether these are temporary credentials (they have a session token, and expire).
    pub fn is_temporary(&self) -> bool {
        self.session_token.is_some()
    }

    /// From `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and (if set and not empty)
    /// `AWS_SESSION_TOKEN`: an explicit opt-in, as the environment of a process can be read by
    /// the same user through `/proc`.
    pub fn from_env() -> Result<Credentials, CredentialsError> {
        from_variables(|name| std::env::var_os(name))
    }

    /// The profile `profile` of an AWS shared credentials file (`~/.aws/credentials`):
    /// `aws_access_key_id`, `aws_secret_access_key` and optionally `aws_session_token` (or its
    /// old name `aws_security_token`); other keys are ignored. The format is Python's
    /// configparser as the AWS CLI reads it: `[name]` sections, `key = value` or `key: value`,
    /// whole-line comments with `#` or `;`, no inline comments; a key twice in a profile, or a
    /// profile twice, is an error.
    pub fn from_profile_file(path: &Path, profile: &str) -> Result<Credentials, CredentialsError> {
        let text = read_bounded(path)?;
        let section = profile_section(&text, path, profile)?;
        let take = |key: &'static str| -> Result<Zeroizing<String>, CredentialsError> {
            section
                .get(key)
                .ok_or_else(|| CredentialsError::ProfileKeyMissing {
                    path: path.to_path_buf(),
                    profile: profile.to_string(),
                    key,
                })
        };
        let access_key_id = take("aws_access_key_id")?;
        let secret_access_key = take("aws_secret_access_key")?;
        let session_token = section
            .get("aws_session_token")
            .or_else(|| section.get("aws_security_token"));
        Credentials::new(access_key_id.as_str(), secret_access_key, session_token)
    }

    /// The stored form, for the vault: `access-key-id = "…"`, `secret-access-key = "…"` and,
    /// for temporary credentials, `session-token = "…"`, in a zeroizing buffer.
    pub fn to_toml(&self) -> Zeroizing<String> {
        // Serializing three strings cannot fail.
        Zeroizing::new(toml::to_string(self).expect("credentials serialize to TOML"))
    }

    /// Reads [`Credentials::to_toml`]'s form back, checked.
    pub fn from_toml(text: &str) -> Result<Credentials, CredentialsError> {
        toml::from_str(text).map_err(|e| CredentialsError::Stored(describe_toml_error(&e)))
    }
}

/// toml's message without the quoted source line it adds (which could hold a secret).
fn describe_toml_error(error: &toml::de::Error) -> String {
    let mut text = error.message().to_string();
    if let Some(span) = error.span() {
        text.push_str(&format!(" (at byte {})", span.start));
    }
    text
}

/// `from_env` over a lookup, so that tests need not change the process environment.
fn from_variables(
    lookup: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<Credentials, CredentialsError> {
    let read = |variable: &'static str| -> Result<Option<Zeroizing<String>>, CredentialsError> {
        match lookup(variable) {
            None => Ok(None),
            Some(value) => {
                let value = Zeroizing::new(
                    value
                        .into_string()
                        .map_err(|_| CredentialsError::NotUnicode { variable })?,
                );
                Ok((!value.is_empty()).then_some(value))
            }
        }
    };
    let require = |variable: &'static str| {
        read(variable)?.ok_or(CredentialsError::MissingVariable { variable })
    };
    let access_key_id = require(ENV_ACCESS_KEY_ID)?;
    let secret_access_key = require(ENV_SECRET_ACCESS_KEY)?;
    let session_token = read(ENV_SESSION_TOKEN)?;
    Credentials::new(access_key_id.as_str(), secret_access_key, session_token)
}

fn read_bounded(path: &Path) -> Result<Zeroizing<String>, CredentialsError> {
    use std::io::Read as _;
    let failed = |reason: String| CredentialsError::ProfileFile {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| failed(e.to_string()))?;
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(MAX_PROFILE_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| failed(e.to_string()))?;
    if bytes.len() as u64 > MAX_PROFILE_FILE_BYTES {
        return Err(failed(format!(
            "larger than {MAX_PROFILE_FILE_BYTES} bytes"
        )));
    }
    match std::str::from_utf8(&bytes) {
        Ok(text) => Ok(Zeroizing::new(text.to_string())),
        Err(e) => Err(failed(format!("not UTF-8 ({e})"))),
    }
}

/// The keys and values of one profile (keys lowercased, as configparser does).
struct Section(Vec<(String, Zeroizing<String>)>);

impl Section {
    fn get(&self, key: &str) -> Option<Zeroizing<String>> {
        self.0
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.clone())
    }
}

/// Parses the whole file (so that a syntax error anywhere is reported) and returns `profile`'s
/// keys.
fn profile_section(text: &str, path: &Path, profile: &str) -> Result<Section, CredentialsError> {
    let syntax = |line: usize, reason: String| CredentialsError::ProfileSyntax {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let mut sections_seen: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    let mut keys_in_current: Vec<String> = Vec::new();
    let mut found: Option<Section> = None;
    // The key whose value an indented line would continue, if it is one of ours.
    let mut last_key: Option<String> = None;
    for (index, raw) in text.lines().enumerate() {
        let line_number = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if raw.starts_with([' ', '\t']) {
            // configparser's continuation line (nested settings in ~/.aws/config); a
            // credential is never continued.
            match &last_key {
                Some(key) if key.starts_with("aws_") && current.as_deref() == Some(profile) => {
                    return Err(syntax(
                        line_number,
                        format!("{key} is continued on an indented line; credentials are one line"),
                    ));
                }
                Some(_) => continue,
                None => {
                    return Err(syntax(
                        line_number,
                        "an indented line that continues no key".to_string(),
                    ));
                }
            }
        }
        if let Some(rest) = trimmed.strip_prefix('[') {
            let Some(name) = rest.strip_suffix(']') else {
                return Err(syntax(
                    line_number,
                    "a section header without `]`".to_string(),
                ));
            };
            let name = name.trim().to_string();
            if sections_seen.contains(&name) {
                return Err(syntax(
                    line_number,
                    format!("profile [{name}] appears twice"),
                ));
            }
            sections_seen.push(name.clone());
            if name == profile {
                found = Some(Section(Vec::new()));
            }
            current = Some(name);
            keys_in_current.clear();
            last_key = None;
            continue;
        }
        let Some(separator) = trimmed.find(['=', ':']) else {
            return Err(syntax(
                line_number,
                "neither a [section], a comment nor key = value".to_string(),
            ));
        };
        if current.is_none() {
            return Err(syntax(
                line_number,
                "a key before any [section]".to_string(),
            ));
        }
        let key = trimmed[..separator].trim().to_ascii_lowercase();
        if key.is_empty() {
            return Err(syntax(line_number, "a value without a key".to_string()));
        }
        if keys_in_current.contains(&key) {
            return Err(syntax(
                line_number,
                format!(
                    "{key} appears twice in [{}]",
                    current.as_deref().unwrap_or_default()
                ),
            ));
        }
        keys_in_current.push(key.clone());
        if current.as_deref() == Some(profile)
            && let Some(section) = &mut found
        {
            let value = Zeroizing::new(trimmed[separator + 1..].trim().to_string());
            section.0.push((key.clone(), value));
        }
        last_key = Some(key);
    }
    found.ok_or_else(|| CredentialsError::ProfileNotFound {
        path: path.to_path_buf(),
        profile: profile.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::ffi::OsString;

    use super::*;

    const ID: &str = "AKIDEXAMPLE12345";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const TOKEN: &str = "IQoJb3JpZ2luX2VjEXAMPLE//+=";

    fn secret(text: &str) -> Zeroizing<String> {
        Zeroizing::new(text.to_string())
    }

    #[test]
    fn debug_shows_the_key_id_and_redacts_the_secret_and_token() {
        let credentials = Credentials::new(ID, secret(SECRET), Some(secret(TOKEN))).unwrap();
        let shown = format!("{credentials:?}");
        assert!(shown.contains(ID), "{shown}");
        assert!(shown.contains("REDACTED"), "{shown}");
        assert!(!shown.contains(SECRET) && !shown.contains(TOKEN), "{shown}");
        assert!(!format!("{credentials:#?}").contains(SECRET));
        assert!(credentials.is_temporary());
    }

    #[test]
    fn malformed_fields_are_refused_without_quoting_them() {
        let long_id = "A".repeat(129);
        for (id, key, token, field) in [
            ("", SECRET, None, "access key id"),
            ("AKID EXAMPLE1234", SECRET, None, "access key id"),
            (long_id.as_str(), SECRET, None, "access key id"),
            (ID, "", None, "secret access key"),
            (ID, "has space", None, "secret access key"),
            (ID, "line\nbreak", None, "secret access key"),
            (ID, SECRET, Some(""), "session token"),
            (ID, SECRET, Some("tok\r\nInjected: yes"), "session token"),
        ] {
            let error = Credentials::new(id, secret(key), token.map(secret)).unwrap_err();
            let text = error.to_string();
            assert!(text.contains(field), "{text}");
            assert!(key.is_empty() || !text.contains(key), "{text}");
        }
    }

    #[test]
    fn stored_form_round_trips_through_toml_and_refuses_unknown_keys() {
        for token in [None, Some(secret(TOKEN))] {
            let credentials = Credentials::new(ID, secret(SECRET), token).unwrap();
            let stored = credentials.to_toml();
            assert!(stored.contains("access-key-id") && stored.contains("secret-access-key"));
            assert_eq!(
                stored.contains("session-token"),
                credentials.is_temporary(),
                "{}",
                stored.as_str()
            );
            let back = Credentials::from_toml(&stored).unwrap();
            assert_eq!(back.access_key_id, ID);
            assert_eq!(back.secret_access_key.as_str(), SECRET);
            assert_eq!(
                back.session_token.as_deref().map(String::as_str),
                credentials.session_token.as_deref().map(String::as_str)
            );
        }
        let unknown =
            format!("access-key-id = \"{ID}\"\nsecret-access-key = \"{SECRET}\"\nregion = \"x\"\n");
        let error = Credentials::from_toml(&unknown).unwrap_err().to_string();
        assert!(error.contains("region"), "{error}");
        assert!(!error.contains(SECRET), "{error}");
        let invalid = format!("access-key-id = \"bad id\"\nsecret-access-key = \"{SECRET}\"\n");
        let error = Credentials::from_toml(&invalid).unwrap_err().to_string();
        assert!(error.contains("access key id"), "{error}");
        let broken = format!("access-key-id = \"{ID}\"\nsecret-access-key = \"{SECRET}\n");
        let error = Credentials::from_toml(&broken).unwrap_err().to_string();
        assert!(
            !error.contains(SECRET),
            "the parser's quote of the line is dropped: {error}"
        );
        // JSON, through serde, is the same shape.
        let json =
            serde_json::to_string(&Credentials::new(ID, secret(SECRET), None).unwrap()).unwrap();
        assert_eq!(
            json,
            format!("{{\"access-key-id\":\"{ID}\",\"secret-access-key\":\"{SECRET}\"}}")
        );
    }

    #[test]
    fn environment_variables_with_an_optional_token() {
        let env = |pairs: &[(&str, &str)]| {
            let map: HashMap<String, OsString> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), OsString::from(v)))
                .collect();
            move |name: &str| map.get(name).cloned()
        };
        let long_term = from_variables(env(&[
            (ENV_ACCESS_KEY_ID, ID),
            (ENV_SECRET_ACCESS_KEY, SECRET),
            (ENV_SESSION_TOKEN, ""),
        ]))
        .unwrap();
        assert!(!long_term.is_temporary());
        let temporary = from_variables(env(&[
            (ENV_ACCESS_KEY_ID, ID),
            (ENV_SECRET_ACCESS_KEY, SECRET),
            (ENV_SESSION_TOKEN, TOKEN),
        ]))
        .unwrap();
        assert_eq!(temporary.session_token.unwrap().as_str(), TOKEN);
        let missing = from_variables(env(&[(ENV_ACCESS_KEY_ID, ID)])).unwrap_err();
        assert!(
            matches!(missing, CredentialsError::MissingVariable { variable } if variable == ENV_SECRET_ACCESS_KEY),
            "{missing}"
        );
        let empty = from_variables(env(&[
            (ENV_ACCESS_KEY_ID, ""),
            (ENV_SECRET_ACCESS_KEY, SECRET),
        ]))
        .unwrap_err();
        assert!(empty.to_string().contains(ENV_ACCESS_KEY_ID), "{empty}");
    }

    fn profile_file(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    #[test]
    fn profile_file_in_the_aws_cli_format() {
        let file = profile_file(&format!(
            "# comment\n\
             [default]\n\
             aws_access_key_id = AKIADEFAULT00000\n\
             aws_secret_access_key = other\n\
             \n\
             ; another comment\n\
             [palisade]\n\
             AWS_Access_Key_ID={ID}\n\
             aws_secret_access_key : {SECRET}\n\
             aws_session_token = {TOKEN}\n\
             region = eu-west-1\n\
             s3 =\n    max_concurrent_requests = 2\n\
             [old]\n\
             aws_access_key_id = {ID}\n\
             aws_secret_access_key = {SECRET}\n\
             aws_security_token = {TOKEN}\n"
        ));
        let credentials = Credentials::from_profile_file(file.path(), "palisade").unwrap();
        assert_eq!(credentials.access_key_id, ID);
        assert_eq!(credentials.secret_access_key.as_str(), SECRET);
        assert_eq!(credentials.session_token.unwrap().as_str(), TOKEN);
        let default = Credentials::from_profile_file(file.path(), "default").unwrap();
        assert_eq!(
            (default.access_key_id.as_str(), default.is_temporary()),
            ("AKIADEFAULT00000", false)
        );
        let old = Credentials::from_profile_file(file.path(), "old").unwrap();
        assert!(old.is_temporary());

        let missing = Credentials::from_profile_file(file.path(), "nope").unwrap_err();
        assert!(
            matches!(missing, CredentialsError::ProfileNotFound { .. }),
            "{missing}"
        );
        assert!(missing.to_string().contains("[nope]"), "{missing}");
    }

    #[test]
    fn profile_file_errors_name_the_line_and_never_the_secret() {
        for (text, line, says) in [
            (
                format!("[p]\naws_access_key_id = {ID}\naws_access_key_id = {ID}\n"),
                3,
                "twice",
            ),
            (format!("[p]\naws_access_key_id = {ID}\n[p]\n"), 3, "twice"),
            (
                format!("aws_secret_access_key = {SECRET}\n"),
                1,
                "before any",
            ),
            ("[p\n".to_string(), 1, "without `]`"),
            (format!("[p]\n{SECRET}\n"), 2, "key = value"),
            (
                format!("[p]\naws_secret_access_key = {SECRET}\n  more\n"),
                3,
                "continued",
            ),
        ] {
            let file = profile_file(&text);
            let error = Credentials::from_profile_file(file.path(), "p").unwrap_err();
            let CredentialsError::ProfileSyntax { line: at, .. } = &error else {
                panic!("{text:?}: {error}");
            };
            assert_eq!(*at, line, "{error}");
            let shown = error.to_string();
            assert!(shown.contains(says), "{shown}");
            assert!(!shown.contains(SECRET), "{shown}");
        }
        let file = profile_file(&format!("[p]\naws_access_key_id = {ID}\n"));
        let error = Credentials::from_profile_file(file.path(), "p").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("aws_secret_access_key is missing"),
            "{error}"
        );
        let error =
            Credentials::from_profile_file(Path::new("/nonexistent/credentials"), "p").unwrap_err();
        assert!(
            error.to_string().contains("/nonexistent/credentials"),
            "{error}"
        );
    }
}
