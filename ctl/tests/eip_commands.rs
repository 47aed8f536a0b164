//! `palisade-ctl eip list|rotate|status` against the stand-in control-RPC
//! server: the calls and params sent, the tables and the raw `--json`,
//! params refused before connecting, error answers with what to do next,
//! the rotation's longer wait, and the tunnels' rotated address. The real
//! binary is driven every time.

mod common;

use std::time::{Duration, Instant};

use common::*;
use palisade_wire::rpc::{RpcError, TlsRequirement, code};
use serde_json::{Value, json};

const OK: i32 = 0;
const CALL: i32 = 1;
const USAGE: i32 = 2;
const CONNECTION: i32 = 3;

fn eip_list() -> Value {
    json!({"bastions": [
        {"bastion": "bastion-1", "instance_id": "i-0123456789abcdef0",
         "network_interface_id": null, "dialing": "54.1.2.3",
         "addresses": [
            {"public_ip": "54.1.2.3", "allocation_id": "eipalloc-0aaa",
             "association_id": "eipassoc-0aaa", "instance_id": "i-0123456789abcdef0",
             "network_interface_id": "eni-0aaa"},
            {"public_ip": "54.9.9.9", "allocation_id": "eipalloc-0bbb",
             "association_id": null, "instance_id": null, "network_interface_id": null},
         ]},
    ]})
}

fn eip_rotated() -> Value {
    json!({
        "bastion": "bastion-1", "rotation": "r-1",
        "old_public_ip": "54.1.2.3", "old_allocation_id": "eipalloc-0aaa",
        "public_ip": "54.7.7.7", "allocation_id": "eipalloc-0ccc",
        "released_old": false,
        "steps": [{"step": "started", "took_ms": 3}, {"step": "allocated", "took_ms": 412},
                  {"step": "associated", "took_ms": 230}, {"step": "tunnel-up", "took_ms": 1650},
                  {"step": "kept-old", "took_ms": 80}],
        "tunnel_up_ms": 2345,
    })
}

fn eip_status() -> Value {
    json!({
        "in_progress": null,
        "journal": [
            {"at_ms": 1_795_390_000_123u64, "rotation": "r-1", "bastion": "bastion-1",
             "step": "started"},
            {"at_ms": 1_795_390_002_468u64, "rotation": "r-1", "bastion": "bastion-1",
             "step": "done", "public_ip": "54.7.7.7", "allocation_id": "eipalloc-0ccc",
             "association_id": "eipassoc-0ccc", "took_ms": 2345,
             "detail": "old address kept"},
        ],
    })
}

fn socket_arg(server: &TestServer) -> String {
    server.socket.to_str().unwrap().to_string()
}

fn methods_and_params(server: &TestServer) -> Vec<(String, Value)> {
    server
        .requests()
        .into_iter()
        .map(|request| {
            (
                request["method"].as_str().unwrap().to_string(),
                request.get("params").cloned().unwrap_or(Value::Null),
            )
        })
        .collect()
}

#[test]
fn eip_commands_print_tables_and_with_json_the_raw_result() {
    let server = TestServer::start(
        ServerSpec::new(TlsRequirement::Optional)
            .answer("eip.list", Ok(eip_list()))
            .answer("eip.rotate", Ok(eip_rotated()))
            .answer("eip.status", Ok(eip_status())),
    );
    let socket = socket_arg(&server);
    let run = |args: &[&str]| {
        let output = ctl(&[&["--socket", &socket], args].concat(), None);
        assert_eq!(
            output.status.code(),
            Some(OK),
            "{args:?}: {}",
            stderr(&output)
        );
        stdout(&output)
    };

    assert_eq!(
        run(&["eip", "list"]),
        "bastion-1 (instance i-0123456789abcdef0): the tunnel dials 54.1.2.3\n\
         \x20    PUBLIC IP  ALLOCATION ID  ASSOCIATION ID  ASSOCIATED WITH\n\
         \x20 *  54.1.2.3   eipalloc-0aaa  eipassoc-0aaa   i-0123456789abcdef0 (eni-0aaa)\n\
         \x20    54.9.9.9   eipalloc-0bbb  -               -\n\
         \x20 (* the address the tunnel dials)\n"
    );
    assert_eq!(
        run(&["eip", "rotate", "bastion-1", "--keep-old"]),
        "bastion-1: 54.1.2.3 (eipalloc-0aaa) -> 54.7.7.7 (eipalloc-0ccc)\n\
         \x20 rotation: r-1\n\
         \x20 tunnel up on the new address 2.3 s after the command\n\
         \x20 old address: 54.1.2.3 (eipalloc-0aaa) kept (--keep-old): still allocated to the \
         account, no longer associated\n\
         \x20 steps:\n\
         \x20   started        3 ms\n\
         \x20   allocated    412 ms\n\
         \x20   associated   230 ms\n\
         \x20   tunnel-up   1650 ms\n\
         \x20   kept-old      80 ms\n"
    );
    let status = run(&["eip", "status"]);
    let lines: Vec<&str> = status.lines().collect();
    assert_eq!(lines[0], "no rotation in progress");
    assert_eq!(lines[1], "journal (last 2 records, oldest first):");
    assert!(lines[2].starts_with("  TIME (UTC)  "), "{status}");
    assert!(
        lines[3].starts_with("  2026-11-22 23:26:40.123  r-1") && lines[3].contains("started"),
        "{status}"
    );
    assert!(
        lines[4].contains("done") && lines[4].ends_with("2345 ms  old address kept"),
        "{status}"
    );

    for (args, expected) in [
        (&["--json", "eip", "list"][..], eip_list()),
        (&["eip", "rotate", "bastion-1", "--json"][..], eip_rotated()),
        (&["eip", "status", "--json"][..], eip_status()),
    ] {
        let printed: Value = serde_json::from_str(&run(args)).unwrap();
        assert_eq!(
            printed, expected,
            "{args:?}: --json prints exactly the result"
        );
    }

    assert_eq!(
        methods_and_params(&server),
        [
            ("eip.list".to_string(), Value::Null),
            (
                "eip.rotate".to_string(),
                json!({"bastion": "bastion-1", "keep_old": true})
            ),
            ("eip.status".to_string(), Value::Null),
            ("eip.list".to_string(), Value::Null),
            (
                "eip.rotate".to_string(),
                json!({"bastion": "bastion-1", "keep_old": false})
            ),
            ("eip.status".to_string(), Value::Null),
        ]
    );
}

#[test]
fn bad_eip_arguments_are_refused_before_connecting() {
    let server = TestServer::start(ServerSpec::new(TlsRequirement::Optional));
    let socket = socket_arg(&server);
    // (arguments, fragment of the message)
    let cases: &[(&[&str], &str)] = &[
        (
            &["eip", "rotate", ""],
            "bastion must be a non-empty string (see eip.list)",
        ),
        (&["eip", "rotate"], "<BASTION>"),
        (&["eip", "rotate", "b1", "b2"], "unexpected argument"),
        (&["eip", "list", "b1"], "unexpected argument"),
        (&["eip"], "Usage"),
        (&["eip", "release", "b1"], "unrecognized subcommand"),
        (
            &[
                "call",
                "eip.rotate",
                "--params",
                r#"{"bastion":"b1","keep":true}"#,
            ],
            "unknown field `keep`",
        ),
    ];
    for (args, fragment) in cases {
        let output = ctl(&[&["--socket", &socket], *args].concat(), None);
        assert_eq!(
            output.status.code(),
            Some(USAGE),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(fragment),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    assert_eq!(
        server.log.lock().unwrap().connections,
        0,
        "nothing connected"
    );
}

#[test]
fn eip_errors_are_printed_with_where_to_look_next() {
    let failed = "rotation r-2 of bastion-1 failed at tunnel-up (no SSH answer from 54.7.7.7 \
                  within 30 s): rolled back, 54.1.2.3 (eipalloc-0aaa) is associated with \
                  i-0123456789abcdef0 again, 54.7.7.7 (eipalloc-0ccc) released";
    let server = TestServer::start(
        ServerSpec::new(TlsRequirement::Optional)
            .answer(
                "eip.list",
                Err(RpcError::new(
                    code::WRONG_STATE,
                    "the vault is locked: unlock it first (vault.unlock)",
                )),
            )
            .answer("eip.rotate", Err(RpcError::new(code::INTERNAL, failed))),
    );
    let socket = socket_arg(&server);

    let output = ctl(&["--socket", &socket, "eip", "list"], None);
    assert_eq!(output.status.code(), Some(CALL), "{}", stderr(&output));
    assert_eq!(
        stderr(&output),
        "palisade-ctl: the vault is locked: unlock it first (vault.unlock) (code -32004)\n"
    );
    assert_eq!(stdout(&output), "");

    let output = ctl(&["--socket", &socket, "eip", "rotate", "bastion-1"], None);
    assert_eq!(output.status.code(), Some(CALL), "{}", stderr(&output));
    assert_eq!(
        stderr(&output),
        format!(
            "palisade-ctl: {failed} (code -32010)\n`palisade-ctl eip status` shows the rotation \
             journal: which address is where\n"
        )
    );

    // A bastion the supervisor does not know: its names, no journal advice.
    let server = TestServer::start(ServerSpec::new(TlsRequirement::Optional).answer(
        "eip.rotate",
        Err(RpcError {
            code: code::INVALID_PARAMS,
            message:
                "b9 is not a [[bastion]] with an eip (instance-id or network-interface-id)".into(),
            data: Some(json!({"field": "bastion", "known": ["bastion-1", "bastion-2"]})),
        }),
    ));
    let output = ctl(
        &["--socket", &socket_arg(&server), "eip", "rotate", "b9"],
        None,
    );
    assert_eq!(output.status.code(), Some(CALL), "{}", stderr(&output));
    assert_eq!(
        stderr(&output),
        "palisade-ctl: b9 is not a [[bastion]] with an eip (instance-id or network-interface-id) \
         (code -32602) \
         {\"field\":\"bastion\",\"known\":[\"bastion-1\",\"bastion-2\"]}\n"
    );
}

/// The rotation answers when it is done: palisade-ctl waits longer for it
/// than for other calls (120 s, not tested here), `--timeout` still rules,
/// and a rotation it gave up on is pointed at.
#[test]
fn a_rotation_not_waited_for_points_at_eip_status() {
    let server = TestServer::start(
        ServerSpec::new(TlsRequirement::Optional)
            .answer("eip.rotate", Ok(eip_rotated()))
            .delay("eip.rotate", Duration::from_secs(3)),
    );
    let started = Instant::now();
    let output = ctl(
        &[
            "--socket",
            &socket_arg(&server),
            "--timeout",
            "1",
            "eip",
            "rotate",
            "bastion-1",
        ],
        None,
    );
    assert_eq!(
        output.status.code(),
        Some(CONNECTION),
        "{}",
        stderr(&output)
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(
        stderr(&output),
        "palisade-ctl: no answer to eip.rotate within 1 s\nthe rotation may go on in the \
         supervisor: follow it with `palisade-ctl eip status`\n"
    );
    // Without --timeout the default of quick calls (60 s) does not apply:
    // the slow answer arrives and is printed.
    let output = ctl(
        &[
            "--socket",
            &socket_arg(&server),
            "eip",
            "rotate",
            "bastion-1",
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(OK), "{}", stderr(&output));
    assert!(stdout(&output).starts_with("bastion-1: 54.1.2.3"));
}

/// In the shell the rotation runs on a connection of its own (with its
/// longer wait); the session's connection serves the other commands.
#[test]
fn the_shell_rotates_on_a_connection_of_its_own() {
    let server = TestServer::start(
        ServerSpec::new(TlsRequirement::Optional)
            .answer(
                "status",
                Ok(json!({"node": {"state": "running"}, "tunnels": []})),
            )
            .answer("eip.list", Ok(eip_list()))
            .answer("eip.rotate", Ok(eip_rotated())),
    );
    let output = ctl(
        &["--socket", &socket_arg(&server), "shell"],
        Some(b"eip list\neip rotate bastion-1\neip rotate ''\n"),
    );
    assert_eq!(output.status.code(), Some(OK), "{}", stderr(&output));
    let printed = stdout(&output);
    assert!(
        printed.contains("bastion-1 (instance i-0123456789abcdef0): the tunnel dials 54.1.2.3"),
        "{printed}"
    );
    assert!(
        printed.contains("bastion-1: 54.1.2.3 (eipalloc-0aaa) -> 54.7.7.7 (eipalloc-0ccc)"),
        "{printed}"
    );
    assert!(
        stderr(&output).contains("bastion must be a non-empty string"),
        "{}",
        stderr(&output)
    );
    let methods: Vec<String> = methods_and_params(&server)
        .into_iter()
        .map(|(method, _)| method)
        .collect();
    assert_eq!(
        methods,
        ["status", "eip.list", "status", "eip.rotate", "status"]
    );
    assert_eq!(server.log.lock().unwrap().connections, 2);
}

#[test]
fn tunnels_and_status_show_the_rotated_address() {
    let tunnel = json!({"name": "bastion-1", "connected": true,
        "connected_since": 1_795_390_000u64, "last_error": null, "last_forward_error": null,
        "bytes_to_bastion": 5, "bytes_from_bastion": 6, "reconnects": 1, "stopped": false,
        "address": "54.7.7.7"});
    let server = TestServer::start(
        ServerSpec::new(TlsRequirement::Optional)
            .answer("tunnel.list", Ok(json!({"tunnels": [tunnel.clone()]})))
            .answer(
                "status",
                Ok(json!({"node": {"state": "running"}, "tunnels": [tunnel]})),
            ),
    );
    let socket = socket_arg(&server);
    let output = ctl(&["--socket", &socket, "tunnels"], None);
    assert_eq!(output.status.code(), Some(OK), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "bastion-1: connected since 2026-11-22 23:26:40 UTC, dialing 54.7.7.7 (rotated)\n\
         \x20 bytes: 5 to the bastion, 6 from it; reconnects: 1\n"
    );
    let output = ctl(&["--socket", &socket, "status"], None);
    assert_eq!(output.status.code(), Some(OK), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "node:\n  state: running\ntunnels:\n  bastion-1: connected since 2026-11-22 23:26:40 \
         UTC, dialing 54.7.7.7 (rotated)\n    bytes: 5 to the bastion, 6 from it; reconnects: 1\n"
    );
}

#[test]
fn eip_help_says_admin_and_unlocked_vault() {
    for (args, fragments) in [
        (
            &["eip", "--help"][..],
            &["admin", "need it unlocked", "list", "rotate", "status"][..],
        ),
        (
            &["eip", "list", "--help"][..],
            &["admin", "vault", "allocation id", "association id"][..],
        ),
        (
            &["eip", "rotate", "--help"][..],
            &[
                "admin",
                "vault must be unlocked",
                "--keep-old",
                "host key stays pinned",
                "120 s",
                "eip status",
            ][..],
        ),
        (&["eip", "status", "--help"][..], &["admin", "journal"][..]),
    ] {
        let output = ctl(args, None);
        assert_eq!(output.status.code(), Some(OK), "{args:?}");
        let help = stdout(&output);
        for fragment in fragments {
            assert!(help.contains(fragment), "{args:?}: {fragment}:\n{help}");
        }
    }
}
