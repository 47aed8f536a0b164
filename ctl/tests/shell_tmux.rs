//! `palisade-ctl shell` driven for real: the binary runs in a tmux pane
//! (private server, fixed size), keys go in with `send-keys`, the screen
//! comes back with `capture-pane`, against the supervisor's real RPC server
//! (`ControlSocket::serve_rpc`) with a test dispatcher that checks the
//! vault passphrase and records every call.
//!
//! Every wait polls the screen (or the dispatcher's record) with a
//! deadline; the tmux server is killed when a test ends, also on panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use palisade_supervisor::backup::BoxFuture;
use palisade_supervisor::config::RpcSettings;
use palisade_supervisor::rpc::{Caller, ControlSocket, Dispatcher, TrustPolicy};
use palisade_wire::rpc::{RpcError, code};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const PASSPHRASE: &str = "correct horse battery staple";
const WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// The supervisor side

/// What the dispatcher saw and its vault.
#[derive(Debug)]
struct Record {
    locked: bool,
    /// (method, params) of every call.
    calls: Vec<(String, Value)>,
    /// Every secret line received.
    secrets: Vec<String>,
}

impl Record {
    fn count(&self, method: &str) -> usize {
        self.calls.iter().filter(|(name, _)| name == method).count()
    }
}

struct Vault(Arc<Mutex<Record>>);

impl Dispatcher for Vault {
    fn call<'a>(
        &'a self,
        _caller: &'a Caller,
        method: &'a str,
        params: Value,
        secret: Option<SecretString>,
    ) -> BoxFuture<'a, Result<Value, RpcError>> {
        Box::pin(async move {
            if method == "backup.now" {
                // A call that takes long: Ctrl-C in the shell stops waiting.
                self.0
                    .lock()
                    .unwrap()
                    .calls
                    .push((method.to_string(), params.clone()));
                tokio::time::sleep(Duration::from_secs(30)).await;
                return Ok(json!({"file": "late"}));
            }
            let mut record = self.0.lock().unwrap();
            record.calls.push((method.to_string(), params.clone()));
            let answer = record.calls.len();
            match method {
                "status" => {
                    let state = if record.locked { "locked" } else { "running" };
                    Ok(json!({
                        "validator": "val-a",
                        "node": {"state": state},
                        "vault": {"enabled": true, "locked": record.locked},
                    }))
                }
                "health" => Ok(json!({"ok": true, "problems": []})),
                "vault.unlock" => {
                    let secret = secret.expect("the secret line");
                    record.secrets.push(secret.expose_secret().to_string());
                    if secret.expose_secret() != PASSPHRASE {
                        return Err(RpcError::new(
                            code::UNAUTHENTICATED,
                            "wrong passphrase; nothing was changed",
                        ));
                    }
                    record.locked = false;
                    Ok(json!({"locked": false, "node": "starting"}))
                }
                _ => Ok(json!({"answer": answer, "method": method, "params": params})),
            }
        })
    }
}

/// The real RPC server on `socket`, trusting this process (plaintext,
/// admin), until stopped.
struct Supervisor {
    shutdown: CancellationToken,
    thread: Option<JoinHandle<()>>,
}

impl Supervisor {
    fn start(dir: &Path, idle_timeout: Duration, record: Arc<Mutex<Record>>) -> Supervisor {
        Supervisor::start_named(dir, "val-a", idle_timeout, record)
    }

    fn start_named(
        dir: &Path,
        name: &str,
        idle_timeout: Duration,
        record: Arc<Mutex<Record>>,
    ) -> Supervisor {
        let settings = RpcSettings {
            socket: dir.join("run/rpc.sock"),
            name: name.into(),
            // No certificate: trusted local users only, which is this test.
            tls_dir: dir.join("tls"),
            idle_timeout,
            trusted_uids: vec![0],
        };
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let control = ControlSocket::bind(&settings)
                    .unwrap()
                    .with_trust_policy(TrustPolicy::for_this_process());
                ready_tx.send(()).unwrap();
                control
                    .serve_rpc(Arc::new(Vault(record)), Vec::new(), token)
                    .await;
            });
        });
        ready_rx.recv().unwrap();
        Supervisor {
            shutdown,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The shell's whole environment under tmux: its own home and state
/// directories, terminal type `term`, a UTF-8 locale.
fn shell_env<'a>(home: &'a str, state: &'a str, term: &'a str) -> [(&'static str, &'a str); 5] {
    [
        ("HOME", home),
        ("XDG_STATE_HOME", state),
        ("TERM", term),
        ("LANG", "C.UTF-8"),
        ("PATH", "/usr/bin:/bin"),
    ]
}

fn socket(dir: &Path) -> String {
    dir.join("run/rpc.sock").to_str().unwrap().to_string()
}

fn new_record() -> Arc<Mutex<Record>> {
    Arc::new(Mutex::new(Record {
        locked: true,
        calls: Vec::new(),
        secrets: Vec::new(),
    }))
}

/// Wait until `done(record)`.
fn wait_record(record: &Mutex<Record>, what: &str, done: impl Fn(&Record) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        if done(&record.lock().unwrap()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {:?}",
            record.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// The terminal side

/// A private tmux server running one shell; killed on drop.
struct Tmux {
    name: String,
}

static SERVERS: AtomicUsize = AtomicUsize::new(0);

impl Tmux {
    fn tmux(&self, args: &[&str]) -> Output {
        let output = Command::new("tmux")
            .args(["-u", "-L", &self.name, "-f", "/dev/null"])
            .args(args)
            .env("LANG", "C.UTF-8")
            .output()
            .expect("tmux runs (apt-get install tmux)");
        assert!(
            output.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// A new tmux server whose window `shell` (100x40) runs `palisade-ctl
    /// ARGS` with only `env` in its environment.
    fn start(env: &[(&str, &str)], args: &[&str]) -> Tmux {
        let tmux = Tmux {
            name: format!(
                "palisade-ctl-shell-{}-{}",
                std::process::id(),
                SERVERS.fetch_add(1, Ordering::SeqCst)
            ),
        };
        let mut command = vec![
            "start-server",
            ";",
            "set-option",
            "-g",
            "history-limit",
            "5000",
            ";",
        ];
        let line = tmux.shell_line(env, args);
        let line: Vec<&str> = line.iter().map(String::as_str).collect();
        command.extend([
            "new-session",
            "-d",
            "-s",
            "shell",
            "-x",
            "100",
            "-y",
            "40",
            "--",
        ]);
        command.extend(line);
        tmux.tmux(&command);
        tmux
    }

    /// `sh` runs the shell and prints its exit status after it: tmux 3.3
    /// does not always reap a pane's process (left a zombie, with no
    /// `pane_dead_status`), `sh` always does.
    fn shell_line(&self, env: &[(&str, &str)], args: &[&str]) -> Vec<String> {
        let mut line: Vec<String> = [
            "sh",
            "-c",
            // Ctrl-C while a call runs reaches the whole foreground
            // process group, this `sh` too: it must not die of it.
            "trap '' INT; \"$@\"; echo \"[palisade-ctl exited: $?]\"; exec sleep 86400",
            "sh",
            "env",
            "-i",
        ]
        .map(String::from)
        .to_vec();
        line.extend(env.iter().map(|(name, value)| format!("{name}={value}")));
        line.push(env!("CARGO_BIN_EXE_palisade-ctl").to_string());
        line.extend(args.iter().map(|arg| arg.to_string()));
        line
    }

    /// Run the shell again in the pane, with a clean screen.
    fn restart(&self, env: &[(&str, &str)], args: &[&str]) {
        let line = self.shell_line(env, args);
        let mut command = vec!["respawn-pane", "-k", "-t", "shell", "--"];
        command.extend(line.iter().map(String::as_str));
        self.tmux(&command);
        self.tmux(&["clear-history", "-t", "shell"]);
    }

    /// Type `text` as is.
    fn type_text(&self, text: &str) {
        self.tmux(&["send-keys", "-t", "shell", "-l", "--", text]);
    }

    /// Press keys by tmux name (`Enter`, `Tab`, `Up`, `C-c`).
    fn press(&self, keys: &[&str]) {
        let mut command = vec!["send-keys", "-t", "shell"];
        command.extend(keys);
        self.tmux(&command);
    }

    /// The screen and its scrollback, as text.
    fn screen(&self) -> String {
        let output = self.tmux(&["capture-pane", "-p", "-J", "-S", "-", "-t", "shell"]);
        String::from_utf8_lossy(&output.stdout)
            .trim_end()
            .to_string()
    }

    /// The same with the escape sequences of colours and attributes.
    fn screen_with_escapes(&self) -> String {
        let output = self.tmux(&["capture-pane", "-p", "-e", "-S", "-", "-t", "shell"]);
        String::from_utf8_lossy(&output.stdout).to_string()
    }

    /// The last line with anything on it (the cursor's, normally).
    fn last_line(&self) -> String {
        self.screen()
            .lines()
            .rev()
            .find(|line| !line.trim().is_empty())
            .unwrap_or_default()
            .trim_end()
            .to_string()
    }

    fn wait_screen(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let screen = self.screen();
            if done(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// Wait until the last line is exactly `line` (trailing blanks aside).
    fn wait_last_line(&self, line: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            if self.last_line() == line {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for the line {line:?}; the screen:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// Type `line`, press Enter, wait for `expect` to appear once more on
    /// the screen, then for the prompt `prompt` to come back.
    fn run(&self, line: &str, expect: &str, prompt: &str) -> String {
        let before = self.screen().matches(expect).count();
        self.type_text(line);
        self.press(&["Enter"]);
        self.wait_screen(&format!("{expect:?} after {line:?}"), |screen| {
            screen.matches(expect).count() > before
        });
        self.wait_last_line(prompt);
        self.screen()
    }

    /// Wait for the shell to exit; its exit status.
    fn wait_exit(&self) -> i32 {
        let screen = self.wait_screen("the shell to exit", |screen| {
            screen.contains("[palisade-ctl exited: ")
        });
        let status = screen
            .rsplit("[palisade-ctl exited: ")
            .next()
            .and_then(|rest| rest.split(']').next())
            .unwrap_or_default();
        status
            .parse()
            .unwrap_or_else(|_| panic!("exit status {status:?}; the screen:\n{screen}"))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.name, "kill-server"])
            .output();
    }
}

/// A home, a state directory and the environment for the shell.
struct Place {
    dir: tempfile::TempDir,
}

impl Place {
    fn new() -> Place {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("home")).unwrap();
        Place { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn home(&self) -> String {
        self.path().join("home").to_str().unwrap().to_string()
    }

    fn state(&self) -> String {
        self.path().join("state").to_str().unwrap().to_string()
    }

    fn history(&self) -> PathBuf {
        self.path().join("state/palisade/ctl_history")
    }
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

// ---------------------------------------------------------------------------
// The tests

#[test]
fn help_completion_history_unlock_and_errors() {
    let place = Place::new();
    let record = new_record();
    let _supervisor = Supervisor::start(place.path(), Duration::from_secs(60), record.clone());
    let socket = socket(place.path());
    let (home, state) = (place.home(), place.state());
    let env = shell_env(&home, &state, "screen");
    let args = ["--socket", socket.as_str(), "shell"];
    let tmux = Tmux::start(&env, &args);

    // The greeting's name and the node state in the prompt, in colour.
    let locked = "val-a (locked) ▸";
    tmux.wait_last_line(locked);
    assert!(
        tmux.screen().contains("connected to val-a"),
        "{}",
        tmux.screen()
    );
    let escapes = tmux.screen_with_escapes();
    assert!(
        escapes.contains("\x1b["),
        "a colour prompt on TERM=screen: {escapes:?}"
    );

    // help, and help for one command.
    let screen = tmux.run("help", "Shell:", locked);
    for expected in [
        "status",
        "unlock",
        "node start|stop|restart",
        "upgrade add|cancel",
        "call",
        "help [COMMAND]",
        "exit, quit",
    ] {
        assert!(
            screen.contains(&format!("  {expected} ")),
            "{expected}: {screen}"
        );
    }
    let screen = tmux.run("help logs", "--lines", locked);
    assert!(screen.contains("Recent daemon"), "{screen}");

    // Tab completes a command; Enter runs it.
    tmux.type_text("sta");
    tmux.press(&["Tab"]);
    tmux.wait_last_line(&format!("{locked} status"));
    tmux.press(&["Enter"]);
    wait_record(&record, "status", |record| record.count("status") >= 2);
    tmux.wait_last_line(locked);
    assert!(tmux.screen().contains("state: locked"), "{}", tmux.screen());

    // The grey hint: the rest of the word, then what the command needs;
    // Right arrow takes only the rest of the word.
    tmux.type_text("upgrade a");
    tmux.wait_last_line(&format!(
        "{locked} upgrade add <NAME> <--url <URL>|--path <FILE>> [--checksum <CHECKSUM>]"
    ));
    let escapes = tmux.screen_with_escapes();
    assert!(
        escapes.contains("\x1b[2mdd <NAME>"),
        "a dim hint: {escapes:?}"
    );
    tmux.press(&["Right"]);
    tmux.type_text("x");
    tmux.wait_last_line(&format!("{locked} upgrade addx"));
    tmux.press(&["C-c"]);
    tmux.wait_last_line(locked);

    // Tab twice lists the subcommands; Ctrl-C drops the line, the shell stays.
    tmux.type_text("node s");
    tmux.press(&["Tab"]);
    tmux.wait_last_line(&format!("{locked} node st"));
    tmux.press(&["Tab"]);
    tmux.wait_screen("start and stop listed", |screen| {
        screen
            .lines()
            .any(|line| line.contains("start") && line.contains("stop") && !line.contains('▸'))
    });
    tmux.press(&["C-c"]);
    tmux.wait_last_line(locked);
    let calls = record.lock().unwrap().calls.len();
    assert_eq!(record.lock().unwrap().count("node.start"), 0);
    assert_eq!(record.lock().unwrap().count("node.stop"), 0);

    // A failing call prints the error; the next command still works.
    let screen = tmux.run("call nosuch.method", "unknown method", locked);
    assert!(
        screen.contains("error: unknown method (code -32601)"),
        "{screen}"
    );
    tmux.run("status --json", "\"state\": \"locked\"", locked);
    assert!(record.lock().unwrap().calls.len() > calls);

    // Connection flags belong to the start of the shell.
    let screen = tmux.run(
        "--socket /tmp/elsewhere.sock status",
        "when starting the shell",
        locked,
    );
    assert!(screen.contains("--socket"), "{screen}");

    // Arguments parse as in one-shot mode; Up recalls the last line.
    let before = record.lock().unwrap().count("logs.tail");
    tmux.run("logs --lines 20", "lines: 20", locked);
    tmux.press(&["Up"]);
    tmux.wait_last_line(&format!("{locked} logs --lines 20"));
    tmux.press(&["Enter"]);
    wait_record(&record, "the recalled logs", |record| {
        record.count("logs.tail") == before + 2
    });
    tmux.wait_last_line(locked);
    {
        let record = record.lock().unwrap();
        let params: Vec<&Value> = record
            .calls
            .iter()
            .filter(|(method, _)| method == "logs.tail")
            .map(|(_, params)| params)
            .collect();
        assert_eq!(params, [&json!({"lines": 20}), &json!({"lines": 20})]);
    }

    // unlock: Ctrl-C at the passphrase prompt cancels, nothing is sent.
    tmux.type_text("unlock");
    tmux.press(&["Enter"]);
    tmux.wait_last_line("Vault passphrase:");
    tmux.type_text("not this one");
    tmux.press(&["C-c"]);
    tmux.wait_screen("cancelled", |screen| {
        screen.contains("cancelled: nothing sent")
    });
    tmux.wait_last_line(locked);
    assert!(record.lock().unwrap().secrets.is_empty());
    // The SIGINT of that Ctrl-C does not cancel the next call.
    tmux.run("status", "state: locked", locked);

    // unlock: typed with no echo, received by the supervisor; the prompt
    // shows the new state.
    let running = "val-a (running) ▸";
    tmux.type_text("unlock");
    tmux.press(&["Enter"]);
    tmux.wait_last_line("Vault passphrase:");
    tmux.type_text(PASSPHRASE);
    tmux.press(&["Enter"]);
    tmux.wait_last_line(running);
    assert_eq!(record.lock().unwrap().secrets, [PASSPHRASE]);
    let screen = tmux.screen();
    assert!(
        !screen.contains("horse"),
        "the passphrase is on the screen:\n{screen}"
    );
    assert!(screen.contains("locked: false"), "{screen}");

    // exit.
    tmux.type_text("exit");
    tmux.press(&["Enter"]);
    assert_eq!(tmux.wait_exit(), 0);

    // The history file: private, the commands, never the passphrase.
    let history = place.history();
    assert_eq!(mode(&history), 0o600);
    assert_eq!(mode(history.parent().unwrap()), 0o700);
    let text = std::fs::read_to_string(&history).unwrap();
    for line in ["status", "logs --lines 20", "unlock", "call nosuch.method"] {
        assert!(text.lines().any(|entry| entry == line), "{line}: {text}");
    }
    assert!(!text.contains("horse"), "{text}");
    assert!(!text.contains("not this one"), "{text}");
    assert!(!text.lines().any(|entry| entry == "exit"), "{text}");

    // It survives a restart: Up recalls the last line of the last session.
    tmux.restart(&env, &args);
    tmux.wait_last_line(running);
    tmux.press(&["Up"]);
    // The recalled line shows its optional flag as a hint.
    tmux.wait_last_line(&format!("{running} unlock [--accept-unreachable-stores]"));
    tmux.press(&["C-c"]);
    tmux.wait_last_line(running);
    // Ctrl-D leaves too.
    tmux.press(&["C-d"]);
    assert_eq!(tmux.wait_exit(), 0);
}

#[test]
fn dumb_terminal_gets_no_escapes() {
    let place = Place::new();
    let record = new_record();
    let _supervisor = Supervisor::start(place.path(), Duration::from_secs(60), record.clone());
    let socket = socket(place.path());
    let (home, state) = (place.home(), place.state());
    let env = shell_env(&home, &state, "dumb");
    let tmux = Tmux::start(&env, &["--socket", &socket, "shell"]);
    let prompt = "val-a (locked) ▸";
    tmux.wait_last_line(prompt);
    tmux.run("help", "Shell:", prompt);
    tmux.run("status", "state: locked", prompt);
    tmux.run("call nosuch.method", "unknown method", prompt);
    tmux.run("logs --lines 0", "error", prompt);
    let escapes = tmux.screen_with_escapes();
    assert!(
        !escapes.contains('\x1b'),
        "escape bytes with TERM=dumb: {escapes:?}"
    );
    tmux.type_text("exit");
    tmux.press(&["Enter"]);
    assert_eq!(tmux.wait_exit(), 0);
}

#[test]
fn reconnects_after_an_idle_close_and_a_restart() {
    let place = Place::new();
    let record = new_record();
    // The supervisor closes connections idle for 1 s.
    let idle = Duration::from_secs(1);
    let mut supervisor = Supervisor::start(place.path(), idle, record.clone());
    let socket = socket(place.path());
    let (home, state) = (place.home(), place.state());
    let env = shell_env(&home, &state, "screen");
    let tmux = Tmux::start(&env, &["--socket", &socket, "shell"]);
    let prompt = "val-a (locked) ▸";
    tmux.wait_last_line(prompt);
    // Outlive the idle timeout (this is the supervisor's clock, not a
    // guess at how long the shell takes).
    std::thread::sleep(idle * 2);
    let screen = tmux.run("health", "reconnected to val-a", prompt);
    assert!(
        screen.contains("the supervisor had closed the connection"),
        "{screen}"
    );
    assert!(!screen.contains("error:"), "{screen}");

    // The supervisor goes away: the error is shown, the prompt says so.
    supervisor.stop();
    let disconnected = "val-a (disconnected) ▸";
    let screen = tmux.run("status", "error:", disconnected);
    assert!(screen.contains("cannot connect"), "{screen}");
    // It comes back: the next command reconnects, saying so.
    let before = record.lock().unwrap().count("tunnel.list");
    let _supervisor = Supervisor::start(place.path(), Duration::from_secs(60), record.clone());
    tmux.run("tunnels", "reconnected to val-a", prompt);
    assert_eq!(record.lock().unwrap().count("tunnel.list"), before + 1);

    // Ctrl-C during a call stops waiting for it; the shell stays, and the
    // next command gets a new connection.
    tmux.type_text("backup-now");
    tmux.press(&["Enter"]);
    wait_record(&record, "backup.now", |record| {
        record.count("backup.now") == 1
    });
    tmux.press(&["C-c"]);
    tmux.wait_screen("interrupted", |screen| {
        screen.contains("interrupted: stopped waiting for the answer")
    });
    tmux.wait_last_line(disconnected);
    let screen = tmux.run("status", "reconnected to val-a (interrupted)", prompt);
    assert!(!screen.contains("late"), "{screen}");
    tmux.type_text("quit");
    tmux.press(&["Enter"]);
    assert_eq!(tmux.wait_exit(), 0);
}

#[test]
fn commands_from_a_pipe_run_without_prompt_or_history() {
    let place = Place::new();
    let record = new_record();
    let _supervisor = Supervisor::start(place.path(), Duration::from_secs(60), record.clone());
    let mut child = Command::new(env!("CARGO_BIN_EXE_palisade-ctl"))
        .args(["--socket", &socket(place.path()), "shell"])
        .env_clear()
        .env("HOME", place.home())
        .env("XDG_STATE_HOME", place.state())
        .env("PATH", "/usr/bin:/bin")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b"status --json\ncall nosuch.method\nlogs --lines 3\n")
            .unwrap();
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("\"state\": \"locked\""), "{stdout}");
    assert!(stdout.contains("lines: 3"), "{stdout}");
    assert!(
        !stdout.contains('▸') && !stdout.contains('>'),
        "no prompt: {stdout}"
    );
    assert!(
        stderr.contains("error: unknown method (code -32601)"),
        "{stderr}"
    );
    assert!(
        !stdout.contains('\x1b') && !stderr.contains('\x1b'),
        "{stdout}{stderr}"
    );
    assert!(!place.history().exists(), "no history from a pipe");
    let record = record.lock().unwrap();
    assert_eq!(record.count("logs.tail"), 1);
}

#[test]
fn connect_switches_between_the_configs_validators() {
    let place = Place::new();
    let (a_dir, b_dir) = (place.path().join("a"), place.path().join("b"));
    let (a, b) = (new_record(), new_record());
    let _a = Supervisor::start_named(&a_dir, "val-a", Duration::from_secs(60), a.clone());
    let _b = Supervisor::start_named(&b_dir, "val-b", Duration::from_secs(60), b.clone());
    let config = place.path().join("ctl.toml");
    std::fs::write(
        &config,
        format!(
            "default = \"val-a\"\n\
             [[validator]]\nname = \"val-a\"\nsocket = \"{}\"\n\
             [[validator]]\nname = \"val-b\"\nsocket = \"{}\"\n",
            socket(&a_dir),
            socket(&b_dir)
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_palisade-ctl"))
        .args(["--config", config.to_str().unwrap(), "shell"])
        .env_clear()
        .env("HOME", place.home())
        .env("PATH", "/usr/bin:/bin")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(
                b"tunnels\nconnect val-b\ntunnels\nconnect nosuch\ntunnels\nconnect\ntunnels\n",
            )
            .unwrap();
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("connected to val-b"), "{stdout}");
    assert!(stdout.contains("connected to val-a"), "{stdout}");
    // An unknown name is refused and the shell stays on val-b.
    assert!(stderr.contains("nosuch"), "{stderr}");
    assert_eq!(a.lock().unwrap().count("tunnel.list"), 2);
    assert_eq!(b.lock().unwrap().count("tunnel.list"), 2);
}
