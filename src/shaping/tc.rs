//! The exact `tc` requests of the netem backend, and of the rate limit both backends use.
//! Pure: the agent runs them with `tc` inside the task's network namespace.

use crate::spec::stochastic::{DelayDistribution, LossModel};
use crate::spec::units::Percent;
use crate::spec::EffectiveConditions;

/// Fields that need netem (or the userspace queue); rate alone is a token bucket's, and the
/// models (correlation, distribution, limit, seed) only shape what these fields do.
pub fn has_netem_fields(c: &EffectiveConditions) -> bool {
    // Destructured: a new field must be placed here (netem's or not) to compile. `down` is
    // loss 100% by the time conditions reach an agent.
    let EffectiveConditions {
        delay,
        jitter,
        loss,
        rate: _,
        corrupt,
        duplicate,
        reorder,
        down: _,
        blocked: _,
        loss_model,
        correlation: _,
        delay_distribution: _,
        limit: _,
        seed: _,
        ingress: _,
        toward,
    } = c;
    delay.is_some()
        || jitter.is_some()
        || loss.is_some()
        || loss_model.is_some()
        || corrupt.is_some()
        || duplicate.is_some()
        || reorder.is_some()
        || toward.iter().any(|t| has_netem_fields(&t.conditions))
}

use crate::spec::resolve::DEFAULT_LIMIT as NETEM_DEFAULT_LIMIT;

fn pct(p: Option<Percent>) -> String {
    format!("{}%", p.map(|p| p.0).unwrap_or(0.0))
}

/// The netem options (after `netem`) that carry `c`. Every field is written, zero when unset:
/// a `replace` of an existing netem qdisc keeps the reorder, corrupt, rate and correlations of
/// the previous request when the new one does not mention them (found on a real 6.1 kernel,
/// tests/netem_uml.rs), so an edit that drops a field must say "0". `seed` is not written:
/// netem has no seed before Linux 6.7 (the agent reports it as not applied).
pub fn netem_options(c: &EffectiveConditions) -> Vec<String> {
    let EffectiveConditions {
        delay,
        jitter,
        loss,
        rate,
        corrupt,
        duplicate,
        reorder,
        down: _,
        blocked: _,
        loss_model,
        correlation,
        delay_distribution,
        limit,
        seed: _,
        // Arriving traffic is shaped on the attachment's ifb device: `ingress_conditions`.
        ingress: _,
        // Per-destination conditions are children of a prio tree: `prio_tree_requests`.
        toward: _,
    } = c;
    let k = correlation.unwrap_or_default();
    let mut a: Vec<String> = vec!["limit".into(), limit.unwrap_or(NETEM_DEFAULT_LIMIT).to_string()];
    a.extend([
        "delay".into(),
        format!("{}us", delay.unwrap_or_default().micros),
        format!("{}us", jitter.unwrap_or_default().micros),
        pct(k.delay),
    ]);
    if let Some(d) = delay_distribution.filter(|d| *d != DelayDistribution::Uniform && jitter.is_some()) {
        a.extend(["distribution".into(), d.name().into()]);
    }
    match loss_model {
        None => a.extend(["loss".into(), "random".into(), pct(*loss), pct(k.loss)]),
        // tc takes the loss probabilities in each state (1-h, 1-k); the spec, as the
        // literature, gives the chances of getting through (h, k).
        Some(LossModel::GilbertElliott(ge)) => a.extend([
            "loss".into(),
            "gemodel".into(),
            pct(Some(ge.p)),
            pct(Some(ge.r)),
            pct(Some(Percent(100.0 - ge.delivered_in_bad().0))),
            pct(Some(Percent(100.0 - ge.delivered_in_good().0))),
        ]),
        Some(LossModel::FourState(m)) => {
            a.extend(["loss".into(), "state".into()]);
            a.extend(m.probabilities().map(|p| pct(Some(p))));
        }
    }
    for (name, p, corr) in [("corrupt", corrupt, k.corrupt), ("duplicate", duplicate, k.duplicate), ("reorder", reorder, k.reorder)] {
        a.extend([name.to_string(), pct(*p), pct(corr)]);
    }
    // netem's own rate: one qdisc carries everything, no child needed; 0 turns it off.
    a.extend(["rate".into(), format!("{}bit", rate.map(|r| r.bits_per_sec).unwrap_or(0))]);
    a
}

/// `tc qdisc replace dev IF root handle 1: netem …` for the netem backend.
pub fn netem_args(dev: &str, c: &EffectiveConditions) -> Vec<String> {
    let mut a: Vec<String> = ["qdisc", "replace", "dev", dev, "root", "handle", "1:", "netem"].map(String::from).to_vec();
    a.extend(netem_options(c));
    a
}

/// The `ifb` device that carries what arrives at `dev` (names are at most 15 bytes).
pub fn ifb_name(dev: &str) -> String {
    format!("swi-{dev}").chars().take(15).collect()
}

/// Arriving traffic of `dev` redirected to `ifb`: an ingress qdisc (its "exists" is fine), its
/// filters flushed, and one filter that sends every packet to `ifb`'s egress, where it is shaped.
pub fn ingress_redirect_requests(dev: &str, ifb: &str) -> Vec<Vec<String>> {
    let v = |parts: &[&str]| parts.iter().map(|p| p.to_string()).collect::<Vec<_>>();
    vec![
        v(&["qdisc", "add", "dev", dev, "handle", "ffff:", "ingress"]),
        v(&["filter", "del", "dev", dev, "parent", "ffff:"]),
        v(&["filter", "add", "dev", dev, "parent", "ffff:", "protocol", "all", "prio", "1", "u32", "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", ifb]),
    ]
}

/// Whether `tc -j filter show dev IF parent ffff:` holds a redirect to `ifb`.
pub fn redirects_to(filters_json: &str, ifb: &str) -> bool {
    let Ok(serde_json::Value::Array(filters)) = serde_json::from_str::<serde_json::Value>(filters_json) else { return false };
    filters.iter().any(|f| f.pointer("/options/actions").is_some_and(|a| a.to_string().contains(&format!("\"{ifb}\""))))
}

/// The ingress fields as the conditions of the ifb device's egress.
pub fn ingress_conditions(i: &crate::spec::ingress::Ingress) -> EffectiveConditions {
    EffectiveConditions { delay: i.delay, jitter: i.jitter, loss: i.loss, rate: i.rate, ..Default::default() }
}

/// Most destinations one interface can shape apart: a prio qdisc has 16 bands, one of them
/// for everything else.
pub const MAX_DESTINATIONS: usize = 15;

/// The `tc` requests of the netem backend for an attachment with link destinations: a `prio`
/// root whose priomap sends everything to band 1 (class `1:1`, the attachment's own netem),
/// one more band per destination with its netem, and u32 filters on the destination address.
/// The filters are flushed first (the first request; "no filter" there is fine).
pub fn prio_tree_requests(dev: &str, c: &EffectiveConditions) -> Result<Vec<Vec<String>>, String> {
    if c.toward.len() > MAX_DESTINATIONS {
        return Err(format!("{} link destinations on {dev}: netem's prio tree shapes at most {MAX_DESTINATIONS} apart", c.toward.len()));
    }
    let v = |parts: &[&str]| parts.iter().map(|p| p.to_string()).collect::<Vec<_>>();
    let bands = c.toward.len() + 1;
    let mut root = v(&["qdisc", "replace", "dev", dev, "root", "handle", "1:", "prio", "bands", &bands.max(2).to_string(), "priomap"]);
    root.extend(std::iter::repeat_n("0".to_string(), 16));
    let mut out = vec![v(&["filter", "del", "dev", dev, "parent", "1:"]), root];
    let all = EffectiveConditions { toward: vec![], ..c.clone() };
    for (band, conditions) in std::iter::once(&all).chain(c.toward.iter().map(|t| &t.conditions)).enumerate() {
        let mut child = v(&["qdisc", "replace", "dev", dev, "parent", &format!("1:{}", band + 1), "handle", &format!("{}:", band + 10), "netem"]);
        child.extend(netem_options(conditions));
        out.push(child);
    }
    for (i, t) in c.toward.iter().enumerate() {
        for address in &t.addresses {
            out.push(v(&["filter", "add", "dev", dev, "parent", "1:", "protocol", "ip", "prio", "1", "u32", "match", "ip", "dst", address, "flowid", &format!("1:{}", i + 2)]));
        }
    }
    Ok(out)
}

/// The destination addresses of each band, from `tc -j filter show dev IF parent 1:` (u32
/// keys as hex `value`/`mask` at offset 16, the IPv4 destination).
pub fn read_prio_filters(json: &str) -> std::collections::BTreeMap<u32, Vec<String>> {
    let mut out: std::collections::BTreeMap<u32, Vec<String>> = Default::default();
    let Ok(serde_json::Value::Array(filters)) = serde_json::from_str::<serde_json::Value>(json) else { return out };
    for o in filters.iter().filter_map(|f| f.get("options")) {
        let text = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).map(str::to_string);
        let band = text(o.get("flowid")).and_then(|f| f.trim_start_matches('*').strip_prefix("1:").and_then(|b| u32::from_str_radix(b, 16).ok()));
        let key = o.get("match");
        let hex = |k: &str| text(key.and_then(|m| m.get(k))).and_then(|h| u32::from_str_radix(&h, 16).ok());
        let at_destination = key.and_then(|m| m.get("off")).and_then(|o| o.as_u64()) == Some(16);
        if let (Some(band), Some(value), Some(mask), true) = (band, hex("value"), hex("mask"), at_destination) {
            out.entry(band).or_default().push(format!("{}/{}", std::net::Ipv4Addr::from(value), mask.count_ones()));
        }
    }
    for addresses in out.values_mut() {
        addresses.sort();
    }
    out
}

/// What a prio tree holds, by band (1 = the attachment's own), from `tc -j qdisc show`.
pub fn read_prio_bands(json: &str) -> Option<std::collections::BTreeMap<u32, EffectiveConditions>> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let qdiscs = v.as_array()?;
    let root = qdiscs.iter().find(|q| q.get("root").and_then(|r| r.as_bool()) == Some(true))?;
    if root.get("kind")?.as_str()? != "prio" {
        return None;
    }
    Some(
        qdiscs
            .iter()
            .filter(|q| q.get("kind").and_then(|k| k.as_str()) == Some("netem"))
            .filter_map(|q| {
                let band = q.get("parent")?.as_str()?.strip_prefix("1:")?;
                Some((u32::from_str_radix(band, 16).ok()?, read_netem_options(q.get("options")?)))
            })
            .collect(),
    )
}

/// A table once loaded stays in the kernel until the qdisc goes: a request without one (uniform
/// jitter) must start from a new qdisc.
pub fn needs_fresh_qdisc(c: &EffectiveConditions) -> bool {
    c.jitter.is_some() && c.delay_distribution.is_none_or(|d| d == DelayDistribution::Uniform)
}

/// What a netem qdisc really holds, from the `options` of its entry in `tc -j qdisc show`
/// (times in seconds, probabilities as fractions, rate in bytes/s). Fields at zero are unset,
/// as is the default limit; the delay table is not printed by tc and is left unset.
pub fn read_netem_options(o: &serde_json::Value) -> EffectiveConditions {
    use crate::spec::stochastic::{Correlation, FourState, GilbertElliott};
    use crate::spec::units::{Duration, Rate};
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
    let exact = |fraction: f64| Percent((fraction * 100.0 * 1e4).round() / 1e4);
    let percent = |fraction: f64| (fraction > 0.0).then(|| exact(fraction));
    let rate = num(&["rate", "rate"]);
    let correlation = Correlation {
        delay: percent(num(&["delay", "correlation"])),
        loss: percent(num(&["loss-random", "correlation"])),
        duplicate: percent(num(&["duplicate", "correlation"])),
        corrupt: percent(num(&["corrupt", "correlation"])),
        reorder: percent(num(&["reorder", "correlation"])),
    };
    let loss_model = if o.get("loss-gemodel").is_some() {
        let at = |k: &str| num(&["loss-gemodel", k]);
        Some(LossModel::GilbertElliott(GilbertElliott {
            p: exact(at("p")),
            r: exact(at("r")),
            h: Some(exact(1.0 - at("1-h"))),
            k: Some(exact(1.0 - at("1-k"))),
        }))
    } else if o.get("loss-state").is_some() {
        let at = |k: &str| exact(num(&["loss-state", k]));
        Some(LossModel::FourState(FourState { p13: at("p13"), p31: at("p31"), p32: Some(at("p32")), p23: Some(at("p23")), p14: Some(at("p14")) }))
    } else {
        None
    };
    let limit = o.get("limit").and_then(serde_json::Value::as_u64).and_then(|l| u32::try_from(l).ok());
    EffectiveConditions {
        delay: duration(num(&["delay", "delay"])),
        jitter: duration(num(&["delay", "jitter"])),
        loss: percent(num(&["loss-random", "loss"])),
        corrupt: percent(num(&["corrupt", "corrupt"])),
        duplicate: percent(num(&["duplicate", "duplicate"])),
        reorder: percent(num(&["reorder", "reorder"])),
        rate: (rate > 0.0).then(|| Rate { bits_per_sec: (rate * 8.0).round() as u64 }),
        loss_model,
        correlation: (correlation != Correlation::default()).then_some(correlation),
        limit: limit.filter(|l| *l != NETEM_DEFAULT_LIMIT),
        ..Default::default()
    }
    .canonical()
}

/// What a netem root qdisc really holds, from `tc -j qdisc show dev IF`; `None` when the root
/// qdisc is not netem.
pub fn read_netem(json: &str) -> Option<EffectiveConditions> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let root = v.as_array()?.iter().find(|q| q.get("root").and_then(|r| r.as_bool()) == Some(true))?;
    if root.get("kind")?.as_str()? != "netem" {
        return None;
    }
    Some(read_netem_options(root.get("options")?))
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
            "qdisc replace dev eth1 root handle 1: netem limit 1000 delay 100000us 10000us 0% loss random 0.5% 0% corrupt 0.1% 0% duplicate 1% 0% reorder 25% 0% rate 750000bit"
        );
    }

    #[test]
    fn netem_request_with_loss_only_resets_every_other_field() {
        assert_eq!(
            netem_args("eth0", &cond(&[("loss", "20%")])).join(" "),
            "qdisc replace dev eth0 root handle 1: netem limit 1000 delay 0us 0us 0% loss random 20% 0% corrupt 0% 0% duplicate 0% 0% reorder 0% 0% rate 0bit"
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
    fn netem_request_carries_the_models() {
        let c = EffectiveConditions {
            loss_model: Some(serde_json::from_value(serde_json::json!({"gilbertElliott": {"p": "5%", "r": "40%", "h": "10%"}})).unwrap()),
            correlation: Some(serde_json::from_value(serde_json::json!({"delay": "25%", "duplicate": "50%"})).unwrap()),
            delay_distribution: Some(DelayDistribution::Pareto),
            limit: Some(500),
            seed: Some(7),
            ..cond(&[("delay", "30ms"), ("jitter", "10ms"), ("duplicate", "1%")])
        };
        assert_eq!(
            netem_options(&c).join(" "),
            "limit 500 delay 30000us 10000us 25% distribution pareto loss gemodel 5% 40% 90% 0% corrupt 0% 0% duplicate 1% 50% reorder 0% 0% rate 0bit"
        );
        let four = EffectiveConditions { loss_model: Some(serde_json::from_value(serde_json::json!({"fourState": {"p13": "2%", "p31": "60%"}})).unwrap()), ..Default::default() };
        assert!(netem_options(&four).join(" ").contains(" loss state 2% 60% 0% 0% 0% "));
        assert!(!needs_fresh_qdisc(&c), "a table replaces a table");
        assert!(needs_fresh_qdisc(&cond(&[("delay", "30ms"), ("jitter", "10ms")])), "uniform after a table needs a new qdisc");
    }

    #[test]
    fn reads_back_the_models() {
        // iproute2 prints the Gilbert-Elliott loss probabilities per state (1-h, 1-k).
        let json = r#"[{"kind":"netem","handle":"1:","root":true,"options":{"limit":500,"delay":{"delay":0.03,"jitter":0.01,"correlation":0.25},"loss-gemodel":{"p":0.05,"r":0.4,"1-h":0.9,"1-k":0},"duplicate":{"duplicate":0.01,"correlation":0.5},"ecn":false,"gap":0}}]"#;
        let back = read_netem(json).unwrap();
        let want = EffectiveConditions {
            loss_model: Some(serde_json::from_value(serde_json::json!({"gilbertElliott": {"p": "5%", "r": "40%", "h": "10%"}})).unwrap()),
            correlation: Some(serde_json::from_value(serde_json::json!({"delay": "25%", "duplicate": "50%"})).unwrap()),
            limit: Some(500),
            ..cond(&[("delay", "30ms"), ("jitter", "10ms"), ("duplicate", "1%")])
        }
        .canonical();
        assert_eq!(back, want);
    }

    #[test]
    fn links_make_a_prio_tree_with_a_band_and_filters_per_destination() {
        use crate::spec::links::Toward;
        let c = EffectiveConditions {
            toward: vec![Toward { to: "b".into(), addresses: vec!["10.0.1.5/32".into(), "10.0.1.6/32".into()], conditions: cond(&[("delay", "50ms")]) }],
            ..cond(&[("delay", "5ms")])
        };
        let requests: Vec<String> = prio_tree_requests("eth0", &c).unwrap().iter().map(|r| r.join(" ")).collect();
        assert_eq!(
            requests,
            [
                "filter del dev eth0 parent 1:",
                "qdisc replace dev eth0 root handle 1: prio bands 2 priomap 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0",
                "qdisc replace dev eth0 parent 1:1 handle 10: netem limit 1000 delay 5000us 0us 0% loss random 0% 0% corrupt 0% 0% duplicate 0% 0% reorder 0% 0% rate 0bit",
                "qdisc replace dev eth0 parent 1:2 handle 11: netem limit 1000 delay 50000us 0us 0% loss random 0% 0% corrupt 0% 0% duplicate 0% 0% reorder 0% 0% rate 0bit",
                "filter add dev eth0 parent 1: protocol ip prio 1 u32 match ip dst 10.0.1.5/32 flowid 1:2",
                "filter add dev eth0 parent 1: protocol ip prio 1 u32 match ip dst 10.0.1.6/32 flowid 1:2",
            ]
        );
        let too_many = EffectiveConditions { toward: vec![Toward::default(); 16], ..Default::default() };
        assert!(prio_tree_requests("eth0", &too_many).unwrap_err().contains("at most 15"));
    }

    #[test]
    fn reads_back_a_prio_tree() {
        // As iproute2 6.1 prints them.
        let filters = r#"[{"protocol":"ip","pref":1,"kind":"u32","chain":0},{"protocol":"ip","pref":1,"kind":"u32","chain":0,"options":{"fh":"800:","ht_divisor":1}},{"protocol":"ip","pref":1,"kind":"u32","chain":0,"options":{"fh":"800::800","order":2048,"key_ht":"800","bkt":"0","flowid":"1:2","not_in_hw":true,"match":{"value":"a000106","mask":"ffffffff","offmask":"","off":16}}},{"protocol":"ip","pref":1,"kind":"u32","chain":0,"options":{"fh":"800::801","order":2049,"key_ht":"800","bkt":"0","flowid":"1:2","not_in_hw":true,"match":{"value":"a000105","mask":"ffffffff","offmask":"","off":16}}}]"#;
        assert_eq!(read_prio_filters(filters)[&2], ["10.0.1.5/32", "10.0.1.6/32"]);
        let qdiscs = r#"[{"kind":"prio","handle":"1:","root":true,"options":{"bands":2,"priomap":[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0],"multiqueue":false}},{"kind":"netem","handle":"10:","parent":"1:1","options":{"limit":1000,"delay":{"delay":0.005,"jitter":0,"correlation":0},"ecn":false,"gap":0}},{"kind":"netem","handle":"11:","parent":"1:2","options":{"limit":1000,"delay":{"delay":0.05,"jitter":0,"correlation":0},"ecn":false,"gap":0}}]"#;
        let bands = read_prio_bands(qdiscs).unwrap();
        assert_eq!(bands[&1], cond(&[("delay", "5ms")]));
        assert_eq!(bands[&2], cond(&[("delay", "50ms")]));
    }

    #[test]
    fn ingress_is_redirected_to_an_ifb_device() {
        assert_eq!(ifb_name("eth0"), "swi-eth0");
        assert_eq!(ifb_name("a-very-long-interface"), "swi-a-very-long");
        let r: Vec<String> = ingress_redirect_requests("eth0", "swi-eth0").iter().map(|r| r.join(" ")).collect();
        assert_eq!(r[2], "filter add dev eth0 parent ffff: protocol all prio 1 u32 match u32 0 0 action mirred egress redirect dev swi-eth0");
        // As iproute2 6.1 prints the filter.
        let shown = r#"[{"protocol":"all","pref":1,"kind":"u32","chain":0},{"protocol":"all","pref":1,"kind":"u32","chain":0,"options":{"fh":"800:","ht_divisor":1}},{"protocol":"all","pref":1,"kind":"u32","chain":0,"options":{"fh":"800::800","order":2048,"key_ht":"800","bkt":"0","terminal":true,"match":{"value":"0","mask":"0","offmask":"","off":0},"not_in_hw":true,"actions":[{"order":1,"kind":"mirred","mirred_action":"redirect","direction":"egress","to_dev":"swi-eth0","control_action":{"type":"stolen"},"index":1,"ref":1,"bind":1}]}}]"#;
        assert!(redirects_to(shown, "swi-eth0"));
        assert!(!redirects_to(shown, "swi-eth1"));
        assert!(!redirects_to("[]", "swi-eth0"));
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
