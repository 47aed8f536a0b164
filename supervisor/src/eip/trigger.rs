//! The automatic trigger (`[eip.auto]`): when one bastion's tunnel stays
//! down for `after` — or, with `slow-above`, its round trip stays above
//! that — while another bastion's is up and quick — what a flood of that
//! bastion's address looks like from the validator — it asks for a
//! rotation of that bastion. Never two rotations at once (the machine
//! refuses), never while the vault is locked (the sampler does not ask
//! then), at most `max-per-hour` in any hour, and not again for the same
//! bastion within `cooldown`. Each request carries its reason, which the
//! supervisor logs.
//!
//! [`Trigger`] is the decision, pure over the instants and samples it is
//! given; [`spawn`] samples the tunnels every second and feeds it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::EipService;
use crate::config::EipAuto;

/// How often the tunnels are looked at.
const SAMPLE: Duration = Duration::from_secs(1);

/// One bastion's link at a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkSample {
    /// The tunnel is up.
    pub up: bool,
    /// Its last measured round trip (`None`: not measured yet).
    pub round_trip: Option<Duration>,
}

impl LinkSample {
    pub fn down() -> LinkSample {
        LinkSample {
            up: false,
            round_trip: None,
        }
    }

    pub fn up(round_trip: Option<Duration>) -> LinkSample {
        LinkSample {
            up: true,
            round_trip,
        }
    }
}

/// What is wrong with a bastion's link, if anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trouble {
    Down,
    Slow(Duration),
}

/// The decision.
#[derive(Debug, Clone)]
pub struct Trigger {
    settings: EipAuto,
    /// Since when each bastion has been in trouble without a break.
    troubled_since: BTreeMap<String, Instant>,
    /// Rotations asked for: when, and of which bastion.
    history: Vec<(Instant, String)>,
}

impl Trigger {
    pub fn new(settings: EipAuto) -> Trigger {
        Trigger {
            settings,
            troubled_since: BTreeMap::new(),
            history: Vec::new(),
        }
    }

    fn trouble(&self, sample: LinkSample) -> Option<Trouble> {
        if !sample.up {
            return Some(Trouble::Down);
        }
        match (self.settings.slow_above, sample.round_trip) {
            (Some(limit), Some(round_trip)) if round_trip > limit => {
                Some(Trouble::Slow(round_trip))
            }
            _ => None,
        }
    }

    /// Takes the tunnels' samples at `now` (one for every bastion;
    /// `rotatable` those with an `eip`) and says which bastion to rotate
    /// and why, if one. The answer is recorded as a rotation asked for (for
    /// the cooldown and the hourly bound).
    pub fn observe(
        &mut self,
        now: Instant,
        samples: &[(String, LinkSample)],
        rotatable: &[String],
    ) -> Option<(String, String)> {
        let troubles: Vec<(&String, Option<Trouble>)> = samples
            .iter()
            .map(|(bastion, sample)| (bastion, self.trouble(*sample)))
            .collect();
        // The clock of a bastion runs only while another bastion is well:
        // with every tunnel down or slow the validator's own link is the
        // suspect.
        if troubles.iter().all(|(_, trouble)| trouble.is_some()) {
            self.troubled_since.clear();
            return None;
        }
        for (bastion, trouble) in &troubles {
            if trouble.is_some() {
                self.troubled_since.entry((*bastion).clone()).or_insert(now);
            } else {
                self.troubled_since.remove(*bastion);
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
        for (bastion, trouble) in &troubles {
            let Some(trouble) = trouble else { continue };
            if !rotatable.contains(bastion) {
                continue;
            }
            let Some(since) = self.troubled_since.get(*bastion).copied() else {
                continue;
            };
            let lasted = now.saturating_duration_since(since);
            if lasted < self.settings.after {
                continue;
            }
            let cooling = self.history.iter().any(|(at, rotated)| {
                rotated == *bastion && now.saturating_duration_since(*at) < self.settings.cooldown
            });
            if cooling {
                continue;
            }
            let well: Vec<&str> = troubles
                .iter()
                .filter(|(other, trouble)| other != bastion && trouble.is_none())
                .map(|(other, _)| other.as_str())
                .collect();
            let what = match trouble {
                Trouble::Down => format!("its tunnel has been down for {}s", lasted.as_secs()),
                Trouble::Slow(last) => format!(
                    "its tunnel's round trip has stayed above {} ms for {}s (last {} ms)",
                    self.settings.slow_above.unwrap_or_default().as_millis(),
                    lasted.as_secs(),
                    last.as_millis()
                ),
            };
            self.history.push((now, (*bastion).clone()));
            self.troubled_since.remove(*bastion);
            return Some((
                (*bastion).clone(),
                format!(
                    "{what} while {} {} up",
                    well.join(", "),
                    if well.len() == 1 { "is" } else { "are" }
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
            let samples = service.link_samples();
            if let Some(decision) = trigger.observe(Instant::now(), &samples, &rotatable)
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

    fn states(list: &[(&str, bool)]) -> Vec<(String, LinkSample)> {
        list.iter()
            .map(|(name, up)| {
                let sample = if *up {
                    LinkSample::up(Some(Duration::from_millis(20)))
                } else {
                    LinkSample::down()
                };
                (name.to_string(), sample)
            })
            .collect()
    }

    #[test]
    fn the_trigger_rotates_one_bastion_under_attack_and_no_more() {
        let settings = EipAuto {
            after: Duration::from_secs(30),
            cooldown: Duration::from_secs(600),
            max_per_hour: 2,
            slow_above: None,
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
            slow_above: None,
        }
    }

    #[test]
    fn a_slow_tunnel_counts_only_with_slow_above_and_only_beside_a_quick_one() {
        let ms = |millis: u64| LinkSample::up(Some(Duration::from_millis(millis)));
        let unmeasured = LinkSample::up(None);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let rotatable = vec!["a".to_string(), "b".to_string()];
        let sample =
            |a: LinkSample, b: LinkSample| vec![("a".to_string(), a), ("b".to_string(), b)];
        /// (seconds, a, b, the bastion expected to be rotated)
        type Step = (u64, LinkSample, LinkSample, Option<&'static str>);
        let with_limit = EipAuto {
            slow_above: Some(Duration::from_millis(500)),
            ..settings_with(10)
        };
        let steps: [Step; 10] = [
            (0, ms(900), ms(30), None),
            // At the limit is not above it; the clock restarts.
            (5, ms(500), ms(30), None),
            (6, ms(900), ms(30), None),
            // Not measured yet counts as well, not as slow.
            (8, unmeasured, ms(30), None),
            (9, ms(900), ms(30), None),
            // Slow, then down: one spell of trouble.
            (14, LinkSample::down(), ms(30), None),
            // Both slow: the validator's own link is the suspect; no clock.
            (15, ms(900), ms(800), None),
            (16, ms(900), ms(30), None),
            (25, ms(900), ms(30), None),
            (26, ms(900), ms(30), Some("a")),
        ];
        let mut trigger = Trigger::new(with_limit);
        let mut reason = String::new();
        for (seconds, a, b, expected) in steps {
            let decision = trigger.observe(at(seconds), &sample(a, b), &rotatable);
            assert_eq!(
                decision.as_ref().map(|(bastion, _)| bastion.as_str()),
                expected,
                "at {seconds}s: {a:?} {b:?} → {decision:?}"
            );
            if let Some((_, why)) = decision {
                reason = why;
            }
        }
        assert_eq!(
            reason,
            "its tunnel's round trip has stayed above 500 ms for 10s (last 900 ms) while b is up"
        );
        // Without slow-above a slow tunnel is a well one.
        let mut trigger = Trigger::new(settings_with(10));
        for seconds in [0, 20, 40] {
            assert_eq!(
                trigger.observe(at(seconds), &sample(ms(5000), ms(30)), &rotatable),
                None
            );
        }
        // And a well one keeps a down one's clock running.
        assert_eq!(
            trigger
                .observe(at(60), &sample(LinkSample::down(), ms(5000)), &rotatable)
                .map(|(bastion, _)| bastion),
            None
        );
        assert_eq!(
            trigger.observe(at(70), &sample(LinkSample::down(), ms(5000)), &rotatable),
            Some((
                "a".to_string(),
                "its tunnel has been down for 10s while b is up".to_string()
            ))
        );
    }
}
