//! The failover guard's reading of the chain, end to end: the real `simchain-net` with a sentry
//! serving CometBFT's RPC and a real `simd` validator. `signed_in_last` — through the sentry's
//! RPC as a standby host would reach it through its tunnel, and through the node's own RPC —
//! sees the validator's precommits while it signs and their absence once it is stopped, in
//! agreement with the network's record.

mod common;

use std::time::Duration;

use palisade_simchain::testkit::{
    ListenerOptions, SimNetwork, SimNetworkOptions, SimdProcess, free_port, write_validator_home,
};
use palisade_supervisor::node::rpc::{SignedWindow, signed_in_last};

use common::{simd, workspace_binary};

const WAIT: Duration = Duration::from_secs(30);
/// The window the guard reads.
const K: u64 = 5;

fn window(base: &str, address: &str) -> SignedWindow {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(signed_in_last(base, address, K))
        .unwrap_or_else(|e| panic!("{base}: {e}"))
}

#[test]
fn signed_in_last_sees_signatures_then_their_absence_through_the_sentry() {
    let dir = tempfile::tempdir().unwrap();
    let validator =
        write_validator_home(&dir.path().join("val1"), "val1", "sim-1", "", free_port()).unwrap();
    let network = SimNetwork::spawn(
        &workspace_binary("simchain-net"),
        std::slice::from_ref(&validator),
        &SimNetworkOptions {
            block_time: Duration::from_millis(100),
            log_file: Some(dir.path().join("network.log")),
            listeners: vec![ListenerOptions {
                name: Some("sentry-a".into()),
                addr: "127.0.0.1:0".into(),
                node_key: None,
                rpc_addr: Some("127.0.0.1:0".into()),
            }],
            ..SimNetworkOptions::default()
        },
    )
    .unwrap();
    let sentry_rpc = network.listener("sentry-a").unwrap().rpc_url().unwrap();
    let node_rpc = validator.rpc_laddr.replace("tcp://", "http://");
    network.attach_home(&validator.home).unwrap();
    let mut node = SimdProcess::start(&simd(), &validator.home, &[], &[]).unwrap();
    network
        .wait_for(WAIT, |r| r.validators["val1"].signed_heights >= K + 3)
        .unwrap();

    // Signing: the guard must see the key at work, through either RPC.
    for base in [&sentry_rpc, &node_rpc] {
        let seen = window(base, &validator.address);
        assert!(seen.key_active(), "{base}: {seen:?}");
        assert_eq!(seen.heights_checked.len() as u64, K, "{seen:?}");
        assert_eq!(*seen.heights_checked.last().unwrap(), seen.latest);
        let record = network.record().unwrap();
        let val1 = &record.validators["val1"];
        for height in &seen.signed_heights {
            assert!(
                !val1.missed_heights.contains(height)
                    && val1.first_signed_height.unwrap() <= *height
                    && *height <= val1.last_signed_height.unwrap(),
                "{base}: height {height} is signed in /commit but not in the record: {val1:?}"
            );
        }
    }

    // Stopped: once K blocks have passed without it, the window holds no precommit of it,
    // and every height read is one the record counts as missed.
    node.kill();
    let stopped = network.record().unwrap().validators["val1"]
        .last_signed_height
        .unwrap();
    let record = network.wait_for(WAIT, |r| r.height > stopped + K).unwrap();
    let seen = window(&sentry_rpc, &validator.address);
    assert!(!seen.key_active(), "{seen:?}");
    assert!(seen.latest > stopped + K, "{seen:?}");
    let record = if record.height < seen.latest {
        network.wait_for(WAIT, |r| r.height >= seen.latest).unwrap()
    } else {
        record
    };
    for height in &seen.heights_checked {
        assert!(
            record.validators["val1"].missed_heights.contains(height),
            "height {height} read as unsigned but the record does not count it missed: {:?}",
            record.validators["val1"]
        );
    }
}
