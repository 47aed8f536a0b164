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

/// The destination with its secrets read.
fn destination(target: &SinkTarget) -> Result<Destination, String> {
    Ok(match target {
        SinkTarget::Slack { url } => Destination::Slack { url: url.load()? },
        SinkTarget::Discord { url } => Destination::Discord { url: url.load()? },
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
        SinkTarget::Webhook { url, token } => Destination::Webhook {
            url: url.load()?,
            token: token.as_ref().map(|token| token.load()).transpose()?,
        },
    })
}
