//! Watches `data/upgrade-info.json`, woken by
//! [`crate::file_watch::FileWatch`] (inotify on the data directory, polling
//! at `DAEMON_POLL_INTERVAL` as the safety net).
//!
//! The watcher yields a plan whenever the file's *contents* change to a
//! complete plan. A half-written or empty file is retried on the next
//! event or tick; a complete but invalid file is reported once per
//! distinct content. Whether a plan is new (vs. already applied) is the
//! caller's decision.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::file_watch::FileWatch;

use crate::upgrade::plan::{PlanError, UpgradePlan, parse_upgrade_info};

/// What a read of the file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileState {
    Absent,
    Plan(UpgradePlan),
    Incomplete,
    Invalid(String),
}

/// Read and parse the file once.
pub fn read_plan_file(path: &Path) -> FileState {
    match std::fs::read(path) {
        Ok(bytes) => match parse_upgrade_info(&bytes) {
            Ok(plan) => FileState::Plan(plan),
            Err(PlanError::Incomplete) => FileState::Incomplete,
            Err(PlanError::Invalid(reason)) => FileState::Invalid(reason),
        },
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => FileState::Absent,
        Err(error) => FileState::Invalid(format!("cannot read {}: {error}", path.display())),
    }
}

/// A change worth telling the caller about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// A complete plan that differs from the last one yielded.
    Plan(UpgradePlan),
    /// A complete file that is not a valid plan (reported once per content).
    Invalid(String),
    /// The file has stayed incomplete for a while (reported once).
    StuckIncomplete,
}

pub struct UpgradeFileWatcher {
    path: PathBuf,
    watch: FileWatch,
    last_contents: Option<Vec<u8>>,
    incomplete_since: Option<Instant>,
    reported_stuck: bool,
}

impl UpgradeFileWatcher {
    pub fn new(path: PathBuf, poll_interval: Duration) -> UpgradeFileWatcher {
        UpgradeFileWatcher {
            watch: FileWatch::new(&path, poll_interval, "upgrade plan"),
            path,
            last_contents: None,
            incomplete_since: None,
            reported_stuck: false,
        }
    }

    /// Forget what was seen, so the current file is yielded again (after
    /// an upgrade, or when the daemon restarts).
    pub fn reset(&mut self) {
        self.last_contents = None;
    }

    /// Wait for the next change. Cancel-safe.
    pub async fn next(&mut self) -> WatchEvent {
        loop {
            if let Some(event) = self.check() {
                return event;
            }
            self.watch.changed().await;
        }
    }

    fn check(&mut self) -> Option<WatchEvent> {
        let contents = std::fs::read(&self.path).ok();
        if contents == self.last_contents {
            return self.stuck_check();
        }
        let Some(bytes) = contents else {
            self.last_contents = None;
            self.incomplete_since = None;
            return None;
        };
        match parse_upgrade_info(&bytes) {
            Ok(plan) => {
                self.last_contents = Some(bytes);
                self.incomplete_since = None;
                Some(WatchEvent::Plan(plan))
            }
            Err(PlanError::Incomplete) => {
                // Do not remember it: the next read compares against the
                // last complete contents and re-parses.
                self.incomplete_since.get_or_insert_with(Instant::now);
                self.stuck_check()
            }
            Err(PlanError::Invalid(reason)) => {
                self.last_contents = Some(bytes);
                self.incomplete_since = None;
                Some(WatchEvent::Invalid(reason))
            }
        }
    }

    fn stuck_check(&mut self) -> Option<WatchEvent> {
        match self.incomplete_since {
            Some(since) if since.elapsed() > Duration::from_secs(5) && !self.reported_stuck => {
                self.reported_stuck = true;
                Some(WatchEvent::StuckIncomplete)
            }
            Some(_) => None,
            None => {
                self.reported_stuck = false;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn yields_plans_on_change_and_tolerates_partial_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upgrade-info.json");
        let mut watcher = UpgradeFileWatcher::new(path.clone(), Duration::from_millis(20));

        std::fs::write(&path, br#"{"name":"v2","hei"#).unwrap();
        let pending = tokio::time::timeout(Duration::from_millis(200), watcher.next()).await;
        assert!(
            pending.is_err(),
            "a partial file must not yield: {pending:?}"
        );

        std::fs::write(&path, br#"{"name":"v2","height":10,"info":""}"#).unwrap();
        let event = tokio::time::timeout(Duration::from_secs(2), watcher.next())
            .await
            .unwrap();
        assert!(
            matches!(event, WatchEvent::Plan(ref plan) if plan.name == "v2"),
            "{event:?}"
        );

        // Same contents rewritten: nothing new.
        std::fs::write(&path, br#"{"name":"v2","height":10,"info":""}"#).unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(200), watcher.next())
                .await
                .is_err()
        );

        std::fs::write(&path, br#"{"name":"v3","height":0}"#).unwrap();
        let event = tokio::time::timeout(Duration::from_secs(2), watcher.next())
            .await
            .unwrap();
        assert!(
            matches!(event, WatchEvent::Invalid(ref reason) if reason.contains("positive")),
            "{event:?}"
        );
    }

    #[tokio::test]
    async fn polling_works_without_a_data_dir_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let path = data.join("upgrade-info.json");
        let mut watcher = UpgradeFileWatcher::new(path.clone(), Duration::from_millis(20));
        std::fs::create_dir(&data).unwrap();
        std::fs::write(&path, br#"{"name":"late","height":3}"#).unwrap();
        let event = tokio::time::timeout(Duration::from_secs(2), watcher.next())
            .await
            .unwrap();
        assert!(matches!(event, WatchEvent::Plan(ref plan) if plan.name == "late"));
    }
}
