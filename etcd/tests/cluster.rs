//! The client and leadership against a real 3-member etcd cluster on loopback (each test its
//! own cluster, `palisade_testkit::EtcdCluster`), and against fake endpoints that answer
//! garbage, too much or nothing.

use std::time::{Duration, Instant};

use palisade_etcd::leader::{self, Acquisition, Campaign};
use palisade_etcd::{Client, ClientOptions, Created, Error, FailureKind, LeaderError};
use palisade_testkit::EtcdCluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEY: &str = "/palisade/val-1/leader";
/// etcd's minimum TTL with its default timing (1.5 × 1 s election timeout, rounded up).
const TTL: Duration = Duration::from_secs(2);
const MARGIN: Duration = Duration::from_millis(500);

fn options(request_timeout: Duration) -> ClientOptions {
    ClientOptions {
        request_timeout,
        connect_timeout: Duration::from_millis(500),
        ..ClientOptions::default()
    }
}

fn client(endpoints: Vec<String>) -> Client {
    Client::new(endpoints, options(Duration::from_secs(3))).unwrap()
}

fn campaign(host: &str) -> Campaign {
    Campaign::new(KEY, host, TTL, MARGIN).unwrap()
}

async fn acquire(client: &Client, host: &str) -> leader::Acquired {
    match campaign(host).try_acquire(client).await.unwrap() {
        Acquisition::Acquired(acquired) => acquired,
        Acquisition::HeldBy(holder) => panic!("{host}: held by {holder:?}"),
    }
}

/// The index of the member that is not the Raft leader, for tests that must not cause an
/// election.
async fn a_follower(cluster: &EtcdCluster, client: &Client) -> usize {
    let status = client.member_status(&cluster.endpoint(0)).await.unwrap();
    for i in 0..cluster.len() {
        let member = client.member_status(&cluster.endpoint(i)).await.unwrap();
        if member.member_id != status.leader {
            return i;
        }
    }
    panic!("every member is the leader: {cluster:?}");
}

#[tokio::test]
async fn put_get_delete_round_trip() {
    let cluster = EtcdCluster::start(3).unwrap();
    let client = client(cluster.endpoints());
    let value = b"\x00\xffbinary, not UTF-8";
    let put_revision = client.put("/palisade/k", value, None).await.unwrap();
    let got = client.get("/palisade/k").await.unwrap();
    let kv = got.kv.unwrap();
    assert_eq!(
        (kv.key.as_slice(), kv.value.as_slice()),
        (&b"/palisade/k"[..], &value[..])
    );
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (put_revision, put_revision, 1)
    );
    assert_eq!((kv.lease, got.revision), (None, put_revision));
    assert!(
        !format!("{kv:?}").contains("binary"),
        "values never show in Debug: {kv:?}"
    );

    let second = client.put("/palisade/k", b"", None).await.unwrap();
    let kv = client.get("/palisade/k").await.unwrap().kv.unwrap();
    assert_eq!(
        (
            kv.value.len(),
            kv.create_revision,
            kv.mod_revision,
            kv.version
        ),
        (0, put_revision, second, 2)
    );

    assert!(client.delete("/palisade/k").await.unwrap());
    assert_eq!(client.get("/palisade/k").await.unwrap().kv, None);
    assert!(
        !client.delete("/palisade/k").await.unwrap(),
        "nothing left to delete"
    );

    // Compare-and-swap on the mod revision.
    let created = client.put("/palisade/cas", b"1", None).await.unwrap();
    assert!(
        !client
            .put_if_mod_revision("/palisade/cas", b"x", created + 100, None)
            .await
            .unwrap()
    );
    assert!(
        client
            .put_if_mod_revision("/palisade/cas", b"2", created, None)
            .await
            .unwrap()
    );
    assert!(
        !client
            .delete_if_mod_revision("/palisade/cas", created)
            .await
            .unwrap(),
        "stale"
    );
    let kv = client.get("/palisade/cas").await.unwrap().kv.unwrap();
    assert_eq!(kv.value, b"2");
    assert!(
        client
            .delete_if_mod_revision("/palisade/cas", kv.mod_revision)
            .await
            .unwrap()
    );
    assert!(matches!(
        client.delete_if_create_revision("/palisade/cas", 0).await,
        Err(Error::InvalidArgument { .. })
    ));

    // Every member agrees on the leader and reports the version Debian ships.
    let statuses = futures_all(&client, &cluster).await;
    assert!(
        statuses.iter().all(|s| s.version.starts_with("3.4.")),
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|s| s.leader == statuses[0].leader && s.leader != 0)
    );
}

async fn futures_all(client: &Client, cluster: &EtcdCluster) -> Vec<palisade_etcd::MemberStatus> {
    let mut statuses = Vec::new();
    for endpoint in cluster.endpoints() {
        statuses.push(client.member_status(&endpoint).await.unwrap());
    }
    statuses
}

#[tokio::test]
async fn create_if_absent_races_have_exactly_one_winner() {
    let cluster = EtcdCluster::start(3).unwrap();
    let mut reversed = cluster.endpoints();
    reversed.reverse();
    let (a, b) = (client(cluster.endpoints()), client(reversed));
    for round in 0..20 {
        let key = format!("/palisade/race/{round}");
        let (from_a, from_b) = tokio::join!(
            a.create_if_absent(&key, b"host-a", None),
            b.create_if_absent(&key, b"host-b", None)
        );
        let (winner, revision, loser) = match (from_a.unwrap(), from_b.unwrap()) {
            (Created::Created { revision }, Created::Existing(kv)) => ("host-a", revision, kv),
            (Created::Existing(kv), Created::Created { revision }) => ("host-b", revision, kv),
            other => panic!("round {round}: not exactly one winner: {other:?}"),
        };
        assert_eq!(loser.value, winner.as_bytes(), "round {round}");
        assert_eq!(loser.create_revision, revision, "round {round}");
        let stored = a.get(&key).await.unwrap().kv.unwrap();
        assert_eq!(
            (stored.value.as_slice(), stored.create_revision),
            (winner.as_bytes(), revision)
        );
    }
}

#[tokio::test]
async fn without_keep_alive_the_lease_expires_and_deletes_the_leader_key() {
    let cluster = EtcdCluster::start(3).unwrap();
    let client = client(cluster.endpoints());
    let before = Instant::now();
    let acquired = acquire(&client, "host-a").await;
    assert!(acquired.expires_at_local() <= Instant::now() + TTL);
    assert!(acquired.expires_at_local() >= before + TTL);
    let holder = leader::current_leader(&client, KEY).await.unwrap().unwrap();
    assert_eq!(
        (holder.host_id.as_str(), holder.token, holder.lease),
        ("host-a", acquired.token(), Some(acquired.lease()))
    );

    while leader::current_leader(&client, KEY)
        .await
        .unwrap()
        .is_some()
    {
        assert!(
            before.elapsed() < TTL + Duration::from_secs(5),
            "the key outlived its lease"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gone_after = before.elapsed();
    // The key went no earlier than the conservative local deadline.
    assert!(
        Instant::now() >= acquired.expires_at_local(),
        "gone after {gone_after:?}"
    );
    assert!(!acquired.may_sign(Instant::now()));

    // Everything about the lease now says it is gone.
    let lease = acquired.lease();
    assert!(
        client
            .keep_alive_once(lease)
            .await
            .unwrap_err()
            .is_lease_expired()
    );
    assert!(
        client
            .time_to_live(lease)
            .await
            .unwrap_err()
            .is_lease_expired()
    );
    assert!(
        client
            .put("/palisade/x", b"v", Some(lease))
            .await
            .unwrap_err()
            .is_lease_expired()
    );
    assert!(client.revoke(lease).await.unwrap_err().is_lease_expired());
    let mut acquired = acquired;
    let deadline = acquired.expires_at_local();
    match leader::renew(&client, &mut acquired).await {
        Err(LeaderError::Etcd(error)) if error.is_lease_expired() => {}
        other => panic!("renewing an expired lease: {other:?}"),
    }
    assert_eq!(
        acquired.expires_at_local(),
        deadline,
        "a failed renewal extends nothing"
    );
}

#[tokio::test]
async fn keep_alive_extends_the_lease() {
    let cluster = EtcdCluster::start(3).unwrap();
    let client = client(cluster.endpoints());
    let mut acquired = acquire(&client, "host-a").await;
    let first_deadline = acquired.expires_at_local();
    let started = Instant::now();
    while started.elapsed() < 2 * TTL {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let sent = Instant::now();
        let deadline = leader::renew(&client, &mut acquired).await.unwrap();
        let answered = Instant::now();
        // Counted from the send time: between ours and the answer's.
        assert!(deadline >= sent + TTL && deadline <= answered + TTL);
        assert!(acquired.may_sign(Instant::now()));
    }
    assert!(acquired.expires_at_local() > first_deadline + TTL);
    let holder = leader::current_leader(&client, KEY).await.unwrap().unwrap();
    assert_eq!(
        holder.token,
        acquired.token(),
        "the same incarnation of the key"
    );
    let ttl = client.time_to_live(acquired.lease()).await.unwrap();
    assert_eq!(ttl.granted_secs, 2);
    assert!(ttl.remaining_secs >= 1, "{ttl:?}");
    assert!(client.keep_alive_once(acquired.lease()).await.unwrap() == 2);
}

#[tokio::test]
async fn a_second_host_takes_over_only_after_the_first_lease_expired_with_a_higher_token() {
    let cluster = EtcdCluster::start(3).unwrap();
    let (a, b) = (client(cluster.endpoints()), client(cluster.endpoints()));
    let first = acquire(&a, "host-a").await;
    let taken_over = loop {
        match campaign("host-b").try_acquire(&b).await.unwrap() {
            Acquisition::Acquired(acquired) => break acquired,
            Acquisition::HeldBy(holder) => {
                assert_eq!(
                    (holder.host_id.as_str(), holder.token),
                    ("host-a", first.token())
                );
                // The safety property: while A may still sign, B never becomes leader.
                assert!(Instant::now() < first.expires_at_local() + Duration::from_secs(5));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let now = Instant::now();
    assert!(
        now >= first.expires_at_local(),
        "B led before A's lease could have expired"
    );
    assert!(!first.may_sign(now));
    assert!(
        taken_over.token() > first.token(),
        "{:?} !> {:?}",
        taken_over.token(),
        first.token()
    );

    // A's resignation, late, must not remove B.
    assert!(!leader::resign(&a, first).await.unwrap());
    let holder = leader::current_leader(&a, KEY).await.unwrap().unwrap();
    assert_eq!(
        (holder.host_id.as_str(), holder.token),
        ("host-b", taken_over.token())
    );
}

#[tokio::test]
async fn resigning_releases_the_key_at_once() {
    let cluster = EtcdCluster::start(3).unwrap();
    let (a, b) = (client(cluster.endpoints()), client(cluster.endpoints()));
    let first = acquire(&a, "host-a").await;
    let lease = first.lease();
    let token = first.token();
    let started = Instant::now();
    assert!(leader::resign(&a, first).await.unwrap());
    let second = acquire(&b, "host-b").await;
    assert!(started.elapsed() < TTL, "no wait for the TTL");
    assert!(second.token() > token);
    assert!(
        a.time_to_live(lease).await.unwrap_err().is_lease_expired(),
        "revoked"
    );
}

#[tokio::test]
async fn a_handoff_txn_writes_the_record_and_frees_the_key_only_for_the_current_leader() {
    let cluster = EtcdCluster::start(3).unwrap();
    let client = client(cluster.endpoints());
    const RECORD: &str = "/palisade/val-1/handoff";
    let first = acquire(&client, "host-a").await;
    let stale = first.token();
    leader::resign(&client, first).await.unwrap();
    let current = acquire(&client, "host-b").await;
    assert!(current.token() > stale);

    // A leader whose key was replaced (the stale token) writes nothing and frees nothing.
    let done = client
        .put_and_delete_if_create_revision(KEY, stale.0, RECORD, b"stale")
        .await
        .unwrap();
    assert!(!done);
    assert!(client.get(RECORD).await.unwrap().kv.is_none());
    let holder = leader::current_leader(&client, KEY).await.unwrap().unwrap();
    assert_eq!(holder.token, current.token());

    // The current leader: the record appears exactly as the key goes.
    let done = client
        .put_and_delete_if_create_revision(KEY, current.token().0, RECORD, b"to host-a")
        .await
        .unwrap();
    assert!(done);
    assert_eq!(
        client.get(RECORD).await.unwrap().kv.unwrap().value,
        b"to host-a"
    );
    assert!(
        leader::current_leader(&client, KEY)
            .await
            .unwrap()
            .is_none()
    );

    // A revision that no key can have is refused before anything is sent.
    let error = client
        .put_and_delete_if_create_revision(KEY, 0, RECORD, b"x")
        .await
        .unwrap_err();
    assert!(error.to_string().contains("revision 0"), "{error}");
}

#[tokio::test]
async fn the_same_host_after_a_restart_waits_for_its_old_lease() {
    let cluster = EtcdCluster::start(3).unwrap();
    let client = client(cluster.endpoints());
    let old = acquire(&client, "host-a").await;
    match campaign("host-a").try_acquire(&client).await.unwrap() {
        Acquisition::HeldBy(holder) => {
            assert_eq!(
                (holder.host_id.as_str(), holder.lease),
                ("host-a", Some(old.lease()))
            )
        }
        Acquisition::Acquired(acquired) => panic!("a second leadership: {acquired:?}"),
    }
}

#[tokio::test]
async fn killing_the_member_in_use_fails_over_to_another() {
    let cluster = EtcdCluster::start(3).unwrap();
    let probe = client(cluster.endpoints());
    // A follower, so that killing it causes no election (that is the next test's case).
    let used = a_follower(&cluster, &probe).await;
    let mut endpoints = cluster.endpoints();
    endpoints.rotate_left(used);
    let client = Client::new(endpoints, options(Duration::from_secs(2))).unwrap();
    client.put("/palisade/k", b"v", None).await.unwrap();
    assert_eq!(cluster.member_of(client.current_endpoint()), Some(used));

    let mut cluster = cluster;
    cluster.kill(used);
    let started = Instant::now();
    let kv = client.get("/palisade/k").await.unwrap().kv.unwrap();
    assert_eq!(kv.value, b"v");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let now_used = cluster.member_of(client.current_endpoint()).unwrap();
    assert_ne!(now_used, used);
    // And it stays there: the dead member is not tried first again.
    client.put("/palisade/k", b"w", None).await.unwrap();
    assert_eq!(cluster.member_of(client.current_endpoint()), Some(now_used));
}

#[tokio::test]
async fn killing_the_raft_leader_costs_an_election_not_an_error() {
    let mut cluster = EtcdCluster::start(3).unwrap();
    let probe = client(cluster.endpoints());
    let status = probe.member_status(&cluster.endpoint(0)).await.unwrap();
    let mut leader_index = None;
    for i in 0..3 {
        if probe
            .member_status(&cluster.endpoint(i))
            .await
            .unwrap()
            .member_id
            == status.leader
        {
            leader_index = Some(i);
        }
    }
    let leader_index = leader_index.unwrap();
    let mut endpoints = cluster.endpoints();
    endpoints.rotate_left(leader_index);
    // Long enough for an election (1 s timeout, plus the pre-vote round and a loaded CI).
    let client = Client::new(endpoints, options(Duration::from_secs(6))).unwrap();
    client.put("/palisade/k", b"v", None).await.unwrap();
    cluster.kill(leader_index);
    let kv = client.get("/palisade/k").await.unwrap().kv.unwrap();
    assert_eq!(kv.value, b"v");
    assert_ne!(
        cluster.member_of(client.current_endpoint()),
        Some(leader_index)
    );
}

#[tokio::test]
async fn a_lost_majority_fails_requests_within_the_timeout_and_recovers() {
    let mut cluster = EtcdCluster::start(3).unwrap();
    let request_timeout = Duration::from_secs(1);
    let client = Client::new(cluster.endpoints(), options(request_timeout)).unwrap();
    client.put("/palisade/k", b"v", None).await.unwrap();
    cluster.kill(0);
    cluster.kill(1);

    // The two dead members refuse at once; the survivor, without a quorum, gets the
    // request timeout. One pass, no hang.
    let started = Instant::now();
    let error = client.get("/palisade/k").await.unwrap_err();
    let took = started.elapsed();
    assert!(
        took < request_timeout + Duration::from_millis(800),
        "{took:?}"
    );
    let Error::Unavailable {
        operation,
        failures,
    } = &error
    else {
        panic!("{error:?}");
    };
    assert_eq!(*operation, "get");
    assert_eq!(failures.len(), 3, "{error}");
    let kinds: Vec<FailureKind> = failures.iter().map(|f| f.kind).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == FailureKind::Connect).count(),
        2,
        "{error}"
    );
    assert!(error.to_string().contains(&cluster.endpoint(2)), "{error}");

    // Campaigning fails as fast, and says why.
    let started = Instant::now();
    match campaign("host-a").try_acquire(&client).await {
        Err(LeaderError::Etcd(Error::Unavailable {
            operation: "lease grant",
            ..
        })) => {}
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < request_timeout + Duration::from_millis(800));
    // A compare-and-swap sent to the survivor is not retried: its outcome is unknown.
    match client
        .put_if_mod_revision("/palisade/k", b"w", 1, None)
        .await
    {
        Err(Error::OutcomeUnknown { endpoint, .. }) => assert_eq!(endpoint, cluster.endpoint(2)),
        // Tried on a dead member last time: the connection is refused, then the survivor.
        Err(Error::Unavailable { .. }) => {}
        other => panic!("{other:?}"),
    }

    cluster.restart(0).unwrap();
    let kv = client.get("/palisade/k").await.unwrap().kv.unwrap();
    assert_eq!(kv.value, b"v");
    assert!(matches!(
        campaign("host-a").try_acquire(&client).await.unwrap(),
        Acquisition::Acquired(_)
    ));
}

/// A fake endpoint on loopback: for each connection, reads the request head and answers
/// `answer` (raw bytes, then closes), or never answers if `None`.
async fn fake_endpoint(answer: Option<Vec<u8>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut request = vec![0; 64 * 1024];
                let _ = stream.read(&mut request).await;
                match answer {
                    Some(answer) => {
                        let _ = stream.write_all(&answer).await;
                        let _ = stream.shutdown().await;
                    }
                    None => tokio::time::sleep(Duration::from_secs(3600)).await,
                }
            });
        }
    });
    endpoint
}

fn http(status: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(body);
    answer
}

#[tokio::test]
async fn hostile_endpoints_give_clear_errors_within_the_timeout() {
    let request_timeout = Duration::from_millis(800);
    let two_mib = vec![b'x'; 2 * 1024 * 1024];
    let mut chunked =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..40 {
        chunked.extend_from_slice(format!("{:x}\r\n", 64 * 1024).as_bytes());
        chunked.extend_from_slice(&[b'{'; 64 * 1024]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    // (name, answer, what the error must be)
    type Check = fn(&Error) -> bool;
    let cases: Vec<(&str, Option<Vec<u8>>, Check)> = vec![
        (
            "garbage JSON",
            Some(http("200 OK", "application/json", b"not json\x00\xff")),
            |e| {
                matches!(
                    e,
                    Error::Malformed {
                        operation: "get",
                        ..
                    }
                )
            },
        ),
        (
            "JSON without a header",
            Some(http("200 OK", "application/json", b"{}")),
            |e| matches!(e, Error::Malformed { .. }),
        ),
        (
            "2 MiB with a length",
            Some(http("200 OK", "application/json", &two_mib)),
            |e| {
                matches!(
                    e,
                    Error::TooLarge {
                        limit: 1_048_576,
                        ..
                    }
                )
            },
        ),
        ("2.5 MiB chunked", Some(chunked), |e| {
            matches!(e, Error::TooLarge { .. })
        }),
        (
            "not HTTP",
            Some(b"SSH-2.0-OpenSSH_9.2\r\n".to_vec()),
            |e| matches!(e, Error::Unavailable { failures, .. } if failures[0].kind == FailureKind::Broken),
        ),
        (
            "never answers",
            None,
            |e| matches!(e, Error::Unavailable { failures, .. } if failures[0].kind == FailureKind::Timeout),
        ),
        (
            "a plain 404",
            Some(http("404 Not Found", "text/plain", b"Not Found\n")),
            |e| matches!(e, Error::Http { status: 404, body, .. } if body == "Not Found\\n"),
        ),
        (
            "an etcd error",
            Some(http(
                "400 Bad Request",
                "application/json",
                br#"{"error":"x","message":"etcdserver: bad\n","code":3}"#,
            )),
            |e| matches!(e, Error::Server { status: 400, code: 3, message, .. } if message == "etcdserver: bad\\n"),
        ),
        (
            "a redirect elsewhere",
            Some(http(
                "307 Temporary Redirect\r\nLocation: http://192.0.2.1/",
                "text/plain",
                b"",
            )),
            |e| matches!(e, Error::Http { status: 307, .. }),
        ),
    ];
    for (name, answer, check) in cases {
        let endpoint = fake_endpoint(answer).await;
        let client = Client::new(vec![endpoint.clone()], options(request_timeout)).unwrap();
        let started = Instant::now();
        let error = client.get("/palisade/k").await.unwrap_err();
        let took = started.elapsed();
        assert!(check(&error), "{name}: {error:?}");
        assert!(
            took < request_timeout + Duration::from_millis(500),
            "{name}: {took:?}"
        );
        let message = error.to_string();
        assert!(
            message.contains(&endpoint) && message.contains("get"),
            "{name}: {message}"
        );
    }
}

#[tokio::test]
async fn a_silent_member_is_skipped_for_reads_but_not_for_compare_and_swap() {
    let cluster = EtcdCluster::start(3).unwrap();
    let silent = fake_endpoint(None).await;
    let request_timeout = Duration::from_millis(700);
    let mut endpoints = vec![silent.clone()];
    endpoints.extend(cluster.endpoints());
    let client = Client::new(endpoints.clone(), options(request_timeout)).unwrap();
    let started = Instant::now();
    client.put("/palisade/k", b"v", None).await.unwrap();
    assert!(
        started.elapsed() >= request_timeout,
        "the silent one was tried first"
    );
    assert_ne!(client.current_endpoint(), silent);

    let fresh = Client::new(endpoints, options(request_timeout)).unwrap();
    match fresh
        .put_if_mod_revision("/palisade/k", b"w", 1, None)
        .await
    {
        Err(Error::OutcomeUnknown {
            endpoint,
            operation,
            ..
        }) => {
            assert_eq!(
                (endpoint.as_str(), operation),
                (silent.as_str(), "txn put-if-mod-revision")
            )
        }
        other => panic!("{other:?}"),
    }
    // The next request starts past the silent member.
    assert!(fresh.get("/palisade/k").await.unwrap().kv.is_some());
    assert_ne!(fresh.current_endpoint(), silent);
}

#[test]
fn bad_arguments_are_refused_before_anything_is_sent() {
    assert!(matches!(
        Client::new(vec![], ClientOptions::default()),
        Err(Error::NoEndpoints)
    ));
    assert!(matches!(
        Client::new(vec!["127.0.0.1:2379".into()], ClientOptions::default()),
        Err(Error::InvalidEndpoint { .. })
    ));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Nothing listens on port 9 of loopback: an argument error must come first.
    let client = Client::new(vec!["http://127.0.0.1:9".into()], ClientOptions::default()).unwrap();
    for ttl in [0, -1, 9_000_000_001] {
        assert!(matches!(
            runtime.block_on(client.grant(ttl)),
            Err(Error::InvalidArgument {
                operation: "lease grant",
                ..
            })
        ));
    }
    let error = runtime.block_on(client.get("k")).unwrap_err();
    assert!(
        matches!(&error, Error::Unavailable { failures, .. } if failures[0].kind == FailureKind::Connect),
        "{error:?}"
    );
}
