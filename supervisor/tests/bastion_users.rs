//! The bastion's separate-users layout (docs/bastion.md, "Separate users";
//! hardening findings 16.13 and 16.16 in docs/threat-model.md) against a
//! real OpenSSH sshd, a real `palisade-bastion run` and a real supervisor.
//!
//! Three accounts, as the packaging sets them up: the validators' keys log
//! in as the tunnel user, operators as an operators' account, and the
//! daemon runs as an account of its own that owns the backups. The test
//! first shows the layout works (the supervisor's tunnel publishes its
//! socket, its backups reach the store through the forced command, the
//! daemon's health check sees it, an operator unlocks through the bastion),
//! then tries what an operator's SSH key and a validator's SSH key could do
//! in the one-account layout: reach the store, bind over a bundle, bind over
//! the store's socket, open TCP from the bastion. Every attempt is refused
//! and changes nothing. `the_one_account_layout_is_what_these_attacks_exploit`
//! runs the same attempts against the older layout and shows they succeed
//! there, so the probes are real.
//!
//! The accounts exist only for this test: sshd and the daemon run in a mount
//! namespace of their own (`unshare --mount`) where copies of /etc/passwd
//! and /etc/group with the three accounts added are bind-mounted over the
//! real ones; nothing on the host changes. Needs root (sshd switches users;
//! CI runs as root), and fails loudly otherwise.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::timing::{BLOCK, LONG};
use common::{Chain, VaultRpc};
use palisade_simchain::testkit::free_port;
use palisade_testkit::{Sshd, SshdOptions, current_user};
use palisade_wire::backup_store::{Response, decode_response};

const PASSPHRASE: &str = "separate users passphrase 5b1e";
/// The supervisor's `[rpc] name` and the bastion's `[[validator]] name`.
const VALIDATOR: &str = "val1";
const TUNNEL: &str = "pt-tunnel";
const OPS: &str = "pt-ops";
const DAEMON: &str = "pt-bastion";
const RPC_GROUP: &str = "pt-rpc";

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs sshd with several accounts and must run as root; CI runs as root — \
         run it with sudo or in a root container"
    );
}

/// The test's accounts: uids/gids free on this host, and copies of
/// /etc/passwd and /etc/group with them added.
struct Accounts {
    tunnel: u32,
    ops: u32,
    daemon: u32,
    rpc_group: u32,
    passwd: PathBuf,
    group: PathBuf,
}

impl Accounts {
    fn create(dir: &Path) -> Accounts {
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
        let group = std::fs::read_to_string("/etc/group").unwrap();
        let ids = |text: &str| -> BTreeSet<u32> {
            text.lines()
                .filter_map(|line| line.split(':').nth(2)?.parse().ok())
                .collect()
        };
        let (taken_uids, taken_gids) = (ids(&passwd), ids(&group));
        let base = (61_000..65_000)
            .find(|base| {
                (*base..base + 4).all(|id| !taken_uids.contains(&id) && !taken_gids.contains(&id))
            })
            .expect("four free ids");
        for name in [TUNNEL, OPS, DAEMON, RPC_GROUP] {
            assert!(
                !passwd.contains(&format!("\n{name}:")) && !group.contains(&format!("\n{name}:")),
                "{name} already exists on this host"
            );
        }
        let (tunnel, ops, daemon, rpc_group) = (base, base + 1, base + 2, base + 3);
        let home = |name: &str, uid: u32| {
            let home = dir.join("home").join(name);
            std::fs::create_dir_all(&home).unwrap();
            std::os::unix::fs::chown(&home, Some(uid), Some(uid)).unwrap();
            home
        };
        let mut passwd = passwd;
        for (name, uid) in [(TUNNEL, tunnel), (OPS, ops), (DAEMON, daemon)] {
            passwd.push_str(&format!(
                "{name}:x:{uid}:{uid}::{}:/bin/sh\n",
                home(name, uid).display()
            ));
        }
        let mut group = group;
        group.push_str(&format!(
            "{TUNNEL}:x:{tunnel}:\n{OPS}:x:{ops}:\n{DAEMON}:x:{daemon}:\n\
             {RPC_GROUP}:x:{rpc_group}:{OPS},{DAEMON}\n"
        ));
        let etc = dir.join("accounts");
        std::fs::create_dir_all(&etc).unwrap();
        let (passwd_file, group_file) = (etc.join("passwd"), etc.join("group"));
        std::fs::write(&passwd_file, passwd).unwrap();
        std::fs::write(&group_file, group).unwrap();
        for file in [&etc, &passwd_file, &group_file] {
            let mode = if file.is_dir() { 0o755 } else { 0o644 };
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        Accounts {
            tunnel,
            ops,
            daemon,
            rpc_group,
            passwd: passwd_file,
            group: group_file,
        }
    }

    /// A command prefix that runs what follows with these accounts in the
    /// passwd and group databases (a private mount namespace).
    fn prefix(&self) -> Vec<String> {
        vec![
            "unshare".into(),
            "--mount".into(),
            "--propagation".into(),
            "private".into(),
            "sh".into(),
            "-c".into(),
            "mount --bind \"$1\" /etc/passwd && mount --bind \"$2\" /etc/group && shift 2 && \
             exec \"$@\""
                .into(),
            "palisade-accounts".into(),
            self.passwd.display().to_string(),
            self.group.display().to_string(),
        ]
    }
}

fn chown_mode(path: &Path, uid: u32, gid: u32, mode: u32) {
    std::fs::create_dir_all(path).unwrap();
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The `ssh` client against the test's sshd, the host key pinned.
struct Client {
    port: u16,
    known_hosts: PathBuf,
    /// Where local forwards' sockets go (short: 107-byte limit).
    dir: PathBuf,
}

/// What a reverse Unix-socket forward (`ssh -R PATH:…`) came to.
#[derive(Debug, PartialEq, Eq)]
enum Bind {
    /// sshd bound a socket at the path.
    Bound,
    /// ssh exited: the forward was refused.
    Refused(String),
}

impl Client {
    fn command(&self, key: &Path, user: &str) -> Command {
        let mut command = Command::new("ssh");
        command
            .args([
                "-F",
                "/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
            ])
            .args(["-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=10"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
            .args(["-p", &self.port.to_string(), "-i"])
            .arg(key)
            .arg(format!("{user}@127.0.0.1"));
        command
    }

    /// A local forward (`ssh -N -L LOCAL:TARGET`) used once: connect to it,
    /// send `input`, close the sending side, and return what came back
    /// (empty when sshd refused the channel: ssh then closes the local
    /// connection at once) and ssh's stderr. A TARGET with a slash is a
    /// Unix socket on the bastion (`direct-streamlocal`), `host:port` a TCP
    /// connection from it (`direct-tcpip`). (OpenSSH 9.2's `-W` takes no
    /// Unix socket paths.)
    fn through_forward(
        &self,
        key: &Path,
        user: &str,
        target: &str,
        input: &[u8],
    ) -> (Vec<u8>, String) {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let local = self
            .dir
            .join(format!("fwd-{}.sock", NEXT.fetch_add(1, Ordering::Relaxed)));
        let mut child = self
            .command(key, user)
            .args(["-N", "-o", "ExitOnForwardFailure=yes", "-L"])
            .arg(format!("{}:{target}", local.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !local.exists() && child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "ssh -L {target} did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut output = Vec::new();
        if let Ok(mut stream) = std::os::unix::net::UnixStream::connect(&local) {
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            stream
                .set_write_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let _ = stream.write_all(input);
            let _ = stream.shutdown(std::net::Shutdown::Write);
            let _ = stream.read_to_end(&mut output);
        }
        let _ = child.kill();
        let finished = child.wait_with_output().unwrap();
        let _ = std::fs::remove_file(&local);
        (
            output,
            String::from_utf8_lossy(&finished.stderr).into_owned(),
        )
    }

    /// `ssh -N -R REMOTE:LOCAL`, exiting on a refused forward: bound once
    /// a new socket appears at `remote` (then ssh is stopped), refused when
    /// ssh exits first.
    fn reverse_bind(&self, key: &Path, user: &str, remote: &Path, local: &Path) -> Bind {
        use std::os::unix::fs::MetadataExt;
        // A socket there before (the store's own, say): a new socket is a
        // new inode. (A file's inode may be reused by the socket replacing it.)
        let before = std::fs::symlink_metadata(remote)
            .ok()
            .filter(|m| m.file_type().is_socket())
            .map(|m| m.ino());
        let mut child = self
            .command(key, user)
            .args(["-N", "-o", "ExitOnForwardFailure=yes", "-R"])
            .arg(format!("{}:{}", remote.display(), local.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(_status) = child.try_wait().unwrap() {
                let mut stderr = String::new();
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut stderr)
                    .unwrap();
                return Bind::Refused(stderr);
            }
            let bound = std::fs::symlink_metadata(remote)
                .map(|metadata| metadata.file_type().is_socket() && Some(metadata.ino()) != before)
                .unwrap_or(false);
            if bound {
                let _ = child.kill();
                let _ = child.wait();
                return Bind::Bound;
            }
            assert!(
                Instant::now() < deadline,
                "ssh -R {} neither bound nor exited",
                remote.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Collect a child's output within `limit`, killing it after that.
fn wait_output(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// A backup-store `list` request for `validator`, framed.
fn list_request(validator: &str) -> Vec<u8> {
    let json = format!(r#"{{"op":"list","validator":"{validator}"}}"#);
    let mut frame = (json.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(json.as_bytes());
    frame
}

/// The first framed response in `bytes`, if there is one.
fn first_response(bytes: &[u8]) -> Option<Response> {
    let length = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    decode_response(bytes.get(4..4 + length)?).ok()
}

/// The bundles in a validator's store directory.
fn bundles(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|entry| entry.unwrap().path())
                .filter(|path| !path.file_name().unwrap().to_string_lossy().starts_with('.'))
                // The `logs/` directory holds another kind (log segments).
                .filter(|path| !path.is_dir())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// A TCP listener on the bastion's loopback that greets whoever connects:
/// what an operator's key must not reach (etcd, metrics, the sentry's RPC).
fn tcp_secret() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let _ = stream.write_all(b"tcp-secret\n");
        }
    });
    port
}

#[test]
fn separate_users_keep_operators_and_tunnel_keys_away_from_the_backups() {
    require_root();
    // Short paths: a reverse forward's path is limited to 107 bytes, and
    // bundle names are 81, so only a short backup-dir lets the attempt on a
    // bundle be made at all (the packaged one is too long for it; the test
    // shows the accounts, not the length, refusing it).
    let root = tempfile::Builder::new()
        .prefix("pb")
        .rand_bytes(4)
        .tempdir()
        .unwrap();
    let dir = root.path();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let accounts = Accounts::create(dir);
    let keys = common::SshKeys::new(&["tunnel", "alice"]);

    // The bastion's file system, as the packaged tmpfiles.d lines and the
    // unit lay it out (docs/bastion.md, "Separate users").
    let bin = dir.join("bin/palisade-bastion");
    chown_mode(bin.parent().unwrap(), 0, 0, 0o755);
    std::fs::copy(common::workspace_binary("palisade-bastion"), &bin).unwrap();
    let etc = dir.join("etc");
    chown_mode(&etc, 0, 0, 0o755);
    let store_run = dir.join("store-run");
    chown_mode(&store_run, accounts.daemon, accounts.tunnel, 0o2750);
    let validators = dir.join("validators");
    chown_mode(&validators, accounts.tunnel, accounts.rpc_group, 0o2750);
    let backups = dir.join("b");
    chown_mode(&backups, accounts.daemon, accounts.daemon, 0o700);
    let listen = store_run.join("bastion.sock");
    let rpc_socket = validators.join(format!("{VALIDATOR}.sock"));
    let config = etc.join("bastion.toml");
    std::fs::write(
        &config,
        format!(
            "listen-socket = {listen:?}\nbackup-dir = {backups:?}\ntunnel-user = {TUNNEL:?}\n\
             [health]\ninterval = \"500ms\"\ntimeout = \"400ms\"\n\
             [logs]\narchive-users = [{OPS:?}]\n\
             [[validator]]\nname = {VALIDATOR:?}\nsocket = {rpc_socket:?}\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();

    // sshd: the validator's key as in docs/bastion-sshd.md, the operators'
    // in their own account, and the Match blocks of the separate layout.
    let mut options = SshdOptions::new("127.0.0.1", free_port(), "");
    options.exec_prefix = accounts.prefix();
    options.per_user_authorized_keys = vec![
        (
            TUNNEL.into(),
            format!(
                "command=\"{bin} backup-session --config {config} --validator {VALIDATOR}\",\
                 restrict,port-forwarding,permitopen=\"127.0.0.1:9\" {key}",
                bin = bin.display(),
                config = config.display(),
                key = keys.public("tunnel"),
            ),
        ),
        (
            OPS.into(),
            format!(
                "command=\"{bin} rpc-relay --config {config}\",restrict {key}",
                bin = bin.display(),
                config = config.display(),
                key = keys.public("alice")
            ),
        ),
    ];
    options.trailing_config = format!(
        "Match User {TUNNEL}\n\
         \tAllowStreamLocalForwarding remote\n\
         \tStreamLocalBindMask 0117\n\
         Match User {OPS}\n\
         \tDisableForwarding yes\n\
         \tPermitTTY no\n"
    );
    let sshd = Sshd::start(options).unwrap();
    let known_hosts = dir.join("known_hosts");
    std::fs::write(&known_hosts, format!("{}\n", sshd.known_hosts_line())).unwrap();
    let client = Client {
        port: sshd.port(),
        known_hosts,
        dir: dir.to_path_buf(),
    };

    // The daemon, as its own account with the RPC group.
    let daemon_log = dir.join("daemon.log");
    let mut daemon_command = Command::new(&accounts.prefix()[0]);
    daemon_command
        .args(&accounts.prefix()[1..])
        .args([
            "setpriv",
            &format!("--reuid={DAEMON}"),
            &format!("--regid={DAEMON}"),
            "--init-groups",
            "--",
        ])
        .arg(&bin)
        .args(["run", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&daemon_log).unwrap());
    let mut daemon = common::KillOnDrop(daemon_command.spawn().unwrap());
    common::wait_until(LONG, "the backup store listens", || {
        if let Some(status) = daemon.0.try_wait().unwrap() {
            panic!(
                "the daemon exited ({status}): {}",
                std::fs::read_to_string(&daemon_log).unwrap()
            );
        }
        // Written once the store is bound and its socket's mode set.
        store_run.join("status.json").exists()
    });
    {
        use std::os::unix::fs::MetadataExt;
        let metadata = std::fs::metadata(&listen).unwrap();
        assert_eq!(
            (metadata.mode() & 0o777, metadata.uid(), metadata.gid()),
            (0o660, accounts.daemon, accounts.tunnel),
            "the store's socket belongs to the daemon and the tunnel user's group"
        );
    }

    // The validator: its tunnel logs in as the tunnel user, publishes the
    // control socket in the validators' directory and backs up through the
    // forced command.
    let vault = VaultRpc::setup(
        BLOCK,
        PASSPHRASE,
        "",
        &format!(
            "[tunnel]\nkey-file = {tunnel_key:?}\nkeepalive-interval = \"1s\"\n\
             [[bastion]]\nname = \"b1\"\nhost = \"127.0.0.1\"\nport = {port}\nuser = {TUNNEL:?}\n\
             host-key-fingerprints = [{fingerprint:?}]\nrpc-socket = {rpc_socket:?}\n\
             backup-command = \"palisade-bastion backup-session\"\n\
             [[operator]]\nname = \"alice\"\nkey = {alice:?}\nrole = \"admin\"\n",
            tunnel_key = keys.path("tunnel"),
            port = sshd.port(),
            fingerprint = sshd.fingerprint(),
            alice = keys.public("alice"),
        ),
    );
    let pin = vault.init_rpc();
    let _supervisor = vault.run();
    common::wait_until(LONG, "the validator's socket on the bastion", || {
        rpc_socket.exists()
    });
    {
        use std::os::unix::fs::MetadataExt;
        let metadata = std::fs::metadata(&rpc_socket).unwrap();
        assert_eq!(
            (metadata.mode() & 0o777, metadata.uid(), metadata.gid()),
            (0o660, accounts.tunnel, accounts.rpc_group),
            "sshd created the validator's socket for the RPC group"
        );
    }

    // An operator unlocks through the bastion, logged in as the operators'
    // account.
    let chain: &Chain = &vault.chain;
    let via = format!("{OPS}@127.0.0.1:{}", sshd.port());
    let alice_key = keys.path("alice");
    let ctl = |validator: &str, command: &[&str], stdin: Option<&str>| {
        let mut args = vec![
            "--via",
            &via,
            "--validator",
            validator,
            "--known-hosts",
            client.known_hosts.to_str().unwrap(),
            "--pin",
            &pin,
            "--operator",
            "alice",
            "--key",
            alice_key.to_str().unwrap(),
            "--timeout",
            "20",
        ];
        args.extend_from_slice(command);
        common::run_ctl(chain.dir.path(), &args, stdin)
    };
    // A validator this bastion does not serve: the relay's refusal, shown.
    let unknown = ctl("val9", &["status"], None);
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert_eq!(unknown.status.code(), Some(3), "{unknown:?}");
    assert!(
        stderr.contains("the bastion's relay refused: unknown validator \"val9\"")
            && stderr.contains(VALIDATOR),
        "{stderr}"
    );
    let unlocked = ctl(
        VALIDATOR,
        &["unlock", "--passphrase-stdin"],
        Some(&format!("{PASSPHRASE}\n")),
    );
    assert!(
        unlocked.status.success(),
        "unlock via the bastion: {unlocked:?}\nsshd: {}",
        sshd.log_tail(30)
    );
    chain.wait_signing(3, LONG);

    // Backups reach the store through the forced command, run as the
    // tunnel user; the daemon owns them.
    let store = backups.join(VALIDATOR);
    common::wait_until(LONG, "a bundle in the bastion's store", || {
        !bundles(&store).is_empty()
    });
    // The daemon's health check reaches the validator through the RPC group.
    common::wait_until(
        LONG,
        "the bastion's health check to see the validator up",
        || {
            let output = Command::new(&bin)
                .args(["status", "--json", "--config"])
                .arg(&config)
                .output()
                .unwrap();
            let Ok(status) = serde_json::from_slice::<serde_json::Value>(&output.stdout) else {
                return false;
            };
            status["validators"][0]["state"] == "up"
        },
    );

    let bundle = bundles(&store)[0].clone();
    let bundle_bytes = std::fs::read(&bundle).unwrap();
    let local = dir.join("attacker-local.sock");

    // 16.13: an operator's key reaching the store's socket is refused, and
    // so is any forward: Unix socket, TCP from the bastion, reverse. Its
    // sessions all run the relay, which reaches the validators only.
    let (through, stderr) = client.through_forward(
        &keys.path("alice"),
        OPS,
        listen.to_str().unwrap(),
        &list_request(VALIDATOR),
    );
    assert!(
        through.is_empty(),
        "an operator's key reached the backup store: {:?} {stderr}",
        first_response(&through)
    );
    let (socket_channel, stderr) =
        client.through_forward(&keys.path("alice"), OPS, rpc_socket.to_str().unwrap(), b"");
    assert!(
        socket_channel.is_empty(),
        "an operator's key opened a Unix-socket channel: {stderr}"
    );
    let run = |command: &str| {
        let child = client
            .command(&keys.path("alice"), OPS)
            .arg(command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_output(child, Duration::from_secs(20))
    };
    let greeting = run(&format!("palisade-rpc {VALIDATOR}"));
    assert!(
        String::from_utf8_lossy(&greeting.stdout).contains(VALIDATOR),
        "the relay reaches the validator's socket: {greeting:?}"
    );
    let shell = run(&format!("cat {}", bundle.display()));
    assert!(
        !shell.status.success()
            && String::from_utf8_lossy(&shell.stdout).starts_with("palisade-bastion: "),
        "an operator's key ran a command: {shell:?}"
    );
    let secret_port = tcp_secret();
    let (tcp, stderr) = client.through_forward(
        &keys.path("alice"),
        OPS,
        &format!("127.0.0.1:{secret_port}"),
        b"",
    );
    assert!(
        tcp.is_empty(),
        "an operator's key opened TCP from the bastion: {stderr}"
    );
    for target in [validators.join("evil.sock"), bundle.clone()] {
        match client.reverse_bind(&keys.path("alice"), OPS, &target, &local) {
            Bind::Refused(_) => {}
            Bind::Bound => panic!("an operator's key bound {}", target.display()),
        }
    }

    // 16.16: the validators' key cannot make sshd unlink a bundle or the
    // store's socket (the tunnel user cannot write there), nor reach the
    // store except through its forced command.
    for target in [bundle.clone(), listen.clone()] {
        match client.reverse_bind(&keys.path("tunnel"), TUNNEL, &target, &local) {
            Bind::Refused(stderr) => assert!(
                stderr.contains("remote port forwarding failed"),
                "{}: {stderr}",
                target.display()
            ),
            Bind::Bound => panic!("the tunnel key bound over {}", target.display()),
        }
    }
    assert_eq!(std::fs::read(&bundle).unwrap(), bundle_bytes);
    let (direct, stderr) = client.through_forward(
        &keys.path("tunnel"),
        TUNNEL,
        listen.to_str().unwrap(),
        &list_request(VALIDATOR),
    );
    assert!(
        direct.is_empty(),
        "the tunnel key reached the store without its forced command: {stderr}"
    );

    // The store's own rule: an account that got into the tunnel user's
    // group (so the socket's mode lets it connect) is still not served —
    // the operators' account, a `logs.archive-users` one, only its log
    // reads; the tunnel user is.
    let as_account_asking = |uid: u32, gid: u32, request: Vec<u8>| {
        let mut child = Command::new("setpriv")
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .arg("--clear-groups")
            .arg("--")
            .arg(&bin)
            .args(["backup-session", "--config"])
            .arg(&config)
            .args(["--validator", VALIDATOR])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&request).unwrap();
        wait_output(child, Duration::from_secs(20))
    };
    let as_account = |uid: u32, gid: u32| as_account_asking(uid, gid, list_request(VALIDATOR));
    let intruder = as_account(accounts.ops, accounts.tunnel);
    let answer = first_response(&intruder.stdout);
    assert!(
        answer.as_ref().is_none_or(|response| !response.ok),
        "an account in the tunnel user's group was served: {answer:?} {intruder:?}"
    );
    common::wait_until(LONG, "the refusal in the daemon's log", || {
        std::fs::read_to_string(&daemon_log)
            .unwrap()
            .contains(&format!("uid={}", accounts.ops))
    });
    let log_listing = {
        let json = format!(r#"{{"op":"list","validator":"{VALIDATOR}","kind":"log"}}"#);
        let mut frame = (json.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(json.as_bytes());
        frame
    };
    let archive = as_account_asking(accounts.ops, accounts.tunnel, log_listing);
    let answer = first_response(&archive.stdout);
    assert!(
        answer.as_ref().is_some_and(|response| response.ok),
        "the archive reader's log listing: {answer:?} {archive:?}"
    );
    let tunnel_user = as_account(accounts.tunnel, accounts.tunnel);
    let answer = first_response(&tunnel_user.stdout).expect("the tunnel user is served");
    assert!(answer.ok, "{answer:?}");
    assert!(
        answer
            .files
            .unwrap()
            .iter()
            .any(|file| bundle.ends_with(file)),
        "the listing names the bundle"
    );

    // Nothing above changed the store or stopped the validator.
    assert_eq!(std::fs::read(&bundle).unwrap(), bundle_bytes);
    assert!(daemon.0.try_wait().unwrap().is_none(), "the daemon exited");
    assert!(listen.exists());
    chain.wait_signing(2, LONG);
    let log = std::fs::read_to_string(&daemon_log).unwrap();
    assert!(
        log.contains(&format!("tunnel user {TUNNEL}")),
        "the start line names who is served: {log}"
    );
    assert!(!log.contains("tunnel-user is not set"), "{log}");
}

/// The same attempts against the one-account layout (everything as one
/// user, the way docs/bastion.md described it before the separate-users
/// layout): they succeed, which is what the test above must refuse.
#[test]
fn the_one_account_layout_is_what_these_attacks_exploit() {
    let dir = tempfile::Builder::new()
        .prefix("pb")
        .rand_bytes(4)
        .tempdir()
        .unwrap();
    let dir = dir.path();
    let keys = common::SshKeys::new(&["tunnel", "alice"]);
    let user = current_user().unwrap();
    let bin = common::workspace_binary("palisade-bastion");
    let run = dir.join("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
    let listen = run.join("bastion.sock");
    let backups = dir.join("b");
    let config = dir.join("bastion.toml");
    std::fs::write(
        &config,
        format!(
            "listen-socket = {listen:?}\nbackup-dir = {backups:?}\n\
             [[validator]]\nname = {VALIDATOR:?}\nsocket = \"{}\"\n",
            run.join("v.sock").display()
        ),
    )
    .unwrap();
    let store_log = dir.join("store.log");
    let _store = common::KillOnDrop(
        Command::new(&bin)
            .args(["serve-backups", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&store_log).unwrap())
            .spawn()
            .unwrap(),
    );
    common::wait_until(LONG, "the backup store listens", || listen.exists());
    // A bundle's name as the supervisor writes it (81 bytes).
    let bundle = backups.join(VALIDATOR).join(format!(
        "backup-sim-1-{}-{:020}-h4.age",
        "79A13DCCD73712C400DD22F7821F7B8083541735", 1
    ));
    std::fs::write(&bundle, b"ciphertext").unwrap();

    let sshd = Sshd::start(SshdOptions::new(
        "127.0.0.1",
        free_port(),
        format!(
            "command=\"{bin} backup-session --config {config} --validator {VALIDATOR}\",\
             restrict,port-forwarding,permitopen=\"127.0.0.1:9\" {tunnel}\n\
             command=\"/bin/false\",restrict,port-forwarding {alice}\n",
            bin = bin.display(),
            config = config.display(),
            tunnel = keys.public("tunnel"),
            alice = keys.public("alice"),
        ),
    ))
    .unwrap();
    let known_hosts = dir.join("known_hosts");
    std::fs::write(&known_hosts, format!("{}\n", sshd.known_hosts_line())).unwrap();
    let client = Client {
        port: sshd.port(),
        known_hosts,
        dir: dir.to_path_buf(),
    };

    // An operator's key lists the validator's backups.
    let (through, stderr) = client.through_forward(
        &keys.path("alice"),
        &user,
        listen.to_str().unwrap(),
        &list_request(VALIDATOR),
    );
    let answer = first_response(&through);
    assert!(
        answer.as_ref().is_some_and(|response| response.ok
            && response
                .files
                .as_ref()
                .is_some_and(|files| files.len() == 1)),
        "expected the one-account layout to let an operator's key list the backups: \
         {answer:?} {stderr}"
    );
    // It also opens TCP connections from the bastion (etcd, metrics, …).
    let secret_port = tcp_secret();
    let (tcp, stderr) = client.through_forward(
        &keys.path("alice"),
        &user,
        &format!("127.0.0.1:{secret_port}"),
        b"",
    );
    assert!(
        String::from_utf8_lossy(&tcp).contains("tcp-secret"),
        "expected the one-account layout's operator key to open TCP: {stderr}"
    );
    // A tunnel key's reverse forward makes sshd delete the bundle.
    let local = dir.join("attacker-local.sock");
    assert_eq!(
        client.reverse_bind(&keys.path("tunnel"), &user, &bundle, &local),
        Bind::Bound
    );
    assert!(
        std::fs::read(&bundle).is_err(),
        "expected sshd to have replaced the bundle with a socket"
    );
}
