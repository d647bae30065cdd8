//! What happens to one packet under a set of conditions: the userspace backend's decisions,
//! pure and seedable so their statistics are unit-tested.

use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::spec::EffectiveConditions;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Drop,
    /// Send at `at`; `corrupt` flips one bit of the payload; `duplicate` sends a second copy.
    Release { at: Instant, corrupt: bool, duplicate: bool, reordered: bool },
}

pub struct Policy {
    conditions: EffectiveConditions,
    rng: SmallRng,
    /// Release time of the last delayed packet: packets leave in order unless reordering
    /// is asked for (as netem does when jitter would otherwise reorder them).
    last_release: Option<Instant>,
}

impl Policy {
    pub fn new(conditions: EffectiveConditions, seed: u64) -> Self {
        Policy { conditions, rng: SmallRng::seed_from_u64(seed), last_release: None }
    }

    pub fn set_conditions(&mut self, conditions: EffectiveConditions) {
        self.conditions = conditions;
    }

    fn chance(&mut self, p: Option<crate::spec::units::Percent>) -> bool {
        p.is_some_and(|p| p.0 > 0.0 && self.rng.random::<f64>() < p.fraction())
    }

    pub fn decide(&mut self, now: Instant) -> Fate {
        // Destructured: a new field must be placed here to compile (rate is the token
        // bucket's, in front of this policy).
        let EffectiveConditions { delay, jitter, loss, rate: _, corrupt, duplicate, reorder, down: _, blocked: _ } = self.conditions.clone();
        if self.chance(loss) {
            return Fate::Drop;
        }
        let corrupt = self.chance(corrupt);
        let duplicate = self.chance(duplicate);
        let delay = delay.map(|d| d.as_std()).unwrap_or_default();
        // netem's reorder: a share of packets skips the delay and overtakes the queue.
        if !delay.is_zero() && self.chance(reorder) {
            return Fate::Release { at: now, corrupt, duplicate, reordered: true };
        }
        let jitter = jitter.map(|j| j.as_std()).unwrap_or_default();
        let mut wait = delay;
        if !jitter.is_zero() {
            let spread = jitter.as_secs_f64();
            let offset = self.rng.random_range(-spread..=spread);
            wait = Duration::from_secs_f64((delay.as_secs_f64() + offset).max(0.0));
        }
        let mut at = now + wait;
        if let Some(last) = self.last_release {
            at = at.max(last);
        }
        if !wait.is_zero() {
            self.last_release = Some(at);
        }
        Fate::Release { at, corrupt, duplicate, reordered: false }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(f: impl FnOnce(&mut EffectiveConditions)) -> EffectiveConditions {
        let mut c = EffectiveConditions::default();
        f(&mut c);
        c
    }

    fn run(c: EffectiveConditions, n: usize) -> Vec<(Fate, Instant)> {
        let mut p = Policy::new(c, 7);
        let start = Instant::now();
        (0..n).map(|i| {
            let now = start + Duration::from_millis(i as u64);
            (p.decide(now), now)
        }).collect()
    }

    #[test]
    fn loss_drops_its_share() {
        let fates = run(cond(|c| c.loss = Some("20%".parse().unwrap())), 20_000);
        let dropped = fates.iter().filter(|(f, _)| *f == Fate::Drop).count() as f64 / 20_000.0;
        assert!((dropped - 0.2).abs() < 0.01, "{dropped}");
    }

    #[test]
    fn delay_without_jitter_is_exact_and_in_order() {
        let fates = run(cond(|c| c.delay = Some("50ms".parse().unwrap())), 100);
        for (f, now) in fates {
            let Fate::Release { at, .. } = f else { panic!("dropped") };
            assert_eq!(at - now, Duration::from_millis(50));
        }
    }

    #[test]
    fn jitter_spreads_but_never_reorders() {
        let fates = run(cond(|c| {
            c.delay = Some("50ms".parse().unwrap());
            c.jitter = Some("20ms".parse().unwrap());
        }), 2000);
        let ats: Vec<Instant> = fates.iter().map(|(f, _)| match f { Fate::Release { at, .. } => *at, Fate::Drop => panic!() }).collect();
        assert!(ats.windows(2).all(|w| w[0] <= w[1]), "out of order");
        let waits: Vec<f64> = fates.iter().map(|(f, now)| match f { Fate::Release { at, .. } => (*at - *now).as_secs_f64() * 1000.0, Fate::Drop => 0.0 }).collect();
        let min = waits.iter().cloned().fold(f64::MAX, f64::min);
        let max = waits.iter().cloned().fold(0.0, f64::max);
        assert!(min >= 30.0 - 0.01 && max > 60.0, "spread {min}..{max}");
    }

    #[test]
    fn corrupt_duplicate_and_reorder_hit_their_share() {
        let fates = run(cond(|c| {
            c.delay = Some("10ms".parse().unwrap());
            c.corrupt = Some("10%".parse().unwrap());
            c.duplicate = Some("5%".parse().unwrap());
            c.reorder = Some("25%".parse().unwrap());
        }), 20_000);
        let share = |pred: fn(&Fate) -> bool| fates.iter().filter(|(f, _)| pred(f)).count() as f64 / 20_000.0;
        assert!((share(|f| matches!(f, Fate::Release { corrupt: true, .. })) - 0.10).abs() < 0.01);
        assert!((share(|f| matches!(f, Fate::Release { duplicate: true, .. })) - 0.05).abs() < 0.01);
        assert!((share(|f| matches!(f, Fate::Release { reordered: true, .. })) - 0.25).abs() < 0.015);
    }
}
