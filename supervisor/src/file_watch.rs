//! "Something about this file may have changed": inotify on the file's
//! directory for a prompt reaction (writers such as CometBFT and the SDK
//! replace files with temp + rename, so the directory is watched, not the
//! file), plus polling as the safety net (inotify can be unavailable, out
//! of watches, or the directory may not exist yet).
//!
//! Used by [`crate::upgrade::watch`] and [`crate::sign_state::StateFollower`],
//! which decide what a change means.

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use inotify::{EventStream, Inotify, WatchMask};

pub struct FileWatch {
    /// For log lines: what is being watched.
    what: &'static str,
    poll: tokio::time::Interval,
    events: Option<EventStream<Vec<u8>>>,
}

impl FileWatch {
    pub fn new(path: &Path, poll_interval: Duration, what: &'static str) -> FileWatch {
        let events = path.parent().and_then(|dir| match watch_directory(dir) {
            Ok(stream) => Some(stream),
            Err(error) => {
                tracing::info!(dir = %dir.display(), %error, "inotify unavailable; polling the {what} only");
                None
            }
        });
        let mut poll = tokio::time::interval(poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        FileWatch { what, poll, events }
    }

    /// Wait for the next inotify event in the directory or the next poll
    /// tick, whichever comes first. Cancel-safe.
    pub async fn changed(&mut self) {
        match &mut self.events {
            Some(stream) => {
                tokio::select! {
                    event = stream.next() => {
                        if event.is_none() || matches!(event, Some(Err(_))) {
                            tracing::warn!("inotify stream ended; polling the {} only", self.what);
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

fn watch_directory(dir: &Path) -> std::io::Result<EventStream<Vec<u8>>> {
    let inotify = Inotify::init()?;
    inotify.watches().add(
        dir,
        WatchMask::CLOSE_WRITE | WatchMask::MOVED_TO | WatchMask::CREATE | WatchMask::MODIFY,
    )?;
    inotify.into_event_stream(vec![0u8; 4096])
}
