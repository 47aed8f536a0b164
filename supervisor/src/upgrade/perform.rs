//! Performing an upgrade once the old daemon is stopped, step by step,
//! each step timed into the upgrade record.
//!
//! Order, and why it differs from Cosmovisor's:
//! 1. obtain the binary (installed, or downloaded and verified) — first,
//!    so a missing or bad binary fails before anything else is touched;
//! 2. back up `data/` (unless `UNSAFE_SKIP_BACKUP`);
//! 3. `COSMOVISOR_CUSTOM_PREUPGRADE <name> <height>`;
//! 4. `<new binary> pre-upgrade` with Cosmovisor's exit codes;
//! 5. copy the plan to `upgrades/<name>/upgrade-info.json`, then switch
//!    `current` atomically — last, so every failure above leaves `current`
//!    on the old version and the node halted, never running a wrong binary.

use std::cell::RefCell;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use palisade_wire::upgrade_record::{
    DetectionSource, StepRecord, UpgradeOutcome, UpgradeRecord, UpgradeStep,
};

use crate::config::{Config, DataBackupPolicy};
use crate::node::process::{Reaper, RunAs};
use crate::node::restart_policy::ExitKind;
use crate::upgrade::data_backup::{BackupProgress, backup_data_dir};
use crate::upgrade::download::{DownloadError, DownloadLimits, Downloader};
use crate::upgrade::layout::{Layout, LayoutError, Version, upgrade_dir_name};
use crate::upgrade::plan::UpgradePlan;
use palisade_daemon::durable::{self, AtomicWrite, Existing};
use palisade_daemon::systemd::Notifier;

/// How long `pre-upgrade` and the custom script may run.
const PREUPGRADE_TIMEOUT: Duration = Duration::from_secs(600);

/// Why an upgrade could not be performed. The node stays halted on the old
/// version in every case.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeFailure {
    /// The plan's name cannot be used.
    #[error("bad upgrade plan: {0}")]
    BadPlan(String),
    /// No binary for the upgrade is installed and downloading is off.
    #[error(
        "upgrade {name:?} needs {binary}, which does not exist, and DAEMON_ALLOW_DOWNLOAD_BINARIES is off; \
         install it with `palisade-supervisor add-upgrade {name} <path-to-binary>` and the upgrade continues"
    )]
    BinaryMissing { name: String, binary: PathBuf },
    /// The upgrade directory exists but its binary is unusable.
    #[error("upgrade binary unusable: {0}")]
    BinaryUnusable(LayoutError),
    /// Auto-download failed (nothing was installed).
    #[error("download failed: {0}")]
    Download(#[from] DownloadError),
    /// Backing up `data/` failed.
    #[error("data backup failed: {0}")]
    DataBackup(String),
    /// The custom pre-upgrade script failed.
    #[error("custom pre-upgrade script {script} failed: {reason}")]
    CustomPreUpgrade { script: PathBuf, reason: String },
    /// `<binary> pre-upgrade` asked to abort (exit 30), kept asking to retry
    /// (31), or failed.
    #[error("pre-upgrade failed: {0}")]
    PreUpgrade(String),
    /// Writing the plan or switching `current` failed.
    #[error("switch failed: {0}")]
    Switch(LayoutError),
}

impl UpgradeFailure {
    /// Failures that an operator fixes by installing a binary: the
    /// supervisor waits for `upgrades/<name>/bin/<daemon>` to appear and
    /// then retries by itself.
    pub fn waits_for_binary(&self) -> bool {
        matches!(
            self,
            UpgradeFailure::BinaryMissing { .. }
                | UpgradeFailure::BinaryUnusable(_)
                | UpgradeFailure::Download(_)
        )
    }
}

/// Accumulates the record of one upgrade.
#[derive(Debug, Clone)]
pub struct RecordBuilder {
    record: UpgradeRecord,
    detected: Instant,
    excluded_from_switch: Duration,
}

impl RecordBuilder {
    pub fn new(plan: &UpgradePlan, source: DetectionSource, detected: Instant) -> RecordBuilder {
        RecordBuilder {
            record: UpgradeRecord {
                name: plan.name.clone(),
                height: plan.height,
                detected_by: source,
                detected_at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
                steps: Vec::new(),
                outcome: UpgradeOutcome::Failed("in progress".into()),
                switch_ms: None,
            },
            detected,
            excluded_from_switch: Duration::ZERO,
        }
    }

    pub fn step(&mut self, step: UpgradeStep, started: Instant, detail: impl Into<String>) {
        let duration = started.elapsed();
        let detail = detail.into();
        tracing::info!(upgrade = %self.record.name, step = ?step, duration_ms = duration.as_millis() as u64, %detail, "upgrade step done");
        self.record.steps.push(StepRecord {
            step,
            duration_ms: duration.as_millis() as u64,
            detail,
        });
    }

    /// Time that does not count towards the switch target (data backup,
    /// downloads, operator wait).
    pub fn exclude_from_switch(&mut self, duration: Duration) {
        self.excluded_from_switch += duration;
    }

    /// When the upgrade was detected.
    pub fn detected(&self) -> Instant {
        self.detected
    }

    /// Finish with the new binary running.
    pub fn completed(mut self) -> UpgradeRecord {
        let total = self.detected.elapsed();
        self.record.switch_ms =
            Some(total.saturating_sub(self.excluded_from_switch).as_millis() as u64);
        self.record.outcome = UpgradeOutcome::Completed;
        self.record
    }

    pub fn finish(mut self, outcome: UpgradeOutcome) -> UpgradeRecord {
        self.record.outcome = outcome;
        self.record
    }
}

/// Append a record to `cosmovisor/palisade-upgrades.jsonl` (and log it).
pub fn append_record(layout: &Layout, record: &UpgradeRecord) {
    let path = layout.root().join("palisade-upgrades.jsonl");
    let line = match serde_json::to_string(record) {
        Ok(line) => line,
        Err(error) => {
            tracing::error!(%error, "cannot serialise upgrade record");
            return;
        }
    };
    let result = durable::append(&path, 0o644, format!("{line}\n").as_bytes());
    match result {
        Ok(()) => tracing::info!(record = %line, "upgrade record written to {}", path.display()),
        Err(error) => {
            tracing::error!(%error, path = %path.display(), "cannot write upgrade record")
        }
    }
}

/// Everything an upgrade needs from the supervisor.
pub struct UpgradeContext<'a> {
    pub config: &'a Config,
    pub layout: &'a Layout,
    pub reaper: &'a Reaper,
    pub notifier: &'a Notifier,
    /// Told when each step begins (the supervision machine names the step
    /// in its answers).
    pub progress: &'a dyn Fn(UpgradeStep),
}

/// The version directory a plan maps to, or why it cannot be used.
pub fn plan_version(config: &Config, plan: &UpgradePlan) -> Result<Version, UpgradeFailure> {
    upgrade_dir_name(&plan.name, config.recase)
        .map(Version::Upgrade)
        .map_err(|error| UpgradeFailure::BadPlan(error.to_string()))
}

/// The name of the plan that activated the current version, from
/// `current/upgrade-info.json` (absent for genesis).
pub fn active_plan_name(layout: &Layout, version: &Version) -> Option<String> {
    let path = layout.version_dir(version).join("upgrade-info.json");
    let bytes = std::fs::read(path).ok()?;
    crate::upgrade::plan::parse_upgrade_info(&bytes)
        .ok()
        .map(|plan| plan.name)
}

/// Steps 1–5 with the old daemon already stopped. Returns the version now
/// current.
pub async fn prepare_and_switch(
    context: &UpgradeContext<'_>,
    plan: &UpgradePlan,
    record: &RefCell<RecordBuilder>,
) -> Result<Version, UpgradeFailure> {
    let config = context.config;
    let layout = context.layout;
    let version = plan_version(config, plan)?;
    let Version::Upgrade(dir_name) = &version else {
        unreachable!("plans always map to upgrades/<name>")
    };

    // 1. The binary.
    let binary = layout.binary(&version);
    if !layout.version_dir(&version).exists() {
        if !config.allow_download_binaries {
            return Err(UpgradeFailure::BinaryMissing {
                name: plan.name.clone(),
                binary,
            });
        }
        (context.progress)(UpgradeStep::Download);
        context
            .notifier
            .status(&format!("upgrade {}: downloading binary", plan.name));
        let started = Instant::now();
        let downloader = Downloader::new(DownloadLimits {
            max_artifact_bytes: config.download_max_bytes,
            overall_timeout: config.download_timeout,
            ..DownloadLimits::default()
        })?;
        let report = downloader
            .install_upgrade(
                &plan.info,
                &layout.upgrades_dir(),
                dir_name,
                &config.daemon_name,
                config.checksum_policy,
            )
            .await?;
        record.borrow_mut().step(
            UpgradeStep::Download,
            started,
            format!(
                "{} ({} bytes, {:?})",
                report.url, report.bytes, report.format
            ),
        );
        record
            .borrow_mut()
            .exclude_from_switch(report.download_duration);
        record.borrow_mut().record.steps.push(StepRecord {
            step: UpgradeStep::Verify,
            duration_ms: report.unpack_duration.as_millis() as u64,
            detail: match &report.checksum {
                Some(checksum) => format!("{}:{} verified", checksum.algorithm(), checksum.hex()),
                None => format!(
                    "no checksum required; observed {}:{}",
                    report.observed_digest.algorithm(),
                    report.observed_digest.hex()
                ),
            },
        });
    }
    layout
        .check_binary(&version)
        .map_err(UpgradeFailure::BinaryUnusable)?;

    // 2. Data backup.
    if let DataBackupPolicy::Before { backup_root } = &config.data_backup {
        (context.progress)(UpgradeStep::DataBackup);
        let started = Instant::now();
        let data_dir = config.daemon_home.join("data");
        let backup_root = backup_root.clone();
        let label = dir_name.clone();
        let notifier = context.notifier.clone();
        let name = plan.name.clone();
        let report = tokio::task::spawn_blocking(move || {
            let mut last_log = Instant::now();
            backup_data_dir(
                &data_dir,
                &backup_root,
                &label,
                SystemTime::now(),
                &mut |progress: &BackupProgress| {
                    let percent = (progress.bytes_done * 100)
                        .checked_div(progress.bytes_total)
                        .unwrap_or(100);
                    let status = format!(
                        "upgrade {name}: backing up data/ {percent}% ({}/{} MiB, {}/{} files)",
                        progress.bytes_done >> 20,
                        progress.bytes_total >> 20,
                        progress.files_done,
                        progress.files_total
                    );
                    notifier.status(&status);
                    if last_log.elapsed() >= Duration::from_secs(1)
                        || progress.bytes_done == progress.bytes_total
                    {
                        tracing::info!("{status}");
                        last_log = Instant::now();
                    }
                },
            )
        })
        .await
        .map_err(|error| UpgradeFailure::DataBackup(error.to_string()))?
        .map_err(|error| UpgradeFailure::DataBackup(error.to_string()))?;
        record.borrow_mut().exclude_from_switch(started.elapsed());
        record.borrow_mut().step(
            UpgradeStep::DataBackup,
            started,
            format!(
                "{} ({:?}, {} files, {} bytes)",
                report.path.display(),
                report.method,
                report.files,
                report.bytes
            ),
        );
    }

    // 3 + 4. Pre-upgrade hooks.
    (context.progress)(UpgradeStep::PreUpgrade);
    let started = Instant::now();
    let mut detail = Vec::new();
    if let Some(script) = &config.custom_preupgrade {
        let args = vec![
            OsString::from(&plan.name),
            OsString::from(plan.height.map(|h| h.to_string()).unwrap_or_default()),
        ];
        context.notifier.status(&format!(
            "upgrade {}: running custom pre-upgrade",
            plan.name
        ));
        let exit = context
            .reaper
            .run_to_completion(script, &args, PREUPGRADE_TIMEOUT, RunAs::Node)
            .await
            .map_err(|error| UpgradeFailure::CustomPreUpgrade {
                script: script.clone(),
                reason: error.to_string(),
            })?;
        if exit != ExitKind::Code(0) {
            return Err(UpgradeFailure::CustomPreUpgrade {
                script: script.clone(),
                reason: exit.to_string(),
            });
        }
        detail.push(format!("custom script {} ok", script.display()));
    }
    detail.push(run_preupgrade(context, &binary, config.preupgrade_max_retries).await?);
    record
        .borrow_mut()
        .step(UpgradeStep::PreUpgrade, started, detail.join("; "));

    // 5. Plan copy and atomic switch.
    (context.progress)(UpgradeStep::Switch);
    let started = Instant::now();
    write_plan_copy(&layout.version_dir(&version), plan).map_err(UpgradeFailure::Switch)?;
    let previous = layout.current_version().map_err(UpgradeFailure::Switch)?;
    layout
        .switch_current(&version)
        .map_err(UpgradeFailure::Switch)?;
    record.borrow_mut().step(
        UpgradeStep::Switch,
        started,
        format!("current: {previous} -> {version}"),
    );
    Ok(version)
}

/// `<binary> pre-upgrade`: 0 ok, 1 not implemented (fine), 30 abort,
/// 31 retry up to `max_retries` times; anything else is a failure
/// (Cosmovisor would carry on).
async fn run_preupgrade(
    context: &UpgradeContext<'_>,
    binary: &Path,
    max_retries: u32,
) -> Result<String, UpgradeFailure> {
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let exit = context
            .reaper
            .run_to_completion(
                binary,
                &[OsString::from("pre-upgrade")],
                PREUPGRADE_TIMEOUT,
                RunAs::Node,
            )
            .await
            .map_err(|error| UpgradeFailure::PreUpgrade(error.to_string()))?;
        match exit {
            ExitKind::Code(0) => return Ok(format!("pre-upgrade ok (attempt {attempt})")),
            ExitKind::Code(1) => {
                return Ok("pre-upgrade not implemented by the binary (exit 1)".into());
            }
            ExitKind::Code(30) => {
                return Err(UpgradeFailure::PreUpgrade(
                    "the new binary aborted the upgrade (exit 30)".into(),
                ));
            }
            ExitKind::Code(31) if attempt <= max_retries => {
                tracing::warn!(attempt, max_retries, "pre-upgrade asked to retry (exit 31)");
            }
            ExitKind::Code(31) => {
                return Err(UpgradeFailure::PreUpgrade(format!(
                    "still asking to retry (exit 31) after {attempt} attempts (DAEMON_PREUPGRADE_MAX_RETRIES={max_retries})"
                )));
            }
            other => {
                return Err(UpgradeFailure::PreUpgrade(format!(
                    "{} pre-upgrade failed with {other}",
                    binary.display()
                )));
            }
        }
    }
}

/// `upgrades/<name>/upgrade-info.json`, written atomically.
fn write_plan_copy(dir: &Path, plan: &UpgradePlan) -> Result<(), LayoutError> {
    let json = serde_json::json!({
        "name": plan.name,
        "height": plan.height,
        "info": plan.info,
    });
    let path = dir.join("upgrade-info.json");
    AtomicWrite::new(0o644, Existing::Replace).write(&path, json.to_string().as_bytes())?;
    Ok(())
}
