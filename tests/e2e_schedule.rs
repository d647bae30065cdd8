//! End-to-end: experiments over time on real tasks. A ramp of delay measured by round trip at
//! each step, across a SIGKILL of labd in the middle (the schedule resumes on its own clock);
//! a service taken down and back (no traffic either way, then all of it); a flapping link seen
//! as alternating loss windows; a schedule whose end stops the lab; a task frozen and thawed,
//! another killed and started again by Swarm; a task slowed by a CPU cap and freed again.

mod common;

use std::time::{Duration, Instant};

use common::*;

const READY: Duration = Duration::from_secs(90);

fn lab_with_schedule(name: &str, schedule: &str) -> String {
    format!(
        "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {{name: {name}}}\nspec:\n  defaults: {{image: labbox:latest, init: true, stopGracePeriod: 1s, command: [sleep, \"100000\"], networks: [lan]}}\n  networks:\n    lan: {{}}\n  services:\n    a: {{}}\n    b: {{}}\n  schedule:\n{schedule}"
    )
}

/// The lab's schedule status once `ok` holds for it.
fn wait_schedule(lab: &Lab, name: &str, what: &str, timeout: Duration, ok: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    eventually(what, timeout, || {
        let s = lab.status_json(name)?;
        let clock = s["schedule"].clone();
        if ok(&clock) { Ok(clock) } else { Err(format!("schedule {clock}")) }
    })
}

fn time_of(v: &serde_json::Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_default()).map(|t| t.with_timezone(&chrono::Utc)).unwrap_or_else(|e| panic!("a time, not {v}: {e}"))
}

fn seconds_between(a: &serde_json::Value, b: &serde_json::Value) -> f64 {
    let t = |v: &serde_json::Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    (t(b) - t(a)).num_milliseconds() as f64 / 1000.0
}

#[test]
fn a_ramp_of_delay_is_measured_at_every_step_and_resumes_on_time_after_labd_is_killed() {
    let mut lab = Lab::new();
    lab.cleanup.push("ramp".into());
    remove_lab_objects("ramp");
    // delay 10, 20, 30, 40 ms on every egress of lan: round trips of 20, 40, 60, 80 ms.
    let schedule = "    steps:\n    - at: 0s\n      network: lan\n      ramp: {from: {delay: 10ms}, to: {delay: 40ms}, over: 24s, steps: 3}\n";
    lab.write("ramp.yaml", &lab_with_schedule("ramp", schedule));
    lab.start_labd();
    lab.wait_phase("ramp", "Ready", READY);
    let mut started_at = serde_json::Value::Null;
    let mut rows = Vec::new();
    for (level, delay) in [10, 20, 30, 40].into_iter().enumerate() {
        let want = format!("network lan: delay {delay}ms");
        let clock = wait_schedule(&lab, "ramp", &want, Duration::from_secs(20), |c| {
            c["inForce"].as_str() == Some(want.as_str()) && c["appliedAfterMs"].is_u64()
        });
        if level == 0 {
            started_at = clock["startedAt"].clone();
        }
        assert_eq!(clock["startedAt"], started_at, "the schedule restarted");
        // When this level came, against when the schedule says it was due (8 s apart).
        let late = seconds_between(&started_at, &clock["changedAt"]) - 8.0 * level as f64;
        let applied = clock["appliedAfterMs"].as_u64().unwrap();
        let stats = probe(&lab, "ramp", "a", "b", 30, 10);
        let rtt = avg_rtt(&stats);
        let want_rtt = 2.0 * f64::from(delay);
        assert!((rtt - want_rtt).abs() <= want_rtt * 0.2 + 1.0, "level {level}: delay {delay}ms per egress, rtt {rtt} ({stats})");
        assert!((-0.05..1.0).contains(&late), "level {level} came {late:.2}s after its time");
        // By the agents' clocks: labd nudges them over Redis pub/sub when it publishes a step, and
        // their reports say when each attachment took it. The first level also sets shaping up
        // in tasks that have just started.
        let bound = if level == 0 { 2000 } else { 1000 };
        assert!(applied < bound, "level {level} applied on every task {applied} ms after it came");
        println!("SCHEDULE | delay {delay} ms | {late:.2} s | {:.2} s | {rtt:.1} ms |", applied as f64 / 1000.0);
        rows.push((delay, late, applied, rtt));
        if level == 1 {
            // Killed mid-schedule and started again: the next level still comes at 16 s.
            lab.kill_labd();
            lab.start_labd();
        }
    }
    let events = lab.labctl(&["describe", "ramp"]);
    let text = String::from_utf8_lossy(&events.stdout);
    assert!(text.contains("Schedule:     step 1/1 done"), "{text}");
    assert!(text.contains("StepApplied"), "{text}");
    // The experiment's report: the definition, the steps, and the four probes as a series.
    let report = lab.labs.join("ramp-report.html");
    let out = lab.labctl(&["report", "ramp", "-o", report.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(html.contains("<h3>a → b (4 probes)</h3>"), "{html}");
    assert!(html.contains("ramp: {from: {delay: 10ms}"), "the definition is in the report");
    assert!(html.matches("<td>Step</td>").count() >= 4 && html.contains("<td>StepApplied</td>"), "{html}");
    let points = html.split("<polyline").nth(1).and_then(|p| p.split("points=\"").nth(1)).map(|p| p.split('"').next().unwrap_or("").split(' ').count());
    assert_eq!(points, Some(4), "one point per probe");
    // The same data as JSON, for one's own analysis: each probe with its samples.
    let json_path = lab.labs.join("ramp-report.json");
    let out = lab.labctl(&["report", "ramp", "-o", json_path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let data: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).expect("JSON");
    let probes = data["probes"].as_array().expect("probes");
    assert_eq!(probes.len(), 4, "{data}");
    assert!(probes.iter().all(|p| p["from"] == "a" && p["sent"].as_u64().is_some_and(|n| n > 0) && p["avg_ms"].as_f64().is_some_and(|ms| ms > 0.0)), "{}", probes[0]);
    assert!(data["definition"].as_str().is_some_and(|d| d.contains("ramp: {from: {delay: 10ms}")) && data["status"]["name"] == "ramp");
    assert!(data["events"].as_array().is_some_and(|e| e.iter().any(|e| e["reason"] == "StepApplied")), "{}", data["events"]);
}

/// Round trips of `count` pings from `from`'s task to `to`'s address, every `interval`
/// seconds: which sequence numbers came back.
fn ping_replies(from: &str, to_ip: &str, count: u32, interval: &str) -> (Vec<u32>, u32) {
    let out = in_netns(from, &["ping", "-n", "-c", &count.to_string(), "-i", interval, "-W", "1", to_ip]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let seqs = text.lines().filter_map(|l| l.split("icmp_seq=").nth(1)?.split_whitespace().next()?.parse().ok()).collect();
    (seqs, count)
}

fn ip_of(container: &str) -> String {
    docker_ok(&["inspect", container, "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"]).trim().to_string()
}

#[test]
fn a_service_taken_down_loses_all_traffic_both_ways_then_heals_and_a_flap_alternates() {
    let mut lab = Lab::new();
    lab.cleanup.push("part".into());
    remove_lab_objects("part");
    let schedule = "    steps:\n    - at: 2s\n      service: b\n      conditions: {down: true}\n    - at: 12s\n      service: b\n      restore: true\n    - at: 17s\n      service: b\n      flap: {up: 2s, down: 2s, for: 16s}\n";
    lab.write("part.yaml", &lab_with_schedule("part", schedule));
    lab.start_labd();
    lab.wait_phase("part", "Ready", READY);
    let (a, b) = (running_container_of("part_a"), running_container_of("part_b"));
    let (a_ip, b_ip) = (ip_of(&a), ip_of(&b));

    wait_schedule(&lab, "part", "b down", Duration::from_secs(20), |c| c["step"] == 1 && c["appliedAfterMs"].is_u64());
    let (from_a, _) = ping_replies(&a, &b_ip, 10, "0.2");
    let (from_b, _) = ping_replies(&b, &a_ip, 10, "0.2");
    assert!(from_a.is_empty() && from_b.is_empty(), "b is down: replies a→b {from_a:?}, b→a {from_b:?}");

    wait_schedule(&lab, "part", "b back", Duration::from_secs(20), |c| c["step"] == 2 && c["appliedAfterMs"].is_u64());
    let (healed, sent) = ping_replies(&a, &b_ip, 10, "0.2");
    assert_eq!(healed.len() as u32, sent, "healed: every ping answered");

    wait_schedule(&lab, "part", "the flap", Duration::from_secs(20), |c| c["step"] == 3);
    let started = Instant::now();
    let (replies, sent) = ping_replies(&a, &b_ip, 100, "0.1");
    let lost = sent - replies.len() as u32;
    // Alternating windows: runs of answered and of lost pings, each several pings long.
    let answered: Vec<bool> = (1..=sent).map(|s| replies.contains(&s)).collect();
    let windows = answered.windows(2).filter(|w| w[0] != w[1]).count();
    println!("flap up 2 s / down 2 s: {lost} of {sent} pings lost over {:.1} s, {windows} switches", started.elapsed().as_secs_f64());
    assert!((25..=75).contains(&lost), "about half lost: {lost} of {sent}");
    assert!((3..=12).contains(&windows), "alternating loss windows: {windows} switches in {answered:?}");
}

#[test]
fn a_partition_cuts_traffic_between_groups_both_ways_leaves_others_alone_and_heals() {
    let mut lab = Lab::new();
    lab.cleanup.push("split".into());
    remove_lab_objects("split");
    // a | b cut off from each other; c in no group reaches both.
    let text = "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {name: split}\nspec:\n  defaults: {image: labbox:latest, init: true, stopGracePeriod: 1s, command: [sleep, \"100000\"], networks: [lan]}\n  networks:\n    lan: {}\n  services:\n    a: {}\n    b: {}\n    c: {}\n  schedule:\n    steps:\n    - at: 2s\n      partition: [[a], [b]]\n    - at: 12s\n      heal: true\n";
    lab.write("split.yaml", text);
    lab.start_labd();
    lab.wait_phase("split", "Ready", READY);
    let (a, b, c) = (running_container_of("split_a"), running_container_of("split_b"), running_container_of("split_c"));
    let (a_ip, b_ip, c_ip) = (ip_of(&a), ip_of(&b), ip_of(&c));

    let clock = wait_schedule(&lab, "split", "the partition applied", Duration::from_secs(20), |c| c["step"] == 1 && c["appliedAfterMs"].is_u64());
    assert_eq!(clock["inForce"], "partition [a] | [b]");
    println!("SCHEDULE | partition | applied by every agent after {:.2} s |", clock["appliedAfterMs"].as_u64().unwrap_or(0) as f64 / 1000.0);
    let (a_to_b, _) = ping_replies(&a, &b_ip, 10, "0.2");
    let (b_to_a, _) = ping_replies(&b, &a_ip, 10, "0.2");
    assert!(a_to_b.is_empty() && b_to_a.is_empty(), "partitioned: replies a→b {a_to_b:?}, b→a {b_to_a:?}");
    for (from, to, what) in [(&a, &c_ip, "a→c"), (&c, &b_ip, "c→b"), (&b, &c_ip, "b→c")] {
        let (replies, sent) = ping_replies(from, to, 5, "0.2");
        assert_eq!(replies.len() as u32, sent, "{what} crosses no group boundary: every ping answered");
    }
    let described = String::from_utf8_lossy(&lab.labctl(&["describe", "split"]).stdout).to_string();
    assert!(described.contains("partition [a] | [b]"), "{described}");

    wait_schedule(&lab, "split", "healed", Duration::from_secs(30), |c| c["step"] == 2 && c["appliedAfterMs"].is_u64());
    let (a_to_b, sent) = ping_replies(&a, &b_ip, 10, "0.2");
    let (b_to_a, _) = ping_replies(&b, &a_ip, 10, "0.2");
    assert_eq!((a_to_b.len() as u32, b_to_a.len() as u32), (sent, sent), "healed: every ping answered both ways");
    // Nothing of the partition is left in the tasks.
    for container in [&a, &b] {
        let rules = String::from_utf8_lossy(&in_netns(container, &["iptables", "-S", "OUTPUT"]).stdout).to_string();
        assert!(!rules.contains("swarmlab-cut"), "{rules}");
    }
}

#[test]
fn a_schedule_with_end_stop_stops_every_task_keeps_the_lab_over_a_restart_and_an_edit_runs_it_again() {
    let mut lab = Lab::new();
    lab.cleanup.push("stopend".into());
    remove_lab_objects("stopend");
    let text = |period: &str| {
        format!(
            "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {{name: stopend}}\nspec:\n  defaults: {{image: labbox:latest, init: true, stopGracePeriod: 1s, command: [sleep, \"100000\"], networks: [lan]}}\n  networks:\n    lan: {{}}\n  services:\n    a: {{replicas: 2}}\n    g: {{mode: global}}\n    load: {{mode: replicated-job, command: ['true']}}\n  schedule:\n    period: {period}\n    end: stop\n    steps:\n    - at: 0s\n      network: lan\n      conditions: {{delay: 5ms}}\n"
        )
    };
    lab.write("stopend.yaml", &text("3s"));
    lab.start_labd();
    lab.wait_phase("stopend", "Ready", READY);
    // The services' tasks (the job's may be running too: it starts at time 0, with Ready).
    let service_tasks = || ["stopend_a", "stopend_g"].map(|s| docker_ok(&["ps", "-q", "--filter", &format!("label=com.docker.swarm.service.name={s}")]).lines().count());
    assert_eq!(service_tasks(), [2, 1]);
    // What a script running an experiment does: wait for its end.
    let waited = lab.labctl(&["wait", "stopend", "--for", "completed", "--timeout", "60s"]);
    assert!(waited.status.success(), "labctl wait --for completed: {}", String::from_utf8_lossy(&waited.stderr));
    assert!(lab_containers("stopend").is_empty(), "Completed with tasks running");
    let services = stack_services("stopend");
    assert_eq!(services.get("stopend_a").map(String::as_str), Some("0/0"), "{services:?}");
    assert_eq!(services.get("stopend_g").map(String::as_str), Some("0/0"), "{services:?}");
    assert!(docker_ok(&["network", "ls", "--format", "{{.Name}}"]).lines().any(|n| n == "stopend_lan"), "the network stays");
    let described = String::from_utf8_lossy(&lab.labctl(&["describe", "stopend"]).stdout).to_string();
    assert!(described.contains("ScheduleFinished") && described.contains("stopping every task"), "{described}");
    // The job ran with the schedule's run: created at time 0, not with the lab.
    let time_0 = lab.status_json("stopend").map(|s| time_of(&s["schedule"]["startedAt"])).unwrap_or_else(|e| panic!("{e}"));
    let created = docker_ok(&["service", "inspect", "stopend_load", "--format", "{{.CreatedAt.Format \"2006-01-02T15:04:05.000000000Z07:00\"}}"]);
    assert!(time_of(&serde_json::Value::String(created.trim().to_string())) >= time_0, "the job was created at {created}, before time 0 ({time_0})");
    let job_run = || docker_ok(&["service", "inspect", "stopend_load", "--format", "{{index .Spec.Labels \"io.swarmlab.job-run\"}}"]).trim().to_string();
    let first_run = job_run();
    assert!(first_run.contains(&time_0.to_rfc3339()), "{first_run}");
    let versions = (service_version("stopend_a"), service_version("stopend_g"));
    // `labctl diff` reads the schedule's state from Swarm: a stopped lab, its job of the last
    // run, are what labd wants, no difference.
    let only = tempfile::tempdir().unwrap();
    std::fs::copy(lab.labs.join("stopend.yaml"), only.path().join("stopend.yaml")).unwrap();
    let diffed = String::from_utf8_lossy(&lab.labctl(&["diff", only.path().to_str().unwrap()]).stdout).to_string();
    assert!(!diffed.contains("stopend:"), "{diffed}");

    // A restarted labd leaves it stopped: no task started, no service updated.
    lab.kill_labd();
    let reconciles = lab.metric("stopend", "reconciles");
    lab.start_labd();
    eventually("the new labd looked at the lab", Duration::from_secs(30), || {
        if lab.metric("stopend", "reconciles") > reconciles { Ok(()) } else { Err("not yet".to_string()) }
    });
    assert_eq!(lab.phase("stopend").unwrap(), "Completed");
    assert!(lab_containers("stopend").is_empty());
    assert_eq!((service_version("stopend_a"), service_version("stopend_g")), versions, "the restarted labd touched the stopped services");

    // Redis lost as well (a host rebooted, Redis without persistence): the new labd finds the
    // schedule's clock on the stopped services and keeps the lab stopped, same time 0.
    let started_at = lab.status_json("stopend").map(|s| s["schedule"]["startedAt"].clone()).unwrap_or_default();
    assert!(started_at.is_string(), "no time 0 in the status");
    lab.kill_labd();
    lab.redis.cli(&["flushall"]);
    lab.start_labd();
    let status = lab.wait_phase("stopend", "Completed", READY);
    assert_eq!(status["schedule"]["startedAt"], started_at, "the schedule started again");
    assert!(lab_containers("stopend").is_empty(), "the labd without a status started tasks");
    assert_eq!((service_version("stopend_a"), service_version("stopend_g")), versions, "the labd without a status touched the stopped services");

    // An edited schedule runs the lab again, tasks and conditions.
    lab.write("stopend.yaml", &text("1h"));
    lab.wait_phase("stopend", "Ready", READY);
    assert_eq!(service_tasks(), [2, 1]);
    // The schedule starts once the lab is Ready, so a first Ready says "shaped" of the static
    // conditions (none here): wait for the new run's first step applied by every agent.
    wait_schedule(&lab, "stopend", "the edited schedule's first step applied", Duration::from_secs(30), |c| {
        c["startedAt"] != started_at && c["startedAt"].is_string() && c["inForce"] == "network lan: delay 5ms" && c["appliedAfterMs"].is_u64()
    });
    wait_shaped(&lab, "stopend", Duration::from_secs(30));
    let out = lab.labctl(&["wait", "stopend", "--for", "jobs", "--timeout", "30s"]);
    assert!(out.status.success(), "the job's new run: {}", String::from_utf8_lossy(&out.stderr));
    assert_ne!(job_run(), first_run, "the new run of the schedule ran the job again");
    let rtt = avg_rtt(&probe(&lab, "stopend", "a", "g", 5, 100));
    assert!(rtt >= 9.5, "5 ms on each egress again: round trip {rtt} ms");
}

/// The running containers of `service` by task slot.
fn containers_by_slot(service: &str) -> std::collections::BTreeMap<u64, String> {
    let out = docker_ok(&["ps", "--filter", &format!("label=com.docker.swarm.service.name={service}"), "--filter", "status=running", "--format", "{{.ID}} {{.Label \"com.docker.swarm.task.name\"}}"]);
    out.lines()
        .filter_map(|l| {
            let (id, task) = l.split_once(' ')?;
            Some((task.split('.').nth(1)?.parse().ok()?, id.to_string()))
        })
        .collect()
}

/// The slots a step's kill acted on, as labd's status says what is in force
/// (`service node: slots 2, 5 killed at 3s`).
fn killed_slots(in_force: &serde_json::Value) -> std::collections::BTreeSet<u64> {
    let text = in_force.as_str().unwrap_or_default();
    let list = text.split("slots ").nth(1).and_then(|t| t.split(" killed").next()).unwrap_or_else(|| panic!("a kill of slots in {text}"));
    list.split(", ").map(|n| n.parse().unwrap_or_else(|_| panic!("a slot in {text}"))).collect()
}

/// The counter the task's loop writes ten times a second (whole: written beside, then
/// renamed), read from the host (a frozen container cannot be exec'd into).
fn counter(container: &str) -> u64 {
    let pid = pid_of(container);
    std::fs::read_to_string(format!("/proc/{}/root/count", pid.trim())).unwrap_or_default().trim().parse().unwrap_or(0)
}

fn counts_on(container: &str) -> bool {
    counting(&[container])[0]
}

/// Whether each container's counter goes up over the same 700 ms.
fn counting(containers: &[&str]) -> Vec<bool> {
    let before: Vec<u64> = containers.iter().map(|c| counter(c)).collect();
    std::thread::sleep(Duration::from_millis(700));
    containers.iter().zip(before).map(|(c, was)| counter(c) > was).collect()
}

#[test]
fn a_step_freezes_one_task_then_thaws_it_and_another_kills_a_task_that_swarm_starts_again() {
    let mut lab = Lab::new();
    lab.cleanup.push("crash".into());
    remove_lab_objects("crash");
    let text = "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {name: crash}\nspec:\n  services:\n    raft:\n      image: labbox:latest\n      init: true\n      stopGracePeriod: 1s\n      replicas: 2\n      restartPolicy: {delay: 0s}\n      command: [sh, -c, \"i=0; while true; do i=$((i+1)); echo $i > /count.new; mv /count.new /count; [ $((i % 10)) = 0 ] && echo tick $i; sleep 0.1; done\"]\n  schedule:\n    steps:\n    - at: 2s\n      service: raft\n      slots: [1]\n      pause: true\n    - at: 13s\n      service: raft\n      slots: [1]\n      pause: false\n    - at: 16s\n      service: raft\n      slots: [2]\n      kill: true\n";
    lab.write("crash.yaml", text);
    let port = 19471;
    lab.start_labd_args(&["--http", &format!("127.0.0.1:{port}")]);
    lab.wait_phase("crash", "Ready", READY);
    let ready_at = std::time::Instant::now();
    let before = containers_by_slot("crash_raft");
    assert_eq!(before.keys().copied().collect::<Vec<_>>(), vec![1, 2], "{before:?}");
    let (one, two) = (before[&1].clone(), before[&2].clone());
    // Followed from the start: it must join the task Swarm starts after the kill.
    let mut follow = std::process::Command::new(env!("CARGO_BIN_EXE_labctl"))
        .args(["logs", "crash", "-f"])
        .env("REDIS_URL", lab.redis.url())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("labctl logs -f");
    // Both at once: the first step comes 2 s after Ready.
    let both = counting(&[&one, &two]);
    assert_eq!(both, [true, true], "both tasks count before the schedule ({:.2} s after Ready was seen)", ready_at.elapsed().as_secs_f64());

    let clock = wait_schedule(&lab, "crash", "slot 1 frozen", Duration::from_secs(20), |c| c["step"] == 1 && c["appliedAfterMs"].is_u64());
    assert_eq!(clock["inForce"], "service raft: slot 1 paused");
    println!("SCHEDULE | pause slot 1 | applied by every agent after {:.2} s |", clock["appliedAfterMs"].as_u64().unwrap_or(0) as f64 / 1000.0);
    assert_eq!(docker_ok(&["inspect", &one, "--format", "{{.State.Paused}}"]).trim(), "true");
    assert!(!counts_on(&one), "the frozen task does not run");
    assert!(counts_on(&two), "the other task runs on");
    let out = lab.labctl(&["exec", "crash", "raft.1", "--", "true"]);
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success() && said.contains("raft.1 is frozen by a pause step"), "labctl exec says why it cannot run: {said}");
    let report = task_reports(&lab, "crash").into_iter().find(|r| r["slot"] == 1).expect("slot 1's report");
    assert_eq!(report["paused"], true, "{report}");
    // Thawed by hand while the step holds: frozen again at the agent's next read-back.
    let thawed_by_hand = chrono::Utc::now();
    docker_ok(&["unpause", &one]);
    eventually("slot 1 frozen again", Duration::from_secs(6), || {
        let paused = docker_ok(&["inspect", &one, "--format", "{{.State.Paused}}"]);
        if paused.trim() == "true" { Ok(()) } else { Err(paused) }
    });
    let frozen_again = chrono::Utc::now();
    let frozen_at = time_of(&clock["changedAt"]) + chrono::Duration::milliseconds(clock["appliedAfterMs"].as_i64().unwrap_or(0) + 200);
    let described = String::from_utf8_lossy(&lab.labctl(&["describe", "crash"]).stdout).to_string();
    let row = described.lines().find(|l| l.contains(&one[..12])).unwrap_or_default();
    assert!(row.trim_start().starts_with("raft.1 ") && row.contains("yes"), "describe shows slot 1 paused: {described}");

    // Frozen for 11 s: longer than the agent goes between two listings of its node (a paused
    // container is listed as `paused`, and must stay in the agent's view to be thawed).
    let thaw = wait_schedule(&lab, "crash", "slot 1 thawed", Duration::from_secs(20), |c| c["step"] == 2 && c["appliedAfterMs"].is_u64());
    assert_eq!(docker_ok(&["inspect", &one, "--format", "{{.State.Paused}}"]).trim(), "false");
    assert!(counts_on(&one), "thawed: it runs again, in the same container");

    // What a script does: wait for the step, then look.
    let out = lab.labctl(&["wait", "crash", "--for", "step=3", "--timeout", "30s"]);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success() && said.contains("crash is at step 3 of its schedule, applied"), "{said} {}", String::from_utf8_lossy(&out.stderr));
    let clock = lab.status_json("crash").expect("status")["schedule"].clone();
    println!("SCHEDULE | kill slot 2 | applied by every agent after {:.2} s |", clock["appliedAfterMs"].as_u64().unwrap_or(0) as f64 / 1000.0);
    let killed = docker_ok(&["inspect", &two, "--format", "{{.State.Running}} {{.State.ExitCode}}"]);
    assert_eq!(killed.trim(), "false 137", "SIGKILL ends the task's container");
    lab.wait_phase("crash", "Ready", Duration::from_secs(30));
    let after = containers_by_slot("crash_raft");
    assert_eq!(after.get(&1), Some(&one), "slot 1 untouched by the kill");
    assert!(after.get(&2).is_some_and(|c| *c != two), "Swarm started slot 2 again: {after:?}");
    assert!(counts_on(&after[&2]));
    let (_, metrics) = http_get(port, "/metrics");
    // Frozen twice (the step, then again after the thaw by hand), thawed once, killed once.
    for (action, times) in [("pause", 2), ("unpause", 1), ("kill", 1)] {
        let series = format!("swarmlab_task_faults_total{{lab=\"crash\",service=\"raft\",action=\"{action}\"}} {times}");
        assert!(metrics.contains(&series), "{series} in {metrics}");
    }
    // The kill is a restart of the service, as `labctl describe` and `/metrics` count them.
    eventually("the kill counted as a restart", Duration::from_secs(10), || {
        let (_, metrics) = http_get(port, "/metrics");
        let series = "swarmlab_service_restarts_total{lab=\"crash\",service=\"raft\"} 1";
        if metrics.lines().any(|l| l == series) { Ok(()) } else { Err(metrics.lines().filter(|l| l.contains("restarts")).collect::<Vec<_>>().join("\n")) }
    });
    // One kill per step: the new task of slot 2 stays.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(containers_by_slot("crash_raft"), after, "the replacement is not killed again");

    // The logs read against the schedule: slot 1 silent while frozen, slot 2 counting from the
    // start again after its kill.
    let _ = follow.kill();
    let followed = String::from_utf8_lossy(&follow.wait_with_output().expect("its output").stdout).to_string();
    let kill_seen = followed.find("step 3/3 (run 1)").unwrap_or_else(|| panic!("followed, the kill is marked: {followed}"));
    assert!(followed[kill_seen..].contains("raft.2 | tick 10\n"), "followed, the replacement joined: {followed}");
    let out = lab.labctl(&["logs", "crash"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = text.lines().collect();
    let mark = |step: &str| lines.iter().position(|l| l.starts_with("=== ") && l.contains(&format!("step {step} (run 1)"))).unwrap_or_else(|| panic!("step {step} marked: {text}"));
    let (frozen, thawed, killed) = (mark("1/3"), mark("2/3"), mark("3/3"));
    assert!(frozen < thawed && thawed < killed, "{text}");
    let from = |slot: &str, range: &[&str]| range.iter().filter(|l| l.starts_with(&format!("raft.{slot} | tick"))).count();
    assert!(from("1", &lines[..frozen]) >= 1 && from("2", &lines[frozen..thawed]) >= 8, "{text}");
    // Slot 1 wrote nothing while frozen (Docker's time of each line), but while thawed by hand.
    let timed = String::from_utf8_lossy(&lab.labctl(&["logs", "crash", "raft", "-t", "--no-steps"]).stdout).to_string();
    let written_while_frozen: Vec<&str> = timed
        .lines()
        .filter(|l| l.starts_with("raft.1 | "))
        .filter(|l| {
            let t = time_of(&serde_json::Value::from(l[9..].split(' ').next().unwrap_or_default()));
            t > frozen_at && t < time_of(&thaw["changedAt"]) && !(t > thawed_by_hand && t < frozen_again + chrono::Duration::milliseconds(200))
        })
        .collect();
    assert!(written_while_frozen.is_empty(), "slot 1 wrote while frozen: {written_while_frozen:?}");
    assert!(from("1", &lines[thawed..]) >= 1, "and again once thawed: {text}");
    assert!(lines[..killed].iter().any(|l| l.starts_with("raft.2 | tick 100")), "the killed task's count: {text}");
    assert!(lines[killed..].contains(&"raft.2 | tick 10"), "its replacement counts from the start, after the kill: {text}");
    // The last two lines of each task (three: slot 2's killed one too), and only the steps
    // among them.
    let tail = String::from_utf8_lossy(&lab.labctl(&["logs", "crash", "-n", "2"]).stdout).to_string();
    assert_eq!(tail.lines().filter(|l| l.starts_with("raft.")).count(), 6, "{tail}");
    assert!(!tail.contains("step 1/3 (run 1)"), "no step from before the lines shown: {tail}");
}

/// `labd agent` alone (the node agent of a node without labd), its output in `log`.
#[test]
fn a_stop_step_ends_a_task_gracefully_and_one_that_ignores_sigterm_is_killed_after_its_grace_period_or_by_a_kill_step() {
    let mut lab = Lab::new();
    lab.cleanup.push("stopx".into());
    remove_lab_objects("stopx");
    let service = |grace: &str, on_term: &str| format!("      stopGracePeriod: {grace}\n      restartPolicy: {{delay: 0s}}\n      command: [sh, -c, \"trap '{on_term}' TERM; echo hello; while true; do sleep 0.2; done\"]\n");
    let text = format!(
        "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {{name: stopx}}\nspec:\n  defaults: {{image: labbox:latest, init: true}}\n  services:\n    polite:\n{}    stubborn:\n{}    obstinate:\n{}  schedule:\n    steps:\n    - {{at: 1s, service: polite, stop: true}}\n    - {{at: 1s, service: stubborn, stop: true}}\n    - {{at: 1s, service: obstinate, stop: true}}\n    - {{at: 2s, service: obstinate, kill: true}}\n",
        service("5s", "echo bye; exit 0"),
        service("2s", ""),
        service("60s", ""),
    );
    lab.write("stopx.yaml", &text);
    lab.start_labd();
    lab.wait_phase("stopx", "Ready", READY);
    let (polite, stubborn, obstinate) = (running_container_of("stopx_polite"), running_container_of("stopx_stubborn"), running_container_of("stopx_obstinate"));
    let out = lab.labctl(&["wait", "stopx", "--for", "step=4", "--timeout", "30s"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let clock = lab.status_json("stopx").expect("status")["schedule"].clone();
    assert_eq!(clock["inForce"], "service polite: every task stopped at 1s; service stubborn: every task stopped at 1s; service obstinate: every task stopped at 1s; service obstinate: every task killed at 2s", "{clock}");
    let step_at = time_of(&clock["startedAt"]) + chrono::Duration::seconds(1);
    let ended = |c: &str| {
        let out = docker_ok(&["inspect", c, "--format", "{{.State.ExitCode}} {{.State.FinishedAt}}"]);
        let (code, at) = out.trim().split_once(' ').unwrap_or_default();
        (code.to_string(), (time_of(&serde_json::json!(at)) - step_at).num_milliseconds() as f64 / 1000.0)
    };
    // The polite task handled SIGTERM at once (exit 0, its last words in its log); the stubborn
    // one was killed once its 2 s were up.
    let (code, after) = ended(&polite);
    assert!(code == "0" && after < 2.0, "polite: exit {code} {after:.2} s after the step");
    let (code, after) = ended(&stubborn);
    assert!(code == "137" && (1.9..5.0).contains(&after), "stubborn: exit {code} {after:.2} s after the step");
    // A kill step within a stop's grace (60 s here) kills at its own time, a second later.
    let (code, killed_after) = ended(&obstinate);
    assert!(code == "137" && (0.9..2.5).contains(&killed_after), "obstinate: exit {code} {killed_after:.2} s after the stop");
    println!("SCHEDULE | stop (SIGTERM handled / ignored, grace 2 s; killed 1 s into a 60 s grace) | exited {:.2} s / {after:.2} s / {killed_after:.2} s after the step |", ended(&polite).1);
    let logs = String::from_utf8_lossy(&lab.labctl(&["logs", "stopx", "polite"]).stdout).to_string();
    assert!(logs.contains("polite.1 | bye"), "{logs}");
    // Swarm started them again (step 4 applied means their replacements run).
    assert!(running_container_of("stopx_polite") != polite && running_container_of("stopx_stubborn") != stubborn && running_container_of("stopx_obstinate") != obstinate);
    // Clean-up without waiting out the 60 s grace of obstinate's replacement.
    lab.stop_labd();
    docker_ok(&["service", "rm", "stopx_obstinate"]);
    for c in docker_ok(&["ps", "-q", "--filter", "label=com.docker.swarm.service.name=stopx_obstinate"]).lines() {
        let _ = docker(&["kill", c]);
    }
}


#[test]
fn a_task_frozen_when_its_agent_was_killed_is_thawed_by_the_next_once_its_schedule_is_edited_away() {
    let mut lab = Lab::new();
    lab.cleanup.push("thaw".into());
    remove_lab_objects("thaw");
    let plain = lab_yaml("thaw", "    a: {}\n");
    lab.write("thaw.yaml", &format!("{plain}  schedule:\n    steps:\n    - {{at: 0s, service: a, pause: true}}\n"));
    lab.start_labd_args(&["--no-agent"]);
    let mut agent = KillOnDrop(spawn_agent(&lab, "agent1.log"));
    lab.wait_phase("thaw", "Ready", READY);
    // `docker ps` lists running and paused containers (`status=running` would miss it).
    let container = || docker_ok(&["ps", "-q", "--filter", "label=com.docker.swarm.service.name=thaw_a"]).trim().to_string();
    let a = container();
    assert!(!a.is_empty());
    let out = lab.labctl(&["wait", "thaw", "--for", "step=1", "--timeout", "20s"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(docker_ok(&["inspect", &a, "--format", "{{.State.Paused}}"]).trim(), "true");
    // The agent killed; the schedule goes meanwhile, and labd says nothing of the task any more.
    agent.kill().expect("kill the agent");
    let _ = agent.wait();
    lab.write("thaw.yaml", &plain);
    eventually("labd to drop the lab's faults", Duration::from_secs(20), || {
        let left = lab.redis.cli(&["exists", "swarmlab:lab:thaw:faults"]);
        if left.trim() == "0" { Ok(()) } else { Err(left) }
    });
    // The next agent finds the task frozen in its predecessor's report: its own to thaw.
    let agent = KillOnDrop(spawn_agent(&lab, "agent2.log"));
    eventually("the task thawed", Duration::from_secs(20), || {
        let paused = docker_ok(&["inspect", &a, "--format", "{{.State.Paused}}"]);
        if paused.trim() == "false" { Ok(()) } else { Err(format!("paused: {paused}")) }
    });
    drop(agent);
    assert_eq!(running_container_of("thaw_a"), a, "the same task, thawed, not replaced");
}

#[test]
fn a_capture_marks_the_schedule_s_steps_and_follows_a_killed_task_s_replacement() {
    let mut lab = Lab::new();
    lab.cleanup.push("capk".into());
    remove_lab_objects("capk");
    let text = "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {name: capk}\nspec:\n  defaults: {image: labbox:latest, init: true, stopGracePeriod: 1s, networks: [lan]}\n  networks:\n    lan: {}\n  services:\n    ping: {command: [sh, -c, 'while true; do ping -c 1 -W 1 pong; sleep 0.2; done']}\n    pong: {command: [sleep, '100000'], restartPolicy: {delay: 0s}}\n  schedule:\n    steps:\n    - {at: 4s, service: pong, kill: true}\n";
    lab.write("capk.yaml", text);
    lab.start_labd();
    lab.wait_phase("capk", "Ready", READY);
    let killed = running_container_of("capk_pong");
    let out = lab.labctl(&["capture", "capk", "--duration", "11s"]);
    let (lines, stderr) = (String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string());
    assert!(out.status.success(), "{stderr}");
    assert_ne!(running_container_of("capk_pong"), killed, "the step killed pong and Swarm started it again");
    let at = |what: &str| lines.lines().position(|l| l.contains(what)).unwrap_or_else(|| panic!("no `{what}` in:\n{lines}\n{stderr}"));
    let step = at("step 1/1");
    assert!(lines.lines().nth(step).unwrap().starts_with("=== "), "the step is marked as logs marks it:\n{lines}");
    let rejoined = at("capturing pong.1/lan (started)");
    assert!(step < rejoined, "the replacement comes after the kill:\n{lines}");
    let replies = |range: std::ops::Range<usize>| lines.lines().skip(range.start).take(range.len()).filter(|l| l.contains("pong.1/lan out pong.1 > ping.1: ICMP echo reply")).count();
    assert!(replies(0..step) >= 3, "pong answered before the kill:\n{lines}");
    assert!(replies(rejoined..usize::MAX) >= 3, "and its replacement answers, captured from its start:\n{lines}");
    assert!(stderr.contains("pong.1/lan: its interface went away"), "the killed task's end is said: {stderr}");
}


#[test]
fn a_pick_kills_that_many_random_tasks_each_run_and_a_restarted_labd_draws_the_same() {
    let mut lab = Lab::new();
    lab.cleanup.push("churn".into());
    remove_lab_objects("churn");
    let text = "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {name: churn}\nspec:\n  services:\n    node:\n      image: labbox:latest\n      init: true\n      stopGracePeriod: 1s\n      replicas: 5\n      restartPolicy: {delay: 0s}\n      command: [sleep, \"100000\"]\n  schedule:\n    repeat: 2\n    period: 14s\n    steps:\n    - at: 3s\n      service: node\n      pick: 2\n      kill: true\n";
    lab.write("churn.yaml", text);
    lab.start_labd();
    lab.wait_phase("churn", "Ready", READY);
    let before = containers_by_slot("churn_node");
    assert_eq!(before.len(), 5, "{before:?}");
    // Every slot whose container changed from `was` to `now`.
    let changed = |was: &std::collections::BTreeMap<u64, String>, now: &std::collections::BTreeMap<u64, String>| -> std::collections::BTreeSet<u64> { was.iter().filter(|(slot, id)| now.get(slot) != Some(id)).map(|(slot, _)| *slot).collect() };
    let settled = |killed: &std::collections::BTreeSet<u64>, was: &std::collections::BTreeMap<u64, String>| {
        eventually("the killed slots running again", Duration::from_secs(30), || {
            let now = containers_by_slot("churn_node");
            if now.len() == 5 && changed(was, &now) == *killed { Ok(now) } else { Err(format!("{now:?}")) }
        })
    };

    let first = wait_schedule(&lab, "churn", "run 1's kill applied", Duration::from_secs(30), |c| c["run"] == 1 && c["step"] == 1 && c["appliedAfterMs"].is_u64());
    let killed = killed_slots(&first["inForce"]);
    assert_eq!(killed.len(), 2, "{first}");
    let after_first = settled(&killed, &before);
    // A labd killed and started again within the run: its clock draws the same slots, so it
    // kills nothing more (another draw would kill tasks of other slots that started before 3 s).
    lab.kill_labd();
    lab.start_labd();
    let second = wait_schedule(&lab, "churn", "run 2's kill applied", Duration::from_secs(40), |c| c["run"] == 2 && c["step"] == 1 && c["appliedAfterMs"].is_u64());
    assert!(second["inForce"].as_str().unwrap_or_default().contains("killed at 17s"), "{second}");
    let killed_again = killed_slots(&second["inForce"]);
    assert_eq!(killed_again.len(), 2, "{second}");
    let after_second = settled(&killed_again, &after_first);
    println!("SCHEDULE | pick 2 of 5, kill, two runs | slots {killed:?}, then {killed_again:?} | others untouched |");
    // Once more later: nothing else was killed meanwhile.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(containers_by_slot("churn_node"), after_second);
}

/// The CPU time (user and system, in seconds) a task's main process has used, from the host.
fn cpu_seconds(container: &str) -> f64 {
    let pid = pid_of(container);
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
    // The fields after the command's closing parenthesis; utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Each container's CPU use (cores) over the same `window`.
fn cores_used(containers: &[&str], window: Duration) -> Vec<f64> {
    let before: Vec<f64> = containers.iter().map(|c| cpu_seconds(c)).collect();
    let start = Instant::now();
    std::thread::sleep(window);
    let secs = start.elapsed().as_secs_f64();
    containers.iter().zip(before).map(|(c, was)| (cpu_seconds(c) - was) / secs).collect()
}

#[test]
fn a_cpus_step_slows_one_task_live_and_the_next_agent_lifts_the_cap_once_the_schedule_is_edited_away() {
    let mut lab = Lab::new();
    lab.cleanup.push("slow".into());
    remove_lab_objects("slow");
    // Two busy loops, the shell itself the task's main process (no init) so its CPU time shows.
    // `b` has a limit of its own (Swarm sets it as `NanoCpus`, which the cap then changes).
    let plain = lab_yaml("slow", "    a: {replicas: 2, init: false, command: [sh, -c, 'while :; do :; done']}\n    b: {resources: {cpus: 0.5}}\n");
    lab.write("slow.yaml", &format!("{plain}  schedule:\n    steps:\n    - {{at: 0s, service: a, slots: [1], cpus: 0.2}}\n    - {{at: 0s, service: b, cpus: 0.1}}\n"));
    lab.start_labd_args(&["--no-agent"]);
    let mut agent = KillOnDrop(spawn_agent(&lab, "agent1.log"));
    lab.wait_phase("slow", "Ready", READY);
    let out = lab.labctl(&["wait", "slow", "--for", "step=1", "--timeout", "20s"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (one, two) = (running_container_of_slot("slow_a", 1), running_container_of_slot("slow_a", 2));
    let quota = |c: &str| docker_ok(&["inspect", c, "--format", "{{.HostConfig.CpuQuota}}/{{.HostConfig.CpuPeriod}}"]).trim().to_string();
    assert_eq!((quota(&one), quota(&two)), ("20000/100000".to_string(), "0/0".to_string()), "slot 1 capped as `docker update --cpus 0.2` would, slot 2 left alone");
    let b = running_container_of("slow_b");
    let nano = |c: &str| docker_ok(&["inspect", c, "--format", "{{.HostConfig.NanoCpus}}"]).trim().to_string();
    assert_eq!(nano(&b), "100000000", "b capped below its own limit");
    let used = cores_used(&[&one, &two], Duration::from_secs(3));
    println!("SCHEDULE | cpus: 0.2 on slot 1 of two busy loops | slot 1 used {:.2} cores, slot 2 {:.2} |", used[0], used[1]);
    assert!(used[0] <= 0.26, "the capped task used {:.2} cores", used[0]);
    assert!(used[1] >= 0.5 && used[1] > 2.0 * used[0], "the other ran free: {used:?}");
    let describe = String::from_utf8_lossy(&lab.labctl(&["describe", "slow"]).stdout).to_string();
    assert!(describe.contains("0.2 (capped)"), "{describe}");
    // `labctl top` shows the cap beside what the task uses.
    eventually("labctl top to show the cap", Duration::from_secs(15), || {
        let top: serde_json::Value = serde_json::from_slice(&lab.labctl(&["top", "slow", "-o", "json"]).stdout).map_err(|e| e.to_string())?;
        let row = top.as_array().and_then(|rows| rows.iter().find(|r| r["service"] == "a" && r["slot"] == 1).cloned()).ok_or("no row for a.1")?;
        match (row["cpuLimitCores"].as_f64(), row["cpuCores"].as_f64()) {
            (Some(limit), Some(used)) if (limit - 0.2).abs() < 1e-9 && used <= 0.26 => Ok(()),
            _ => Err(row.to_string()),
        }
    });
    let table = String::from_utf8_lossy(&lab.labctl(&["top", "slow"]).stdout).to_string();
    assert!(table.lines().any(|l| l.trim_start().starts_with("a.1") && l.contains("of 20%")), "{table}");
    // Lifted by hand while the step holds: the agent's read-back puts it back.
    docker_ok(&["update", "--cpu-quota", "-1", &one]);
    eventually("the cap set again", Duration::from_secs(15), || {
        let q = quota(&one);
        if q == "20000/100000" { Ok(()) } else { Err(q) }
    });
    // The agent killed; the schedule goes meanwhile, and labd says nothing of the tasks any more.
    agent.kill().expect("kill the agent");
    let _ = agent.wait();
    lab.write("slow.yaml", &plain);
    eventually("labd to drop the lab's faults", Duration::from_secs(20), || {
        let left = lab.redis.cli(&["exists", "swarmlab:lab:slow:faults"]);
        if left.trim() == "0" { Ok(()) } else { Err(left) }
    });
    // The next agent finds the cap in its predecessor's report: its own to lift.
    let agent = KillOnDrop(spawn_agent(&lab, "agent2.log"));
    eventually("the caps lifted", Duration::from_secs(20), || {
        let (q, n) = (quota(&one), nano(&b));
        if q.starts_with("-1/") && n == "500000000" { Ok(()) } else { Err(format!("a.1 {q}, b {n}")) }
    });
    drop(agent);
    assert_eq!(running_container_of_slot("slow_a", 1), one, "the same task, not replaced");
    let used = cores_used(&[&one], Duration::from_secs(2));
    assert!(used[0] >= 0.5, "uncapped, it runs free again: {:.2} cores", used[0]);
}
