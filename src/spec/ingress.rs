//! Conditions on the traffic arriving at a task (`conditions.ingress`): netem shapes only what
//! leaves an interface, so arriving packets are redirected to an `ifb` device and shaped
//! there, or (userspace backend) queued on the input path.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::units::{Duration, Percent, Rate};

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ingress {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<Duration>,
    /// Uniform in `delay ± jitter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<Percent>,
    /// The most that arrives per second (a download's speed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
}

impl Ingress {
    /// Each field from `self`, or from `lower` where `self` does not set it.
    pub fn or(self, lower: Ingress) -> Ingress {
        let Ingress { delay, jitter, loss, rate } = self;
        Ingress { delay: delay.or(lower.delay), jitter: jitter.or(lower.jitter), loss: loss.or(lower.loss), rate: rate.or(lower.rate) }
    }

    pub fn is_empty(&self) -> bool {
        *self == Ingress::default()
    }

    /// Fields beyond rate: they need netem or the userspace queue.
    pub fn has_delay_or_loss(&self) -> bool {
        self.delay.is_some() || self.jitter.is_some() || self.loss.is_some()
    }

    pub fn summary(&self) -> String {
        let Ingress { delay, jitter, loss, rate } = self;
        [("delay", delay.map(|v| v.to_string())), ("jitter", jitter.map(|v| v.to_string())), ("loss", loss.map(|v| v.to_string())), ("rate", rate.map(|v| v.to_string()))]
            .into_iter()
            .filter_map(|(n, v)| v.map(|v| format!("{n} {v}")))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
