//! `palisade-ctl` against a stand-in control-RPC server: exit codes,
//! greeting handling, pinned TLS, operator login with channel binding,
//! secret lines and output shapes. The real binary is driven every time.

mod common;

use common::*;
use palisade_wire::rpc::{RpcError, TlsRequirement, code};
use serde_json::{Value, json};

const OK: i32 = 0;
const CALL: i32 = 1;
const USAGE: i32 = 2;
const CONNECTION: i32 = 3;
const AUTH: i32 = 4;

fn socket_arg(server: &TestServer) -> String {
    server.socket.to_str().unwrap().to_string()
}

#[test]
fn plaintext_status_prints_raw_result_with_json_and_lines_without() {
    let status = json!({"node": {"pid": 42, "state": "running"}, "vault": "locked"});
    let server = TestServer::start(
        ServerSpec::new(TlsRequirement::Optional).answer("status", Ok(status.clone())),
    );
    let socket = socket_arg(&server);

    let output = ctl(&["--socket", &socket, "--json", "status"], None);
    assert_eq!(output.status.code(), Some(OK), "{}", stderr(&output));
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(printed, status, "--json prints exactly the result");

    let output = ctl(&["status", "--socket", &socket], None);
    assert_eq!(output.status.code(), Some(OK), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "node:\n  pid: 42\n  state: running\nvault: locked\n"
    );

    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[0],
        json!({"jsonrpc": "2.0", "id": 1, "method": "status"})
    );
    assert!(
        server.log.lock().unwrap().logins.is_empty(),
        "no operator, no login"
    );
}

#[test]
fn bad_greetings_are_connection_failures() {
    // (what the "supervisor" writes, fragment of the message)
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"SSH-2.0-OpenSSH_9.2\r\n".to_vec(), "malformed greeting"),
        (
            b"{\"service\":\"other\",\"protocol\":1,\"version\":\"1\",\"validator\":\"v\"}\n"
                .to_vec(),
            "not \"palisade-supervisor\"",
        ),
        (vec![b'x'; 4000], "more than 1024 bytes without a newline"),
        (
            b"{\"service\":\"palisade-supervisor\"".to_vec(),
            "in the middle of the greeting",
        ),
        (Vec::new(), "closed before sending a greeting"),
    ];
    for (bytes, fragment) in cases {
        let (_dir, socket) = start_raw(bytes.clone(), false);
        let output = ctl(&["--socket", socket.to_str().unwrap(), "status"], None);
        assert_eq!(
            output.status.code(),
            Some(CONNECTION),
            "{:?}: {}",
            String::from_utf8_lossy(&bytes),
            stderr(&output)
        );
        assert!(stderr(&output).contains(fragment), "{}", stderr(&output));
    }
}

#[test]
fn a_stalled_greeting_times_out() {
    let (_dir, socket) = start_raw(b"{\"service\":".to_vec(), true);
    let started = std::time::Instant::now();
    let output = ctl(
        &[
            "--socket",
            socket.to_str().unwrap(),
            "--timeout",
            "1",
            "status",
        ],
        None,
    );
    assert_eq!(
        output.status.code(),
        Some(CONNECTION),
        "{}",
        stderr(&output)
    );
    assert!(
        stderr(&output).contains("within 1 s"),
        "{}",
        stderr(&output)
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn missing_socket_is_a_connection_failure() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nothing.sock");
    let output = ctl(&["--socket", socket.to_str().unwrap(), "health"], None);
    assert_eq!(output.status.code(), Some(CONNECTION));
    assert!(
        stderr(&output).contains("cannot connect to"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn tls_with_the_pinned_certificate_and_a_login_bound_to_the_session() {
    let identity = TlsIdentity::generate();
    let keys = tempfile::tempdir().unwrap();
    let (key_path, public) = operator_key(keys.path(), "palisade_alice");
    let mut spec = ServerSpec::new(TlsRequirement::Required)
        .answer("health", Ok(json!({"ok": true, "problems": []})));
    spec.tls = Some(identity.clone());
    spec.operator = Some(("alice".into(), public));
    let server = TestServer::start(spec);

    let output = ctl(
        &[
            "--socket",
            &socket_arg(&server),
            "--pin",
            &identity.fingerprint,
            "--operator",
            "alice",
            "--key",
            key_path.to_str().unwrap(),
            "health",
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(OK), "{}", stderr(&output));
    assert_eq!(stdout(&output), "healthy\n");
    let log = server.log.lock().unwrap();
    assert_eq!(log.logins.len(), 1);
    let login = &log.logins[0];
    assert!(
        login.verified,
        "the server verified the signature over auth_message + exporter"
    );
    assert_eq!(login.operator, "alice");
    assert_ne!(
        login.binding, [0; 32],
        "the binding is the TLS exporter value"
    );
    let methods: Vec<String> = log
        .lines
        .iter()
        .map(|line| {
            serde_json::from_slice::<Value>(line).unwrap()["method"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(methods, ["auth.challenge", "auth.login", "health"]);
}

#[test]
fn plaintext_login_signs_with_a_zero_binding() {
    let keys = tempfile::tempdir().unwrap();
    let (key_path, public) = operator_key(keys.path(), "palisade_alice");
    let mut spec = ServerSpec::new(TlsRequirement::Optional).answer("status", Ok(json!({})));
    spec.operator = Some(("alice".into(), public));
    let server = TestServer::start(spec);
    let output = ctl(
        &[
            "--socket",
            &socket_arg(&server),
            "--operator",
            "alice",
            "--key",
            key_path.to_str().unwrap(),
            "status",
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(OK), "{}", stderr(&output));
    let log = server.log.lock().unwrap();
    assert!(log.logins[0].verified);
    assert_eq!(log.logins[0].binding, [0; 32]);
}

#[test]
fn a_different_certificate_is_refused_naming_both_fingerprints() {
    let served = TlsIdentity::generate();
    let pinned = TlsIdentity::generate();
    let mut spec = ServerSpec::new(TlsRequirement::Required).answer("status", Ok(json!({})));
    spec.tls = Some(served.clone());
    let server = TestServer::start(spec);
    let output = ctl(
        &[
            "--socket",
            &socket_arg(&server),
            "--pin",
            &pinned.fingerprint,
            "status",
        ],
        None,
    );
    assert_eq!(
        output.status.code(),
        Some(CONNECTION),
        "{}",
        stderr(&output)
    );
    let message = stderr(&output);
    assert!(message.contains(&served.fingerprint), "{message}");
    assert!(message.contains(&pinned.fingerprint), "{message}");
    assert!(
        server.log.lock().unwrap().lines.is_empty(),
        "no request after a pin mismatch"
    );
}

#[test]
fn tls_required_without_a_pin_is_a_connection_failure() {
    let mut spec = ServerSpec::new(TlsRequirement::Required);
    spec.tls = Some(TlsIdentity::generate());
    let server = TestServer::start(spec);
    let output = ctl(&["--socket", &socket_arg(&server), "status"], None);
    assert_eq!(output.status.code(), Some(CONNECTION));
    assert!(
        stderr(&output).contains("no certificate fingerprint is pinned"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn tls_on_request_when_plaintext_is_allowed() {
    let identity = TlsIdentity::generate();
    let mut spec = ServerSpec::new(TlsRequirement::Optional).answer("status", Ok(json!({"x": 1})));
    spec.tls = Some(identity.clone());
    let server = TestServer::start(spec);
    let output = ctl(
        &[
            "--socket",
            &socket_arg(&server),
            "--tls",
            "--pin",
            &identity.fingerprint,
            "--json",
            "status",
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(OK), "{}", stderr(&output));
    assert_eq!(
        serde_json::from_slice::<Value>(&output.stdout).unwrap(),
        json!({"x": 1})
    );
}

#[test]
fn refusals_exit_4_and_other_errors_exit_1() {
    let keys = tempfile::tempdir().unwrap();
    let (alice_key, _) = operator_key(keys.path(), "palisade_alice");
    let (_, mallory_public) = operator_key(keys.path(), "palisade_mallory");
    let mut spec = ServerSpec::new(TlsRequirement::Optional)
        .answer(
            "status",
            Err(RpcError::new(code::UNAUTHENTICATED, "not authenticated")),
        )
        .answer(
            "node.stop",
            Err(RpcError::new(code::FORBIDDEN, "forbidden")),
        )
        .answer(
            "vault.lock",
            Err(RpcError::new(code::WRONG_STATE, "already locked")),
        )
        .answer(
            "backup.now",
            Err(RpcError::new(code::INTERNAL, "store full")),
        );
    spec.operator = Some(("alice".into(), mallory_public));
    let server = TestServer::start(spec);
    let socket = socket_arg(&server);
    let key = alice_key.to_str().unwrap();
    // (args, exit code, fragment of stderr)
    let cases: &[(&[&str], i32, &str)] = &[
        (&["status"], AUTH, "not authenticated (code -32001)"),
        (&["node", "stop"], AUTH, "forbidden (code -32002)"),
        (&["lock"], CALL, "already locked (code -32004)"),
        (&["backup-now"], CALL, "store full (code -32010)"),
        (
            &["call", "format.disk"],
            CALL,
            "unknown method format.disk (code -32601)",
        ),
        (
            &["--operator", "alice", "--key", key, "status"],
            AUTH,
            "login refused",
        ),
    ];
    for (args, expected, fragment) in cases {
        let mut all = vec!["--socket", socket.as_str()];
        all.extend_from_slice(args);
        let output = ctl(&all, None);
        assert_eq!(
            output.status.code(),
            Some(*expected),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(fragment),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(output.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn an_unusable_operator_key_exits_4_before_connecting() {
    let server = TestServer::start(ServerSpec::new(TlsRequirement::Optional));
    let keys = tempfile::tempdir().unwrap();
    let (key_path, _) = operator_key(keys.path(), "palisade_alice");
    let public_path = keys.path().join("palisade_alice.pub");
    std::fs::set_permissions(
        &public_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let open_key = keys.path().join("open_key");
    std::fs::copy(&key_path, &open_key).unwrap();
    std::fs::set_permissions(
        &open_key,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let garbage = keys.path().join("garbage");
    std::fs::write(&garbage, "not a key\n").unwrap();
    std::fs::set_permissions(
        &garbage,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    // (key file, fragment of the message)
    let cases = [
        (open_key, "too open"),
        (garbage, "not an OpenSSH private key"),
        // Only the public half: usable through ssh-agent, and there is none.
        (public_path, "is a public key"),
        (keys.path().join("missing"), "No such file"),
    ];
    for (key, fragment) in cases {
        let output = ctl(
            &[
                "--socket",
                &socket_arg(&server),
                "--operator",
                "alice",
                "--key",
                key.to_str().unwrap(),
                "status",
            ],
            None,
        );
        assert_eq!(output.status.code(), Some(AUTH), "{}", stderr(&output));
        assert!(stderr(&output).contains(fragment), "{}", stderr(&output));
    }
    assert!(server.log.lock().unwrap().lines.is_empty());
}

#[test]
fn unlock_sends_the_passphrase_as_the_line_after_the_request() {
    let server = TestServer::start(
        ServerSpec::new(TlsRequirement::Optional)
            .answer("vault.unlock", Ok(json!({"locked": false}))),
    );
    let passphrase = "correct horse battery staple";
    let output = ctl(
        &[
            "--socket",
            &socket_arg(&server),
            "--json",
            "unlock",
            "--passphrase-stdin",
        ],
        Some(format!("{passphrase}\n").as_bytes()),
    );
    assert_eq!(output.status.code(), Some(OK), "{}", stderr(&output));
    assert_eq!(
        serde_json::from_slice::<Value>(&output.stdout).unwrap(),
        json!({"locked": false})
    );
    let log = server.log.lock().unwrap();
    assert_eq!(log.lines.len(), 1);
    let request = String::from_utf8(log.lines[0].clone()).unwrap();
    assert_eq!(
        request,
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"vault.unlock\"}\n"
    );
    // Padded to one length (docs/rpc.md §4), sent with the request.
    let mut padded = passphrase.as_bytes().to_vec();
    padded.resize(
        palisade_wire::rpc::PADDED_SECRET_BYTES,
        palisade_wire::rpc::SECRET_PAD_BYTE,
    );
    padded.push(b'\n');
    assert_eq!(log.secrets, [padded]);
    assert!(!stdout(&output).contains(passphrase) && !stderr(&output).contains(passphrase));

    // Never on argv: there is no flag for it, and a raw call refuses.
    let output = ctl(
        &[
            "--socket",
            &socket_arg(&server),
            "unlock",
            "--passphrase",
            passphrase,
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(USAGE));
    let output = ctl(
        &["--socket", &socket_arg(&server), "call", "vault.unlock"],
        None,
    );
    assert_eq!(output.status.code(), Some(USAGE));
    // An empty stdin is not a passphrase.
    let output = ctl(
        &[
            "--socket",
            &socket_arg(&server),
            "unlock",
            "--passphrase-stdin",
        ],
        Some(b""),
    );
    assert_eq!(output.status.code(), Some(USAGE), "{}", stderr(&output));
    assert_eq!(log.lines.len(), 1, "nothing more was sent");
}

/// Issue 16, finding 7: on a local socket the client decided on TLS from
/// the unauthenticated greeting, so a fake server greeting "optional" got
/// the operator's login and the passphrase in plaintext although a pin was
/// configured. A pin now forces TLS: the fake server gets a TLS
/// ClientHello and nothing else.
#[test]
fn a_pin_forces_tls_whatever_a_local_greeting_says() {
    let keys = tempfile::tempdir().unwrap();
    let (key_path, public) = operator_key(keys.path(), "palisade_alice");
    // Plaintext, "TLS optional", and it would accept alice's login.
    let mut spec = ServerSpec::new(TlsRequirement::Optional)
        .answer("vault.unlock", Ok(json!({"locked": false})));
    spec.operator = Some(("alice".into(), public));
    let server = TestServer::start(spec);
    let pin = TlsIdentity::generate().fingerprint;
    let passphrase = "the passphrase a fake server wants";
    for pin_from in ["flag", "config"] {
        let config = keys.path().join("ctl.toml");
        std::fs::write(
            &config,
            format!(
                "[[validator]]\nname = \"val-a\"\nsocket = \"{}\"\npin = \"{pin}\"\n\
                 operator = \"alice\"\nkey = \"{}\"\n",
                server.socket.display(),
                key_path.display()
            ),
        )
        .unwrap();
        let args: Vec<String> = match pin_from {
            "flag" => [
                "--socket",
                &socket_arg(&server),
                "--pin",
                &pin,
                "--operator",
                "alice",
                "--key",
                key_path.to_str().unwrap(),
            ]
            .map(String::from)
            .to_vec(),
            _ => ["--config", config.to_str().unwrap()]
                .map(String::from)
                .to_vec(),
        };
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        args.extend(["--timeout", "3", "unlock", "--passphrase-stdin"]);
        let output = ctl(&args, Some(format!("{passphrase}\n").as_bytes()));
        assert_eq!(
            output.status.code(),
            Some(CONNECTION),
            "{pin_from}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains("TLS"),
            "{pin_from}: {}",
            stderr(&output)
        );
    }
    // What the fake server got: TLS handshake records, no login, no
    // secret, no JSON-RPC, no passphrase.
    let log = server.log.lock().unwrap();
    assert!(log.logins.is_empty(), "a login went out in plaintext");
    assert!(
        log.secrets.is_empty(),
        "the passphrase went out in plaintext"
    );
    for line in &log.lines {
        assert_eq!(line.first(), Some(&0x16), "not a TLS handshake record");
        for needle in [passphrase.as_bytes(), b"jsonrpc", b"alice"] {
            assert!(!line.windows(needle.len()).any(|window| window == needle));
        }
    }
}

#[test]
fn a_local_server_user_must_be_known() {
    let server = TestServer::start(ServerSpec::new(TlsRequirement::Optional));
    let output = ctl(
        &[
            "--socket",
            &socket_arg(&server),
            "--server-user",
            "no-such-user-here",
            "status",
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(USAGE), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("no user named"),
        "{}",
        stderr(&output)
    );
    assert!(server.log.lock().unwrap().lines.is_empty());
}

#[test]
fn health_with_problems_exits_1_after_printing_them() {
    let server = TestServer::start(ServerSpec::new(TlsRequirement::Optional).answer(
        "health",
        Ok(json!({"ok": false, "problems": ["node stopped"]})),
    ));
    let output = ctl(&["--socket", &socket_arg(&server), "health"], None);
    assert_eq!(output.status.code(), Some(CALL));
    assert_eq!(stdout(&output), "UNHEALTHY\n  - node stopped\n");
}

#[test]
fn commands_send_their_methods_and_params() {
    let server = TestServer::start(
        ServerSpec::new(TlsRequirement::Optional)
            .answer("logs.tail", Ok(json!({"lines": ["one", "two"]})))
            .answer("upgrade.add", Ok(json!({"staged": "v2"})))
            .answer("tunnel.reconnect", Ok(json!({}))),
    );
    let socket = socket_arg(&server);
    let checksum = format!("sha256:{}", "ab".repeat(32));
    let output = ctl(&["--socket", &socket, "logs", "--lines", "2"], None);
    assert_eq!(output.status.code(), Some(OK), "{}", stderr(&output));
    assert_eq!(stdout(&output), "one\ntwo\n");
    let output = ctl(
        &[
            "--socket",
            &socket,
            "upgrade",
            "add",
            "v2",
            "--url",
            "https://x/gaiad",
            "--checksum",
            &checksum,
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(OK), "{}", stderr(&output));
    let output = ctl(
        &[
            "--socket",
            &socket,
            "call",
            "tunnel.reconnect",
            "--params",
            r#"{"bastion":"b1"}"#,
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(OK), "{}", stderr(&output));
    let params: Vec<Value> = server
        .requests()
        .into_iter()
        .map(|request| request["params"].clone())
        .collect();
    assert_eq!(
        params,
        [
            json!({"lines": 2}),
            json!({"name": "v2", "url": "https://x/gaiad", "checksum": checksum}),
            json!({"bastion": "b1"}),
        ]
    );
}

#[test]
fn config_file_supplies_socket_pin_and_operator() {
    let identity = TlsIdentity::generate();
    let keys = tempfile::tempdir().unwrap();
    let (key_path, public) = operator_key(keys.path(), "palisade_alice");
    let mut spec = ServerSpec::new(TlsRequirement::Required).answer("backup.list", Ok(json!([])));
    spec.tls = Some(identity.clone());
    spec.operator = Some(("alice".into(), public));
    let server = TestServer::start(spec);
    let config = keys.path().join("ctl.toml");
    std::fs::write(
        &config,
        format!(
            "default = \"val-a\"\n\
             [[validator]]\nname = \"val-a\"\nsocket = \"{}\"\npin = \"{}\"\noperator = \"alice\"\nkey = \"{}\"\n\
             [[validator]]\nname = \"val-b\"\nsocket = \"/nonexistent/val-b.sock\"\n",
            server.socket.display(),
            identity.fingerprint,
            key_path.display()
        ),
    )
    .unwrap();
    let config_arg = config.to_str().unwrap();
    let output = ctl(&["--config", config_arg, "--json", "backups"], None);
    assert_eq!(output.status.code(), Some(OK), "{}", stderr(&output));
    assert_eq!(
        serde_json::from_slice::<Value>(&output.stdout).unwrap(),
        json!([])
    );
    assert!(server.log.lock().unwrap().logins[0].verified);

    let output = ctl(
        &["--config", config_arg, "--validator", "val-b", "backups"],
        None,
    );
    assert_eq!(
        output.status.code(),
        Some(CONNECTION),
        "{}",
        stderr(&output)
    );
    let output = ctl(
        &["--config", config_arg, "--validator", "val-c", "backups"],
        None,
    );
    assert_eq!(output.status.code(), Some(USAGE), "{}", stderr(&output));
    // A flag overrides the config: the wrong pin fails.
    let wrong = format!("sha256:{}", "0".repeat(64));
    let output = ctl(&["--config", config_arg, "--pin", &wrong, "backups"], None);
    assert_eq!(
        output.status.code(),
        Some(CONNECTION),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_bad_config_lists_every_problem_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ctl.toml");
    std::fs::write(
        &config,
        "default = \"zz\"\n[[validator]]\nname = \"a\"\nsocket = \"relative\"\npin = \"sha256:1\"\n",
    )
    .unwrap();
    let output = ctl(&["--config", config.to_str().unwrap(), "status"], None);
    assert_eq!(output.status.code(), Some(USAGE));
    let message = stderr(&output);
    for key in ["validator[0].socket", "validator[0].pin", "default"] {
        assert!(message.contains(&format!("ctl.toml: {key}: ")), "{message}");
    }
    let output = ctl(
        &[
            "--config",
            dir.path().join("missing.toml").to_str().unwrap(),
            "status",
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(USAGE));
    let output = ctl(&["status"], None);
    assert_eq!(output.status.code(), Some(USAGE), "no socket anywhere");
    assert!(stderr(&output).contains("--socket"), "{}", stderr(&output));
}

#[test]
fn via_reports_an_unreachable_bastion_and_refuses_half_configured_modes() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = operator_key(dir.path(), "alice");
    let key = key.to_str().unwrap();
    let pin = format!("sha256:{}", "ab".repeat(32));
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let via = format!("ops@127.0.0.1:{port}");
    let base = ["--via", &via, "--validator", "val-a"];
    let unreachable = ctl(
        &[
            &base[..],
            &["--pin", &pin, "--operator", "alice", "--key", key, "status"],
        ]
        .concat(),
        None,
    );
    assert_eq!(unreachable.status.code(), Some(CONNECTION));
    assert!(
        stderr(&unreachable).contains(&format!("connecting to 127.0.0.1:{port}")),
        "{}",
        stderr(&unreachable)
    );
    // No pin: TLS is mandatory through a bastion, so refuse before dialing.
    let no_pin = ctl(
        &[&base[..], &["--operator", "alice", "--key", key, "status"]].concat(),
        None,
    );
    assert_eq!(no_pin.status.code(), Some(USAGE));
    assert!(stderr(&no_pin).contains("--pin"), "{}", stderr(&no_pin));
    // --remote-socket only means something with --via.
    let stray = ctl(&["--remote-socket", "/run/x.sock", "status"], None);
    assert_eq!(stray.status.code(), Some(USAGE));
}

#[test]
fn help_teaches_modes_config_and_exit_codes() {
    let output = ctl(&["--help"], None);
    assert_eq!(output.status.code(), Some(OK));
    let help = stdout(&output);
    for fragment in [
        "--socket",
        "--via",
        "[[validator]]",
        "Exit codes",
        "4  authentication",
        "--passphrase-stdin",
        "--json",
    ] {
        assert!(help.contains(fragment), "{fragment}:\n{help}");
    }
}

/// What an attacker behind a validator's socket (or a rebound tunnel)
/// writes to reach the operator's terminal.
const HOSTILE: &str =
    "\u{1b}]0;pwned\u{7}\u{1b}[2J\u{202e}\u{2066}\u{9b}31m\nFORGED  INFO validator up";

fn assert_inert(what: &str, text: &str) {
    for c in [
        '\u{1b}', '\u{7}', '\u{9b}', '\u{202e}', '\u{2066}', '\u{7f}',
    ] {
        assert!(!text.contains(c), "{what} holds {c:?}:\n{text}");
    }
    assert!(
        !text.lines().any(|line| line.starts_with("FORGED")),
        "{what} holds a forged line:\n{text}"
    );
}

/// Regression (hardening review, finding 15): a hostile greeting's fields
/// and serde's error text about them, and a peer's error message, reached
/// palisade-ctl's stderr raw; `--json` wrote DEL, C1 and bidi characters
/// raw. Now they are cleaned where they are parsed and escaped in `--json`.
#[test]
fn hostile_greetings_and_error_messages_reach_stderr_escaped() {
    let json_string = serde_json::to_string(HOSTILE).unwrap();
    let greetings = [
        // A wrong service, quoted back in the error.
        format!(
            "{{\"service\":{json_string},\"protocol\":1,\"version\":\"1\",\"validator\":\"v\"}}\n"
        ),
        // serde's error text quotes the value it refused.
        format!(
            "{{\"service\":\"palisade-supervisor\",\"protocol\":{json_string},\"version\":\"1\",\"validator\":\"v\"}}\n"
        ),
    ];
    for greeting in greetings {
        let (_dir, socket) = start_raw(greeting.into_bytes(), false);
        let output = ctl(&["--socket", socket.to_str().unwrap(), "status"], None);
        assert_eq!(
            output.status.code(),
            Some(CONNECTION),
            "{}",
            stderr(&output)
        );
        assert_inert("stderr", &stderr(&output));
        assert!(stderr(&output).contains("\\u{1b}"), "{}", stderr(&output));
    }

    let mut spec = ServerSpec::new(TlsRequirement::Optional)
        .answer("status", Err(RpcError::new(code::INTERNAL, HOSTILE)))
        .answer(
            "health",
            Ok(json!({"ok": true, "problems": [], "note": format!("del\u{7f}{HOSTILE}")})),
        );
    let mut greeting = palisade_wire::rpc::Greeting::new("val-a", format!("1{HOSTILE}"));
    greeting.tls = Some(TlsRequirement::Optional);
    spec.greeting = greeting.to_line();
    let server = TestServer::start(spec);
    let socket = socket_arg(&server);
    let output = ctl(&["--socket", &socket, "status"], None);
    assert_eq!(output.status.code(), Some(CALL), "{}", stderr(&output));
    assert_inert("stderr", &stderr(&output));
    assert!(stderr(&output).contains("pwned"), "{}", stderr(&output));
    let output = ctl(&["--socket", &socket, "--json", "health"], None);
    assert_inert("--json stdout", &stdout(&output));
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(printed["note"], format!("del\u{7f}{HOSTILE}"), "same value");
}
