//! The automatic trigger (`[eip.auto]`): when one bastion's tunnel stays
//! down for `after` while another bastion's is up — what a flood of that
//! bastion's address looks like from the validator — it asks for a
//! rotation of that bastion. Never two rotations at once (the machine
//! refuses), never while the vault is locked (the sampler does not ask
//! then), at most `max-per-hour` in any hour, and not again for the same
//! bastion within `cooldown`. Each request carries its reason, which the
//! supervisor logs.
//!
//! [`Trigger`] is the decision, pure over the instants it is given;
//! [`spawn`] samples the tunnels every second and feeds it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::EipService;
use crate::config::EipAuto;

/// How often the tunnels are looked at.
const SAMPLE: Duration = Duration::from_secs(1);

/// The decision.
#[derive(Debug, Clone)]
pub struct Trigger {
    settings: EipAuto,
    down_since: BTreeMap<String, Instant>,
    /// Rotations asked for: when, and of which bastion.
    history: Vec<(Instant, String)>,
}

impl Trigger {
    pub fn new(settings: EipAuto) -> Trigger {
        Trigger {
            settings,
            down_since: BTreeMap::new(),
            history: Vec::new(),
        }
    }

    /// Takes the tunnels' states at `now` (`(bastion, up)` for every
    /// bastion; `rotatable` those with an `eip`) and says which bastion to
    /// rotate and why, if one. The answer is recorded as a rotation asked
    /// for (for the cooldown and the hourly bound).
    pub fn observe(
        &mut self,
        now: Instant,
        states: &[(String, bool)],
        rotatable: &[String],
    ) -> Option<(String, String)> {
        // The clock of a bastion runs only while another bastion is up: with
        // every tunnel down the validator's own link is the suspect.
        if !states.iter().any(|(_, up)| *up) {
            self.down_since.clear();
            return None;
        }
        for (bastion, up) in states {
            if *up {
                self.down_since.remove(bastion);
            } else {
                self.down_since.entry(bastion.clone()).or_insert(now);
            }
        }
        let hour = Duration::from_secs(3600);
        self.history.retain(|(at, _)| {
            now.saturating_duration_since(*at) < hour.max(self.settings.cooldown)
        });
        let in_last_hour = self
            .history
            .iter()
            .filter(|(at, _)| now.saturating_duration_since(*at) < hour)
            .count();
        if in_last_hour >= self.settings.max_per_hour as usize {
            return None;
        }
        for (bastion, up) in states {
            if *up || !rotatable.contains(bastion) {
                continue;
            }
            let Some(since) = self.down_since.get(bastion).copied() else {
                continue;
            };
            let down_for = now.saturating_duration_since(since);
            if down_for < self.settings.after {
                continue;
            }
            let others_up: Vec<&str> = states
                .iter()
                .filter(|(other, up)| other != bastion && *up)
                .map(|(other, _)| other.as_str())
                .collect();
            let cooling = self.history.iter().any(|(at, rotated)| {
                rotated == bastion && now.saturating_duration_since(*at) < self.settings.cooldown
            });
            if cooling {
                continue;
            }
            self.history.push((now, bastion.clone()));
            self.down_since.remove(bastion);
            return Some((
                bastion.clone(),
                format!(
                    "its tunnel has been down for {}s while {} {} up",
                    down_for.as_secs(),
                    others_up.join(", "),
                    if others_up.len() == 1 { "is" } else { "are" }
                ),
            ));
        }
        None
    }
}

/// Samples the tunnels every second and sends `(bastion, reason)` when
/// [`Trigger`] says so, only while the AWS credentials are at hand. Ends
/// with `stop`.
pub fn spawn(
    service: Arc<EipService>,
    settings: EipAuto,
    requests: mpsc::Sender<(String, String)>,
    stop: tokio_util::sync::CancellationToken,
) {
    tokio::spawn(async move {
        let mut trigger = Trigger::new(settings);
        let rotatable = service.bastion_names();
        let mut tick = tokio::time::interval(SAMPLE);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if !service.credentials_ready() {
                continue;
            }
            let states = service.tunnel_states();
            if let Some(decision) = trigger.observe(Instant::now(), &states, &rotatable)
                && requests.send(decision).await.is_err()
            {
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn states(list: &[(&str, bool)]) -> Vec<(String, bool)> {
        list.iter()
            .map(|(name, up)| (name.to_string(), *up))
            .collect()
    }

    #[test]
    fn the_trigger_rotates_one_bastion_under_attack_and_no_more() {
        let settings = EipAuto {
            after: Duration::from_secs(30),
            cooldown: Duration::from_secs(600),
            max_per_hour: 2,
        };
        let rotatable = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut trigger = Trigger::new(settings);
        // (seconds, states, expected bastion)
        /// (seconds, tunnel states, the bastion expected to be rotated)
        type Step<'a> = (u64, &'a [(&'a str, bool)], Option<&'a str>);
        let steps: [Step; 11] = [
            (0, &[("a", false), ("b", true)], None),
            (29, &[("a", false), ("b", true)], None),
            // Down 30 s while b is up: rotate a.
            (30, &[("a", false), ("b", true)], Some("a")),
            // Still down: cooling down.
            (100, &[("a", false), ("b", true)], None),
            // Everything down: the validator's own link; nothing.
            (200, &[("a", false), ("b", false)], None),
            (300, &[("a", true), ("b", false)], None),
            (330, &[("a", true), ("b", false)], Some("b")),
            // A flapping bastion resets its clock.
            (400, &[("c", false), ("a", true)], None),
            (420, &[("c", true), ("a", true)], None),
            (440, &[("c", false), ("a", true)], None),
            // Two in the last hour already: no third.
            (480, &[("c", false), ("a", true)], None),
        ];
        for (seconds, list, expected) in steps {
            let decision = trigger.observe(at(seconds), &states(list), &rotatable);
            assert_eq!(
                decision.as_ref().map(|(bastion, _)| bastion.as_str()),
                expected,
                "at {seconds}s: {list:?} → {decision:?}"
            );
        }
        // An hour after the first, c may go.
        let decision = trigger.observe(at(3700), &states(&[("c", false), ("a", true)]), &rotatable);
        assert_eq!(
            decision.map(|(bastion, reason)| (bastion, reason.contains("while a is up"))),
            Some(("c".to_string(), true))
        );
        // A bastion without an eip is never rotated.
        let mut trigger = Trigger::new(settings_with(1));
        trigger.observe(at(0), &states(&[("x", false), ("a", true)]), &rotatable);
        assert_eq!(
            trigger.observe(at(5), &states(&[("x", false), ("a", true)]), &rotatable),
            None
        );
    }

    fn settings_with(after: u64) -> EipAuto {
        EipAuto {
            after: Duration::from_secs(after),
            cooldown: Duration::from_secs(600),
            max_per_hour: 5,
        }
    }
}
