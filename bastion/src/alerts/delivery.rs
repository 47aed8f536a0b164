//! Posting prepared requests: the only part of the alerts that does HTTP.
//!
//! Each sink has one worker ([`deliver_loop`]) reading a bounded queue
//! ([`QUEUE_CAPACITY`]) that the reporter fills with `try_send` — a full
//! queue drops the message (counted and logged by the caller), so a slow
//! or dead service never holds up the health checks. Requests go one at a
//! time, in order, each bounded by the configured timeout (connecting
//! included), without following redirects.
//!
//! 2xx is delivered. 429, 5xx, a timeout or a connection failure are
//! retried up to [`RetryPolicy::attempts`] times in all, after
//! `Retry-After` (delta-seconds, or the JSON `retry_after` that Discord and
//! Telegram's Bot API put in a 429 body; at most [`RETRY_AFTER_MAX`]) or
//! else an exponential backoff with up to 50 % jitter. Any other status is
//! a refusal: logged with the status and the start of the body, not
//! retried. URLs are never logged (they hold secrets); reqwest's errors
//! are logged without theirs.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::payload::Prepared;
use palisade_client::peer_text::clean;

/// Messages waiting per sink.
pub const QUEUE_CAPACITY: usize = 64;
/// Bytes of an error answer kept for the log.
const ERROR_BODY_BYTES: usize = 300;
/// Bytes of an answer read at most.
const MAX_ANSWER_BYTES: usize = 16 * 1024;

pub use palisade_daemon::retry::{RETRY_AFTER_MAX, RetryPolicy};

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Delivered,
    /// Worth another try (after `retry_after` when the server said so).
    Retry {
        why: String,
        retry_after: Option<Duration>,
    },
    /// The service said no; trying again would not help.
    Refused(String),
}

/// Classify an answer: its status, `Retry-After` header and body.
pub fn classify(status: StatusCode, retry_after: Option<&str>, body: &[u8]) -> Attempt {
    if status.is_success() {
        return Attempt::Delivered;
    }
    let shown = {
        let text = String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY_BYTES)]);
        let text = clean(text.trim());
        if text.is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status}: {text}")
        }
    };
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        let retry_after = retry_after
            .and_then(palisade_daemon::retry::parse_retry_after)
            .or_else(|| body_retry_after(body));
        Attempt::Retry {
            why: shown,
            retry_after,
        }
    } else {
        Attempt::Refused(shown)
    }
}

/// `retry_after` in a JSON answer: Discord's top-level seconds (a float),
/// or Telegram's `parameters.retry_after`.
fn body_retry_after(body: &[u8]) -> Option<Duration> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let seconds = value
        .get("retry_after")
        .or_else(|| value.get("parameters")?.get("retry_after"))?
        .as_f64()?;
    (seconds.is_finite() && seconds >= 0.0)
        .then(|| Duration::from_secs_f64(seconds.min(RETRY_AFTER_MAX.as_secs_f64())))
}

/// The HTTP client of one sink: `timeout` per request, no redirects.
pub fn client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("palisade-bastion/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// One POST.
pub async fn attempt(client: &reqwest::Client, request: &Prepared) -> Attempt {
    let mut builder = client
        .post(request.url.expose())
        .header(CONTENT_TYPE, "application/json")
        .body(request.body.to_vec());
    if let Some(token) = &request.bearer {
        builder = builder.header(AUTHORIZATION, format!("Bearer {}", token.expose()));
    }
    let mut response = match builder.send().await {
        Ok(response) => response,
        Err(error) => {
            let kind = if error.is_timeout() {
                "timed out"
            } else {
                "failed"
            };
            return Attempt::Retry {
                why: format!("request {kind}: {}", error.without_url()),
                retry_after: None,
            };
        }
    };
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    let mut body = Vec::new();
    if !status.is_success() {
        while body.len() < MAX_ANSWER_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
            }
        }
    }
    classify(status, retry_after.as_deref(), &body)
}

/// Sends what arrives on `queue` until it closes or `shutdown`; `sink`
/// and `kind` name the sink in logs.
pub async fn deliver_loop(
    sink: String,
    kind: &'static str,
    client: reqwest::Client,
    policy: RetryPolicy,
    mut queue: mpsc::Receiver<Prepared>,
    shutdown: CancellationToken,
) {
    loop {
        let request = tokio::select! {
            _ = shutdown.cancelled() => return,
            request = queue.recv() => match request {
                Some(request) => request,
                None => return,
            },
        };
        let mut failures = 0;
        loop {
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => return,
                outcome = attempt(&client, &request) => outcome,
            };
            match outcome {
                Attempt::Delivered => {
                    tracing::debug!(sink = %sink, %kind, "alert delivered");
                    break;
                }
                Attempt::Refused(why) => {
                    tracing::warn!(sink = %sink, %kind, %why, "alert refused by the service; not retried");
                    break;
                }
                Attempt::Retry { why, retry_after } => {
                    failures += 1;
                    if failures >= policy.attempts {
                        tracing::warn!(
                            sink = %sink,
                            %kind,
                            %why,
                            attempts = failures,
                            "alert not delivered; giving up"
                        );
                        break;
                    }
                    let wait = policy.delay(failures, retry_after, rand::random::<f64>());
                    tracing::info!(
                        sink = %sink,
                        %kind,
                        %why,
                        retry_in = %humantime::format_duration(Duration::from_millis(wait.as_millis() as u64)),
                        "alert delivery failed; retrying"
                    );
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified() {
        let retry = |why: &str, after: Option<u64>| Attempt::Retry {
            why: why.into(),
            retry_after: after.map(Duration::from_secs),
        };
        // (status, Retry-After, body, outcome)
        let rows: Vec<(u16, Option<&str>, &str, Attempt)> = vec![
            (200, None, "", Attempt::Delivered),
            (202, None, "{\"status\":\"success\"}", Attempt::Delivered),
            (204, None, "", Attempt::Delivered),
            (500, None, "", retry("HTTP 500 Internal Server Error", None)),
            (
                503,
                Some("12"),
                "busy",
                retry("HTTP 503 Service Unavailable: busy", Some(12)),
            ),
            (
                429,
                None,
                "{\"ok\":false,\"parameters\":{\"retry_after\":3}}",
                retry(
                    "HTTP 429 Too Many Requests: {\"ok\":false,\"parameters\":{\"retry_after\":3}}",
                    Some(3),
                ),
            ),
            (
                429,
                Some("Wed, 21 Oct 2015 07:28:00 GMT"),
                "",
                retry("HTTP 429 Too Many Requests", None),
            ),
            (
                400,
                None,
                "invalid_payload\n",
                Attempt::Refused("HTTP 400 Bad Request: invalid_payload".into()),
            ),
            (
                404,
                None,
                "no\u{1b}[31m",
                Attempt::Refused("HTTP 404 Not Found: no\\u{1b}[31m".into()),
            ),
        ];
        for (status, retry_after, body, expected) in rows {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(
                classify(status, retry_after, body.as_bytes()),
                expected,
                "{status}"
            );
        }
        // Discord's float seconds.
        assert_eq!(
            body_retry_after(b"{\"message\":\"rate limited\",\"retry_after\":0.5}"),
            Some(Duration::from_millis(500))
        );
    }
}
