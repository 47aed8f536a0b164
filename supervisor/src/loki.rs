//! Optional push of log lines to a Grafana Loki endpoint (`[logs.loki]`, `docs/loki.md`),
//! typically reached through a tunnel forward on loopback. The log pipeline's segment writer
//! (`logs::writer`) hands it each record it writes into a segment, as a
//! `(timestamp, stream, line)` entry, with [`LokiSender::try_push_with`]; this module owns the
//! settings, the batching and the HTTP, nothing else (it calls no other module).
//!
//! - **Never blocks the caller**: entries go into a bounded queue with `try_send`; a full queue
//!   drops the entry and counts it ([`LokiStats::dropped_queue_full`]). gaiad's output must
//!   never wait on Loki (DESIGN invariant 5).
//! - **Batches**: a batch is sent when it holds `batch-lines` entries, or `batch-interval`
//!   after its first entry, whichever comes first.
//! - **Request**: `POST <url>` (the push endpoint, `…/loki/api/v1/push`) with
//!   `Content-Type: application/json` and the JSON form of Loki's push API,
//!   `{"streams":[{"stream":{LABELS},"values":[["<unix ns as a string>","<line>"],…]}]}`
//!   (<https://grafana.com/docs/loki/latest/reference/loki-http-api/#ingest-logs>): one stream
//!   per value of the `stream` label, each with the labels `validator`, `host`, `stream` and the
//!   configured extra labels, its entries sorted by time (stable). The protobuf+snappy form is
//!   not implemented.
//! - **Retries**: 429, 5xx, a timeout or a connection failure are retried (5 attempts in all)
//!   after `Retry-After` (delta-seconds, at most 5 min) or an exponential backoff (1 s doubling
//!   to 60 s) plus up to 50 % jitter; then, or on any other status, the batch is dropped,
//!   counted ([`LokiStats::dropped_after_failure`]) and logged. Each request is bounded by
//!   `timeout`. The URL may carry a tenant's credentials: it is never logged.
//!
//! Loki is not packaged for the test machines, so the tests check the exact request against a
//! local HTTP receiver (`palisade_testkit::http_receiver`).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use url::Url;

/// Default `batch-lines`.
pub const DEFAULT_BATCH_LINES: usize = 1000;
/// Default `batch-interval`.
pub const DEFAULT_BATCH_INTERVAL: Duration = Duration::from_secs(1);
/// Default `timeout` of one push.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `queue-lines`.
pub const DEFAULT_QUEUE_LINES: usize = 10_000;
/// The path of Loki's push API.
pub const PUSH_PATH: &str = "/loki/api/v1/push";
const BATCH_LINES_MAX: usize = 100_000;
const QUEUE_LINES_MAX: usize = 1_000_000;
const BATCH_INTERVAL_RANGE: (Duration, Duration) =
    (Duration::from_millis(10), Duration::from_secs(60));
const TIMEOUT_RANGE: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(120));
/// Labels the client sets itself.
const OWN_LABELS: [&str; 3] = ["validator", "host", "stream"];

/// `[logs.loki]` as written (to be embedded in the supervisor's `[logs]` table).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawLokiSettings {
    /// The push endpoint, e.g. `http://127.0.0.1:3100/loki/api/v1/push`.
    pub url: Option<String>,
    /// The `validator` label (default: the caller's validator name).
    pub validator: Option<String>,
    /// The `host` label (default: the host name).
    pub host: Option<String>,
    /// Extra labels on every stream.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub batch_lines: Option<usize>,
    pub batch_interval: Option<String>,
    pub timeout: Option<String>,
    pub queue_lines: Option<usize>,
}

/// The validated `[logs.loki]`.
#[derive(Clone, PartialEq, Eq)]
pub struct LokiSettings {
    /// The push endpoint: `https`, or `http` to a loopback host (a tunnel forward).
    pub url: Url,
    /// All labels but `stream`: `validator`, `host` and the extra ones.
    pub labels: BTreeMap<String, String>,
    /// Entries per push at most.
    pub batch_lines: usize,
    /// A batch is pushed this long after its first entry at the latest.
    pub batch_interval: Duration,
    /// Bound on one push, connecting included.
    pub timeout: Duration,
    /// Entries waiting at most; more are dropped and counted.
    pub queue_lines: usize,
}

impl fmt::Debug for LokiSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a tenant's credentials.
        f.debug_struct("LokiSettings")
            .field("url", &"REDACTED")
            .field("labels", &self.labels)
            .field("batch_lines", &self.batch_lines)
            .field("batch_interval", &self.batch_interval)
            .field("timeout", &self.timeout)
            .field("queue_lines", &self.queue_lines)
            .finish()
    }
}

/// One invalid value: the key (without the table's prefix) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LokiConfigIssue {
    pub key: String,
    pub reason: String,
}

impl RawLokiSettings {
    /// Validates every key, reporting all problems; `validator` and `host` are the defaults of
    /// those labels.
    pub fn validate(
        self,
        validator: &str,
        host: &str,
    ) -> Result<LokiSettings, Vec<LokiConfigIssue>> {
        let mut issues = Vec::new();
        let mut report = |key: &str, reason: String| {
            issues.push(LokiConfigIssue {
                key: key.into(),
                reason,
            })
        };
        let url = match self.url.as_deref().map(push_url) {
            Some(Ok(url)) => Some(url),
            Some(Err(reason)) => {
                report("url", reason);
                None
            }
            None => {
                report(
                    "url",
                    format!(
                        "is required: Loki's push endpoint, e.g. http://127.0.0.1:3100{PUSH_PATH}"
                    ),
                );
                None
            }
        };
        let mut labels = BTreeMap::new();
        for (name, value) in [
            (
                "validator",
                self.validator.unwrap_or_else(|| validator.to_string()),
            ),
            ("host", self.host.unwrap_or_else(|| host.to_string())),
        ] {
            if value.is_empty() {
                report(name, "must not be empty".into());
            }
            labels.insert(name.to_string(), value);
        }
        for (name, value) in self.labels {
            if OWN_LABELS.contains(&name.as_str()) {
                report(
                    &format!("labels.{name}"),
                    "is set by Palisade (use the validator and host keys)".into(),
                );
            } else if !label_name_ok(&name) {
                report(
                    &format!("labels.{name}"),
                    "is not a Loki label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)"
                        .into(),
                );
            } else if value.is_empty() {
                report(&format!("labels.{name}"), "must not be empty".into());
            } else {
                labels.insert(name, value);
            }
        }
        let mut count = |key: &str, value: Option<usize>, default: usize, max: usize| match value {
            Some(value) if value == 0 || value > max => {
                report(key, format!("{value} must be between 1 and {max}"));
                default
            }
            Some(value) => value,
            None => default,
        };
        let batch_lines = count(
            "batch-lines",
            self.batch_lines,
            DEFAULT_BATCH_LINES,
            BATCH_LINES_MAX,
        );
        let queue_lines = count(
            "queue-lines",
            self.queue_lines,
            DEFAULT_QUEUE_LINES,
            QUEUE_LINES_MAX,
        );
        let mut duration =
            |key: &str, text: Option<&str>, default: Duration, (min, max): (Duration, Duration)| {
                let Some(text) = text else { return default };
                match humantime::parse_duration(text.trim()) {
                    Ok(value) if value >= min && value <= max => value,
                    Ok(_) => {
                        report(
                            key,
                            format!(
                                "'{text}' must be between {} and {}",
                                humantime::format_duration(min),
                                humantime::format_duration(max)
                            ),
                        );
                        default
                    }
                    Err(error) => {
                        report(
                            key,
                            format!("'{text}' is not a duration ({error}; use e.g. 500ms, 2s)"),
                        );
                        default
                    }
                }
            };
        let batch_interval = duration(
            "batch-interval",
            self.batch_interval.as_deref(),
            DEFAULT_BATCH_INTERVAL,
            BATCH_INTERVAL_RANGE,
        );
        let timeout = duration(
            "timeout",
            self.timeout.as_deref(),
            DEFAULT_TIMEOUT,
            TIMEOUT_RANGE,
        );
        if queue_lines < batch_lines {
            report(
                "queue-lines",
                format!("{queue_lines} is less than batch-lines ({batch_lines})"),
            );
        }
        match url {
            Some(url) if issues.is_empty() => Ok(LokiSettings {
                url,
                labels,
                batch_lines,
                batch_interval,
                timeout,
                queue_lines,
            }),
            _ => Err(issues),
        }
    }
}

/// The push URL: `https`, or `http` to a loopback host; its path Loki's push path. Its text
/// is not repeated in errors (it may carry credentials).
fn push_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text.trim()).map_err(|error| format!("not a URL ({error})"))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(address)) => address.is_loopback(),
        Some(url::Host::Ipv6(address)) => address.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err(
                "must be https (http only to a loopback host, e.g. a tunnel forward on 127.0.0.1)"
                    .into(),
            );
        }
        other => return Err(format!("scheme {other:?} is not http(s)")),
    }
    if !url.path().ends_with(PUSH_PATH) {
        return Err(format!(
            "the path must end with {PUSH_PATH} (Loki's push API)"
        ));
    }
    Ok(url)
}

fn label_name_ok(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

/// One log line to push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LokiEntry {
    pub time: SystemTime,
    /// The `stream` label, e.g. `stdout`, `stderr`, `supervisor`.
    pub stream: String,
    pub line: String,
}

/// Counters of a running client.
#[derive(Debug, Default)]
pub struct LokiStats {
    /// Entries dropped because the queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Entries dropped with a batch that could not be delivered.
    pub dropped_after_failure: AtomicU64,
    /// Entries Loki accepted.
    pub pushed: AtomicU64,
}

/// The caller's end: never blocks.
#[derive(Debug, Clone)]
pub struct LokiSender {
    queue: mpsc::Sender<LokiEntry>,
    stats: Arc<LokiStats>,
}

impl LokiSender {
    /// Queues `entry`; false (and counted) when the queue is full or the client stopped.
    pub fn try_push(&self, entry: LokiEntry) -> bool {
        self.try_push_with(|| entry)
    }

    /// Queues the entry `make` builds, calling it only when there is room: under a flood a
    /// full queue costs a count, not an allocation. False (and counted) when the queue is
    /// full or the client stopped.
    pub fn try_push_with(&self, make: impl FnOnce() -> LokiEntry) -> bool {
        match self.queue.try_reserve() {
            Ok(permit) => {
                permit.send(make());
                true
            }
            Err(_) => {
                self.stats
                    .dropped_queue_full
                    .fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    pub fn stats(&self) -> &LokiStats {
        &self.stats
    }

    /// The counters, to keep after the sender is gone.
    pub fn shared_stats(&self) -> Arc<LokiStats> {
        Arc::clone(&self.stats)
    }
}

pub use palisade_daemon::retry::{RETRY_AFTER_MAX, RetryPolicy};

/// Starts the client: the sender for the log pipeline and the worker future to spawn (it
/// ends at `shutdown`, after one last bounded push of what it holds, or when every sender is
/// gone and the queue is drained).
pub fn start(
    settings: LokiSettings,
    policy: RetryPolicy,
    shutdown: CancellationToken,
) -> reqwest::Result<(LokiSender, impl std::future::Future<Output = ()> + Send)> {
    let client = reqwest::Client::builder()
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let (queue, receiver) = mpsc::channel(settings.queue_lines);
    let stats = Arc::new(LokiStats::default());
    let worker = run(
        settings,
        client,
        policy,
        receiver,
        Arc::clone(&stats),
        shutdown,
    );
    Ok((LokiSender { queue, stats }, worker))
}

async fn run(
    settings: LokiSettings,
    client: reqwest::Client,
    policy: RetryPolicy,
    mut queue: mpsc::Receiver<LokiEntry>,
    stats: Arc<LokiStats>,
    shutdown: CancellationToken,
) {
    let mut batch: Vec<LokiEntry> = Vec::with_capacity(settings.batch_lines);
    let mut deadline: Option<Instant> = None;
    loop {
        let flush_at = deadline;
        let (closed, stopping) = tokio::select! {
            _ = shutdown.cancelled() => (false, true),
            entry = queue.recv() => match entry {
                Some(entry) => {
                    if batch.is_empty() {
                        deadline = Some(Instant::now() + settings.batch_interval);
                    }
                    batch.push(entry);
                    if batch.len() < settings.batch_lines {
                        continue;
                    }
                    (false, false)
                }
                None => (true, false),
            },
            _ = async {
                match flush_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => (false, false),
        };
        if !batch.is_empty() {
            let body = push_body(&settings.labels, &batch);
            let lines = batch.len() as u64;
            batch.clear();
            deadline = None;
            // At shutdown, one attempt only.
            let policy = if stopping {
                RetryPolicy {
                    attempts: 1,
                    ..policy
                }
            } else {
                policy
            };
            let delivered = tokio::select! {
                delivered = push_with_retries(&client, &settings.url, &body, policy) => delivered,
                _ = shutdown.cancelled(), if !stopping => false,
            };
            if delivered {
                stats.pushed.fetch_add(lines, Ordering::Relaxed);
            } else {
                let total = stats
                    .dropped_after_failure
                    .fetch_add(lines, Ordering::Relaxed)
                    + lines;
                tracing::warn!(lines, dropped_total = total, "loki: batch dropped");
            }
        }
        if closed || stopping || shutdown.is_cancelled() {
            return;
        }
    }
}

/// Loki's JSON push body for `entries`: one stream per `stream` value (in order of first
/// appearance), each entry `["<unix ns>", line]`, sorted by time within a stream.
pub fn push_body(labels: &BTreeMap<String, String>, entries: &[LokiEntry]) -> Value {
    let mut order: Vec<&str> = Vec::new();
    let mut by_stream: BTreeMap<&str, Vec<&LokiEntry>> = BTreeMap::new();
    for entry in entries {
        if !by_stream.contains_key(entry.stream.as_str()) {
            order.push(&entry.stream);
        }
        by_stream.entry(&entry.stream).or_default().push(entry);
    }
    let streams: Vec<Value> = order
        .into_iter()
        .map(|stream| {
            let mut entries = by_stream.remove(stream).unwrap_or_default();
            entries.sort_by_key(|entry| entry.time);
            let mut stream_labels = labels.clone();
            stream_labels.insert("stream".into(), stream.to_string());
            let values: Vec<Value> = entries
                .iter()
                .map(|entry| json!([unix_nanos(entry.time).to_string(), entry.line]))
                .collect();
            json!({ "stream": stream_labels, "values": values })
        })
        .collect();
    json!({ "streams": streams })
}

fn unix_nanos(time: SystemTime) -> u128 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

/// What one push came to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Attempt {
    Delivered,
    Retry {
        why: String,
        retry_after: Option<Duration>,
    },
    Refused(String),
}

async fn push_with_retries(
    client: &reqwest::Client,
    url: &Url,
    body: &Value,
    policy: RetryPolicy,
) -> bool {
    let body = body.to_string();
    let mut failures = 0;
    loop {
        match push_once(client, url, &body).await {
            Attempt::Delivered => return true,
            Attempt::Refused(why) => {
                tracing::warn!(%why, "loki: push refused; not retried");
                return false;
            }
            Attempt::Retry { why, retry_after } => {
                failures += 1;
                if failures >= policy.attempts {
                    tracing::warn!(%why, attempts = failures, "loki: push failed; giving up");
                    return false;
                }
                let wait = policy.delay(failures, retry_after, rand::random::<f64>());
                tracing::info!(
                    %why,
                    retry_in = %humantime::format_duration(Duration::from_millis(wait.as_millis() as u64)),
                    "loki: push failed; retrying"
                );
                tokio::time::sleep(wait).await;
            }
        }
    }
}

async fn push_once(client: &reqwest::Client, url: &Url, body: &str) -> Attempt {
    let response = match client
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .send()
        .await
    {
        Ok(response) => response,
        Err(error) => {
            return Attempt::Retry {
                why: format!("request failed: {}", error.without_url()),
                retry_after: None,
            };
        }
    };
    let status = response.status();
    if status.is_success() {
        return Attempt::Delivered;
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(palisade_daemon::retry::parse_retry_after);
    let why = format!("HTTP {status}");
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        Attempt::Retry { why, retry_after }
    } else {
        Attempt::Refused(why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_testkit::http_receiver::{HttpReceiver, Reply};

    fn at(nanos: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos)
    }

    fn entry(nanos: u64, stream: &str, line: &str) -> LokiEntry {
        LokiEntry {
            time: at(nanos),
            stream: stream.into(),
            line: line.into(),
        }
    }

    fn settings(url: &str, batch_lines: usize, batch_interval: &str) -> LokiSettings {
        RawLokiSettings {
            url: Some(url.into()),
            labels: BTreeMap::from([("chain".to_string(), "cosmoshub-4".to_string())]),
            batch_lines: Some(batch_lines),
            batch_interval: Some(batch_interval.into()),
            timeout: Some("2s".into()),
            queue_lines: Some(100),
            ..RawLokiSettings::default()
        }
        .validate("val-a", "host-1")
        .unwrap()
    }

    /// Waits (up to 10 s) until `lines` were pushed.
    async fn wait_pushed(sender: &LokiSender, lines: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while sender.stats().pushed.load(Ordering::Relaxed) < lines {
            assert!(
                std::time::Instant::now() < deadline,
                "not {lines} pushed: {:?}",
                sender.stats()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    const FAST: RetryPolicy = RetryPolicy {
        attempts: 5,
        first: Duration::from_millis(50),
        max: Duration::from_millis(200),
    };

    #[tokio::test]
    async fn a_full_batch_is_pushed_in_lokis_json_shape() {
        let receiver = HttpReceiver::start().unwrap();
        let shutdown = CancellationToken::new();
        let (sender, worker) = start(
            settings(&receiver.url(PUSH_PATH), 3, "60s"),
            FAST,
            shutdown.clone(),
        )
        .unwrap();
        let task = tokio::spawn(worker);
        assert!(sender.try_push(entry(1_700_000_000_000_000_002, "stdout", "block 2")));
        assert!(sender.try_push(entry(1_700_000_000_000_000_005, "stderr", "warn \"x\"")));
        assert!(sender.try_push(entry(1_700_000_000_000_000_001, "stdout", "block 1")));
        let requests = tokio::task::spawn_blocking(move || {
            let found = receiver.wait_until("one push", Duration::from_secs(10), |r| !r.is_empty());
            (found, receiver)
        })
        .await
        .unwrap();
        let (found, receiver) = requests;
        let request = &found.unwrap()[0];
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, PUSH_PATH);
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(
            request.json(),
            json!({"streams": [
                {
                    "stream": {"chain": "cosmoshub-4", "host": "host-1", "stream": "stdout", "validator": "val-a"},
                    "values": [
                        ["1700000000000000001", "block 1"],
                        ["1700000000000000002", "block 2"],
                    ],
                },
                {
                    "stream": {"chain": "cosmoshub-4", "host": "host-1", "stream": "stderr", "validator": "val-a"},
                    "values": [["1700000000000000005", "warn \"x\""]],
                },
            ]})
        );
        // The receiver records a request before it answers: wait for the
        // worker to see the answer, or the cancel could win the race.
        wait_pushed(&sender, 3).await;
        shutdown.cancel();
        task.await.unwrap();
        assert_eq!(sender.stats().pushed.load(Ordering::Relaxed), 3);
        drop(receiver);
    }

    #[tokio::test]
    async fn a_partial_batch_goes_after_the_interval_and_a_500_is_retried() {
        let receiver = HttpReceiver::start().unwrap();
        receiver.reply_next(Reply::status(500));
        receiver.reply_next(Reply::status(429).with_header("Retry-After", "0"));
        let shutdown = CancellationToken::new();
        let (sender, worker) = start(
            settings(&receiver.url(PUSH_PATH), 100, "200ms"),
            FAST,
            shutdown.clone(),
        )
        .unwrap();
        let task = tokio::spawn(worker);
        let pushed_at = std::time::Instant::now();
        assert!(sender.try_push(entry(5, "supervisor", "started")));
        let (found, receiver) = tokio::task::spawn_blocking(move || {
            let found =
                receiver.wait_until("three attempts", Duration::from_secs(10), |r| r.len() >= 3);
            (found, receiver)
        })
        .await
        .unwrap();
        let requests = found.unwrap();
        assert!(
            requests[0].at.duration_since(pushed_at) >= Duration::from_millis(190),
            "sent before the batch interval"
        );
        assert_eq!(requests[0].body, requests[1].body);
        assert_eq!(requests[1].body, requests[2].body);
        assert!(requests[1].at - requests[0].at >= Duration::from_millis(50));
        wait_pushed(&sender, 1).await;
        shutdown.cancel();
        task.await.unwrap();
        assert_eq!(sender.stats().pushed.load(Ordering::Relaxed), 1);
        assert_eq!(
            sender.stats().dropped_after_failure.load(Ordering::Relaxed),
            0
        );
        drop(receiver);
    }

    #[tokio::test]
    async fn a_refused_batch_is_dropped_and_counted() {
        let receiver = HttpReceiver::start().unwrap();
        receiver.reply_next(Reply::status(400).with_body("entry out of order"));
        let shutdown = CancellationToken::new();
        let (sender, worker) = start(
            settings(&receiver.url(PUSH_PATH), 2, "60s"),
            FAST,
            shutdown.clone(),
        )
        .unwrap();
        let task = tokio::spawn(worker);
        sender.try_push(entry(1, "stdout", "a"));
        sender.try_push(entry(2, "stdout", "b"));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while sender.stats().dropped_after_failure.load(Ordering::Relaxed) < 2 {
            assert!(std::time::Instant::now() < deadline, "not dropped");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(receiver.requests().len(), 1, "a 400 is not retried");
        shutdown.cancel();
        task.await.unwrap();
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking() {
        let (queue, _receiver) = mpsc::channel(2);
        let sender = LokiSender {
            queue,
            stats: Arc::new(LokiStats::default()),
        };
        assert!(sender.try_push(entry(1, "stdout", "a")));
        assert!(sender.try_push(entry(2, "stdout", "b")));
        assert!(!sender.try_push(entry(3, "stdout", "c")));
        assert!(!sender.try_push(entry(4, "stdout", "d")));
        assert_eq!(sender.stats().dropped_queue_full.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn settings_are_validated_with_every_problem_named() {
        let good = RawLokiSettings {
            url: Some("http://127.0.0.1:3100/loki/api/v1/push".into()),
            ..RawLokiSettings::default()
        }
        .validate("val-a", "host-1")
        .unwrap();
        assert_eq!(good.batch_lines, DEFAULT_BATCH_LINES);
        assert_eq!(good.batch_interval, DEFAULT_BATCH_INTERVAL);
        assert_eq!(
            good.labels,
            BTreeMap::from([
                ("host".to_string(), "host-1".to_string()),
                ("validator".to_string(), "val-a".to_string()),
            ])
        );
        let with_secret = RawLokiSettings {
            url: Some("https://tenant:s3cr3t@logs.example/loki/api/v1/push".into()),
            ..RawLokiSettings::default()
        }
        .validate("val-a", "host-1")
        .unwrap();
        assert!(!format!("{with_secret:?}").contains("s3cr3t"));

        // (url, problem with the url)
        let urls = [
            ("http://10.0.0.5:3100/loki/api/v1/push", "must be https"),
            (
                "http://127.0.0.1:3100/",
                "the path must end with /loki/api/v1/push",
            ),
            ("ftp://127.0.0.1/loki/api/v1/push", "scheme \"ftp\""),
            ("nonsense", "not a URL"),
        ];
        for (url, problem) in urls {
            let issues = RawLokiSettings {
                url: Some(url.into()),
                ..RawLokiSettings::default()
            }
            .validate("val-a", "h")
            .unwrap_err();
            assert_eq!(issues.len(), 1, "{url}: {issues:?}");
            assert_eq!(issues[0].key, "url");
            assert!(issues[0].reason.contains(problem), "{url}: {issues:?}");
        }
        let issues = RawLokiSettings {
            url: None,
            labels: BTreeMap::from([
                ("stream".to_string(), "x".to_string()),
                ("9lives".to_string(), "x".to_string()),
                ("__name".to_string(), "x".to_string()),
            ]),
            batch_lines: Some(0),
            batch_interval: Some("soon".into()),
            timeout: Some("1h".into()),
            queue_lines: Some(10),
            ..RawLokiSettings::default()
        }
        .validate("val-a", "h")
        .unwrap_err();
        let keys: Vec<&str> = issues.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "url",
                "labels.9lives",
                "labels.__name",
                "labels.stream",
                "batch-lines",
                "batch-interval",
                "timeout",
                "queue-lines",
            ],
            "{issues:?}"
        );
        let unknown: Result<RawLokiSettings, _> = toml::from_str("url = \"x\"\nbatch = 3\n");
        assert!(
            unknown
                .unwrap_err()
                .to_string()
                .contains("unknown field `batch`")
        );
    }
}
