//! `supervisor_idle_rss_mib` and `supervisor_idle_cpu_pct`: the supervisor's
//! own footprint while it supervises a signing validator (the daemon's
//! resources are not counted).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::fixture::{Binaries, Fixture};
use crate::{Measured, result, round2};

/// Block time of the chain during the idle measurement. Real Cosmos chains
/// produce blocks every 1–6 s; 1 s keeps the daemon's log output (which the
/// supervisor reads) on the busy side.
const BLOCK_TIME: Duration = Duration::from_secs(1);

pub struct IdleFigures {
    pub rss: Measured,
    pub cpu: Measured,
}

pub fn run(bins: &Binaries, window: Duration) -> anyhow::Result<IdleFigures> {
    let fixture = Fixture::start(bins, BLOCK_TIME)?;
    let mut supervisor = fixture.run_supervisor(&[])?;
    fixture.wait_signing(&mut supervisor, 2, Duration::from_secs(30))?;
    let pid = supervisor.pid();
    let ticks_per_second = clock_ticks_per_second()?;
    let signed_before = fixture.signed_heights()?;

    let started = Instant::now();
    let cpu_start = cpu_ticks(pid)?;
    let mut max_rss_kib = supervisor.status_kib("VmRSS")?;
    while started.elapsed() < window {
        std::thread::sleep(Duration::from_millis(500).min(window));
        supervisor.ensure_running()?;
        max_rss_kib = max_rss_kib.max(supervisor.status_kib("VmRSS")?);
    }
    let cpu_end = cpu_ticks(pid)?;
    let elapsed = started.elapsed().as_secs_f64();
    let rss_end_kib = supervisor.status_kib("VmRSS")?;
    max_rss_kib = max_rss_kib.max(rss_end_kib);

    let signed = fixture.signed_heights()? - signed_before;
    if signed == 0 {
        bail!(
            "the validator stopped signing during the measurement; supervisor log:\n{}",
            supervisor.log_tail(30)
        );
    }
    supervisor.stop()?;

    let cpu_seconds = (cpu_end - cpu_start) as f64 / ticks_per_second;
    let cpu_pct = cpu_seconds / elapsed * 100.0;
    let rss_mib = rss_end_kib as f64 / 1024.0;
    Ok(IdleFigures {
        rss: Measured {
            result: result(
                "supervisor_idle_rss_mib",
                round2(rss_mib),
                "MiB",
                Some(20.0),
            ),
            detail: format!(
                "VmRSS at end of {elapsed:.1} s window; max {:.2} MiB",
                max_rss_kib as f64 / 1024.0
            ),
        },
        cpu: Measured {
            result: result("supervisor_idle_cpu_pct", round2(cpu_pct), "pct", Some(1.0)),
            detail: format!(
                "{cpu_seconds:.2} s CPU over {elapsed:.1} s (utime+stime, one core = 100); {signed} heights signed"
            ),
        },
    })
}

/// `utime + stime` of `pid` (all its threads, not its children), in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat).with_context(|| format!("malformed /proc/{pid}/stat: {stat}"))
}

fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // Fields after the parenthesised command name start at field 3 (state);
    // utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_second() -> anyhow::Result<f64> {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks <= 0 {
        bail!("sysconf(_SC_CLK_TCK) failed");
    }
    Ok(ticks as f64)
}

#[cfg(test)]
mod tests {
    use super::parse_cpu_ticks;

    #[test]
    fn stat_fields() {
        let stat =
            "1234 (palisade (sup)) S 1 1234 1234 0 -1 4194560 100 0 0 0 17 5 0 0 20 0 3 0 100 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(22));
    }
}
