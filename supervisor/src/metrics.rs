//! The supervisor's Prometheus metrics (`[metrics]`, `docs/metrics.md`):
//! what the catalogue names, read from where the supervisor already keeps
//! it, rendered on each scrape.
//!
//! Owns: the metric names, types, labels and help texts
//! ([`SupervisorCollector`]), the chain poller behind the height and
//! signed/missed counters ([`chain`]), the per-store record of the last
//! backup ([`backups`]), and starting the endpoint ([`start`]).
//!
//! Reads, never writes: the executor's board (phase, node, vault, primary,
//! upgrades, output counters, the validator's address), the sign-state
//! file, the tunnels' observers, the backup worker's last-backup channel
//! and the RPC server's call counters. The hot paths it observes keep
//! their own counters as relaxed atomics (`node::output::OutputStats`, the
//! tunnels' byte counters, `rpc::calls`); a scrape takes the board's lock
//! for a copy of a few fields, like the `status` call does.
//!
//! Adding metrics: [`SupervisorMetrics::register_collector`] takes any
//! [`Collector`]; the log shipper's gauges and counters come in through
//! [`LogMetricsSource`], whose names are fixed here so the alerting rules
//! can rely on them.
//!
//! Must never: block the executor or the node, make a network call during
//! a scrape, or put an unbounded value (a path, an error text, an unknown
//! RPC method) in a label.

pub mod backups;
pub mod chain;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use palisade_daemon::metrics::{MetricsServer, Sample, encode_counter, encode_gauge};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::config::MetricsSettings;
use crate::rpc::calls::RpcCalls;
use crate::sign_state::{LocalState, read_local};
use crate::supervision::board::{SharedBoard, board};
use crate::supervision::machine::Phase;
use crate::tunnel::BastionObserver;

/// Every supervisor metric's name as exported (counters with `_total`),
/// in the order rendered; the log shipper's follow when it is on
/// ([`LOG_METRICS`]), then the Loki push's when `[logs.loki]` is set
/// ([`LOKI_METRICS`]). `docs/metrics.md` documents each.
pub const SUPERVISOR_METRICS: &[&str] = &[
    "palisade_build_info",
    "palisade_node_phase",
    "palisade_node_up",
    "palisade_primary",
    "palisade_chain_height",
    "palisade_chain_catching_up",
    "palisade_validator_signed_blocks_total",
    "palisade_validator_missed_blocks_total",
    "palisade_sign_state_height",
    "palisade_vault_unlocked",
    "palisade_tunnel_up",
    "palisade_tunnel_reconnects_total",
    "palisade_tunnel_sent_bytes_total",
    "palisade_tunnel_received_bytes_total",
    "palisade_tunnel_round_trip_seconds",
    "palisade_backup_last_success_timestamp_seconds",
    "palisade_backup_last_sequence",
    "palisade_upgrades_total",
    "palisade_upgrade_waiting_for_binary",
    "palisade_rpc_requests_total",
    "palisade_rpc_errors_total",
    "palisade_output_lines_dropped_total",
];

/// The log shipper's metrics, exported when a [`LogMetricsSource`] is given.
pub const LOG_METRICS: &[&str] = &[
    "palisade_log_spool_bytes",
    "palisade_log_spool_limit_bytes",
    "palisade_log_segments_dropped_total",
    "palisade_log_segments_shipped_total",
    "palisade_log_lines_dropped_total",
];

/// The Loki push's metrics (`[logs.loki]`), exported when it is set.
pub const LOKI_METRICS: &[&str] = &[
    "palisade_loki_lines_pushed_total",
    "palisade_loki_lines_dropped_total",
];

/// The Loki push's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LokiCounts {
    /// Lines Loki accepted.
    pub pushed: u64,
    /// Lines dropped because the Loki client's queue was full.
    pub dropped_queue_full: u64,
    /// Lines dropped with a batch Loki refused or that failed every attempt.
    pub dropped_push_failed: u64,
}

/// The log shipper's numbers, when log shipping is on.
pub trait LogMetricsSource: Send + Sync + 'static {
    /// Bytes in the on-disk spool now.
    fn spool_bytes(&self) -> u64;
    /// The spool's size limit.
    fn spool_limit_bytes(&self) -> u64;
    /// Segments dropped (oldest first) because the spool was full.
    fn segments_dropped(&self) -> u64;
    /// Segments delivered, per bastion name.
    fn segments_shipped(&self) -> Vec<(String, u64)>;
    /// Lines (the node's and the supervisor's) that never reached a segment
    /// because the segment writer was behind.
    fn lines_dropped(&self) -> u64;
    /// The Loki push's counters, when `[logs.loki]` is set.
    fn loki(&self) -> Option<LokiCounts> {
        None
    }
}

impl LogMetricsSource for crate::logs::LogStats {
    fn spool_bytes(&self) -> u64 {
        crate::logs::LogStats::get(&self.spool_bytes)
    }

    fn spool_limit_bytes(&self) -> u64 {
        crate::logs::LogStats::get(&self.spool_limit_bytes)
    }

    fn segments_dropped(&self) -> u64 {
        crate::logs::LogStats::get(&self.segments_dropped)
    }

    fn segments_shipped(&self) -> Vec<(String, u64)> {
        self.shipped
            .iter()
            .map(|to| (to.bastion.clone(), crate::logs::LogStats::get(&to.segments)))
            .collect()
    }

    fn lines_dropped(&self) -> u64 {
        crate::logs::LogStats::get(&self.lines_dropped)
    }

    fn loki(&self) -> Option<LokiCounts> {
        let loki = self.loki.as_ref()?;
        Some(LokiCounts {
            pushed: crate::logs::LogStats::get(&loki.pushed),
            dropped_queue_full: crate::logs::LogStats::get(&loki.dropped_queue_full),
            dropped_push_failed: crate::logs::LogStats::get(&loki.dropped_after_failure),
        })
    }
}

/// Everything the supervisor's metrics are read from.
pub struct Sources {
    pub board: SharedBoard,
    /// The node's `priv_validator_state.json` (the watermark).
    pub state_path: PathBuf,
    pub tunnels: Vec<BastionObserver>,
    pub backups: Arc<backups::BackupsByStore>,
    pub rpc_calls: Arc<RpcCalls>,
    pub chain: Arc<chain::ChainStats>,
    /// `None`: no log shipping (its metrics are not exported).
    pub logs: Option<Arc<dyn LogMetricsSource>>,
}

/// The catalogue's supervisor metrics, read at each scrape.
pub struct SupervisorCollector {
    sources: Sources,
}

impl std::fmt::Debug for SupervisorCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupervisorCollector")
            .finish_non_exhaustive()
    }
}

fn flag(value: bool) -> i64 {
    i64::from(value)
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn one(value: i64) -> Vec<Sample<i64>> {
    vec![(Vec::new(), value)]
}

impl Collector for SupervisorCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.sources;
        let e = &mut encoder;
        // A copy of the board's few fields: the lock is held for no I/O.
        let (phase, pid, vault_locked, primary, upgrades, dropped) = {
            let shared = board(&s.board);
            (
                shared.phase,
                shared.pid,
                shared.vault_locked,
                shared.primary,
                shared.upgrades,
                shared.output_lines_dropped(),
            )
        };
        encode_gauge(
            e,
            "palisade_build_info",
            "The supervisor's release (the value is always 1).",
            &[(vec![("version", env!("CARGO_PKG_VERSION").to_string())], 1)],
        )?;
        let phases: Vec<Sample<i64>> = Phase::NAMES
            .iter()
            .map(|name| (vec![("phase", (*name).to_string())], flag(*name == phase)))
            .collect();
        encode_gauge(
            e,
            "palisade_node_phase",
            "1 for the supervision machine's current phase, 0 for the others.",
            &phases,
        )?;
        encode_gauge(
            e,
            "palisade_node_up",
            "Whether the node's process (gaiad) is running.",
            &one(flag(pid.is_some())),
        )?;
        encode_gauge(
            e,
            "palisade_primary",
            "Whether this host is the one meant to sign: 1 without [failover], with it while it holds the leadership.",
            &one(flag(primary)),
        )?;
        let height = s.chain.height();
        encode_gauge(
            e,
            "palisade_chain_height",
            "The node's latest committed block height (absent while its RPC does not answer).",
            &height.map(|h| one(to_i64(h))).unwrap_or_default(),
        )?;
        encode_gauge(
            e,
            "palisade_chain_catching_up",
            "Whether the node is catching up, from its /status (absent while its RPC does not answer).",
            &s.chain
                .catching_up()
                .map(|c| one(flag(c)))
                .unwrap_or_default(),
        )?;
        encode_counter(
            e,
            "palisade_validator_signed_blocks",
            "Blocks whose commit holds the validator's precommit, counted per new height since the supervisor started.",
            &[(Vec::new(), s.chain.signed())],
        )?;
        encode_counter(
            e,
            "palisade_validator_missed_blocks",
            "Blocks whose commit lacks the validator's precommit, counted per new height since the supervisor started.",
            &[(Vec::new(), s.chain.missed())],
        )?;
        let watermark = match read_local(&s.state_path) {
            LocalState::Present(watermark) => one(to_i64(watermark.height)),
            _ => Vec::new(),
        };
        encode_gauge(
            e,
            "palisade_sign_state_height",
            "The sign-state watermark's height (priv_validator_state.json; absent when missing or unreadable).",
            &watermark,
        )?;
        encode_gauge(
            e,
            "palisade_vault_unlocked",
            "Whether the key vault is unlocked (1 without a vault: the keys are the node's own).",
            &one(flag(vault_locked != Some(true))),
        )?;
        let tunnels: Vec<_> = s
            .tunnels
            .iter()
            .map(|observer| (observer.name().to_string(), observer.snapshot()))
            .collect();
        let per_tunnel = |value: &dyn Fn(&crate::tunnel::BastionState) -> u64| {
            tunnels
                .iter()
                .map(|(name, state)| (vec![("bastion", name.clone())], value(state)))
                .collect::<Vec<_>>()
        };
        encode_gauge(
            e,
            "palisade_tunnel_up",
            "Whether the SSH tunnel to the bastion is connected with its forwards.",
            &tunnels
                .iter()
                .map(|(name, state)| {
                    (
                        vec![("bastion", name.clone())],
                        flag(state.connected_since.is_some()),
                    )
                })
                .collect::<Vec<_>>(),
        )?;
        encode_counter(
            e,
            "palisade_tunnel_reconnects",
            "Successful connections to the bastion after the first.",
            &per_tunnel(&|state| u64::from(state.reconnects)),
        )?;
        encode_counter(
            e,
            "palisade_tunnel_sent_bytes",
            "Bytes carried towards the bastion through forwarded connections.",
            &per_tunnel(&|state| state.bytes_to_bastion),
        )?;
        encode_counter(
            e,
            "palisade_tunnel_received_bytes",
            "Bytes carried from the bastion through forwarded connections.",
            &per_tunnel(&|state| state.bytes_from_bastion),
        )?;
        encode_gauge(
            e,
            "palisade_tunnel_round_trip_seconds",
            "The tunnel's last measured round trip (an SSH keepalive request and its reply; an unanswered one counts as the keepalive interval). Absent while down.",
            &tunnels
                .iter()
                .filter_map(|(name, state)| {
                    state
                        .round_trip
                        .map(|rtt| (vec![("bastion", name.clone())], rtt.as_secs_f64()))
                })
                .collect::<Vec<_>>(),
        )?;
        let stores = s.backups.snapshot();
        encode_gauge(
            e,
            "palisade_backup_last_success_timestamp_seconds",
            "When the last backup a store took was written (Unix seconds), since the supervisor started.",
            &stores
                .iter()
                .map(|(store, last)| (vec![("store", store.clone())], to_i64(last.at)))
                .collect::<Vec<_>>(),
        )?;
        encode_gauge(
            e,
            "palisade_backup_last_sequence",
            "The sequence number of the last backup a store took.",
            &stores
                .iter()
                .map(|(store, last)| (vec![("store", store.clone())], to_i64(last.sequence)))
                .collect::<Vec<_>>(),
        )?;
        encode_counter(
            e,
            "palisade_upgrades",
            "Upgrade records written since the supervisor started, by outcome.",
            &[
                (vec![("outcome", "completed".into())], upgrades.completed),
                (
                    vec![("outcome", "switched_not_restarted".into())],
                    upgrades.switched_not_restarted,
                ),
                (vec![("outcome", "failed".into())], upgrades.failed),
            ],
        )?;
        encode_gauge(
            e,
            "palisade_upgrade_waiting_for_binary",
            "Whether an upgrade is held for want of its binary.",
            &one(flag(phase == "waiting_for_binary")),
        )?;
        let calls = s.rpc_calls.counts();
        let by_call = |value: &dyn Fn(&crate::rpc::calls::CallCount) -> u64| {
            calls
                .iter()
                .map(|call| {
                    (
                        vec![
                            ("method", call.method.to_string()),
                            ("role", call.role.to_string()),
                        ],
                        value(call),
                    )
                })
                .collect::<Vec<_>>()
        };
        encode_counter(
            e,
            "palisade_rpc_requests",
            "Control-RPC calls answered, by method and the caller's role (none before login).",
            &by_call(&|call| call.requests),
        )?;
        encode_counter(
            e,
            "palisade_rpc_errors",
            "Control-RPC calls answered with an error, by method and role.",
            &by_call(&|call| call.errors),
        )?;
        encode_counter(
            e,
            "palisade_output_lines_dropped",
            "Lines of the node's output dropped because the consumer was slower than the node.",
            &[(Vec::new(), dropped)],
        )?;
        if let Some(logs) = &s.logs {
            encode_gauge(
                e,
                "palisade_log_spool_bytes",
                "Bytes of log segments waiting in the on-disk spool.",
                &one(to_i64(logs.spool_bytes())),
            )?;
            encode_gauge(
                e,
                "palisade_log_spool_limit_bytes",
                "The log spool's size limit.",
                &one(to_i64(logs.spool_limit_bytes())),
            )?;
            encode_counter(
                e,
                "palisade_log_segments_dropped",
                "Log segments dropped, oldest first, because the spool was full.",
                &[(Vec::new(), logs.segments_dropped())],
            )?;
            encode_counter(
                e,
                "palisade_log_segments_shipped",
                "Log segments delivered to each bastion.",
                &logs
                    .segments_shipped()
                    .into_iter()
                    .map(|(bastion, count)| (vec![("bastion", bastion)], count))
                    .collect::<Vec<_>>(),
            )?;
            encode_counter(
                e,
                "palisade_log_lines_dropped",
                "Log lines that never reached a segment because the segment writer was behind.",
                &[(Vec::new(), logs.lines_dropped())],
            )?;
            if let Some(loki) = logs.loki() {
                encode_counter(
                    e,
                    "palisade_loki_lines_pushed",
                    "Log lines the Loki endpoint accepted ([logs.loki]).",
                    &[(Vec::new(), loki.pushed)],
                )?;
                encode_counter(
                    e,
                    "palisade_loki_lines_dropped",
                    "Log lines not pushed to Loki, by reason (they are still in the segments).",
                    &[
                        (
                            vec![("reason", "queue_full".to_string())],
                            loki.dropped_queue_full,
                        ),
                        (
                            vec![("reason", "push_failed".to_string())],
                            loki.dropped_push_failed,
                        ),
                    ],
                )?;
            }
        }
        Ok(())
    }
}

/// The supervisor's registry, with room for more collectors.
pub struct SupervisorMetrics {
    registry: Registry,
}

impl SupervisorMetrics {
    /// A registry holding the catalogue's supervisor metrics.
    pub fn new(sources: Sources) -> SupervisorMetrics {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(SupervisorCollector { sources }));
        SupervisorMetrics { registry }
    }

    /// Adds metrics of another subsystem (rendered after the catalogue's).
    pub fn register_collector(&mut self, collector: Box<dyn Collector>) {
        self.registry.register_collector(collector);
    }

    /// The finished registry.
    pub fn into_registry(self) -> Arc<Registry> {
        Arc::new(self.registry)
    }
}

/// Binds `settings.listen` and serves `registry` until `shutdown`.
/// Binding failing is a setup error (the port is taken, or not local).
pub async fn start(
    settings: &MetricsSettings,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) -> anyhow::Result<std::net::SocketAddr> {
    let server = MetricsServer::bind(settings.listen, registry)
        .await
        .context("cannot open the metrics endpoint ([metrics] listen)")?;
    let address = server.local_addr()?;
    tokio::spawn(server.serve(shutdown));
    Ok(address)
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_daemon::metrics::{Format, render};

    struct FakeLogs;

    /// Another subsystem's collector.
    #[derive(Debug)]
    struct Extra;

    impl Collector for Extra {
        fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            encode_gauge(&mut encoder, "palisade_extra", "A test gauge.", &one(2))
        }
    }

    impl LogMetricsSource for FakeLogs {
        fn spool_bytes(&self) -> u64 {
            1024
        }
        fn spool_limit_bytes(&self) -> u64 {
            4096
        }
        fn segments_dropped(&self) -> u64 {
            3
        }
        fn segments_shipped(&self) -> Vec<(String, u64)> {
            vec![("b1".into(), 9)]
        }
        fn lines_dropped(&self) -> u64 {
            7
        }
        fn loki(&self) -> Option<LokiCounts> {
            Some(LokiCounts {
                pushed: 11,
                dropped_queue_full: 2,
                dropped_push_failed: 5,
            })
        }
    }

    fn sources(dir: &std::path::Path, logs: Option<Arc<dyn LogMetricsSource>>) -> Sources {
        Sources {
            board: crate::supervision::board::new_board(true),
            state_path: dir.join("priv_validator_state.json"),
            tunnels: Vec::new(),
            backups: Arc::default(),
            rpc_calls: Arc::default(),
            chain: Arc::default(),
            logs,
        }
    }

    fn declared(text: &str) -> Vec<String> {
        text.lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|rest| rest.split(' ').next())
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn every_catalogue_name_is_rendered_and_the_log_hook_adds_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let registry = SupervisorMetrics::new(sources(dir.path(), None)).into_registry();
        let text = render(&registry, Format::PrometheusText).unwrap();
        assert_eq!(declared(&text), SUPERVISOR_METRICS, "{text}");
        // A locked vault, no node, no chain answer, no watermark yet.
        for line in [
            "palisade_vault_unlocked 0\n",
            "palisade_node_up 0\n",
            "palisade_node_phase{phase=\"starting\"} 1\n",
            "palisade_node_phase{phase=\"running\"} 0\n",
            "palisade_upgrades_total{outcome=\"failed\"} 0\n",
        ] {
            assert!(text.contains(line), "{line}{text}");
        }
        assert!(!text.contains("\npalisade_chain_height "), "{text}");
        assert!(!text.contains("\npalisade_sign_state_height "), "{text}");

        let with_logs = sources(dir.path(), Some(Arc::new(FakeLogs)));
        let shared_board = with_logs.board.clone();
        let mut metrics = SupervisorMetrics::new(with_logs);
        metrics.register_collector(Box::new(Extra));
        let registry = metrics.into_registry();
        {
            let mut shared = crate::supervision::board::board(&shared_board);
            shared.phase = "waiting_for_binary";
            shared
                .upgrades
                .count(&palisade_wire::upgrade_record::UpgradeOutcome::Failed(
                    "no binary".into(),
                ));
        }
        let text = render(&registry, Format::PrometheusText).unwrap();
        let expected: Vec<&str> = SUPERVISOR_METRICS
            .iter()
            .chain(LOG_METRICS)
            .chain(LOKI_METRICS)
            .chain(&["palisade_extra"])
            .copied()
            .collect();
        assert_eq!(declared(&text), expected, "{text}");
        for line in [
            "palisade_log_spool_bytes 1024\n",
            "palisade_log_spool_limit_bytes 4096\n",
            "palisade_log_segments_dropped_total 3\n",
            "palisade_log_segments_shipped_total{bastion=\"b1\"} 9\n",
            "palisade_log_lines_dropped_total 7\n",
            "palisade_loki_lines_pushed_total 11\n",
            "palisade_loki_lines_dropped_total{reason=\"queue_full\"} 2\n",
            "palisade_loki_lines_dropped_total{reason=\"push_failed\"} 5\n",
            "palisade_upgrade_waiting_for_binary 1\n",
            "palisade_upgrades_total{outcome=\"failed\"} 1\n",
        ] {
            assert!(text.contains(line), "{line}{text}");
        }
    }
}
