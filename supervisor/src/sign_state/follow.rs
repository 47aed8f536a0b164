//! Following `priv_validator_state.json` while gaiad runs: inotify on the
//! file's directory for a prompt reaction (CometBFT replaces the file with
//! temp+rename), plus polling as the safety net (inotify can be
//! unavailable, out of watches, or the directory may not exist yet) —
//! the same structure as [`crate::upgrade_watch`].
//!
//! The follower yields only increases. An unchanged file is ignored; a
//! half-written or unparsable one is retried on the next event or tick; a
//! watermark lower than the highest seen (which must never happen) is
//! logged once per occurrence and never yielded: the highest is kept.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use inotify::{EventStream, Inotify, WatchMask};

use super::Watermark;
use super::file::SignState;

pub struct StateFollower {
    path: PathBuf,
    poll: tokio::time::Interval,
    events: Option<EventStream<Vec<u8>>>,
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
        let events = path.parent().and_then(|dir| match watch_directory(dir) {
            Ok(stream) => Some(stream),
            Err(error) => {
                tracing::info!(dir = %dir.display(), %error, "inotify unavailable; polling the sign state only");
                None
            }
        });
        let mut poll = tokio::time::interval(poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        StateFollower {
            path,
            poll,
            events,
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
            match &mut self.events {
                Some(stream) => {
                    tokio::select! {
                        event = stream.next() => {
                            if event.is_none() || matches!(event, Some(Err(_))) {
                                tracing::warn!("inotify stream ended; polling the sign state only");
                                self.events = None;
                            }
                        }
                        _ = self.poll.tick() => {}
                    }
                }
                None => {
                    self.poll.tick().await;
                }
            }
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

fn watch_directory(dir: &Path) -> std::io::Result<EventStream<Vec<u8>>> {
    let inotify = Inotify::init()?;
    inotify.watches().add(
        dir,
        WatchMask::CLOSE_WRITE | WatchMask::MOVED_TO | WatchMask::CREATE | WatchMask::MODIFY,
    )?;
    inotify.into_event_stream(vec![0u8; 4096])
}
