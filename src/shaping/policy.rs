//! What happens to one packet under a set of conditions: the userspace backend's decisions,
//! pure and seedable so their statistics are unit-tested.

use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

use super::distribution;
use crate::spec::stochastic::LossModel;
use crate::spec::units::Percent;
use crate::spec::links::Toward;
use crate::spec::EffectiveConditions;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Drop,
    /// More packets held than `limit` allows (netem drops these too).
    Overflow,
    /// Send at `at`; `corrupt` flips one bit of the payload; `duplicate` sends a second copy.
    Release { at: Instant, corrupt: bool, duplicate: bool, reordered: bool },
}

/// netem's correlated draw (`get_crandom`): each value leans `rho` on the last one.
#[derive(Debug, Clone, Copy, Default)]
struct Correlated {
    rho: f64,
    last: f64,
}

impl Correlated {
    fn new(rho: Option<Percent>) -> Self {
        Correlated { rho: rho.map(Percent::fraction).unwrap_or(0.0), last: 0.0 }
    }

    fn next(&mut self, rng: &mut SmallRng) -> f64 {
        let u: f64 = rng.random();
        if self.rho == 0.0 {
            return u;
        }
        self.last = u * (1.0 - self.rho) + self.last * self.rho;
        self.last
    }
}

/// Where a loss model with memory stands: netem's states, numbered as netem numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LossState {
    /// Gilbert-Elliott's Good (1) and Bad (2); the 4-state model's 1 to 4.
    State(u8),
}

/// Draws for one set of conditions: the random source and the memory of every correlated draw
/// and loss model, kept across condition changes that do not touch them.
struct Draws {
    delay: Correlated,
    loss: Correlated,
    duplicate: Correlated,
    corrupt: Correlated,
    reorder: Correlated,
    loss_state: LossState,
}

impl Draws {
    fn new(c: &EffectiveConditions) -> Self {
        let k = c.correlation.unwrap_or_default();
        Draws {
            delay: Correlated::new(k.delay),
            loss: Correlated::new(k.loss),
            duplicate: Correlated::new(k.duplicate),
            corrupt: Correlated::new(k.corrupt),
            reorder: Correlated::new(k.reorder),
            loss_state: LossState::State(1),
        }
    }
}

/// Which sequence of draws a policy takes: one per task, network, direction and link
/// destination, so no two tasks drop the same packets in step (every task's first queue has the
/// same number, so nothing on the node told them apart before). A lab's `seed:` makes each
/// sequence repeat from run to run; without one, each worker starts somewhere random.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    /// Stable across runs: `lab/service/slot/network`, then `>destination` or `<in`.
    identity: String,
    unseeded: u64,
}

impl Stream {
    pub fn new(identity: impl Into<String>) -> Self {
        Stream { identity: identity.into(), unseeded: rand::random() }
    }

    /// The sequence of the packets toward a link's destination.
    fn toward(&self, destination: &str) -> Self {
        Stream { identity: format!("{}>{destination}", self.identity), unseeded: self.unseeded }
    }

    /// The sequence of the arriving packets (ingress conditions).
    pub fn arriving(&self) -> Self {
        Stream { identity: format!("{}<in", self.identity), unseeded: self.unseeded }
    }

    /// The seed of the draws: the lab's (or the worker's random one) with the identity.
    fn seed(&self, lab_seed: Option<u64>) -> u64 {
        let digest = Sha256::new().chain_update(lab_seed.unwrap_or(self.unseeded).to_le_bytes()).chain_update(self.identity.as_bytes()).finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_le_bytes(first)
    }
}

pub struct Policy {
    conditions: EffectiveConditions,
    stream: Stream,
    rng: SmallRng,
    draws: Draws,
    /// When the last packet paced by `rate` leaves: the next one's transmission starts then.
    busy_until: Option<Instant>,
}

/// The Ethernet header the kernel counts in a packet's length at the qdisc (netem's and tbf's
/// rates include it; the queue hands over the IP packet).
const ETHERNET_HEADER: usize = 14;

impl Policy {
    pub fn new(conditions: EffectiveConditions, stream: Stream) -> Self {
        let rng = SmallRng::seed_from_u64(stream.seed(conditions.seed));
        Policy { draws: Draws::new(&conditions), conditions, stream, rng, busy_until: None }
    }

    pub fn set_conditions(&mut self, conditions: EffectiveConditions) {
        if conditions == self.conditions {
            return;
        }
        // A new seed starts the sequence over; a new model or correlation starts its memory over.
        if conditions.seed.is_some() && conditions.seed != self.conditions.seed {
            self.rng = SmallRng::seed_from_u64(self.stream.seed(conditions.seed));
            self.draws = Draws::new(&conditions);
        } else if conditions.loss_model != self.conditions.loss_model || conditions.correlation != self.conditions.correlation {
            self.draws = Draws::new(&conditions);
        }
        self.conditions = conditions;
    }

    pub fn conditions(&self) -> &EffectiveConditions {
        &self.conditions
    }

    fn hit(p: Option<Percent>, draw: &mut Correlated, rng: &mut SmallRng) -> bool {
        p.is_some_and(|p| p.0 > 0.0 && draw.next(rng) < p.fraction())
    }

    /// Whether this packet is lost, by `loss` (correlated) or the loss model, as netem's
    /// `loss_event` decides it.
    fn lost(&mut self) -> bool {
        let rng = &mut self.rng;
        match self.conditions.loss_model {
            None => Self::hit(self.conditions.loss, &mut self.draws.loss, rng),
            Some(LossModel::GilbertElliott(ge)) => {
                let LossState::State(state) = self.draws.loss_state;
                // netem: the move is drawn first, the loss by the state the packet came in.
                if state == 1 {
                    if rng.random::<f64>() < ge.p.fraction() {
                        self.draws.loss_state = LossState::State(2);
                    }
                    rng.random::<f64>() >= ge.delivered_in_good().fraction()
                } else {
                    if rng.random::<f64>() < ge.r.fraction() {
                        self.draws.loss_state = LossState::State(1);
                    }
                    rng.random::<f64>() >= ge.delivered_in_bad().fraction()
                }
            }
            Some(LossModel::FourState(m)) => {
                let [p13, p31, p32, p23, p14] = m.probabilities().map(Percent::fraction);
                let LossState::State(state) = self.draws.loss_state;
                let u: f64 = rng.random();
                let (next, lost) = match state {
                    1 if u < p14 => (4, true),
                    1 if u < p14 + p13 => (3, true),
                    1 => (1, false),
                    2 if u < p23 => (3, true),
                    2 => (2, false),
                    3 if u < p32 => (2, false),
                    3 if u < p32 + p31 => (1, false),
                    3 => (3, true),
                    _ => (1, false),
                };
                self.draws.loss_state = LossState::State(next);
                lost
            }
        }
    }

    /// The fate of one packet of `bytes` (its IP length) arriving at `now` while `held`
    /// packets wait.
    pub fn decide(&mut self, now: Instant, held: usize, bytes: usize) -> Fate {
        let c = &self.conditions;
        let (duplicate_p, corrupt_p, reorder_p, limit) = (c.duplicate, c.corrupt, c.reorder, c.limit);
        // netem's order: duplicate is drawn before loss, so a lost duplicated packet still
        // sends one copy.
        let duplicate = Self::hit(duplicate_p, &mut self.draws.duplicate, &mut self.rng);
        let lost = self.lost();
        if lost && !duplicate {
            return Fate::Drop;
        }
        let duplicate = duplicate && !lost;
        let corrupt = Self::hit(corrupt_p, &mut self.draws.corrupt, &mut self.rng);
        // netem's queue limit, its default when the lab sets none.
        if held >= limit.unwrap_or(crate::spec::resolve::DEFAULT_LIMIT) as usize {
            return Fate::Overflow;
        }
        let c = &self.conditions;
        let delay = c.delay.map(|d| d.micros as f64).unwrap_or_default();
        // netem's reorder: a share of packets skips the delay and overtakes the queue.
        if delay > 0.0 && Self::hit(reorder_p, &mut self.draws.reorder, &mut self.rng) {
            return Fate::Release { at: now, corrupt, duplicate, reordered: true };
        }
        let sigma = c.jitter.map(|j| j.micros as f64).unwrap_or_default();
        let distribution = c.delay_distribution;
        let u = self.draws.delay.next(&mut self.rng);
        // Each packet leaves at its own time, so jitter reorders packets as netem's time-sorted
        // queue does.
        let wait = Duration::from_secs_f64(distribution::delay_micros(delay, sigma, distribution, u) / 1e6);
        let mut at = now + wait;
        // netem's rate: a packet is sent once its delay is over and the packet before it has
        // gone, and takes its transmission time at the rate (netem_enqueue's `packet_time_ns`).
        if let Some(rate) = c.rate.filter(|r| r.bits_per_sec > 0) {
            let start = self.busy_until.map_or(at, |busy| busy.max(at));
            at = start + Duration::from_secs_f64((bytes + ETHERNET_HEADER) as f64 * 8.0 / rate.bits_per_sec as f64);
            self.busy_until = Some(at);
        }
        Fate::Release { at, corrupt, duplicate, reordered: false }
    }
}

/// The policies of one attachment: one per link destination (`toward`), one for the rest.
pub struct Policies {
    all: Policy,
    toward: Vec<(Toward, Policy)>,
    stream: Stream,
}

impl Policies {
    pub fn new(conditions: EffectiveConditions, stream: Stream) -> Self {
        let mut p = Policies { all: Policy::new(EffectiveConditions::default(), stream.clone()), toward: vec![], stream };
        p.set_conditions(conditions);
        p
    }

    /// Keeps each destination's draws (and memory) where its conditions stay.
    pub fn set_conditions(&mut self, mut conditions: EffectiveConditions) {
        let toward = std::mem::take(&mut conditions.toward);
        let mut old = std::mem::take(&mut self.toward);
        for t in toward {
            let policy = match old.iter().position(|(o, _)| o.to == t.to) {
                Some(at) => {
                    let (_, mut p) = old.swap_remove(at);
                    p.set_conditions(t.conditions.clone());
                    p
                }
                None => Policy::new(t.conditions.clone(), self.stream.toward(&t.to)),
            };
            self.toward.push((t, policy));
        }
        self.all.set_conditions(conditions);
    }

    /// The fate of a packet of `bytes` to `dst` (the attachment's own conditions when unknown).
    pub fn decide(&mut self, dst: Option<std::net::Ipv4Addr>, now: Instant, held: usize, bytes: usize) -> Fate {
        let chosen = dst.and_then(|ip| self.toward.iter_mut().find(|(t, _)| t.contains(ip)));
        match chosen {
            Some((_, p)) => p.decide(now, held, bytes),
            None => self.all.decide(now, held, bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::stochastic::DelayDistribution;

    fn cond(f: impl FnOnce(&mut EffectiveConditions)) -> EffectiveConditions {
        let mut c = EffectiveConditions::default();
        f(&mut c);
        c
    }

    fn run(c: EffectiveConditions, n: usize) -> Vec<(Fate, Instant)> {
        let mut p = Policy::new(c, fixed(7));
        let start = Instant::now();
        (0..n).map(|i| {
            let now = start + Duration::from_millis(i as u64);
            (p.decide(now, 0, 1000), now)
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
    fn jitter_spreads_and_reorders_as_netem_does() {
        let fates = run(cond(|c| {
            c.delay = Some("50ms".parse().unwrap());
            c.jitter = Some("20ms".parse().unwrap());
        }), 2000);
        let ats: Vec<Instant> = fates.iter().map(|(f, _)| match f { Fate::Release { at, .. } => *at, _ => panic!() }).collect();
        assert!(ats.windows(2).any(|w| w[0] > w[1]), "a packet 1 ms behind another leaves first when its draw is 2 ms shorter");
        let waits: Vec<f64> = fates.iter().map(|(f, now)| match f { Fate::Release { at, .. } => (*at - *now).as_secs_f64() * 1000.0, _ => 0.0 }).collect();
        let min = waits.iter().cloned().fold(f64::MAX, f64::min);
        let max = waits.iter().cloned().fold(0.0, f64::max);
        assert!((30.0 - 0.01..31.0).contains(&min) && max > 69.0 && max <= 70.01, "spread {min}..{max}");
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

    /// A worker's stream with a known start, so the statistics below are the same every run.
    fn fixed(unseeded: u64) -> Stream {
        Stream { identity: "t".into(), unseeded }
    }

    fn decide_spaced(c: EffectiveConditions, n: usize, seed: u64) -> Vec<Fate> {
        // A second apart: no packet waits on the one before, so each fate is the model's own.
        let mut p = Policy::new(c, fixed(seed));
        let start = Instant::now();
        (0..n).map(|i| p.decide(start + Duration::from_secs(i as u64), 0, 1000)).collect()
    }

    fn loss_runs(fates: &[Fate]) -> (f64, f64) {
        crate::shaping::measure::loss_runs(&fates.iter().map(|f| *f == Fate::Drop).collect::<Vec<_>>())
    }

    fn model(json: serde_json::Value) -> EffectiveConditions {
        EffectiveConditions { loss_model: Some(serde_json::from_value(json).unwrap()), ..Default::default() }.canonical()
    }

    #[test]
    fn gilbert_elliott_bursts_match_the_theory() {
        // Gilbert (h 0%, k 100%): bursts of mean 1/r packets, loss rate p/(p+r).
        let fates = decide_spaced(model(serde_json::json!({"gilbertElliott": {"p": "5%", "r": "40%"}})), 100_000, 1);
        let (rate, burst) = loss_runs(&fates);
        assert!((burst - 2.5).abs() < 0.25, "mean burst {burst}, theory 2.5");
        assert!((rate - 0.05 / 0.45).abs() < 0.011, "loss rate {rate}, theory {}", 0.05 / 0.45);
    }

    #[test]
    fn four_state_loss_matches_its_stationary_distribution() {
        let c = model(serde_json::json!({"fourState": {"p13": "2%", "p31": "60%", "p32": "30%", "p23": "20%", "p14": "1%"}}));
        // The chain's stationary loss (LossModel::mean_loss), against 100k decisions.
        let theory = c.loss_model.map(|m| m.mean_loss()).unwrap_or_default();
        let (rate, _) = loss_runs(&decide_spaced(c, 100_000, 2));
        assert!((rate - theory).abs() < theory * 0.1, "loss rate {rate}, stationary {theory}");
    }

    #[test]
    fn correlated_loss_comes_in_longer_runs() {
        let plain = cond(|c| c.loss = Some("20%".parse().unwrap()));
        let leaning = EffectiveConditions { correlation: Some(serde_json::from_value(serde_json::json!({"loss": "90%"})).unwrap()), ..plain.clone() };
        let (_, independent) = loss_runs(&decide_spaced(plain, 50_000, 3));
        let (_, correlated) = loss_runs(&decide_spaced(leaning, 50_000, 3));
        assert!((independent - 1.25).abs() < 0.05, "{independent}");
        assert!(correlated > 2.0 * independent, "runs {correlated} vs {independent} without correlation");
    }

    #[test]
    fn delay_quantiles_follow_the_distribution() {
        for d in [DelayDistribution::Uniform, DelayDistribution::Normal, DelayDistribution::Pareto, DelayDistribution::Paretonormal] {
            let c = EffectiveConditions {
                delay: Some("50ms".parse().unwrap()),
                jitter: Some("10ms".parse().unwrap()),
                delay_distribution: Some(d),
                ..Default::default()
            };
            let start = Instant::now();
            let mut p = Policy::new(c, fixed(4));
            let mut waits: Vec<f64> = (0..20_000u64)
                .map(|i| {
                    let now = start + Duration::from_secs(i);
                    match p.decide(now, 0, 1000) {
                        Fate::Release { at, .. } => (at - now).as_secs_f64() * 1e6,
                        other => panic!("{other:?}"),
                    }
                })
                .collect();
            waits.sort_by(f64::total_cmp);
            for q in [0.1, 0.5, 0.9, 0.99] {
                let measured = waits[(q * waits.len() as f64) as usize];
                let theory = distribution::quantile_micros(50_000.0, 10_000.0, Some(d), q);
                assert!((measured - theory).abs() < 1000.0, "{d:?} q{q}: {measured} us, theory {theory} us");
            }
        }
    }

    #[test]
    fn a_seed_repeats_each_task_s_run_exactly_and_tasks_differ() {
        let c = |seed| EffectiveConditions { loss: Some("30%".parse().unwrap()), seed: Some(seed), ..Default::default() };
        let drops = |seed, task: &str| {
            let mut p = Policy::new(c(seed), Stream::new(task));
            let start = Instant::now();
            (0..1000).map(|i| p.decide(start + Duration::from_secs(i), 0, 1000) == Fate::Drop).collect::<Vec<_>>()
        };
        // Each worker's random start differs; the lab's seed wins.
        assert_eq!(drops(42, "l/b/1/lan"), drops(42, "l/b/1/lan"));
        assert_ne!(drops(42, "l/b/1/lan"), drops(43, "l/b/1/lan"));
        assert_ne!(drops(42, "l/b/1/lan"), drops(42, "l/c/1/lan"), "two tasks under one seed do not drop in step");
    }

    #[test]
    fn tasks_on_one_node_drop_independently() {
        // b's echoes and c's replies, 10% each: as many pairs dropped together as chance gives
        // (1% of 20,000), not the 10% of streams in step.
        let fates = |task: &str| {
            let mut p = Policy::new(cond(|c| c.loss = Some("10%".parse().unwrap())), Stream::new(task));
            let start = Instant::now();
            (0..20_000).map(|i| p.decide(start + Duration::from_secs(i), 0, 1000) == Fate::Drop).collect::<Vec<_>>()
        };
        let (b, c) = (fates("l/b/1/lan>c"), fates("l/c/1/lan>b"));
        let both = b.iter().zip(&c).filter(|(x, y)| **x && **y).count();
        assert!((100..300).contains(&both), "{both} of 20,000 dropped by both");
    }

    #[test]
    fn a_destination_s_seeded_sequence_goes_on_when_its_addresses_change() {
        use crate::spec::links::Toward;
        let toward = |addresses: &[&str]| EffectiveConditions {
            toward: vec![Toward {
                to: "b".into(),
                addresses: addresses.iter().map(|a| a.to_string()).collect(),
                conditions: EffectiveConditions { loss: Some("30%".parse().unwrap()), seed: Some(42), ..Default::default() },
            }],
            ..Default::default()
        };
        let (ip, start) = (Some("10.0.1.5".parse().unwrap()), Instant::now());
        let fates = |p: &mut Policies, from: u64| (from..from + 200).map(|i| p.decide(ip, start + Duration::from_secs(i), 0, 1000) == Fate::Drop).collect::<Vec<_>>();
        let mut kept = Policies::new(toward(&["10.0.1.5/32"]), Stream::new("l/a/1/lan"));
        let mut changed = Policies::new(toward(&["10.0.1.5/32"]), Stream::new("l/a/1/lan"));
        assert_eq!(fates(&mut kept, 0), fates(&mut changed, 0));
        // A second task of b: the same destination, one more address.
        changed.set_conditions(toward(&["10.0.1.5/32", "10.0.1.9/32"]));
        assert_eq!(fates(&mut kept, 200), fates(&mut changed, 200), "the sequence goes on, not over");
    }

    #[test]
    fn beyond_the_limit_packets_overflow() {
        let c = EffectiveConditions { delay: Some("10ms".parse().unwrap()), limit: Some(5), ..Default::default() };
        let mut p = Policy::new(c, Stream::new("t"));
        let now = Instant::now();
        assert!(matches!(p.decide(now, 4, 1000), Fate::Release { .. }));
        assert_eq!(p.decide(now, 5, 1000), Fate::Overflow);
        let mut default = Policy::new(EffectiveConditions { delay: Some("10ms".parse().unwrap()), ..Default::default() }, Stream::new("t"));
        assert_eq!(default.decide(now, 1000, 1000), Fate::Overflow, "netem's 1000 when none is set");
    }

    #[test]
    fn each_destination_gets_its_own_conditions() {
        let toward = Toward { to: "b".into(), addresses: vec!["10.0.1.5/32".into()], conditions: cond(|c| c.delay = Some("50ms".parse().unwrap())) };
        let mut p = Policies::new(EffectiveConditions { toward: vec![toward], ..cond(|c| c.delay = Some("5ms".parse().unwrap())) }, Stream::new("t"));
        let now = Instant::now();
        let wait = |f: Fate| match f {
            Fate::Release { at, .. } => at - now,
            other => panic!("{other:?}"),
        };
        assert_eq!(wait(p.decide(Some("10.0.1.5".parse().unwrap()), now, 0, 1000)), Duration::from_millis(50));
        assert_eq!(wait(p.decide(Some("10.0.1.6".parse().unwrap()), now, 0, 1000)), Duration::from_millis(5));
        assert_eq!(wait(p.decide(None, now, 0, 1000)), Duration::from_millis(5));
    }

    #[test]
    fn a_rate_paces_packets_by_their_length_after_their_delay_as_netem_does() {
        let now = Instant::now();
        let at = |f: Fate| match f {
            Fate::Release { at, .. } => at - now,
            other => panic!("{other:?}"),
        };
        // 1236 bytes of IP and 14 of Ethernet: 10,000 bits, 10 ms at 1 Mbit/s.
        let mut p = Policy::new(cond(|c| c.rate = Some("1mbit".parse().unwrap())), Stream::new("t"));
        let burst: Vec<Duration> = (0..100).map(|_| at(p.decide(now, 0, 1236))).collect();
        assert_eq!(burst[0], Duration::from_millis(10));
        assert_eq!(burst[99], Duration::from_millis(1000), "100 packets at once leave over a second");
        assert!(burst.windows(2).all(|w| w[1] - w[0] == Duration::from_millis(10)), "{burst:?}");
        // Once the link is idle again a packet waits only its own transmission.
        assert_eq!(at(p.decide(now + Duration::from_secs(5), 0, 1236)), Duration::from_millis(5010));

        // With a delay: sent once its delay is over and the one before it has gone.
        let mut p = Policy::new(cond(|c| (c.delay, c.rate) = (Some("50ms".parse().unwrap()), Some("1mbit".parse().unwrap()))), Stream::new("t"));
        assert_eq!(at(p.decide(now, 0, 1236)), Duration::from_millis(60));
        assert_eq!(at(p.decide(now, 0, 1236)), Duration::from_millis(70));
        assert_eq!(at(p.decide(now + Duration::from_millis(40), 0, 1236)), Duration::from_millis(100), "its delay ends at 90 ms; the link is busy until 70");
    }

    #[test]
    fn a_rate_toward_one_destination_leaves_the_others_unpaced() {
        let toward = Toward { to: "b".into(), addresses: vec!["10.0.1.5/32".into()], conditions: cond(|c| c.rate = Some("1mbit".parse().unwrap())) };
        let mut p = Policies::new(EffectiveConditions { toward: vec![toward], ..Default::default() }, Stream::new("t"));
        let now = Instant::now();
        let at = |f: Fate| match f {
            Fate::Release { at, .. } => at - now,
            other => panic!("{other:?}"),
        };
        let (b, other) = (Some("10.0.1.5".parse().unwrap()), Some("10.0.1.6".parse().unwrap()));
        assert_eq!(at(p.decide(b, now, 0, 1236)), Duration::from_millis(10));
        assert_eq!(at(p.decide(other, now, 0, 1236)), Duration::ZERO);
        assert_eq!(at(p.decide(b, now, 0, 1236)), Duration::from_millis(20));
    }
}
