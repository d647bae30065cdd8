//! The fault suite (real Swarm and Redis): for each fault, what was running, what happened,
//! how long until the lab was Ready (and shaped) again, and what was lost, which must be
//! nothing. Each test prints a `FAULT |` row; the README's table comes from one run.

mod common;

use std::time::{Duration, Instant};

use common::*;

const READY: Duration = Duration::from_secs(90);

fn shaped_lab(name: &str, conditions: &str) -> String {
    format!(
        "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {{name: {name}}}\nspec:\n  defaults: {{image: labbox:latest, init: true, stopGracePeriod: 1s, command: [sleep, \"100000\"], networks: [lan]}}\n  networks:\n    lan: {{{conditions}}}\n  services:\n    a: {{}}\n    b: {{}}\n"
    )
}

fn start_shaped(name: &str, conditions: &str) -> Lab {
    let mut lab = Lab::new();
    lab.cleanup.push(name.into());
    remove_lab_objects(name);
    lab.write(&format!("{name}.yaml"), &shaped_lab(name, conditions));
    lab.start_labd();
    wait_shaped(&lab, name, READY);
    lab
}

fn row(fault: &str, recovered: Duration, lost: &str) {
    println!("FAULT | {fault} | {:.1} s | {lost} |", recovered.as_secs_f64());
    eprintln!("FAULT | {fault} | {:.1} s | {lost} |", recovered.as_secs_f64());
}

/// Polls until the task's namespace holds shaping again; the time since `since`.
fn wait_reshaped(container: &str, since: Instant) -> Duration {
    eventually("shaping back in the task", Duration::from_secs(30), || {
        if shaping_in(container).0 { Ok(()) } else { Err("no rules yet".into()) }
    });
    since.elapsed()
}

#[test]
fn docker_restart_of_a_shaped_task_is_shaped_again_within_a_second() {
    let lab = start_shaped("frst", "conditions: {delay: 20ms}");
    let a = running_container_of("frst_a");
    let (b, b_started) = (running_container_of("frst_b"), started_at(&running_container_of("frst_b")));
    docker_ok(&["restart", "-t", "0", &a]);
    // From the moment the task runs again (docker restart returns then) to its rules back.
    let took = wait_reshaped(&a, Instant::now());
    assert!(took < Duration::from_secs(2), "shaping back after {took:?}");
    let s = wait_shaped(&lab, "frst", READY);
    assert_eq!(s["phase"], "Ready");
    let rtt = avg_rtt(&probe(&lab, "frst", "a", "b", 30, 10));
    assert!((37.0..46.0).contains(&rtt), "20 ms per egress after the restart: rtt {rtt}");
    assert_eq!(started_at(&b), b_started, "the other task was restarted");
    row("`docker restart -t 0` of a shaped task", took, "nothing (rtt 2×20 ms measured after)");
}

#[test]
fn a_killed_task_is_replaced_and_the_replacement_is_shaped() {
    let lab = start_shaped("fkil", "conditions: {delay: 20ms}");
    let a = running_container_of("fkil_a");
    docker_ok(&["kill", &a]);
    let replacement = eventually("a replacement task", READY, || {
        let c = running_container_of("fkil_a");
        if c != a { Ok(c) } else { Err("the killed one".into()) }
    });
    let took = wait_reshaped(&replacement, Instant::now());
    assert!(took < Duration::from_secs(2), "replacement shaped after {took:?} from running");
    wait_shaped(&lab, "fkil", READY);
    row("task container killed, rescheduled by Swarm", took, "nothing");
}

/// The running container of a task slot of `service` (`<service>.<slot>.<task id>`).
fn container_in_slot(service: &str, slot: u32) -> Result<String, String> {
    let out = docker_ok(&["ps", "--filter", &format!("label=com.docker.swarm.service.name={service}"), "--filter", "status=running", "--format", "{{.ID}} {{.Label \"com.docker.swarm.task.name\"}}"]);
    let prefix = format!("{service}.{slot}.");
    out.lines().find_map(|l| l.split_once(' ').filter(|(_, task)| task.starts_with(&prefix)).map(|(id, _)| id.to_string())).ok_or_else(|| format!("no running task in slot {slot}: {out}"))
}

/// A consensus node's log on a per-task volume: a task killed and restarted in its slot finds
/// its own data (not its neighbour's), its tmpfs starts empty, and the data outlives the lab,
/// as with `docker stack rm`, labelled so it can be found. `restartPolicy.delay: 0s` brings it
/// back at once instead of after Swarm's 5 s.
#[test]
fn a_killed_task_comes_back_to_its_own_volume_and_an_empty_tmpfs() {
    let mut lab = Lab::new();
    lab.cleanup.push("fvol".into());
    remove_lab_objects("fvol");
    let services = "    node:\n      replicas: 2\n      restartPolicy: {delay: 0s}\n      volumes: ['log:/var/lib/raft', {type: tmpfs, target: /scratch, size: 8M}]\n";
    lab.write("fvol.yaml", &format!("{}  volumes:\n    log: {{perTask: true}}\n", lab_yaml("fvol", services)));
    lab.start_labd();
    lab.wait_phase("fvol", "Ready", READY);
    for slot in [1, 2] {
        let c = container_in_slot("fvol_node", slot).unwrap();
        docker_ok(&["exec", &c, "sh", "-c", &format!("echo slot{slot} > /var/lib/raft/term; echo x > /scratch/tmp")]);
    }
    let killed = container_in_slot("fvol_node", 1).unwrap();
    docker_ok(&["kill", &killed]);
    let since = Instant::now();
    let back = eventually("slot 1 running again", READY, || container_in_slot("fvol_node", 1).and_then(|c| if c != killed { Ok(c) } else { Err("the killed one".into()) }));
    let took = since.elapsed();
    assert!(took < Duration::from_secs(4), "back after {took:?}: Swarm's own 5 s delay, not the lab's 0s");
    let read = |c: &str, cmd: &str| String::from_utf8_lossy(&docker(&["exec", c, "sh", "-c", cmd]).stdout).trim().to_string();
    assert_eq!(read(&back, "cat /var/lib/raft/term"), "slot1", "its own volume, data kept");
    assert_eq!(read(&back, "ls /scratch"), "", "a tmpfs starts empty");
    assert!(read(&back, "grep ' /scratch ' /proc/mounts").starts_with("tmpfs /scratch tmpfs"), "{}", read(&back, "cat /proc/mounts"));
    assert_eq!(read(&container_in_slot("fvol_node", 2).unwrap(), "cat /var/lib/raft/term"), "slot2", "the other slot's own");
    let volumes = || docker_ok(&["volume", "ls", "--filter", "label=io.swarmlab.lab=fvol", "--format", "{{.Name}}"]);
    assert_eq!(volumes().lines().collect::<Vec<_>>(), ["fvol_log-1", "fvol_log-2"]);
    lab.wait_phase("fvol", "Ready", READY);
    // Counted as a pod's restarts are: once, for the slot killed.
    let restarts = eventually("the restart counted", READY, || {
        let node = lab.status_json("fvol")?["services"]["node"].clone();
        if node["restarts"] == 1 { Ok(node) } else { Err(node.to_string()) }
    });
    assert!(restarts["lastRestart"].is_string(), "{restarts}");
    let described = String::from_utf8_lossy(&lab.labctl(&["describe", "fvol"]).stdout).to_string();
    let row_of_node = described.lines().skip_while(|l| !l.starts_with("Services:")).find(|l| l.trim_start().starts_with("node ")).unwrap_or_default().to_string();
    assert!(described.contains("RESTARTS") && row_of_node.contains(" 1 (") && row_of_node.contains(" ago)"), "{described}");
    row("task container killed: back on its own per-task volume", took, "nothing (its data read back)");
    // Both replicas killed at once: two more, each counted once, whichever order the node
    // reports them in.
    let both = [container_in_slot("fvol_node", 1).unwrap(), container_in_slot("fvol_node", 2).unwrap()];
    docker_ok(&["kill", &both[0], &both[1]]);
    let counted = eventually("both restarts counted", READY, || {
        let node = lab.status_json("fvol")?["services"]["node"].clone();
        if node["restarts"] == 3 && node["running"] == 2 { Ok(node) } else { Err(node.to_string()) }
    });
    assert_eq!(counted["lastRestartBySlot"].as_object().map(|slots| slots.len()), Some(2), "{counted}");
    lab.wait_phase("fvol", "Ready", READY);
    assert_eq!(lab.status_json("fvol").unwrap()["services"]["node"]["restarts"], 3, "counted once each");
    lab.remove("fvol.yaml");
    eventually("the lab gone", READY, || {
        let left = docker_ok(&["service", "ls", "-q", "--filter", "label=io.swarmlab.lab=fvol"]);
        if left.trim().is_empty() { Ok(()) } else { Err(left) }
    });
    assert_eq!(volumes().lines().count(), 2, "volumes outlive the lab, as with `docker stack rm`");
}

#[test]
fn labd_killed_with_shaping_applied_then_conditions_removed_leaves_nothing_behind() {
    let mut lab = start_shaped("fagt", "conditions: {delay: 20ms, rate: 1mbit}");
    let a = running_container_of("fagt_a");
    assert_eq!(shaping_in(&a), (true, true), "rules and tbf applied");
    lab.kill_labd(); // SIGKILL: the in-process agent cannot clean up
    assert_eq!(shaping_in(&a), (true, true), "what a killed agent leaves behind");
    // While labd is away the user removes the conditions.
    lab.write("fagt.yaml", &shaped_lab("fagt", ""));
    let started = Instant::now();
    lab.start_labd();
    eventually("the leftovers removed", READY, || {
        if shaping_in(&a) == (false, false) { Ok(()) } else { Err(format!("{:?}", shaping_in(&a))) }
    });
    let took = started.elapsed();
    lab.wait_phase("fagt", "Ready", READY);
    assert_eq!(running_container_of("fagt_a"), a, "the task was restarted");
    row("labd (with its agent) SIGKILLed with delay+rate applied, conditions removed meanwhile", took, "nothing; no rule or tbf left");
}

/// Bytes the token bucket in `container`'s namespace has sent (`None`: no tbf there). A qdisc
/// removed and added again starts from 0.
fn tbf_sent_bytes(container: &str) -> Option<u64> {
    let out = String::from_utf8_lossy(&in_netns(container, &["tc", "-s", "qdisc", "show"]).stdout).to_string();
    let mut lines = out.lines().skip_while(|l| !l.starts_with("qdisc tbf"));
    lines.next()?;
    lines.next()?.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn labd_restarted_keeps_the_kernel_s_shaping_in_force_throughout_and_redoes_only_what_went_with_it() {
    let mut lab = Lab::new();
    lab.cleanup.push("fkeep".into());
    remove_lab_objects("fkeep");
    // a | b partitioned, everything at 1mbit (both kernel rules: they outlive the agent); c's
    // delay is the userspace worker's, which goes with the agent.
    let text = "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {name: fkeep}\nspec:\n  defaults: {image: labbox:latest, init: true, stopGracePeriod: 1s, command: [sleep, \"100000\"], networks: [lan]}\n  networks:\n    lan: {conditions: {rate: 1mbit}}\n  services:\n    a: {}\n    b: {}\n    c: {conditions: {delay: 20ms}}\n  schedule:\n    steps:\n    - at: 0s\n      partition: [[a], [b]]\n";
    lab.write("fkeep.yaml", text);
    lab.start_labd();
    wait_shaped(&lab, "fkeep", READY);
    let (a, b) = (running_container_of("fkeep_a"), running_container_of("fkeep_b"));
    let b_ip = ip_on(&b, "fkeep_lan");
    eventually("the partition in force", READY, || {
        let rules = String::from_utf8_lossy(&in_netns(&a, &["iptables", "-S", "OUTPUT"]).stdout).to_string();
        if rules.contains("swarmlab-cut") { Ok(()) } else { Err(rules) }
    });
    let applied = lab.log_count("shaping applied");
    // Pings from a to b all through the restart: the partition must hold every one of them.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pinger = {
        let (done, a, b_ip) = (done.clone(), a.clone(), b_ip.clone());
        std::thread::spawn(move || {
            let (mut sent, mut answered) = (0, 0);
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                sent += 1;
                answered += u32::from(in_netns(&a, &["ping", "-n", "-q", "-c", "1", "-W", "0.1", &b_ip]).status.success());
                std::thread::sleep(Duration::from_millis(20));
            }
            (sent, answered)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let sent_before = tbf_sent_bytes(&a).expect("a tbf on a's lan");
    lab.stop_labd();
    assert!(lab.log_count("agent stopped; shaping left in place") == 1, "{}", lab.log_tail());
    assert!(tbf_sent_bytes(&a).is_some(), "the rate went with the agent");
    let status = |lab: &Lab| String::from_utf8_lossy(&lab.labctl(&["status"]).stdout).to_string();
    let said = status(&lab);
    assert!(said.contains("STOPPED: labd stopped at"), "labctl status while labd is stopped: {said}");
    // Only the reports whose shaping stayed in force still say it is (c's delay stopped with
    // the agent's worker): the next labd does not count c as shaped until the next agent says so.
    let mut current: Vec<String> = task_reports(&lab, "fkeep").iter().filter(|r| r["updatedAt"].is_string()).map(|r| r["service"].as_str().unwrap_or_default().to_string()).collect();
    current.sort();
    assert_eq!(current, ["a", "b"], "{:?}", task_reports(&lab, "fkeep"));
    let started = Instant::now();
    lab.start_labd();
    // a and b adopted as they are, c's delay applied again by a new worker.
    eventually("the new agent to keep a's and b's shaping and apply c's", READY, || {
        let (kept, again) = (lab.log_count("shaping kept from the agent before"), lab.log_count("shaping applied") - applied);
        if kept == 2 && again >= 1 { Ok(()) } else { Err(format!("kept {kept}, applied {again}: {}", lab.log_tail())) }
    });
    let took = started.elapsed();
    let s = wait_shaped(&lab, "fkeep", READY);
    assert_eq!(s["phase"], "Ready");
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let (sent, answered) = pinger.join().unwrap();
    assert!(sent >= 3 && answered == 0, "the partition let {answered} of {sent} pings through during the restart");
    let sent_after = tbf_sent_bytes(&a).expect("a tbf on a's lan");
    assert!(sent_after >= sent_before, "the token bucket was removed and added again: {sent_before} bytes sent before, {sent_after} after");
    let rtt = avg_rtt(&probe(&lab, "fkeep", "a", "c", 20, 10));
    assert!((19.0..27.0).contains(&rtt), "c's 20 ms delay back: rtt a→c {rtt}");
    let said = status(&lab);
    assert!(!said.contains("STOPPED"), "labctl status once labd is back: {said}");
    row("labd stopped (SIGTERM) and started with a partition, a rate and a delay in force", took, "nothing; the partition and the rate stayed in force (the delay is the worker's: back with the new one)");
}

#[test]
fn labd_restarted_while_redis_is_down_touches_no_shaping_until_it_knows_what_is_wanted() {
    let mut lab = start_shaped("fnored", "conditions: {rate: 1mbit}");
    let a = running_container_of("fnored_a");
    let sent_before = tbf_sent_bytes(&a).expect("a tbf on a's lan");
    let applied = lab.log_count("shaping applied");
    lab.stop_labd();
    let port = lab.redis.port;
    let _ = lab.redis.cli(&["shutdown", "nosave"]);
    lab.start_labd();
    // Its agent cannot read what is wanted: "nothing" is not known, so nothing is removed.
    lab.wait_log("shaping pass failed", READY);
    std::thread::sleep(Duration::from_secs(2)); // four passes more
    assert!(tbf_sent_bytes(&a).is_some_and(|n| n >= sent_before), "the rate removed while Redis was down");
    // Back, empty (no persistence): the agent reads it before labd has written the lab again,
    // and still touches nothing until labd has.
    lab.redis = Redis::start_on(port);
    let back = Instant::now();
    eventually("a's and b's shaping kept", READY, || {
        let kept = lab.log_count("shaping kept from the agent before");
        if kept == 2 { Ok(()) } else { Err(format!("kept {kept}: {}", lab.log_tail())) }
    });
    let took = back.elapsed();
    wait_shaped(&lab, "fnored", READY);
    let sent_after = tbf_sent_bytes(&a).expect("a tbf on a's lan");
    assert!(sent_after >= sent_before, "the token bucket was removed and added again: {sent_before} bytes sent before, {sent_after} after");
    assert_eq!(lab.log_count("shaping applied"), applied, "applied again after the restart: {}", lab.log_tail());
    row("labd restarted while Redis is down, Redis back empty", took, "nothing; the rate kept in force throughout, taken over once labd had written the lab again");
}

#[test]
fn redis_down_and_back_empty_changes_nothing_on_the_data_plane() {
    let mut lab = start_shaped("fred", "conditions: {delay: 20ms}");
    let a = running_container_of("fred_a");
    let port = lab.redis.port;
    let _ = lab.redis.cli(&["shutdown", "nosave"]);
    let down = Instant::now();
    // While Redis is down: a task killed and replaced is still shaped (the agent's cache).
    docker_ok(&["kill", &a]);
    let replacement = eventually("a replacement task", READY, || {
        let c = running_container_of("fred_a");
        if c != a { Ok(c) } else { Err("the killed one".into()) }
    });
    wait_reshaped(&replacement, Instant::now());
    std::thread::sleep(Duration::from_secs(60).saturating_sub(down.elapsed()));
    assert!(shaping_in(&running_container_of("fred_b")).0, "shaping stripped while Redis was down");
    // Back, empty (no persistence): the agents keep shaping, labd writes everything again.
    lab.redis = Redis::start_on(port);
    let back = Instant::now();
    wait_shaped(&lab, "fred", READY);
    let took = back.elapsed();
    assert!(shaping_in(&replacement).0 && shaping_in(&running_container_of("fred_b")).0, "shaping stripped after Redis came back empty");
    let rtt = avg_rtt(&probe(&lab, "fred", "a", "b", 30, 10));
    assert!((37.0..46.0).contains(&rtt), "rtt {rtt}");
    row("Redis down 60 s (a task replaced meanwhile), back empty", took, "nothing; replacement shaped while Redis was down");
}

#[test]
fn labd_killed_in_the_middle_of_applying_40_services_finishes_without_removing_anything() {
    let mut lab = Lab::new();
    lab.cleanup.push("fmid".into());
    remove_lab_objects("fmid");
    let services: String = (0..40).map(|i| format!("    s{i}: {{}}\n")).collect();
    lab.write("fmid.yaml", &lab_yaml("fmid", &services));
    lab.start_labd();
    // Kill it as soon as it reports the first services created (it creates them in batches),
    // while it is still creating the rest.
    let start = Instant::now();
    let before = loop {
        if lab.log_count("create service fmid_") > 0 {
            lab.kill_labd();
            break stack_services("fmid");
        }
        assert!(start.elapsed() < READY, "no service created");
        std::thread::sleep(Duration::from_millis(2));
    };
    assert!(before.len() < 40, "labd had finished before it was killed; the test shows nothing");
    let created: Vec<(String, String)> = before.keys().map(|n| (n.clone(), service_version(n))).collect();
    let started = Instant::now();
    lab.start_labd();
    lab.wait_phase("fmid", "Ready", READY);
    let took = started.elapsed();
    assert_eq!(stack_services("fmid").len(), 40);
    for (name, version) in &created {
        assert_eq!(&service_version(name), version, "{name} was updated or recreated");
    }
    assert_eq!(lab.metric("fmid", "actions_remove"), 0);
    row(&format!("labd SIGKILLed after {} of 40 services, restarted", created.len()), took, "nothing; no service recreated");
}

#[test]
fn dockerd_restarted_under_labd_drift_is_noticed_at_once_and_tasks_are_shaped_again() {
    let mut lab = start_shaped("fdkr", "conditions: {delay: 20ms}");
    // A second lab is being applied when the daemon goes away.
    lab.cleanup.push("fdkr2".into());
    remove_lab_objects("fdkr2");
    let services: String = (0..10).map(|i| format!("    s{i}: {{}}\n")).collect();
    lab.write("fdkr2.yaml", &lab_yaml("fdkr2", &services));
    eventually("fdkr2 being applied", READY, || {
        let n = stack_services("fdkr2").len();
        if n >= 2 { Ok(()) } else { Err(format!("{n}")) }
    });
    let started = Instant::now();
    restart_dockerd();
    wait_shaped(&lab, "fdkr", READY);
    lab.wait_phase("fdkr2", "Ready", READY);
    let recovered = started.elapsed();
    assert_eq!(stack_services("fdkr2").len(), 10);
    // Drift after the restart: a service removed by hand comes back through the reopened
    // event stream, not the 5 s resync.
    let removed = Instant::now();
    docker_ok(&["service", "rm", "fdkr_b"]);
    eventually("the removed service back", READY, || {
        if stack_services("fdkr").contains_key("fdkr_b") { Ok(()) } else { Err("not yet".into()) }
    });
    let noticed = removed.elapsed();
    assert!(noticed < Duration::from_secs(2), "drift noticed after {noticed:?}");
    wait_shaped(&lab, "fdkr", READY);
    let rtt = avg_rtt(&probe(&lab, "fdkr", "a", "b", 30, 10));
    assert!((37.0..46.0).contains(&rtt), "rtt {rtt}");
    row("dockerd restarted under a shaped lab and a 10-service lab being applied", recovered, &format!("nothing; drift after it repaired in {:.1} s", noticed.as_secs_f64()));
}

#[test]
fn a_redis_with_a_password_works_end_to_end() {
    let mut lab = Lab::with_redis(Redis::start_with_password("s3cret-pw"));
    lab.cleanup.push("fpwd".into());
    remove_lab_objects("fpwd");
    lab.write("fpwd.yaml", &shaped_lab("fpwd", "conditions: {delay: 10ms}"));
    lab.start_labd();
    // labctl (REDIS_URL with the password), labd's status, lease and the agent all authenticated.
    wait_shaped(&lab, "fpwd", READY);
    assert!(lab.redis.cli(&["get", "swarmlab:leader"]).contains(':'), "the lease was taken with the password");
    let anonymous = std::process::Command::new("redis-cli").args(["-p", &lab.redis.port.to_string(), "get", "swarmlab:leader"]).output().unwrap();
    assert!(String::from_utf8_lossy(&anonymous.stdout).contains("NOAUTH"), "the server really requires the password");
    // The harness's Redis runs without an append-only file or save points: labd says what a
    // restart of it would lose, and what to do.
    assert_eq!(lab.redis.cli(&["config", "get", "appendonly"]).lines().nth(1), Some("no"));
    lab.wait_log("redis keeps labd's data in memory only", Duration::from_secs(5));
    lab.wait_log("start redis with --appendonly yes", Duration::from_secs(1));
}

#[test]
fn labd_started_before_dockerd_answers_waits_for_it_then_reconciles() {
    let mut lab = Lab::new();
    lab.cleanup.push("fwait".into());
    remove_lab_objects("fwait");
    lab.write("fwait.yaml", &shaped_lab("fwait", "conditions: {delay: 20ms}"));
    // dockerd's socket, not there yet: labd started at boot before docker.service.
    let socket = lab.dir.path().join("docker.sock");
    lab.start_labd_args(&["--docker-host", &format!("unix://{}", socket.display())]);
    // Tried twice: it waits rather than exits (as it did) or reconciles nothing.
    eventually("labd to try Docker a second time", Duration::from_secs(10), || match lab.log_count("Docker does not answer yet") {
        n if n >= 2 => Ok(()),
        n => Err(format!("{n} tries: {}", lab.log_tail())),
    });
    let answered = Instant::now();
    std::os::unix::fs::symlink("/var/run/docker.sock", &socket).expect("the socket appears");
    wait_shaped(&lab, "fwait", READY);
    let took = answered.elapsed();
    let rtt = avg_rtt(&probe(&lab, "fwait", "a", "b", 30, 10));
    assert!((37.0..46.0).contains(&rtt), "20 ms per egress: rtt {rtt}");
    row("labd started before dockerd answers (its socket appears after labd's second try)", took, "nothing: labd waited, tries 1 s apart doubling to 30 s, then applied the lab");
}
