//! The built-in alert sinks end to end: the real `palisade-bastion run`, a
//! validator socket that is missing (down) and then answered by a fake
//! supervisor (up), and every sink pointed at a loopback HTTP receiver
//! (`palisade_testkit::http_receiver`) that records what each service
//! would get. Each request is checked against that service's documented
//! shape (see `bastion/src/alerts/payload.rs` for the sources), the firing
//! and the resolve message both; then retries, repeats and the rate limit,
//! and bad `[alerts]` tables.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use common::{BIN, PATIENCE, wait_for_socket};
use palisade_testkit::http_receiver::{HttpReceiver, Received, Reply};
use palisade_wire::rpc::Greeting;
use serde_json::{Value, json};

const HEALTH: &str = "[health]\ninterval = \"300ms\"\ntimeout = \"300ms\"\n";

/// A fake supervisor greeting every connection on `path`.
struct Supervisor {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Supervisor {
    fn start(path: &Path, name: &str) -> Supervisor {
        let listener = UnixListener::bind(path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let line = Greeting::new(name, "0.1.0").to_line();
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        let _ = stream.write_all(&line);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Supervisor {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `palisade-bastion run` with validator `val-a` and `alerts` appended.
struct Daemon {
    dir: tempfile::TempDir,
    child: Child,
}

impl Daemon {
    fn start(alerts: impl FnOnce(&Path) -> String) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
        let config = dir.path().join("bastion.toml");
        std::fs::write(
            &config,
            format!(
                "listen-socket = \"{0}/run/bastion.sock\"\nbackup-dir = \"{0}/backups\"\n{HEALTH}\
                 {1}\n[[validator]]\nname = \"val-a\"\nsocket = \"{0}/run/val-a.sock\"\n",
                dir.path().display(),
                alerts(dir.path())
            ),
        )
        .unwrap();
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        wait_for_socket(&run.join("bastion.sock"));
        Daemon { dir, child }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("run/val-a.sock")
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn on(requests: &[Received], prefix: &str) -> Vec<Received> {
    requests
        .iter()
        .filter(|r| r.path.starts_with(prefix))
        .cloned()
        .collect()
}

/// Waits until every prefix has `count` requests.
fn wait_for_each(receiver: &HttpReceiver, prefixes: &[&str], count: usize) -> Vec<Received> {
    receiver
        .wait_until(
            &format!("{count} request(s) on each of {prefixes:?}"),
            PATIENCE,
            |requests| {
                prefixes
                    .iter()
                    .all(|prefix| on(requests, prefix).len() >= count)
            },
        )
        .unwrap()
}

fn write_secret(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{text}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn string<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{pointer} is not a string in {value}"))
}

/// The keys of a JSON object, sorted.
fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    keys
}

fn assert_json_post(request: &Received) {
    assert_eq!(request.method, "POST", "{request:?}");
    assert_eq!(
        request.header("content-type"),
        Some("application/json"),
        "{request:?}"
    );
}

#[test]
fn every_sink_gets_the_firing_and_the_resolve_message_in_its_documented_shape() {
    let receiver = HttpReceiver::start().unwrap();
    let daemon = Daemon::start(|dir| {
        let slack = write_secret(
            dir,
            "slack-url",
            &receiver.url("/slack/services/T000/B000/SLACKSECRET"),
        );
        let routing = write_secret(dir, "pagerduty-key", "R0UTINGKEYSECRET");
        format!(
            "[alerts]\nsource = \"b1\"\nrepeat-interval = \"1h\"\n\
             [[alerts.sink]]\nkind = \"slack\"\nurl-file = \"{}\"\n\
             [[alerts.sink]]\nkind = \"discord\"\nurl = \"{}\"\n\
             [[alerts.sink]]\nkind = \"telegram\"\ntoken = \"123456:TELEGRAMSECRET\"\n\
             chat-id = \"-1001234\"\napi-url = \"{}\"\n\
             [[alerts.sink]]\nkind = \"pagerduty\"\nrouting-key-file = \"{}\"\napi-url = \"{}\"\n\
             [[alerts.sink]]\nkind = \"webhook\"\nname = \"ops-hook\"\nurl = \"{}\"\n\
             token = \"WEBHOOKBEARERSECRET\"\n",
            slack.display(),
            receiver.url("/discord/api/webhooks/42/DISCORDSECRET"),
            receiver.url("/telegram"),
            routing.display(),
            receiver.url("/pagerduty"),
            receiver.url("/hook"),
        )
    });
    let prefixes = ["/slack/", "/discord/", "/telegram/", "/pagerduty/", "/hook"];

    // No socket: the validator is unreachable, one message per sink.
    let requests = wait_for_each(&receiver, &prefixes, 1);
    let firing: Vec<Received> = prefixes
        .iter()
        .map(|p| on(&requests, p)[0].clone())
        .collect();
    for request in &firing {
        assert_json_post(request);
    }

    // Slack incoming webhook: {"text": …} to the webhook URL itself.
    assert_eq!(firing[0].path, "/slack/services/T000/B000/SLACKSECRET");
    let slack = firing[0].json();
    assert_eq!(keys(&slack), ["text"]);
    let text = string(&slack, "/text");
    assert!(
        text.starts_with("[FIRING] val-a (bastion b1): unreachable: tunnel not established"),
        "{text}"
    );
    assert!(text.contains("critical"), "{text}");

    // Discord execute-webhook: {"content": … (≤ 2000), "allowed_mentions"}.
    assert_eq!(firing[1].path, "/discord/api/webhooks/42/DISCORDSECRET");
    let discord = firing[1].json();
    assert_eq!(keys(&discord), ["allowed_mentions", "content"]);
    assert!(string(&discord, "/content").starts_with("[FIRING] val-a"));
    assert!(string(&discord, "/content").chars().count() <= 2000);
    assert_eq!(discord["allowed_mentions"], json!({"parse": []}));

    // Telegram sendMessage: /bot<token>/sendMessage, chat_id (a number
    // here) and text.
    assert_eq!(
        firing[2].path,
        "/telegram/bot123456:TELEGRAMSECRET/sendMessage"
    );
    let telegram = firing[2].json();
    assert_eq!(telegram["chat_id"], json!(-1001234));
    assert!(string(&telegram, "/text").starts_with("[FIRING] val-a"));
    assert!(telegram.get("parse_mode").is_none(), "plain text");

    // PagerDuty Events v2: /v2/enqueue, trigger with dedup_key and payload.
    assert_eq!(firing[3].path, "/pagerduty/v2/enqueue");
    let trigger = firing[3].json();
    assert_eq!(
        keys(&trigger),
        ["dedup_key", "event_action", "payload", "routing_key"]
    );
    assert_eq!(trigger["routing_key"], "R0UTINGKEYSECRET");
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(trigger["dedup_key"], "palisade/b1/val-a/unreachable");
    assert_eq!(trigger["payload"]["source"], "b1");
    assert_eq!(trigger["payload"]["severity"], "critical");
    assert!(
        string(&trigger, "/payload/summary").starts_with("val-a: unreachable: tunnel not"),
        "{trigger}"
    );

    // The generic webhook (docs/alerts.md).
    assert_eq!(firing[4].path, "/hook");
    assert_eq!(
        firing[4].header("authorization"),
        Some("Bearer WEBHOOKBEARERSECRET")
    );
    let hook = firing[4].json();
    assert_eq!(
        keys(&hook),
        [
            "alert",
            "at",
            "bastion",
            "detail",
            "key",
            "repeat",
            "severity",
            "since",
            "status",
            "summary",
            "validator",
            "version"
        ]
    );
    assert_eq!(hook["version"], 1);
    assert_eq!(hook["status"], "firing");
    assert_eq!(hook["repeat"], false);
    assert_eq!(hook["validator"], "val-a");
    assert_eq!(hook["bastion"], "b1");
    assert_eq!(hook["alert"], "unreachable");
    assert_eq!(hook["key"], "palisade/b1/val-a/unreachable");
    assert_eq!(hook["severity"], "critical");

    // Deduplicated: the validator stays down for several more probes
    // (300 ms apart) and nothing more is sent.
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(receiver.requests().len(), 5, "{:?}", receiver.requests());

    // Up: one resolve message per sink.
    let _supervisor = Supervisor::start(&daemon.socket(), "val-a");
    let requests = wait_for_each(&receiver, &prefixes, 2);
    let resolved: Vec<Received> = prefixes
        .iter()
        .map(|p| on(&requests, p)[1].clone())
        .collect();
    for request in &resolved {
        assert_json_post(request);
    }
    let text = string(&resolved[0].json(), "/text").to_string();
    assert!(
        text.starts_with("[RESOLVED] val-a (bastion b1): unreachable — was: unreachable:"),
        "{text}"
    );
    assert!(string(&resolved[1].json(), "/content").starts_with("[RESOLVED] val-a"));
    assert!(string(&resolved[2].json(), "/text").starts_with("[RESOLVED] val-a"));
    let resolve = resolved[3].json();
    assert_eq!(
        resolve,
        json!({
            "routing_key": "R0UTINGKEYSECRET",
            "event_action": "resolve",
            "dedup_key": "palisade/b1/val-a/unreachable",
        })
    );
    let hook = resolved[4].json();
    assert_eq!(hook["status"], "resolved");
    assert_eq!(hook["key"], "palisade/b1/val-a/unreachable");
    assert_eq!(hook["since"], firing[4].json()["since"]);

    // The secrets never reach the log; the sinks are named by name/kind.
    let log = daemon.stderr();
    for secret in [
        "SLACKSECRET",
        "DISCORDSECRET",
        "TELEGRAMSECRET",
        "R0UTINGKEYSECRET",
        "WEBHOOKBEARERSECRET",
    ] {
        assert!(!log.contains(secret), "{secret} logged:\n{log}");
    }
    assert!(log.contains("alert="), "{log}");
}

#[test]
fn a_failed_delivery_is_retried_and_a_refusal_is_not() {
    let receiver = HttpReceiver::start().unwrap();
    // The webhook: a 500, then a 429 asking for a 1 s wait, then success.
    receiver.reply_next(Reply::status(500).with_body("upstream broke"));
    receiver.reply_next(Reply::status(429).with_header("Retry-After", "1"));
    let daemon = Daemon::start(|_| {
        format!(
            "[alerts]\nsource = \"b1\"\n\
             [[alerts.sink]]\nkind = \"webhook\"\nurl = \"{}\"\n",
            receiver.url("/hook"),
        )
    });
    let requests = receiver
        .wait_until("three attempts", PATIENCE, |r| r.len() >= 3)
        .unwrap();
    assert_eq!(requests[0].body, requests[1].body, "the same message again");
    assert_eq!(requests[1].body, requests[2].body);
    let backoff = requests[1].at - requests[0].at;
    assert!(backoff >= Duration::from_millis(900), "{backoff:?}");
    let retry_after = requests[2].at - requests[1].at;
    assert!(retry_after >= Duration::from_millis(900), "{retry_after:?}");
    let log = daemon.stderr();
    assert!(log.contains("alert delivery failed; retrying"), "{log}");
    assert!(
        log.contains("HTTP 500 Internal Server Error: upstream broke"),
        "{log}"
    );

    // A 400 is final: the resolve message is tried once.
    receiver.reply_next(Reply::status(400).with_body("invalid_payload"));
    let _supervisor = Supervisor::start(&daemon.socket(), "val-a");
    receiver
        .wait_until("the resolve message", PATIENCE, |r| r.len() >= 4)
        .unwrap();
    common::wait_until("the refusal to be logged", || {
        daemon
            .stderr()
            .contains("alert refused by the service; not retried")
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(receiver.requests().len(), 4, "{:?}", receiver.requests());
}

#[test]
fn a_lasting_alert_repeats_until_the_rate_limit_drops_it() {
    let receiver = HttpReceiver::start().unwrap();
    let daemon = Daemon::start(|_| {
        format!(
            "[alerts]\nsource = \"b1\"\nrepeat-interval = \"1s\"\nmax-per-hour = 3\n\
             send-resolved = false\n\
             [[alerts.sink]]\nkind = \"webhook\"\nurl = \"{}\"\n",
            receiver.url("/hook"),
        )
    });
    let requests = receiver
        .wait_until("a firing and two repeats", PATIENCE, |r| r.len() >= 3)
        .unwrap();
    let bodies: Vec<Value> = requests.iter().map(Received::json).collect();
    assert_eq!(bodies[0]["repeat"], false);
    assert_eq!(bodies[1]["repeat"], true);
    assert_eq!(bodies[2]["repeat"], true);
    assert_eq!(bodies[1]["status"], "firing");
    assert_eq!(bodies[1]["since"], bodies[0]["since"]);
    let gap = requests[1].at - requests[0].at;
    assert!(gap >= Duration::from_millis(900), "{gap:?}");

    common::wait_until("the rate limit to drop a repeat", || {
        daemon
            .stderr()
            .contains("alert dropped: the sink's max-per-hour is reached")
    });
    let log = daemon.stderr();
    assert!(log.contains("dropped_total=1"), "{log}");
    assert_eq!(receiver.requests().len(), 3);

    // send-resolved = false: nothing when it clears.
    let _supervisor = Supervisor::start(&daemon.socket(), "val-a");
    common::wait_until("the alert to resolve", || {
        daemon.stderr().contains("event=resolved")
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(receiver.requests().len(), 3);
}

#[test]
fn bad_alert_tables_are_refused_with_every_problem_named() {
    let dir = tempfile::tempdir().unwrap();
    let open_secret = dir.path().join("open-secret");
    std::fs::write(&open_secret, "https://hooks.slack.com/services/x\n").unwrap();
    std::fs::set_permissions(&open_secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = dir.path().join("bastion.toml");
    std::fs::write(
        &config,
        format!(
            "listen-socket = \"{0}/bastion.sock\"\nbackup-dir = \"{0}/backups\"\n\
             [alerts]\nrepeat-interval = \"soon\"\nmax-per-hour = 0\n\
             [[alerts.sink]]\nkind = \"email\"\n\
             [[alerts.sink]]\nkind = \"slack\"\n\
             [[alerts.sink]]\nkind = \"discord\"\nurl = \"http://discord.example/api/webhooks/1/SECRETPART\"\n\
             [[alerts.sink]]\nkind = \"telegram\"\ntoken = \"1:x\"\n\
             [[alerts.sink]]\nkind = \"pagerduty\"\nrouting-key = \"k\"\napi-url = \"ftp://pd.example\"\n\
             [[alerts.sink]]\nkind = \"webhook\"\nurl-file = \"{1}\"\nchat-id = \"1\"\n\
             [[alerts.sink]]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\n\
             [[validator]]\nname = \"val-a\"\nsocket = \"{0}/val-a.sock\"\n",
            dir.path().display(),
            open_secret.display()
        ),
    )
    .unwrap();
    let output = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "key `alerts.repeat-interval`: 'soon' is not a duration",
        "key `alerts.max-per-hour`: 0 must be between 1 and 3600",
        "key `alerts.sink[1].kind`: unknown kind \"email\": use slack, discord, telegram, pagerduty or webhook",
        "key `alerts.sink[2].url`: is required (url = \"…\" or url-file = \"/path\", mode 0600)",
        "key `alerts.sink[3].url`: must be https (http is allowed only on a loopback host",
        "key `alerts.sink[4].chat-id`: is required",
        "key `alerts.sink[5].api-url`: 'ftp://pd.example': scheme \"ftp\" is not https",
        "key `alerts.sink[6].chat-id`: is not used by a webhook sink",
        "has mode 0644: a secret file must not be readable by group or others (chmod 600)",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    // http on loopback is allowed (a local relay, a test receiver).
    assert!(!stderr.contains("alerts.sink[7]"), "{stderr}");
    assert!(
        stderr.contains("invalid configuration (9 problems):"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("SECRETPART"),
        "a URL is a secret:\n{stderr}"
    );
}

#[test]
fn sigterm_stops_the_daemon_while_a_sink_waits_to_retry() {
    let receiver = HttpReceiver::start().unwrap();
    // The service asks for a minute's pause: the worker is sleeping on it.
    receiver.reply_next(Reply::status(503).with_header("Retry-After", "60"));
    let mut daemon = Daemon::start(|_| {
        format!(
            "[alerts]\n[[alerts.sink]]\nkind = \"webhook\"\nurl = \"{}\"\n",
            receiver.url("/hook"),
        )
    });
    receiver
        .wait_until("the first attempt", PATIENCE, |r| !r.is_empty())
        .unwrap();
    common::wait_until("the retry to be scheduled", || {
        daemon.stderr().contains("alert delivery failed; retrying")
    });
    let started = std::time::Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &daemon.child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = common::wait_for_exit(&mut daemon.child, "palisade-bastion after SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", daemon.stderr());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown waited for the sink: {:?}",
        started.elapsed()
    );
    assert_eq!(receiver.requests().len(), 1);
}

#[test]
fn check_config_names_the_sinks_and_never_prints_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let key = write_secret(dir.path(), "pd-key", "PDROUTINGSECRET");
    let config = dir.path().join("bastion.toml");
    let write = |alerts: &str| {
        std::fs::write(
            &config,
            format!(
                "listen-socket = \"{0}/bastion.sock\"\nbackup-dir = \"{0}/backups\"\n{alerts}\n\
                 [[validator]]\nname = \"val-a\"\nsocket = \"{0}/val-a.sock\"\n",
                dir.path().display()
            ),
        )
        .unwrap();
    };
    let check = || {
        Command::new(BIN)
            .args(["check-config", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    };
    write(&format!(
        "[alerts]\nsource = \"b1\"\nrepeat-interval = \"30m\"\n\
         [[alerts.sink]]\nkind = \"slack\"\nname = \"team\"\n\
         url = \"https://hooks.slack.com/services/T0/B0/SLACKURLSECRET\"\n\
         [[alerts.sink]]\nkind = \"pagerduty\"\nrouting-key-file = \"{}\"\n\
         max-per-hour = 5\nsend-resolved = false\n",
        key.display()
    ));
    let output = check();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    for expected in [
        "alerts.source:           b1",
        "alerts.repeat-interval:  30m",
        "alert sink team (slack): max 30 per hour, resolve messages on",
        "alert sink pagerduty (pagerduty): max 5 per hour, resolve messages off",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(!stdout.contains("SLACKURLSECRET") && !stdout.contains("PDROUTINGSECRET"));

    // An unknown key is a syntax error naming it.
    write("[alerts]\nrepeat = \"1h\"\n");
    let output = check();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown field `repeat`"), "{stderr}");
}
