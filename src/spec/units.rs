//! Typed values for the unit strings of the Lab resource: durations, percentages, rates and
//! memory sizes. Each type parses from the string a user writes, prints back to it, and
//! describes its syntax in the JSON Schema with a regular expression, so editors flag a bad
//! value before labd ever sees it.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Regular expressions of the unit syntaxes; the JSON Schema uses them and validation maps a
/// pattern failure back to the human sentence next to it.
pub const DURATION_PATTERN: &str = r"^[0-9]+(\.[0-9]+)?(us|ms|s|m|h)$";
pub const PERCENT_PATTERN: &str = r"^(100(\.0+)?|[0-9]{1,2}(\.[0-9]+)?)%$";
pub const RATE_PATTERN: &str = r"^[0-9]+(\.[0-9]+)?(bit|kbit|mbit|gbit|bps|kbps|mbps|gbps)$";
pub const MEMORY_PATTERN: &str = r"^[0-9]+(\.[0-9]+)?([kKmMgG]i?[bB]?|[bB])?$";

/// The sentence shown when a value does not match one of the unit patterns.
pub fn pattern_hint(pattern: &str) -> Option<&'static str> {
    match pattern {
        DURATION_PATTERN => Some("is not a duration: write a number with a unit us, ms, s, m or h (e.g. 100ms, 90s, 5m)"),
        PERCENT_PATTERN => Some("is not a percentage from 0% to 100% (e.g. 0.5%)"),
        RATE_PATTERN => Some("is not a rate: write a number with bit, kbit, mbit, gbit, bps, kbps, mbps or gbps (e.g. 750kbit)"),
        MEMORY_PATTERN => Some("is not a memory size: write bytes or a number with K, M or G (e.g. 150M)"),
        _ => None,
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{value}` {hint}")]
pub struct UnitError {
    value: String,
    hint: &'static str,
}

impl UnitError {
    /// Well formed, but beyond what Docker or the kernel can take.
    pub fn is_out_of_range(&self) -> bool {
        self.hint.starts_with("is too large")
    }
}

/// Upper bounds, so every conversion (to Docker's nanoseconds and bytes, to tc's bits) fits.
pub const MAX_DURATION_SECS: u64 = 86_400;
pub const MAX_RATE_BITS: u64 = 100_000_000_000;
pub const MAX_MEMORY_BYTES: u64 = 1 << 40;

fn unit_error(value: &str, pattern: &'static str) -> UnitError {
    UnitError { value: value.to_string(), hint: pattern_hint(pattern).unwrap_or("is malformed") }
}

/// Splits `"12.5ms"` into `(12.5, "ms")`, requiring the number to be non-negative and finite.
fn split_number(s: &str) -> Option<(f64, &str)> {
    let end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(end);
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') || num.matches('.').count() > 1 {
        return None;
    }
    let value: f64 = num.parse().ok()?;
    value.is_finite().then_some((value, unit))
}

macro_rules! string_unit {
    ($ty:ident, $pattern:expr, $desc:expr) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                stringify!($ty).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({ "type": "string", "pattern": $pattern, "description": $desc })
            }
        }
    };
}

/// A time span written `100ms`, `1.5s` or `250us`; kept in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration {
    pub micros: u64,
}

impl Duration {
    pub const fn from_millis(ms: u64) -> Self {
        Duration { micros: ms * 1000 }
    }
    pub fn as_std(self) -> std::time::Duration {
        std::time::Duration::from_micros(self.micros)
    }
}

impl FromStr for Duration {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        let err = || unit_error(s, DURATION_PATTERN);
        let (n, unit) = split_number(s).ok_or_else(err)?;
        let scale = match unit {
            "us" => 1.0,
            "ms" => 1_000.0,
            "s" => 1_000_000.0,
            "m" => 60_000_000.0,
            "h" => 3_600_000_000.0,
            _ => return Err(err()),
        };
        let micros = (n * scale).round();
        if micros > (MAX_DURATION_SECS * 1_000_000) as f64 {
            return Err(UnitError { value: s.to_string(), hint: "is too large: at most 86400s (one day)" });
        }
        Ok(Duration { micros: micros as u64 })
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = self.micros;
        if us.is_multiple_of(1_000_000) && us > 0 {
            write!(f, "{}s", us / 1_000_000)
        } else if us.is_multiple_of(1_000) {
            write!(f, "{}ms", us / 1_000)
        } else {
            write!(f, "{us}us")
        }
    }
}
string_unit!(Duration, DURATION_PATTERN, "A duration: a number with us, ms, s, m or h, e.g. 100ms or 5m.");

/// A probability written `0.5%`, from 0% to 100%.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Percent(pub f64);

impl Percent {
    /// The probability as a fraction in [0, 1].
    pub fn fraction(self) -> f64 {
        self.0 / 100.0
    }
}

impl FromStr for Percent {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        let err = || unit_error(s, PERCENT_PATTERN);
        match split_number(s) {
            Some((n, "%")) if (0.0..=100.0).contains(&n) => Ok(Percent(n)),
            _ => Err(err()),
        }
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0)
    }
}
string_unit!(Percent, PERCENT_PATTERN, "A percentage from 0% to 100%, e.g. 0.5%.");

/// A bandwidth in bits per second, written with tc units: `bit`, `kbit`, `mbit`, `gbit`
/// (decimal, as tc reads them) or bytes per second `bps`, `kbps`, `mbps`, `gbps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Rate {
    pub bits_per_sec: u64,
}

impl FromStr for Rate {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        let err = || unit_error(s, RATE_PATTERN);
        let (n, unit) = split_number(s).ok_or_else(err)?;
        let scale = match unit {
            "bit" => 1.0,
            "kbit" => 1e3,
            "mbit" => 1e6,
            "gbit" => 1e9,
            "bps" => 8.0,
            "kbps" => 8e3,
            "mbps" => 8e6,
            "gbps" => 8e9,
            _ => return Err(err()),
        };
        let bits = (n * scale).round();
        if bits < 1.0 {
            return Err(UnitError { value: s.to_string(), hint: "is not a rate: it must be at least 1bit" });
        }
        if bits > MAX_RATE_BITS as f64 {
            return Err(UnitError { value: s.to_string(), hint: "is too large: at most 100gbit" });
        }
        Ok(Rate { bits_per_sec: bits as u64 })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.bits_per_sec;
        match b {
            _ if b.is_multiple_of(1_000_000_000) => write!(f, "{}gbit", b / 1_000_000_000),
            _ if b.is_multiple_of(1_000_000) => write!(f, "{}mbit", b / 1_000_000),
            _ if b.is_multiple_of(1_000) => write!(f, "{}kbit", b / 1_000),
            _ => write!(f, "{b}bit"),
        }
    }
}
string_unit!(Rate, RATE_PATTERN, "A rate: a number with bit, kbit, mbit, gbit (or bps, kbps, mbps, gbps for bytes), e.g. 750kbit.");

/// A memory size in bytes, written `150M`, `1G`, `512Mi`, `64k` or plain bytes, as Compose does
/// (binary multiples: 1M = 1048576 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Memory {
    pub bytes: u64,
}

impl FromStr for Memory {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        let err = || unit_error(s, MEMORY_PATTERN);
        let (n, unit) = split_number(s).ok_or_else(err)?;
        let unit = unit.to_ascii_lowercase();
        let unit = unit.trim_end_matches('b').trim_end_matches('i');
        let scale: f64 = match unit {
            "" => 1.0,
            "k" => 1024.0,
            "m" => 1024.0 * 1024.0,
            "g" => 1024.0 * 1024.0 * 1024.0,
            _ => return Err(err()),
        };
        let bytes = (n * scale).round();
        if bytes > MAX_MEMORY_BYTES as f64 {
            return Err(UnitError { value: s.to_string(), hint: "is too large: at most 1024G" });
        }
        Ok(Memory { bytes: bytes as u64 })
    }
}

impl fmt::Display for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const K: u64 = 1024;
        let b = self.bytes;
        match b {
            0 => write!(f, "0"),
            _ if b.is_multiple_of(K * K * K) => write!(f, "{}G", b / (K * K * K)),
            _ if b.is_multiple_of(K * K) => write!(f, "{}M", b / (K * K)),
            _ if b.is_multiple_of(K) => write!(f, "{}K", b / K),
            _ => write!(f, "{b}"),
        }
    }
}
string_unit!(Memory, MEMORY_PATTERN, "A memory size: bytes, or a number with K, M or G, e.g. 150M.");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_every_unit() {
        assert_eq!("100ms".parse::<Duration>().unwrap().micros, 100_000);
        assert_eq!("1.5s".parse::<Duration>().unwrap().micros, 1_500_000);
        assert_eq!("250us".parse::<Duration>().unwrap().micros, 250);
        assert!("100".parse::<Duration>().is_err());
        assert!("-1ms".parse::<Duration>().is_err());
        assert!("1.ms".parse::<Duration>().is_err());
        assert_eq!(Duration::from_millis(300).to_string(), "300ms");
    }

    #[test]
    fn percentages_are_bounded() {
        assert_eq!("0.5%".parse::<Percent>().unwrap(), Percent(0.5));
        assert_eq!("100%".parse::<Percent>().unwrap(), Percent(100.0));
        assert!("100.1%".parse::<Percent>().is_err());
        assert!("5".parse::<Percent>().is_err());
        assert!("-5%".parse::<Percent>().is_err());
    }

    #[test]
    fn rates_use_tc_units() {
        assert_eq!("750kbit".parse::<Rate>().unwrap().bits_per_sec, 750_000);
        assert_eq!("1mbit".parse::<Rate>().unwrap().bits_per_sec, 1_000_000);
        assert_eq!("1kbps".parse::<Rate>().unwrap().bits_per_sec, 8_000);
        assert!("0bit".parse::<Rate>().is_err());
        assert!("5 mbit".parse::<Rate>().is_err());
        assert_eq!("1.5mbit".parse::<Rate>().unwrap().to_string(), "1500kbit");
    }

    #[test]
    fn memory_is_binary() {
        assert_eq!("150M".parse::<Memory>().unwrap().bytes, 150 * 1024 * 1024);
        assert_eq!("1G".parse::<Memory>().unwrap().bytes, 1 << 30);
        assert_eq!("512Mi".parse::<Memory>().unwrap().bytes, 512 << 20);
        assert_eq!("4096".parse::<Memory>().unwrap().bytes, 4096);
        assert!("12X".parse::<Memory>().is_err());
    }

    #[test]
    fn patterns_agree_with_parsers() {
        let re = |p: &str| regex_lite(p);
        for (p, ok, bad) in [
            (DURATION_PATTERN, vec!["1ms", "0.5s", "7us", "1m", "2h"], vec!["1", "ms", "1min", "1d"]),
            (PERCENT_PATTERN, vec!["0%", "99.9%", "100%"], vec!["101%", "1", "%"]),
            (RATE_PATTERN, vec!["1bit", "2.5mbit"], vec!["1", "1Mbit"]),
        ] {
            for s in ok {
                assert!(re(p)(s), "{p} should match {s}");
            }
            for s in bad {
                assert!(!re(p)(s), "{p} should not match {s}");
            }
        }
    }

    /// The schema validator is the regex engine that matters; use it to check the patterns.
    fn regex_lite(pattern: &str) -> impl Fn(&str) -> bool {
        let schema = serde_json::json!({"type": "string", "pattern": pattern});
        let v = jsonschema::validator_for(&schema).unwrap();
        move |s| v.is_valid(&serde_json::json!(s))
    }
}
