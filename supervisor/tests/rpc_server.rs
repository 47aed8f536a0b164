//! The control RPC's transport and security layer over real Unix sockets
//! (`docs/rpc.md` §1, §2, §4, §5): trusted local plaintext, TLS with a
//! pinned certificate, operator login bound to the TLS session, roles,
//! secret lines, malformed frames and the connection limits.
//!
//! The tests run as root in one process, so the production trust rule
//! (uid 0 or ours, and not our own pid) would make every test connection
//! "our own tunnel". They inject the rule's parameters instead
//! ([`TrustPolicy::new`] / [`TrustPolicy::nobody`]). The client here is a
//! minimal one with a pinning verifier; `palisade-ctl` has the real one.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signer, SigningKey};
use palisade_client::{Fingerprint, tls_handshake};
use palisade_supervisor::backup::BoxFuture;
use palisade_supervisor::config::{OperatorSettings, RpcSettings};
use palisade_supervisor::rpc::{
    Caller, ControlSocket, Dispatcher, ReplaceIdentity, TrustPolicy, init_identity,
};
use palisade_wire::rpc::{
    EXPORTER_LABEL, Greeting, MAX_LINE_BYTES, Response, Role, RpcError, TlsRequirement,
    auth_message, code,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;

const VALIDATOR: &str = "val-a";

// ---------------------------------------------------------------- server

/// Echoes who called what; keeps the secrets it was given.
#[derive(Default)]
struct Echo {
    secrets: Mutex<Vec<String>>,
}

impl Dispatcher for Echo {
    fn call<'a>(
        &'a self,
        caller: &'a Caller,
        method: &'a str,
        params: Value,
        secret: Option<SecretString>,
    ) -> BoxFuture<'a, Result<Value, RpcError>> {
        Box::pin(async move {
            if let Some(secret) = &secret {
                self.secrets
                    .lock()
                    .unwrap()
                    .push(secret.expose_secret().to_string());
            }
            Ok(json!({
                "operator": caller.operator,
                "role": caller.role,
                "tls": caller.tls,
                "method": method,
                "params": params,
            }))
        })
    }
}

fn operator_key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn operators() -> Vec<OperatorSettings> {
    [
        ("vic", 1, Role::Viewer),
        ("olga", 2, Role::Operator),
        ("ada", 3, Role::Admin),
    ]
    .into_iter()
    .map(|(name, seed, role)| OperatorSettings {
        name: name.into(),
        key: operator_key(seed).verifying_key(),
        role,
    })
    .collect()
}

struct Server {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    pin: Option<String>,
    echo: Arc<Echo>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone, Copy, PartialEq)]
enum Certificate {
    Made,
    Missing,
}

fn trusted_local() -> TrustPolicy {
    TrustPolicy::new(
        vec![(nix::unistd::geteuid().as_raw(), "tester".into())],
        None,
    )
}

fn start(trust: TrustPolicy, certificate: Certificate, idle_timeout: Duration) -> Server {
    start_with_bastions(trust, certificate, idle_timeout, &[]).0
}

/// As [`start`], with an entry socket for each of `bastions` (where their
/// reverse forwards end); returns the entries' paths in that order.
fn start_with_bastions(
    trust: TrustPolicy,
    certificate: Certificate,
    idle_timeout: Duration,
    bastions: &[&str],
) -> (Server, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let settings = RpcSettings {
        socket: dir.path().join("run/supervisor.sock"),
        name: VALIDATOR.into(),
        tls_dir: dir.path().join("rpc"),
        idle_timeout,
        trusted_uids: vec![0],
    };
    let pin = (certificate == Certificate::Made)
        .then(|| init_identity(&settings.tls_dir, VALIDATOR, ReplaceIdentity::No).unwrap());
    let echo = Arc::new(Echo::default());
    let shutdown = CancellationToken::new();
    let mut socket = ControlSocket::bind(&settings)
        .unwrap()
        .with_trust_policy(trust);
    let entries = bastions
        .iter()
        .map(|bastion| socket.bind_bastion_entry(bastion).unwrap())
        .collect();
    let task = tokio::spawn(socket.serve_rpc(echo.clone(), operators(), shutdown.clone()));
    let server = Server {
        socket: settings.socket,
        _dir: dir,
        pin,
        echo,
        shutdown,
        task,
    };
    (server, entries)
}

impl Server {
    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap();
        assert!(!self.socket.exists());
    }
}

// ---------------------------------------------------------------- client

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

struct Connection {
    stream: BufReader<Box<dyn Stream>>,
    /// The TLS exporter value, zeros on plaintext.
    binding: [u8; 32],
    next_id: u64,
}

/// Connect and read the greeting byte by byte (nothing past it is read:
/// TLS may start right after).
async fn connect(socket: &Path) -> (UnixStream, Greeting) {
    let mut stream = UnixStream::connect(socket).await.unwrap();
    let mut line = Vec::new();
    loop {
        let byte = stream.read_u8().await.unwrap();
        line.push(byte);
        if byte == b'\n' || line.len() > 1024 {
            break;
        }
    }
    (stream, Greeting::parse(&line).unwrap())
}

async fn plaintext(socket: &Path) -> (Connection, Greeting) {
    let (stream, greeting) = connect(socket).await;
    let connection = Connection {
        stream: BufReader::new(Box::new(stream)),
        binding: [0; 32],
        next_id: 1,
    };
    (connection, greeting)
}

/// TLS with the pin, through `palisade-client` (the same verifier
/// operators use).
async fn tls(socket: &Path, pin: &str) -> io::Result<(Connection, Greeting)> {
    let (stream, greeting) = connect(socket).await;
    let pin = Fingerprint::parse(pin).map_err(io::Error::other)?;
    let stream = tls_handshake(stream, &pin)
        .await
        .map_err(|error| io::Error::other(error.to_string()))?;
    let binding = stream
        .get_ref()
        .1
        .export_keying_material([0u8; 32], EXPORTER_LABEL, None)
        .unwrap();
    let connection = Connection {
        stream: BufReader::new(Box::new(stream)),
        binding,
        next_id: 1,
    };
    Ok((connection, greeting))
}

impl Connection {
    async fn send_line(&mut self, line: &[u8]) -> io::Result<()> {
        let stream = self.stream.get_mut();
        stream.write_all(line).await?;
        stream.flush().await
    }

    /// The next response, `None` when the server closed.
    async fn response(&mut self) -> Option<Response> {
        let mut line = String::new();
        match self.stream.read_line(&mut line).await {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(serde_json::from_str(&line).expect("a JSON-RPC response line")),
        }
    }

    async fn call(&mut self, method: &str, params: Option<Value>) -> Response {
        let id = self.next_id;
        self.next_id += 1;
        let mut request = json!({"jsonrpc": "2.0", "id": id, "method": method});
        if let Some(params) = params {
            request["params"] = params;
        }
        let mut line = request.to_string().into_bytes();
        line.push(b'\n');
        self.send_line(&line).await.unwrap();
        let response = self.response().await.expect("a response");
        assert_eq!(response.id, json!(id));
        response
    }

    async fn challenge(&mut self) -> [u8; 32] {
        let response = self.call("auth.challenge", None).await;
        let text = response.result.unwrap()["challenge"]
            .as_str()
            .unwrap()
            .to_string();
        BASE64.decode(text).unwrap().try_into().unwrap()
    }

    fn sign(&self, key: &SigningKey, challenge: &[u8; 32]) -> String {
        BASE64.encode(
            key.sign(&auth_message(VALIDATOR, challenge, &self.binding))
                .to_bytes(),
        )
    }

    async fn login_with(&mut self, operator: &str, signature: &str) -> Response {
        self.call(
            "auth.login",
            Some(json!({"operator": operator, "signature": signature})),
        )
        .await
    }

    async fn login(&mut self, operator: &str, key: &SigningKey) -> Response {
        let challenge = self.challenge().await;
        let signature = self.sign(key, &challenge);
        self.login_with(operator, &signature).await
    }

    /// Whether the server has closed (EOF within a short wait).
    async fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }
}

fn error_code(response: &Response) -> Option<i64> {
    response.error.as_ref().map(|error| error.code)
}

/// Capture everything logged on this thread (the tests run the server on
/// a current-thread runtime, so that is everything the server logs).
fn capture_logs() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
    #[derive(Clone)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl io::Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let sink = Sink(buffer.clone());
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    (buffer, tracing::subscriber::set_default(subscriber))
}

fn logs(buffer: &Arc<Mutex<Vec<u8>>>) -> String {
    String::from_utf8_lossy(&buffer.lock().unwrap()).into_owned()
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn trusted_local_user_calls_in_plaintext_or_tls_without_login() {
    let server = start(trusted_local(), Certificate::Made, Duration::from_secs(5));
    let (mut connection, greeting) = plaintext(&server.socket).await;
    assert_eq!(greeting.tls, Some(TlsRequirement::Optional));
    assert_eq!(greeting.validator, VALIDATOR);
    let response = connection.call("status", None).await;
    let result = response.result.unwrap();
    assert_eq!(result["operator"], "local:tester");
    assert_eq!(result["role"], "admin");
    assert_eq!(result["tls"], false);
    assert_eq!(result["params"], Value::Null);
    // Several calls on one connection, answered in order.
    let response = connection
        .call("logs.tail", Some(json!({"lines": 10})))
        .await;
    assert_eq!(response.result.unwrap()["params"], json!({"lines": 10}));

    let (mut connection, _) = tls(&server.socket, server.pin.as_deref().unwrap())
        .await
        .unwrap();
    let result = connection.call("node.stop", None).await.result.unwrap();
    assert_eq!(result["operator"], "local:tester");
    assert_eq!(result["tls"], true);
    server.stop().await;
}

#[tokio::test]
async fn remote_peers_need_tls_and_a_login_and_roles_are_enforced() {
    let server = start(
        TrustPolicy::nobody(),
        Certificate::Made,
        Duration::from_secs(5),
    );
    let pin = server.pin.clone().unwrap();

    // Plaintext after a "required" greeting: closed without an answer.
    let (mut connection, greeting) = plaintext(&server.socket).await;
    assert_eq!(greeting.tls, Some(TlsRequirement::Required));
    connection
        .send_line(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"status\"}\n")
        .await
        .unwrap();
    assert!(connection.response().await.is_none());

    let (mut viewer, _) = tls(&server.socket, &pin).await.unwrap();
    let response = viewer.call("status", None).await;
    assert_eq!(error_code(&response), Some(code::UNAUTHENTICATED));
    let response = viewer.login("vic", &operator_key(1)).await;
    assert_eq!(
        response.result.unwrap(),
        json!({"operator": "vic", "role": "viewer"})
    );
    let result = viewer.call("status", None).await.result.unwrap();
    assert_eq!(result["operator"], "vic");
    assert_eq!(result["tls"], true);
    let response = viewer.call("node.stop", None).await;
    assert_eq!(error_code(&response), Some(code::FORBIDDEN));
    assert_eq!(
        response.error.unwrap().data.unwrap()["required"],
        json!("operator")
    );
    // A forbidden secret method still consumes its secret line.
    viewer
        .send_line(b"{\"jsonrpc\":\"2.0\",\"id\":50,\"method\":\"vault.unlock\"}\nnot-for-you\n")
        .await
        .unwrap();
    let response = viewer.response().await.unwrap();
    assert_eq!(error_code(&response), Some(code::FORBIDDEN));
    assert!(viewer.call("health", None).await.result.is_some());

    let (mut operator, _) = tls(&server.socket, &pin).await.unwrap();
    operator
        .login("olga", &operator_key(2))
        .await
        .result
        .unwrap();
    let result = operator.call("node.stop", None).await.result.unwrap();
    assert_eq!(result["method"], "node.stop");
    assert_eq!(result["role"], "operator");
    let response = operator.call("backup.restore", None).await;
    assert_eq!(error_code(&response), Some(code::FORBIDDEN));
    // An operator runs the node but cannot change what runs: a staged
    // binary runs with the keys in tmpfs (issue 16, finding 2).
    for method in ["upgrade.add", "upgrade.cancel"] {
        let response = operator
            .call(method, Some(json!({"name": "v2", "path": "/bin/true"})))
            .await;
        assert_eq!(error_code(&response), Some(code::FORBIDDEN), "{method}");
    }
    // Moving a bastion's public address is an admin's call (issue 14), listing too: the
    // answer shows the account's addresses.
    for (method, params) in [
        ("eip.rotate", Some(json!({"bastion": "ba"}))),
        ("eip.list", None),
        ("eip.status", None),
    ] {
        let response = operator.call(method, params).await;
        assert_eq!(error_code(&response), Some(code::FORBIDDEN), "{method}");
    }
    let response = operator.call("ip.rotate", None).await;
    assert_eq!(error_code(&response), Some(code::METHOD_NOT_FOUND));
    assert!(server.echo.secrets.lock().unwrap().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn a_wrong_key_is_refused_and_the_connection_closed() {
    let server = start(
        TrustPolicy::nobody(),
        Certificate::Made,
        Duration::from_secs(5),
    );
    let pin = server.pin.clone().unwrap();
    let (mut connection, _) = tls(&server.socket, &pin).await.unwrap();
    // vic's name, olga's key.
    let response = connection.login("vic", &operator_key(2)).await;
    assert_eq!(error_code(&response), Some(code::UNAUTHENTICATED));
    assert!(connection.is_closed().await);

    // Unknown operator: the same answer.
    let (mut connection, _) = tls(&server.socket, &pin).await.unwrap();
    let response = connection.login("mallory", &operator_key(9)).await;
    assert_eq!(error_code(&response), Some(code::UNAUTHENTICATED));
    assert!(connection.is_closed().await);
    server.stop().await;
}

/// Issue 16, finding 3: the login throttle was one global queue, so one
/// bastion failing a login now and then delayed every genuine login
/// through every bastion, and the wait counted against the 10 s login
/// deadline. Failures now slow only the same claimed operator from the same
/// source (here: the bastion whose entry socket the connection came in on).
#[tokio::test]
async fn a_bastion_failing_logins_slows_only_itself_for_that_operator() {
    // An idle timeout of 3 s makes the login deadline 3 s: shorter than
    // the throttle's 4 s after three failures.
    let (server, entries) = start_with_bastions(
        TrustPolicy::nobody(),
        Certificate::Made,
        Duration::from_secs(3),
        &["b1", "b2"],
    );
    let (b1, b2) = (&entries[0], &entries[1]);
    assert!(
        b1.ends_with("run/supervisor.sock.via-b1"),
        "{}",
        b1.display()
    );
    let pin = server.pin.clone().unwrap();
    let ada = operator_key(3);
    let login = |entry: &Path, name: &'static str, key: SigningKey| {
        let entry = entry.to_path_buf();
        let pin = pin.clone();
        async move {
            let started = Instant::now();
            let (mut connection, greeting) = tls(&entry, &pin).await.unwrap();
            assert_eq!(greeting.tls, Some(TlsRequirement::Required));
            let response = connection.login(name, &key).await;
            (response, started.elapsed())
        }
    };
    // The compromised bastion b1 fails three logins as ada (1 + 2 s of
    // throttle on the way).
    for _ in 0..3 {
        let (response, _) = login(b1, "ada", operator_key(9)).await;
        assert_eq!(error_code(&response), Some(code::UNAUTHENTICATED));
    }
    // Ada through b2 gets in at once (a global throttle made her wait 4 s).
    let (response, took) = login(b2, "ada", ada.clone()).await;
    assert!(response.result.is_some(), "{response:?}");
    assert!(
        took < Duration::from_secs(2),
        "ada through b2 took {took:?}"
    );
    // Olga through b1 too: the failures were ada's.
    let (response, took) = login(b1, "olga", operator_key(2)).await;
    assert!(response.result.is_some(), "{response:?}");
    assert!(
        took < Duration::from_secs(2),
        "olga through b1 took {took:?}"
    );
    // Ada through b1 is still slowed (2^(3-1) s after the last failure),
    // and the wait does not count against the 3 s login deadline.
    let (response, took) = login(b1, "ada", ada.clone()).await;
    assert!(response.result.is_some(), "{response:?}");
    assert!(
        took >= Duration::from_secs(3),
        "ada through b1 took {took:?}"
    );
    server.stop().await;
    for entry in &entries {
        assert!(!entry.exists(), "{} left behind", entry.display());
    }
}

#[tokio::test]
async fn a_signature_from_another_connection_or_a_second_attempt_is_refused() {
    let server = start(
        TrustPolicy::nobody(),
        Certificate::Made,
        Duration::from_secs(5),
    );
    let pin = server.pin.clone().unwrap();
    let key = operator_key(3);

    let (mut first, _) = tls(&server.socket, &pin).await.unwrap();
    let challenge = first.challenge().await;
    let signature = first.sign(&key, &challenge);
    first.login_with("ada", &signature).await.result.unwrap();
    // The same login again on the same connection: the challenge is spent.
    let response = first.login_with("ada", &signature).await;
    assert_eq!(error_code(&response), Some(code::UNAUTHENTICATED));
    assert!(first.is_closed().await);

    // A new connection has a new challenge and a new TLS session: the old
    // signature (even for a challenge it did not ask for) is worthless.
    let (mut second, _) = tls(&server.socket, &pin).await.unwrap();
    second.challenge().await;
    let response = second.login_with("ada", &signature).await;
    assert_eq!(error_code(&response), Some(code::UNAUTHENTICATED));
    assert!(second.is_closed().await);

    // A signature made for another channel binding (what a bastion
    // relaying the challenge to its own TLS session would get) fails too.
    let (mut third, _) = tls(&server.socket, &pin).await.unwrap();
    let challenge = third.challenge().await;
    let relayed = BASE64.encode(
        key.sign(&auth_message(VALIDATOR, &challenge, &[0; 32]))
            .to_bytes(),
    );
    let response = third.login_with("ada", &relayed).await;
    assert_eq!(error_code(&response), Some(code::UNAUTHENTICATED));
    server.stop().await;
}

#[tokio::test]
async fn the_client_refuses_a_certificate_that_does_not_match_its_pin() {
    let server = start(
        TrustPolicy::nobody(),
        Certificate::Made,
        Duration::from_secs(5),
    );
    let other_home = tempfile::tempdir().unwrap();
    let other_pin = init_identity(
        &other_home.path().join("rpc"),
        VALIDATOR,
        ReplaceIdentity::No,
    )
    .unwrap();
    let error = tls(&server.socket, &other_pin)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains(&format!("but {other_pin} is pinned"))
            && error.contains(server.pin.as_deref().unwrap()),
        "{error}"
    );
    // The server keeps serving.
    let (mut connection, _) = tls(&server.socket, server.pin.as_deref().unwrap())
        .await
        .unwrap();
    connection
        .login("vic", &operator_key(1))
        .await
        .result
        .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn the_secret_line_reaches_the_dispatcher_and_never_the_log() {
    let (log, _guard) = capture_logs();
    let server = start(
        TrustPolicy::nobody(),
        Certificate::Made,
        Duration::from_secs(5),
    );
    let (mut connection, _) = tls(&server.socket, server.pin.as_deref().unwrap())
        .await
        .unwrap();
    connection
        .login("ada", &operator_key(3))
        .await
        .result
        .unwrap();
    const SECRET: &str = "correct-horse-battery-staple-4711";
    connection
        .send_line(
            format!(
                "{{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"vault.unlock\",\"params\":{{\"note\":\"params-of-a-secret-call\"}}}}\n{SECRET}\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let response = connection.response().await.unwrap();
    assert_eq!(response.result.unwrap()["method"], "vault.unlock");
    assert_eq!(*server.echo.secrets.lock().unwrap(), [SECRET.to_string()]);
    assert!(connection.call("status", None).await.result.is_some());
    server.stop().await;
    let logs = logs(&log);
    assert!(logs.contains("vault.unlock"), "{logs}");
    assert!(logs.contains("operator=ada"), "{logs}");
    assert!(!logs.contains(SECRET), "{logs}");
    assert!(!logs.contains("params-of-a-secret-call"), "{logs}");
}

#[tokio::test]
async fn malformed_frames_get_their_codes_and_the_server_keeps_serving() {
    let server = start(
        trusted_local(),
        Certificate::Missing,
        Duration::from_secs(5),
    );
    let (mut connection, _) = plaintext(&server.socket).await;
    let cases: [(&[u8], i64); 6] = [
        (b"{not json\n", code::PARSE_ERROR),
        (b"[1,2,3]\n", code::INVALID_REQUEST),
        (
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"status\",\"extra\":true}\n",
            code::INVALID_REQUEST,
        ),
        (
            b"{\"jsonrpc\":\"2.0\",\"id\":true,\"method\":\"status\"}\n",
            code::INVALID_REQUEST,
        ),
        (
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"format.disk\"}\n",
            code::METHOD_NOT_FOUND,
        ),
        (
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"auth.challenge\",\"params\":\"x\"}\n",
            code::INVALID_PARAMS,
        ),
    ];
    for (line, expected) in cases {
        connection.send_line(line).await.unwrap();
        let response = connection.response().await.unwrap();
        assert_eq!(
            error_code(&response),
            Some(expected),
            "{}",
            String::from_utf8_lossy(line)
        );
    }
    // Still usable after all that.
    assert!(connection.call("status", None).await.result.is_some());

    // An oversized line: −32005 and the connection is closed.
    let mut huge = vec![b' '; MAX_LINE_BYTES + 100];
    huge.push(b'\n');
    let writer = connection.send_line(&huge);
    // The server stops reading at the limit; the write may fail then.
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    let response = connection.response().await.unwrap();
    assert_eq!(error_code(&response), Some(code::LINE_TOO_LONG));
    assert!(connection.is_closed().await);

    let (mut other, _) = plaintext(&server.socket).await;
    assert!(other.call("status", None).await.result.is_some());
    server.stop().await;
}

#[tokio::test]
async fn without_a_certificate_remote_peers_are_closed_with_a_logged_reason() {
    let (log, _guard) = capture_logs();
    let server = start(
        TrustPolicy::nobody(),
        Certificate::Missing,
        Duration::from_secs(5),
    );
    // A health check: greeting, close; not an error.
    let (stream, greeting) = connect(&server.socket).await;
    assert_eq!(greeting.tls, Some(TlsRequirement::Required));
    drop(stream);
    // A TLS client: refused.
    // The server closes without a handshake (no certificate to show).
    let any_pin = format!("sha256:{}", "0".repeat(64));
    let error = tls(&server.socket, &any_pin)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.starts_with("TLS with the supervisor failed") && !error.contains("is pinned"),
        "{error}"
    );
    server.stop().await;
    let logs = logs(&log);
    assert!(logs.contains("init-rpc"), "{logs}");
}

#[tokio::test]
async fn a_dribbling_client_is_cut_by_the_idle_timeout() {
    let idle = Duration::from_millis(300);
    let server = start(trusted_local(), Certificate::Missing, idle);
    let (mut connection, _) = plaintext(&server.socket).await;
    let started = Instant::now();
    let request = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"status\"}";
    let mut closed = false;
    for byte in request.iter().cycle().take(200) {
        if connection.send_line(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(closed || connection.is_closed().await);
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    // Idle without a byte: closed as well.
    let (mut idle_connection, _) = plaintext(&server.socket).await;
    assert!(idle_connection.is_closed().await);
    server.stop().await;
}

#[tokio::test]
async fn a_thousand_idle_connections_do_not_lock_out_a_real_call() {
    let idle = Duration::from_millis(200);
    let server = start(trusted_local(), Certificate::Missing, idle);
    let mut idle_connections = Vec::new();
    for _ in 0..1000 {
        // Past the listen backlog a connect may fail: that is the flood's
        // problem, not the server's.
        if let Ok(stream) = UnixStream::connect(&server.socket).await {
            idle_connections.push(stream);
        }
    }
    assert!(idle_connections.len() >= 500, "{}", idle_connections.len());
    let started = Instant::now();
    let answered = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match UnixStream::connect(&server.socket).await {
                Ok(mut stream) => {
                    stream
                        .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"status\"}\n")
                        .await
                        .unwrap();
                    let mut reader = BufReader::new(stream);
                    let mut greeting = String::new();
                    reader.read_line(&mut greeting).await.unwrap();
                    let mut line = String::new();
                    reader.read_line(&mut line).await.unwrap();
                    return serde_json::from_str::<Response>(&line).unwrap();
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await
    .expect("the real call is answered");
    assert!(answered.result.is_some());
    // 1000 connections / 64 slots × the idle timeout, with slack.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    drop(idle_connections);
    server.stop().await;
}

/// A flood through a bastion (remote peers that never log in) with the
/// default one-minute idle timeout: unauthenticated connections are evicted
/// at random for newcomers, so an operator gets in at once (a retry at
/// most), not after flood / slots × idle timeout (about 16 minutes here).
#[tokio::test]
async fn an_idle_remote_flood_does_not_lock_out_an_operator() {
    let server = start(
        TrustPolicy::nobody(),
        Certificate::Made,
        Duration::from_secs(60),
    );
    let pin = server.pin.clone().unwrap();
    let mut flood = Vec::new();
    for _ in 0..1000 {
        if let Ok(stream) = UnixStream::connect(&server.socket).await {
            flood.push(stream);
        }
    }
    assert!(flood.len() >= 500, "{}", flood.len());
    let started = Instant::now();
    let mut attempts = 0;
    let status = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            attempts += 1;
            let attempt = async {
                let (mut connection, _) = tls(&server.socket, &pin).await.ok()?;
                let login = connection.login("vic", &operator_key(1)).await;
                login.result.as_ref()?;
                connection.call("status", None).await.result
            };
            if let Some(result) = attempt.await {
                return result;
            }
        }
    })
    .await
    .expect("an operator gets through the flood");
    assert_eq!(status["operator"], "vic");
    assert!(attempts <= 5, "{attempts} attempts");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    drop(flood);
    server.stop().await;
}

#[test]
fn init_rpc_and_rpc_fingerprint_commands() {
    let home = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_palisade-supervisor"))
            .args(args)
            .env("DAEMON_HOME", home.path())
            .env("DAEMON_NAME", "gaiad")
            .env_remove("PALISADE_CONFIG")
            .output()
            .unwrap()
    };
    let created = run(&["init-rpc"]);
    assert!(created.status.success(), "{created:?}");
    let pin = String::from_utf8(created.stdout)
        .unwrap()
        .trim()
        .to_string();
    assert!(pin.starts_with("sha256:") && pin.len() == 71, "{pin}");
    assert!(home.path().join("palisade/rpc/cert.pem").is_file());

    let printed = run(&["rpc-fingerprint"]);
    assert!(printed.status.success(), "{printed:?}");
    assert_eq!(String::from_utf8(printed.stdout).unwrap().trim(), pin);

    let refused = run(&["init-rpc"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--force"));

    let replaced = run(&["init-rpc", "--force"]);
    assert!(replaced.status.success());
    assert_ne!(String::from_utf8(replaced.stdout).unwrap().trim(), pin);
}
