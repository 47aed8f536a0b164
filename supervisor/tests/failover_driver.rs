//! The leadership driver (`failover::driver`) against a real 3-member etcd cluster: it
//! campaigns only while eligible, reports every leadership it takes and every one it loses
//! without being asked, and a release gives up only the leadership it names. (The chaos
//! harness found a late release ending a newer leadership the machine still believed it held:
//! two signers.)

use std::time::Duration;

use palisade_etcd::{Client, ClientOptions, leader};
use palisade_supervisor::config::{FailoverSettings, TakeoverMode};
use palisade_supervisor::failover::driver::{self, DriverHandle};
use palisade_supervisor::failover::{Keys, LeaseEvent, SharedView};
use palisade_testkit::EtcdCluster;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(20);

fn settings(endpoints: Vec<String>) -> FailoverSettings {
    FailoverSettings {
        host_id: "val-a".into(),
        peers: vec!["val-b".into()],
        etcd_endpoints: endpoints,
        chain_rpc: vec!["http://127.0.0.1:1".into()],
        key_prefix: Some("/palisade/driver".into()),
        lease_ttl: Duration::from_secs(3),
        fence_margin: Duration::from_secs(1),
        poll_interval: Duration::from_millis(100),
        chain_guard_blocks: 3,
        takeover: TakeoverMode::Auto,
        handoff_timeout: Duration::from_secs(30),
    }
}

async fn next(events: &mut mpsc::UnboundedReceiver<LeaseEvent>) -> LeaseEvent {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("a lease event in time")
        .expect("the driver is alive")
}

async fn acquired(events: &mut mpsc::UnboundedReceiver<LeaseEvent>) -> i64 {
    loop {
        if let LeaseEvent::Acquired { token, .. } = next(events).await {
            return token;
        }
    }
}

fn start(cluster: &EtcdCluster) -> (DriverHandle, mpsc::UnboundedReceiver<LeaseEvent>) {
    start_with(cluster.endpoints())
}

fn start_with(endpoints: Vec<String>) -> (DriverHandle, mpsc::UnboundedReceiver<LeaseEvent>) {
    let (sender, events) = mpsc::unbounded_channel();
    let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]).verifying_key();
    let handle = driver::spawn(
        settings(endpoints),
        Keys {
            group: "/palisade/driver".into(),
        },
        key,
        SharedView::default(),
        sender,
    )
    .unwrap();
    (handle, events)
}

#[tokio::test]
async fn a_release_ends_only_the_leadership_it_names_and_every_loss_is_reported() {
    let cluster = EtcdCluster::start(3).unwrap();
    let client = Client::new(cluster.endpoints(), ClientOptions::default()).unwrap();
    let (driver, mut events) = start(&cluster);

    // Not eligible: no campaign.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(events.try_recv().is_err());
    assert!(
        leader::current_leader(&client, "/palisade/driver/leader")
            .await
            .unwrap()
            .is_none()
    );

    driver.set_eligible(true);
    let first = acquired(&mut events).await;
    driver.set_eligible(false);
    // A release of an older leadership (late) changes nothing: renewals go on.
    driver.release(first - 1);
    let mut renewed = 0;
    while renewed < 3 {
        match next(&mut events).await {
            LeaseEvent::Renewed { token, .. } => {
                assert_eq!(token, first);
                renewed += 1;
            }
            other => panic!("the leadership {first} ended: {other:?}"),
        }
    }
    let holder = leader::current_leader(&client, "/palisade/driver/leader")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(holder.token.0, first);

    // Deposed by hand: the loss is reported with its token.
    client.delete("/palisade/driver/leader").await.unwrap();
    loop {
        match next(&mut events).await {
            LeaseEvent::Lost { token, reason } => {
                assert_eq!(token, first, "{reason}");
                break;
            }
            LeaseEvent::Renewed { .. } => {}
            other => panic!("{other:?}"),
        }
    }

    // A new leadership; the stale release of the first, arriving now, leaves it alone; its
    // own release ends it.
    driver.set_eligible(true);
    let second = acquired(&mut events).await;
    driver.set_eligible(false);
    assert!(second > first);
    driver.release(first);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let holder = leader::current_leader(&client, "/palisade/driver/leader")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(holder.token.0, second);
    driver.release(second);
    tokio::time::timeout(WAIT, async {
        while leader::current_leader(&client, "/palisade/driver/leader")
            .await
            .unwrap()
            .is_some()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the released leadership is gone");
    while let Ok(event) = events.try_recv() {
        assert!(
            matches!(event, LeaseEvent::Renewed { .. }),
            "a release the machine asked for is not reported as a loss: {event:?}"
        );
    }
}

/// A handoff whose txn answer is lost (a tunnel's local forward to a bastion that is down still
/// accepts the connection) reads back what etcd did and tries again through another member,
/// instead of failing the handoff. (Found by the network-namespace test: one bastion's sshd
/// down, the handoff's txn sent to its forward.)
#[tokio::test]
async fn a_handoff_whose_answer_is_lost_reads_back_and_completes_elsewhere() {
    let cluster = EtcdCluster::start(3).unwrap();
    let client = Client::new(cluster.endpoints(), ClientOptions::default()).unwrap();
    // The first endpoint, the one the driver starts with, goes through a proxy that can be cut.
    let proxy = palisade_testkit::failover::Proxy::start(
        cluster
            .endpoint(0)
            .trim_start_matches("http://")
            .to_string(),
    )
    .unwrap();
    let mut endpoints = cluster.endpoints();
    endpoints[0] = format!("http://{}", proxy.addr);
    let (driver, mut events) = start_with(endpoints);
    driver.set_eligible(true);
    let token = acquired(&mut events).await;
    driver.set_eligible(false);
    // Cut the endpoint in use (it accepts and closes), then hand over at once.
    proxy.set_cut(true);
    let record = b"a signed handoff record".to_vec();
    driver
        .hand_off(record.clone(), token)
        .await
        .expect("the handoff completes through another member");
    assert_eq!(
        client
            .get("/palisade/driver/handoff")
            .await
            .unwrap()
            .kv
            .unwrap()
            .value,
        record
    );
    assert!(
        leader::current_leader(&client, "/palisade/driver/leader")
            .await
            .unwrap()
            .is_none()
    );
}
