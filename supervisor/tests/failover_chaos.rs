//! Fault injection over two validator hosts (issue 13, `docs/failover.md`): the harness of
//! `palisade_testkit::failover` runs a schedule from `tests/chaos/*.json` and a handful of
//! seeded random schedules on one cluster (real etcd, real supervisors, the simulated chain),
//! and after each one the chain's record must show no double sign and no height signed by both
//! hosts, neither host's sign state may have gone backwards, and the validator must sign again.
//! The benchmark command runs many more (`palisade-bench failover`).

mod common;

use palisade_testkit::failover::{
    Binaries, Cluster, ClusterOptions, Report, Schedule, random_schedule, run_schedule,
};

use common::{simd, workspace_binary};

/// The seeds CI runs (each names one schedule forever).
const SEEDS: [u64; 3] = [3, 11, 42];

fn binaries() -> Binaries {
    Binaries {
        supervisor: common::SUPERVISOR.into(),
        ctl: workspace_binary("palisade-ctl"),
        simd: simd(),
        simchain_net: workspace_binary("simchain-net"),
    }
}

fn check(cluster: &Cluster, report: &Report) {
    eprintln!(
        "{}: missed {} blocks, recovered in {:?} ms, notes {:?}",
        report.name, report.missed_blocks, report.recovery_ms, report.notes
    );
    assert!(
        report.safe(),
        "{}: {report:?}\n{}",
        report.name,
        cluster.tails()
    );
    assert!(
        report.recovery_ms.is_some(),
        "{}: the validator did not sign again: {report:?}\n{}",
        report.name,
        cluster.tails()
    );
}

#[test]
fn seeded_and_scripted_fault_schedules_never_double_sign() {
    let mut cluster = Cluster::start(&binaries(), &ClusterOptions::default()).unwrap();
    cluster.start_with_primary(0).unwrap();
    let scripted = Schedule::parse(include_str!("chaos/partition-stall-handoff.json")).unwrap();
    let report = run_schedule(&mut cluster, &scripted).unwrap();
    check(&cluster, &report);
    for seed in SEEDS {
        let schedule = random_schedule(seed);
        eprintln!(
            "{}: {}",
            schedule.name,
            serde_json::to_string(&schedule).unwrap()
        );
        let report = run_schedule(&mut cluster, &schedule).unwrap();
        check(&cluster, &report);
    }
}
