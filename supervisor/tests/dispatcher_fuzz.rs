//! Bounded fuzzing of the real dispatcher behind the control RPC,
//! [`SupervisorControl`], through the [`Dispatcher`] trait the RPC server
//! calls: sequences of methods from the catalogue (and a few unknown
//! ones) with arbitrary JSON params and arbitrary secrets, on one
//! dispatcher per case — so tokens, staged upgrades and the unlock
//! back-off carry from call to call. Every answer must come within
//! [`OPERATION`], never panic, and be a valid JSON-RPC result or an error
//! with a code `docs/rpc.md` §5 documents.
//!
//! The dispatcher is built as the supervisor builds it
//! ([`SupervisorControl::new`] from a loaded [`Config`]) on a temporary
//! home, with a stand-in for the supervision executor that answers its
//! commands at once (unlocks fail, node commands succeed, anything else is
//! refused) and never acts: nothing here starts a node, and `[host]
//! shutdown-command` is `true` besides. Params are drawn around the real
//! parameter names (`lines`, `bastion`, `name`, `url`, `path`, `checksum`,
//! `store`, `file`, `confirm`) so that the parsers' deeper branches are
//! reached, including an executable to stage and a `host.shutdown` token
//! from an earlier answer.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use common::timing::OPERATION;
use palisade_supervisor::config::Config;
use palisade_supervisor::control::SupervisorControl;
use palisade_supervisor::node::files::NodePaths;
use palisade_supervisor::rpc::{Caller, Dispatcher};
use palisade_supervisor::supervision::board::{NodeState, board, new_board};
use palisade_supervisor::supervision::command::{
    Answer, Command, CommandError, CommandInbox, Order, command_channel,
};
use palisade_wire::rpc::{MAX_LINE_BYTES, METHODS, Response, Role, SECRET_METHODS, code};
use proptest::prelude::*;
use secrecy::SecretString;
use serde_json::{Value, json};

/// A params string standing for the last `host.shutdown` token answered.
const LAST_TOKEN: &str = "$last-token";
/// A params string standing for an executable file to stage.
const EXECUTABLE: &str = "$executable";

/// The temporary home and the config the dispatcher is built from.
struct Home {
    dir: tempfile::TempDir,
    config: Config,
}

fn home() -> Home {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    for sub in [
        "cosmovisor/genesis/bin",
        "cosmovisor/upgrades",
        "data",
        "config",
    ] {
        std::fs::create_dir_all(home.join(sub)).unwrap();
    }
    let executable = dir.path().join("staged-simd");
    std::fs::write(&executable, "#!/bin/sh\nexit 0\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&executable, std::fs::Permissions::from_mode(0o755)).unwrap();
    let file = dir.path().join("palisade.toml");
    std::fs::write(
        &file,
        format!(
            "[vault]\nswap = \"warn\"\ntmpfs-dir = {:?}\nscrypt-work-factor = 10\n\
             [backup]\nchain-id = \"sim-1\"\n\
             [rpc]\nsocket = {:?}\nname = \"val1\"\n\
             [host]\nshutdown-command = [\"true\"]\n",
            dir.path().join("tmpfs"),
            dir.path().join("run/supervisor.sock"),
        ),
    )
    .unwrap();
    let env = BTreeMap::from([
        ("DAEMON_HOME".to_string(), home.display().to_string()),
        ("DAEMON_NAME".to_string(), "simd".to_string()),
    ]);
    let config = Config::load(Some(&file), &env).unwrap_or_else(|error| panic!("{error}"));
    Home { dir, config }
}

/// CometBFT's default file places in the home.
fn node_paths(home: &Home) -> NodePaths {
    let daemon_home = &home.config.daemon_home;
    NodePaths {
        state: daemon_home.join("data/priv_validator_state.json"),
        priv_validator_key: daemon_home.join("config/priv_validator_key.json"),
        node_key: daemon_home.join("config/node_key.json"),
    }
}

/// Answers the executor's commands at once, acting on none.
async fn executor_stand_in(mut inbox: CommandInbox) {
    while let Some(request) = inbox.recv().await {
        let answer = match request.order {
            Order::Node(Command::Unlock) => Err(CommandError::WrongPassphrase),
            Order::Node(Command::NodeStop) => Ok(Answer::Node(NodeState::Stopped)),
            Order::Node(Command::NodeStart | Command::NodeRestart) => {
                Ok(Answer::Node(NodeState::Starting))
            }
            _ => Err(CommandError::WrongState(
                "refused by the test's executor stand-in".into(),
            )),
        };
        let _ = request.reply.send(answer);
    }
}

// ------------------------------------------------------------ strategies

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "lines", "bastion", "name", "url", "path", "checksum", "store", "file", "confirm",
            "limit",
        ])
        .prop_map(str::to_string),
        1 => ".{0,8}",
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (0u64..1200).prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,24}".prop_map(Value::from),
        prop::sample::select(vec![
            "v2",
            "V2",
            "local",
            "",
            ".",
            "..",
            "../../etc",
            "a/b",
            "current",
            "genesis",
            "http://127.0.0.1:1/simd",
            "file:///etc/passwd",
            "sha256:00",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "backup-sim-1-x-00000000000000000001-h1.age",
            "0123456789abcdef0123456789abcdef",
            LAST_TOKEN,
            EXECUTABLE,
        ])
        .prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(key(), inner, 0..5)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn method() -> impl Strategy<Value = String> {
    let catalogue: Vec<String> = METHODS
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| !name.starts_with("auth."))
        .map(str::to_string)
        .collect();
    prop_oneof![
        12 => prop::sample::select(catalogue),
        1 => "[a-z.]{0,16}",
    ]
}

fn upgrade_name() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => prop::sample::select(vec!["v2", "V2", "v3"]).prop_map(Value::from),
        1 => leaf(),
    ]
}

fn checksum() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec![
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha512:00",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
        ])
        .prop_map(Value::from),
        leaf(),
    ]
}

/// Params shaped like `method`'s real ones (with arbitrary values), or
/// anything at all.
fn params_for(method: &str) -> BoxedStrategy<Value> {
    let shaped: BoxedStrategy<Value> = match method {
        "logs.tail" => prop_oneof![
            (0u64..1200).prop_map(|n| json!({ "lines": n })),
            leaf().prop_map(|v| json!({ "lines": v })),
        ]
        .boxed(),
        "tunnel.reconnect" => leaf().prop_map(|v| json!({ "bastion": v })).boxed(),
        "upgrade.add" => prop_oneof![
            (upgrade_name(), prop_oneof![3 => Just(json!(EXECUTABLE)), 1 => leaf()])
                .prop_map(|(name, path)| json!({ "name": name, "path": path })),
            (upgrade_name(), checksum())
                .prop_map(|(name, sum)| json!({ "name": name, "path": EXECUTABLE, "checksum": sum })),
            (
                upgrade_name(),
                prop::sample::select(vec![
                    "http://127.0.0.1:1/simd",
                    "https://127.0.0.1:1/simd.tar.gz",
                    "file:///bin/true",
                    "ftp://x/y",
                    "not a url",
                ]),
                checksum(),
            )
                .prop_map(|(name, url, sum)| json!({ "name": name, "url": url, "checksum": sum })),
        ]
        .boxed(),
        "upgrade.cancel" => upgrade_name().prop_map(|name| json!({ "name": name })).boxed(),
        "backup.list" => prop_oneof![
            Just(json!({})),
            (0u64..1200).prop_map(|n| json!({ "limit": n })),
        ]
        .boxed(),
        "backup.restore" => (
            prop_oneof![Just(json!("local")), leaf()],
            prop_oneof![
                Just(json!(
                    "backup-sim-1-6D0B966563F94AB350668A257075AF7607515230-00000000000000000001-h1.age"
                )),
                leaf(),
            ],
        )
            .prop_map(|(store, file)| json!({ "store": store, "file": file }))
            .boxed(),
        "host.shutdown" => prop_oneof![
            Just(json!({})),
            Just(json!({ "confirm": LAST_TOKEN })),
            leaf().prop_map(|v| json!({ "confirm": v })),
        ]
        .boxed(),
        _ => Just(Value::Null).boxed(),
    };
    prop_oneof![
        4 => shaped,
        1 => Just(Value::Null),
        1 => Just(json!({})),
        3 => json_value(),
    ]
    .boxed()
}

/// One call: method, params, the secret line (for secret methods), and
/// which of two operators calls.
fn call() -> impl Strategy<Value = (String, Value, Option<String>, bool)> {
    method().prop_flat_map(|method| {
        let params = params_for(&method);
        (
            Just(method),
            params,
            proptest::option::of(".{0,40}"),
            any::<bool>(),
        )
    })
}

/// Replace the `$…` stand-ins by what they stand for.
fn resolve(value: &Value, token: &Option<String>, executable: &Path) -> Value {
    match value {
        Value::String(text) if text == LAST_TOKEN => {
            json!(token.clone().unwrap_or_else(|| "no token yet".into()))
        }
        Value::String(text) if text == EXECUTABLE => json!(executable.display().to_string()),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| resolve(item, token, executable))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, item)| (key.clone(), resolve(item, token, executable)))
                .collect(),
        ),
        other => other.clone(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_call_gets_a_documented_answer_in_time(
        calls in prop::collection::vec(call(), 1..10),
        node in prop::sample::select(vec![NodeState::Starting, NodeState::Locked, NodeState::Stopped]),
        locked in any::<bool>(),
    ) {
        let home = home();
        let executable = home.dir.path().join("staged-simd");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (commands, inbox) = command_channel();
            let stand_in = tokio::spawn(executor_stand_in(inbox));
            let shared = new_board(true);
            {
                let mut board = board(&shared);
                board.node = node;
                board.vault_locked = Some(locked);
            }
            let control: Arc<dyn Dispatcher> =
                Arc::new(SupervisorControl::new(&home.config, &node_paths(&home), commands, shared, Vec::new(), tokio::sync::watch::channel(None).1));
            let operators = [
                Caller { operator: "local:root".into(), role: Role::Admin, tls: false },
                Caller { operator: "ada".into(), role: Role::Admin, tls: true },
            ];
            let mut token: Option<String> = None;
            for (index, (method, params, secret, second)) in calls.iter().enumerate() {
                let params = resolve(params, &token, &executable);
                let secret = SECRET_METHODS
                    .contains(&method.as_str())
                    .then(|| secret.clone().map(SecretString::from))
                    .flatten();
                let caller = &operators[usize::from(*second)];
                let context = format!("call {index}: {method} {params}");
                let answer = tokio::time::timeout(
                    OPERATION,
                    control.call(caller, method, params.clone(), secret),
                )
                .await
                .unwrap_or_else(|_| panic!("{context}: no answer within {OPERATION:?}"));
                // As the server would write it, and as a client reads it.
                let response = match answer {
                    Ok(result) => Response::ok(json!(index), result),
                    Err(error) => Response::err(json!(index), error),
                };
                let line = response.to_line();
                let parsed: Response = serde_json::from_slice(&line)
                    .unwrap_or_else(|error| panic!("{context}: not a JSON-RPC line: {error}"));
                assert_eq!(parsed.jsonrpc, "2.0", "{context}");
                assert!(parsed.result.is_some() != parsed.error.is_some(), "{context}");
                assert!(
                    line.len() <= MAX_LINE_BYTES,
                    "{context}: a {}-byte answer",
                    line.len()
                );
                if let Some(error) = &parsed.error {
                    assert!(
                        code::ALL.contains(&error.code),
                        "{context}: undocumented code {}: {}",
                        error.code,
                        error.message
                    );
                    assert!(!error.message.is_empty(), "{context}: an error without a message");
                }
                if let Some(issued) = parsed
                    .result
                    .as_ref()
                    .and_then(|result| result["confirm"].as_str())
                {
                    token = Some(issued.to_string());
                }
            }
            drop(control);
            tokio::time::timeout(OPERATION, stand_in)
                .await
                .expect("the loop stand-in ends with the dispatcher")
                .unwrap();
        });
    }
}

/// One call through the [`Dispatcher`] trait, within [`OPERATION`].
async fn ask(
    control: &SupervisorControl,
    caller: &Caller,
    method: &str,
    params: Value,
    secret: Option<&str>,
) -> Result<Value, palisade_wire::rpc::RpcError> {
    let secret = secret.map(SecretString::from);
    tokio::time::timeout(
        OPERATION,
        Dispatcher::call(control, caller, method, params, secret),
    )
    .await
    .unwrap_or_else(|_| panic!("{method}: no answer within {OPERATION:?}"))
}

/// The harness reaches the real code paths: the dispatcher built this way
/// answers real calls as the supervisor's does (so the fuzzing above is
/// not all early refusals).
#[test]
fn the_dispatcher_under_test_serves_real_calls() {
    let home = home();
    let executable = home.dir.path().join("staged-simd");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (commands, inbox) = command_channel();
        tokio::spawn(executor_stand_in(inbox));
        let control = SupervisorControl::new(
            &home.config,
            &node_paths(&home),
            commands,
            new_board(true),
            Vec::new(),
            tokio::sync::watch::channel(None).1,
        );
        let root = Caller {
            operator: "local:root".into(),
            role: Role::Admin,
            tls: false,
        };
        let ada = Caller {
            operator: "ada".into(),
            role: Role::Admin,
            tls: true,
        };
        let code_of = |answer: Result<Value, palisade_wire::rpc::RpcError>| {
            answer.err().map(|error| error.code)
        };

        let status = ask(&control, &root, "status", Value::Null, None)
            .await
            .unwrap();
        assert_eq!(status["validator"], "val1", "{status}");
        assert_eq!(status["vault"]["locked"], true, "{status}");

        let staged = ask(
            &control,
            &root,
            "upgrade.add",
            json!({"name": "v2", "path": executable.display().to_string()}),
            None,
        )
        .await;
        assert!(staged.is_ok(), "{staged:?}");
        let listed = ask(&control, &root, "upgrade.list", Value::Null, None)
            .await
            .unwrap();
        assert!(listed.to_string().contains("v2"), "{listed}");
        let again = ask(
            &control,
            &root,
            "upgrade.add",
            json!({"name": "v2", "path": executable.display().to_string()}),
            None,
        )
        .await;
        assert_eq!(code_of(again), Some(code::WRONG_STATE));
        let cancelled = ask(
            &control,
            &root,
            "upgrade.cancel",
            json!({"name": "v2"}),
            None,
        )
        .await;
        assert!(cancelled.is_ok(), "{cancelled:?}");

        let issued = ask(&control, &root, "host.shutdown", json!({}), None)
            .await
            .unwrap();
        let token = issued["confirm"].as_str().unwrap().to_string();
        // Another operator cannot spend it; its owner reaches the loop
        // (whose stand-in refuses), which puts it back.
        let stolen = ask(
            &control,
            &ada,
            "host.shutdown",
            json!({ "confirm": token }),
            None,
        )
        .await;
        assert_eq!(code_of(stolen), Some(code::WRONG_STATE));
        let confirmed = ask(
            &control,
            &root,
            "host.shutdown",
            json!({ "confirm": token }),
            None,
        )
        .await;
        assert_eq!(
            confirmed.err().map(|error| error.message),
            Some("refused by the test's executor stand-in".to_string())
        );

        let wrong = ask(&control, &root, "vault.unlock", Value::Null, Some("not it")).await;
        assert_eq!(code_of(wrong), Some(code::UNAUTHENTICATED));
        let limited = ask(&control, &root, "vault.unlock", Value::Null, Some("not it")).await;
        assert_eq!(code_of(limited), Some(code::RATE_LIMITED));
        let stopped = ask(&control, &root, "node.stop", Value::Null, None)
            .await
            .unwrap();
        assert_eq!(stopped, json!({"node": "stopped"}));
    });
}
