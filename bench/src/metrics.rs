//! `metrics_scrape_ms_p50` and `metrics_scrape_ms_p99`: how long the
//! supervisor's `/metrics` takes to answer — the render of every catalogue
//! metric from the board, the sign-state file, the tunnels and the RPC
//! counters — as a local Prometheus scrape sees it.
//!
//! A chain with 1 s blocks and the supervisor running simd (no vault, so
//! the validator's address comes from the node's key file and the
//! signed/missed counters run), `[metrics] listen` on a free loopback port.
//! Once the validator signs: 20 warm-up scrapes, then [`SCRAPES`] timed
//! ones, each a new TCP connection (the endpoint closes every connection,
//! as Prometheus's scrape then reconnects) from connect to the last byte.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use palisade_testkit::prometheus::http_get;

use crate::fixture::{Binaries, Fixture};
use crate::{Measured, result, round2};

/// Timed scrapes.
pub const SCRAPES: usize = 1000;
const WARM_UP: usize = 20;
const BLOCK_TIME: Duration = Duration::from_secs(1);
/// What Prometheus 2.x sends.
const ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

pub fn run(bins: &Binaries) -> anyhow::Result<(Measured, Measured)> {
    let fixture = Fixture::start(bins, BLOCK_TIME)?;
    let port = palisade_simchain::testkit::free_port();
    let listen: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let config = fixture.dir.path().join("palisade.toml");
    std::fs::write(&config, format!("[metrics]\nlisten = \"{listen}\"\n"))
        .context("writing the supervisor's configuration")?;
    let mut supervisor =
        fixture.run_supervisor(&[("PALISADE_CONFIG", config.to_str().context("path")?)])?;
    fixture.wait_signing(&mut supervisor, 2, Duration::from_secs(30))?;

    let scrape = || -> anyhow::Result<(Duration, usize)> {
        let started = Instant::now();
        let (status, body) = http_get(listen, "/metrics", ACCEPT)
            .map_err(|e| anyhow::anyhow!("scraping {listen}: {e}"))?;
        let elapsed = started.elapsed();
        if status != 200 || !body.contains("palisade_validator_signed_blocks_total") {
            bail!("{listen}/metrics answered {status}: {body}");
        }
        Ok((elapsed, body.len()))
    };
    for _ in 0..WARM_UP {
        scrape()?;
    }
    let mut times = Vec::with_capacity(SCRAPES);
    let mut bytes = 0;
    for _ in 0..SCRAPES {
        let (elapsed, size) = scrape()?;
        times.push(elapsed);
        bytes = size;
    }
    supervisor.ensure_running()?;
    supervisor.stop()?;
    times.sort();
    let ms = |d: Duration| round2(d.as_secs_f64() * 1000.0);
    let p50 = times[times.len() / 2];
    let p99 = times[times.len() * 99 / 100];
    let detail = format!(
        "{SCRAPES} scrapes of {bytes} bytes (OpenMetrics), each a new connection; max {} ms",
        ms(*times.last().expect("scrapes"))
    );
    Ok((
        Measured {
            result: result("metrics_scrape_ms_p50", ms(p50), "ms", None),
            detail: detail.clone(),
        },
        Measured {
            result: result("metrics_scrape_ms_p99", ms(p99), "ms", Some(10.0)),
            detail,
        },
    ))
}
