//! Each service's request for a [`Notification`]: pure, no I/O.
//!
//! The shapes, from each service's documentation:
//!
//! - Slack incoming webhook, `POST <url>` `{"text": …}`; `&`, `<`, `>` are
//!   escaped as Slack asks, so a problem text cannot ping `<!channel>`
//!   (<https://api.slack.com/messaging/webhooks>,
//!   <https://api.slack.com/reference/surfaces/formatting#escaping>).
//! - Discord execute-webhook, `POST <url>` `{"content": …}`, at most 2000
//!   characters; `allowed_mentions: {"parse": []}` so no text mentions
//!   anyone (<https://discord.com/developers/docs/resources/webhook#execute-webhook>).
//! - Telegram Bot API, `POST <api-url>/bot<token>/sendMessage`
//!   `{"chat_id": …, "text": …}`, text 1–4096 characters, no `parse_mode`
//!   (plain text) (<https://core.telegram.org/bots/api#sendmessage>).
//! - PagerDuty Events API v2, `POST <api-url>/v2/enqueue`
//!   `{"routing_key", "event_action": "trigger"|"resolve", "dedup_key",
//!   "payload": {"summary" (≤ 1024), "source", "severity", …}}`; the
//!   resolve event carries the trigger's `dedup_key` (≤ 255) and no payload
//!   (<https://developer.pagerduty.com/docs/events-API-v2/trigger-events/>,
//!   <https://developer.pagerduty.com/docs/events-API-v2/resolve-events/>).
//! - The generic webhook: `POST <url>` with [`webhook_body`], documented in
//!   docs/alerts.md.

use std::fmt;
use std::time::SystemTime;

use reqwest::Url;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::config::Secret;
use super::decision::{Event, Notification};

/// Discord's limit on `content`.
pub const DISCORD_MAX_CHARS: usize = 2000;
/// Telegram's limit on `text`.
pub const TELEGRAM_MAX_CHARS: usize = 4096;
/// Slack truncates `text` beyond 40,000 characters; messages stay far
/// below.
pub const SLACK_MAX_CHARS: usize = 4000;
/// PagerDuty's limit on `payload.summary`.
pub const PAGERDUTY_SUMMARY_MAX_CHARS: usize = 1024;
/// PagerDuty's limit on `dedup_key`.
pub const PAGERDUTY_DEDUP_KEY_MAX_CHARS: usize = 255;
/// The version of the generic webhook's body.
pub const WEBHOOK_VERSION: u32 = 1;

/// A sink's destination with its secrets loaded.
#[derive(Debug, Clone)]
pub enum Destination {
    Slack {
        url: Secret,
    },
    Discord {
        url: Secret,
    },
    Telegram {
        api_url: Url,
        token: Secret,
        chat_id: String,
    },
    PagerDuty {
        api_url: Url,
        routing_key: Secret,
    },
    Webhook {
        url: Secret,
        token: Option<Secret>,
    },
}

/// One HTTP request, ready to post. `url` may hold a secret (a webhook URL,
/// a bot token), and `body` PagerDuty's routing key: neither is ever
/// logged, and `Debug` shows neither.
#[derive(Clone)]
pub struct Prepared {
    pub url: Secret,
    /// JSON, zeroized on drop.
    pub body: Zeroizing<Vec<u8>>,
    /// `Authorization: Bearer …`.
    pub bearer: Option<Secret>,
}

impl Prepared {
    fn new(url: Secret, body: Value, bearer: Option<Secret>) -> Prepared {
        Prepared {
            url,
            body: Zeroizing::new(body.to_string().into_bytes()),
            bearer,
        }
    }

    /// The body as JSON.
    #[cfg(test)]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

impl fmt::Debug for Prepared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prepared")
            .field("url", &self.url)
            .field("body", &format_args!("{} bytes", self.body.len()))
            .field("bearer", &self.bearer)
            .finish()
    }
}

/// The request `destination` gets for `notification` from bastion
/// `source`.
pub fn prepare(destination: &Destination, notification: &Notification, source: &str) -> Prepared {
    let plain = |url: &Secret, body: Value| Prepared::new(url.clone(), body, None);
    match destination {
        Destination::Slack { url } => plain(
            url,
            json!({ "text": truncate(&slack_escape(&text(notification, source)), SLACK_MAX_CHARS) }),
        ),
        Destination::Discord { url } => plain(
            url,
            json!({
                "content": truncate(&text(notification, source), DISCORD_MAX_CHARS),
                "allowed_mentions": { "parse": [] },
            }),
        ),
        Destination::Telegram {
            api_url,
            token,
            chat_id,
        } => {
            let chat_id = match chat_id.parse::<i64>() {
                Ok(number) => json!(number),
                Err(_) => json!(chat_id),
            };
            Prepared::new(
                Secret::new(format!(
                    "{}/bot{}/sendMessage",
                    api_url.as_str().trim_end_matches('/'),
                    token.expose()
                )),
                json!({
                    "chat_id": chat_id,
                    "text": truncate(&text(notification, source), TELEGRAM_MAX_CHARS),
                    "disable_web_page_preview": true,
                }),
                None,
            )
        }
        Destination::PagerDuty {
            api_url,
            routing_key,
        } => Prepared::new(
            Secret::new(format!(
                "{}/v2/enqueue",
                api_url.as_str().trim_end_matches('/')
            )),
            pagerduty_body(routing_key, notification, source),
            None,
        ),
        Destination::Webhook { url, token } => Prepared::new(
            url.clone(),
            webhook_body(notification, source),
            token.clone(),
        ),
    }
}

/// The one-message text of the chat sinks, e.g.
/// `[FIRING] val-a (bastion b1): unreachable: tunnel down (stale socket) — critical, since 2026-12-07T08:00:00Z`.
pub fn text(notification: &Notification, source: &str) -> String {
    let n = notification;
    let since = rfc3339(n.since);
    match n.event {
        Event::Firing => format!(
            "[FIRING] {} (bastion {source}): {} — {}, since {since}",
            n.validator,
            n.detail,
            n.severity.as_str()
        ),
        Event::Repeat => format!(
            "[STILL FIRING] {} (bastion {source}): {} — {}, since {since}",
            n.validator,
            n.detail,
            n.severity.as_str()
        ),
        Event::Resolved => format!(
            "[RESOLVED] {} (bastion {source}): {} — was: {} (lasted {})",
            n.validator,
            n.alert,
            n.detail,
            humantime::format_duration(std::time::Duration::from_secs(
                n.at.duration_since(n.since).unwrap_or_default().as_secs()
            ))
        ),
    }
}

/// Stable per bastion, validator and alert: PagerDuty's `dedup_key` and
/// the webhook's `key`.
pub fn dedup_key(notification: &Notification, source: &str) -> String {
    truncate(
        &format!(
            "palisade/{source}/{}/{}",
            notification.validator, notification.alert
        ),
        PAGERDUTY_DEDUP_KEY_MAX_CHARS,
    )
}

fn pagerduty_body(routing_key: &Secret, notification: &Notification, source: &str) -> Value {
    let dedup_key = dedup_key(notification, source);
    match notification.event {
        Event::Resolved => json!({
            "routing_key": routing_key.expose(),
            "event_action": "resolve",
            "dedup_key": dedup_key,
        }),
        Event::Firing | Event::Repeat => json!({
            "routing_key": routing_key.expose(),
            "event_action": "trigger",
            "dedup_key": dedup_key,
            "payload": {
                "summary": truncate(
                    &format!("{}: {}", notification.validator, notification.detail),
                    PAGERDUTY_SUMMARY_MAX_CHARS,
                ),
                "source": source,
                "severity": notification.severity.as_str(),
                "timestamp": rfc3339(notification.at),
                "component": notification.validator,
                "class": notification.alert.to_string(),
                "custom_details": {
                    "since": rfc3339(notification.since),
                    "repeat": notification.event == Event::Repeat,
                },
            },
        }),
    }
}

/// The generic webhook's body (version [`WEBHOOK_VERSION`]).
pub fn webhook_body(notification: &Notification, source: &str) -> Value {
    let n = notification;
    json!({
        "version": WEBHOOK_VERSION,
        "status": match n.event {
            Event::Resolved => "resolved",
            Event::Firing | Event::Repeat => "firing",
        },
        "repeat": n.event == Event::Repeat,
        "key": dedup_key(n, source),
        "bastion": source,
        "validator": n.validator,
        "alert": n.alert.to_string(),
        "severity": n.severity.as_str(),
        "summary": text(n, source),
        "detail": n.detail,
        "since": rfc3339(n.since),
        "at": rfc3339(n.at),
    })
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time.max(SystemTime::UNIX_EPOCH)).to_string()
}

fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// At most `max` characters; a cut text ends with `…`.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::decision::{AlertName, Severity};
    use std::time::Duration;

    fn notification(event: Event, detail: &str) -> Notification {
        Notification {
            event,
            validator: "val-a".into(),
            alert: AlertName::Unreachable,
            severity: Severity::Critical,
            detail: detail.into(),
            since: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_125),
        }
    }

    #[test]
    fn texts_read_well() {
        let firing = notification(Event::Firing, "unreachable: tunnel down (stale socket)");
        assert_eq!(
            text(&firing, "b1"),
            "[FIRING] val-a (bastion b1): unreachable: tunnel down (stale socket) — critical, \
             since 2023-11-14T22:13:20Z"
        );
        let resolved = notification(Event::Resolved, "unreachable: tunnel down (stale socket)");
        assert_eq!(
            text(&resolved, "b1"),
            "[RESOLVED] val-a (bastion b1): unreachable — was: unreachable: tunnel down \
             (stale socket) (lasted 2m 5s)"
        );
    }

    #[test]
    fn limits_and_escapes_are_applied() {
        let long = notification(Event::Firing, &format!("<!channel> & {}", "x".repeat(5000)));
        let discord = Destination::Discord {
            url: Secret::new("https://discord.invalid/api/webhooks/1/t".into()),
        };
        let body = prepare(&discord, &long, "b1").json();
        let content = body["content"].as_str().unwrap();
        assert_eq!(content.chars().count(), DISCORD_MAX_CHARS);
        assert!(content.ends_with('…'));
        assert_eq!(body["allowed_mentions"], json!({"parse": []}));

        let slack = Destination::Slack {
            url: Secret::new("https://hooks.slack.invalid/services/x".into()),
        };
        let text = prepare(&slack, &long, "b1").json()["text"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(text.contains("&lt;!channel&gt; &amp; xxx"), "{text}");
        assert!(!text.contains('<'));

        let telegram = Destination::Telegram {
            api_url: Url::parse("https://api.telegram.invalid/").unwrap(),
            token: Secret::new("123:abc".into()),
            chat_id: "-1001".into(),
        };
        let prepared = prepare(&telegram, &long, "b1");
        assert_eq!(
            prepared.url.expose(),
            "https://api.telegram.invalid/bot123:abc/sendMessage"
        );
        assert_eq!(prepared.json()["chat_id"], json!(-1001));
        assert_eq!(
            prepared.json()["text"].as_str().unwrap().chars().count(),
            TELEGRAM_MAX_CHARS
        );
        let channel = Destination::Telegram {
            api_url: Url::parse("https://api.telegram.invalid").unwrap(),
            token: Secret::new("123:abc".into()),
            chat_id: "@palisade_alerts".into(),
        };
        assert_eq!(
            prepare(&channel, &long, "b1").json()["chat_id"],
            json!("@palisade_alerts")
        );

        let pagerduty = Destination::PagerDuty {
            api_url: Url::parse("https://events.pagerduty.invalid").unwrap(),
            routing_key: Secret::new("R0UT1NG".into()),
        };
        let prepared = prepare(&pagerduty, &long, &"s".repeat(300));
        assert_eq!(
            prepared.url.expose(),
            "https://events.pagerduty.invalid/v2/enqueue"
        );
        let body = prepared.json();
        let summary = body["payload"]["summary"].as_str().unwrap();
        assert_eq!(summary.chars().count(), PAGERDUTY_SUMMARY_MAX_CHARS);
        let dedup = body["dedup_key"].as_str().unwrap();
        assert_eq!(dedup.chars().count(), PAGERDUTY_DEDUP_KEY_MAX_CHARS);
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let prepared = prepare(
            &Destination::Webhook {
                url: Secret::new("https://example.invalid/hook?token=s3cr3t".into()),
                token: Some(Secret::new("b34r3r".into())),
            },
            &notification(Event::Firing, "x"),
            "b1",
        );
        let shown = format!("{prepared:?}");
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("b34r3r"),
            "{shown}"
        );
        let pagerduty = prepare(
            &Destination::PagerDuty {
                api_url: Url::parse("https://events.pagerduty.invalid").unwrap(),
                routing_key: Secret::new("R0UT1NG".into()),
            },
            &notification(Event::Firing, "x"),
            "b1",
        );
        assert!(!format!("{pagerduty:?}").contains("R0UT1NG"));
        assert!(shown.contains("REDACTED"), "{shown}");
    }
}
