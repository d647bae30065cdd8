//! End-to-end: traffic conditions applied inside real tasks by the node agent, measured from
//! inside the tasks' namespaces. This machine has no netem, so these run the userspace backend.

mod common;

use std::time::{Duration, Instant};

use common::*;

const READY: Duration = Duration::from_secs(90);

fn two_services(name: &str, lan_conditions: &str, a_extra: &str) -> String {
    format!(
        "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {{name: {name}}}\nspec:\n  defaults: {{image: labbox:latest, init: true, stopGracePeriod: 1s, command: [sleep, \"100000\"], networks: [lan]}}\n  networks:\n    lan: {{{lan_conditions}}}\n  services:\n    a: {{{a_extra}}}\n    b: {{}}\n"
    )
}

fn within(measured: f64, want: f64, tolerance: f64) -> bool {
    (measured - want).abs() <= want * tolerance
}

#[test]
fn delay_jitter_edits_and_removal_change_the_measured_rtt_without_restarting_tasks() {
    let mut lab = Lab::new();
    lab.cleanup.push("shp".into());
    remove_lab_objects("shp");
    lab.write("shp.yaml", &two_services("shp", "conditions: {delay: 50ms}", ""));
    lab.start_labd();
    wait_shaped(&lab, "shp", READY);
    let containers = (running_container_of("shp_a"), running_container_of("shp_b"));

    let s = probe(&lab, "shp", "a", "b", 100, 10);
    assert!(within(avg_rtt(&s), 100.0, 0.15), "delay 50ms on both egresses: rtt {s}");
    assert_eq!(s["loss_percent"], 0.0, "no loss asked: {s}");
    let steady_mdev = s["mdev_ms"].as_f64().unwrap();

    lab.write("shp.yaml", &two_services("shp", "conditions: {delay: 50ms, jitter: 20ms}", ""));
    let jittery = eventually("jitter to widen the spread", READY, || {
        let s = probe(&lab, "shp", "a", "b", 100, 10);
        if s["mdev_ms"].as_f64().unwrap() > steady_mdev + 3.0 { Ok(s) } else { Err(s.to_string()) }
    });
    assert!(within(avg_rtt(&jittery), 100.0, 0.15), "jitter keeps the mean: {jittery}");

    lab.write("shp.yaml", &two_services("shp", "conditions: {delay: 20ms}", ""));
    eventually("the edited delay to be measured", READY, || {
        let s = probe(&lab, "shp", "a", "b", 50, 10);
        if within(avg_rtt(&s), 40.0, 0.15) { Ok(()) } else { Err(s.to_string()) }
    });

    lab.write("shp.yaml", &two_services("shp", "", ""));
    eventually("unshaped rtt after removing conditions", READY, || {
        let s = probe(&lab, "shp", "a", "b", 50, 10);
        if avg_rtt(&s) < 5.0 { Ok(()) } else { Err(s.to_string()) }
    });
    let a = running_container_of("shp_a");
    let rules = String::from_utf8_lossy(&in_netns(&a, &["iptables-save"]).stdout).to_string();
    assert!(!rules.contains("swarmlab"), "rules left behind:\n{rules}");
    assert_eq!((running_container_of("shp_a"), running_container_of("shp_b")), containers, "tasks were restarted");
}

#[test]
fn loss_is_measured_at_its_rate_on_1000_probes() {
    let mut lab = Lab::new();
    lab.cleanup.push("lossy".into());
    remove_lab_objects("lossy");
    // Loss on a's egress only, so the round trip loses what was asked.
    lab.write("lossy.yaml", &two_services("lossy", "", "conditions: {loss: 20%}"));
    lab.start_labd();
    wait_shaped(&lab, "lossy", READY);
    // 1000 probes: a standard deviation of 1.26%, so ±6 is 4.75 of them (500 left 3.4: one
    // run in ~1200 would fail for nothing).
    let s = probe(&lab, "lossy", "a", "b", 1000, 5);
    let loss = s["loss_percent"].as_f64().unwrap();
    assert!((14.0..=26.0).contains(&loss), "loss 20% ± 6%: measured {loss} ({s})");
}

#[test]
fn rate_limits_a_tcp_transfer_and_duplicate_and_corrupt_show_in_counters() {
    let mut lab = Lab::new();
    lab.cleanup.push("rated".into());
    remove_lab_objects("rated");
    lab.write("rated.yaml", &two_services("rated", "", "conditions: {rate: 1mbit, duplicate: 10%, corrupt: 5%}"));
    lab.start_labd();
    wait_shaped(&lab, "rated", READY);
    let (a, b) = (running_container_of("rated_a"), running_container_of("rated_b"));
    let b_ip = ip_on(&b, "rated_lan");

    // A TCP sink in b's namespace that answers once the sender closes.
    let server = "import socket,sys\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', 5001)); s.listen(1); s.settimeout(60)\nprint('listening', file=sys.stderr, flush=True)\nc,_=s.accept()\nn=0\nwhile True:\n    d=c.recv(65536)\n    if not d: break\n    n+=len(d)\nc.sendall(str(n).encode()); c.close()\n";
    let mut sink = receiver_in_netns(&b, server);
    let bytes = 375_000u64; // 3 s at 1 Mbit/s
    let client = format!("import socket,time\nc=socket.create_connection(('{b_ip}', 5001))\nt=time.time()\nc.sendall(b'x'*{bytes})\nc.shutdown(socket.SHUT_WR)\nn=int(c.recv(64))\nprint(n, time.time()-t)\n");
    let start = Instant::now();
    let out = in_netns(&a, &["python3", "-c", &client]);
    let _ = sink.kill();
    let _ = sink.wait();
    assert!(out.status.success(), "transfer failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut parts = text.split_whitespace();
    let received: u64 = parts.next().unwrap().parse().unwrap();
    let secs: f64 = parts.next().unwrap().parse().unwrap();
    assert_eq!(received, bytes, "TCP delivers every byte despite corruption and duplicates");
    let mbit = received as f64 * 8.0 / secs / 1e6;
    // The token bucket limits what goes on the wire: the 10% duplicates and the retransmits of
    // the 5% corrupted segments take their share of 1 Mbit/s, so the payload gets about
    // 0.95 / 1.1 = 0.86 of it, less while TCP recovers (0.77-0.86 measured); never more than
    // the rate. The rate alone is measured to 5% in tests/netem_uml.rs.
    println!("rate 1mbit with duplicate 10% and corrupt 5%: {mbit:.3} Mbit/s of payload");
    assert!((0.70..=1.05).contains(&mbit), "rate 1mbit: measured {mbit:.3} Mbit/s in {secs:.2} s (wall {:?})", start.elapsed());

    probe(&lab, "rated", "a", "b", 200, 5);
    let report = task_reports(&lab, "rated").into_iter().find(|r| r["service"] == "a").expect("a's report");
    let counters = &report["attachments"][0]["counters"];
    assert!(counters["duplicated"].as_u64().unwrap() > 0, "{counters}");
    assert!(counters["corrupted"].as_u64().unwrap() > 0, "{counters}");
    let applied = &report["attachments"][0]["applied"];
    assert_eq!(applied["rate"], "1mbit", "rate read back from the kernel: {report}");
}

#[test]
fn a_preset_applies_its_values_and_a_killed_task_is_shaped_again() {
    let mut lab = Lab::new();
    lab.cleanup.extend(["preset".to_string(), "plain".to_string()]);
    remove_lab_objects("preset");
    remove_lab_objects("plain");
    let _ = docker(&["service", "rm", "unowned_sleeper"]);
    lab.write("preset.yaml", &two_services("preset", "conditions: {preset: regular-3g}", ""));
    lab.write("plain.yaml", &two_services("plain", "", ""));
    docker_ok(&["service", "create", "--detach", "--name", "unowned_sleeper", "--init", "labbox:latest", "sleep", "100000"]);
    lab.start_labd();
    wait_shaped(&lab, "preset", READY);
    lab.wait_phase("plain", "Ready", READY);

    let report = task_reports(&lab, "preset").into_iter().find(|r| r["service"] == "a").expect("a's report");
    let applied = &report["attachments"][0]["applied"];
    assert_eq!((applied["delay"].as_str(), applied["rate"].as_str()), (Some("100ms"), Some("750kbit")), "{report}");
    let s = probe(&lab, "preset", "a", "b", 30, 20);
    assert!(within(avg_rtt(&s), 200.0, 0.15), "regular-3g: 100ms each way: {s}");

    // A killed task's replacement is shaped again, with nobody touching anything.
    let old = running_container_of("preset_a");
    docker_ok(&["kill", &old]);
    let new = eventually("a replacement task", READY, || {
        let c = running_container_of("preset_a");
        if c != old { Ok(c) } else { Err("same container".into()) }
    });
    let started = Instant::now();
    eventually("the replacement shaped", Duration::from_secs(30), || {
        let rules = String::from_utf8_lossy(&in_netns(&new, &["iptables-save"]).stdout).to_string();
        if rules.contains("NFQUEUE") { Ok(()) } else { Err("no rule yet".into()) }
    });
    eprintln!("replacement shaped {:?} after it was seen running", started.elapsed());
    let s = probe(&lab, "preset", "a", "b", 30, 20);
    assert!(within(avg_rtt(&s), 200.0, 0.15), "the replacement is shaped: {s}");

    // Tasks of another lab and unowned containers are never shaped.
    for service in ["plain_a", "plain_b", "unowned_sleeper"] {
        let c = running_container_of(service);
        let rules = String::from_utf8_lossy(&in_netns(&c, &["iptables-save"]).stdout).to_string();
        assert!(!rules.contains("swarmlab") && !rules.contains("NFQUEUE"), "{service} was shaped:\n{rules}");
        let qdisc = String::from_utf8_lossy(&in_netns(&c, &["tc", "qdisc", "show"]).stdout).to_string();
        assert!(!qdisc.contains("tbf"), "{service} has a rate limit: {qdisc}");
    }
    assert!(task_reports(&lab, "plain").is_empty());
    docker_ok(&["service", "rm", "unowned_sleeper"]);
}

#[test]
fn a_rule_deleted_by_hand_is_restored_and_stopping_the_agent_leaves_traffic_flowing() {
    let mut lab = Lab::new();
    lab.cleanup.push("heal".into());
    remove_lab_objects("heal");
    lab.write("heal.yaml", &two_services("heal", "conditions: {delay: 30ms, rate: 50mbit}", ""));
    lab.start_labd();
    wait_shaped(&lab, "heal", READY);
    let a = running_container_of("heal_a");
    // Each rule deleted by hand is back at the agent's next pass (every 500 ms): the agent hears
    // the change in the task's namespace; it reads back on its own only every 60 s.
    let flushed = Instant::now();
    let out = in_netns(&a, &["iptables", "-w", "-F", "OUTPUT"]);
    assert!(out.status.success());
    eventually("the agent to restore the rule", Duration::from_secs(15), || {
        let rules = String::from_utf8_lossy(&in_netns(&a, &["iptables", "-w", "-S", "OUTPUT"]).stdout).to_string();
        if rules.contains("NFQUEUE") { Ok(()) } else { Err("missing".into()) }
    });
    let rule_back = flushed.elapsed();
    let qdiscs = String::from_utf8_lossy(&in_netns(&a, &["tc", "qdisc", "show"]).stdout).to_string();
    let bucket = |line: &str| line.starts_with("qdisc tbf ") && line.contains(" root ");
    let dev = qdiscs.lines().find(|l| bucket(l)).and_then(|l| l.split(" dev ").nth(1)?.split_whitespace().next()).map(str::to_string);
    let dev = dev.unwrap_or_else(|| panic!("no token bucket for the lab's rate: {qdiscs}"));
    let deleted = Instant::now();
    assert!(in_netns(&a, &["tc", "qdisc", "del", "dev", &dev, "root"]).status.success());
    eventually("the agent to restore the token bucket", Duration::from_secs(15), || {
        let qdiscs = String::from_utf8_lossy(&in_netns(&a, &["tc", "qdisc", "show", "dev", &dev]).stdout).to_string();
        if qdiscs.lines().any(bucket) { Ok(()) } else { Err(qdiscs) }
    });
    let qdisc_back = deleted.elapsed();
    println!("restored: iptables rule after {rule_back:?}, qdisc after {qdisc_back:?}");
    assert!(rule_back < Duration::from_millis(2500) && qdisc_back < Duration::from_millis(2500), "heard and repaired at the next pass, not at the 60 s read-back: rule {rule_back:?}, qdisc {qdisc_back:?}");
    let s = probe(&lab, "heal", "a", "b", 30, 10);
    assert!(within(avg_rtt(&s), 60.0, 0.15), "{s}");

    // SIGKILL: no clean-up runs, yet the fail-open queue keeps traffic flowing.
    let pid = std::process::Command::new("pgrep").args(["-f", &format!("labd --labs {}", lab.labs.display())]).output().unwrap();
    let pid = String::from_utf8_lossy(&pid.stdout).lines().next().unwrap().to_string();
    std::process::Command::new("kill").args(["-KILL", &pid]).status().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let a_pid = pid_of(&a);
    let b_ip = ip_on(&running_container_of("heal_b"), "heal_lan");
    let out = std::process::Command::new("nsenter").arg(format!("--net=/proc/{a_pid}/ns/net")).args(["ping", "-n", "-q", "-c", "20", "-i", "0.05", &b_ip]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains(" 0% packet loss"), "traffic stalled after the agent died:\n{text}");
}

/// The network's 2 ms each way and nothing of a link's 40 or 80: no echo under the network's
/// delay, the average far from the links'. Not the average within 50% of 4 ms: on 2 busy cores
/// the userspace backend's worker adds a few ms now and then (CI measured 6.0 ms, min 4.7).
fn network_delay_only(stats: &serde_json::Value) -> bool {
    let min = stats["min_ms"].as_f64().unwrap_or(0.0);
    min >= 3.8 && avg_rtt(stats) < 12.0
}

/// Each service's NFQUEUE counters (seen, dropped) from its first task's report, by service;
/// `None` when the backend keeps none (netem).
fn queue_counts(lab: &Lab, name: &str) -> Option<std::collections::BTreeMap<String, [u64; 2]>> {
    task_reports(lab, name)
        .into_iter()
        .map(|r| {
            let c = &r["attachments"][0]["counters"];
            Some((r["service"].as_str()?.to_string(), [c["seen"].as_u64()?, c["dropped"].as_u64()?]))
        })
        .collect()
}

/// `queue_counts` once the agents' reports have stopped changing for 2 s (a pass writes them
/// every half second): everything that has passed is in.
fn settled_queue_counts(lab: &Lab, name: &str) -> Option<std::collections::BTreeMap<String, [u64; 2]>> {
    let mut last = (queue_counts(lab, name), Instant::now());
    eventually("the agents' counters to settle", READY, || {
        let now = queue_counts(lab, name);
        if now != last.0 {
            last = (now, Instant::now());
            return Err(format!("{:?}", last.0));
        }
        if last.1.elapsed() >= Duration::from_secs(2) { Ok(now) } else { Err(format!("{now:?}")) }
    })
}

fn linked_lab(b_replicas: u32) -> String {
    format!(
        "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {{name: pairs}}\nspec:\n  defaults: {{image: labbox:latest, init: true, stopGracePeriod: 1s, command: [sleep, \"100000\"], networks: [lan]}}\n  networks:\n    lan: {{conditions: {{delay: 2ms}}}}\n  services:\n    a: {{}}\n    b: {{replicas: {b_replicas}}}\n    c: {{}}\n  links:\n  - {{from: a, to: b, conditions: {{delay: 40ms}}}}\n  - {{from: b, to: c, symmetric: true, conditions: {{delay: 15ms, loss: 10%}}}}\n"
    )
}

/// Per-pair delays on one interface, following the destination's tasks as they come, and
/// `labctl probe --matrix` comparing every pair with what the lab asks.
#[test]
fn links_give_each_pair_its_own_delay_and_follow_new_tasks() {
    let mut lab = Lab::new();
    lab.cleanup.push("pairs".into());
    remove_lab_objects("pairs");
    lab.write("pairs.yaml", &linked_lab(1));
    lab.start_labd();
    wait_shaped(&lab, "pairs", READY);

    // a→b 40 ms out, 2 ms back (b's egress toward a is the network's); a→c 2 + 2.
    let ab = probe(&lab, "pairs", "a", "b", 40, 20);
    let ac = probe(&lab, "pairs", "a", "c", 40, 20);
    assert!(within(avg_rtt(&ab), 42.0, 0.15), "a→b link: {ab}");
    assert!(network_delay_only(&ac), "a→c keeps the network's delay: {ac}");
    // b↔c symmetric: 15 ms and 10% loss each way.
    let before = settled_queue_counts(&lab, "pairs");
    let bc = probe(&lab, "pairs", "b", "c", 300, 10);
    assert!(within(avg_rtt(&bc), 30.0, 0.15), "b↔c symmetric link: {bc}");
    let loss = bc["loss_percent"].as_f64().unwrap();
    let lost = (loss * 3.0).round() as u64;
    match (before, settled_queue_counts(&lab, "pairs")) {
        // The userspace backend counts what it drops: every round trip lost is one the link
        // dropped (b's echo or c's reply), none lost elsewhere, and each side drops its 10%.
        // (Only this link drops anything; what else passed meanwhile is counted as seen.)
        (Some(before), Some(after)) => {
            let d = |s: &str, i: usize| after[s][i].saturating_sub(before[s][i]);
            let [(b_seen, b_dropped), (c_seen, c_dropped)] = [(d("b", 0), d("b", 1)), (d("c", 0), d("c", 1))];
            assert_eq!(lost, b_dropped + c_dropped, "round trips lost ({bc}) against echoes dropped by b's link ({b_dropped} of {b_seen}) and replies by c's ({c_dropped} of {c_seen})");
            // 10% of ~570 packets: 5 standard deviations either side.
            let rate = (b_dropped + c_dropped) as f64 / (b_seen + c_seen) as f64;
            let sigma = (0.1 * 0.9 / (b_seen + c_seen) as f64).sqrt();
            assert!((rate - 0.1).abs() < 5.0 * sigma, "the links drop {:.1}% of packets, 10% asked (b {b_dropped}/{b_seen}, c {c_dropped}/{c_seen})", rate * 100.0);
            println!("b↔c: {lost} of 300 round trips lost ({loss}%): b's link dropped {b_dropped} of {b_seen} echoes, c's {c_dropped} of {c_seen} replies");
        }
        _ => assert!((10.0..=29.0).contains(&loss), "10% each way loses ~19% of round trips: {loss} ({bc})"),
    }

    // Every pair beside what the lab asks.
    let out = lab.labctl(&["probe", "pairs", "--matrix", "-c", "20", "--interval", "20", "-o", "json"]);
    assert!(out.status.success(), "labctl probe --matrix: {}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 6, "3 services, every ordered pair: {rows:?}");
    for r in &rows {
        let (measured, asked) = (r["stats"]["avg_ms"].as_f64().unwrap(), r["asked"]["rtt_ms"].as_f64().expect("asked from the agents' reports"));
        // 5 ms: the userspace backend's worker shares 2 cores with everything (CI saw +2 ms).
        assert!((measured - asked).abs() < 5.0 + asked * 0.1, "{} → {}: measured {measured} ms, asked {asked} ms", r["from"], r["to"]);
    }
    let table = lab.labctl(&["probe", "pairs", "--matrix", "-c", "5", "--interval", "20"]);
    let table = String::from_utf8_lossy(&table.stdout).to_string();
    println!("{table}");
    assert!(table.contains("(42.0)") && table.contains("(30.0)"), "asked RTTs in the matrix:\n{table}");

    // A second task of b: a's link reaches it too, without touching a's task.
    let a_task = running_container_of("pairs_a");
    lab.write("pairs.yaml", &linked_lab(2));
    let both = eventually("a's link toward both tasks of b", READY, || {
        let out = lab.labctl(&["probe", "pairs", "a", "--to", "b", "-c", "20", "--interval", "20", "-o", "json"]);
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        let rtts: Vec<f64> = rows.iter().map(|r| r["stats"]["avg_ms"].as_f64().unwrap_or(0.0)).collect();
        if rtts.len() == 2 && rtts.iter().all(|r| within(*r, 42.0, 0.15)) { Ok(rtts) } else { Err(format!("{rtts:?}")) }
    });
    println!("a → both tasks of b: {both:?} ms");
    assert_eq!(running_container_of("pairs_a"), a_task, "a's task was not restarted");

    // A schedule step on one link: a→b slows to 80 ms; a→c keeps the network's delay.
    let scheduled = format!("{}  schedule:\n    steps:\n    - {{at: 1s, service: a, to: b, conditions: {{delay: 80ms}}}}\n", linked_lab(2));
    lab.write("pairs.yaml", &scheduled);
    let slowed = eventually("the step's delay on a→b", READY, || {
        let out = lab.labctl(&["probe", "pairs", "a", "--to", "b", "-c", "20", "--interval", "20", "-o", "json"]);
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        let rtts: Vec<f64> = rows.iter().map(|r| r["stats"]["avg_ms"].as_f64().unwrap_or(0.0)).collect();
        if rtts.len() == 2 && rtts.iter().all(|r| within(*r, 82.0, 0.15)) { Ok(rtts) } else { Err(format!("{rtts:?}")) }
    });
    let ac = probe(&lab, "pairs", "a", "c", 40, 20);
    assert!(network_delay_only(&ac), "a→c is not on the step's link: {ac}");
    println!("a → b under the step: {slowed:?} ms; a → c {} ms", avg_rtt(&ac));
    assert_eq!(running_container_of("pairs_a"), a_task, "a's task was not restarted by the step");
}

/// A router task (a gateway between two lab networks): what it forwards leaves and arrives by
/// its interfaces, so its conditions hold for that traffic as for its own (as netem's qdisc
/// and ifb do): 40 ms on each egress, 10 ms on each ingress.
#[test]
fn a_router_task_s_conditions_hold_for_the_traffic_it_forwards() {
    let mut lab = Lab::new();
    lab.cleanup.push("route".into());
    remove_lab_objects("route");
    let text = "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {name: route}\nspec:\n  defaults: {image: labbox:latest, init: true, stopGracePeriod: 1s, command: [sleep, \"100000\"]}\n  networks:\n    left: {subnet: 10.78.1.0/24}\n    right: {subnet: 10.78.2.0/24}\n  services:\n    a: {networks: [left]}\n    r:\n      networks: [left, right]\n      sysctls: {net.ipv4.ip_forward: \"1\"}\n      conditions: {delay: 40ms, ingress: {delay: 10ms}}\n    b: {networks: [right]}\n";
    lab.write("route.yaml", text);
    lab.start_labd();
    wait_shaped(&lab, "route", READY);
    let (a, r, b) = (running_container_of("route_a"), running_container_of("route_r"), running_container_of("route_b"));
    let (r_left, r_right, b_ip) = (ip_on(&r, "route_left"), ip_on(&r, "route_right"), ip_on(&b, "route_right"));
    for (task, net, via) in [(&a, "10.78.2.0/24", &r_left), (&b, "10.78.1.0/24", &r_right)] {
        let out = in_netns(task, &["ip", "route", "add", net, "via", via]);
        assert!(out.status.success(), "route: {}", String::from_utf8_lossy(&out.stderr));
    }
    let rtt = |to: &str| {
        let out = in_netns(&a, &["ping", "-n", "-q", "-c", "10", "-i", "0.2", "-W", "2", to]);
        let stats = swarmlab::shaping::measure::parse_ping(&String::from_utf8_lossy(&out.stdout)).expect("ping's summary");
        assert_eq!(stats.loss_percent, 0.0, "{stats:?}");
        stats.avg_ms
    };
    // To r: in by r's ingress, back out by its egress. Through r: each way in and out.
    let (to_r, through_r) = (rtt(&r_left), rtt(&b_ip));
    println!("a → r {to_r:.1} ms (asked 50), a → b through r {through_r:.1} ms (asked 100)");
    assert!(within(to_r, 50.0, 0.15), "a → r: {to_r} ms");
    assert!(within(through_r, 100.0, 0.15), "a → b through r: {through_r} ms, its conditions on the traffic it forwards");
}

/// Arriving traffic limited (a download) while sending stays fast, and Gilbert-Elliott loss on
/// real tasks comes in bursts of the model's length.
/// TCP from `sender` to `receiver`: Mbit/s as the receiver counts it (first byte to last).
fn transfer(sender: &str, receiver: &str, receiver_ip: &str, bytes: u64) -> f64 {
    let sink = "import socket,sys,time\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', 5002)); s.listen(1); s.settimeout(60)\nprint('listening', file=sys.stderr, flush=True)\nc,_=s.accept()\nn=0\nt=None\nwhile True:\n    d=c.recv(65536)\n    if not d: break\n    t=t or time.time()\n    n+=len(d)\nprint(n*8/(time.time()-t)/1e6)\n";
    let server = receiver_in_netns(receiver, sink);
    let send = format!("import socket\nc=socket.create_connection(('{receiver_ip}', 5002))\nc.sendall(b'x'*{bytes})\nc.close()\n");
    let out = in_netns(sender, &["python3", "-c", &send]);
    assert!(out.status.success(), "send failed: {}", String::from_utf8_lossy(&out.stderr));
    let got = server.wait_with_output().unwrap();
    String::from_utf8_lossy(&got.stdout).trim().parse().unwrap_or(0.0)
}

/// A link's own rate on the userspace backend: the queue worker paces each destination, so a
/// link slower than its attachment and the attachment's rate toward everyone else both hold.
#[test]
fn a_link_s_rate_holds_toward_its_destination_and_the_attachment_s_toward_the_rest() {
    let mut lab = Lab::new();
    lab.cleanup.push("paced".into());
    remove_lab_objects("paced");
    let text = "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {name: paced}\nspec:\n  defaults: {image: labbox:latest, init: true, stopGracePeriod: 1s, command: [sleep, \"100000\"], networks: [lan]}\n  networks:\n    lan: {}\n  services:\n    a: {conditions: {rate: 8mbit}}\n    b: {}\n    c: {}\n  links:\n  - {from: a, to: b, conditions: {rate: 1mbit}}\n";
    lab.write("paced.yaml", text);
    lab.start_labd();
    wait_shaped(&lab, "paced", READY);
    let report = task_reports(&lab, "paced").into_iter().find(|r| r["service"] == "a").expect("a's report");
    let attachment = &report["attachments"][0];
    assert!(attachment["unsupported"].as_array().is_none_or(|u| u.is_empty()), "nothing refused: {report}");
    assert_eq!((attachment["applied"]["rate"].as_str(), attachment["applied"]["toward"][0]["conditions"]["rate"].as_str()), (Some("8mbit"), Some("1mbit")), "{report}");

    let (a, b, c) = (running_container_of("paced_a"), running_container_of("paced_b"), running_container_of("paced_c"));
    let to_b = transfer(&a, &b, &ip_on(&b, "paced_lan"), 375_000);
    let to_c = transfer(&a, &c, &ip_on(&c, "paced_lan"), 2_000_000);
    println!("a → b {to_b:.3} Mbit/s (link rate 1mbit), a → c {to_c:.2} Mbit/s (a's rate 8mbit)");
    assert!(within(to_b, 1.0, 0.25), "a → b through its 1mbit link: {to_b:.3} Mbit/s");
    assert!(within(to_c, 8.0, 0.25), "a → c at a's own 8mbit, not the link's: {to_c:.2} Mbit/s");
}

#[test]
fn ingress_rate_limits_a_download_and_gilbert_elliott_loss_comes_in_bursts() {
    let mut lab = Lab::new();
    lab.cleanup.push("inbound".into());
    remove_lab_objects("inbound");
    // The download first, with the ingress rate alone: a's egress carries the download's ACKs, and
    // Gilbert-Elliott bursts there (three ACKs in a row lost) stall a 1 Mbit/s TCP window into
    // retransmission timeouts (CI measured 0.596 Mbit/s with both on), which is TCP, not the limit.
    lab.write("inbound.yaml", &two_services("inbound", "", "conditions: {ingress: {rate: 1mbit}}"));
    lab.start_labd();
    wait_shaped(&lab, "inbound", READY);
    let (a, b) = (running_container_of("inbound_a"), running_container_of("inbound_b"));
    let (a_ip, b_ip) = (ip_on(&a, "inbound_lan"), ip_on(&b, "inbound_lan"));

    let download = transfer(&b, &a, &a_ip, 375_000);
    assert!(within(download, 1.0, 0.25), "a downloads at its ingress rate 1mbit: {download:.3} Mbit/s");
    let upload = transfer(&a, &b, &b_ip, 2_000_000);
    assert!(upload > 5.0, "a's uploads are not limited by its ingress: {upload:.1} Mbit/s");
    println!("download {download:.3} Mbit/s (ingress rate 1mbit), upload {upload:.1} Mbit/s");

    // a's echoes leave through Gilbert-Elliott loss: bursts of 1/r = 2.5 on average, 11% lost.
    lab.write("inbound.yaml", &two_services("inbound", "", "conditions: {ingress: {rate: 1mbit}, lossModel: {gilbertElliott: {p: 5%, r: 40%}}}"));
    eventually("a's agent to apply the Gilbert-Elliott model", READY, || {
        let report = task_reports(&lab, "inbound").into_iter().find(|r| r["service"] == "a").ok_or_else(|| "no report of a".to_string())?;
        let applied = &report["attachments"][0]["applied"];
        if applied["lossModel"]["gilbertElliott"].is_object() { Ok(()) } else { Err(report.to_string()) }
    });
    let out = in_netns(&a, &["ping", "-n", "-c", "2500", "-i", "0.004", "-W", "1", &b_ip]);
    let lost: Vec<bool> = swarmlab::shaping::measure::parse_replies(&String::from_utf8_lossy(&out.stdout), 2500).iter().map(Option::is_none).collect();
    let (rate, burst) = swarmlab::shaping::measure::loss_runs(&lost);
    println!("Gilbert-Elliott p 5% r 40%: loss {:.1}% (theory 11.1%), mean burst {burst:.2} (theory 2.50) over {} echoes", rate * 100.0, lost.len());
    // ~111 bursts of 2500 echoes: the loss rate's standard deviation is ~1.3% and the mean
    // burst's ~0.18 (a burst's length is geometric, deviation 1.94), so both ranges lie 4.5+
    // deviations out (1.9 was 3.3 of them: one run in ~2000 would have failed for nothing).
    assert!((0.05..0.18).contains(&rate), "loss rate {rate}");
    assert!((1.6..3.5).contains(&burst), "losses come in bursts of ~2.5, not alone (independent loss gives 1.1): {burst}");
}

/// `labctl top` and the `swarmlab_task_*` series: each task's traffic on each lab network, its
/// CPU and memory, as the node agent samples them; the download rate is the rate the lab sets.
#[test]
fn top_shows_each_task_s_traffic_per_network_at_the_rate_the_lab_sets() {
    let mut lab = Lab::new();
    lab.cleanup.push("top".into());
    remove_lab_objects("top");
    // `source` downloads a 1.3 MB file from `sink` over and over; `mgmt` carries nothing.
    let text = "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {name: top}\nspec:\n  defaults: {image: labbox:latest, init: true, stopGracePeriod: 1s}\n  networks:\n    lan: {conditions: {rate: 2mbit}}\n    mgmt: {}\n  services:\n    sink:\n      networks: [lan, mgmt]\n      command: [sh, -c, 'seq 1 200000 > /blob; httpd -f -p 8080 -h /']\n    source:\n      networks: [lan]\n      command: [sh, -c, 'while true; do wget -q -O /dev/null http://sink:8080/blob; sleep 0.1; done']\n";
    lab.write("top.yaml", text);
    lab.start_labd_args(&["--usage-interval", "1s", "--history-retention", "36h"]);
    wait_shaped(&lab, "top", READY);
    let usage = || -> Result<Vec<serde_json::Value>, String> {
        let out = lab.labctl(&["top", "top", "-o", "json"]);
        serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    };
    let task = |rows: &[serde_json::Value], service: &str| rows.iter().find(|r| r["service"] == service).cloned();
    let network = |task: &serde_json::Value, name: &str| task["networks"].as_array().and_then(|n| n.iter().find(|n| n["network"] == name).cloned());
    // Two samples 6 s apart, once the download runs: the received bytes between them.
    let first = eventually("source's download to show on lan", READY, || {
        let rows = usage()?;
        let source = task(&rows, "source").ok_or_else(|| format!("no source in {rows:?}"))?;
        let rate = network(&source, "lan").and_then(|n| n["rxBytesPerSecond"].as_f64()).unwrap_or(0.0);
        if rate > 50_000.0 { Ok(source) } else { Err(source.to_string()) }
    });
    std::thread::sleep(Duration::from_secs(6));
    let rows = usage().unwrap();
    let (source, sink) = (task(&rows, "source").unwrap(), task(&rows, "sink").unwrap());
    let seconds = |t: &serde_json::Value| chrono::DateTime::parse_from_rfc3339(t["sampledAt"].as_str().unwrap()).unwrap();
    let elapsed = (seconds(&source) - seconds(&first)).num_milliseconds() as f64 / 1000.0;
    let received = network(&source, "lan").unwrap()["rxBytes"].as_u64().unwrap() - network(&first, "lan").unwrap()["rxBytes"].as_u64().unwrap();
    let rate = received as f64 / elapsed;
    println!("source received {received} B in {elapsed:.1} s: {:.0} kB/s (the lab's rate: 2mbit = 250 kB/s)", rate / 1000.0);
    assert!((150_000.0..=275_000.0).contains(&rate), "a download through a 2mbit link: {rate:.0} B/s");
    let sent = network(&sink, "lan").unwrap()["txBytes"].as_u64().unwrap();
    assert!(sent >= network(&source, "lan").unwrap()["rxBytes"].as_u64().unwrap() * 9 / 10, "sink sent what source received: {sink}\n{source}");
    let mgmt = network(&sink, "mgmt").ok_or_else(|| format!("sink's mgmt network: {sink}")).unwrap();
    assert!(mgmt["rxBytes"].as_u64().unwrap() < 20_000 && mgmt["txBytes"].as_u64().unwrap() < 20_000, "nothing goes over mgmt: {mgmt}");
    assert!(source["cpuSeconds"].as_f64().unwrap() > 0.0 && source["memoryBytes"].as_u64().unwrap() > 0, "{source}");
    assert_eq!(source["node"], sink["node"], "one node here");

    let table = String::from_utf8_lossy(&lab.labctl(&["top", "top"]).stdout).to_string();
    let lines: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
    assert!(lines.iter().any(|l| l.first() == Some(&"sink.1") && l.get(4) == Some(&"lan")), "{table}");
    assert!(lines.iter().any(|l| l.first() == Some(&"mgmt")), "sink's second network on its own row:\n{table}");
    let (_, metrics) = http_get(9464, "/metrics");
    let series = format!("swarmlab_task_network_receive_bytes_total{{lab=\"top\",service=\"source\",container=\"{}\",network=\"lan\"}} ", source["container"].as_str().unwrap());
    let counted: u64 = metrics.lines().find_map(|l| l.strip_prefix(series.as_str())).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{series} not in\n{metrics}"));
    assert!(counted >= received, "Prometheus counts what top shows: {counted}");

    // The agents' samples, by service, are kept for `labctl report`'s plots.
    let report = lab.dir.path().join("report.html");
    let out = lab.labctl(&["report", "top", "-o", report.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(html.contains("<h3>source</h3>") && html.contains("source: traffic per lab network") && html.contains(">received on lan</text>"), "{html}");
    let points = html.matches("<title>received on lan, ").count();
    assert!(points >= 2 * 5, "a point per second of source and sink since the download began: {points}");

    lab.remove("top.yaml");
    assert!(lab.labctl(&["wait", "top", "--for", "deleted", "--timeout", "60s"]).status.success(), "{}", lab.log_tail());
    eventually("the lab's usage and its series to go with it", Duration::from_secs(15), || {
        let left = lab.redis.cli(&["exists", "swarmlab:lab:top:usage"]);
        let (_, metrics) = http_get(9464, "/metrics");
        let series: Vec<&str> = metrics.lines().filter(|l| l.contains("lab=\"top\"")).collect();
        if left.trim() == "0" && series.is_empty() { Ok(()) } else { Err(format!("{left} {series:?}")) }
    });
    // Its samples stay for a report of the lab gone, for `--history-retention`, not for good.
    let ttl = || lab.redis.cli(&["ttl", "swarmlab:lab:top:usage-history"]).trim().parse::<i64>().unwrap_or(-2);
    let left = ttl();
    assert!((35 * 3600..=36 * 3600).contains(&left), "the deleted lab's usage history expires in 36 h: TTL {left}");
    let out = lab.labctl(&["report", "top", "-o", report.to_str().unwrap()]);
    assert!(out.status.success() && std::fs::read_to_string(&report).unwrap().contains("source: traffic per lab network"), "{}", String::from_utf8_lossy(&out.stderr));
    // A lab of that name again: its history is its own to keep.
    lab.write("top.yaml", text);
    eventually("the history kept for good again", READY, || if ttl() == -1 { Ok(()) } else { Err(ttl().to_string()) });
}

#[test]
fn capture_shows_each_task_s_frames_named_by_the_lab_with_the_delay_its_conditions_add() {
    let mut lab = Lab::new();
    lab.cleanup.push("cap".into());
    remove_lab_objects("cap");
    // `ping` pings `pong` (a new ICMP id each time) over lan; pong delays what it sends by 100 ms.
    let text = "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {name: cap}\nspec:\n  defaults: {image: labbox:latest, init: true, stopGracePeriod: 1s, networks: [lan, mgmt]}\n  networks:\n    lan: {}\n    mgmt: {}\n  services:\n    ping: {command: [sh, -c, 'while true; do ping -c 1 -W 1 pong; sleep 0.2; done']}\n    pong: {command: [sleep, '100000'], networks: [{name: lan, conditions: {delay: 100ms}}, mgmt]}\n";
    lab.write("cap.yaml", text);
    lab.start_labd();
    wait_shaped(&lab, "cap", READY);

    let file = lab.dir.path().join("cap.pcapng");
    let out = lab.labctl(&["capture", "cap", "--network", "lan", "-c", "24", "--duration", "30s", "-w", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("24 frames to") && stderr.contains("0 dropped by the kernel"), "{stderr}");
    let (interfaces, names, frames) = read_capture(&file);
    assert_eq!(interfaces, ["ping.1/lan", "pong.1/lan"], "a task and network each, mgmt left out");
    let named: Vec<&str> = names.iter().map(|(_, n)| n.as_str()).collect();
    assert!(named.contains(&"ping.1") && named.contains(&"pong.1"), "the tasks' addresses are named: {names:?}");
    assert_eq!(frames.len(), 24);
    // Each echo (by its id) at both ends: the request out of ping and into pong, the reply out
    // of pong 100 ms later (pong's condition), and into ping.
    let (request, reply) = (8, 0);
    let at = |tap: usize, kind: u8, id: u16| frames.iter().find(|f| f.0 == tap && f.3 == kind && f.4 == id).copied();
    let (mut whole, mut undelayed) = (0, Vec::new());
    for id in frames.iter().filter(|f| f.3 == request).map(|f| f.4).collect::<std::collections::BTreeSet<_>>() {
        let (Some(sent), Some(arrived), Some(answered), Some(back)) = (at(0, request, id), at(1, request, id), at(1, reply, id), at(0, reply, id)) else { continue };
        whole += 1;
        assert!(sent.2 && !arrived.2 && answered.2 && !back.2, "directions of echo {id}: {frames:?}");
        let held = answered.1 - arrived.1;
        let round_trip = back.1 - sent.1;
        println!("echo {id}: pong held it {held:?}, ping's round trip {round_trip:?}");
        assert!(held < Duration::from_millis(250) && round_trip >= held && round_trip < held + Duration::from_millis(50), "echo {id}: held {held:?}, round trip {round_trip:?}");
        if held < Duration::from_millis(99) {
            undelayed.push((id, held));
        }
    }
    assert!(whole >= 3, "24 frames hold at least 3 whole echoes seen at both ends: {frames:?}");
    // One reply in eight runs here once left pong undelayed (20 µs) in the capture's first
    // second, then none in 69 runs; unexplained (capture now waits for the kernel's timestamps,
    // one possible cause). More than one is a failure. When it shows, what the agent did and every frame go to the
    // test's output, for whoever looks next.
    if !undelayed.is_empty() {
        let log = std::fs::read_to_string(&lab.log).unwrap_or_default();
        for line in log.lines().filter(|l| l.contains("shaping") || l.contains("queue") || l.contains("WARN")) {
            println!("labd: {line}");
        }
        for frame in &frames {
            println!("frame (tap, since epoch, outbound, icmp type, id, seq): {frame:?}");
        }
    }
    assert!(undelayed.len() <= 1, "pong's 100ms delay between request in and reply out, of {whole} echoes: {undelayed:?}");

    // Without -w, a line per frame, by the lab's names.
    let out = lab.labctl(&["capture", "cap", "pong.1", "-c", "4", "--duration", "30s"]);
    let lines = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(lines.lines().count(), 4, "{lines}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        lines.lines().all(|l| l.contains(" pong.1/") && (l.contains("ping.1 > pong.1: ICMP echo request") || l.contains("pong.1 > ping.1: ICMP echo reply") || l.contains("ARP"))),
        "only pong.1's interfaces:\n{lines}"
    );

    let out = lab.labctl(&["capture", "cap", "--network", "wan", "-c", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success() && stderr.contains("wan") && stderr.contains("lan, mgmt"), "{stderr}");
    let out = lab.labctl(&["capture", "cap", "pang", "-c", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success() && stderr.contains("ping, pong"), "names the lab's services: {stderr}");
}
