//! `rpc_local_p50_ms` / `rpc_local_p99_ms`: round trips of the control RPC
//! on the local Unix socket, as a trusted local user (plaintext, no login).
//!
//! The real `palisade-supervisor run` supervises a signing validator on the
//! simulated chain (no vault), with `[rpc] socket` in the fixture's temporary
//! directory. One connection is opened with `palisade-ctl`'s client library
//! (`Client::connect`), then [`WARMUP`] calls of [`METHOD`] are made and
//! [`RUNS`] more are timed, each from before the request line is encoded and
//! written until the response line has been read and parsed
//! (`Client::call`). No peer: there is no other implementation of this RPC.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use palisade_ctl::client::{Client, ConnectOptions, TlsPolicy};

use crate::fixture::{Binaries, Fixture, SupervisorProcess};
use crate::{Measured, result};

pub const P50: &str = "rpc_local_p50_ms";
pub const P99: &str = "rpc_local_p99_ms";

/// The method timed: read-only, answered from the supervisor's state.
const METHOD: &str = "status";
const WARMUP: usize = 100;
const RUNS: usize = 2000;
/// DESIGN target for the local socket.
const TARGET_P99_MS: f64 = 1.0;
/// Blocks as on the idle benchmark: the supervisor has daemon output to read
/// while it answers.
const BLOCK_TIME: Duration = Duration::from_secs(1);

pub fn run(bins: &Binaries) -> anyhow::Result<(Measured, Measured)> {
    let fixture = Fixture::start(bins, BLOCK_TIME)?;
    // Short and absolute (at most 107 bytes): the fixture's directory is in /tmp.
    let socket = fixture.dir.path().join("run").join("supervisor.sock");
    let config = fixture.dir.path().join("palisade.toml");
    std::fs::write(
        &config,
        format!("[rpc]\nsocket = {socket:?}\nname = \"val1\"\n"),
    )
    .with_context(|| format!("writing {}", config.display()))?;
    let config_text = config
        .to_str()
        .context("the fixture's path is not UTF-8")?
        .to_owned();
    let mut supervisor = fixture.run_supervisor(&[("PALISADE_CONFIG", &config_text)])?;
    fixture.wait_signing(&mut supervisor, 1, Duration::from_secs(30))?;
    wait_socket(&mut supervisor, &socket, Duration::from_secs(10))?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let samples = runtime.block_on(measure(&socket))?;
    supervisor.ensure_running()?;
    supervisor.stop()?;

    let mut sorted = samples;
    sorted.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let percentile = |p: f64| -> f64 {
        let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        (ms(sorted[index]) * 1000.0).round() / 1000.0
    };
    let (p50, p99) = (percentile(0.50), percentile(0.99));
    let mean = sorted.iter().map(|d| ms(*d)).sum::<f64>() / sorted.len() as f64;
    let over = sorted.iter().filter(|d| ms(**d) > TARGET_P99_MS).count();
    let detail = format!(
        "method `{METHOD}`, {RUNS} calls after {WARMUP} warm-up on one plaintext connection \
         (palisade-ctl client, trusted local uid {}); min {:.3} ms, mean {mean:.3} ms, \
         max {:.3} ms, {over} over {TARGET_P99_MS} ms",
        nix::unistd::getuid(),
        ms(sorted[0]),
        ms(sorted[sorted.len() - 1]),
    );
    Ok((
        Measured {
            result: result(P50, p50, "ms", None),
            detail: detail.clone(),
        },
        Measured {
            result: result(P99, p99, "ms", Some(TARGET_P99_MS)),
            detail,
        },
    ))
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
async fn measure(socket: &Path) -> anyhow::Result<Vec<Duration>> {
    let mut client = Client::connect(ConnectOptions {
        socket: PathBuf::from(socket),
        tls: TlsPolicy::WhenRequired,
        pin: None,
        operator: None,
        call_timeout: Duration::from_secs(5),
    })
    .await
    .with_context(|| format!("connecting to {}", socket.display()))?;
    if client.is_tls() {
        bail!("the supervisor required TLS: the benchmark must run as root or its own user");
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
