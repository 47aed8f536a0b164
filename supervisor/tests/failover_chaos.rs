//! Fault injection over two validator hosts (issue 13, `docs/failover.md`): the harness of
//! `palisade_testkit::failover` runs a schedule from `tests/chaos/*.json` and a handful of
//! seeded random schedules on one cluster (real etcd, real supervisors, the simulated chain),
//! and after each one the chain's record must show no double sign and no height signed by both
//! hosts, neither host's sign state may have gone backwards, and the validator must sign again.
//! The benchmark command runs many more (`palisade-bench failover`).

mod common;

use palisade_testkit::failover::{
    Cluster, ClusterOptions, Report, Schedule, random_schedule, run_schedule,
};

/// The seeds CI runs (each names one schedule forever). 1029 stalls the primary just past its
/// signing deadline: it found a late release ending a newer leadership (two signers).
const SEEDS: [u64; 4] = [3, 11, 42, 1029];

fn check(cluster: &Cluster, report: &Report) {
    eprintln!("{}: {report:?}", report.name);
    if !report.safe() {
        for host in &cluster.hosts {
            eprintln!("=== {} log:", host.id);
            for line in host.log().lines().filter(|line| !line.contains("rpc call")) {
                eprintln!("{line}");
            }
        }
    }
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
    let mut cluster =
        Cluster::start(&common::failover_binaries(), &ClusterOptions::default()).unwrap();
    cluster.start_with_primary(0).unwrap();
    let replay = std::env::var("PALISADE_CHAOS_SEEDS").is_ok();
    if !replay {
        let scripted = Schedule::parse(include_str!("chaos/partition-stall-handoff.json")).unwrap();
        let report = run_schedule(&mut cluster, &scripted).unwrap();
        check(&cluster, &report);
    }
    // PALISADE_CHAOS_SEEDS=1029,1030 runs those instead (to replay a benchmark's failure).
    let seeds: Vec<u64> = match std::env::var("PALISADE_CHAOS_SEEDS") {
        Ok(list) => list
            .split(',')
            .map(|seed| seed.trim().parse().expect("PALISADE_CHAOS_SEEDS: numbers"))
            .collect(),
        Err(_) => SEEDS.to_vec(),
    };
    for seed in seeds {
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
