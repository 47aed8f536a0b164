//! `palisade-failover-demo`: the failover part of `scripts/demo.sh` (`docs/failover.md`).
//!
//! Two validator hosts for one validator on loopback — two real `palisade-supervisor`s sharing
//! one vault, a real 3-member etcd cluster, the simulated chain with one sentry per host — then:
//! a planned handoff (`palisade-ctl failover handoff --to val-b`), and an automatic takeover after
//! the primary's whole host is SIGKILLed. Prints what happens and the chain's record, and exits 1
//! if the chain saw a double sign or a height signed by both hosts.
//!
//! Usage: `palisade-failover-demo BIN_DIR` (the directory holding `palisade-supervisor`,
//! `palisade-ctl`, `simd` and `simchain-net`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use palisade_testkit::failover::{Binaries, Cluster, ClusterOptions};

fn main() {
    if let Err(error) = run() {
        eprintln!("failover demo: {error}");
        std::process::exit(1);
    }
}

fn say(text: &str) {
    println!("failover demo: {text}");
}

fn role(cluster: &Cluster, i: usize) -> String {
    let host = cluster.host(i);
    let status = host.status().unwrap_or_default();
    format!(
        "{}: node {}, leader {}, token {}",
        host.id,
        status["node"]["state"].as_str().unwrap_or("?"),
        status["failover"]["leader"].as_str().unwrap_or("-"),
        status["failover"]["token"]
    )
}

fn run() -> Result<(), String> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: palisade-failover-demo BIN_DIR")?,
    );
    let bins = Binaries {
        supervisor: dir.join("palisade-supervisor"),
        ctl: dir.join("palisade-ctl"),
        simd: dir.join("simd"),
        simchain_net: dir.join("simchain-net"),
    };
    let e = |error: palisade_testkit::Error| format!("{error:?}");
    let options = ClusterOptions {
        block: Duration::from_secs(1),
        ..ClusterOptions::default()
    };
    say(
        "starting etcd (3 members), the chain (1 s blocks, one sentry per host) and two supervisors sharing one vault",
    );
    let mut cluster = Cluster::start(&bins, &options).map_err(e)?;
    cluster.start_with_primary(0).map_err(e)?;
    say(&role(&cluster, 0));
    say(&role(&cluster, 1));

    let height = cluster.network.height().map_err(|e| e.to_string())?;
    say(&format!(
        "chain at height {height}: palisade-ctl failover handoff --to val-b (on val-a)"
    ));
    let asked = Instant::now();
    let output = cluster
        .host(0)
        .ctl(&["failover", "handoff", "--to", "val-b"], None)
        .map_err(e)?;
    print!("{}", String::from_utf8_lossy(&output.stdout));
    if !output.status.success() {
        return Err(format!(
            "handoff: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    cluster.host(1).wait_state("running").map_err(e)?;
    let signed = cluster
        .wait_signing(1, Duration::from_secs(60))
        .map_err(e)?;
    say(&format!(
        "val-b signs again at height {signed}, {:.1} s after the command",
        asked.elapsed().as_secs_f64()
    ));
    say(&role(&cluster, 0));
    say(&role(&cluster, 1));
    cluster
        .wait_signing(3, Duration::from_secs(60))
        .map_err(e)?;

    say("SIGKILL of every process of val-b's host (the primary)");
    let killed = Instant::now();
    cluster.hosts[1].signal_host(Signal::SIGKILL);
    cluster.host(0).wait_state("running").map_err(e)?;
    let signed = cluster
        .wait_signing(1, Duration::from_secs(90))
        .map_err(e)?;
    say(&format!(
        "val-a took over (lease expired, a new block, the key absent from the last 3 commits) and signs at height {signed}, {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    ));
    say(&role(&cluster, 0));
    cluster
        .wait_signing(3, Duration::from_secs(60))
        .map_err(e)?;

    let record = cluster.network.record().map_err(|e| e.to_string())?;
    let validator = &record.validators[&cluster.validator];
    say(&format!(
        "chain record: height {}, val1 signed {} heights, missed {}, double signs {}, heights signed by both hosts {:?}",
        record.height,
        validator.signed_heights,
        validator.missed_count,
        record.double_signs.len(),
        validator.multi_listener_heights
    ));
    if !record.double_signs.is_empty() || !validator.multi_listener_heights.is_empty() {
        return Err("the chain saw two signers".into());
    }
    say("0 double signs");
    Ok(())
}
