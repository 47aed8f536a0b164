//! Built-in alerts, for operators without a Prometheus stack: the
//! bastion's health checks of its validators, sent to Slack, Discord,
//! Telegram, PagerDuty (Events API v2) and generic JSON webhooks.
//!
//! - [`config`]: the `[alerts]` table and its secrets.
//! - [`decision`] (pure): which results fire, repeat and resolve which
//!   alert, and each sink's filter and rate limit.
//! - [`payload`] (pure): each service's request.
//! - [`delivery`]: the HTTP, one worker and bounded queue per sink.
//!
//! [`Alerter`] ties them together for the daemon's reporter, which calls
//! [`Alerter::observe`] with every probe result. Observing never waits: a
//! message goes to a sink's queue with `try_send`, and a full queue drops
//! it (counted and logged), so alerting can never slow the health checks.
//! Nothing here logs a URL, token or routing key.

pub mod config;
pub mod decision;
pub mod delivery;
pub mod payload;

use std::time::{Instant, SystemTime};

use anyhow::Context;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use self::config::{AlertsConfig, SinkKind, SinkTarget};
use self::decision::{Admission, AlertBook, Event, Findings, SinkGate};
use self::delivery::{QUEUE_CAPACITY, RetryPolicy};
use self::payload::{Destination, Prepared, prepare};
use crate::health_check::ProbeOutcome;

/// One configured sink, running.
struct Sink {
    name: String,
    kind: SinkKind,
    destination: Destination,
    gate: SinkGate,
    queue: mpsc::Sender<Prepared>,
    /// Messages dropped because the queue was full.
    queue_dropped: u64,
}

/// The alerts state of a running daemon.
pub struct Alerter {
    source: String,
    book: AlertBook,
    sinks: Vec<Sink>,
}

impl Alerter {
    /// Loads the sinks' secrets, and starts one delivery worker per sink in
    /// `tasks` (they stop at `shutdown`).
    pub fn start(
        config: &AlertsConfig,
        policy: RetryPolicy,
        tasks: &mut JoinSet<()>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Alerter> {
        let mut sinks = Vec::new();
        for sink in &config.sinks {
            let context = || format!("alerts sink {} ({})", sink.name, sink.target.kind());
            let destination = destination(&sink.target)
                .map_err(anyhow::Error::msg)
                .with_context(context)?;
            let client = delivery::client(config.timeout)
                .map_err(|error| anyhow::anyhow!("building the HTTP client: {error}"))
                .with_context(context)?;
            let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
            let kind = sink.target.kind();
            tasks.spawn(delivery::deliver_loop(
                sink.name.clone(),
                kind.as_str(),
                client,
                policy,
                receiver,
                shutdown.clone(),
            ));
            sinks.push(Sink {
                name: sink.name.clone(),
                kind,
                destination,
                gate: SinkGate::new(sink.max_per_hour, sink.send_resolved),
                queue: sender,
                queue_dropped: 0,
            });
        }
        Ok(Alerter {
            source: config.source.clone(),
            book: AlertBook::new(config.repeat_interval),
            sinks,
        })
    }

    /// Fold in one probe result of `validator` and queue what it causes.
    pub fn observe(
        &mut self,
        validator: &str,
        outcome: &ProbeOutcome,
        at: SystemTime,
        now: Instant,
    ) {
        let notifications = self
            .book
            .observe(validator, Findings::from_outcome(outcome), at, now);
        for notification in notifications {
            let event = match notification.event {
                Event::Firing => "firing",
                Event::Repeat => "repeat",
                Event::Resolved => "resolved",
            };
            tracing::info!(
                validator = %notification.validator,
                alert = %notification.alert,
                severity = notification.severity.as_str(),
                %event,
                "alert"
            );
            for sink in &mut self.sinks {
                match sink.gate.admit(notification.event, now) {
                    Admission::Send => {}
                    Admission::ResolvedNotWanted => continue,
                    Admission::RateLimited => {
                        tracing::warn!(
                            sink = %sink.name,
                            kind = %sink.kind,
                            validator = %notification.validator,
                            alert = %notification.alert,
                            dropped_total = sink.gate.dropped,
                            "alert dropped: the sink's max-per-hour is reached"
                        );
                        continue;
                    }
                }
                let request = prepare(&sink.destination, &notification, &self.source);
                if sink.queue.try_send(request).is_err() {
                    sink.queue_dropped += 1;
                    tracing::warn!(
                        sink = %sink.name,
                        kind = %sink.kind,
                        validator = %notification.validator,
                        alert = %notification.alert,
                        dropped_total = sink.queue_dropped,
                        "alert dropped: the sink's queue is full (the service is slow or down)"
                    );
                }
            }
        }
    }
}

/// The destination with its secrets read (a URL read from a file is
/// checked again: the file may have changed since the configuration was
/// loaded).
fn destination(target: &SinkTarget) -> Result<Destination, String> {
    let url = |source: &config::SecretSource| -> Result<config::Secret, String> {
        let secret = source.load()?;
        config::url_problem(secret.expose()).map_err(|problem| format!("url: {problem}"))?;
        Ok(secret)
    };
    Ok(match target {
        SinkTarget::Slack { url: source } => Destination::Slack { url: url(source)? },
        SinkTarget::Discord { url: source } => Destination::Discord { url: url(source)? },
        SinkTarget::Telegram {
            api_url,
            token,
            chat_id,
        } => Destination::Telegram {
            api_url: api_url.clone(),
            token: token.load()?,
            chat_id: chat_id.clone(),
        },
        SinkTarget::PagerDuty {
            api_url,
            routing_key,
        } => Destination::PagerDuty {
            api_url: api_url.clone(),
            routing_key: routing_key.load()?,
        },
        SinkTarget::Webhook { url: source, token } => Destination::Webhook {
            url: url(source)?,
            token: token.as_ref().map(|token| token.load()).transpose()?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::config::{SecretSource, SinkConfig};
    use crate::health_check::DownReason;
    use std::time::Duration;

    fn webhook(name: &str, url: SecretSource, max_per_hour: u32) -> SinkConfig {
        SinkConfig {
            name: name.into(),
            target: SinkTarget::Webhook { url, token: None },
            max_per_hour,
            send_resolved: true,
        }
    }

    fn alerts(sinks: Vec<SinkConfig>) -> AlertsConfig {
        AlertsConfig {
            source: "b1".into(),
            repeat_interval: Duration::from_secs(3600),
            timeout: Duration::from_secs(1),
            sinks,
        }
    }

    /// On a current-thread runtime the workers cannot run while `observe`
    /// does: exactly the queue's capacity is accepted, the rest dropped and
    /// counted, and `observe` returns without waiting for anyone.
    #[tokio::test]
    async fn a_full_queue_drops_and_counts_without_waiting() {
        let url = SecretSource::Inline(config::Secret::new("http://127.0.0.1:9/hook".into()));
        let mut tasks = JoinSet::new();
        let shutdown = CancellationToken::new();
        let mut alerter = Alerter::start(
            &alerts(vec![webhook("slow", url, 1000)]),
            RetryPolicy::default(),
            &mut tasks,
            &shutdown,
        )
        .unwrap();
        let down = ProbeOutcome::Down(DownReason::NoSocket);
        let now = Instant::now();
        for index in 0..QUEUE_CAPACITY + 36 {
            alerter.observe(&format!("val-{index}"), &down, SystemTime::now(), now);
        }
        assert_eq!(alerter.sinks[0].queue_dropped, 36);
        assert_eq!(alerter.sinks[0].gate.dropped, 0);
        shutdown.cancel();
        while tasks.join_next().await.is_some() {}
    }

    #[tokio::test]
    async fn an_unusable_secret_at_start_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let changed = dir.path().join("changed");
        std::fs::write(&changed, "http://hooks.example/SECRETPATH\n").unwrap();
        std::fs::set_permissions(
            &changed,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        // (file, expected start of the error, the message without the URL)
        for (path, expected) in [
            (&missing, "alerts sink hook (webhook): '"),
            (&changed, "alerts sink hook (webhook): url: must be https"),
        ] {
            let mut tasks = JoinSet::new();
            let error = Alerter::start(
                &alerts(vec![webhook("hook", SecretSource::File(path.clone()), 10)]),
                RetryPolicy::default(),
                &mut tasks,
                &CancellationToken::new(),
            )
            .err()
            .unwrap();
            let text = format!("{error:#}");
            assert!(text.starts_with(expected), "{text}");
            assert!(!text.contains("SECRETPATH"), "{text}");
        }
    }
}
