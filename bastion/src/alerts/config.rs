//! The `[alerts]` table of bastion.toml: parsed raw (by [`crate::config`],
//! which embeds [`RawAlerts`]), then validated here into [`AlertsConfig`].
//!
//! ```toml
//! [alerts]
//! source = "bastion-b1"        # default: this host's name
//! repeat-interval = "4h"       # re-send a firing alert this often
//! max-per-hour = 30            # per sink; firing and repeat messages
//! send-resolved = true
//! timeout = "10s"              # one HTTP request
//!
//! [[alerts.sink]]
//! kind = "slack"               # slack | discord | telegram | pagerduty | webhook
//! url-file = "/etc/palisade-bastion/slack-webhook"   # or url = "https://hooks.slack.com/…"
//! ```
//!
//! Secrets (a webhook URL, a bot token, a routing key) are given inline or
//! as a `*-file` (mode 0600 or stricter, one line). They are held in
//! [`Secret`], whose `Debug` prints `REDACTED`, and never logged: sinks
//! are named in logs by `name` and `kind` only. A file is opened by
//! validation only when the caller asks for it ([`SecretFiles::Check`],
//! for `run` and `check-config`), checked and dropped again; the daemon
//! reads it anew at start ([`SecretSource::load`]).
//!
//! URLs must be `https`, except on a loopback host (`127.0.0.0/8`, `::1`,
//! `localhost`), where `http` is allowed: a local relay, an SSH forward, or
//! a test receiver. Nothing here opens a connection.

use std::fmt;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;
use zeroize::Zeroizing;

/// Default `repeat-interval`.
pub const DEFAULT_REPEAT_INTERVAL: Duration = Duration::from_secs(4 * 3600);
/// Default `max-per-hour`.
pub const DEFAULT_MAX_PER_HOUR: u32 = 30;
/// Default `timeout` of one HTTP request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Telegram's Bot API, the default `api-url` of a telegram sink.
pub const TELEGRAM_API_URL: &str = "https://api.telegram.org";
/// PagerDuty's Events API v2 host, the default `api-url` of a pagerduty sink.
pub const PAGERDUTY_API_URL: &str = "https://events.pagerduty.com";
/// Largest secret file read.
const MAX_SECRET_FILE_BYTES: u64 = 4096;
/// Bounds of `repeat-interval` (the short end is for tests).
const REPEAT_INTERVAL_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(7 * 24 * 3600));
/// Bounds of `timeout`.
const TIMEOUT_RANGE: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(120));
/// Bound of `max-per-hour`.
const MAX_PER_HOUR_LIMIT: u32 = 3600;

/// `[alerts]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawAlerts {
    source: Option<String>,
    repeat_interval: Option<String>,
    max_per_hour: Option<u32>,
    send_resolved: Option<bool>,
    timeout: Option<String>,
    #[serde(default)]
    sink: Vec<RawSink>,
}

/// One `[[alerts.sink]]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawSink {
    kind: Option<String>,
    name: Option<String>,
    url: Option<String>,
    url_file: Option<PathBuf>,
    token: Option<String>,
    token_file: Option<PathBuf>,
    routing_key: Option<String>,
    routing_key_file: Option<PathBuf>,
    chat_id: Option<String>,
    api_url: Option<String>,
    max_per_hour: Option<u32>,
    send_resolved: Option<bool>,
}

/// Whether validation opens the `*-file` secrets to check them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretFiles {
    Check,
    Skip,
}

/// A secret string: zeroized on drop, `REDACTED` in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(text: String) -> Secret {
        Secret(Zeroizing::new(text))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("REDACTED")
    }
}

/// Where a secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Inline(Secret),
    /// A file, mode 0600 or stricter, holding the secret on one line.
    File(PathBuf),
}

impl SecretSource {
    /// The secret (a file is read now).
    pub fn load(&self) -> Result<Secret, String> {
        match self {
            SecretSource::Inline(secret) => Ok(secret.clone()),
            SecretSource::File(path) => read_secret_file(path),
        }
    }
}

/// The services a sink can deliver to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkKind {
    /// Slack incoming webhook: `url`.
    Slack,
    /// Discord execute-webhook: `url`.
    Discord,
    /// Telegram Bot API `sendMessage`: `token`, `chat-id`, `api-url`.
    Telegram,
    /// PagerDuty Events API v2: `routing-key`, `api-url`.
    PagerDuty,
    /// Generic JSON webhook: `url`, optional `token` (a bearer token).
    Webhook,
}

impl SinkKind {
    pub const ALL: [SinkKind; 5] = [
        SinkKind::Slack,
        SinkKind::Discord,
        SinkKind::Telegram,
        SinkKind::PagerDuty,
        SinkKind::Webhook,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::Slack => "slack",
            SinkKind::Discord => "discord",
            SinkKind::Telegram => "telegram",
            SinkKind::PagerDuty => "pagerduty",
            SinkKind::Webhook => "webhook",
        }
    }

    fn parse(text: &str) -> Option<SinkKind> {
        SinkKind::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

impl fmt::Display for SinkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where and how one sink delivers; the secrets per kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkTarget {
    /// The webhook URL is the secret.
    Slack {
        url: SecretSource,
    },
    Discord {
        url: SecretSource,
    },
    Telegram {
        /// Base URL of the Bot API (not secret).
        api_url: Url,
        token: SecretSource,
        /// A numeric chat id or `@channelusername`.
        chat_id: String,
    },
    PagerDuty {
        /// Base URL of the Events API (not secret); `/v2/enqueue` is added.
        api_url: Url,
        routing_key: SecretSource,
    },
    Webhook {
        url: SecretSource,
        /// Sent as `Authorization: Bearer …` when set.
        token: Option<SecretSource>,
    },
}

impl SinkTarget {
    pub fn kind(&self) -> SinkKind {
        match self {
            SinkTarget::Slack { .. } => SinkKind::Slack,
            SinkTarget::Discord { .. } => SinkKind::Discord,
            SinkTarget::Telegram { .. } => SinkKind::Telegram,
            SinkTarget::PagerDuty { .. } => SinkKind::PagerDuty,
            SinkTarget::Webhook { .. } => SinkKind::Webhook,
        }
    }
}

/// One validated `[[alerts.sink]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkConfig {
    /// For logs (default: the kind, with the entry's number when a kind is
    /// used twice). Never a secret.
    pub name: String,
    pub target: SinkTarget,
    /// Firing and repeat messages sent per hour at most (resolve messages
    /// are not limited: there is at most one per firing).
    pub max_per_hour: u32,
    pub send_resolved: bool,
}

/// The validated `[alerts]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertsConfig {
    /// Names this bastion in every message and in PagerDuty's `source`.
    pub source: String,
    /// A firing alert is sent again at the first health check after this
    /// long.
    pub repeat_interval: Duration,
    /// Bound on one HTTP request, connecting included.
    pub timeout: Duration,
    pub sinks: Vec<SinkConfig>,
}

/// Validates `[alerts]`, reporting each problem as (key, reason); `None`
/// when the table is absent.
pub fn validate(
    raw: Option<RawAlerts>,
    secret_files: SecretFiles,
    report: &mut impl FnMut(String, String),
) -> Option<AlertsConfig> {
    let raw = raw?;
    let source = match raw.source {
        Some(source) if source.trim().is_empty() || source.chars().count() > 128 => {
            report(
                "alerts.source".into(),
                "must be 1 to 128 characters (a name for this bastion)".into(),
            );
            String::new()
        }
        Some(source) => source,
        None => nix::unistd::gethostname()
            .ok()
            .and_then(|name| name.into_string().ok())
            .unwrap_or_else(|| "palisade-bastion".into()),
    };
    let repeat_interval = duration(
        report,
        "alerts.repeat-interval",
        raw.repeat_interval.as_deref(),
        DEFAULT_REPEAT_INTERVAL,
        REPEAT_INTERVAL_RANGE,
    );
    let timeout = duration(
        report,
        "alerts.timeout",
        raw.timeout.as_deref(),
        DEFAULT_TIMEOUT,
        TIMEOUT_RANGE,
    );
    let default_max_per_hour = max_per_hour(report, "alerts.max-per-hour".into(), raw.max_per_hour)
        .unwrap_or(DEFAULT_MAX_PER_HOUR);
    let send_resolved = raw.send_resolved.unwrap_or(true);
    if raw.sink.is_empty() {
        report(
            "alerts.sink".into(),
            "[alerts] needs at least one [[alerts.sink]] (kind = slack, discord, telegram, \
             pagerduty or webhook)"
                .into(),
        );
    }
    let kinds: Vec<Option<SinkKind>> = raw
        .sink
        .iter()
        .map(|sink| sink.kind.as_deref().and_then(SinkKind::parse))
        .collect();
    let mut sinks = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for (index, sink) in raw.sink.into_iter().enumerate() {
        let number = index + 1;
        let key = |field: &str| format!("alerts.sink[{number}].{field}");
        let kind = match sink.kind.as_deref() {
            None => {
                report(
                    key("kind"),
                    "is required: slack, discord, telegram, pagerduty or webhook".into(),
                );
                None
            }
            Some(text) => match SinkKind::parse(text) {
                Some(kind) => Some(kind),
                None => {
                    report(
                        key("kind"),
                        format!(
                            "unknown kind {text:?}: use slack, discord, telegram, pagerduty or \
                             webhook"
                        ),
                    );
                    None
                }
            },
        };
        let name = match sink.name {
            Some(name) => {
                if name.is_empty()
                    || name.len() > 64
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
                {
                    report(
                        key("name"),
                        format!(
                            "{name:?} must be 1 to 64 letters, digits, '-', '_' or '.' \
                             (it names the sink in logs)"
                        ),
                    );
                }
                name
            }
            None => match kind {
                Some(kind) if kinds.iter().filter(|k| **k == Some(kind)).count() > 1 => {
                    format!("{kind}-{number}")
                }
                Some(kind) => kind.to_string(),
                None => format!("sink-{number}"),
            },
        };
        if names.contains(&name) {
            report(
                key("name"),
                format!("{name:?} is already used by another sink"),
            );
        }
        names.push(name.clone());
        let sink_max = max_per_hour(report, key("max-per-hour"), sink.max_per_hour);
        let Some(kind) = kind else { continue };
        let secret = |report: &mut dyn FnMut(String, String),
                      field: &str,
                      inline: Option<String>,
                      file: Option<PathBuf>,
                      required: bool,
                      check: &dyn Fn(&str) -> Option<String>|
         -> Option<SecretSource> {
            secret_setting(
                report,
                &key(field),
                inline,
                file,
                required,
                secret_files,
                check,
            )
        };
        let allowed = |field: &str, present: bool, report: &mut dyn FnMut(String, String)| {
            if present {
                report(key(field), format!("is not used by a {kind} sink"));
            }
        };
        let url_check = |text: &str| url_problem(text).err();
        let plain = |text: &str| {
            if text.trim().is_empty() || text.chars().any(char::is_whitespace) {
                Some("must be one word without spaces".to_string())
            } else {
                None
            }
        };
        let target = match kind {
            SinkKind::Slack | SinkKind::Discord => {
                allowed(
                    "token",
                    sink.token.is_some() || sink.token_file.is_some(),
                    report,
                );
                allowed(
                    "routing-key",
                    sink.routing_key.is_some() || sink.routing_key_file.is_some(),
                    report,
                );
                allowed("chat-id", sink.chat_id.is_some(), report);
                allowed("api-url", sink.api_url.is_some(), report);
                secret(report, "url", sink.url, sink.url_file, true, &url_check).map(|url| {
                    if kind == SinkKind::Slack {
                        SinkTarget::Slack { url }
                    } else {
                        SinkTarget::Discord { url }
                    }
                })
            }
            SinkKind::Webhook => {
                allowed(
                    "routing-key",
                    sink.routing_key.is_some() || sink.routing_key_file.is_some(),
                    report,
                );
                allowed("chat-id", sink.chat_id.is_some(), report);
                allowed("api-url", sink.api_url.is_some(), report);
                let url = secret(report, "url", sink.url, sink.url_file, true, &url_check);
                let token = secret(report, "token", sink.token, sink.token_file, false, &plain);
                url.map(|url| SinkTarget::Webhook { url, token })
            }
            SinkKind::Telegram => {
                allowed("url", sink.url.is_some() || sink.url_file.is_some(), report);
                allowed(
                    "routing-key",
                    sink.routing_key.is_some() || sink.routing_key_file.is_some(),
                    report,
                );
                let token = secret(report, "token", sink.token, sink.token_file, true, &plain);
                let chat_id = match sink.chat_id {
                    Some(id) if plain(&id).is_none() => Some(id),
                    Some(_) => {
                        report(
                            key("chat-id"),
                            "must be a numeric chat id or @channelusername".into(),
                        );
                        None
                    }
                    None => {
                        report(
                            key("chat-id"),
                            "is required: the chat the bot writes to (a numeric id or \
                             @channelusername)"
                                .into(),
                        );
                        None
                    }
                };
                let api_url = api_url(report, key("api-url"), sink.api_url, TELEGRAM_API_URL);
                match (token, chat_id, api_url) {
                    (Some(token), Some(chat_id), Some(api_url)) => Some(SinkTarget::Telegram {
                        api_url,
                        token,
                        chat_id,
                    }),
                    _ => None,
                }
            }
            SinkKind::PagerDuty => {
                allowed("url", sink.url.is_some() || sink.url_file.is_some(), report);
                allowed(
                    "token",
                    sink.token.is_some() || sink.token_file.is_some(),
                    report,
                );
                allowed("chat-id", sink.chat_id.is_some(), report);
                let routing_key = secret(
                    report,
                    "routing-key",
                    sink.routing_key,
                    sink.routing_key_file,
                    true,
                    &plain,
                );
                let api_url = api_url(report, key("api-url"), sink.api_url, PAGERDUTY_API_URL);
                match (routing_key, api_url) {
                    (Some(routing_key), Some(api_url)) => Some(SinkTarget::PagerDuty {
                        api_url,
                        routing_key,
                    }),
                    _ => None,
                }
            }
        };
        if let Some(target) = target {
            sinks.push(SinkConfig {
                name,
                target,
                max_per_hour: sink_max.unwrap_or(default_max_per_hour),
                send_resolved: sink.send_resolved.unwrap_or(send_resolved),
            });
        }
    }
    Some(AlertsConfig {
        source,
        repeat_interval,
        timeout,
        sinks,
    })
}

fn max_per_hour(
    report: &mut impl FnMut(String, String),
    key: String,
    value: Option<u32>,
) -> Option<u32> {
    match value {
        Some(max) if max == 0 || max > MAX_PER_HOUR_LIMIT => {
            report(
                key,
                format!("{max} must be between 1 and {MAX_PER_HOUR_LIMIT}"),
            );
            None
        }
        other => other,
    }
}

/// A `*` / `*-file` pair: exactly one of them (when `required`), the
/// file's content checked with `SecretFiles::Check`, the value with
/// `check`.
fn secret_setting(
    report: &mut dyn FnMut(String, String),
    key: &str,
    inline: Option<String>,
    file: Option<PathBuf>,
    required: bool,
    secret_files: SecretFiles,
    check: &dyn Fn(&str) -> Option<String>,
) -> Option<SecretSource> {
    let field = key.rsplit('.').next().unwrap_or(key);
    match (inline, file) {
        (Some(_), Some(_)) => {
            report(
                key.into(),
                format!("give either {field} or {field}-file, not both"),
            );
            None
        }
        (Some(text), None) => match check(&text) {
            Some(problem) => {
                // The value itself is a secret: never echoed.
                report(key.into(), problem);
                None
            }
            None => Some(SecretSource::Inline(Secret::new(text))),
        },
        (None, Some(path)) => {
            let file_key = format!("{key}-file");
            if !path.is_absolute() {
                report(
                    file_key,
                    format!("'{}' must be an absolute path", path.display()),
                );
                return None;
            }
            if secret_files == SecretFiles::Check {
                match read_secret_file(&path) {
                    Ok(secret) => {
                        if let Some(problem) = check(secret.expose()) {
                            report(file_key, format!("'{}': {problem}", path.display()));
                            return None;
                        }
                    }
                    Err(problem) => {
                        report(file_key, problem);
                        return None;
                    }
                }
            }
            Some(SecretSource::File(path))
        }
        (None, None) if required => {
            report(
                key.into(),
                format!("is required ({field} = \"…\" or {field}-file = \"/path\", mode 0600)"),
            );
            None
        }
        (None, None) => None,
    }
}

/// Reads a secret file: a regular file, no permission for group or
/// others, at most [`MAX_SECRET_FILE_BYTES`], one non-empty line.
pub fn read_secret_file(path: &Path) -> Result<Secret, String> {
    let shown = path.display();
    let file = std::fs::File::open(path).map_err(|error| format!("'{shown}': {error}"))?;
    let metadata = file
        .metadata()
        .map_err(|error| format!("'{shown}': {error}"))?;
    if !metadata.is_file() {
        return Err(format!("'{shown}' is not a regular file"));
    }
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "'{shown}' has mode {mode:04o}: a secret file must not be readable by group or \
             others (chmod 600)"
        ));
    }
    let mut text = Zeroizing::new(String::new());
    file.take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|error| format!("'{shown}': {error}"))?;
    if text.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(format!(
            "'{shown}' is longer than {MAX_SECRET_FILE_BYTES} bytes"
        ));
    }
    let line = text.trim_end_matches(['\n', '\r']);
    if line.is_empty() || line.contains('\n') {
        return Err(format!("'{shown}' must hold the secret on one line"));
    }
    Ok(Secret::new(line.to_string()))
}

/// A URL sinks may post to: `https`, or `http` on a loopback host; no
/// user name or password in it.
pub fn url_problem(text: &str) -> Result<Url, String> {
    let url = Url::parse(text.trim()).map_err(|error| format!("not a URL ({error})"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry a user name or password".into());
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err(
            "must be https (http is allowed only on a loopback host: 127.0.0.1, ::1, localhost)"
                .into(),
        ),
        other => Err(format!("scheme {other:?} is not https")),
    }
}

fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

fn api_url(
    report: &mut impl FnMut(String, String),
    key: String,
    text: Option<String>,
    default: &str,
) -> Option<Url> {
    let text = text.unwrap_or_else(|| default.to_string());
    match url_problem(&text) {
        // Not a secret: shown.
        Ok(url) if url.query().is_some() || url.fragment().is_some() => {
            report(key, format!("'{text}' must not have a query or fragment"));
            None
        }
        Ok(url) => Some(url),
        Err(problem) => {
            report(key, format!("'{text}': {problem}"));
            None
        }
    }
}

fn duration(
    report: &mut impl FnMut(String, String),
    key: &str,
    text: Option<&str>,
    default: Duration,
    (min, max): (Duration, Duration),
) -> Duration {
    let Some(text) = text else {
        return default;
    };
    match humantime::parse_duration(text.trim()) {
        Ok(value) if value < min || value > max => {
            report(
                key.into(),
                format!(
                    "'{text}' must be between {} and {}",
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                ),
            );
            default
        }
        Ok(value) => value,
        Err(error) => {
            report(
                key.into(),
                format!("'{text}' is not a duration ({error}; use e.g. 30m, 4h)"),
            );
            default
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, secret_files: SecretFiles) -> Result<AlertsConfig, Vec<String>> {
        #[derive(Deserialize)]
        struct Wrapper {
            alerts: RawAlerts,
        }
        let raw: Wrapper = toml::from_str(text).map_err(|e| vec![e.to_string()])?;
        let mut issues = Vec::new();
        let config = validate(Some(raw.alerts), secret_files, &mut |key, reason| {
            issues.push(format!("{key}: {reason}"))
        });
        if issues.is_empty() {
            Ok(config.unwrap())
        } else {
            Err(issues)
        }
    }

    #[test]
    fn a_full_table_is_read_with_defaults_and_overrides() {
        let config = parse(
            "[alerts]\nsource = \"b1\"\nmax-per-hour = 10\nsend-resolved = false\n\
             [[alerts.sink]]\nkind = \"slack\"\nurl = \"https://hooks.slack.com/services/T/B/X\"\n\
             [[alerts.sink]]\nkind = \"pagerduty\"\nrouting-key = \"abc\"\nmax-per-hour = 2\n\
             send-resolved = true\n\
             [[alerts.sink]]\nkind = \"telegram\"\ntoken = \"1:x\"\nchat-id = \"@ops\"\n\
             [[alerts.sink]]\nkind = \"webhook\"\nurl = \"http://[::1]:8080/hook\"\n\
             [[alerts.sink]]\nkind = \"webhook\"\nurl = \"http://localhost/hook\"\n",
            SecretFiles::Check,
        )
        .unwrap();
        assert_eq!(config.source, "b1");
        assert_eq!(config.repeat_interval, DEFAULT_REPEAT_INTERVAL);
        assert_eq!(config.timeout, DEFAULT_TIMEOUT);
        let names: Vec<&str> = config.sinks.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["slack", "pagerduty", "telegram", "webhook-4", "webhook-5"]
        );
        assert_eq!(
            (config.sinks[0].max_per_hour, config.sinks[0].send_resolved),
            (10, false)
        );
        assert_eq!(
            (config.sinks[1].max_per_hour, config.sinks[1].send_resolved),
            (2, true)
        );
        match &config.sinks[1].target {
            SinkTarget::PagerDuty { api_url, .. } => {
                assert_eq!(api_url.as_str(), "https://events.pagerduty.com/")
            }
            other => panic!("{other:?}"),
        }
        match &config.sinks[2].target {
            SinkTarget::Telegram { api_url, .. } => {
                assert_eq!(api_url.as_str(), "https://api.telegram.org/")
            }
            other => panic!("{other:?}"),
        }
        let shown = format!("{config:?}");
        assert!(!shown.contains("services/T/B/X"), "{shown}");
        assert!(
            !shown.contains("1:x") && !shown.contains("\"abc\""),
            "{shown}"
        );
    }

    #[test]
    fn urls_must_be_https_unless_on_loopback() {
        // (url, accepted)
        let rows = [
            ("https://hooks.slack.com/services/x", true),
            ("http://127.0.0.1:9/x", true),
            ("http://127.8.0.1/x", true),
            ("http://[::1]/x", true),
            ("http://LOCALHOST/x", true),
            ("http://10.0.0.1/x", false),
            ("http://hooks.slack.com/x", false),
            ("http://localhost.example.com/x", false),
            ("https://user:pw@example.com/x", false),
            ("file:///etc/passwd", false),
            ("not a url", false),
        ];
        for (url, accepted) in rows {
            assert_eq!(url_problem(url).is_ok(), accepted, "{url}");
        }
    }

    #[test]
    fn secret_files_are_checked_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good");
        std::fs::write(&good, "https://hooks.slack.com/services/T/B/X\n").unwrap();
        std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o600)).unwrap();
        let open = dir.path().join("open");
        std::fs::write(&open, "https://hooks.slack.com/services/T/B/X\n").unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o640)).unwrap();
        let bad_url = dir.path().join("bad-url");
        std::fs::write(&bad_url, "http://hooks.slack.com/SECRETPATH\n").unwrap();
        std::fs::set_permissions(&bad_url, std::fs::Permissions::from_mode(0o600)).unwrap();
        let table = |path: &Path| {
            format!(
                "[alerts]\n[[alerts.sink]]\nkind = \"slack\"\nurl-file = \"{}\"\n",
                path.display()
            )
        };
        let config = parse(&table(&good), SecretFiles::Check).unwrap();
        match &config.sinks[0].target {
            SinkTarget::Slack { url } => assert_eq!(
                url.load().unwrap().expose(),
                "https://hooks.slack.com/services/T/B/X"
            ),
            other => panic!("{other:?}"),
        }
        let issues = parse(&table(&open), SecretFiles::Check).unwrap_err();
        assert!(issues[0].contains("has mode 0640"), "{issues:?}");
        let issues = parse(&table(&bad_url), SecretFiles::Check).unwrap_err();
        assert!(issues[0].contains("must be https"), "{issues:?}");
        assert!(!issues[0].contains("SECRETPATH"), "{issues:?}");
        let missing = dir.path().join("missing");
        assert!(parse(&table(&missing), SecretFiles::Check).is_err());
        // `status` and friends never open them.
        for path in [&open, &bad_url, &missing] {
            assert!(parse(&table(path), SecretFiles::Skip).is_ok(), "{path:?}");
        }
        let both = format!(
            "[alerts]\n[[alerts.sink]]\nkind = \"slack\"\nurl = \"https://x.example/\"\n\
             url-file = \"{}\"\n",
            good.display()
        );
        assert_eq!(
            parse(&both, SecretFiles::Check).unwrap_err(),
            ["alerts.sink[1].url: give either url or url-file, not both"]
        );
        let relative = "[alerts]\n[[alerts.sink]]\nkind = \"slack\"\nurl-file = \"hook\"\n";
        assert_eq!(
            parse(relative, SecretFiles::Skip).unwrap_err(),
            ["alerts.sink[1].url-file: 'hook' must be an absolute path"]
        );
        let none = "[alerts]\nsource = \"b1\"\n";
        assert!(parse(none, SecretFiles::Skip).unwrap_err()[0].starts_with("alerts.sink:"));
        let named = "[alerts]\n[[alerts.sink]]\nkind = \"webhook\"\nname = \"a b\"\n\
                     url = \"https://x.example/\"\n\
                     [[alerts.sink]]\nkind = \"webhook\"\nname = \"ops\"\nurl = \"https://x.example/\"\n\
                     [[alerts.sink]]\nkind = \"slack\"\nname = \"ops\"\nurl = \"https://x.example/\"\n";
        let issues = parse(named, SecretFiles::Skip).unwrap_err();
        assert_eq!(issues.len(), 2, "{issues:?}");
        assert!(issues[0].starts_with("alerts.sink[1].name: \"a b\" must be"));
        assert_eq!(
            issues[1],
            "alerts.sink[3].name: \"ops\" is already used by another sink"
        );
    }
}
