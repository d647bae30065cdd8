//! Per-pair conditions: `spec.links` (traffic from one service toward another service or an
//! address range), and what one attachment carries once links are resolved: its conditions
//! for all traffic, and per destination ([`Toward`], in `EffectiveConditions::toward`).
//!
//! Precedence (highest first), field by field:
//! 1. a partition in force (its DROP rules come before any shaping);
//! 2. the link's own conditions (`spec.links`; its preset expands within the link);
//! 3. what is in force on the attachment (the schedule over the attachment, service and
//!    network levels, presets last).
//!
//! So a link only says what differs toward its destination; the rest follows the attachment.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::model::Conditions;
use super::resolve::{resolve_conditions, EffectiveConditions};

/// Conditions on the traffic from `from`'s tasks toward `to`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Link {
    /// The service whose tasks send the traffic.
    pub from: String,
    /// A service of the lab (its tasks' current addresses), or an IPv4 range in CIDR notation
    /// (`203.0.113.0/24`, `10.0.0.7/32`).
    pub to: String,
    /// The same conditions on the way back (`to` → `from`); `to` must be a service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symmetric: Option<bool>,
    pub conditions: Conditions,
}

/// Where a link's traffic goes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Destination {
    /// Every task of a service of the lab, on the networks both share.
    Service(String),
    /// An address range, on every attachment of the sender.
    Range(Cidr),
}

impl Destination {
    /// A service name, or a CIDR (anything with a `/`).
    pub fn parse(to: &str) -> Result<Destination, String> {
        if to.contains('/') {
            Cidr::parse(to, 0..=32).map(Destination::Range)
        } else {
            Ok(Destination::Service(to.to_string()))
        }
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Service(s) => f.write_str(s),
            Destination::Range(c) => write!(f, "{c}"),
        }
    }
}

/// One direction of a link, as it applies: sender, destination, the link's own fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Directed {
    pub from: String,
    pub to: Destination,
    pub conditions: EffectiveConditions,
}

impl Link {
    /// The directions this link covers (two when symmetric).
    pub fn directions(&self) -> Vec<Directed> {
        let conditions = resolve_conditions(&[Some(&self.conditions)]);
        let Ok(to) = Destination::parse(&self.to) else { return vec![] };
        let mut out = vec![Directed { from: self.from.clone(), to: to.clone(), conditions: conditions.clone() }];
        if self.symmetric == Some(true) {
            if let Destination::Service(back) = to {
                out.push(Directed { from: back, to: Destination::Service(self.from.clone()), conditions });
            }
        }
        out
    }
}

/// Conditions toward a set of addresses (a link's destination, resolved): computed by labd,
/// published to the agents inside the attachment's conditions.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Toward {
    /// The destination as the lab names it (a service or a range).
    pub to: String,
    /// Its current addresses (`10.0.1.5/32`, or the range itself), sorted.
    pub addresses: Vec<String>,
    /// Everything packets toward these addresses get (the link's fields over the attachment's).
    pub conditions: EffectiveConditions,
}

impl Toward {
    pub fn contains(&self, ip: std::net::Ipv4Addr) -> bool {
        self.addresses.iter().any(|a| Cidr::parse(a, 0..=32).is_ok_and(|c| c.contains(ip)))
    }
}

/// The conditions a packet to `ip` gets: those of the first destination that holds it, else
/// the attachment's own.
pub fn conditions_for(all: &EffectiveConditions, ip: std::net::Ipv4Addr) -> &EffectiveConditions {
    all.toward.iter().find(|t| t.contains(ip)).map_or(all, |t| &t.conditions)
}

/// An IPv4 network in CIDR notation: its first address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub network: u32,
    pub prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/len` with `len` in `prefixes`; host bits must be clear. Errors say what
    /// is wrong after the text itself (the caller writes it first).
    pub fn parse(text: &str, prefixes: std::ops::RangeInclusive<u8>) -> Result<Cidr, String> {
        let (addr, prefix) = text.split_once('/').ok_or("is not in CIDR notation (e.g. 10.42.0.0/24)")?;
        let addr: std::net::Ipv4Addr = addr.parse().map_err(|_| "does not start with an IPv4 address".to_string())?;
        let prefix: u8 = prefix.parse().map_err(|_| "has no prefix length after `/`".to_string())?;
        if !prefixes.contains(&prefix) {
            return Err(format!("has a prefix out of range (/{} to /{})", prefixes.start(), prefixes.end()));
        }
        let mask = Self::mask_of(prefix);
        let bits = u32::from(addr);
        if bits & !mask != 0 {
            let network = std::net::Ipv4Addr::from(bits & mask);
            return Err(format!("has host bits set (did you mean `{network}/{prefix}`?)"));
        }
        Ok(Cidr { network: bits, prefix })
    }

    /// The network of `prefix` bits that holds `ip` (an interface's subnet).
    pub fn containing(ip: std::net::Ipv4Addr, prefix: u8) -> Cidr {
        Cidr { network: u32::from(ip) & Self::mask_of(prefix), prefix }
    }

    fn mask_of(prefix: u8) -> u32 {
        if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        }
    }

    fn mask(self) -> u32 {
        Self::mask_of(self.prefix)
    }

    fn last(self) -> u32 {
        self.network | !self.mask()
    }

    pub fn overlaps(self, other: Cidr) -> bool {
        self.network <= other.last() && other.network <= self.last()
    }

    pub fn contains(self, ip: std::net::Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == self.network
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", std::net::Ipv4Addr::from(self.network), self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(fields: &[(&str, &str)]) -> EffectiveConditions {
        EffectiveConditions::from_fields(fields).unwrap()
    }

    #[test]
    fn a_symmetric_link_covers_both_directions_and_a_range_only_one() {
        let link: Link = serde_json::from_value(serde_json::json!({"from": "a", "to": "b", "symmetric": true, "conditions": {"delay": "50ms"}})).unwrap();
        let d = link.directions();
        assert_eq!(d.len(), 2);
        assert_eq!((d[1].from.as_str(), &d[1].to), ("b", &Destination::Service("a".into())));
        assert_eq!(d[0].conditions, cond(&[("delay", "50ms")]));
        let range: Link = serde_json::from_value(serde_json::json!({"from": "a", "to": "203.0.113.0/24", "symmetric": true, "conditions": {"loss": "5%"}})).unwrap();
        assert_eq!(range.directions().len(), 1, "no way back from a range");
    }

    #[test]
    fn a_link_preset_expands_within_the_link() {
        let link: Link = serde_json::from_value(serde_json::json!({"from": "a", "to": "b", "conditions": {"preset": "regular-3g", "delay": "1ms"}})).unwrap();
        let c = &link.directions()[0].conditions;
        assert_eq!(c.delay, Some(crate::spec::units::Duration::from_millis(1)));
        assert!(c.rate.is_some(), "the preset's rate");
    }

    #[test]
    fn packets_get_the_conditions_of_their_destination() {
        let all = EffectiveConditions {
            toward: vec![
                Toward { to: "b".into(), addresses: vec!["10.0.1.5/32".into(), "10.0.1.6/32".into()], conditions: cond(&[("delay", "50ms")]) },
                Toward { to: "203.0.113.0/24".into(), addresses: vec!["203.0.113.0/24".into()], conditions: cond(&[("loss", "5%")]) },
            ],
            ..cond(&[("delay", "5ms")])
        };
        assert_eq!(conditions_for(&all, "10.0.1.6".parse().unwrap()), &cond(&[("delay", "50ms")]));
        assert_eq!(conditions_for(&all, "203.0.113.77".parse().unwrap()), &cond(&[("loss", "5%")]));
        assert_eq!(conditions_for(&all, "10.0.1.7".parse().unwrap()).delay, cond(&[("delay", "5ms")]).delay);
        assert_eq!(all.summary(), "delay 5ms, toward b: delay 50ms, toward 203.0.113.0/24: loss 5%");
    }

    #[test]
    fn cidrs() {
        assert_eq!(Cidr::parse("10.0.0.7/32", 0..=32).unwrap().to_string(), "10.0.0.7/32");
        assert!(Cidr::parse("0.0.0.0/0", 0..=32).unwrap().contains("8.8.8.8".parse().unwrap()));
        assert_eq!(Cidr::parse("10.0.0.1/24", 0..=32).unwrap_err(), "has host bits set (did you mean `10.0.0.0/24`?)");
        assert!(Cidr::parse("10.0.0.0/4", 8..=29).unwrap_err().contains("out of range"));
    }
}
