//! Following `priv_validator_state.json` while gaiad runs, woken by
//! [`crate::file_watch::FileWatch`] (inotify on the directory, polling as
//! the safety net).
//!
//! The follower yields only increases. An unchanged file is ignored; a
//! half-written or unparsable one is retried on the next event or tick; a
//! watermark lower than the highest seen (which must never happen) is
//! logged once per occurrence and never yielded: the highest is kept.

use std::path::PathBuf;
use std::time::Duration;

use crate::file_watch::FileWatch;

use super::Watermark;
use super::file::SignState;

pub struct StateFollower {
    path: PathBuf,
    watch: FileWatch,
    highest: Option<Watermark>,
    /// Set once a decrease has been logged; cleared when the file is back
    /// at or above the highest, so each decrease is logged once.
    warned_decrease: bool,
}

impl StateFollower {
    /// Follow `path`. Nothing is read yet: the first readable watermark is
    /// yielded by [`StateFollower::next`] as an increase from nothing,
    /// unless a baseline is set with [`StateFollower::with_baseline`].
    pub fn new(path: impl Into<PathBuf>, poll_interval: Duration) -> StateFollower {
        let path = path.into();
        StateFollower {
            watch: FileWatch::new(&path, poll_interval, "sign state"),
            path,
            highest: None,
            warned_decrease: false,
        }
    }

    /// Start from a known watermark (e.g. the one the start rule chose):
    /// only watermarks above it are yielded, and one below it is logged.
    pub fn with_baseline(mut self, watermark: Watermark) -> StateFollower {
        self.highest = Some(watermark);
        self
    }

    /// The highest watermark seen (or the baseline), if any.
    pub fn current(&self) -> Option<Watermark> {
        self.highest
    }

    /// Wait until the file's watermark rises above the highest seen, and
    /// return the new one. Cancel-safe.
    pub async fn next(&mut self) -> Watermark {
        loop {
            if let Some(watermark) = self.check() {
                return watermark;
            }
            self.watch.changed().await;
        }
    }

    fn check(&mut self) -> Option<Watermark> {
        let bytes = std::fs::read(&self.path).ok()?;
        let watermark = match SignState::parse(&bytes) {
            Ok(state) => state.watermark(),
            Err(error) => {
                // Half-written or being replaced: try again on the next event.
                tracing::debug!(path = %self.path.display(), %error, "sign state not readable yet");
                return None;
            }
        };
        match self.highest {
            Some(highest) if watermark < highest => {
                if !self.warned_decrease {
                    self.warned_decrease = true;
                    tracing::warn!(
                        path = %self.path.display(),
                        file = %watermark,
                        highest = %highest,
                        "the sign state went DOWN (from {highest} to {watermark}); this must never \
                         happen; keeping the highest"
                    );
                }
                None
            }
            Some(highest) if watermark == highest => {
                self.warned_decrease = false;
                None
            }
            _ => {
                self.warned_decrease = false;
                self.highest = Some(watermark);
                Some(watermark)
            }
        }
    }
}
