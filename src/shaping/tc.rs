//! The exact `tc` requests of the netem backend, and of the rate limit both backends use.
//! Pure: the agent runs them with `tc` inside the task's network namespace.

use crate::spec::EffectiveConditions;

/// Fields the netem qdisc carries (everything but rate, which tbf carries below it).
pub fn has_netem_fields(c: &EffectiveConditions) -> bool {
    // Destructured: a new field must be placed here (netem's or not) to compile. `down` is
    // loss 100% by the time conditions reach an agent.
    let EffectiveConditions { delay, jitter, loss, rate: _, corrupt, duplicate, reorder, down: _, blocked: _ } = c;
    delay.is_some() || jitter.is_some() || loss.is_some() || corrupt.is_some() || duplicate.is_some() || reorder.is_some()
}

/// `tc qdisc replace dev IF root handle 1: netem …` for the netem backend. Every field is
/// written, zero when unset: a `replace` of an existing netem qdisc keeps the reorder, corrupt
/// and rate of the previous request when the new one does not mention them (found on a real
/// 6.1 kernel, tests/netem_uml.rs), so an edit that drops a field must say "0".
pub fn netem_args(dev: &str, c: &EffectiveConditions) -> Vec<String> {
    let EffectiveConditions { delay, jitter, loss, rate, corrupt, duplicate, reorder, down: _, blocked: _ } = c;
    let mut a: Vec<String> = ["qdisc", "replace", "dev", dev, "root", "handle", "1:", "netem"].map(String::from).to_vec();
    a.extend(["delay".into(), format!("{}us", delay.unwrap_or_default().micros)]);
    if let Some(j) = jitter {
        a.push(format!("{}us", j.micros));
    }
    for (name, p) in [("loss", loss), ("corrupt", corrupt), ("duplicate", duplicate), ("reorder", reorder)] {
        a.extend([name.to_string(), format!("{}%", p.map(|p| p.0).unwrap_or(0.0))]);
    }
    // netem's own rate: one qdisc carries everything, no child needed; 0 turns it off.
    a.extend(["rate".into(), format!("{}bit", rate.map(|r| r.bits_per_sec).unwrap_or(0))]);
    a
}

/// What a netem root qdisc really holds, from `tc -j qdisc show dev IF` (times in seconds,
/// probabilities as fractions, rate in bytes/s). Fields at zero are unset. `None` when the
/// root qdisc is not netem.
pub fn read_netem(json: &str) -> Option<EffectiveConditions> {
    use crate::spec::units::{Duration, Percent, Rate};
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let root = v.as_array()?.iter().find(|q| q.get("root").and_then(|r| r.as_bool()) == Some(true))?;
    if root.get("kind")?.as_str()? != "netem" {
        return None;
    }
    let o = root.get("options")?;
    let num = |path: &[&str]| -> f64 {
        let mut node = o;
        for p in path {
            match node.get(p) {
                Some(n) => node = n,
                None => return 0.0,
            }
        }
        node.as_f64().unwrap_or(0.0)
    };
    let duration = |secs: f64| (secs > 0.0).then(|| Duration { micros: (secs * 1e6).round() as u64 });
    // The kernel keeps probabilities as 32-bit fractions: round back to what a user writes.
    let percent = |fraction: f64| (fraction > 0.0).then(|| Percent((fraction * 100.0 * 1e4).round() / 1e4));
    let rate = num(&["rate", "rate"]);
    Some(EffectiveConditions {
        delay: duration(num(&["delay", "delay"])),
        jitter: duration(num(&["delay", "jitter"])),
        loss: percent(num(&["loss-random", "loss"])),
        corrupt: percent(num(&["corrupt", "corrupt"])),
        duplicate: percent(num(&["duplicate", "duplicate"])),
        reorder: percent(num(&["reorder", "reorder"])),
        rate: (rate > 0.0).then(|| Rate { bits_per_sec: (rate * 8.0).round() as u64 }),
        down: None,
        blocked: vec![],
    })
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

    fn cond(fields: &[(&str, &str)]) -> EffectiveConditions {
        EffectiveConditions::from_fields(fields).unwrap()
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
    fn netem_request_with_loss_only_resets_every_other_field() {
        assert_eq!(
            netem_args("eth0", &cond(&[("loss", "20%")])).join(" "),
            "qdisc replace dev eth0 root handle 1: netem delay 0us loss 20% corrupt 0% duplicate 0% reorder 0% rate 0bit"
        );
    }

    #[test]
    fn reads_back_what_a_6_1_kernel_prints_for_netem() {
        // Printed by `tc -j qdisc show` on the user-mode 6.1 kernel (tests/netem_uml.rs).
        let json = r#"[{"kind":"netem","handle":"1:","root":true,"refcnt":2,"options":{"limit":1000,"delay":{"delay":0.03,"jitter":0.005,"correlation":0},"loss-random":{"loss":0.1,"correlation":0},"duplicate":{"duplicate":0.01,"correlation":0},"reorder":{"reorder":0.25,"correlation":0},"corrupt":{"corrupt":0.001,"correlation":0},"rate":{"rate":125000,"packetoverhead":0,"cellsize":0,"celloverhead":0},"ecn":false,"gap":1}}]"#;
        let want = cond(&[("delay", "30ms"), ("jitter", "5ms"), ("loss", "10%"), ("duplicate", "1%"), ("reorder", "25%"), ("corrupt", "0.1%"), ("rate", "1mbit")]);
        assert_eq!(read_netem(json), Some(want));
        let only_delay = r#"[{"kind":"netem","handle":"1:","root":true,"options":{"limit":1000,"delay":{"delay":0.03,"jitter":0.005,"correlation":0},"ecn":false,"gap":0}}]"#;
        assert_eq!(read_netem(only_delay), Some(cond(&[("delay", "30ms"), ("jitter", "5ms")])));
        assert_eq!(read_netem(r#"[{"kind":"noqueue","handle":"0:","root":true,"options":{}}]"#), None);
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
