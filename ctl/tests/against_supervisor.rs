//! `palisade-ctl` against the supervisor's real RPC server
//! (`palisade_supervisor::rpc::ControlSocket::serve_rpc`) with an echoing
//! dispatcher: proves client and server agree on the greeting, TLS with the
//! `init-rpc` certificate, the login's channel binding, roles and the
//! secret line. (An end-to-end test through `palisade-supervisor run` on
//! the simulated chain belongs with the dispatcher that serves real calls.)

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{ctl, operator_key, stderr};
use palisade_supervisor::backup::BoxFuture;
use palisade_supervisor::config::{OperatorSettings, RpcSettings};
use palisade_supervisor::rpc::{
    Caller, ControlSocket, Dispatcher, ReplaceIdentity, TrustPolicy, init_identity,
};
use palisade_wire::rpc::{Role, RpcError};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Answers every call with who called what, and the secret's length.
struct Echo;

impl Dispatcher for Echo {
    fn call<'a>(
        &'a self,
        caller: &'a Caller,
        method: &'a str,
        params: Value,
        secret: Option<SecretString>,
    ) -> BoxFuture<'a, Result<Value, RpcError>> {
        Box::pin(async move {
            Ok(json!({
                "caller": caller.operator,
                "role": caller.role,
                "tls": caller.tls,
                "method": method,
                "params": params,
                "secret": secret.map(|secret| secret.expose_secret().to_string()),
            }))
        })
    }
}

/// Serve the RPC on `dir/run/rpc.sock` until the returned token is cancelled.
fn start_supervisor_rpc(
    dir: &Path,
    trust: TrustPolicy,
    operators: Vec<OperatorSettings>,
) -> (String, String, CancellationToken) {
    let tls_dir = dir.join("tls");
    let pin = init_identity(&tls_dir, "val-a", ReplaceIdentity::No).unwrap();
    // bind creates the socket directory 0700.
    let socket = dir.join("run/rpc.sock");
    let settings = RpcSettings {
        socket: socket.clone(),
        name: "val-a".into(),
        tls_dir,
        idle_timeout: std::time::Duration::from_secs(5),
        trusted_uids: vec![0],
    };
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let control = ControlSocket::bind(&settings)
                .unwrap()
                .with_trust_policy(trust);
            ready_tx.send(()).unwrap();
            control.serve_rpc(Arc::new(Echo), operators, token).await;
        });
    });
    ready_rx.recv().unwrap();
    (socket.to_str().unwrap().to_string(), pin, shutdown)
}

#[test]
fn remote_peer_tls_login_roles_and_secret_line() {
    let dir = tempfile::tempdir().unwrap();
    let (alice_key, alice_public) = operator_key(dir.path(), "palisade_alice");
    let (root_key, root_public) = operator_key(dir.path(), "palisade_root");
    let operators = vec![
        OperatorSettings {
            name: "alice".into(),
            key: alice_public,
            role: Role::Operator,
        },
        OperatorSettings {
            name: "root".into(),
            key: root_public,
            role: Role::Admin,
        },
    ];
    let (socket, pin, shutdown) =
        start_supervisor_rpc(dir.path(), TrustPolicy::nobody(), operators);
    let alice = alice_key.to_str().unwrap();
    let root = root_key.to_str().unwrap();

    let output = ctl(
        &[
            "--socket",
            &socket,
            "--pin",
            &pin,
            "--operator",
            "alice",
            "--key",
            alice,
            "--json",
            "logs",
            "--lines",
            "3",
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["caller"], "alice");
    assert_eq!(result["tls"], true);
    assert_eq!(result["method"], "logs.tail");
    assert_eq!(result["params"], json!({"lines": 3}));

    // An operator may not unlock (admin only): refused, exit 4.
    let output = ctl(
        &[
            "--socket",
            &socket,
            "--pin",
            &pin,
            "--operator",
            "alice",
            "--key",
            alice,
            "unlock",
            "--passphrase-stdin",
        ],
        Some(b"hunter2 hunter2\n"),
    );
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));

    // An admin may; the dispatcher receives the secret line.
    let output = ctl(
        &[
            "--socket",
            &socket,
            "--pin",
            &pin,
            "--operator",
            "root",
            "--key",
            root,
            "--json",
            "unlock",
            "--passphrase-stdin",
        ],
        Some(b"hunter2 hunter2\n"),
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["secret"], "hunter2 hunter2");
    assert_eq!(result["method"], "vault.unlock");

    // Without a login: −32001, exit 4. With a key the server does not know
    // for that name: login refused, exit 4. A wrong pin: exit 3.
    let output = ctl(&["--socket", &socket, "--pin", &pin, "status"], None);
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    let output = ctl(
        &[
            "--socket",
            &socket,
            "--pin",
            &pin,
            "--operator",
            "alice",
            "--key",
            root,
            "status",
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    let wrong = format!("sha256:{}", "ab".repeat(32));
    let output = ctl(&["--socket", &socket, "--pin", &wrong, "status"], None);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(stderr(&output).contains(&pin), "{}", stderr(&output));
    shutdown.cancel();
}

#[test]
fn trusted_local_user_in_plaintext_and_with_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (socket, pin, shutdown) =
        start_supervisor_rpc(dir.path(), TrustPolicy::for_this_process(), Vec::new());
    let output = ctl(&["--socket", &socket, "--json", "status"], None);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(
        result["caller"].as_str().unwrap().starts_with("local:"),
        "{result}"
    );
    assert_eq!(result["tls"], false);

    let output = ctl(
        &[
            "--socket", &socket, "--tls", "--pin", &pin, "--json", "status",
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["tls"], true);
    shutdown.cancel();
}
