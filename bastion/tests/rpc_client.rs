//! `palisade-bastion call` and the authenticated health check against the
//! supervisor's REAL RPC server (`palisade_supervisor::rpc::ControlSocket::
//! serve_rpc`, TLS identity from `init_identity`, operators as the
//! supervisor's config gives them) with a scripted dispatcher, through the
//! real `palisade-bastion` binary.
//!
//! The servers trust nobody (`TrustPolicy::nobody()`), so every connection
//! from this test process is treated as one that came through a bastion's
//! tunnel: TLS with the pinned certificate and an operator login are
//! required, and the role of the bastion's `[[operator]]` entry (viewer)
//! limits what it may call.

mod common;

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{BIN, wait_for_socket, wait_until};
use palisade_supervisor::backup::BoxFuture;
use palisade_supervisor::config::{OperatorSettings, RpcSettings, parse_operator_key};
use palisade_supervisor::rpc::{
    Caller, ControlSocket, Dispatcher, ReplaceIdentity, TrustPolicy, init_identity,
};
use palisade_wire::rpc::{Role, RpcError};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// What the scripted supervisor answers, and what it was asked.
#[derive(Default)]
struct Script {
    /// The `health` answer.
    health: Mutex<Value>,
    /// Every dispatched call: (operator, role, method).
    calls: Mutex<Vec<(String, Role, String)>>,
}

impl Script {
    fn set_health(&self, health: Value) {
        *self.health.lock().unwrap() = health;
    }

    fn calls(&self) -> Vec<(String, Role, String)> {
        self.calls.lock().unwrap().clone()
    }

    fn methods(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .map(|(_, _, method)| method)
            .collect()
    }
}

/// Answers `status` with who called, `health` from the script, anything
/// else with an echo. The real server has already checked the login and
/// the role before a call gets here.
struct Scripted(Arc<Script>);

impl Dispatcher for Scripted {
    fn call<'a>(
        &'a self,
        caller: &'a Caller,
        method: &'a str,
        params: Value,
        _secret: Option<SecretString>,
    ) -> BoxFuture<'a, Result<Value, RpcError>> {
        Box::pin(async move {
            self.0.calls.lock().unwrap().push((
                caller.operator.clone(),
                caller.role,
                method.to_string(),
            ));
            Ok(match method {
                "status" => json!({
                    "validator": "val-a",
                    "node": {"state": "running", "height": 42},
                    "caller": caller.operator,
                    "role": caller.role,
                    "tls": caller.tls,
                }),
                "health" => self.0.health.lock().unwrap().clone(),
                _ => json!({"method": method, "params": params}),
            })
        })
    }
}

/// A real RPC server for validator `name` on `socket`.
struct Supervisor {
    pin: String,
    script: Arc<Script>,
    shutdown: CancellationToken,
}

impl Supervisor {
    fn start(dir: &Path, name: &str, socket: &Path, operators: Vec<OperatorSettings>) -> Self {
        Supervisor::start_with_idle(dir, name, socket, operators, Duration::from_secs(5))
    }

    /// With the control socket's idle timeout `idle_timeout`.
    fn start_with_idle(
        dir: &Path,
        name: &str,
        socket: &Path,
        operators: Vec<OperatorSettings>,
        idle_timeout: Duration,
    ) -> Self {
        let tls_dir = dir.join(format!("tls-{name}"));
        let pin = init_identity(&tls_dir, name, ReplaceIdentity::No).unwrap();
        let settings = RpcSettings {
            socket: socket.to_path_buf(),
            name: name.into(),
            tls_dir,
            idle_timeout,
            trusted_uids: vec![0],
        };
        let script = Arc::new(Script::default());
        script.set_health(json!({"ok": true, "problems": []}));
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let dispatcher = Arc::new(Scripted(script.clone()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                // Binding creates the socket's directory 0700.
                let control = ControlSocket::bind(&settings)
                    .unwrap()
                    .with_trust_policy(TrustPolicy::nobody());
                ready_tx.send(()).unwrap();
                control.serve_rpc(dispatcher, operators, token).await;
            });
        });
        ready_rx.recv().unwrap();
        Supervisor {
            pin,
            script,
            shutdown,
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// `ssh-keygen -t ed25519` without passphrase in `dir/name` (mode 0600).
fn keygen(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&path)
        .status()
        .expect("ssh-keygen runs");
    assert!(status.success());
    path
}

/// The supervisor's `[[operator]]` entry for the key at `private`.
fn operator(name: &str, private: &Path, role: Role) -> OperatorSettings {
    let public = std::fs::read_to_string(private.with_extension("pub")).unwrap();
    OperatorSettings {
        name: name.into(),
        key: parse_operator_key(&public).unwrap(),
        role,
    }
}

/// Forward every connection to `listen` on to `upstream`, counting them
/// (the bastion's reverse forward, in miniature).
fn proxy(listen: &Path, upstream: &Path) -> Arc<AtomicUsize> {
    let listener = UnixListener::bind(listen).unwrap();
    let upstream = upstream.to_path_buf();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            counter.fetch_add(1, Ordering::SeqCst);
            let Ok(server) = UnixStream::connect(&upstream) else {
                continue;
            };
            let pipe = |mut from: UnixStream, mut to: UnixStream| {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
            };
            pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
            pipe(server, client);
        }
    });
    count
}

/// One `[[validator]]`: name, socket, pin.
struct Entry<'a> {
    name: &'a str,
    socket: &'a Path,
    pin: Option<&'a str>,
}

/// Write `dir/file`: listen-socket `dir/run/bastion.sock`, backup-dir
/// `dir/backups`, `extra` tables, the `[client]` (operator, key) and the
/// validators. Returns its path.
fn write_config(
    dir: &Path,
    file: &str,
    extra: &str,
    client: Option<(&str, &Path)>,
    validators: &[Entry<'_>],
) -> PathBuf {
    let mut text = format!(
        "listen-socket = \"{0}/run/bastion.sock\"\nbackup-dir = \"{0}/backups\"\n{extra}\n",
        dir.display()
    );
    if let Some((operator, key)) = client {
        text.push_str(&format!(
            "[client]\noperator = \"{operator}\"\nkey = \"{}\"\n",
            key.display()
        ));
    }
    for entry in validators {
        text.push_str(&format!(
            "[[validator]]\nname = \"{}\"\nsocket = \"{}\"\n",
            entry.name,
            entry.socket.display()
        ));
        if let Some(pin) = entry.pin {
            text.push_str(&format!("pin = \"{pin}\"\n"));
        }
    }
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    path
}

/// `palisade-bastion call --config CONFIG ARGS…`.
fn call(config: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("call")
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Assert `output` exited with `code` and its stderr contains every one
/// of `fragments`; nothing on stdout for a failure.
fn assert_failed(output: &Output, code: i32, fragments: &[&str]) {
    let text = stderr(output);
    assert_eq!(output.status.code(), Some(code), "stderr: {text}");
    for fragment in fragments {
        assert!(
            text.contains(fragment),
            "{fragment:?} not in stderr: {text}"
        );
    }
}

#[test]
fn call_goes_through_the_real_rpc_server_as_a_viewer() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "bastion_ed25519");
    let stranger = keygen(dir.path(), "stranger_ed25519");
    let socket = dir.path().join("run/val-a.sock");
    let supervisor = Supervisor::start(
        dir.path(),
        "val-a",
        &socket,
        vec![operator("bastion-b1", &key, Role::Viewer)],
    );
    let missing = dir.path().join("run/val-c.sock");
    let config = write_config(
        dir.path(),
        "bastion.toml",
        "",
        Some(("bastion-b1", &key)),
        &[
            Entry {
                name: "val-a",
                socket: &socket,
                pin: Some(&supervisor.pin),
            },
            Entry {
                name: "val-b",
                socket: &dir.path().join("run/val-b.sock"),
                pin: None,
            },
            Entry {
                name: "val-c",
                socket: &missing,
                pin: Some(&supervisor.pin),
            },
        ],
    );

    // status --json: one line of JSON, the result only; the supervisor saw
    // the bastion's operator, over TLS, as a viewer.
    let output = call(&config, &["val-a", "status", "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert_eq!(text.lines().count(), 1, "{text}");
    let result: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(result["caller"], "bastion-b1");
    assert_eq!(result["role"], "viewer");
    assert_eq!(result["tls"], true);
    assert_eq!(result["node"]["height"], 42);
    assert_eq!(stderr(&output), "", "no warning for a viewer");

    // Without --json: the same result, indented.
    let output = call(&config, &["val-a", "status"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stdout(&output).lines().count() > 3, "{}", stdout(&output));
    assert_eq!(
        serde_json::from_str::<Value>(&stdout(&output)).unwrap(),
        result
    );

    // --params reach the method.
    let output = call(
        &config,
        &["val-a", "logs.tail", "--params", r#"{"lines":5}"#, "--json"],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let result: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(result["params"], json!({"lines": 5}));

    // health: printed; problems make it exit 1, as palisade-ctl does.
    supervisor
        .script
        .set_health(json!({"ok": false, "problems": ["vault is locked"]}));
    let output = call(&config, &["val-a", "health", "--json"]);
    assert_failed(&output, 1, &["val-a: the supervisor reports problems"]);
    let result: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(result["problems"], json!(["vault is locked"]));
    supervisor
        .script
        .set_health(json!({"ok": true, "problems": []}));
    let output = call(&config, &["val-a", "health", "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));

    // A method that needs the operator role: refused by the supervisor,
    // exit 4, never dispatched.
    let output = call(&config, &["val-a", "node.stop"]);
    assert_failed(
        &output,
        4,
        &[
            "val-a: node.stop refused by the supervisor",
            "code -32002",
            "role viewer",
        ],
    );
    assert_eq!(stdout(&output), "");
    // An unknown method: the supervisor's error, exit 1.
    let output = call(&config, &["val-a", "no.such.method"]);
    assert_failed(&output, 1, &["val-a: no.such.method", "code -32601"]);

    // Refused before connecting, exit 2: a secret method, an unknown
    // validator, a validator without pin, params that are not JSON.
    let output = call(&config, &["val-a", "vault.unlock"]);
    assert_failed(
        &output,
        2,
        &[
            "vault.unlock takes a secret",
            "secrets are never typed on a bastion",
        ],
    );
    let output = call(&config, &["val-x", "status"]);
    assert_failed(
        &output,
        2,
        &["unknown validator \"val-x\"", "val-a, val-b, val-c"],
    );
    let output = call(&config, &["val-b", "status"]);
    assert_failed(&output, 2, &["validator val-b has no `pin`"]);
    let output = call(&config, &["val-a", "status", "--params", "{lines"]);
    assert_failed(&output, 2, &["--params is not JSON"]);
    let output = call(&config, &["val-a", "status", "--timeout", "0"]);
    assert_failed(&output, 2, &["--timeout"]);

    // Connection failures, exit 3: no socket; a pin that is not the
    // supervisor's certificate (both fingerprints named).
    let output = call(&config, &["val-c", "status"]);
    assert_failed(&output, 3, &["val-c: cannot connect", "val-c.sock"]);
    let wrong = format!("sha256:{}", "ab".repeat(32));
    let wrong_pin = write_config(
        dir.path(),
        "wrong-pin.toml",
        "",
        Some(("bastion-b1", &key)),
        &[Entry {
            name: "val-a",
            socket: &socket,
            pin: Some(&wrong),
        }],
    );
    let output = call(&wrong_pin, &["val-a", "status"]);
    assert_failed(&output, 3, &[&supervisor.pin, &wrong, "pinned"]);

    // No [client]: usage, exit 2.
    let no_client = write_config(
        dir.path(),
        "no-client.toml",
        "",
        None,
        &[Entry {
            name: "val-a",
            socket: &socket,
            pin: Some(&supervisor.pin),
        }],
    );
    let output = call(&no_client, &["val-a", "status"]);
    assert_failed(&output, 2, &["add a [client] table"]);
    // An invalid configuration: exit 2, as palisade-ctl.
    let invalid = dir.path().join("invalid.toml");
    std::fs::write(&invalid, "listen-socket = \"relative\"\n").unwrap();
    let output = call(&invalid, &["val-a", "status"]);
    assert_failed(&output, 2, &["invalid configuration"]);

    // A key others can read: unusable, exit 4, nothing sent.
    let open_key = dir.path().join("open_ed25519");
    std::fs::copy(&key, &open_key).unwrap();
    std::fs::set_permissions(
        &open_key,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let open = write_config(
        dir.path(),
        "open-key.toml",
        "",
        Some(("bastion-b1", &open_key)),
        &[Entry {
            name: "val-a",
            socket: &socket,
            pin: Some(&supervisor.pin),
        }],
    );
    let output = call(&open, &["val-a", "status"]);
    assert_failed(&output, 4, &["permissions 644 are too open"]);

    let before = supervisor.script.methods();
    assert!(
        !before
            .iter()
            .any(|m| m == "vault.unlock" || m == "node.stop"),
        "{before:?}"
    );
    assert!(
        supervisor
            .script
            .calls()
            .iter()
            .all(|(who, role, _)| who == "bastion-b1" && *role == Role::Viewer)
    );

    // Last (a refused login slows the server's next logins): a key the
    // supervisor does not know for that name: login refused, exit 4.
    let strange = write_config(
        dir.path(),
        "stranger.toml",
        "",
        Some(("bastion-b1", &stranger)),
        &[Entry {
            name: "val-a",
            socket: &socket,
            pin: Some(&supervisor.pin),
        }],
    );
    let output = call(&strange, &["val-a", "status"]);
    assert_failed(
        &output,
        4,
        &[
            "val-a: login as bastion-b1 refused",
            "code -32001",
            "role = \"viewer\"",
        ],
    );
    assert_eq!(supervisor.script.methods(), before, "nothing dispatched");
}

/// A `palisade-bastion run` process; killed on drop.
struct Daemon {
    config: PathBuf,
    status_file: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    fn start(dir: &Path, config: PathBuf) -> Daemon {
        let log = dir.join("daemon.log");
        let stderr = std::fs::File::create(&log).unwrap();
        let child = Command::new(BIN)
            .arg("run")
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        wait_for_socket(&dir.join("run/bastion.sock"));
        Daemon {
            config,
            status_file: dir.join("run/status.json"),
            log,
            child: Some(child),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn entry(&self, validator: &str) -> Option<Value> {
        let document: Value =
            serde_json::from_slice(&std::fs::read(&self.status_file).ok()?).ok()?;
        document["validators"]
            .as_array()?
            .iter()
            .find(|entry| entry["name"] == validator)
            .cloned()
    }

    /// Wait until `validator`'s entry satisfies `condition`; returns it.
    fn wait_for(&self, validator: &str, what: &str, condition: impl Fn(&Value) -> bool) -> Value {
        wait_until(&format!("{validator}: {what}"), || {
            self.entry(validator).is_some_and(|entry| condition(&entry))
        });
        self.entry(validator).unwrap()
    }

    /// `palisade-bastion status --json`: exit code and document.
    fn status(&self) -> (Option<i32>, Value) {
        let output = Command::new(BIN)
            .arg("status")
            .arg("--config")
            .arg(&self.config)
            .arg("--json")
            .output()
            .unwrap();
        let document = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|error| panic!("{error}: {}", stderr(&output)));
        (output.status.code(), document)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Probes that leave room for a loaded machine: a healthy supervisor must
/// never look slow.
const HEALTH: &str = "[health]\ninterval = \"1s\"\ntimeout = \"1s\"\n";

/// One supervisor "val-a" that knows the bastion's key as a viewer, with
/// control-socket idle timeout `idle`, reached through a proxy that counts
/// connections (the reverse forward, in miniature); the bastion's config
/// for it, checking every `HEALTH` interval.
struct Proxied {
    supervisor: Supervisor,
    connections: Arc<AtomicUsize>,
    config: PathBuf,
    key: PathBuf,
}

fn proxied(dir: &Path, idle: Duration) -> Proxied {
    let key = keygen(dir, "bastion_ed25519");
    let socket = dir.join("run/val-a.sock");
    let real = dir.join("run/val-a-real.sock");
    let supervisor = Supervisor::start_with_idle(
        dir,
        "val-a",
        &real,
        vec![operator("bastion-b1", &key, Role::Viewer)],
        idle,
    );
    let connections = proxy(&socket, &real);
    let config = write_config(
        dir,
        "bastion.toml",
        HEALTH,
        Some(("bastion-b1", &key)),
        &[Entry {
            name: "val-a",
            socket: &socket,
            pin: Some(&supervisor.pin),
        }],
    );
    Proxied {
        supervisor,
        connections,
        config,
        key,
    }
}

#[test]
fn run_reports_the_supervisors_problems_then_its_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let Proxied {
        supervisor,
        connections,
        config,
        key,
    } = proxied(dir.path(), Duration::from_secs(5));
    supervisor.script.set_health(json!({
        "ok": false,
        "problems": ["vault is locked", "node is locked"],
    }));
    let check = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(0), "{}", stderr(&check));
    let summary = stdout(&check);
    assert!(
        summary.contains("health check: greeting, then TLS + login + health"),
        "{summary}"
    );
    assert!(
        summary.contains("client.operator:         bastion-b1"),
        "{summary}"
    );
    let private = std::fs::read_to_string(&key).unwrap();
    let secret_line = private.lines().nth(1).unwrap();
    assert!(!summary.contains(secret_line), "key material printed");

    let daemon = Daemon::start(dir.path(), config);
    let problems = "supervisor reports problems: vault is locked; node is locked";
    let entry = daemon.wait_for("val-a", "problems reported, probed 3 times", |entry| {
        entry["state"] == "down"
            && entry["last_error"] == problems
            && entry["consecutive_failures"].as_u64() >= Some(3)
    });
    // Reachable: the greeting is recorded.
    assert_eq!(entry["supervisor"]["validator"], "val-a");
    let (code, document) = daemon.status();
    assert_eq!(code, Some(3));
    assert_eq!(document["validators"][0]["last_error"], problems);
    // Only the change is logged, not every probe.
    let log = daemon.log();
    let down: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("validator down"))
        .collect();
    assert_eq!(down.len(), 1, "{log}");
    assert!(down[0].contains(problems), "{log}");
    assert!(!log.contains("still down"), "{log}");
    // The bastion logged in as its viewer and called only `health`.
    let calls = supervisor.script.calls();
    assert!(calls.len() >= 3, "{calls:?}");
    assert!(
        calls.iter().all(|(who, role, method)| who == "bastion-b1"
            && *role == Role::Viewer
            && method == "health"),
        "{calls:?}"
    );

    // The list changes: news, logged once more.
    supervisor.script.set_health(json!({
        "ok": false,
        "problems": ["vault is locked"],
    }));
    daemon.wait_for("val-a", "one problem left", |entry| {
        entry["last_error"] == "supervisor reports problems: vault is locked"
    });
    wait_until("the change in the log", || {
        daemon.log().contains("validator still down")
    });

    // Healthy again: up, status exits 0.
    supervisor
        .script
        .set_health(json!({"ok": true, "problems": []}));
    let entry = daemon.wait_for("val-a", "up", |entry| entry["state"] == "up");
    assert_eq!(entry["consecutive_failures"], 0);
    let (code, _) = daemon.status();
    assert_eq!(code, Some(0));
    wait_until("the recovery in the log", || {
        daemon.log().contains("validator up")
    });
    let log = daemon.log();
    assert_eq!(log.matches("validator down").count(), 1, "{log}");
    assert!(!log.contains("grants this bastion's key more"), "{log}");

    // One login for all those checks: each probe opens only its greeting
    // connection, and `health` goes over the kept session (a new login per
    // probe would be two connections per call).
    wait_until("six health calls", || supervisor.script.calls().len() >= 6);
    let calls = supervisor.script.calls().len();
    let opened = connections.load(Ordering::SeqCst);
    assert!(
        opened <= calls + 3,
        "{opened} connections for {calls} health calls"
    );
}

#[test]
fn run_names_refused_checks_and_keeps_greeting_only_checks_without_a_pin() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "bastion_ed25519");
    let other = keygen(dir.path(), "other_ed25519");
    let run = dir.path().join("run");
    let (socket_a, socket_b, socket_c, socket_d) = (
        run.join("val-a.sock"),
        run.join("val-b.sock"),
        run.join("val-c.sock"),
        run.join("val-d.sock"),
    );
    // val-a: knows the bastion, but the bastion pins another certificate.
    let a = Supervisor::start(
        dir.path(),
        "val-a",
        &socket_a,
        vec![operator("bastion-b1", &key, Role::Viewer)],
    );
    // val-b: does not know the bastion's key; reached through a proxy
    // that counts connections.
    let b = Supervisor::start(
        dir.path(),
        "val-b",
        &run.join("val-b-real.sock"),
        vec![operator("bastion-b1", &other, Role::Viewer)],
    );
    let connections_b = proxy(&socket_b, &run.join("val-b-real.sock"));
    // val-c: no pin configured: the greeting alone, as before.
    let c = Supervisor::start(dir.path(), "val-c", &socket_c, Vec::new());
    // val-d: grants the bastion more than viewer: works, with a warning.
    let d = Supervisor::start(
        dir.path(),
        "val-d",
        &socket_d,
        vec![operator("bastion-b1", &key, Role::Operator)],
    );
    let wrong = format!("sha256:{}", "cd".repeat(32));
    let config = write_config(
        dir.path(),
        "bastion.toml",
        HEALTH,
        Some(("bastion-b1", &key)),
        &[
            Entry {
                name: "val-a",
                socket: &socket_a,
                pin: Some(&wrong),
            },
            Entry {
                name: "val-b",
                socket: &socket_b,
                pin: Some(&b.pin),
            },
            Entry {
                name: "val-c",
                socket: &socket_c,
                pin: None,
            },
            Entry {
                name: "val-d",
                socket: &socket_d,
                pin: Some(&d.pin),
            },
        ],
    );
    let daemon = Daemon::start(dir.path(), config);

    let entry = daemon.wait_for("val-a", "pin refused", |entry| {
        entry["state"] == "down" && entry["last_error"].as_str().is_some()
    });
    let reason = entry["last_error"].as_str().unwrap();
    assert!(
        reason.starts_with("health check refused: the supervisor's certificate is"),
        "{reason}"
    );
    assert!(
        reason.contains(&a.pin) && reason.contains(&wrong),
        "{reason}"
    );

    let entry = daemon.wait_for("val-b", "login refused", |entry| {
        entry["state"] == "down" && entry["last_error"].as_str().is_some()
    });
    let reason = entry["last_error"].as_str().unwrap();
    assert!(
        reason.starts_with("health check refused: login as bastion-b1 refused: login refused"),
        "{reason}"
    );
    assert!(reason.contains("role = \"viewer\""), "{reason}");
    // Refused logins are not retried at every probe (the supervisor's
    // login rate limit is shared with its human operators): after the
    // first probe (greeting + login connections), one connection per
    // probe, the greeting's, and the refusal is still reported.
    let entry = daemon.wait_for("val-b", "five probes", |entry| {
        entry["consecutive_failures"].as_u64() >= Some(5)
    });
    assert_eq!(entry["last_error"], reason, "the refusal is still reported");
    let connections = connections_b.load(Ordering::SeqCst);
    let probes = daemon.entry("val-b").unwrap()["consecutive_failures"]
        .as_u64()
        .unwrap() as usize;
    // Without the back-off: two connections per probe (≥ 10).
    assert!(
        (probes..=probes + 2).contains(&connections),
        "{connections} connections for {probes} probes"
    );

    let entry = daemon.wait_for("val-c", "up", |entry| entry["state"] == "up");
    assert_eq!(entry["supervisor"]["validator"], "val-c");
    assert!(c.script.calls().is_empty(), "greeting only: no call");

    let entry = daemon.wait_for("val-d", "up", |entry| entry["state"] == "up");
    assert_eq!(entry["last_error"], Value::Null);
    wait_until("the role warning", || {
        daemon
            .log()
            .contains("grants this bastion's key more than the viewer role")
    });
    daemon.wait_for("val-d", "probed again", |entry| {
        entry["last_checked"] != Value::Null && d.script.calls().len() >= 3
    });
    let log = daemon.log();
    assert_eq!(
        log.matches("grants this bastion's key more than the viewer role")
            .count(),
        1,
        "warned once: {log}"
    );

    let (code, document) = daemon.status();
    assert_eq!(code, Some(3), "{document}");
    // val-a's supervisor dispatched nothing; val-b's neither.
    assert!(a.script.calls().is_empty());
    assert!(b.script.calls().is_empty());
}

/// A kept session that the supervisor closed meanwhile (here its idle
/// timeout, shorter than the probe interval; a restart looks the same) is
/// noticed before use and replaced by a new login: no probe fails for it.
#[test]
fn a_session_the_supervisor_closed_is_replaced_by_a_new_login() {
    let dir = tempfile::tempdir().unwrap();
    let Proxied {
        supervisor,
        connections,
        config,
        ..
    } = proxied(dir.path(), Duration::from_millis(300));
    let daemon = Daemon::start(dir.path(), config);
    wait_until("four health calls", || supervisor.script.calls().len() >= 4);
    let entry = daemon.wait_for("val-a", "up", |entry| entry["state"] == "up");
    assert_eq!(entry["consecutive_failures"], 0, "{entry}");
    let log = daemon.log();
    assert!(!log.contains("validator down"), "{log}");
    // Every check needed its own login: greeting + session per call.
    let calls = supervisor.script.calls().len();
    let opened = connections.load(Ordering::SeqCst);
    assert!(
        opened + 1 >= 2 * calls,
        "{opened} connections for {calls} calls: a closed session was reused?"
    );
}

/// The built-in alerts from the authenticated check: each problem the real
/// supervisor's `health` lists is one alert at the webhook (its detail may
/// change without a new message), and each is resolved when the list no
/// longer names it.
#[test]
fn the_supervisors_problems_become_alerts_and_resolve() {
    use palisade_testkit::http_receiver::{HttpReceiver, Received};
    let dir = tempfile::tempdir().unwrap();
    let Proxied {
        supervisor, config, ..
    } = proxied(dir.path(), Duration::from_secs(5));
    let receiver = HttpReceiver::start().unwrap();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[alerts]\nsource = \"b1\"\n[[alerts.sink]]\nkind = \"webhook\"\nurl = \"{}\"\n",
        receiver.url("/hook")
    ));
    std::fs::write(&config, text).unwrap();
    supervisor.script.set_health(json!({
        "ok": false,
        "problems": ["vault is locked", "tunnel to b2 is down: not connected yet"],
    }));
    let daemon = Daemon::start(dir.path(), config);
    let alerts = |requests: &[Received]| -> Vec<(String, String)> {
        requests
            .iter()
            .map(|r| {
                let body = r.json();
                (
                    body["status"].as_str().unwrap().to_string(),
                    body["alert"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let pair = |status: &str, alert: &str| (status.to_string(), alert.to_string());
    let requests = receiver
        .wait_until("two firing alerts", common::PATIENCE, |r| r.len() >= 2)
        .unwrap();
    assert_eq!(
        alerts(&requests),
        [
            pair("firing", "problem:tunnel to b2 is down"),
            pair("firing", "problem:vault is locked"),
        ]
    );
    let tunnel = requests[0].json();
    assert_eq!(tunnel["severity"], "error");
    assert_eq!(tunnel["detail"], "tunnel to b2 is down: not connected yet");

    // The tunnel's detail changes, the vault is unlocked: one resolve.
    supervisor.script.set_health(json!({
        "ok": false,
        "problems": ["tunnel to b2 is down: connection refused"],
    }));
    let requests = receiver
        .wait_until("the vault's resolve", common::PATIENCE, |r| r.len() >= 3)
        .unwrap();
    assert_eq!(
        alerts(&requests[2..]),
        [pair("resolved", "problem:vault is locked")]
    );

    supervisor
        .script
        .set_health(json!({"ok": true, "problems": []}));
    let requests = receiver
        .wait_until("the tunnel's resolve", common::PATIENCE, |r| r.len() >= 4)
        .unwrap();
    let last = requests[3].json();
    assert_eq!(
        alerts(&requests[3..]),
        [pair("resolved", "problem:tunnel to b2 is down")]
    );
    assert_eq!(last["detail"], "tunnel to b2 is down: connection refused");
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(receiver.requests().len(), 4, "{}", daemon.log());
}
