//! Log shipping (`[logs]`, `docs/log-format.md`): gaiad's stdout and
//! stderr and the supervisor's own log, cut into segments, compressed,
//! age-encrypted to the operators, signed, spooled on disk and sent to every
//! bastion as objects of kind `log` over the backup session.
//!
//! The path of a line, and what bounds it:
//!
//! 1. **Tap** ([`tap`]): `node::output`'s reader threads hand each batch of
//!    complete lines to [`tee_daemon_output`], and the [`TracingTap`] layer
//!    each of the supervisor's own events. Both copy into a bounded queue
//!    (`logs.buffer-bytes`) with `try_send`: when it is full the lines are
//!    dropped and counted (`lines_dropped`), never waited for — gaiad is
//!    never blocked (DESIGN invariant 5).
//! 2. **Segment writer** ([`writer`], one OS thread; sealing in [`segment`]): formats each line
//!    ([`record`]: JSON or text), cuts a segment at `logs.segment-bytes` of
//!    plaintext or `logs.segment-interval` after its first line, seals it
//!    (zstd, then age to the recipients, then an ed25519 signature over its
//!    metadata) and adds it to the spool. With `[logs.loki]` it also offers
//!    each record to the Loki client ([`crate::loki`], `docs/loki.md`) with
//!    `try_push`: a full Loki queue drops the line for Loki only (counted),
//!    so Loki can neither block gaiad nor slow the segments.
//! 3. **Spool** ([`spool`]): a 0700 directory of 0600 files written
//!    atomically, bounded by `logs.spool-bytes`: when a new segment does not
//!    fit, the oldest go (counted, `segments_dropped`). The next sequence
//!    number is kept there too, so a restart neither reuses one nor loses
//!    what was waiting.
//! 4. **Shippers** ([`ship`], one task per bastion with `backup-command`):
//!    each sends, oldest first, every spooled segment that bastion does not
//!    have yet, over one backup-session connection at a time; a bastion that
//!    is down is retried with backoff and jitter and never delays another. A
//!    segment leaves the spool once every bastion has it.
//!
//! The signing key is the tunnel's own ed25519 client key (`logs.signing-key`,
//! default `[tunnel] key-file`), readable while the vault is locked, so logs
//! ship before an unlock too; the operators pin its public key in
//! `palisade-ctl` (see `docs/log-format.md` for the threat model).
//!
//! This module may call `config` (and its `parse_recipient`), `backup`'s
//! stream dialers, `loki` and `palisade_wire`; it never calls the supervision, the
//! node or the tunnels' internals, and nothing in it waits on gaiad.

mod record;
mod segment;
mod ship;
mod spool;
mod tap;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_util::sync::CancellationToken;

use crate::backup::StreamDialer;
use crate::config::LogSettings;
use crate::loki::LokiStats;

pub use record::{daemon_level, format_record};
pub use segment::{Sealer, load_signing_key};
pub use spool::Spool;
pub use tap::{LogStream, TracingTap, tee_daemon_output};

/// Counters of the log shipping, shared with whoever reports them (the
/// lead's metrics: `palisade_log_spool_bytes`, `palisade_log_spool_limit_bytes`,
/// `palisade_log_segments_dropped_total`,
/// `palisade_log_segments_shipped_total{bastion}`).
#[derive(Debug, Default)]
pub struct LogStats {
    /// Lines written into segments.
    pub lines_written: AtomicU64,
    /// Lines dropped because the writer's queue was full (or a segment
    /// could not be sealed).
    pub lines_dropped: AtomicU64,
    /// Segments sealed and spooled.
    pub segments_written: AtomicU64,
    /// Segments dropped from a full spool before every bastion had them.
    pub segments_dropped: AtomicU64,
    /// Bytes in the spool now.
    pub spool_bytes: AtomicU64,
    /// `logs.spool-bytes`.
    pub spool_limit_bytes: AtomicU64,
    /// Per bastion (configuration order): segments it stored.
    pub shipped: Vec<ShippedTo>,
    /// `[logs.loki]`'s counters, when it is set.
    pub loki: Option<Arc<LokiStats>>,
}

/// Segments one bastion stored.
#[derive(Debug)]
pub struct ShippedTo {
    pub bastion: String,
    pub segments: AtomicU64,
}

impl LogStats {
    fn new(bastions: &[String], spool_limit: u64, loki: Option<Arc<LokiStats>>) -> LogStats {
        LogStats {
            spool_limit_bytes: AtomicU64::new(spool_limit),
            loki,
            shipped: bastions
                .iter()
                .map(|bastion| ShippedTo {
                    bastion: bastion.clone(),
                    segments: AtomicU64::new(0),
                })
                .collect(),
            ..LogStats::default()
        }
    }

    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Why log shipping could not start.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// `logs.signing-key` is unusable.
    #[error("logs.signing-key {}: {reason}", path.display())]
    SigningKey { path: PathBuf, reason: String },
    /// A recipient did not parse (the configuration checked them, so this is
    /// a race with an edited file).
    #[error("logs.recipients: {0}")]
    Recipient(String),
    /// The spool directory cannot be used.
    #[error("log spool {}: {source}", path.display())]
    Spool {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The segment writer thread could not start.
    #[error("cannot start the log segment writer: {0}")]
    Thread(#[source] std::io::Error),
    /// Log shipping was already started in this process.
    #[error("log shipping is already running in this process")]
    AlreadyRunning,
    /// The Loki client could not be built (`[logs.loki]`).
    #[error("cannot start the Loki client (logs.loki): {0}")]
    Loki(#[source] reqwest::Error),
}

/// The running log shipping.
pub struct LogShipping {
    writer: Option<writer::WriterHandle>,
    stats: Arc<LogStats>,
    shutdown: CancellationToken,
}

impl LogShipping {
    /// Open the spool, start the segment writer and one shipper per
    /// bastion, and install the tap. `validator` is the name the bastions
    /// know (`[rpc] name`); `bastions` the dialers of the bastions' backup
    /// sessions, by name. Must be called inside a Tokio runtime.
    pub fn start(
        settings: &LogSettings,
        validator: &str,
        bastions: Vec<(String, Arc<dyn StreamDialer>)>,
        shutdown: &CancellationToken,
    ) -> Result<LogShipping, LogError> {
        let key =
            load_signing_key(&settings.signing_key).map_err(|reason| LogError::SigningKey {
                path: settings.signing_key.clone(),
                reason,
            })?;
        let recipients = settings
            .recipients
            .iter()
            .map(|text| crate::config::parse_recipient(text))
            .collect::<Result<Vec<_>, _>>()
            .map_err(LogError::Recipient)?;
        let names: Vec<String> = bastions.iter().map(|(name, _)| name.clone()).collect();
        // The Loki client's worker ends when the writer (its only sender)
        // is gone, after pushing what the writer's last segment held, or
        // with the whole process's `shutdown`.
        let loki = match &settings.loki {
            Some(loki) => {
                let (sender, worker) = crate::loki::start(
                    loki.clone(),
                    crate::loki::RetryPolicy::default(),
                    shutdown.child_token(),
                )
                .map_err(|error| LogError::Loki(error.without_url()))?;
                Some((sender, worker))
            }
            None => None,
        };
        let stats = Arc::new(LogStats::new(
            &names,
            settings.spool_bytes,
            loki.as_ref().map(|(sender, _)| sender.shared_stats()),
        ));
        let (spool, next_sequence) = Spool::open(
            &settings.spool_dir,
            settings.spool_bytes,
            &settings.host,
            names.len(),
            Arc::clone(&stats),
        )
        .map_err(|source| LogError::Spool {
            path: settings.spool_dir.clone(),
            source,
        })?;
        let spool = Arc::new(spool);
        let wake = Arc::new(tokio::sync::Notify::new());
        let sealer = Sealer::new(validator, &settings.host, recipients, key);
        let (sender, receiver) = tap::queue();
        let writer = writer::spawn_writer(
            writer::WriterSettings {
                segment_bytes: settings.segment_bytes,
                interval: settings.segment_interval,
                format: settings.format,
                loki: loki.as_ref().map(|(sender, _)| sender.clone()),
            },
            sealer,
            next_sequence,
            receiver,
            Arc::clone(&spool),
            Arc::clone(&wake),
            Arc::clone(&stats),
        )
        .map_err(LogError::Thread)?;
        if let Some((_, worker)) = loki {
            tokio::spawn(worker);
        }
        if !tap::install(sender, settings.buffer_bytes, Arc::clone(&stats)) {
            writer.stop();
            return Err(LogError::AlreadyRunning);
        }
        let shutdown = shutdown.child_token();
        for (index, (name, dialer)) in bastions.into_iter().enumerate() {
            tokio::spawn(ship::ship_to(ship::Shipper {
                bastion: name,
                index,
                dialer,
                validator: validator.to_owned(),
                spool: Arc::clone(&spool),
                wake: Arc::clone(&wake),
                stats: Arc::clone(&stats),
                shutdown: shutdown.clone(),
            }));
        }
        tracing::info!(
            host = %settings.host,
            format = settings.format.as_str(),
            recipients = settings.recipients.len(),
            spool = %settings.spool_dir.display(),
            spool_bytes = settings.spool_bytes,
            next_sequence,
            bastions = ?names,
            loki = settings.loki.is_some(),
            "log shipping started"
        );
        Ok(LogShipping {
            writer: Some(writer),
            stats,
            shutdown,
        })
    }

    /// The counters.
    pub fn stats(&self) -> Arc<LogStats> {
        Arc::clone(&self.stats)
    }

    /// Stop the shippers, seal what the writer holds into the spool (it
    /// ships on the next start) and log the totals.
    pub fn stop(mut self) {
        self.shutdown.cancel();
        tap::uninstall();
        if let Some(writer) = self.writer.take() {
            writer.stop();
        }
        let stats = &self.stats;
        tracing::info!(
            lines_written = LogStats::get(&stats.lines_written),
            lines_dropped = LogStats::get(&stats.lines_dropped),
            segments_written = LogStats::get(&stats.segments_written),
            segments_dropped = LogStats::get(&stats.segments_dropped),
            spool_bytes = LogStats::get(&stats.spool_bytes),
            shipped = ?stats
                .shipped
                .iter()
                .map(|to| (to.bastion.as_str(), LogStats::get(&to.segments)))
                .collect::<Vec<_>>(),
            "log shipping statistics"
        );
        if let Some(loki) = &stats.loki {
            tracing::info!(
                lines_pushed = LogStats::get(&loki.pushed),
                dropped_queue_full = LogStats::get(&loki.dropped_queue_full),
                dropped_after_failure = LogStats::get(&loki.dropped_after_failure),
                "loki push statistics"
            );
        }
    }
}

/// The counters of the log shipping running in this process, if any (for
/// the metrics exporter).
pub fn stats() -> Option<Arc<LogStats>> {
    tap::stats()
}
