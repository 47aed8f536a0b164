//! When to back up: after every watermark increase, within one debounce
//! interval, coalescing bursts (propose → prevote → precommit) into one
//! backup of the latest watermark. Pure: the caller supplies `now` and
//! sleeps until the returned deadline.
//!
//! The deadline is fixed by the first change after a backup and is not
//! pushed back by later changes, so a steady stream of votes cannot starve
//! backups; and since every deadline is at least one debounce after the
//! change that set it, which comes after the previous backup, backups are
//! never closer together than the debounce.

use std::time::{Duration, Instant};

use crate::sign_state::Watermark;

/// Debouncer for "back up on every watermark change".
#[derive(Debug, Clone)]
pub struct BackupScheduler {
    debounce: Duration,
    /// Highest watermark handed out by [`BackupScheduler::due`].
    last_backed_up: Option<Watermark>,
    /// Highest watermark seen and not yet handed out.
    pending: Option<Watermark>,
    /// When `pending` is to be backed up.
    deadline: Option<Instant>,
}

impl BackupScheduler {
    /// A scheduler that waits `debounce` after a change (200 ms–1 s suits
    /// block times of a few seconds: well within one block).
    pub fn new(debounce: Duration) -> BackupScheduler {
        BackupScheduler {
            debounce,
            last_backed_up: None,
            pending: None,
            deadline: None,
        }
    }

    /// Records an observed watermark. Returns when the next backup is due,
    /// or `None` when nothing is pending (the watermark is not above what
    /// was already backed up or scheduled). Lower watermarks are ignored:
    /// a backup never goes backwards.
    pub fn on_watermark(&mut self, watermark: Watermark, now: Instant) -> Option<Instant> {
        let known = self.pending.max(self.last_backed_up);
        if known.is_none_or(|known| watermark > known) {
            self.pending = Some(watermark);
            if self.deadline.is_none() {
                self.deadline = Some(now + self.debounce);
            }
        }
        self.deadline
    }

    /// The pending backup's deadline, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// If a backup is due at `now`, returns the watermark to back up (the
    /// latest seen) and marks it as handed out.
    pub fn due(&mut self, now: Instant) -> Option<Watermark> {
        let deadline = self.deadline?;
        if now < deadline {
            return None;
        }
        let watermark = self.pending.take()?;
        self.deadline = None;
        self.last_backed_up = Some(watermark);
        Some(watermark)
    }

    /// Reports that the backup of `watermark` failed: it is pending again
    /// (unless a newer one already is) and retried one debounce from `now`.
    pub fn backup_failed(&mut self, watermark: Watermark, now: Instant) -> Instant {
        if self.last_backed_up == Some(watermark) {
            self.last_backed_up = None;
        }
        self.pending = self.pending.max(Some(watermark));
        *self.deadline.get_or_insert(now + self.debounce)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign_state::Step;

    fn wm(height: u64, round: u32, step: Step) -> Watermark {
        Watermark {
            height,
            round,
            step,
        }
    }

    const DEBOUNCE: Duration = Duration::from_millis(300);

    #[test]
    fn a_burst_yields_one_backup_of_the_latest_watermark() {
        let start = Instant::now();
        let mut scheduler = BackupScheduler::new(DEBOUNCE);
        let deadline = scheduler.on_watermark(wm(10, 0, Step::Propose), start);
        assert_eq!(deadline, Some(start + DEBOUNCE));
        let ms = Duration::from_millis;
        assert_eq!(
            scheduler.on_watermark(wm(10, 0, Step::Prevote), start + ms(50)),
            deadline,
            "later changes do not push the deadline back"
        );
        scheduler.on_watermark(wm(10, 0, Step::Precommit), start + ms(100));
        assert_eq!(scheduler.due(start + ms(299)), None);
        assert_eq!(
            scheduler.due(start + DEBOUNCE),
            Some(wm(10, 0, Step::Precommit))
        );
        assert_eq!(scheduler.due(start + ms(1000)), None, "only one backup");
        assert_eq!(scheduler.next_deadline(), None);
    }

    #[test]
    fn unchanged_or_lower_watermarks_schedule_nothing() {
        let start = Instant::now();
        let mut scheduler = BackupScheduler::new(DEBOUNCE);
        scheduler.on_watermark(wm(5, 0, Step::Precommit), start);
        assert!(scheduler.due(start + DEBOUNCE).is_some());
        let later = start + Duration::from_secs(1);
        assert_eq!(
            scheduler.on_watermark(wm(5, 0, Step::Precommit), later),
            None
        );
        assert_eq!(
            scheduler.on_watermark(wm(4, 9, Step::Precommit), later),
            None
        );
        assert_eq!(scheduler.due(later + DEBOUNCE), None);
    }

    #[test]
    fn a_steady_stream_is_backed_up_once_per_debounce_and_never_starved() {
        let start = Instant::now();
        let mut scheduler = BackupScheduler::new(DEBOUNCE);
        let mut backups = Vec::new();
        // A vote every 50 ms for 3 s, polling at every event.
        for tick in 0..60u64 {
            let now = start + Duration::from_millis(50 * tick);
            let step = [Step::Propose, Step::Prevote, Step::Precommit][(tick % 3) as usize];
            scheduler.on_watermark(wm(100 + tick / 3, 0, step), now);
            if let Some(watermark) = scheduler.due(now) {
                backups.push((now, watermark));
            }
        }
        assert!(backups.len() >= 8, "backups keep happening: {backups:?}");
        for pair in backups.windows(2) {
            assert!(pair[1].0 - pair[0].0 >= DEBOUNCE, "too close: {pair:?}");
            assert!(pair[1].1 > pair[0].1, "watermarks increase: {pair:?}");
        }
    }

    #[test]
    fn a_failed_backup_is_retried_and_a_newer_watermark_wins() {
        let start = Instant::now();
        let mut scheduler = BackupScheduler::new(DEBOUNCE);
        scheduler.on_watermark(wm(7, 0, Step::Prevote), start);
        let handed_out = scheduler.due(start + DEBOUNCE).unwrap();
        let failed_at = start + DEBOUNCE + Duration::from_millis(10);
        let retry = scheduler.backup_failed(handed_out, failed_at);
        assert_eq!(retry, failed_at + DEBOUNCE);
        assert_eq!(scheduler.due(retry), Some(wm(7, 0, Step::Prevote)));

        scheduler.on_watermark(wm(8, 0, Step::Prevote), retry);
        let newer = scheduler.due(retry + DEBOUNCE).unwrap();
        scheduler.on_watermark(wm(8, 0, Step::Precommit), retry + DEBOUNCE);
        scheduler.backup_failed(newer, retry + DEBOUNCE);
        assert_eq!(
            scheduler.due(retry + DEBOUNCE * 2),
            Some(wm(8, 0, Step::Precommit))
        );
    }

    #[test]
    fn zero_debounce_backs_up_immediately() {
        let now = Instant::now();
        let mut scheduler = BackupScheduler::new(Duration::ZERO);
        assert_eq!(scheduler.on_watermark(wm(1, 0, Step::None), now), Some(now));
        assert_eq!(scheduler.due(now), Some(wm(1, 0, Step::None)));
    }
}
