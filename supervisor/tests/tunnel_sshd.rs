//! Bastion tunnels against a real OpenSSH sshd: host-key pinning, the
//! reverse Unix-socket and local TCP forwards, a forward outside
//! `permitopen`, and reconnection after the bastion's sshd dies.
//!
//! Each test runs its own sshd on a free loopback port with the settings
//! documented in docs/bastion-sshd.md. sshd must be installed
//! (scripts/test.sh installs openssh-server); a missing sshd fails loudly.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::timing::TUNNEL;
use palisade_simchain::testkit::free_port;
use palisade_supervisor::tunnel::{
    BastionConfig, BastionConnection, BastionState, BastionTunnel, DialTarget, FirstUse,
    ForwardKind, HostKeyError, HostKeyPolicy, LocalTcpForward, ReconnectBackoff, ReverseTcpForward,
    ReverseUnixForward, TunnelError, run_bastion,
};
use palisade_testkit::{Sshd, SshdOptions, current_user, run, ssh_fingerprint, ssh_keygen};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A throwaway bastion: sshd ([`palisade_testkit::Sshd`]) with its own host
/// key, one authorized client key restricted to forwarding and to
/// `permitopen="127.0.0.1:<allowed_port>"`.
struct Bastion {
    sshd: Sshd,
    /// Holds the client key.
    _client_dir: tempfile::TempDir,
    client_key: PathBuf,
}

impl Bastion {
    fn start(allowed_port: u16) -> Bastion {
        Bastion::start_with_options(&format!(
            "restrict,port-forwarding,permitopen=\"127.0.0.1:{allowed_port}\""
        ))
    }

    /// A bastion whose authorized_keys line for the client key carries
    /// `key_options`.
    fn start_with_options(key_options: &str) -> Bastion {
        let client_dir = tempfile::tempdir().unwrap();
        let client_key = client_dir.path().join("client_ed25519");
        let client_public = ssh_keygen(&client_key).unwrap();
        let sshd = Sshd::start(SshdOptions::new(
            "127.0.0.1",
            free_port(),
            format!("{key_options} {client_public}"),
        ))
        .unwrap();
        Bastion {
            sshd,
            _client_dir: client_dir,
            client_key,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.sshd.path(name)
    }

    fn config(&self, host_key_policy: HostKeyPolicy) -> BastionConfig {
        let mut config = BastionConfig::new(
            "bastion-test",
            "127.0.0.1",
            self.sshd.port(),
            current_user().unwrap(),
            &self.client_key,
            host_key_policy,
        );
        config.connect_timeout = Duration::from_secs(5);
        config.keepalive_interval = Duration::from_secs(1);
        config.keepalive_max = 3;
        config.backoff = ReconnectBackoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(1),
            ..ReconnectBackoff::default()
        };
        config
    }

    fn pinned(&self) -> HostKeyPolicy {
        HostKeyPolicy {
            pinned_fingerprints: vec![self.sshd.fingerprint().to_string()],
            ..HostKeyPolicy::default()
        }
    }
}

async fn spawn_tcp_echo() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut reader, mut writer) = socket.split();
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
            });
        }
    });
    port
}

fn spawn_unix_echo(path: &Path) {
    let listener = UnixListener::bind(path).unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut reader, mut writer) = socket.split();
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
            });
        }
    });
}

async fn echo_roundtrip<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    message: &[u8],
) {
    stream.write_all(message).await.unwrap();
    let mut answer = vec![0; message.len()];
    tokio::time::timeout(TUNNEL, stream.read_exact(&mut answer))
        .await
        .expect("echo answered in time")
        .unwrap();
    assert_eq!(answer, message);
}

async fn wait_state(
    state: &mut watch::Receiver<BastionState>,
    what: &str,
    condition: impl FnMut(&BastionState) -> bool,
) -> BastionState {
    let waited = tokio::time::timeout(TUNNEL, state.wait_for(condition))
        .await
        .map(|result| result.map(|state| state.clone()));
    match waited {
        Ok(Ok(state)) => state,
        _ => panic!("timed out waiting for {what}; state: {:?}", *state.borrow()),
    }
}

/// A tunnel with a reverse Unix forward (bastion.sock → local echo) and a
/// local TCP forward (127.0.0.1:0 → TCP echo on the bastion side).
async fn start_tunnel(
    bastion: &Bastion,
    echo_port: u16,
    shutdown: &CancellationToken,
) -> BastionTunnel {
    spawn_unix_echo(&bastion.path("supervisor.sock"));
    let mut config = bastion.config(bastion.pinned());
    config.reverse_unix_forwards.push(ReverseUnixForward {
        remote_socket_path: bastion.path("bastion.sock").display().to_string(),
        local_socket_path: bastion.path("supervisor.sock"),
    });
    config.local_tcp_forwards.push(LocalTcpForward {
        listen: "127.0.0.1:0".parse().unwrap(),
        target_host: "127.0.0.1".into(),
        target_port: echo_port,
    });
    BastionTunnel::start(config, shutdown.clone())
        .await
        .unwrap()
}

async fn assert_both_forwards_work(bastion: &Bastion, tunnel: &BastionTunnel, message: &[u8]) {
    let remote = UnixStream::connect(bastion.path("bastion.sock"))
        .await
        .expect("the reverse-forwarded socket exists on the bastion");
    echo_roundtrip(remote, message).await;
    let local = TcpStream::connect(tunnel.local_tcp_addrs()[0])
        .await
        .unwrap();
    echo_roundtrip(local, message).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_host_key_carries_reverse_unix_and_local_tcp_forwards() {
    let echo_port = spawn_tcp_echo().await;
    let bastion = Bastion::start(echo_port);
    let shutdown = CancellationToken::new();
    let tunnel = start_tunnel(&bastion, echo_port, &shutdown).await;
    assert_ne!(tunnel.local_tcp_addrs()[0].port(), 0);
    let mut state = tunnel.state();
    wait_state(&mut state, "connected", |state| {
        state.connected_since.is_some()
    })
    .await;
    let message = b"ping through the bastion";
    // Counted live, as bytes pass (a P2P connection may stay open for days).
    let remote = UnixStream::connect(bastion.path("bastion.sock"))
        .await
        .unwrap();
    echo_roundtrip(remote, message).await;
    let local = TcpStream::connect(tunnel.local_tcp_addrs()[0])
        .await
        .unwrap();
    let mut local = local;
    local.write_all(message).await.unwrap();
    let mut answer = vec![0; message.len()];
    local.read_exact(&mut answer).await.unwrap();
    // A pump counts the bytes it has just written, so the reader may see
    // them a moment before the counter does: wait briefly for it.
    let both_ways = 2 * message.len() as u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut counted = tunnel.snapshot();
    while (counted.bytes_to_bastion, counted.bytes_from_bastion) != (both_ways, both_ways)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
        counted = tunnel.snapshot();
    }
    assert_eq!(
        (counted.bytes_to_bastion, counted.bytes_from_bastion),
        (both_ways, both_ways),
        "{counted:?}"
    );
    assert_eq!(counted.reconnects, 0);
    drop(local);

    shutdown.cancel();
    tokio::time::timeout(TUNNEL, tunnel.stopped())
        .await
        .expect("tunnel stops on shutdown")
        .unwrap();
    assert!(state.borrow().stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_host_key_is_refused_with_both_fingerprints() {
    let bastion = Bastion::start(1);
    let other_key = bastion.path("other_ed25519");
    ssh_keygen(&other_key).unwrap();
    let expected = ssh_fingerprint(&other_key.with_extension("pub")).unwrap();
    let config = bastion.config(HostKeyPolicy {
        pinned_fingerprints: vec![expected.clone()],
        ..HostKeyPolicy::default()
    });
    let error = match BastionConnection::connect(&config).await {
        Ok(_) => panic!("connected despite a changed host key"),
        Err(error) => error,
    };
    let message = error.to_string();
    assert!(
        matches!(&error, TunnelError::HostKey(HostKeyError::Changed { expected: e, offered, .. })
            if *e == expected && offered == bastion.sshd.fingerprint()),
        "{error:?}"
    );
    assert!(message.contains(&expected) && message.contains(bastion.sshd.fingerprint()));

    // The supervisor loop treats it as fatal instead of retrying forever.
    let result = tokio::time::timeout(TUNNEL, run_bastion(config, CancellationToken::new()))
        .await
        .expect("run_bastion stops on a changed host key");
    assert!(
        matches!(
            result,
            Err(TunnelError::HostKey(HostKeyError::Changed { .. }))
        ),
        "{result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_host_key_is_refused_unless_first_use_is_configured() {
    let bastion = Bastion::start(1);
    let known_hosts = bastion.path("known_hosts");
    let refuse = bastion.config(HostKeyPolicy {
        known_hosts_file: Some(known_hosts.clone()),
        ..HostKeyPolicy::default()
    });
    match BastionConnection::connect(&refuse).await {
        Err(TunnelError::HostKey(HostKeyError::Unknown { host, offered })) => {
            assert_eq!(host, format!("[127.0.0.1]:{}", bastion.sshd.port()));
            assert_eq!(offered, bastion.sshd.fingerprint());
        }
        Err(other) => panic!("expected HostKeyUnknown, got {other}"),
        Ok(_) => panic!("connected to an unknown host"),
    }
    assert!(!known_hosts.exists(), "refusing must not record the key");

    let first_use = bastion.config(HostKeyPolicy {
        known_hosts_file: Some(known_hosts.clone()),
        first_use: FirstUse::TrustAndRecord,
        ..HostKeyPolicy::default()
    });
    BastionConnection::connect(&first_use)
        .await
        .unwrap()
        .close()
        .await;
    // The recorded line is one OpenSSH itself finds, and pins from now on.
    let found = run(Command::new("ssh-keygen")
        .arg("-F")
        .arg(format!("[127.0.0.1]:{}", bastion.sshd.port()))
        .arg("-f")
        .arg(&known_hosts))
    .unwrap();
    assert!(found.contains("ssh-ed25519"), "{found}");
    BastionConnection::connect(&refuse)
        .await
        .unwrap()
        .close()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_forward_outside_permitopen_is_reported_as_refused() {
    let echo_port = spawn_tcp_echo().await;
    let forbidden_port = spawn_tcp_echo().await;
    let bastion = Bastion::start(echo_port);
    let config = bastion.config(bastion.pinned());
    let connection = BastionConnection::connect(&config).await.unwrap();
    let originator = "127.0.0.1:40000".parse().unwrap();
    match connection
        .open_direct_tcpip("127.0.0.1", forbidden_port, originator)
        .await
    {
        Err(error @ TunnelError::ForwardRefused { kind, .. }) => {
            assert_eq!(kind, ForwardKind::LocalTcp);
            let message = error.to_string();
            assert!(
                message.contains(&format!("127.0.0.1:{forbidden_port}"))
                    && message.contains("administratively prohibited"),
                "{message}"
            );
        }
        Err(other) => panic!("expected ForwardRefused, got {other}"),
        Ok(_) => panic!("sshd opened a target outside permitopen"),
    }
    // The allowed target still works on the same connection.
    let channel = connection
        .open_direct_tcpip("127.0.0.1", echo_port, originator)
        .await
        .unwrap();
    echo_roundtrip(channel.into_stream(), b"allowed").await;
    connection.close().await;

    // Through a listener: the local client sees the connection closed and
    // the refusal lands in the state.
    let mut config = bastion.config(bastion.pinned());
    config.local_tcp_forwards.push(LocalTcpForward {
        listen: "127.0.0.1:0".parse().unwrap(),
        target_host: "127.0.0.1".into(),
        target_port: forbidden_port,
    });
    let shutdown = CancellationToken::new();
    let tunnel = BastionTunnel::start(config, shutdown.clone())
        .await
        .unwrap();
    let mut state = tunnel.state();
    wait_state(&mut state, "connected", |state| {
        state.connected_since.is_some()
    })
    .await;
    let mut local = TcpStream::connect(tunnel.local_tcp_addrs()[0])
        .await
        .unwrap();
    let mut buffer = [0; 1];
    let read = tokio::time::timeout(TUNNEL, local.read(&mut buffer))
        .await
        .unwrap();
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let refused = wait_state(&mut state, "forward error", |state| {
        state.last_forward_error.is_some()
    })
    .await;
    assert!(refused.last_forward_error.unwrap().contains(&format!(
        "refused local TCP forward (direct-tcpip) to 127.0.0.1:{forbidden_port}"
    )),);
    assert!(
        refused.connected_since.is_some(),
        "the link itself stays up"
    );
    shutdown.cancel();
    tunnel.stopped().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_reconnects_and_restores_forwards_after_sshd_restart() {
    let echo_port = spawn_tcp_echo().await;
    let mut bastion = Bastion::start(echo_port);
    let shutdown = CancellationToken::new();
    let tunnel = start_tunnel(&bastion, echo_port, &shutdown).await;
    let mut state = tunnel.state();
    wait_state(&mut state, "connected", |state| {
        state.connected_since.is_some()
    })
    .await;
    assert_both_forwards_work(&bastion, &tunnel, b"before").await;

    bastion.sshd.kill();
    let down = wait_state(&mut state, "disconnected", |state| {
        state.connected_since.is_none() && state.last_error.is_some()
    })
    .await;
    assert!(!down.stopped, "a dead bastion is retried, not fatal");

    bastion.sshd.restart().unwrap();
    let up = wait_state(&mut state, "reconnected", |state| {
        state.connected_since.is_some() && state.reconnects >= 1
    })
    .await;
    assert!(
        up.last_error.is_some(),
        "the last error stays visible: {up:?}"
    );
    assert_both_forwards_work(&bastion, &tunnel, b"after").await;

    shutdown.cancel();
    let local_addr = tunnel.local_tcp_addrs()[0];
    tokio::time::timeout(TUNNEL, tunnel.stopped())
        .await
        .expect("tunnel stops on shutdown")
        .unwrap();
    // Nothing left behind: the local listener is closed, and sshd's side of
    // the session is gone, so the next client of the forwarded socket finds
    // no one (sshd keeps the file; StreamLocalBindUnlink replaces it).
    assert!(TcpStream::connect(local_addr).await.is_err());
    let deadline = tokio::time::Instant::now() + TUNNEL;
    while UnixStream::connect(bastion.path("bastion.sock"))
        .await
        .is_ok()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reverse-forwarded socket still answers after shutdown"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_tcp_forward_inside_permitlisten_works_and_outside_is_refused() {
    let local_echo = spawn_tcp_echo().await;
    let allowed = free_port();
    let forbidden = free_port();
    let bastion = Bastion::start_with_options(&format!(
        "restrict,port-forwarding,permitopen=\"127.0.0.1:1\",permitlisten=\"127.0.0.1:{allowed}\""
    ));
    let mut config = bastion.config(bastion.pinned());
    for port in [forbidden, allowed] {
        config.reverse_tcp_forwards.push(ReverseTcpForward {
            remote_address: "127.0.0.1".into(),
            remote_port: port,
            local_target: format!("127.0.0.1:{local_echo}").parse().unwrap(),
        });
    }
    let shutdown = CancellationToken::new();
    let tunnel = BastionTunnel::start(config, shutdown.clone())
        .await
        .unwrap();
    let mut state = tunnel.state();
    // The refused forward is reported; the link and the allowed forward stay up.
    let up = wait_state(&mut state, "connected", |state| {
        state.connected_since.is_some()
    })
    .await;
    let reported = up.last_forward_error.unwrap_or_default();
    assert!(
        reported.contains(&format!("127.0.0.1:{forbidden}")),
        "{reported}"
    );
    // A client on the bastion (e.g. Prometheus) reaches the local target.
    let on_bastion = TcpStream::connect(("127.0.0.1", allowed)).await.unwrap();
    echo_roundtrip(on_bastion, b"scrape through the reverse forward").await;

    let connection = BastionConnection::connect(&bastion.config(bastion.pinned()))
        .await
        .unwrap();
    match connection.forward_reverse_tcp("127.0.0.1", forbidden).await {
        Err(error @ TunnelError::ForwardRefused { kind, .. }) => {
            assert_eq!(kind, ForwardKind::ReverseTcp);
            let message = error.to_string();
            assert!(
                message.contains(&format!("127.0.0.1:{forbidden}"))
                    && message.contains("permitlisten"),
                "{message}"
            );
        }
        other => panic!("expected ForwardRefused, got {:?}", other.map(|_| ())),
    }
    assert!(TcpStream::connect(("127.0.0.1", forbidden)).await.is_err());
    connection.close().await;
    shutdown.cancel();
    tunnel.stopped().await.unwrap();
}

/// The backup store is reached through a session whose command sshd
/// forces (authorized_keys `command=`): the string the client asks for is
/// ignored. `cat` stands in for `palisade-bastion backup-session`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_session_runs_the_forced_command() {
    let bastion = Bastion::start_with_options(
        "command=\"cat\",restrict,port-forwarding,permitopen=\"127.0.0.1:1\"",
    );
    let shutdown = CancellationToken::new();
    let tunnel = BastionTunnel::start(bastion.config(bastion.pinned()), shutdown.clone())
        .await
        .unwrap();
    let dialer = tunnel.dialer(DialTarget::Exec("echo this-is-not-what-runs".into()));
    // Down until connected: fails at once with a clear reason.
    let mut state = tunnel.state();
    wait_state(&mut state, "connected", |state| {
        state.connected_since.is_some()
    })
    .await;
    for round in 0..3 {
        let stream = dialer.dial().await.unwrap();
        echo_roundtrip(stream, format!("backup frame {round}").as_bytes()).await;
    }
    shutdown.cancel();
    tunnel.stopped().await.unwrap();
    match dialer.dial().await {
        Err(TunnelError::NotConnected { bastion, .. }) => assert_eq!(bastion, "bastion-test"),
        other => panic!("expected NotConnected, got {:?}", other.map(|_| ())),
    }
}

/// Why the backup store is not reached with direct-streamlocal: OpenSSH
/// refuses every Unix-socket channel for a key with any `permitopen`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_streamlocal_is_refused_when_the_key_has_permitopen() {
    for (options, allowed) in [
        ("restrict,port-forwarding,permitopen=\"127.0.0.1:1\"", false),
        ("restrict,port-forwarding", true),
    ] {
        let bastion = Bastion::start_with_options(options);
        let socket = bastion.path("store.sock");
        spawn_unix_echo(&socket);
        let connection = BastionConnection::connect(&bastion.config(bastion.pinned()))
            .await
            .unwrap();
        let opened = connection
            .open_direct_streamlocal(&socket.display().to_string())
            .await;
        match (opened, allowed) {
            (Ok(channel), true) => echo_roundtrip(channel.into_stream(), b"unix").await,
            (Err(TunnelError::ForwardRefused { kind, .. }), false) => {
                assert_eq!(kind, ForwardKind::LocalUnixSocket);
                assert!(
                    bastion.sshd.log().contains("but the request was denied"),
                    "{}",
                    bastion.sshd.log()
                );
            }
            (other, _) => panic!("{options}: unexpected {:?}", other.map(|_| ())),
        }
        connection.close().await;
    }
}

/// `tunnel.reconnect`: an operator's request drops the connection and
/// connects again at once; the forwards come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_on_request_restores_the_forwards() {
    let echo_port = spawn_tcp_echo().await;
    let bastion = Bastion::start(echo_port);
    let shutdown = CancellationToken::new();
    let tunnel = start_tunnel(&bastion, echo_port, &shutdown).await;
    let mut state = tunnel.state();
    wait_state(&mut state, "connected", |state| {
        state.connected_since.is_some()
    })
    .await;
    tunnel.observer().request_reconnect();
    let again = wait_state(&mut state, "reconnected on request", |state| {
        state.reconnects >= 1 && state.connected_since.is_some()
    })
    .await;
    assert_eq!(
        again.last_error.as_deref(),
        Some("reconnect requested by an operator")
    );
    assert_both_forwards_work(&bastion, &tunnel, b"after an operator reconnect").await;
    shutdown.cancel();
    tunnel.stopped().await.unwrap();
}
