//! A small control-RPC server built from the wire types, standing in for
//! the supervisor, and helpers to run the real `palisade-ctl` binary
//! against it.
//!
//! The server records every line it receives, every login (with the
//! channel binding it used and whether the signature verified) and every
//! secret line, so tests assert on what actually crossed the socket.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, VerifyingKey};
use palisade_wire::rpc::{
    EXPORTER_LABEL, Greeting, Response, RpcError, SECRET_METHODS, TlsRequirement, auth_message,
    code, fingerprint_of, parse_request,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

/// The validator name every test server announces.
pub const VALIDATOR: &str = "val-a";

/// The challenge the test server hands out.
pub const CHALLENGE: [u8; 32] = [7; 32];

/// A self-signed ed25519 certificate and the server config serving it.
#[derive(Clone)]
pub struct TlsIdentity {
    pub config: Arc<rustls::ServerConfig>,
    pub fingerprint: String,
}

impl TlsIdentity {
    pub fn generate() -> TlsIdentity {
        let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["palisade-supervisor".into()])
            .unwrap()
            .self_signed(&key_pair)
            .unwrap();
        let cert_der: CertificateDer<'static> = cert.der().clone();
        let fingerprint = fingerprint_of(&cert_der);
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pair.serialize_der()));
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert_der], key)
            .unwrap();
        TlsIdentity {
            config: Arc::new(config),
            fingerprint,
        }
    }
}

/// What the test server does.
#[derive(Clone)]
pub struct ServerSpec {
    /// Written first on every connection, as is.
    pub greeting: Vec<u8>,
    /// Run TLS after the greeting.
    pub tls: Option<TlsIdentity>,
    /// The operator allowed to log in, with the key that must have signed.
    pub operator: Option<(String, VerifyingKey)>,
    /// Answers by method; unknown methods get −32601.
    pub answers: HashMap<String, Result<Value, RpcError>>,
    /// How long to wait before answering, by method (a long call).
    pub delays: HashMap<String, std::time::Duration>,
}

impl ServerSpec {
    /// A well-formed greeting with the given TLS requirement, no answers.
    pub fn new(tls: TlsRequirement) -> ServerSpec {
        let mut greeting = Greeting::new(VALIDATOR, "0.1.0");
        greeting.tls = Some(tls);
        ServerSpec {
            greeting: greeting.to_line(),
            tls: None,
            operator: None,
            answers: HashMap::new(),
            delays: HashMap::new(),
        }
    }

    pub fn answer(mut self, method: &str, answer: Result<Value, RpcError>) -> ServerSpec {
        self.answers.insert(method.to_string(), answer);
        self
    }

    /// Answer `method` only after `delay`.
    pub fn delay(mut self, method: &str, delay: std::time::Duration) -> ServerSpec {
        self.delays.insert(method.to_string(), delay);
        self
    }
}

/// One `auth.login` as the server saw it.
#[derive(Debug, Clone)]
pub struct Login {
    pub operator: String,
    pub binding: [u8; 32],
    pub verified: bool,
}

/// Everything the server received.
#[derive(Debug, Default)]
pub struct ServerLog {
    /// Connections accepted.
    pub connections: usize,
    pub lines: Vec<Vec<u8>>,
    pub logins: Vec<Login>,
    pub secrets: Vec<Vec<u8>>,
    pub tls_failures: usize,
}

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub log: Arc<Mutex<ServerLog>>,
}

impl TestServer {
    pub fn start(spec: ServerSpec) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("supervisor.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        listener.set_nonblocking(true).unwrap();
        let log = Arc::new(Mutex::new(ServerLog::default()));
        let server_log = log.clone();
        let spec = Arc::new(spec);
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::UnixListener::from_std(listener).unwrap();
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    tokio::spawn(serve(stream, spec.clone(), server_log.clone()));
                }
            });
        });
        TestServer { dir, socket, log }
    }

    /// Received request lines, parsed.
    pub fn requests(&self) -> Vec<Value> {
        self.log
            .lock()
            .unwrap()
            .lines
            .iter()
            .map(|line| serde_json::from_slice(line).unwrap())
            .collect()
    }
}

async fn serve(
    mut stream: tokio::net::UnixStream,
    spec: Arc<ServerSpec>,
    log: Arc<Mutex<ServerLog>>,
) {
    log.lock().unwrap().connections += 1;
    if stream.write_all(&spec.greeting).await.is_err() {
        return;
    }
    match &spec.tls {
        Some(identity) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(identity.config.clone());
            let tls = match acceptor.accept(stream).await {
                Ok(tls) => tls,
                Err(_) => {
                    log.lock().unwrap().tls_failures += 1;
                    return;
                }
            };
            let mut binding = [0u8; 32];
            tls.get_ref()
                .1
                .export_keying_material(&mut binding, EXPORTER_LABEL, None)
                .unwrap();
            session(BufReader::new(tls), binding, &spec, &log).await;
        }
        None => session(BufReader::new(stream), [0; 32], &spec, &log).await,
    }
}

async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: BufReader<S>,
    binding: [u8; 32],
    spec: &ServerSpec,
    log: &Mutex<ServerLog>,
) {
    loop {
        let mut line = Vec::new();
        if stream.read_until(b'\n', &mut line).await.unwrap_or(0) == 0 {
            return;
        }
        log.lock().unwrap().lines.push(line.clone());
        let request = match parse_request(&line) {
            Ok(request) => request,
            Err(error) => {
                let _ = stream
                    .get_mut()
                    .write_all(&Response::err(Value::Null, error).to_line())
                    .await;
                return;
            }
        };
        let id = request.id.clone();
        let response = match request.method.as_str() {
            "auth.challenge" => Response::ok(id, json!({ "challenge": BASE64.encode(CHALLENGE) })),
            "auth.login" => {
                let params = request.params.unwrap_or_default();
                let operator = params["operator"].as_str().unwrap_or_default().to_string();
                let signature = params["signature"]
                    .as_str()
                    .and_then(|text| BASE64.decode(text).ok())
                    .and_then(|bytes| Signature::from_slice(&bytes).ok());
                let message = auth_message(VALIDATOR, &CHALLENGE, &binding);
                let verified = match (&spec.operator, signature) {
                    (Some((name, key)), Some(signature)) => {
                        *name == operator && key.verify_strict(&message, &signature).is_ok()
                    }
                    _ => false,
                };
                log.lock().unwrap().logins.push(Login {
                    operator: operator.clone(),
                    binding,
                    verified,
                });
                if verified {
                    Response::ok(id, json!({ "operator": operator, "role": "admin" }))
                } else {
                    Response::err(id, RpcError::new(code::UNAUTHENTICATED, "login refused"))
                }
            }
            method => {
                if SECRET_METHODS.contains(&method) {
                    let mut secret = Vec::new();
                    let _ = stream.read_until(b'\n', &mut secret).await;
                    log.lock().unwrap().secrets.push(secret);
                }
                if let Some(delay) = spec.delays.get(method) {
                    tokio::time::sleep(*delay).await;
                }
                match spec.answers.get(method) {
                    Some(Ok(result)) => Response::ok(id, result.clone()),
                    Some(Err(error)) => Response::err(id, error.clone()),
                    None => Response::err(
                        id,
                        RpcError::new(code::METHOD_NOT_FOUND, format!("unknown method {method}")),
                    ),
                }
            }
        };
        if stream
            .get_mut()
            .write_all(&response.to_line())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// A raw listener that writes `bytes` as its "greeting", then closes the
/// connection, or holds it open for a while when `hold`.
pub fn start_raw(bytes: Vec<u8>, hold: bool) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("raw.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let bytes = bytes.clone();
            std::thread::spawn(move || {
                let _ = stream.write_all(&bytes);
                if hold {
                    std::thread::sleep(std::time::Duration::from_secs(15));
                }
            });
        }
    });
    (dir, socket)
}

/// An operator key made by ssh-keygen: (private key path, public key).
pub fn operator_key(dir: &Path, name: &str) -> (PathBuf, VerifyingKey) {
    let path = dir.join(name);
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&path)
        .status()
        .expect("ssh-keygen runs");
    assert!(status.success());
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    let blob = BASE64
        .decode(public.split_whitespace().nth(1).unwrap())
        .unwrap();
    let raw: [u8; 32] = blob[blob.len() - 32..].try_into().unwrap();
    (path, VerifyingKey::from_bytes(&raw).unwrap())
}

/// Run `palisade-ctl` with `args`, `stdin` piped in, no config from the
/// environment (HOME is an empty directory).
pub fn ctl(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let home = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_palisade-ctl"));
    command
        .args(args)
        .env("HOME", home.path())
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("PALISADE_CTL_CONFIG")
        .env_remove("DAEMON_HOME")
        // The tests' keys are files; an agent of the developer's own must
        // not change what they see.
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        input.write_all(bytes).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}
