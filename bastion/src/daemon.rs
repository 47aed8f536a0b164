//! `palisade-bastion run`: the backup store and the validators' health
//! checks in one process.
//!
//! Startup: bind the backup store (which refuses to displace a running
//! instance), write the initial status file, start one probe loop per
//! validator and the reporter, then tell systemd READY=1. Any failure
//! before READY is a startup error (exit 1) and leaves no socket behind.
//!
//! The reporter is the only owner of the health table: probe loops send it
//! their results over a bounded channel; it logs state changes (never a
//! routine success), rewrites the status file atomically after every
//! result, and keeps systemd's STATUS= current.
//!
//! Shutdown (SIGTERM or SIGINT): STOPPING=1, one cancellation token stops
//! the accept loop and the probes, the backup store drains for a few
//! seconds, the status file is removed, exit 0. A second signal stops
//! waiting for the drain.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, anyhow};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::alerts::Alerter;
use crate::alerts::delivery::RetryPolicy;
use crate::backup_store::BackupStoreServer;
use crate::config::{BastionConfig, HealthCheckOptions, Validator};
use crate::health_check::{self, Credentials, ProbeReport, Prober};
use crate::health_state::{Transition, ValidatorHealth, summary_line};
use crate::status_file::{self, StatusReport};
use palisade_daemon::metrics::MetricsServer;
use palisade_daemon::systemd::Notifier;

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(config: &BastionConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run_until_signal(config))
}

async fn run_until_signal(config: &BastionConfig) -> anyhow::Result<()> {
    // Handlers first, so a signal sent as soon as the socket appears is not
    // lost.
    let mut terminate = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let notifier = Notifier::from_env();
    let shutdown = CancellationToken::new();

    // Sinks first: an unreadable secret file stops the start before
    // anything is bound or written.
    let mut alert_tasks = JoinSet::new();
    let alerter = match &config.alerts {
        Some(alerts) => Some(Alerter::start(
            alerts,
            RetryPolicy::default(),
            &mut alert_tasks,
            &shutdown,
        )?),
        None => None,
    };
    let server = BackupStoreServer::bind(config, config.backups.clone())?;
    let mut reporter = Reporter::new(config, SystemTime::now(), notifier.clone());
    reporter.alerter = alerter;
    if let Err(error) = reporter.start().await {
        drop(server);
        let _ = std::fs::remove_file(&config.listen_socket);
        return Err(error);
    }
    if let Some(metrics) = &config.metrics {
        let registry = crate::metrics::registry(crate::metrics::BastionCollector {
            health: Arc::clone(&reporter.health),
            sessions: server.sessions(),
            backup_dir: config.backup_dir.clone(),
            validators: config.validators.iter().map(|v| v.name.clone()).collect(),
        });
        match MetricsServer::bind(metrics.listen, registry).await {
            Ok(endpoint) => {
                tracing::info!(address = %metrics.listen, "metrics endpoint listening (/metrics)");
                tokio::spawn(endpoint.serve(shutdown.clone()));
            }
            Err(error) => {
                drop(server);
                let _ = std::fs::remove_file(&config.listen_socket);
                let _ = std::fs::remove_file(&config.status_file);
                return Err(anyhow::Error::new(error).context(
                    "[metrics] listen (under systemd, the unit needs the drop-in \
                     packaging/systemd/palisade-bastion.dropins/10-metrics.conf: docs/metrics.md)",
                ));
            }
        }
    }
    let ready_status = summary_line(&reporter.table);

    let mut store_task = tokio::spawn(server.serve(shutdown.clone()));
    let (sender, receiver) = mpsc::channel(config.validators.len().max(1));
    let mut checks = JoinSet::new();
    let mut authenticated = 0;
    for (index, validator) in config.validators.iter().enumerate() {
        let credentials = credentials(config, validator);
        authenticated += usize::from(credentials.is_some());
        let prober = Prober::new(
            &validator.name,
            &validator.socket,
            config.health.timeout,
            credentials,
        );
        checks.spawn(health_check::check_loop(
            index,
            prober,
            config.health.interval,
            sender.clone(),
            shutdown.clone(),
        ));
    }
    drop(sender);
    // READY before the reporter runs, so no STATUS= precedes it.
    notifier.ready(&ready_status);
    let reporter_task = tokio::spawn(reporter.run(receiver, shutdown.clone()));
    tracing::info!(
        validators = config.validators.len(),
        authenticated_checks = authenticated,
        interval = %humantime::format_duration(config.health.interval),
        timeout = %humantime::format_duration(config.health.timeout),
        status_file = %config.status_file.display(),
        "palisade-bastion running"
    );

    let store_ended = tokio::select! {
        _ = terminate.recv() => { tracing::info!("SIGTERM: shutting down"); None }
        _ = interrupt.recv() => { tracing::info!("SIGINT: shutting down"); None }
        result = &mut store_task => Some(result),
    };
    let stopped_on_signal = store_ended.is_none();
    notifier.stopping("stopping");
    shutdown.cancel();

    let drain = async {
        let store = match store_ended {
            Some(result) => result,
            None => store_task.await,
        };
        while checks.join_next().await.is_some() {}
        while alert_tasks.join_next().await.is_some() {}
        // The reporter finishes its last write before it returns, so the
        // removal below is not undone by a late write.
        let _ = reporter_task.await;
        store
    };
    let store = tokio::select! {
        store = drain => Some(store),
        _ = terminate.recv() => None,
        _ = interrupt.recv() => None,
    };
    if let Err(error) = std::fs::remove_file(&config.status_file)
        && error.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %config.status_file.display(), %error, "cannot remove the status file");
    }
    match store {
        None => {
            tracing::warn!("second signal: exiting without waiting for in-flight requests");
            Ok(())
        }
        Some(Ok(Ok(()))) if stopped_on_signal => {
            tracing::info!("stopped");
            Ok(())
        }
        Some(Ok(Ok(()))) => Err(anyhow!("the backup store stopped unexpectedly")),
        Some(Ok(Err(error))) => Err(error.context("backup store failed")),
        Some(Err(join)) => Err(anyhow!("the backup store task failed: {join}")),
    }
}

/// The authenticated health check's credentials for `validator`: the
/// bastion's `[client]` and the validator's `pin`, when both are set.
pub fn credentials(config: &BastionConfig, validator: &Validator) -> Option<Credentials> {
    let client = config.client.as_ref()?;
    let pin = validator.pin.clone()?;
    Some(Credentials {
        operator: client.operator.clone(),
        key: client.key.clone(),
        pin,
    })
}

/// Owns the health table: folds probe results in, logs changes, writes the
/// status file, updates systemd's STATUS=.
struct Reporter {
    table: Vec<ValidatorHealth>,
    /// Each validator's state, for the metrics.
    health: Arc<crate::metrics::HealthBoard>,
    status_file: PathBuf,
    options: HealthCheckOptions,
    started: SystemTime,
    notifier: Notifier,
    /// The last write failed (logged once until it works again).
    write_failing: bool,
    /// `[alerts]`: told every probe result.
    alerter: Option<Alerter>,
}

impl Reporter {
    fn new(config: &BastionConfig, started: SystemTime, notifier: Notifier) -> Reporter {
        Reporter {
            table: config
                .validators
                .iter()
                .map(|v| ValidatorHealth::new(&v.name, &v.socket, started))
                .collect(),
            health: Arc::new(crate::metrics::HealthBoard::new(
                config.validators.iter().map(|v| v.name.clone()).collect(),
            )),
            status_file: config.status_file.clone(),
            options: config.health,
            started,
            notifier,
            write_failing: false,
            alerter: None,
        }
    }

    /// Writes the initial status file (every validator `unknown`); a
    /// failure here is a startup error.
    async fn start(&mut self) -> anyhow::Result<()> {
        status_file::prepare_dir(&self.status_file).with_context(|| {
            format!(
                "creating the status file's directory for {}",
                self.status_file.display()
            )
        })?;
        self.write()
            .await
            .with_context(|| format!("writing status file {}", self.status_file.display()))
    }

    async fn write(&self) -> io::Result<()> {
        let report = StatusReport::new(&self.table, &self.options, self.started, SystemTime::now());
        let mut bytes = serde_json::to_vec_pretty(&report).map_err(io::Error::other)?;
        bytes.push(b'\n');
        let path = self.status_file.clone();
        tokio::task::spawn_blocking(move || status_file::write_atomic(&path, &bytes))
            .await
            .unwrap_or_else(|join| Err(io::Error::other(join.to_string())))
    }

    async fn run(mut self, mut reports: mpsc::Receiver<ProbeReport>, shutdown: CancellationToken) {
        loop {
            let report = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                report = reports.recv() => match report {
                    Some(report) => report,
                    None => break,
                },
            };
            let Some(health) = self.table.get_mut(report.index) else {
                continue;
            };
            if let Some(alerter) = &mut self.alerter {
                alerter.observe(
                    &health.name,
                    &report.outcome,
                    report.checked_at,
                    std::time::Instant::now(),
                );
            }
            let transition = health.record(report.checked_at, report.outcome);
            self.health.set(report.index, health.state);
            if transition != Transition::Unchanged {
                log_transition(health, &transition);
                self.notifier.status(&summary_line(&self.table));
            }
            match self.write().await {
                Ok(()) if self.write_failing => {
                    self.write_failing = false;
                    tracing::info!(path = %self.status_file.display(), "status file written again");
                }
                Ok(()) => {}
                Err(error) if !self.write_failing => {
                    self.write_failing = true;
                    tracing::warn!(
                        path = %self.status_file.display(),
                        %error,
                        "cannot write the status file; health checks go on"
                    );
                }
                Err(_) => {}
            }
        }
    }
}

fn whole_seconds(duration: Duration) -> String {
    humantime::format_duration(Duration::from_secs(duration.as_secs())).to_string()
}

fn elapsed_since(time: SystemTime) -> String {
    whole_seconds(SystemTime::now().duration_since(time).unwrap_or_default())
}

/// One log line per change, at warn for bad news.
fn log_transition(health: &ValidatorHealth, transition: &Transition) {
    let validator = &health.name;
    let reason = health
        .last_error
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    let version = health
        .supervisor
        .as_ref()
        .map(|s| s.version.as_str())
        .unwrap_or("");
    let socket = health.socket.display();
    match transition {
        Transition::Unchanged => return,
        Transition::FirstUp => {
            tracing::info!(validator = %validator, supervisor_version = %version, "validator up")
        }
        Transition::CameUp {
            down_since,
            failures,
        } => tracing::info!(
            validator = %validator,
            supervisor_version = %version,
            down_for = %elapsed_since(*down_since),
            failed_checks = failures,
            "validator up"
        ),
        Transition::FirstDown => {
            tracing::warn!(validator = %validator, %reason, %socket, "validator down")
        }
        Transition::WentDown { up_since } => tracing::warn!(
            validator = %validator,
            %reason,
            %socket,
            was_up_for = %elapsed_since(*up_since),
            "validator down"
        ),
        Transition::ReasonChanged { previous } => tracing::info!(
            validator = %validator,
            %reason,
            %previous,
            "validator still down"
        ),
        Transition::SupervisorChanged { previous } => tracing::info!(
            validator = %validator,
            supervisor_version = %version,
            previous_version = %previous.as_ref().map(|p| p.version.as_str()).unwrap_or(""),
            "another supervisor answers"
        ),
    }
    if let Some(announced) = health.name_mismatch() {
        tracing::warn!(
            validator = %validator,
            announced = %announced,
            %socket,
            "the supervisor's greeting names another validator: is this socket wired to the right tunnel?"
        );
    }
}
