//! Failover between two validator hosts (`docs/failover.md`), on the fixture the tests use
//! (`palisade_testkit::failover`): two real supervisors sharing one vault, a real 3-member etcd
//! cluster, the simulated chain with one sentry per host.
//!
//! - `failover_planned_missed_blocks` (target 1) and `failover_planned_s`: 1 s blocks; a planned
//!   handoff (`palisade-ctl failover handoff --to`) back and forth, `--handoffs` times; blocks
//!   the validator missed from the command to the new primary's first vote (max over the
//!   runs), and seconds from the command to that vote (median). "The new primary's first vote"
//!   is the first vote the chain receives through the new primary's sentry.
//! - `failover_takeover_s`: the primary's whole host SIGKILLed; seconds until the standby's
//!   first vote (median of 3). It includes the lease running out (`lease-ttl` 3 s) and the
//!   takeover rule (a new block, K = 3 commits without the key).
//! - `chaos_schedules_run` and `chaos_double_signs` (target 0): `--chaos-schedules` seeded
//!   random fault schedules (seeds `--chaos-first-seed`, default 1000, and on) on one cluster
//!   with 300 ms blocks; after each,
//!   the double signs and the heights signed through both hosts' sentries are counted, and the
//!   sign-state regressions are checked. Any violation is a failure of the benchmark run.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::Signal;
use palisade_testkit::failover::{
    Binaries, Cluster, ClusterOptions, random_schedule, run_schedule,
};

use crate::{Measured, result, round2};

pub const PLANNED_MISSED: &str = "failover_planned_missed_blocks";
pub const PLANNED_S: &str = "failover_planned_s";
pub const TAKEOVER_S: &str = "failover_takeover_s";
pub const CHAOS_RUN: &str = "chaos_schedules_run";
pub const CHAOS_DOUBLE_SIGNS: &str = "chaos_double_signs";

fn binaries(bins: &crate::fixture::Binaries) -> anyhow::Result<Binaries> {
    let ctl = bins.supervisor.with_file_name("palisade-ctl");
    if !ctl.is_file() {
        bail!(
            "{} is missing: run `cargo build --release --workspace --bins` first",
            ctl.display()
        );
    }
    Ok(Binaries {
        supervisor: bins.supervisor.clone(),
        ctl,
        simd: bins.simd.clone(),
        simchain_net: bins.simchain_net.clone(),
    })
}

fn anyhow(error: palisade_testkit::Error) -> anyhow::Error {
    anyhow::anyhow!("{error:?}")
}

/// The height of the last vote the chain received through `sentry`.
fn last_vote_via(cluster: &Cluster, sentry: &str) -> anyhow::Result<u64> {
    let record = cluster.network.record()?;
    Ok(record.validators[&cluster.validator]
        .last_vote_via
        .get(sentry)
        .copied()
        .unwrap_or(0))
}

/// Wait until a vote arrives through `sentry` above `after`; when it did.
fn wait_vote_via(
    cluster: &Cluster,
    sentry: &str,
    after: u64,
    timeout: Duration,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        if last_vote_via(cluster, sentry)? > after {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!(
                "no vote through {sentry} within {timeout:?}\n{}",
                cluster.tails()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn missed(cluster: &Cluster) -> anyhow::Result<u64> {
    Ok(cluster.network.record()?.validators[&cluster.validator].missed_count)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The planned handoffs and the takeovers.
pub fn run_handoffs(
    bins: &crate::fixture::Binaries,
    handoffs: usize,
) -> anyhow::Result<(Measured, Measured, Measured)> {
    let bins = binaries(bins)?;
    let options = ClusterOptions {
        block: Duration::from_secs(1),
        ..ClusterOptions::default()
    };
    let mut cluster = Cluster::start(&bins, &options).map_err(anyhow)?;
    cluster.start_with_primary(0).map_err(anyhow)?;
    let mut primary = 0;
    let mut seconds = Vec::new();
    let mut missed_blocks = Vec::new();
    for _ in 0..handoffs.max(1) {
        let target = 1 - primary;
        let sentry = cluster.host(target).sentry.clone();
        let seen = last_vote_via(&cluster, &sentry)?;
        let missed_before = missed(&cluster)?;
        let asked = Instant::now();
        let to = cluster.host(target).id.clone();
        let output = cluster
            .host(primary)
            .ctl(&["failover", "handoff", "--to", &to], None)
            .map_err(anyhow)?;
        if !output.status.success() {
            bail!("handoff: {}", String::from_utf8_lossy(&output.stderr));
        }
        let voted = wait_vote_via(&cluster, &sentry, seen, Duration::from_secs(60))?;
        seconds.push(voted.duration_since(asked).as_secs_f64());
        // The heights up to the new primary's first vote are committed a block later.
        std::thread::sleep(options.block * 2);
        missed_blocks.push(missed(&cluster)? - missed_before);
        primary = target;
        cluster
            .wait_signing(3, Duration::from_secs(60))
            .map_err(anyhow)?;
    }
    let (double_signs, both) = cluster.violations().map_err(anyhow)?;
    if double_signs > 0 || !both.is_empty() {
        bail!("handoffs double-signed: {double_signs} double signs, heights {both:?}");
    }

    let mut takeovers = Vec::new();
    for _ in 0..3 {
        let standby = 1 - primary;
        let sentry = cluster.host(standby).sentry.clone();
        let seen = last_vote_via(&cluster, &sentry)?;
        let killed = Instant::now();
        cluster.hosts[primary].signal_host(Signal::SIGKILL);
        let voted = wait_vote_via(&cluster, &sentry, seen, Duration::from_secs(90))?;
        takeovers.push(voted.duration_since(killed).as_secs_f64());
        cluster.hosts[primary].reap();
        cluster.hosts[primary]
            .start()
            .and_then(|()| cluster.hosts[primary].unlock())
            .map_err(anyhow)
            .context("restarting the killed host")?;
        cluster.hosts[primary]
            .wait_state("standby")
            .map_err(anyhow)?;
        primary = standby;
        cluster
            .wait_signing(3, Duration::from_secs(60))
            .map_err(anyhow)?;
    }
    let (double_signs, both) = cluster.violations().map_err(anyhow)?;
    if double_signs > 0 || !both.is_empty() {
        bail!("takeovers double-signed: {double_signs} double signs, heights {both:?}");
    }
    let worst_missed = missed_blocks.iter().copied().max().unwrap_or(0);
    let planned_s = round2(median(&mut seconds));
    let takeover_s = round2(median(&mut takeovers));
    Ok((
        Measured {
            result: result(PLANNED_MISSED, worst_missed as f64, "blocks", Some(1.0)),
            detail: format!(
                "1 s blocks, {} handoffs, missed per handoff {missed_blocks:?}",
                seconds.len()
            ),
        },
        Measured {
            result: result(PLANNED_S, planned_s, "s", None),
            detail: format!(
                "command -> new primary's first vote, median of {} ({seconds:.2?})",
                seconds.len()
            ),
        },
        Measured {
            result: result(TAKEOVER_S, takeover_s, "s", None),
            detail: format!(
                "primary host SIGKILLed -> standby's first vote, median of 3 ({takeovers:.2?}); lease-ttl 3 s, K = 3"
            ),
        },
    ))
}

/// Seeded chaos schedules.
pub fn run_chaos(
    bins: &crate::fixture::Binaries,
    first_seed: u64,
    schedules: usize,
) -> anyhow::Result<(Measured, Measured)> {
    let bins = binaries(bins)?;
    let mut cluster = Cluster::start(&bins, &ClusterOptions::default()).map_err(anyhow)?;
    cluster.start_with_primary(0).map_err(anyhow)?;
    let mut run = 0;
    let mut double_signs = 0;
    let mut both_hosts = 0;
    let mut regressions = Vec::new();
    let mut unrecovered = Vec::new();
    let mut missed = Vec::new();
    for seed in first_seed..first_seed + schedules as u64 {
        let schedule = random_schedule(seed);
        let report = run_schedule(&mut cluster, &schedule).map_err(anyhow)?;
        run += 1;
        double_signs += report.double_signs;
        both_hosts += report.multi_signer_heights.len();
        regressions.extend(
            report
                .regressions
                .iter()
                .map(|r| format!("{}: {r}", report.name)),
        );
        if report.recovery_ms.is_none() {
            unrecovered.push(report.name.clone());
        }
        missed.push(report.missed_blocks as f64);
        eprintln!(
            "palisade-bench: chaos {}: safe {}, missed {}, recovery {:?} ms",
            report.name,
            report.safe(),
            report.missed_blocks,
            report.recovery_ms
        );
    }
    if !regressions.is_empty() {
        bail!("sign-state regressions: {regressions:?}");
    }
    let violations = double_signs + both_hosts;
    let median_missed = median(&mut missed);
    Ok((
        Measured {
            result: result(CHAOS_RUN, run as f64, "runs", None),
            detail: format!(
                "seeds {first_seed}..{}; median missed blocks per schedule {median_missed}; not recovered: {unrecovered:?}",
                first_seed + schedules as u64
            ),
        },
        Measured {
            result: result(CHAOS_DOUBLE_SIGNS, violations as f64, "signs", Some(0.0)),
            detail: format!(
                "{double_signs} double signs, {both_hosts} heights signed by both hosts"
            ),
        },
    ))
}
