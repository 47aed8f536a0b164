//! `upgrade_switch_ms`: how long the supervisor takes from detecting an
//! upgrade to having the new binary running (data backup skipped).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use palisade_wire::upgrade_record::{UpgradeOutcome, UpgradeRecord};

use crate::fixture::{Binaries, Fixture};
use crate::{Measured, result};

const BLOCK_TIME: Duration = Duration::from_millis(200);
/// The plan is scheduled this many blocks above the current height.
const BLOCKS_AHEAD: u64 = 5;
const TIMEOUT: Duration = Duration::from_secs(30);

pub fn run(bins: &Binaries, runs: usize) -> anyhow::Result<Measured> {
    if runs == 0 {
        bail!("--upgrade-runs must be at least 1");
    }
    let mut samples = Vec::with_capacity(runs);
    for index in 0..runs {
        let (switch_ms, detail) =
            one_upgrade(bins).with_context(|| format!("upgrade run {}/{runs}", index + 1))?;
        eprintln!(
            "  upgrade_switch_ms run {}/{runs}: {switch_ms} ms ({detail})",
            index + 1
        );
        samples.push(switch_ms as f64);
    }
    samples.sort_by(f64::total_cmp);
    let median = median(&samples);
    Ok(Measured {
        result: result("upgrade_switch_ms", median, "ms", Some(200.0)),
        detail: format!(
            "median of {runs}; min {} max {} ms",
            samples[0],
            samples[samples.len() - 1]
        ),
    })
}

fn median(sorted: &[f64]) -> f64 {
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

/// One fresh home: chain, `add-upgrade v2`, supervisor, plan a few blocks
/// ahead, wait for the record line. Returns `switch_ms` and a note on how it
/// was detected, the plan height and the recorded steps.
fn one_upgrade(bins: &Binaries) -> anyhow::Result<(u64, String)> {
    let fixture = Fixture::start(bins, BLOCK_TIME)?;
    let v2 = fixture.version_binary("v2", &["v2"])?;
    fixture.add_upgrade("v2", &v2)?;
    let mut supervisor = fixture.run_supervisor(&[("UNSAFE_SKIP_BACKUP", "true")])?;
    fixture.wait_signing(&mut supervisor, 2, TIMEOUT)?;
    let height = fixture.network.height()? + BLOCKS_AHEAD;
    fixture.network.schedule_upgrade("v2", height, "")?;

    let records = fixture.upgrade_records_path();
    let deadline = Instant::now() + TIMEOUT;
    let record = loop {
        let text = std::fs::read_to_string(&records).unwrap_or_default();
        // Only complete lines count: the file may be caught mid-append.
        if let Some(line) = text.split_inclusive('\n').find(|l| l.ends_with('\n')) {
            let record: UpgradeRecord = serde_json::from_str(line.trim_end())
                .with_context(|| format!("parsing {}: {line}", records.display()))?;
            break record;
        }
        supervisor.ensure_running()?;
        if Instant::now() >= deadline {
            bail!(
                "no upgrade record in {} within {TIMEOUT:?}; supervisor log:\n{}",
                records.display(),
                supervisor.log_tail(30)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if record.outcome != UpgradeOutcome::Completed {
        bail!(
            "upgrade did not complete: {:?}; supervisor log:\n{}",
            record.outcome,
            supervisor.log_tail(30)
        );
    }
    if record.name != "v2" || record.height != Some(height) {
        bail!("unexpected upgrade record {record:?} (expected v2 at {height})");
    }
    let switch_ms = record
        .switch_ms
        .context("completed upgrade record has no switch_ms")?;
    let detected_by = serde_json::to_value(record.detected_by)?
        .as_str()
        .map_or_else(|| format!("{:?}", record.detected_by), str::to_owned);
    let steps: Vec<String> = record
        .steps
        .iter()
        .map(|step| {
            let name = serde_json::to_value(step.step)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| format!("{:?}", step.step));
            format!("{name} {}ms", step.duration_ms)
        })
        .collect();
    supervisor.stop()?;
    Ok((
        switch_ms,
        format!(
            "height {height}, detected by {detected_by}; steps: {}",
            steps.join(", ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[1.0, 2.0, 9.0]), 2.0);
        assert_eq!(median(&[1.0, 2.0, 4.0, 9.0]), 3.0);
    }
}
