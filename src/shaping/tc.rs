//! The exact `tc` requests of the netem backend, and of the rate limit both backends use.
//! Pure: the agent runs them with `tc` inside the task's network namespace.

use crate::spec::EffectiveConditions;

/// Fields the netem qdisc carries (everything but rate, which tbf carries below it).
pub fn has_netem_fields(c: &EffectiveConditions) -> bool {
    c.delay.is_some() || c.jitter.is_some() || c.loss.is_some() || c.corrupt.is_some() || c.duplicate.is_some() || c.reorder.is_some()
}

/// `tc qdisc replace dev IF root handle 1: netem …` for the netem backend.
pub fn netem_args(dev: &str, c: &EffectiveConditions) -> Vec<String> {
    let mut a: Vec<String> = ["qdisc", "replace", "dev", dev, "root", "handle", "1:", "netem"].map(String::from).to_vec();
    let delay = c.delay.unwrap_or_default();
    if c.delay.is_some() || c.jitter.is_some() {
        a.extend(["delay".into(), format!("{}us", delay.micros)]);
        if let Some(j) = c.jitter {
            a.push(format!("{}us", j.micros));
        }
    }
    for (name, p) in [("loss", c.loss), ("corrupt", c.corrupt), ("duplicate", c.duplicate), ("reorder", c.reorder)] {
        if let Some(p) = p {
            a.extend([name.to_string(), format!("{}%", p.0)]);
        }
    }
    if let Some(r) = c.rate {
        // netem's own rate: one qdisc carries everything, no child needed.
        a.extend(["rate".into(), format!("{}bit", r.bits_per_sec)]);
    }
    a
}

/// Burst of a token bucket: enough for 10 ms at the rate, never below one MTU-sized frame.
pub fn tbf_burst(bits_per_sec: u64) -> u64 {
    (bits_per_sec / 8 / 100).max(1600)
}

/// `tc qdisc replace dev IF root handle 1: tbf …`: the rate limit where netem is absent.
pub fn tbf_args(dev: &str, bits_per_sec: u64) -> Vec<String> {
    ["qdisc", "replace", "dev", dev, "root", "handle", "1:", "tbf"]
        .map(String::from)
        .into_iter()
        .chain([
            "rate".into(),
            format!("{bits_per_sec}bit"),
            "burst".into(),
            tbf_burst(bits_per_sec).to_string(),
            "latency".into(),
            "100ms".into(),
        ])
        .collect()
}

pub fn clear_args(dev: &str) -> Vec<String> {
    ["qdisc", "del", "dev", dev, "root"].map(String::from).to_vec()
}

/// The root qdisc kind and its rate (bits/s) from `tc -j qdisc show dev IF`.
pub fn read_root_qdisc(json: &str) -> Option<(String, Option<u64>)> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let root = v.as_array()?.iter().find(|q| q.get("root").and_then(|r| r.as_bool()) == Some(true))?;
    let kind = root.get("kind")?.as_str()?.to_string();
    let rate = root.get("options").and_then(|o| o.get("rate")).and_then(|r| r.as_u64()).map(|bytes| bytes * 8);
    Some((kind, rate))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(yaml_like: &[(&str, &str)]) -> EffectiveConditions {
        let mut c = EffectiveConditions::default();
        for (k, v) in yaml_like {
            match *k {
                "delay" => c.delay = Some(v.parse().unwrap()),
                "jitter" => c.jitter = Some(v.parse().unwrap()),
                "loss" => c.loss = Some(v.parse().unwrap()),
                "rate" => c.rate = Some(v.parse().unwrap()),
                "corrupt" => c.corrupt = Some(v.parse().unwrap()),
                "duplicate" => c.duplicate = Some(v.parse().unwrap()),
                "reorder" => c.reorder = Some(v.parse().unwrap()),
                _ => unreachable!(),
            }
        }
        c
    }

    #[test]
    fn netem_request_carries_every_field() {
        let c = cond(&[("delay", "100ms"), ("jitter", "10ms"), ("loss", "0.5%"), ("rate", "750kbit"), ("corrupt", "0.1%"), ("duplicate", "1%"), ("reorder", "25%")]);
        assert_eq!(
            netem_args("eth1", &c).join(" "),
            "qdisc replace dev eth1 root handle 1: netem delay 100000us 10000us loss 0.5% corrupt 0.1% duplicate 1% reorder 25% rate 750000bit"
        );
    }

    #[test]
    fn netem_request_with_loss_only() {
        assert_eq!(netem_args("eth0", &cond(&[("loss", "20%")])).join(" "), "qdisc replace dev eth0 root handle 1: netem loss 20%");
    }

    #[test]
    fn tbf_request() {
        assert_eq!(tbf_args("eth0", 1_000_000).join(" "), "qdisc replace dev eth0 root handle 1: tbf rate 1000000bit burst 1600 latency 100ms");
        assert_eq!(tbf_burst(100_000_000), 125_000);
    }

    #[test]
    fn reads_back_a_tbf_rate() {
        let json = r#"[{"kind":"tbf","handle":"1:","root":true,"refcnt":2,"options":{"rate":125000,"burst":1600,"lat":100000}}]"#;
        assert_eq!(read_root_qdisc(json), Some(("tbf".into(), Some(1_000_000))));
    }
}
