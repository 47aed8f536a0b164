//! `rpc_local_p50_ms` / `rpc_local_p99_ms`: round trips of the control RPC
//! on the local Unix socket, as a trusted local user (plaintext, no login).
//! `rpc_bastion_p50_ms` / `rpc_bastion_p99_ms`: the same calls the way an
//! operator makes them from afar (`palisade-ctl --via`): SSH to a real
//! OpenSSH sshd on loopback, `direct-streamlocal` to the socket the
//! supervisor's own tunnel publishes there (reverse forward), then TLS with
//! the pinned certificate and an operator login (role viewer).
//!
//! The real `palisade-supervisor run` supervises a signing validator on the
//! simulated chain (no vault), with `[rpc] socket` in the fixture's temporary
//! directory and one `[[bastion]]`: the sshd this module starts. One
//! connection per path is opened with `palisade-client`, the client library
//! `palisade-ctl` uses (`Client::connect`), then [`WARMUP`] calls of [`METHOD`] are made and
//! [`RUNS`] more are timed, each from before the request line is encoded and
//! written until the response line has been read and parsed
//! (`Client::call`). No peer: there is no other implementation of this RPC;
//! the local figures, measured in the same run, show what the bastion path
//! adds.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use palisade_client::{
    BastionTarget, Client, ConnectOptions, Endpoint, Fingerprint, OperatorKey, TlsPolicy,
};
use palisade_ssh::dial::Dial;
use palisade_ssh::host_key::HostKeyPolicy;
use palisade_testkit::{Sshd, SshdOptions, current_user, ssh_keygen};

use crate::fixture::{Binaries, Fixture, SupervisorProcess};
use crate::{Measured, result};

pub const P50: &str = "rpc_local_p50_ms";
pub const P99: &str = "rpc_local_p99_ms";
pub const BASTION_P50: &str = "rpc_bastion_p50_ms";
pub const BASTION_P99: &str = "rpc_bastion_p99_ms";

/// The method timed: read-only, answered from the supervisor's state.
const METHOD: &str = "status";
const WARMUP: usize = 100;
const RUNS: usize = 2000;
/// DESIGN targets.
const TARGET_P99_MS: f64 = 1.0;
const TARGET_BASTION_P99_MS: f64 = 5.0;
/// Blocks as on the idle benchmark: the supervisor has daemon output to read
/// while it answers.
const BLOCK_TIME: Duration = Duration::from_secs(1);

/// The four results: local p50, p99, bastion p50, p99.
pub struct RpcResults {
    pub local: (Measured, Measured),
    pub bastion: anyhow::Result<(Measured, Measured)>,
}

pub fn run(bins: &Binaries) -> anyhow::Result<RpcResults> {
    let fixture = Fixture::start(bins, BLOCK_TIME)?;
    let dir = fixture.dir.path();
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys)?;
    let tunnel_key = keys.join("tunnel");
    let operator_key = keys.join("operator");
    let tunnel_public = ssh_keygen(&tunnel_key).map_err(|e| anyhow::anyhow!("{e}"))?;
    let operator_public = ssh_keygen(&operator_key).map_err(|e| anyhow::anyhow!("{e}"))?;
    let sshd = Sshd::start(SshdOptions::new(
        "127.0.0.1",
        palisade_simchain::testkit::free_port(),
        format!(
            "restrict,port-forwarding {}\n\
             command=\"/bin/false\",restrict,port-forwarding {}\n",
            tunnel_public.trim(),
            operator_public.trim()
        ),
    ))
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let forwarded = sshd.path("val1.sock");
    let user = current_user().map_err(|e| anyhow::anyhow!("{e}"))?;

    // Short and absolute (at most 107 bytes): the fixture's directory is in /tmp.
    let socket = dir.join("run").join("supervisor.sock");
    let config = dir.join("palisade.toml");
    std::fs::write(
        &config,
        format!(
            "[rpc]\nsocket = {socket:?}\nname = \"val1\"\n\
             [tunnel]\nkey-file = {tunnel_key:?}\n\
             [[bastion]]\nname = \"b1\"\nhost = \"127.0.0.1\"\nport = {port}\nuser = {user:?}\n\
             host-key-fingerprints = [{fingerprint:?}]\nrpc-socket = {forwarded:?}\n\
             [[operator]]\nname = \"bench\"\nkey = {operator:?}\nrole = \"viewer\"\n",
            port = sshd.port(),
            fingerprint = sshd.fingerprint(),
            operator = operator_public.trim(),
        ),
    )
    .with_context(|| format!("writing {}", config.display()))?;
    let config_text = config
        .to_str()
        .context("the fixture's path is not UTF-8")?
        .to_owned();
    let env = [("PALISADE_CONFIG", config_text.as_str())];
    let init = fixture
        .supervisor_command(&env)
        .arg("init-rpc")
        .output()
        .context("palisade-supervisor init-rpc")?;
    if !init.status.success() {
        bail!("init-rpc failed: {}", String::from_utf8_lossy(&init.stderr));
    }
    let pin = Fingerprint::parse(String::from_utf8_lossy(&init.stdout).trim())
        .map_err(|e| anyhow::anyhow!("init-rpc printed no pin: {e}"))?;

    let mut supervisor = fixture.run_supervisor(&env)?;
    fixture.wait_signing(&mut supervisor, 1, Duration::from_secs(30))?;
    wait_socket(&mut supervisor, &socket, Duration::from_secs(10))?;
    wait_socket(&mut supervisor, &forwarded, Duration::from_secs(20))?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local_options = ConnectOptions {
        endpoint: Endpoint::Socket(PathBuf::from(&socket)),
        tls: TlsPolicy::WhenRequired,
        server_uids: Vec::new(),
        pin: None,
        operator: None,
        call_timeout: Duration::from_secs(5),
    };
    let local = runtime.block_on(measure(local_options, false))?;
    let bastion_options = ConnectOptions {
        endpoint: Endpoint::Bastion {
            dial: Dial {
                host: "127.0.0.1".into(),
                port: sshd.port(),
                user,
                key_path: operator_key.clone(),
                host_keys: HostKeyPolicy {
                    pinned_fingerprints: vec![sshd.fingerprint().to_string()],
                    ..HostKeyPolicy::default()
                },
                timeout: Duration::from_secs(10),
            },
            target: BastionTarget::Socket(
                forwarded
                    .to_str()
                    .context("the sshd directory is not UTF-8")?
                    .to_string(),
            ),
        },
        tls: TlsPolicy::Always,
        server_uids: Vec::new(),
        pin: Some(pin),
        operator: Some(OperatorKey::load("bench", &operator_key)?),
        call_timeout: Duration::from_secs(5),
    };
    let bastion = runtime.block_on(measure(bastion_options, true));
    supervisor.ensure_running()?;
    supervisor.stop()?;
    drop(sshd);

    let local_summary = summary(&local);
    let local_detail = format!(
        "method `{METHOD}`, {RUNS} calls after {WARMUP} warm-up on one plaintext connection \
         (palisade-client, trusted local uid {}); {}",
        nix::unistd::getuid(),
        local_summary.describe(TARGET_P99_MS),
    );
    let local = (
        Measured {
            result: result(P50, local_summary.p50, "ms", None),
            detail: local_detail.clone(),
        },
        Measured {
            result: result(P99, local_summary.p99, "ms", Some(TARGET_P99_MS)),
            detail: local_detail,
        },
    );
    let bastion = bastion.map(|samples| {
        let bastion_summary = summary(&samples);
        let detail = format!(
            "method `{METHOD}`, {RUNS} calls after {WARMUP} warm-up on one connection through \
             OpenSSH sshd on 127.0.0.1 (direct-streamlocal to the supervisor's reverse-forwarded \
             socket, TLS 1.3 pinned, operator login as viewer); {}; local p50 {:.3} ms in the \
             same run",
            bastion_summary.describe(TARGET_BASTION_P99_MS),
            local_summary.p50,
        );
        (
            Measured {
                result: result(BASTION_P50, bastion_summary.p50, "ms", None),
                detail: detail.clone(),
            },
            Measured {
                result: result(
                    BASTION_P99,
                    bastion_summary.p99,
                    "ms",
                    Some(TARGET_BASTION_P99_MS),
                ),
                detail,
            },
        )
    });
    Ok(RpcResults { local, bastion })
}

struct Summary {
    p50: f64,
    p99: f64,
    min: f64,
    mean: f64,
    max: f64,
    sorted_ms: Vec<f64>,
}

impl Summary {
    fn describe(&self, target: f64) -> String {
        let over = self.sorted_ms.iter().filter(|ms| **ms > target).count();
        format!(
            "min {:.3} ms, mean {:.3} ms, max {:.3} ms, {over} over {target} ms",
            self.min, self.mean, self.max
        )
    }
}

fn summary(samples: &[Duration]) -> Summary {
    let mut sorted_ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    sorted_ms.sort_by(f64::total_cmp);
    let percentile = |p: f64| -> f64 {
        let index = ((sorted_ms.len() as f64 - 1.0) * p).round() as usize;
        (sorted_ms[index] * 1000.0).round() / 1000.0
    };
    Summary {
        p50: percentile(0.50),
        p99: percentile(0.99),
        min: sorted_ms[0],
        mean: sorted_ms.iter().sum::<f64>() / sorted_ms.len() as f64,
        max: sorted_ms[sorted_ms.len() - 1],
        sorted_ms,
    }
}

/// Waits until the supervisor's socket exists.
fn wait_socket(
    supervisor: &mut SupervisorProcess,
    socket: &Path,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !socket.exists() {
        supervisor.ensure_running()?;
        if Instant::now() >= deadline {
            bail!(
                "no RPC socket at {} within {timeout:?}; supervisor log:\n{}",
                socket.display(),
                supervisor.log_tail(30)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// One connection, warm-up, then the timed calls.
async fn measure(options: ConnectOptions, tls: bool) -> anyhow::Result<Vec<Duration>> {
    let endpoint = options.endpoint.to_string();
    let mut client = Client::connect(options)
        .await
        .with_context(|| format!("connecting to {endpoint}"))?;
    if client.is_tls() != tls {
        bail!(
            "{endpoint}: TLS is {} but {} was expected (the local benchmark must run as root or \
             the supervisor's own user)",
            client.is_tls(),
            tls
        );
    }
    for _ in 0..WARMUP {
        let answer = client
            .call(METHOD, None)
            .await
            .with_context(|| format!("{METHOD} (warm-up)"))?;
        if answer.get("validator").is_none() {
            bail!("{METHOD} answered without `validator`: {answer}");
        }
    }
    let mut samples = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let started = Instant::now();
        let answer = client.call(METHOD, None).await;
        samples.push(started.elapsed());
        answer.with_context(|| format!("{METHOD} (timed)"))?;
    }
    Ok(samples)
}
