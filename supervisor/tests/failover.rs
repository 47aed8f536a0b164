//! Failover between two validator hosts, end to end (issue 13, `docs/failover.md`): two real
//! `palisade-supervisor`s sharing one vault and one backup store, each with its own simulated
//! node for the same validator key, a real 3-member etcd cluster (Debian `etcd-server`), and
//! the simulated chain, whose record says who signed what. The chain view of both hosts is a
//! sentry's CometBFT RPC.
//!
//! - a planned handoff there and back, then a forged, a tampered and a replayed handoff
//!   record, all refused;
//! - the primary's whole host killed: the standby takes over under the takeover rule;
//! - the primary cut from etcd (its etcd connections go through a proxy the test cuts) while
//!   it still reaches the chain: it fences itself, the standby takes over, and after the
//!   partition heals the old primary stays standby;
//! - the primary's whole host stopped (SIGSTOP) past its lease: on SIGCONT it kills its node
//!   before anything else, and the standby has taken over.
//!
//! Every test ends with the chain's record: zero double signs.

mod common;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use palisade_testkit::failover::{Cluster, ClusterOptions, Host, KEY_PREFIX, WAIT};

use common::process_alive;

/// `[failover] lease-ttl` of both hosts (`ClusterOptions::default`).
const TTL_S: u64 = 3;

/// Host a (`val-a`) the primary, host b (`val-b`) a standby.
fn pair() -> Cluster {
    let mut cluster =
        Cluster::start(&common::failover_binaries(), &ClusterOptions::default()).unwrap();
    cluster.start_with_primary(0).unwrap();
    cluster
}

fn failover(host: &Host) -> serde_json::Value {
    let output = host.ctl(&["--json", "failover", "status"], None).unwrap();
    assert!(
        output.status.success(),
        "{} failover status: {output:?}",
        host.id
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn ctl(host: &Host, args: &[&str]) -> std::process::Output {
    host.ctl(args, None).unwrap()
}

fn assert_safe(cluster: &Cluster) {
    let (double_signs, both) = cluster.violations().unwrap();
    if double_signs > 0 || !both.is_empty() {
        let record = cluster.network.record().unwrap();
        eprintln!(
            "record of val1: {}",
            serde_json::to_string_pretty(&record.validators["val1"]).unwrap()
        );
        eprintln!(
            "network log:\n{}",
            std::fs::read_to_string(cluster.dir.path().join("network.log")).unwrap_or_default()
        );
    }
    assert_eq!(double_signs, 0, "double signs\n{}", cluster.tails());
    assert!(
        both.is_empty(),
        "heights signed by both hosts: {both:?}\n{}",
        cluster.tails()
    );
}

fn etcd_client(cluster: &Cluster) -> palisade_etcd::Client {
    palisade_etcd::Client::new(cluster.etcd.endpoints(), Default::default()).unwrap()
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

#[test]
fn planned_handoff_there_and_back_then_forged_tampered_and_replayed_records_are_refused() {
    let pair = pair();
    let status = failover(&pair.hosts[0]);
    assert_eq!(status["role"], "primary", "{status}");
    assert_eq!(status["leader"], "val-a", "{status}");
    let first_token = status["token"].as_i64().unwrap();
    assert_eq!(failover(&pair.hosts[1])["role"], "standby");
    pair.hosts[1]
        .wait_status("b sees a leading", WAIT, |s| {
            s["failover"]["leader"] == "val-a"
        })
        .unwrap();

    // Refusals change nothing: on the standby, to an unknown host.
    let output = ctl(&pair.hosts[1], &["failover", "handoff", "--to", "val-a"]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("not the primary"),
        "{output:?}"
    );
    let output = ctl(&pair.hosts[0], &["failover", "handoff", "--to", "val-z"]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("not one of this validator's hosts"),
        "{output:?}"
    );

    // a → b.
    let before = pair.network.height().unwrap();
    let asked = Instant::now();
    let output = ctl(
        &pair.hosts[0],
        &["--json", "failover", "handoff", "--to", "val-b"],
    );
    assert!(
        output.status.success(),
        "handoff: {output:?}\n{}",
        pair.tails()
    );
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answer["to"], "val-b", "{answer}");
    assert_eq!(answer["node"], "standby", "{answer}");
    assert_eq!(answer["token"], first_token, "{answer}");
    pair.hosts[1].wait_state("running").unwrap();
    let record_a_to_b = block_on(etcd_client(&pair).get(&format!("{KEY_PREFIX}/handoff")))
        .unwrap()
        .kv
        .unwrap()
        .value;
    let first_vote = pair.wait_signing(1, WAIT).unwrap();
    let took = asked.elapsed();
    let missed = pair
        .network
        .record()
        .unwrap()
        .missed_between("val1", before, first_vote);
    eprintln!(
        "handoff a→b: first vote at {first_vote} ({} blocks after the command at {before}), {took:?}, missed {missed:?}",
        first_vote - before
    );
    // The benchmark measures the figure (failover_planned_missed_blocks, at 1 s blocks); here,
    // at 300 ms blocks on a loaded CI machine, only a gross regression fails.
    assert!(missed.len() <= 10, "missed {missed:?}");
    assert_eq!(failover(&pair.hosts[0])["role"], "standby");
    // a learns the new leader at its next look at etcd.
    pair.hosts[0]
        .wait_status("a sees b leading", WAIT, |s| {
            s["failover"]["leader"] == "val-b"
        })
        .unwrap();
    assert!(
        pair.hosts[1]
            .log()
            .contains("by a verified handoff from val-a"),
        "{}",
        pair.tails()
    );
    // The record went to the store too.
    let in_store = std::fs::read_dir(pair.dir.path().join("shared-backups"))
        .unwrap()
        .filter_map(Result::ok)
        .any(|entry| entry.file_name().to_string_lossy().starts_with("handoff-"));
    assert!(in_store, "no handoff record in the shared store");

    // b → a, with the shared store down (as a bastion that is down): the final backup goes to
    // the stores that answer, and a raises its sign state to the record's watermark.
    let shared = pair.dir.path().join("shared-backups");
    let aside = pair.dir.path().join("shared-backups.down");
    std::fs::rename(&shared, &aside).unwrap();
    let output = ctl(
        &pair.hosts[1],
        &["--json", "failover", "handoff", "--to", "val-a"],
    );
    assert!(
        output.status.success(),
        "handoff back: {output:?}\n{}",
        pair.tails()
    );
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answer["stores"], serde_json::json!(["local"]), "{answer}");
    let final_height = answer["watermark"]
        .as_str()
        .and_then(|w| w.split_whitespace().nth(1))
        .and_then(|h| h.parse::<u64>().ok())
        .unwrap();
    pair.hosts[0].wait_state("running").unwrap();
    pair.wait_signing(2, WAIT).unwrap();
    assert!(
        pair.hosts[0].watermark().unwrap().0 >= final_height,
        "a signs below b's final state"
    );
    std::fs::rename(&aside, &shared).unwrap();
    let token_a = failover(&pair.hosts[0])["token"].as_i64().unwrap();
    assert!(token_a > first_token);
    assert_safe(&pair);

    // Automatic takeover paused, a's whole host killed: b stays standby.
    let output = ctl(&pair.hosts[1], &["failover", "pause"]);
    assert!(output.status.success(), "pause: {output:?}");
    pair.hosts[0].signal_host(Signal::SIGKILL);
    let a_last = pair.network.record().unwrap().validators["val1"]
        .last_signed_height
        .unwrap();
    let client = etcd_client(&pair);
    block_on(async {
        let deadline = Instant::now() + WAIT;
        while client
            .get(&format!("{KEY_PREFIX}/leader"))
            .await
            .unwrap()
            .kv
            .is_some()
        {
            assert!(Instant::now() < deadline, "a's lease never expired");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let note = pair.hosts[1]
        .wait_status("b's paused note", WAIT, |s| {
            s["failover"]["note"]
                .as_str()
                .is_some_and(|note| note.contains("paused"))
        })
        .unwrap();
    assert_eq!(note["node"]["state"], "standby");

    // A replayed genuine record (it names b, but hands over token 1 of a, not the last seen).
    block_on(client.put(&format!("{KEY_PREFIX}/handoff"), &record_a_to_b, None)).unwrap();
    // A tampered one: the token changed to the current one (its signature no longer holds).
    let text = String::from_utf8(record_a_to_b.clone()).unwrap();
    let tampered = text.replacen(
        &format!("\"from_token\":{first_token}"),
        &format!("\"from_token\":{token_a}"),
        1,
    );
    assert_ne!(tampered, text);
    // A forged one: well formed, signed with another key.
    let forged = {
        let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let record: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut inner = record["record"].clone();
        inner["from_token"] = token_a.into();
        let mut signed = b"palisade handoff record v1\n".to_vec();
        signed.extend(serde_json::to_vec(&inner).unwrap());
        use base64::Engine;
        use ed25519_dalek::Signer;
        let signature =
            base64::engine::general_purpose::STANDARD.encode(key.sign(&signed).to_bytes());
        serde_json::to_vec(&serde_json::json!({"record": inner, "signature": signature})).unwrap()
    };
    for (what, bytes, words) in [
        ("replayed", record_a_to_b.clone(), "replayed or stale"),
        ("tampered", tampered.into_bytes(), "does not verify"),
        ("forged", forged, "does not verify"),
    ] {
        block_on(client.put(&format!("{KEY_PREFIX}/handoff"), &bytes, None)).unwrap();
        let seen = Instant::now();
        while Instant::now() < seen + Duration::from_secs(3) {
            assert_eq!(
                pair.hosts[1].node_state().as_deref(),
                Some("standby"),
                "{what} record: b left standby\n{}",
                pair.tails()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            pair.hosts[1].log().contains(words),
            "{what}: {words:?}\n{}",
            pair.tails()
        );
    }
    assert!(
        pair.network.record().unwrap().validators["val1"]
            .last_signed_height
            .unwrap()
            <= a_last + 1,
        "someone signed while b should have waited"
    );

    // Resumed: b takes over under the takeover rule (not by any of those records).
    let output = ctl(&pair.hosts[1], &["failover", "resume"]);
    assert!(output.status.success(), "resume: {output:?}");
    pair.hosts[1].wait_state("running").unwrap();
    pair.wait_signing(2, WAIT).unwrap();
    assert!(
        pair.hosts[1].log().contains("chain guard"),
        "{}",
        pair.tails()
    );
    assert_safe(&pair);
}

#[test]
fn the_primary_cut_from_etcd_fences_itself_the_standby_takes_over_and_the_old_primary_stays_standby()
 {
    let pair = pair();
    let a_node = failover(&pair.hosts[0]);
    assert_eq!(a_node["role"], "primary");
    let pid_a = pair.hosts[0].status().unwrap()["node"]["pid"]
        .as_u64()
        .unwrap() as u32;

    // a loses etcd but still reaches the chain (its node keeps its peers).
    let cut_at = Instant::now();
    pair.hosts[0].set_etcd_cut(true);
    pair.hosts[0].wait_state("standby").unwrap();
    let fenced = cut_at.elapsed();
    assert!(!process_alive(pid_a), "a's node still runs after the fence");
    assert!(
        fenced < Duration::from_secs(TTL_S),
        "a fenced itself after {fenced:?}, not before its lease could expire ({TTL_S}s)"
    );
    assert!(pair.hosts[0].log().contains("fencing"), "{}", pair.tails());

    pair.hosts[1].wait_state("running").unwrap();
    pair.wait_signing(3, WAIT).unwrap();
    assert_safe(&pair);

    // The partition heals: a sees b's leadership and stays standby.
    pair.hosts[0].set_etcd_cut(false);
    let healed = pair.hosts[0]
        .wait_status("a sees b leading", WAIT, |s| {
            s["failover"]["leader"] == "val-b"
        })
        .unwrap();
    assert_eq!(healed["node"]["state"], "standby");
    pair.wait_signing(3, WAIT).unwrap();
    assert_eq!(pair.hosts[0].node_state().as_deref(), Some("standby"));
    assert_safe(&pair);
}

#[test]
fn stalled_and_killed_primaries_are_replaced_and_a_resumed_one_kills_its_node_at_once() {
    let pair = pair();

    // a's supervisor alone stalls past its lease; its node goes on signing. b takes the
    // lease, but the chain guard sees the key at work and b does not start.
    let node_a = pair.hosts[0].status().unwrap()["node"]["pid"]
        .as_u64()
        .unwrap() as u32;
    let supervisor_a = pair.hosts[0].supervisor_pid().unwrap();
    let stop = |pid: u32, signal: &str| {
        std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .unwrap();
    };
    stop(supervisor_a, "STOP");
    let guarded = pair.hosts[1]
        .wait_status("b held back by the chain guard", WAIT, |s| {
            s["failover"]["note"]
                .as_str()
                .is_some_and(|note| note.contains("signed at heights"))
        })
        .unwrap();
    assert_ne!(guarded["node"]["state"], "running", "{guarded}");
    assert_eq!(guarded["failover"]["leader"], "val-b", "{guarded}");
    let signing = pair.wait_signing(3, WAIT).unwrap();
    assert_ne!(
        pair.hosts[1].node_state().as_deref(),
        Some("running"),
        "b started while a's node was signing (height {signing})\n{}",
        pair.tails()
    );
    // Resumed: a's supervisor kills its node at once (its deadline passed long ago).
    assert!(process_alive(node_a), "a's node died on its own");
    stop(supervisor_a, "CONT");
    let resumed = Instant::now();
    common::wait_until(Duration::from_secs(5), "a's node killed on resume", || {
        !process_alive(node_a)
    });
    eprintln!(
        "a's node killed {:?} after its supervisor resumed",
        resumed.elapsed()
    );
    pair.hosts[0].wait_state("standby").unwrap();
    pair.hosts[1].wait_state("running").unwrap();
    pair.wait_signing(2, WAIT).unwrap();
    assert_safe(&pair);

    // b's whole host (supervisor and node) stopped past the lease: a takes over; on
    // SIGCONT, b's supervisor kills its node before it can sign.
    let node_b = pair.hosts[1].status().unwrap()["node"]["pid"]
        .as_u64()
        .unwrap() as u32;
    pair.hosts[1].signal_host(Signal::SIGSTOP);
    let stopped_at = Instant::now();
    pair.hosts[0].wait_state("running").unwrap();
    eprintln!("takeover after a stalled host: {:?}", stopped_at.elapsed());
    pair.wait_signing(2, WAIT).unwrap();
    assert!(process_alive(node_b), "b's node died on its own");
    pair.hosts[1].signal_host(Signal::SIGCONT);
    let resumed = Instant::now();
    common::wait_until(Duration::from_secs(5), "b's node killed on resume", || {
        !process_alive(node_b)
    });
    eprintln!("b's node killed {:?} after SIGCONT", resumed.elapsed());
    pair.hosts[1].wait_state("standby").unwrap();
    pair.wait_signing(3, WAIT).unwrap();
    assert_safe(&pair);

    // a's whole host killed: b takes over.
    pair.hosts[0].signal_host(Signal::SIGKILL);
    let killed = Instant::now();
    pair.hosts[1].wait_state("running").unwrap();
    pair.wait_signing(2, WAIT).unwrap();
    eprintln!("takeover after a killed host: {:?}", killed.elapsed());
    assert_safe(&pair);
}
