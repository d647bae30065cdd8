//! Measured truth: round trips and loss between tasks, from inside their namespaces, so users
//! (and tests) can see the emulated link is what they asked for.

use serde::{Deserialize, Serialize};

use super::netns::run_in;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PingStats {
    pub sent: u32,
    pub received: u32,
    pub duplicates: u32,
    pub loss_percent: f64,
    pub min_ms: f64,
    pub avg_ms: f64,
    pub max_ms: f64,
    pub mdev_ms: f64,
}

/// Parses the summary of iputils `ping -q`.
pub fn parse_ping(output: &str) -> Option<PingStats> {
    let mut s = PingStats::default();
    let summary = output.lines().find(|l| l.contains("packets transmitted"))?;
    for part in summary.split(',') {
        let part = part.trim();
        let num = |p: &str| p.split_whitespace().next().and_then(|n| n.trim_start_matches('+').trim_end_matches('%').parse::<f64>().ok());
        if part.ends_with("packets transmitted") {
            s.sent = num(part)? as u32;
        } else if part.ends_with("received") {
            s.received = num(part)? as u32;
        } else if part.contains("duplicates") {
            s.duplicates = num(part).unwrap_or(0.0) as u32;
        } else if part.contains("packet loss") {
            s.loss_percent = num(part)?;
        }
    }
    if let Some(rtt) = output.lines().find(|l| l.starts_with("rtt") || l.starts_with("round-trip")) {
        let values: Vec<f64> = rtt.split('=').nth(1)?.split_whitespace().next()?.split('/').filter_map(|v| v.parse().ok()).collect();
        if let [min, avg, max, mdev] = values[..] {
            (s.min_ms, s.avg_ms, s.max_ms, s.mdev_ms) = (min, avg, max, mdev);
        }
    }
    Some(s)
}

/// Runs iputils `ping` with `flags` from the namespace of `pid` (on the host): `count` echoes
/// every `interval_ms`, a 2 s wait for the last. Its output, also when it exits 1 because some
/// replies are missing: that is a measurement, not a failure.
async fn run_ping(pid: i64, flags: &[&str], ip: &str, count: u32, interval_ms: u32) -> Result<String, String> {
    let mut args: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
    args.extend(["-c".into(), count.to_string(), "-i".into(), format!("{:.3}", f64::from(interval_ms) / 1000.0), "-W".into(), "2".into(), ip.to_string()]);
    match run_in(pid, "ping", &args).await {
        Ok(o) => Ok(o),
        Err(e) if e.message.is_empty() || e.message.contains("packet loss") => Ok(e.message),
        Err(e) => Err(e.to_string()),
    }
}

/// `count` pings every `interval_ms` from the namespace of `pid` to `ip`: the summary.
pub async fn ping(pid: i64, ip: &str, count: u32, interval_ms: u32) -> Result<PingStats, String> {
    // `-U`: time each echo when ping reads it, not when the interface got it, so a delay on
    // the input path (the userspace backend's ingress queue) counts, as it does for programs.
    let output = run_ping(pid, &["-n", "-U", "-q"], ip, count, interval_ms).await?;
    parse_ping(&output).ok_or_else(|| format!("cannot read ping's summary: {output}"))
}

/// Every echo's round trip in ms by sequence number (1..=count), `None` where no reply came:
/// what burst lengths and delay quantiles are measured from.
pub async fn ping_replies(pid: i64, ip: &str, count: u32, interval_ms: u32) -> Result<Vec<Option<f64>>, String> {
    // Timed by the kernel at the interface (no `-U`): the network's own delays, without the
    // scheduling of the pinging process, for distributions measured to the millisecond.
    let output = run_ping(pid, &["-n"], ip, count, interval_ms).await?;
    Ok(parse_replies(&output, count))
}

/// The replies of iputils `ping` (not `-q`); duplicates are left out.
pub fn parse_replies(output: &str, count: u32) -> Vec<Option<f64>> {
    let mut rtts = vec![None; count as usize];
    for line in output.lines().filter(|l| !l.contains("DUP!")) {
        let field = |name: &str| line.split_whitespace().find_map(|w| w.strip_prefix(name)).and_then(|v| v.parse::<f64>().ok());
        if let (Some(seq), Some(ms)) = (field("icmp_seq="), field("time=")) {
            if let Some(slot) = (seq as usize).checked_sub(1).and_then(|i| rtts.get_mut(i)) {
                *slot = Some(ms);
            }
        }
    }
    rtts
}

/// What a lab asks of one round trip: the delay both ways and the share of echoes lost.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Asked {
    pub rtt_ms: f64,
    pub loss_percent: f64,
}

/// Round trips measured from one task toward the tasks of other services, as the task's own
/// namespace resolves and reaches them (`labctl probe`): measured by labctl for a task of its
/// node, by the node's agent for the others (relayed as JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Probed {
    /// The task's IPv4 addresses: interface, address, prefix length.
    pub own: Vec<(String, std::net::Ipv4Addr, u8)>,
    /// The task's attachments to the lab's networks: network, MAC, address.
    pub networks: Vec<(String, String, String)>,
    pub targets: Vec<ProbedTarget>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbedTarget {
    /// The service, as named.
    pub to: String,
    pub address: String,
    pub stats: PingStats,
}

/// Pings the tasks of each of `targets` (every task, or the first each name resolves to when
/// `first_only`) from the namespace of `pid`, `count` echoes `interval_ms` apart.
pub async fn probe_from(pid: i64, networks: &[(String, String, String)], targets: &[String], count: u32, interval_ms: u32, first_only: bool) -> Result<Probed, String> {
    let own = super::netns::ipv4_addresses(pid).await.unwrap_or_default();
    let mut probed = Probed { own, networks: networks.to_vec(), targets: vec![] };
    for target in targets {
        let mut addresses = resolve(pid, target).await?;
        if first_only {
            addresses.truncate(1);
        }
        for address in addresses {
            let stats = ping(pid, &address, count, interval_ms).await?;
            probed.targets.push(ProbedTarget { to: target.clone(), address, stats });
        }
    }
    Ok(probed)
}

/// What the conditions the agents hold ask of a round trip between `from_ip` (a task of
/// `from`, the sender) and `to_ip` (a task of `to`) on `network`: `from`'s egress toward
/// `to_ip`, then `to`'s egress toward `from_ip` (links included). Services with no report on
/// the network are unshaped there.
pub fn asked_round_trip(
    reports: &[crate::status::TaskShaping],
    (from, from_ip): (&str, std::net::Ipv4Addr),
    (to, to_ip): (&str, std::net::Ipv4Addr),
    network: &str,
) -> Asked {
    use crate::spec::EffectiveConditions;
    let held = |service: &str| -> EffectiveConditions {
        let attachment = reports.iter().filter(|r| r.service == service).flat_map(|r| &r.attachments).find(|a| a.network == network);
        attachment.map(|a| a.desired.clone()).unwrap_or_default()
    };
    let (sender, receiver) = (held(from), held(to));
    let delay = |c: &EffectiveConditions| c.delay.map(|d| d.micros as f64 / 1000.0).unwrap_or(0.0);
    let loss = |c: &EffectiveConditions| match c.loss_model {
        Some(m) => m.mean_loss(),
        None => c.loss.map(|l| l.fraction()).unwrap_or(0.0),
    };
    let incoming = |c: &EffectiveConditions| {
        let i = c.ingress.unwrap_or_default();
        (i.delay.map(|d| d.micros as f64 / 1000.0).unwrap_or(0.0), i.loss.map(|l| l.fraction()).unwrap_or(0.0))
    };
    // Each way: the sender's egress toward the other (its links), then the other's ingress.
    let (there, back) = (crate::spec::links::conditions_for(&sender, to_ip), crate::spec::links::conditions_for(&receiver, from_ip));
    let ((in_to_delay, in_to_loss), (in_from_delay, in_from_loss)) = (incoming(&receiver), incoming(&sender));
    let delivered = (1.0 - loss(there)) * (1.0 - in_to_loss) * (1.0 - loss(back)) * (1.0 - in_from_loss);
    Asked { rtt_ms: delay(there) + in_to_delay + delay(back) + in_from_delay, loss_percent: (1.0 - delivered) * 100.0 }
}

/// Loss rate and mean length of runs of consecutive losses.
pub fn loss_runs(lost: &[bool]) -> (f64, f64) {
    let losses = lost.iter().filter(|l| **l).count();
    let runs = lost.windows(2).filter(|w| w[1] && !w[0]).count() + usize::from(lost.first() == Some(&true));
    (losses as f64 / lost.len().max(1) as f64, losses as f64 / runs.max(1) as f64)
}

/// The `q` quantile (0..1) of `values` (sorted here).
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(((q * v.len() as f64) as usize).min(v.len().saturating_sub(1))).copied().unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_asked_round_trip_takes_each_way_and_its_links() {
        use crate::spec::links::Toward;
        use crate::spec::EffectiveConditions;
        use crate::status::{AttachmentShaping, TaskShaping};
        let cond = |f: &[(&str, &str)]| EffectiveConditions::from_fields(f).unwrap();
        let report = |service: &str, desired: EffectiveConditions| TaskShaping {
            service: service.into(),
            attachments: vec![AttachmentShaping { network: "p_lan".into(), desired, ..Default::default() }],
            ..Default::default()
        };
        let a_to_c = Toward { to: "c".into(), addresses: vec!["10.0.0.4/32".into()], conditions: cond(&[("delay", "50ms"), ("loss", "10%")]) };
        let b_in = EffectiveConditions { ingress: Some(serde_json::from_value(serde_json::json!({"delay": "3ms"})).unwrap()), ..cond(&[("delay", "1ms")]) };
        let reports = [report("a", EffectiveConditions { toward: vec![a_to_c], ..cond(&[("delay", "5ms")]) }), report("b", b_in)];
        let ip = |s: &str| s.parse::<std::net::Ipv4Addr>().unwrap();
        let to_b = asked_round_trip(&reports, ("a", ip("10.0.0.2")), ("b", ip("10.0.0.3")), "p_lan");
        assert_eq!(to_b, Asked { rtt_ms: 9.0, loss_percent: 0.0 }, "a's 5 ms out, b's ingress 3 ms, b's 1 ms back");
        let to_c = asked_round_trip(&reports, ("a", ip("10.0.0.2")), ("c", ip("10.0.0.4")), "p_lan");
        assert!((to_c.rtt_ms - 50.0).abs() < 1e-9 && (to_c.loss_percent - 10.0).abs() < 1e-9, "{to_c:?}");
    }

    #[test]
    fn reads_each_reply() {
        let out = "PING 10.9.0.2 (10.9.0.2) 56(84) bytes of data.\n64 bytes from 10.9.0.2: icmp_seq=1 ttl=64 time=50.3 ms\n64 bytes from 10.9.0.2: icmp_seq=3 ttl=64 time=49.1 ms\n64 bytes from 10.9.0.2: icmp_seq=3 ttl=64 time=49.2 ms (DUP!)\n";
        assert_eq!(parse_replies(out, 4), [Some(50.3), None, Some(49.1), None]);
        assert_eq!(loss_runs(&[false, true, true, false, true]), (0.6, 1.5));
        assert_eq!(quantile(&[3.0, 1.0, 2.0, 4.0], 0.5), 3.0);
    }

    #[test]
    fn reads_iputils_summaries() {
        let out = "PING 10.0.1.3 (10.0.1.3) 56(84) bytes of data.\n\n--- 10.0.1.3 ping statistics ---\n500 packets transmitted, 398 received, +12 duplicates, 20.4% packet loss, time 5010ms\nrtt min/avg/max/mdev = 100.101/101.567/112.829/0.480 ms\n";
        let s = parse_ping(out).unwrap();
        assert_eq!((s.sent, s.received, s.duplicates), (500, 398, 12));
        assert_eq!(s.loss_percent, 20.4);
        assert_eq!((s.min_ms, s.avg_ms, s.max_ms, s.mdev_ms), (100.101, 101.567, 112.829, 0.48));
    }

    #[test]
    fn reads_total_loss() {
        let out = "--- x ping statistics ---\n5 packets transmitted, 0 received, 100% packet loss, time 4081ms\n";
        assert_eq!(parse_ping(out).unwrap().loss_percent, 100.0);
    }
}

/// Resolves a name as the task itself would: through Docker's embedded DNS (127.0.0.11) in the
/// task's namespace. With `endpointMode: dnsrr` a service name gives every task's address.
pub async fn resolve(pid: i64, name: &str) -> Result<Vec<String>, String> {
    let out = run_in(pid, "busybox", &["nslookup".into(), name.into(), "127.0.0.11".into()]).await.map_err(|e| e.to_string())?;
    Ok(parse_nslookup(&out))
}

/// The answer addresses of busybox `nslookup` (the server's own address line comes first).
pub fn parse_nslookup(out: &str) -> Vec<String> {
    let mut addrs: Vec<String> = out
        .split("Name:")
        .skip(1)
        .flat_map(|answer| answer.lines().filter_map(|l| l.trim().strip_prefix("Address:")).map(|a| a.trim().to_string()))
        .filter(|a| a.parse::<std::net::Ipv4Addr>().is_ok())
        .collect();
    addrs.sort();
    addrs.dedup();
    addrs
}

#[cfg(test)]
mod dns_tests {
    #[test]
    fn reads_busybox_nslookup_answers() {
        let out = "Server:\t\t127.0.0.11\nAddress:\t127.0.0.11:53\n\nNon-authoritative answer:\nName:\tb\nAddress: 10.0.1.7\nName:\tb\nAddress: 10.0.1.5\n\n";
        assert_eq!(super::parse_nslookup(out), ["10.0.1.5", "10.0.1.7"]);
    }
}
