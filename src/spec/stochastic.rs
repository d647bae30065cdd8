//! How packets are lost and delayed beyond independent, uniform draws: the loss models,
//! correlations and delay distributions of netem, written as netem defines them so both
//! backends apply the same thing.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::units::Percent;

/// A loss process with memory, instead of `loss` (independent drops).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum LossModel {
    /// Two states, Good and Bad (netem's `loss gemodel`).
    GilbertElliott(GilbertElliott),
    /// netem's 4-state Markov model (`loss state`): 1 = sent in a gap, 2 = sent in a burst,
    /// 3 = lost in a burst, 4 = an isolated loss in a gap.
    FourState(FourState),
}

impl LossModel {
    /// The share of packets lost in the long run (the chain's stationary distribution).
    pub fn mean_loss(&self) -> f64 {
        match self {
            LossModel::GilbertElliott(ge) => {
                let (p, r) = (ge.p.fraction(), ge.r.fraction());
                if p + r == 0.0 {
                    return 1.0 - ge.delivered_in_good().fraction();
                }
                let bad = p / (p + r);
                (1.0 - bad) * (1.0 - ge.delivered_in_good().fraction()) + bad * (1.0 - ge.delivered_in_bad().fraction())
            }
            LossModel::FourState(m) => {
                let [p13, p31, p32, p23, p14] = m.probabilities().map(Percent::fraction);
                // netem's transitions; a packet is lost entering state 3 or 4.
                let t = [
                    [1.0 - p13 - p14, 0.0, p13, p14],
                    [0.0, 1.0 - p23, p23, 0.0],
                    [p31, p32, 1.0 - p31 - p32, 0.0],
                    [1.0, 0.0, 0.0, 0.0],
                ];
                let mut pi = [1.0, 0.0, 0.0, 0.0];
                for _ in 0..5_000 {
                    let mut next = [0.0; 4];
                    for (from, row) in t.iter().enumerate() {
                        for (to, p) in row.iter().enumerate() {
                            next[to] += pi[from] * p;
                        }
                    }
                    pi = next;
                }
                pi[2] + pi[3]
            }
        }
    }
}

/// Gilbert-Elliott loss. With the defaults of `h` and `k` (Gilbert's model), losses come in
/// bursts of mean length `1/r` and the loss rate is `p/(p+r)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GilbertElliott {
    /// Probability of moving from Good to Bad, per packet.
    pub p: Percent,
    /// Probability of moving from Bad to Good, per packet.
    pub r: Percent,
    /// Probability that a packet gets through in the Bad state; default 0% (all lost).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h: Option<Percent>,
    /// Probability that a packet gets through in the Good state; default 100% (none lost).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<Percent>,
}

impl GilbertElliott {
    pub fn delivered_in_bad(&self) -> Percent {
        self.h.unwrap_or(Percent(0.0))
    }
    pub fn delivered_in_good(&self) -> Percent {
        self.k.unwrap_or(Percent(100.0))
    }
}

/// The transition probabilities of netem's 4-state model; those not given are 0%.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FourState {
    /// Gap → burst loss (state 1 → 3).
    pub p13: Percent,
    /// Burst loss → gap (3 → 1).
    pub p31: Percent,
    /// Burst loss → sent in the burst (3 → 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p32: Option<Percent>,
    /// Sent in the burst → burst loss (2 → 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p23: Option<Percent>,
    /// Gap → isolated loss (1 → 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p14: Option<Percent>,
}

impl FourState {
    /// `[p13, p31, p32, p23, p14]`, unset ones 0%.
    pub fn probabilities(&self) -> [Percent; 5] {
        let z = |p: Option<Percent>| p.unwrap_or(Percent(0.0));
        [self.p13, self.p31, z(self.p32), z(self.p23), z(self.p14)]
    }
}

/// How much each draw leans on the previous one (netem's correlation): 0% independent.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Correlation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<Percent>,
    /// Only with `loss` (a loss model has its own memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<Percent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<Percent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrupt: Option<Percent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reorder: Option<Percent>,
}

impl Correlation {
    /// Each field from `self`, or from `lower` where `self` does not set it.
    pub fn or(self, lower: Correlation) -> Correlation {
        let Correlation { delay, loss, duplicate, corrupt, reorder } = self;
        Correlation {
            delay: delay.or(lower.delay),
            loss: loss.or(lower.loss),
            duplicate: duplicate.or(lower.duplicate),
            corrupt: corrupt.or(lower.corrupt),
            reorder: reorder.or(lower.reorder),
        }
    }

    pub fn summary(&self) -> String {
        let Correlation { delay, loss, duplicate, corrupt, reorder } = self;
        [("delay", delay), ("loss", loss), ("duplicate", duplicate), ("corrupt", corrupt), ("reorder", reorder)]
            .into_iter()
            .filter_map(|(n, p)| p.map(|p| format!("{n} {p}")))
            .collect::<Vec<_>>()
            .join("/")
    }
}

/// The shape of the delay around `delay`, `jitter` wide (netem's `distribution`); without it,
/// uniform in `delay ± jitter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DelayDistribution {
    Uniform,
    Normal,
    Pareto,
    Paretonormal,
}

impl DelayDistribution {
    pub fn name(self) -> &'static str {
        match self {
            DelayDistribution::Uniform => "uniform",
            DelayDistribution::Normal => "normal",
            DelayDistribution::Pareto => "pareto",
            DelayDistribution::Paretonormal => "paretonormal",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_loss_of_the_models() {
        let ge: LossModel = serde_json::from_value(serde_json::json!({"gilbertElliott": {"p": "5%", "r": "40%"}})).unwrap();
        assert!((ge.mean_loss() - 0.05 / 0.45).abs() < 1e-9);
        // With p14 alone the chain alternates gap and isolated loss at p14's rate.
        let four: LossModel = serde_json::from_value(serde_json::json!({"fourState": {"p13": "0%", "p31": "100%", "p14": "10%"}})).unwrap();
        assert!((four.mean_loss() - 0.1 / 1.1).abs() < 1e-6);
    }
}
