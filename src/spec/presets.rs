//! Named condition profiles. Two families of names are in use and both work:
//!
//! * Browser throttling profiles, the values of Chrome DevTools' classic presets (also in
//!   Puppeteer's network presets): `latency` becomes `delay` on each egress, download throughput
//!   becomes `rate` (kbit as DevTools writes it).
//! * WoTemu's `NetworkConditions` (wotemu/enums.py, `NETEM_CONDITIONS`): `delay --time L
//!   --jitter J` and `rate`.
//!
//! Where a name exists in both families (`gprs`, `regular-3g`, `wifi`) the browser value wins,
//! because it is what the brief's own example uses; the WoTemu value stays reachable as
//! `wotemu-<name>`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::units::{Duration, Rate};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    Gprs,
    #[serde(rename = "regular-2g")]
    Regular2g,
    #[serde(rename = "good-2g")]
    Good2g,
    #[serde(rename = "regular-3g")]
    Regular3g,
    #[serde(rename = "good-3g")]
    Good3g,
    #[serde(rename = "regular-4g")]
    Regular4g,
    Dsl,
    Wifi,
    Edge,
    #[serde(rename = "fast-3g")]
    Fast3g,
    Lte,
    Cable,
    WotemuGprs,
    #[serde(rename = "wotemu-regular-3g")]
    WotemuRegular3g,
    WotemuWifi,
}

/// The values a preset stands for. Fields of a `conditions` block override them one by one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresetValues {
    pub delay: Duration,
    pub jitter: Option<Duration>,
    pub rate: Rate,
    pub source: &'static str,
}

const DEVTOOLS: &str = "Chrome DevTools throttling presets";
const WOTEMU: &str = "WoTemu NETEM_CONDITIONS";

const fn v(delay_ms: u64, jitter_ms: u64, rate_kbit: u64, source: &'static str) -> PresetValues {
    PresetValues {
        delay: Duration::from_millis(delay_ms),
        jitter: if jitter_ms == 0 { None } else { Some(Duration::from_millis(jitter_ms)) },
        rate: Rate { bits_per_sec: rate_kbit * 1000 },
        source,
    }
}

impl Preset {
    pub const ALL: [Preset; 15] = [
        Preset::Gprs,
        Preset::Regular2g,
        Preset::Good2g,
        Preset::Regular3g,
        Preset::Good3g,
        Preset::Regular4g,
        Preset::Dsl,
        Preset::Wifi,
        Preset::Edge,
        Preset::Fast3g,
        Preset::Lte,
        Preset::Cable,
        Preset::WotemuGprs,
        Preset::WotemuRegular3g,
        Preset::WotemuWifi,
    ];

    pub fn values(self) -> PresetValues {
        match self {
            Preset::Gprs => v(500, 0, 50, DEVTOOLS),
            Preset::Regular2g => v(300, 0, 250, DEVTOOLS),
            Preset::Good2g => v(150, 0, 450, DEVTOOLS),
            Preset::Regular3g => v(100, 0, 750, DEVTOOLS),
            Preset::Good3g => v(40, 0, 1500, DEVTOOLS),
            Preset::Regular4g => v(20, 0, 4000, DEVTOOLS),
            Preset::Dsl => v(5, 0, 2000, DEVTOOLS),
            Preset::Wifi => v(2, 0, 30000, DEVTOOLS),
            Preset::Edge => v(700, 100, 100, WOTEMU),
            Preset::Fast3g => v(150, 50, 4000, WOTEMU),
            Preset::Lte => v(40, 10, 15000, WOTEMU),
            Preset::Cable => v(5, 5, 100000, WOTEMU),
            Preset::WotemuGprs => v(700, 100, 50, WOTEMU),
            Preset::WotemuRegular3g => v(300, 150, 1500, WOTEMU),
            Preset::WotemuWifi => v(25, 5, 50000, WOTEMU),
        }
    }

    pub fn name(self) -> String {
        serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_round_trips_its_name() {
        for p in Preset::ALL {
            let back: Preset = serde_json::from_value(serde_json::json!(p.name())).unwrap();
            assert_eq!(back, p);
        }
    }

    #[test]
    fn shared_names_follow_the_browser_family() {
        assert_eq!(Preset::Regular3g.values().delay, Duration::from_millis(100));
        assert_eq!(Preset::Regular3g.values().rate.bits_per_sec, 750_000);
        assert_eq!(Preset::WotemuRegular3g.values().delay, Duration::from_millis(300));
        assert_eq!(Preset::WotemuRegular3g.values().jitter, Some(Duration::from_millis(150)));
    }
}
