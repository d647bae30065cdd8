//! End-to-end: labd against the real single-node Swarm and a real Redis.

mod common;

use std::time::Duration;

use common::*;

const READY: Duration = Duration::from_secs(90);
const REPAIR: Duration = Duration::from_secs(30);

#[test]
fn dockercoins_converges_and_services_reach_each_other_by_short_name() {
    let mut lab = Lab::new();
    lab.cleanup.push("coins".into());
    remove_lab_objects("coins");
    lab.write("dockercoins.yaml", &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/labs/dockercoins.yaml")).unwrap());
    lab.start_labd();
    let status = lab.wait_phase("coins", "Ready", READY);
    assert_eq!(status["observedGeneration"], status["generation"]);

    let services = stack_services("coins");
    let expected: Vec<(&str, &str)> =
        vec![("coins_hasher", "1/1"), ("coins_redis", "1/1"), ("coins_rng", "1/1"), ("coins_webui", "1/1"), ("coins_worker", "2/2")];
    assert_eq!(services.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect::<Vec<_>>(), expected);

    let worker = running_container_of("coins_worker");
    for (host, port) in [("rng", "80"), ("hasher", "80"), ("redis", "6379")] {
        eventually(&format!("worker to reach {host}:{port}"), Duration::from_secs(20), || {
            let out = docker(&["exec", &worker, "sh", "-c", &format!("echo | nc -w 2 {host} {port}")]);
            if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).to_string()) }
        });
    }

    let table = String::from_utf8_lossy(&lab.labctl(&["status"]).stdout).to_string();
    let row = table.lines().find(|l| l.trim_start().starts_with("coins")).unwrap_or_default().to_string();
    assert!(row.contains("Ready") && row.contains("5/5"), "labctl status row: {row}\n{table}");
    let describe = String::from_utf8_lossy(&lab.labctl(&["describe", "coins"]).stdout).to_string();
    assert!(describe.contains("ServicesReady") && describe.contains("worker"), "{describe}");

    lab.remove("dockercoins.yaml");
    eventually("coins to be torn down", REPAIR, || {
        let left = docker_ok(&["service", "ls", "-q", "--filter", "label=com.docker.stack.namespace=coins"]);
        if left.is_empty() { Ok(()) } else { Err(left) }
    });
}

#[test]
fn edits_scale_and_remove_services_and_hand_changes_are_repaired() {
    let mut lab = Lab::new();
    lab.cleanup.push("drift".into());
    remove_lab_objects("drift");
    lab.write("drift.yaml", &lab_yaml("drift", "    a: {replicas: 1}\n    b: {replicas: 1}\n"));
    lab.start_labd();
    lab.wait_phase("drift", "Ready", READY);

    lab.write("drift.yaml", &lab_yaml("drift", "    a: {replicas: 3}\n    b: {replicas: 1}\n"));
    eventually("a scaled to 3 by the file", READY, || match stack_services("drift").get("drift_a").map(String::as_str) {
        Some("3/3") => Ok(()),
        other => Err(format!("{other:?}")),
    });

    lab.write("drift.yaml", &lab_yaml("drift", "    a: {replicas: 3}\n"));
    eventually("b removed with its entry", READY, || {
        if stack_services("drift").contains_key("drift_b") { Err("still there".into()) } else { Ok(()) }
    });
    lab.wait_phase("drift", "Ready", READY);

    docker_ok(&["service", "scale", "--detach", "drift_a=1"]);
    eventually("a scaled back to 3 after a hand scale", REPAIR, || {
        let replicas = docker_ok(&["service", "inspect", "drift_a", "--format", "{{.Spec.Mode.Replicated.Replicas}}"]);
        if replicas == "3" { Ok(()) } else { Err(replicas) }
    });

    // An env added by hand: the docker CLI keeps the labels, the spec hash among them, so only
    // the service's settings show it.
    docker_ok(&["service", "update", "--detach", "--env-add", "DEBUG=1", "drift_a"]);
    eventually("a's env put back after a hand edit", REPAIR, || {
        let env = docker_ok(&["service", "inspect", "drift_a", "--format", "{{json .Spec.TaskTemplate.ContainerSpec.Env}}"]);
        if env.contains("DEBUG") { Err(env) } else { Ok(()) }
    });
    lab.wait_phase("drift", "Ready", READY);
    // A label and a placement constraint added by hand: the service's own settings, put back too.
    docker_ok(&["service", "update", "--detach", "--label-add", "hand=1", "--constraint-add", "node.hostname!=nowhere", "drift_a"]);
    eventually("a's label and constraint put back after a hand edit", REPAIR, || {
        let edited = docker_ok(&["service", "inspect", "drift_a", "--format", "{{json .Spec.Labels}} {{json .Spec.TaskTemplate.Placement}}"]);
        if edited.contains("hand") || edited.contains("nowhere") { Err(edited) } else { Ok(()) }
    });
    lab.wait_phase("drift", "Ready", READY);

    // `labctl events -w` shows the repair as labd writes it: its first line (the last event
    // so far) says it is watching.
    let mut watch = std::process::Command::new(env!("CARGO_BIN_EXE_labctl"))
        .args(["--redis", &lab.redis.url(), "events", "drift", "--watch", "-n", "1", "-o", "json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("labctl events --watch");
    let (tx, watched) = std::sync::mpsc::channel();
    let stdout = watch.stdout.take().expect("stdout");
    std::thread::spawn(move || std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok).try_for_each(|l| tx.send(l)));
    watched.recv_timeout(REPAIR).expect("labctl events --watch printed the last event");
    docker_ok(&["service", "rm", "drift_a"]);
    eventually("a recreated after a hand removal", REPAIR, || match stack_services("drift").get("drift_a").map(String::as_str) {
        Some("3/3") => Ok(()),
        other => Err(format!("{other:?}")),
    });
    lab.wait_phase("drift", "Ready", READY);
    let repaired = eventually("the repair watched", REPAIR, || {
        let line = watched.recv_timeout(REPAIR).map_err(|e| e.to_string())?;
        let e: serde_json::Value = serde_json::from_str(&line).map_err(|e| format!("{e}: {line}"))?;
        if e["reason"] == "DriftRepaired" { Ok(e) } else { Err(line) }
    });
    let _ = watch.kill();
    let _ = watch.wait();
    assert_eq!((repaired["lab"].as_str(), repaired["type"].as_str()), (Some("drift"), Some("Warning")), "{repaired}");
    let table = String::from_utf8_lossy(&lab.labctl(&["events", "drift", "--types", "warning"]).stdout).to_string();
    assert!(table.starts_with("TIME") && table.lines().skip(1).all(|l| l.contains(" Warning ")) && table.contains("DriftRepaired"), "{table}");
    assert!(lab.metric("drift", "drift_repairs") >= 3, "drift repairs counted: {}", lab.metric("drift", "drift_repairs"));
    // The hand edit put back once, not chased at every look since.
    let all = String::from_utf8_lossy(&lab.labctl(&["events", "drift"]).stdout).to_string();
    assert_eq!(all.matches("settings changed outside labd").count(), 2, "{all}");
}

#[test]
fn deleting_the_file_removes_the_lab_and_nothing_else_and_a_name_clash_shows_in_status() {
    let mut lab = Lab::new();
    lab.cleanup.push("clash".into());
    remove_lab_objects("clash");
    // Objects with the lab's names that swarmlab does not own.
    let _ = docker(&["service", "rm", "clash_web"]);
    let _ = docker(&["network", "rm", "clash_net"]);
    docker_ok(&["network", "create", "--driver", "overlay", "clash_net"]);
    docker_ok(&["service", "create", "--detach", "--name", "clash_web", "--init", "labbox:latest", "sleep", "100000"]);
    let unowned_version = service_version("clash_web");

    let services = "    web: {networks: [net]}\n    api: {networks: [net]}\n    worker: {}\n";
    let text = lab_yaml("clash", services).replace("  services:\n", "  networks:\n    net: {}\n  services:\n");
    lab.write("clash.yaml", &text);
    lab.start_labd();
    let status = lab.wait_phase("clash", "Failed", READY);
    let message = status["message"].as_str().unwrap_or_default().to_string();
    assert!(message.contains("clash_web") && message.contains("not managed by swarmlab"), "{message}");
    assert!(message.contains("clash_net"), "{message}");
    // What does not clash is still created.
    eventually("worker created beside the clash", READY, || {
        if stack_services("clash").contains_key("clash_worker") { Ok(()) } else { Err("no worker".into()) }
    });
    // Said once as a Warning event, not at every look.
    std::thread::sleep(Duration::from_secs(2));
    let events = lab.redis.cli(&["xrange", "swarmlab:lab:clash:events", "-", "+"]);
    assert_eq!(events.matches("ReconcileFailed").count(), 1, "{events}");

    lab.remove("clash.yaml");
    eventually("owned objects removed", REPAIR, || {
        let owned = docker_ok(&["service", "ls", "-q", "--filter", "label=io.swarmlab.lab=clash"]);
        if owned.is_empty() { Ok(()) } else { Err(owned) }
    });
    eventually("status removed", REPAIR, || if lab.status_json("clash").is_err() { Ok(()) } else { Err("still there".into()) });
    assert_eq!(service_version("clash_web"), unowned_version, "the unowned service was touched");
    docker_ok(&["network", "inspect", "clash_net"]);
    docker_ok(&["service", "rm", "clash_web"]);
    eventually("unowned network removable", REPAIR, || {
        let out = docker(&["network", "rm", "clash_net"]);
        if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).to_string()) }
    });

    // A subnet overlapping a network labd does not own: said, and nothing created (Engine 20.10
    // made such a network without a subnet, and labd recreated it 92 times in 8 s); Ready once
    // that network is gone.
    let _ = docker(&["network", "rm", "overlap_foreign"]);
    docker_ok(&["network", "create", "--driver", "overlay", "--subnet", "10.231.0.0/16", "overlap_foreign"]);
    lab.cleanup.push("overlap".into());
    remove_lab_objects("overlap");
    let text = lab_yaml("overlap", "    web: {networks: [lan]}\n").replace("  services:\n", "  networks:\n    lan: {subnet: 10.231.7.0/24}\n  services:\n");
    lab.write("overlap.yaml", &text);
    lab.wait_phase_saying("overlap", "Failed", "network overlap_lan's subnet 10.231.7.0/24 overlaps network overlap_foreign (10.231.0.0/16)", READY);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(lab.metric("overlap", "actions_create"), 0);
    assert!(docker_ok(&["network", "ls", "-q", "--filter", "name=overlap_lan"]).trim().is_empty(), "created");
    docker_ok(&["network", "rm", "overlap_foreign"]);
    let status = lab.wait_phase("overlap", "Ready", READY);
    assert_eq!(lab.metric("overlap", "actions_create"), 2, "{status}");
    let subnet = docker_ok(&["network", "inspect", "overlap_lan", "--format", "{{range .IPAM.Config}}{{.Subnet}}{{end}}"]);
    assert_eq!(subnet.trim(), "10.231.7.0/24");
    lab.remove("overlap.yaml");
}

#[test]
fn an_invalid_edit_keeps_the_last_good_version_running_until_fixed() {
    let mut lab = Lab::new();
    lab.cleanup.push("edit".into());
    remove_lab_objects("edit");
    lab.write("edit.yaml", &lab_yaml("edit", "    web: {replicas: 1}\n"));
    lab.start_labd();
    lab.wait_phase("edit", "Ready", READY);
    let version = service_version("edit_web");

    lab.write("edit.yaml", &lab_yaml("edit", "    web: {replicas: -1}\n"));
    let status = lab.wait_phase("edit", "Invalid", REPAIR);
    let path = lab.labs.join("edit.yaml");
    let expected = format!("{}:12:21: spec.services.web.replicas: must be at least 0", path.display());
    let table = String::from_utf8_lossy(&lab.labctl(&["status"]).stdout).to_string();
    assert!(table.contains(&expected), "labctl status should show `{expected}`:\n{table}\n{status}");
    std::thread::sleep(Duration::from_secs(6)); // past a resync
    assert_eq!(service_version("edit_web"), version, "the running version was touched");
    assert_eq!(stack_services("edit")["edit_web"], "1/1");

    // Broken YAML (a half-written file) is no different.
    lab.write("edit.yaml", "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {name: edit\n");
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(lab.phase("edit").unwrap(), "Invalid");
    assert_eq!(service_version("edit_web"), version);

    lab.write("edit.yaml", &lab_yaml("edit", "    web: {replicas: 2}\n"));
    lab.wait_phase("edit", "Ready", READY);
    assert_eq!(stack_services("edit")["edit_web"], "2/2");
}

#[test]
fn a_symlink_swap_or_a_vanished_directory_causes_no_teardown_and_no_restart() {
    let mut lab = Lab::new();
    lab.cleanup.push("swap".into());
    remove_lab_objects("swap");
    let root = lab.dir.path().to_path_buf();
    let text = lab_yaml("swap", "    web: {replicas: 2}\n");
    for rev in ["rev1", "rev2"] {
        std::fs::create_dir_all(root.join(rev)).unwrap();
        std::fs::write(root.join(rev).join("swap.yaml"), &text).unwrap();
    }
    let current = root.join("current");
    std::os::unix::fs::symlink(root.join("rev1"), &current).unwrap();
    lab.start_labd_on(&current);
    lab.wait_phase("swap", "Ready", READY);
    let version = service_version("swap_web");
    let tasks = docker_ok(&["service", "ps", "-q", "swap_web"]);

    // Git-sync style: a new symlink renamed over the old one.
    let tmp = root.join("current.tmp");
    std::os::unix::fs::symlink(root.join("rev2"), &tmp).unwrap();
    std::fs::rename(&tmp, &current).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    // The directory gone for longer than a resync.
    std::fs::remove_file(&current).unwrap();
    std::thread::sleep(Duration::from_secs(7));
    std::os::unix::fs::symlink(root.join("rev2"), &current).unwrap();
    std::thread::sleep(Duration::from_secs(7));

    assert_eq!(lab.phase("swap").unwrap(), "Ready");
    assert_eq!(service_version("swap_web"), version, "the service was updated");
    assert_eq!(docker_ok(&["service", "ps", "-q", "swap_web"]), tasks, "tasks were restarted");
    assert_eq!(lab.metric("swap", "actions_remove"), 0);
}

#[test]
fn restarting_labd_on_a_converged_lab_changes_nothing() {
    let mut lab = Lab::new();
    lab.cleanup.push("restart".into());
    remove_lab_objects("restart");
    lab.write("restart.yaml", &lab_yaml("restart", "    a: {replicas: 2}\n    b: {}\n"));
    lab.start_labd();
    lab.wait_phase("restart", "Ready", READY);
    let before = (service_version("restart_a"), service_version("restart_b"));
    let creates = lab.metric("restart", "actions_create");
    assert_eq!(creates, 3, "one network and two services created");
    lab.stop_labd();

    let reconciles = lab.metric("restart", "reconciles");
    lab.start_labd();
    eventually("the new labd to reconcile twice", READY, || {
        let n = lab.metric("restart", "reconciles");
        if n >= reconciles + 2 { Ok(()) } else { Err(format!("{n}")) }
    });
    assert_eq!(lab.phase("restart").unwrap(), "Ready");
    assert_eq!(lab.metric("restart", "actions_create"), creates);
    assert_eq!(lab.metric("restart", "actions_update"), 0);
    assert_eq!(lab.metric("restart", "actions_remove"), 0);
    assert_eq!((service_version("restart_a"), service_version("restart_b")), before);
    let status = lab.status_json("restart").unwrap();
    assert_eq!(status["generation"], 1, "an unchanged file keeps its generation across restarts");
}

#[test]
fn two_labs_converge_independently_and_a_missing_image_is_reported() {
    let mut lab = Lab::new();
    lab.cleanup.extend(["good".to_string(), "broken".to_string(), "taken".to_string()]);
    remove_lab_objects("good");
    remove_lab_objects("broken");
    remove_lab_objects("taken");
    lab.write("good.yaml", &lab_yaml("good", "    web: {replicas: 2}\n    gate: {ports: ['18090:80']}\n"));
    lab.write("broken.yaml", &lab_yaml("broken", "    web: {image: \"swarmlab-test/no-such-image:1\"}\n"));
    lab.start_labd();
    lab.wait_phase("good", "Ready", READY);
    let broken = eventually("broken to report its image", READY, || {
        let s = lab.status_json("broken")?;
        let msg = s["message"].as_str().unwrap_or_default().to_string();
        if matches!(s["phase"].as_str(), Some("Degraded" | "Failed")) && msg.contains("no-such-image") {
            Ok(s)
        } else {
            Err(format!("{} {msg}", s["phase"]))
        }
    });
    let msg = broken["message"].as_str().unwrap_or_default();
    assert!(msg.contains("labd never pulls"), "the message says what to do: {msg}");
    assert_eq!(lab.phase("good").unwrap(), "Ready");
    // A host port another lab's task holds: the lab says which port, not placement.
    lab.write("taken.yaml", &lab_yaml("taken", "    web: {ports: ['18090:80']}\n"));
    let taken = lab.wait_phase_saying("taken", "Progressing", "web 0/1 (port 18090 in use on every node that may run it)", READY);
    let service = taken["services"]["web"]["message"].as_str().unwrap_or_default();
    assert!(service.contains("host-mode port already in use") && service.contains("nothing else holds port 18090"), "{service}");
    assert_eq!(lab.phase("good").unwrap(), "Ready");
}

#[test]
fn with_redis_down_labd_stands_by_and_applies_what_changed_when_redis_is_back() {
    let mut lab = Lab::new();
    lab.cleanup.push("nored".into());
    remove_lab_objects("nored");
    lab.write("nored.yaml", &lab_yaml("nored", "    web: {replicas: 1}\n"));
    lab.start_labd();
    lab.wait_phase("nored", "Ready", READY);
    let container = running_container_of("nored_web");

    // Redis gone: the leader cannot renew its lease, so it stops acting (one writer).
    let port = lab.redis.port;
    drop(std::mem::replace(&mut lab.redis, Redis::start()));
    lab.wait_log("stopped reconciling; standing by", READY);
    lab.write("nored.yaml", &lab_yaml("nored", "    web: {replicas: 2}\n"));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(stack_services("nored").get("nored_web").map(String::as_str), Some("1/1"), "a labd without its lease acted");
    assert_eq!(running_container_of("nored_web"), container, "the running task was touched");

    // Redis back on its port, empty: labd leads again, applies the edit, writes status again.
    lab.redis = Redis::start_on(port);
    let status = lab.wait_phase("nored", "Ready", READY);
    assert_eq!(status["services"]["web"]["desired"], 2);
    assert_eq!(stack_services("nored").get("nored_web").map(String::as_str), Some("2/2"));
}

#[test]
fn labd_once_exits_zero_when_every_lab_is_ready() {
    let lab = Lab::new();
    let once = |timeout: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_labd"))
            .args(["--labs", lab.labs.to_str().unwrap(), "--redis", &lab.redis.url(), "--once", "--timeout", timeout])
            .env("DOCKER_API_VERSION", "1.41")
            .output()
            .unwrap()
    };
    remove_lab_objects("oncelab");
    lab.write("once.yaml", &lab_yaml("oncelab", "    web: {}\n"));
    let out = once("60");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("oncelab: Ready"));
    assert_eq!(stack_services("oncelab")["oncelab_web"], "1/1");
    remove_lab_objects("oncelab");
    // Not Ready in time: exit 1, and the log says why (a pipeline's log is all its user sees).
    remove_lab_objects("oncebad");
    std::fs::remove_file(lab.labs.join("once.yaml")).unwrap();
    lab.write("bad.yaml", &lab_yaml("oncebad", "    web: {image: 'labbox:nosuchtag'}\n"));
    let out = once("6");
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.lines().any(|l| l.starts_with("oncebad: Degraded: web: rejected: No such image: labbox:nosuchtag (labd never pulls")), "{said}");
    remove_lab_objects("oncebad");
}

#[test]
fn a_standby_labd_waits_for_the_lease_and_takes_over_without_recreating_anything() {
    let mut lab = Lab::new();
    lab.cleanup.push("lease".into());
    remove_lab_objects("lease");
    lab.write("lease.yaml", &lab_yaml("lease", "    web: {replicas: 2}\n"));
    lab.start_labd();
    lab.wait_phase("lease", "Ready", READY);
    let version = service_version("lease_web");
    let creates = lab.metric("lease", "actions_create");

    let standby_log = lab.dir.path().join("standby.log");
    let mut standby = lab.spawn_standby(&standby_log);
    eventually("the standby to wait", Duration::from_secs(20), || {
        let log = std::fs::read_to_string(&standby_log).unwrap_or_default();
        if log.contains("standing by") { Ok(()) } else { Err(log) }
    });
    std::thread::sleep(Duration::from_secs(3));
    assert!(!std::fs::read_to_string(&standby_log).unwrap().contains("reconcile"), "the standby reconciled while not leader");

    lab.kill_labd();
    eventually("the standby to take the lease", Duration::from_secs(20), || {
        let log = std::fs::read_to_string(&standby_log).unwrap_or_default();
        if log.contains("leader lease acquired") { Ok(()) } else { Err(log) }
    });
    // The new leader repairs drift, and recreated nothing.
    docker_ok(&["service", "scale", "--detach", "lease_web=1"]);
    eventually("the new leader to repair a hand scale", REPAIR, || {
        let r = docker_ok(&["service", "inspect", "lease_web", "--format", "{{.Spec.Mode.Replicated.Replicas}}"]);
        if r == "2" { Ok(()) } else { Err(r) }
    });
    assert_eq!(lab.metric("lease", "actions_create"), creates, "the new leader recreated objects");
    assert_ne!(service_version("lease_web"), version, "the repair is an update of the same service");
    let _ = standby.kill();
    let _ = standby.wait();
}

#[test]
fn a_subnet_change_recreates_the_network_and_its_services_come_back_on_it() {
    let mut lab = Lab::new();
    lab.cleanup.push("subnet".into());
    remove_lab_objects("subnet");
    let text = |subnet: &str| {
        lab_yaml("subnet", "    web: {networks: [lan], replicas: 2}\n")
            .replace("  services:\n", &format!("  networks:\n    lan: {{subnet: {subnet}}}\n  services:\n"))
    };
    lab.write("subnet.yaml", &text("10.91.0.0/24"));
    lab.start_labd();
    lab.wait_phase("subnet", "Ready", READY);
    // `labctl diff` shows both passes: the removals now, the creates once those are done.
    let only = tempfile::tempdir().unwrap();
    std::fs::write(only.path().join("subnet.yaml"), text("10.92.0.0/24")).unwrap();
    let diffed = String::from_utf8_lossy(&lab.labctl(&["diff", only.path().to_str().unwrap()]).stdout).to_string();
    let ours: Vec<&str> = diffed.lines().filter(|l| l.starts_with("~ subnet: ")).collect();
    assert_eq!(ours, [
        "~ subnet: remove service subnet_web from a network being recreated; it is created again on the new network",
        "~ subnet: remove network subnet_lan to recreate it (subnet or internal changed; Docker cannot update a network)",
        "~ subnet: then create network subnet_lan",
        "~ subnet: then create service subnet_web (2 replicas)",
    ], "{diffed}");
    lab.write("subnet.yaml", &text("10.92.0.0/24"));
    let network_has = |network: &str, want: &str| {
        eventually(&format!("{network} with subnet {want}"), READY, || {
            let subnet = docker(&["network", "inspect", network, "--format", "{{range .IPAM.Config}}{{.Subnet}}{{end}}"]);
            let subnet = String::from_utf8_lossy(&subnet.stdout).trim().to_string();
            if subnet == want { Ok(()) } else { Err(subnet) }
        })
    };
    network_has("subnet_lan", "10.92.0.0/24");
    lab.wait_phase("subnet", "Ready", READY);
    let c = running_container_of("subnet_web");
    let addrs = docker_ok(&["inspect", &c, "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"]);
    assert!(addrs.contains("10.92.0."), "the task is on the new subnet: {addrs}");
    let events = lab.redis.cli(&["xrange", "swarmlab:lab:subnet:events", "-", "+"]);
    assert!(events.contains("to recreate it (subnet or internal changed"), "the events say why:\n{events}");
    // The old network stays listed until the old tasks have stopped: waited for, not failed on.
    assert!(!events.contains("ReconcileFailed"), "the change failed on the way:\n{events}");
    assert_eq!(lab.metric("subnet", "drift_repairs"), 0, "a spec change is not drift");

    // The network renamed, its subnet kept: the new one cannot be made while the old one holds
    // the subnet, nor the old one removed while the service is on it (labd failed so, forever).
    lab.write("subnet.yaml", &text("10.92.0.0/24").replace("lan", "lan2"));
    network_has("subnet_lan2", "10.92.0.0/24");
    lab.wait_phase("subnet", "Ready", READY);
    let c = running_container_of("subnet_web");
    let addrs = docker_ok(&["inspect", &c, "--format", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}"]);
    assert!(addrs.contains("subnet_lan2") && !addrs.contains("subnet_lan "), "{addrs}");
    let events = lab.redis.cli(&["xrange", "swarmlab:lab:subnet:events", "-", "+"]);
    assert!(!events.contains("ReconcileFailed"), "the rename failed on the way:\n{events}");
}

/// A task that exits a moment after it starts is seen running by some looks: the lab must not
/// flap to Ready between failures (a `labctl wait --for ready` in a CI job would pass).
#[test]
fn a_crash_looping_service_keeps_its_lab_degraded_and_never_ready() {
    let mut lab = Lab::new();
    lab.cleanup.push("loop".into());
    remove_lab_objects("loop");
    // `quits` is a service whose command returns (exit 0): it loops as surely.
    lab.write("loop.yaml", &lab_yaml("loop", "    ok: {}\n    bad: {command: [sh, -c, \"echo boom; exit 3\"], restartPolicy: {delay: 1s}}\n    quits: {command: [sh, -c, \"sleep 1\"], restartPolicy: {delay: 1s}}\n"));
    lab.start_labd();
    lab.wait_phase_saying("loop", "Degraded", "a crash loop", READY);
    // Its first try, running for a moment before any failure, may have been seen Ready: from
    // its second failure on, it is a loop.
    let readies = || lab.redis.cli(&["xrange", "swarmlab:lab:loop:events", "-", "+"]).matches("Ready").count();
    let before = readies();
    let out = lab.labctl(&["wait", "loop", "--for", "ready", "--timeout", "15s"]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "Ready while crash-looping: {stderr}");
    let tries = docker_ok(&["service", "ps", "loop_bad", "-q"]).lines().count();
    assert!(tries >= 4, "the task looped over those 15 s ({tries} tasks)");
    assert_eq!(readies(), before, "the lab was Ready while looping:\n{}", lab.redis.cli(&["xrange", "swarmlab:lab:loop:events", "-", "+"]));
    let services = lab.status_json("loop").expect("status")["services"].clone();
    let quits = services["quits"]["message"].as_str().unwrap_or_default();
    assert!(quits.contains("a crash loop") && quits.contains("its command returned, exit 0"), "{services}");
    // The message says where to look, and what it names shows why.
    let bad = services["bad"]["message"].as_str().unwrap_or_default();
    assert!(bad.ends_with("; `labctl logs loop bad` shows what it printed"), "{services}");
    let logs = String::from_utf8_lossy(&lab.labctl(&["logs", "loop", "bad", "-n", "5"]).stdout).to_string();
    assert!(logs.lines().any(|l| l.starts_with("bad.1 | boom")), "{logs}");
    // Each loop counted as kubectl counts a pod's restarts; `ok` never restarted.
    for looping in ["bad", "quits"] {
        assert!(services[looping]["restarts"].as_u64().is_some_and(|n| n >= 3), "{services}");
    }
    assert!(services["ok"].get("restarts").is_none(), "{services}");
    // Said once per looping service, not once per restart.
    let warnings = String::from_utf8_lossy(&lab.labctl(&["events", "loop", "--types", "Warning"]).stdout).to_string();
    for looping in ["bad", "quits"] {
        let said = warnings.lines().filter(|l| l.contains("TasksFailing") && l.contains(&format!("  {looping}: "))).count();
        assert!((1..=2).contains(&said), "{looping} said {said} times:\n{warnings}");
    }
}

/// Environment values of the running containers of `service`, sorted.
fn running_envs(service: &str, key: &str) -> Vec<String> {
    let ids = docker_ok(&["ps", "-q", "--filter", &format!("label=com.docker.swarm.service.name={service}"), "--filter", "status=running"]);
    let mut values: Vec<String> = ids
        .lines()
        .map(|id| docker_ok(&["inspect", id, "--format", "{{range .Config.Env}}{{println .}}{{end}}"]))
        .map(|env| env.lines().find_map(|l| l.strip_prefix(&format!("{key}="))).unwrap_or("-").to_string())
        .collect();
    values.sort();
    values
}

/// A change rolled out with `order: start-first` and a `delay` keeps every replica running, old
/// and new, the whole time: the lab is Ready once every running task runs the new spec, never
/// before (a `labctl wait --for ready` after an edit must not return half-updated). A change
/// whose new task fails makes Swarm pause the update: the lab says so, keeps the running tasks,
/// and the next change of the file goes on.
#[test]
fn a_rolling_update_is_ready_only_once_every_task_runs_the_new_spec_and_a_paused_one_says_so() {
    let mut lab = Lab::new();
    lab.cleanup.push("roll".into());
    remove_lab_objects("roll");
    let node = |command: &str, v: u32| lab_yaml("roll", &format!("    node: {{replicas: 3, {command}env: {{V: \"{v}\"}}, update: {{order: start-first, delay: 2s, monitor: 10s}}}}\n"));
    lab.write("roll.yaml", &node("", 1));
    lab.start_labd();
    lab.wait_phase("roll", "Ready", READY);
    let readies = || lab.redis.cli(&["xrange", "swarmlab:lab:roll:events", "-", "+"]).matches("Ready").count();
    let before = readies();

    lab.write("roll.yaml", &node("", 2));
    let seen = lab.wait_phase_saying("roll", "Progressing", "still on the previous spec", READY);
    assert!(seen["message"].as_str().unwrap_or_default().contains("one at a time: `update.parallelism` sets how many at once"), "{seen}");
    assert!(seen["services"]["node"]["outdated"].as_u64().is_some_and(|n| n > 0), "{seen}");
    // The rollout lasts ~10 s (3 tasks, 2 s apart): describe shows it under way.
    let describe = String::from_utf8_lossy(&lab.labctl(&["describe", "roll"]).stdout).to_string();
    assert!(describe.contains("OUTDATED"), "{describe}");
    let ready = lab.wait_phase("roll", "Ready", READY);
    // Swarm calls its update completed `monitor` (10 s) after the last new task runs: Ready
    // before that comes from each task's spec compared with the service's, not from Swarm's word.
    assert_eq!(docker_ok(&["service", "inspect", "roll_node", "--format", "{{.UpdateStatus.State}}"]).trim(), "updating", "Ready only once Swarm said the update completed");
    assert_eq!(ready["observedGeneration"], ready["generation"]);
    assert_eq!(running_envs("roll_node", "V"), ["2", "2", "2"], "Ready with a task on the previous spec running");
    assert_eq!(readies(), before + 1, "Ready more than once over the rollout:\n{}", lab.redis.cli(&["xrange", "swarmlab:lab:roll:events", "-", "+"]));
    let events = String::from_utf8_lossy(&lab.labctl(&["events", "roll"]).stdout).to_string();
    assert!(events.contains("update service roll_node (its tasks' spec changed: Swarm replaces its tasks, one at a time)"), "{events}");

    // A change whose new task exits at once: Swarm pauses the update after the first one.
    lab.write("roll.yaml", &node("command: [sh, -c, \"sleep 1; exit 3\"], ", 3));
    let paused = lab.wait_phase_saying("roll", "Degraded", "Swarm paused its update", READY);
    let message = paused["message"].as_str().unwrap_or_default();
    assert!(message.contains("still run the previous spec; fix the service in the lab"), "{message}");
    assert_eq!(docker_ok(&["service", "inspect", "roll_node", "--format", "{{.UpdateStatus.State}}"]).trim(), "paused");
    assert_eq!(running_envs("roll_node", "V").iter().filter(|v| *v == "2").count(), 3, "the running tasks kept");

    // Fixed in the file: the update goes on to the end.
    lab.write("roll.yaml", &node("", 4));
    eventually("the fixed update to roll out", READY, || {
        let envs = running_envs("roll_node", "V");
        let phase = lab.phase("roll")?;
        if phase == "Ready" && envs == ["4", "4", "4"] { Ok(()) } else { Err(format!("{phase}, V of the running tasks: {envs:?}")) }
    });
}

#[test]
fn a_network_dropped_from_a_lab_goes_once_its_tasks_have_moved_off_without_failing() {
    let mut lab = Lab::new();
    lab.cleanup.push("dropnet".into());
    remove_lab_objects("dropnet");
    let text = |networks: &[&str]| {
        let declared: Vec<String> = networks.iter().map(|n| format!("    {n}: {{}}\n")).collect();
        lab_yaml("dropnet", &format!("    web: {{networks: [{}], replicas: 2}}\n", networks.join(", "))).replace("  services:\n", &format!("  networks:\n{}  services:\n", declared.concat()))
    };
    lab.write("dropnet.yaml", &text(&["lan", "old"]));
    lab.start_labd();
    lab.wait_phase("dropnet", "Ready", READY);
    lab.write("dropnet.yaml", &text(&["lan"]));
    // Swarm refuses to remove the network while a task of the rolling update's second batch
    // still runs on it.
    eventually("the dropped network removed", READY, || {
        let out = docker(&["network", "inspect", "dropnet_old"]);
        if out.status.success() { Err("still there".to_string()) } else { Ok(()) }
    });
    lab.wait_phase("dropnet", "Ready", READY);
    let events = lab.redis.cli(&["xrange", "swarmlab:lab:dropnet:events", "-", "+"]);
    assert!(events.contains("remove network dropnet_old"), "{events}");
    assert!(!events.contains("ReconcileFailed"), "the change failed on the way:\n{events}");
}

#[test]
fn labctl_wait_says_why_a_lab_is_not_ready_and_status_marks_a_silent_labd_stale() {
    let mut lab = Lab::new();
    lab.cleanup.push("waitx".into());
    remove_lab_objects("waitx");
    lab.write("waitx.yaml", &lab_yaml("waitx", "    ok: {}\n    broken: {image: \"nope:latest\"}\n"));
    lab.start_labd();
    let started = std::time::Instant::now();
    let out = lab.labctl(&["wait", "waitx", "--for", "ready", "--timeout", "8s"]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(15), "the timeout was not kept");
    assert!(stderr.contains("waitx is not Ready after 8s") && stderr.contains("broken 0/1"), "{stderr}");
    assert!(stderr.contains("labd never pulls"), "the reason is given: {stderr}");
    let out = lab.labctl(&["wait", "nosuchlab", "--for", "deleted", "--timeout", "5s"]);
    assert!(out.status.success(), "a lab with no status is deleted");
    // An invalid file cannot become Ready until it is fixed: the wait says so, not at its timeout.
    lab.cleanup.push("waitbad".into());
    lab.write("waitbad.yaml", "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {name: waitbad}\nspec:\n  services:\n    web: {image: labbox:latest, replicas: many}\n");
    let started = std::time::Instant::now();
    let out = lab.labctl(&["wait", "waitbad", "--timeout", "60s"]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(15), "gave up on the invalid file in {:?}", started.elapsed());
    assert!(stderr.contains("waitbad cannot become Ready: its file is invalid") && stderr.contains("waitbad.yaml:6:") && stderr.contains("spec.services.web.replicas"), "{stderr}");
    lab.remove("waitbad.yaml");

    // A task no node may run, past a 3 s progress deadline: Degraded, and the wait ends (2 s
    // later, not at its timeout) saying so; a placement some node satisfies makes it Ready.
    lab.cleanup.push("waitstuck".into());
    remove_lab_objects("waitstuck");
    let stuck = |constraint: &str| lab_yaml("waitstuck", &format!("    web: {{placement: {{constraints: [\"{constraint}\"]}}}}\n")).replace("spec:\n", "spec:\n  progressDeadline: 3s\n");
    lab.write("waitstuck.yaml", &stuck("node.labels.nowhere==true"));
    let started = std::time::Instant::now();
    let out = lab.labctl(&["wait", "waitstuck", "--timeout", "60s"]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(20), "gave up on the stuck lab in {:?}", started.elapsed());
    assert!(stderr.contains("waitstuck is not becoming Ready: no progress for") && stderr.contains("(progressDeadline 3s): waiting for web 0/1 (no node may run it)"), "{stderr}");
    assert_eq!(lab.phase("waitstuck").unwrap(), "Degraded");
    let events = lab.redis.cli(&["xrange", "swarmlab:lab:waitstuck:events", "-", "+"]);
    assert_eq!(events.matches("ProgressDeadlineExceeded").count(), 1, "{events}");
    let described = String::from_utf8_lossy(&lab.labctl(&["describe", "waitstuck"]).stdout).to_string();
    assert!(described.contains("Waiting:      web 0/1 (no node may run it) (for "), "{described}");
    lab.write("waitstuck.yaml", &stuck("node.role==manager"));
    lab.wait_phase("waitstuck", "Ready", READY);
    lab.remove("waitstuck.yaml");

    // labd gone for a minute: the statuses it left are marked stale.
    lab.kill_labd();
    let minute_ago = (chrono::Utc::now() - chrono::Duration::seconds(60)).to_rfc3339();
    lab.redis.cli(&["hset", "swarmlab:labd", "heartbeat", &minute_ago]);
    let out = lab.labctl(&["status"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(stdout.contains("STALE: labd was last seen") && stdout.contains("(stale)"), "{stdout}");
    lab.start_labd();
    eventually("a fresh heartbeat", Duration::from_secs(20), || {
        let out = lab.labctl(&["status"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if text.contains("STALE") { Err(text) } else { Ok(()) }
    });
}

#[test]
fn prometheus_scrapes_phase_readiness_reconciles_and_api_calls_and_probes_answer() {
    let mut lab = Lab::new();
    lab.cleanup.push("prom".into());
    remove_lab_objects("prom");
    lab.write("prom.yaml", &lab_yaml("prom", "    web: {replicas: 2, conditions: {delay: 5ms}}\n    db: {}\n"));
    let port = 19464;
    lab.start_labd_args(&["--http", &format!("127.0.0.1:{port}")]);
    lab.wait_phase("prom", "Ready", READY);
    let get = |path: &str| http_get(port, path);
    assert_eq!(get("/healthz").0, 200);
    assert_eq!(get("/readyz"), (200, "leading\n".to_string()));
    let (code, body) = get("/metrics");
    assert_eq!(code, 200);
    // A real parser of the exposition format, as Prometheus reads it.
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("the exposition parses");
    let value = |name: &str, labels: &[(&str, &str)]| -> Option<f64> {
        scrape.samples.iter().find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))).map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
    };
    assert_eq!(value("swarmlab_lab_ready", &[("lab", "prom")]), Some(1.0), "{body}");
    assert_eq!(value("swarmlab_lab_phase", &[("lab", "prom"), ("phase", "Ready")]), Some(1.0));
    assert_eq!(value("swarmlab_lab_phase", &[("lab", "prom"), ("phase", "Progressing")]), Some(0.0));
    assert!(value("swarmlab_reconciles_total", &[("lab", "prom")]).is_some_and(|v| v >= 2.0), "{body}");
    assert_eq!(value("swarmlab_actions_total", &[("lab", "prom"), ("kind", "create")]), Some(3.0), "a network and two services");
    assert!(value("swarmlab_docker_api_calls_total", &[]).is_some_and(|v| v > 0.0));
    assert!(value("swarmlab_time_to_ready_seconds", &[("lab", "prom")]).is_some_and(|v| v > 0.0 && v < 90.0));
    assert_eq!(value("swarmlab_leader", &[]), Some(1.0));
    // Per service, as kube-state-metrics has them per deployment.
    assert_eq!(value("swarmlab_service_tasks_desired", &[("lab", "prom"), ("service", "web")]), Some(2.0), "{body}");
    assert_eq!(value("swarmlab_service_tasks_running", &[("lab", "prom"), ("service", "web")]), Some(2.0));
    assert_eq!(value("swarmlab_service_tasks_running", &[("lab", "prom"), ("service", "db")]), Some(1.0));
    assert!(scrape.samples.iter().any(|s| s.metric == "swarmlab_reconcile_duration_seconds_count" || s.metric == "swarmlab_reconcile_duration_seconds"), "histogram missing");
    // The in-process node agent's series: its backend, each shaped attachment, its packets.
    let backend = if std::path::Path::new("/sys/module/sch_netem").exists() { "netem" } else { "userspace" };
    assert_eq!(value("swarmlab_agent_info", &[("backend", backend)]), Some(1.0), "{body}");
    assert_eq!(scrape.samples.iter().filter(|s| s.metric == "swarmlab_task_shaping_converged" && s.labels.get("service") == Some("web")).count(), 2, "{body}");
    assert!(scrape.samples.iter().filter(|s| s.metric == "swarmlab_task_shaping_converged").all(|s| matches!(s.value, prometheus_parse::Value::Gauge(v) if v == 1.0)));
    if backend == "userspace" {
        probe(&lab, "prom", "web", "db", 20, 10);
        eventually("NFQUEUE packets counted", Duration::from_secs(10), || {
            let (_, body) = get("/metrics");
            let seen: f64 = body
                .lines()
                .filter(|l| l.starts_with("swarmlab_nfqueue_packets_total{") && l.contains("outcome=\"seen\"") && l.contains("service=\"web\""))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            if seen >= 20.0 { Ok(()) } else { Err(format!("{seen} packets seen")) }
        });
        // Queue overruns (the kernel's count for the attachment's queue): a series of their own.
        let (_, body) = get("/metrics");
        assert!(
            body.lines().any(|l| l.starts_with("swarmlab_nfqueue_packets_total{") && l.contains("outcome=\"overrun\"") && l.contains("service=\"web\"")),
            "no overrun series:\n{body}"
        );
    }
    // The lab goes: its series go with it.
    lab.remove("prom.yaml");
    lab.labctl(&["wait", "prom", "--for", "deleted", "--timeout", "60s"]);
    eventually("the lab's series gone", Duration::from_secs(10), || {
        let (_, body) = get("/metrics");
        if body.contains("lab=\"prom\"") { Err(body) } else { Ok(()) }
    });
}

#[test]
fn labctl_diff_exits_0_when_swarm_matches_1_when_it_would_change_something_2_on_error() {
    let mut lab = Lab::new();
    lab.cleanup.push("diffx".into());
    remove_lab_objects("diffx");
    lab.write("diffx.yaml", &lab_yaml("diffx", "    web: {replicas: 1, conditions: {delay: 5ms}}\n"));
    lab.start_labd();
    lab.wait_phase("diffx", "Ready", READY);
    lab.stop_labd();
    let diff = |dir: &std::path::Path| lab.labctl(&["diff", dir.to_str().unwrap()]);
    // Only this lab's file in a directory of its own, so other tests' labs do not count.
    let only = tempfile::tempdir().unwrap();
    std::fs::copy(lab.labs.join("diffx.yaml"), only.path().join("diffx.yaml")).unwrap();
    let out = diff(only.path());
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    // Labs another test left on this Swarm would show as removals; with none, nothing differs.
    if !text.lines().any(|l| l.starts_with("- ")) {
        assert_eq!(out.status.code(), Some(0), "{text}");
    }
    assert!(!text.contains("diffx:"), "nothing to do for diffx: {text}");
    docker_ok(&["service", "scale", "-d", "diffx_web=3"]);
    let out = diff(only.path());
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("~ diffx: update service diffx_web") && text.contains("3 replicas → 1 replicas (changed outside labd)"), "{text}");
    // Conditions edited: what the agents would be told, beside what they are told now (no
    // service update: a condition never restarts a task).
    docker_ok(&["service", "scale", "-d", "diffx_web=1"]);
    std::fs::write(only.path().join("diffx.yaml"), lab_yaml("diffx", "    web: {replicas: 1, conditions: {delay: 20ms, loss: 1%}}\n")).unwrap();
    let out = diff(only.path());
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{text}");
    let diffx: Vec<&str> = text.lines().filter(|l| l.contains("diffx:")).collect();
    assert_eq!(diffx, ["~ diffx: conditions of web on default: delay 20ms, loss 1% (now: delay 5ms)"], "{text}");
    let out = diff(std::path::Path::new("/nonexistent/labs"));
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_suspended_lab_keeps_its_drift_and_its_file_changes_until_resumed() {
    let mut lab = Lab::new();
    lab.cleanup.push("susp".into());
    remove_lab_objects("susp");
    lab.write("susp.yaml", &lab_yaml("susp", "    web: {replicas: 1}\n"));
    lab.start_labd();
    lab.wait_phase("susp", "Ready", READY);
    let out = lab.labctl(&["suspend", "susp"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    lab.wait_phase("susp", "Suspended", READY);
    docker_ok(&["service", "scale", "-d", "susp_web=2"]);
    lab.write("susp.yaml", &lab_yaml("susp", "    web: {replicas: 1}\n    api: {}\n"));
    // Two resyncs (5 s each here) pass: nothing is put back, nothing created.
    let reconciles = lab.metric("susp", "reconciles");
    eventually("two more passes", Duration::from_secs(30), || {
        let n = lab.metric("susp", "reconciles");
        if n >= reconciles + 2 { Ok(()) } else { Err(format!("{n} passes")) }
    });
    let services = stack_services("susp");
    assert_eq!(services.get("susp_web").map(|r| r.ends_with("/2")), Some(true), "drift repaired while suspended: {services:?}");
    assert!(!services.contains_key("susp_api"), "a file change applied while suspended");
    let status = lab.status_json("susp").unwrap();
    assert!(status["message"].as_str().unwrap().contains("changes wait for the resume"), "{status}");
    let out = lab.labctl(&["status"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Suspended"));
    // Waiting for it gets nowhere until the resume: said at once, not at the timeout.
    let started = std::time::Instant::now();
    let out = lab.labctl(&["wait", "susp", "--timeout", "60s"]);
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("susp cannot become Ready: suspended by `labctl suspend` (undo with `labctl resume`)") && said.contains("Resume it, then wait again"), "{said}");
    assert!(started.elapsed() < std::time::Duration::from_secs(15), "waited {:?}", started.elapsed());
    lab.labctl(&["resume", "susp"]);
    let status = lab.wait_phase("susp", "Ready", READY);
    // Ready only once the extra task is gone, not while the scale-down still stops it.
    assert_eq!((status["services"]["web"]["running"].as_u64(), status["services"]["web"]["desired"].as_u64()), (Some(1), Some(1)), "{status}");
    assert_eq!(status["services"]["api"]["running"], 1, "{status}");
}

/// A service with a health check counts as running once the check passes, as with `docker
/// service create --health-cmd`: the lab is not Ready while it fails, Ready soon after it
/// passes; a task Swarm kills as unhealthy shows in the status with Swarm's reason.
#[test]
fn a_health_check_holds_ready_until_it_passes_and_an_unhealthy_task_is_reported() {
    let mut lab = Lab::new();
    lab.cleanup.extend(["health".to_string(), "sick".to_string()]);
    remove_lab_objects("health");
    remove_lab_objects("sick");
    lab.write("health.yaml", &lab_yaml("health", "    db:\n      healthcheck: {test: test -f /up, interval: 300ms, retries: 100}\n"));
    lab.write("sick.yaml", &lab_yaml("sick", "    db:\n      healthcheck: {test: [\"false\"], interval: 300ms, retries: 1}\n"));
    lab.start_labd();

    // The task's container runs, its check has failed three times in a row: not Ready, and
    // the status (written after that) says what it waits for.
    let container = running_container_of("health_db");
    let inspect = docker_ok(&["service", "inspect", "health_db", "--format", "{{json .Spec.TaskTemplate.ContainerSpec.Healthcheck.Test}}"]);
    assert_eq!(inspect.trim(), r#"["CMD-SHELL","test -f /up"]"#);
    eventually("the check to have failed 3 times in a row", Duration::from_secs(30), || {
        let streak = docker_ok(&["inspect", &container, "--format", "{{.State.Health.FailingStreak}}"]);
        if streak.trim().parse::<u32>().unwrap_or(0) >= 3 { Ok(()) } else { Err(streak) }
    });
    let failing_since = chrono::Utc::now();
    let waiting = eventually("a status written after the failures", Duration::from_secs(30), || {
        let s = lab.status_json("health")?;
        let at = s["updatedAt"].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
        if at.is_some_and(|t| t > failing_since) { Ok(s) } else { Err(s.to_string()) }
    });
    assert_ne!(waiting["phase"], "Ready", "{waiting}");
    assert!(waiting["message"].as_str().unwrap_or_default().contains("db 0/1"), "{waiting}");
    println!("waiting: {}", waiting["message"]);

    // Healthy: Ready within a few check intervals and polls.
    docker_ok(&["exec", &container, "sh", "-c", ": > /up"]);
    let healthy_at = std::time::Instant::now();
    lab.wait_phase("health", "Ready", READY);
    println!("health check passing -> Ready: {:?}", healthy_at.elapsed());
    assert_eq!(running_container_of("health_db"), container, "the same task, not a new one");

    let sick = lab.wait_phase_saying("sick", "Degraded", "unhealthy container", READY);
    assert!(sick["message"].as_str().unwrap_or_default().contains("its health check kept failing"), "{sick}");
}

/// What a task starts with beyond its image: kernel settings of its own network namespace
/// (`sysctls`, as a user comparing TCP congestion control under the same conditions sets them),
/// files written in the lab (`configs`, as Compose's), its user, working directory, limits, extra
/// hosts and resolver settings. Both read back inside the task, the
/// host's settings left alone; an edit of either restarts the task with the new value, the
/// file's old config goes once no service names it, and the lab's removal takes the rest.
#[test]
fn sysctls_and_files_are_set_in_each_task_and_an_edit_applies() {
    let mut lab = Lab::new();
    lab.cleanup.push("knobs".into());
    remove_lab_objects("knobs");
    let knobs = |ttl: u32, peers: &str| {
        let services = format!("    web:\n      user: '1000'\n      workingDir: /etc/dht\n      ulimits: {{nofile: {{soft: 2048, hard: 4096}}}}\n      extraHosts: {{broker.example: 10.42.0.5}}\n      dns: {{search: [lab.internal], options: [ndots:2]}}\n      sysctls: {{net.ipv4.ip_default_ttl: {ttl}, net.ipv4.tcp_congestion_control: reno}}\n      configs:\n        - {{source: peers.conf, target: /etc/dht/peers.conf, uid: '1000', mode: 0440}}\n");
        format!("{}  configs:\n    peers.conf:\n      content: |\n        {peers}\n", lab_yaml("knobs", &services))
    };
    let host_ttl = std::fs::read_to_string("/proc/sys/net/ipv4/ip_default_ttl").unwrap();
    lab.write("knobs.yaml", &knobs(42, "seed-1:4000"));
    lab.start_labd();
    lab.wait_phase("knobs", "Ready", READY);
    // A task being replaced may be gone between the listing and the exec: that reads as "".
    let cat = |container: &str, path: &str| String::from_utf8_lossy(&docker(&["exec", container, "cat", path]).stdout).trim().to_string();
    let read = |container: &str, key: &str| cat(container, &format!("/proc/sys/net/ipv4/{key}"));
    let first = running_container_of("knobs_web");
    assert_eq!(read(&first, "ip_default_ttl"), "42");
    assert_eq!(read(&first, "tcp_congestion_control"), "reno");
    assert_eq!(std::fs::read_to_string("/proc/sys/net/ipv4/ip_default_ttl").unwrap(), host_ttl, "the host's own setting changed");
    assert_eq!(cat(&first, "/etc/dht/peers.conf"), "seed-1:4000");
    // `extraHosts` in its /etc/hosts, `dns` in its resolver's settings (Docker's own resolver
    // stays the server: it answers for the lab's services).
    let hosts = cat(&first, "/etc/hosts");
    assert!(hosts.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["10.42.0.5", "broker.example"]), "{hosts}");
    let resolver = cat(&first, "/etc/resolv.conf");
    assert!(resolver.lines().any(|l| l.starts_with("search") && l.contains("lab.internal")) && resolver.lines().any(|l| l.starts_with("options") && l.contains("ndots:2")), "{resolver}");
    // `docker exec` runs as the task's user, in its working directory.
    let whoami = docker_ok(&["exec", &first, "sh", "-c", "pwd; ulimit -Sn; ulimit -Hn; grep ^Uid: /proc/self/status"]);
    assert_eq!(whoami.split_whitespace().take(5).collect::<Vec<_>>(), ["/etc/dht", "2048", "4096", "Uid:", "1000"], "{whoami}");
    // `ls -ln`: mode, links, uid, gid, … (the image has no `stat`).
    let listing = docker_ok(&["exec", &first, "ls", "-ln", "/etc/dht/peers.conf"]);
    let fields: Vec<&str> = listing.split_whitespace().collect();
    assert_eq!((fields[0], fields[2]), ("-r--r-----", "1000"), "mode 0440 (read as octal, as Compose reads it) and uid: {listing}");
    let configs = || docker_ok(&["config", "ls", "--filter", "label=io.swarmlab.lab=knobs", "--filter", "label=io.swarmlab.file", "--format", "{{.Name}}"]);
    let first_configs = configs();
    assert_eq!(first_configs.lines().count(), 1, "{first_configs}");

    lab.write("knobs.yaml", &knobs(7, "seed-1:4000"));
    let second = eventually("a task with the new value", READY, || {
        let now = running_container_of("knobs_web");
        let ttl = read(&now, "ip_default_ttl");
        if now != first && ttl == "7" { Ok(now) } else { Err(format!("{now} ttl {ttl}")) }
    });
    lab.wait_phase("knobs", "Ready", READY);
    assert_eq!(configs(), first_configs, "the same content keeps its config");

    lab.write("knobs.yaml", &knobs(7, "seed-2:4000"));
    eventually("a task with the new file", READY, || {
        let now = running_container_of("knobs_web");
        let peers = cat(&now, "/etc/dht/peers.conf");
        if now != second && peers == "seed-2:4000" { Ok(()) } else { Err(format!("{now}: {peers:?}")) }
    });
    lab.wait_phase("knobs", "Ready", READY);
    let now_configs = configs();
    assert!(now_configs.lines().count() == 1 && now_configs != first_configs, "the old content's config is removed: {now_configs}");

    lab.remove("knobs.yaml");
    eventually("the lab and its files gone", READY, || {
        let left = format!("{}{}", docker_ok(&["service", "ls", "-q", "--filter", "label=io.swarmlab.lab=knobs"]), configs());
        if left.trim().is_empty() { Ok(()) } else { Err(left) }
    });
}

#[test]
fn a_job_runs_once_its_services_are_ready_to_completion_and_a_labd_restart_runs_it_not_again() {
    let mut lab = Lab::new();
    lab.cleanup.push("jobs".into());
    remove_lab_objects("jobs");
    let load = "    load:\n      mode: replicated-job\n      replicas: 2\n      command: [sh, -c, 'ping -c 1 -W 5 web > /dev/null && echo reached web from $(hostname)']\n";
    lab.write("jobs.yaml", &lab_yaml("jobs", &format!("    web: {{}}\n{load}")));
    lab.start_labd();
    // The workload ran: both its tasks exited 0, having reached the service by name.
    let out = lab.labctl(&["wait", "jobs", "--for", "jobs", "--timeout", "60s"]);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let status = lab.status_json("jobs").unwrap();
    assert_eq!((status["services"]["load"]["completed"].as_u64(), status["services"]["load"]["desired"].as_u64()), (Some(2), Some(2)), "{status}");
    assert!(status["message"].as_str().unwrap_or_default().ends_with("jobs: load 2/2 completed"), "{status}");
    let logs = lab.labctl(&["logs", "jobs", "load"]);
    let logs = String::from_utf8_lossy(&logs.stdout);
    assert_eq!(logs.matches("reached web from").count(), 2, "{logs}");
    // Labelled by slot (Docker leaves a job's slot 0 out of its task).
    let mut labels: Vec<&str> = logs.lines().filter(|l| l.contains("reached web")).filter_map(|l| l.split_whitespace().next()).collect();
    labels.sort();
    assert_eq!(labels, ["load.0", "load.1"], "{logs}");
    // Each task ran once: the job started once `web` ran (started beside it, a ping before
    // `web` answers fails, and Swarm starts the task again).
    let tasks = || docker_ok(&["service", "ps", "jobs_load", "--format", "{{.ID}} {{.DesiredState}} {{.CurrentState}} {{.Error}}"]);
    let ran = tasks();
    assert_eq!((ran.lines().count(), ran.lines().filter(|l| l.contains(" Complete Complete")).count()), (2, 2), "{ran}");

    // A new labd finds the job done: it neither updates it (which would run it again) nor
    // counts it as missing.
    let version = service_version("jobs_load");
    let reconciles = lab.metric("jobs", "reconciles");
    lab.stop_labd();
    lab.start_labd();
    eventually("the new labd to reconcile", READY, || {
        let n = lab.metric("jobs", "reconciles");
        if n > reconciles { Ok(()) } else { Err(format!("{n}")) }
    });
    assert_eq!(lab.phase("jobs").unwrap(), "Ready");
    assert_eq!(service_version("jobs_load"), version, "the job was updated");
    assert_eq!(tasks().lines().map(|l| l.split(' ').next()).collect::<Vec<_>>(), ran.lines().map(|l| l.split(' ').next()).collect::<Vec<_>>(), "the job ran again");

    // The service turned into a job (Swarm cannot change a mode: removed, created again) and
    // the job edited into one that fails: the lab says why, and `wait --for jobs` fails.
    let failing = "    load:\n      mode: replicated-job\n      restartPolicy: {delay: 0s, maxAttempts: 1}\n      command: [sh, -c, 'exit 3']\n";
    lab.write("jobs.yaml", &lab_yaml("jobs", &format!("    web: {{mode: replicated-job, command: ['true']}}\n{failing}")));
    lab.wait_phase_saying("jobs", "Degraded", "load: failed: task: non-zero exit (3)", READY);
    let out = lab.labctl(&["wait", "jobs", "--for", "jobs", "--timeout", "2s"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    eventually("web recreated as a job and completed", READY, || {
        let s = lab.status_json("jobs")?;
        if s["services"]["web"]["completed"].as_u64() == Some(1) { Ok(()) } else { Err(s["services"].to_string()) }
    });
    let mode = docker_ok(&["service", "inspect", "jobs_web", "--format", "{{json .Spec.Mode}}"]);
    assert!(mode.contains("ReplicatedJob"), "{mode}");
    let events = lab.redis.cli(&["xrange", "swarmlab:lab:jobs:events", "-", "+"]);
    assert!(events.contains("to create it again in its new mode"), "the events say why:\n{events}");
    assert_eq!(lab.metric("jobs", "drift_repairs"), 0, "a spec change is not drift");
}

/// `labctl exec` finds tasks by the lab's names: one slot (its output and exit status passed
/// through, input with `-i`), or every task of a service, each line labelled; a wrong name
/// says what there is. `labctl cp` takes files out of each task, a completed job's included.
#[test]
fn labctl_exec_and_cp_reach_into_each_task_of_a_service_or_one_slot_by_the_labs_names() {
    let mut lab = Lab::new();
    lab.cleanup.push("execx".into());
    remove_lab_objects("execx");
    // `shell` is a shell with a terminal (`tty`): without one it would exit at once.
    let load = "    load:\n      mode: replicated-job\n      replicas: 2\n      command: [sh, -c, \"mkdir -p /results/raw; hostname > /results/raw/host; echo 42 > /results/ops\"]\n";
    lab.write("execx.yaml", &lab_yaml("execx", &format!("    web: {{replicas: 2}}\n    mon: {{mode: global}}\n    shell: {{command: [sh], tty: true}}\n{load}")));
    lab.start_labd();
    lab.wait_phase("execx", "Ready", READY);
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();

    let out = lab.labctl(&["exec", "execx", "web.2", "--", "sh", "-c", "hostname; echo oops >&2; exit 3"]);
    assert_eq!(out.status.code(), Some(3), "the command's own status: {out:?}");
    let web2 = running_container_of_slot("execx_web", 2);
    assert_eq!(text(&out.stdout).trim(), web2, "run in slot 2's container (its hostname is its id)");
    assert_eq!(text(&out.stderr).trim(), "oops");

    let out = lab.labctl(&["exec", "execx", "web", "--", "hostname"]);
    assert!(out.status.success(), "{out:?}");
    let mut lines: Vec<String> = text(&out.stdout).lines().map(String::from).collect();
    lines.sort();
    assert_eq!(lines, [format!("web.1 | {}", running_container_of_slot("execx_web", 1)), format!("web.2 | {web2}")]);
    let out = lab.labctl(&["exec", "execx", "mon", "--", "true"]);
    assert!(out.status.success(), "a global service's task: {out:?}");
    let out = lab.labctl(&["exec", "execx", "shell.1", "--", "ls", "-l", "/proc/1/fd/0"]);
    assert!(text(&out.stdout).trim().ends_with("-> /dev/pts/0"), "the task's input is its terminal: {out:?}");

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_labctl"))
        .args(["--redis", &lab.redis.url(), "exec", "-i", "execx", "web.1", "--", "sh", "-c", "n=0; while read l; do n=$((n+1)); done; echo $n"])
        .env("DOCKER_API_VERSION", "1.41")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("labctl exec -i");
    use std::io::Write;
    child.stdin.take().expect("stdin").write_all(b"one\ntwo\nthree\n").expect("write");
    let out = child.wait_with_output().expect("labctl exec -i");
    assert_eq!((out.status.code(), text(&out.stdout).trim()), (Some(0), "3"), "input reaches the command, and its end ends it");

    // -it: a shell's prompt in the task, on a terminal sized as labctl's (`script` gives labctl
    // one, 33x101; busybox `ps` cuts its lines at the terminal's width), its status labctl's.
    let labctl = format!("stty rows 33 cols 101; {} --redis {} exec -it execx web.1 -- sh", env!("CARGO_BIN_EXE_labctl"), lab.redis.url());
    let mut child = std::process::Command::new("script")
        .args(["-qec", &labctl, "/dev/null"])
        .env("DOCKER_API_VERSION", "1.41")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("script");
    let long = "x".repeat(150);
    let typed = format!("ls -l /proc/self/fd/0; sh -c 'ps -o args; : {long}'; echo answer $((6*7)); exit 5\n");
    child.stdin.take().expect("stdin").write_all(typed.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("labctl exec -it");
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(5), "the shell's status: {shown}");
    assert!(shown.contains("-> /dev/pts/") && shown.contains("answer 42"), "{shown}");
    // ps shows the inner shell's arguments unquoted (what was typed, echoed, has its quote).
    let widest = shown.lines().find(|l| l.starts_with("sh -c ps -o args")).map(|l| l.trim_end_matches('\r').chars().count()).unwrap_or(0);
    assert!((96..=101).contains(&widest), "ps cut at the terminal's 101 columns, not at 80 or the line's 170: {widest}\n{shown}");

    let out = lab.labctl(&["exec", "execx", "nope", "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("the lab's services: load, mon, shell, web"), "{}", text(&out.stderr));
    let out = lab.labctl(&["exec", "execx", "web.7", "--", "true"]);
    assert!(text(&out.stderr).contains("its slots: 1, 2"), "{}", text(&out.stderr));

    // A job's results, once it completed: each task's directory beside the other's.
    let out = lab.labctl(&["wait", "execx", "--for", "jobs", "--timeout", "60s"]);
    assert!(out.status.success(), "{out:?}");
    let dest = lab.dir.path().join("results");
    let out = lab.labctl(&["cp", "execx", "load:/results", dest.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{out:?}");
    for slot in ["load.0", "load.1"] {
        let got = dest.join(slot).join("results");
        assert_eq!(std::fs::read_to_string(got.join("ops")).unwrap_or_default(), "42\n", "{slot}: {}", text(&out.stdout));
        assert_eq!(std::fs::read_to_string(got.join("raw/host")).map(|h| h.trim().len()).unwrap_or(0), 12, "{slot}: a directory inside, whole");
        assert!(text(&out.stdout).contains(&format!("{slot}: /results -> {} (2 files, 16 B)", got.display())), "{}", text(&out.stdout));
    }
    let out = lab.labctl(&["cp", "execx", "web.2:/etc/hostname", dest.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read_to_string(dest.join("web.2/hostname")).unwrap_or_default().trim(), web2, "one file of one slot, from a running task");
    let out = lab.labctl(&["cp", "execx", "web.1:/nowhere", dest.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("web.1: no /nowhere in its container"), "{}", text(&out.stderr));
}

/// `labctl restart` replaces every task (a fresh start between two runs), waits for it, and
/// labd keeps the restart: scaling the service afterwards leaves the new tasks alone (labd's
/// update used to reset Swarm's `ForceUpdate`, which restarted every task once more).
/// `dependsOn`: `app` is created only once `db` is healthy (its health check passes 3 s after
/// its start), which `docker stack deploy` does not do with Compose's `depends_on`.
#[test]
fn a_service_is_created_only_once_the_service_it_depends_on_is_healthy() {
    let mut lab = Lab::new();
    lab.cleanup.push("dep".into());
    remove_lab_objects("dep");
    let services = "    db:\n      command: [sh, -c, 'sleep 3; touch /ready; sleep 100000']\n      healthcheck: {test: 'test -f /ready', interval: 500ms, timeout: 1s, retries: 30}\n    app: {dependsOn: [db]}\n";
    lab.write("dep.yaml", &lab_yaml("dep", services));
    let planned = String::from_utf8_lossy(&lab.labctl(&["diff", lab.dir.path().to_str().unwrap()]).stdout).to_string();
    assert!(planned.lines().any(|l| l == "~ dep: create service dep_app (1 replicas), once db runs (dependsOn)"), "{planned}");
    lab.start_labd();
    let waiting = lab.wait_phase_saying("dep", "Progressing", "app 0/1 (after db)", READY);
    assert_eq!(waiting["services"]["app"]["waitsForServices"], serde_json::json!(["db"]), "{waiting}");
    assert!(docker_ok(&["service", "ls", "--format", "{{.Name}}"]).lines().all(|n| n != "dep_app"), "app created before db is healthy");
    lab.wait_phase("dep", "Ready", READY);
    // The order, from Swarm's own records: db's task running (healthy) before app existed.
    let db_running = docker_ok(&["service", "ps", "dep_db", "--filter", "desired-state=running", "--format", "{{.ID}}"]);
    let healthy_at = docker_ok(&["inspect", db_running.trim(), "--format", "{{json .Status.Timestamp}}"]);
    let app_created = docker_ok(&["service", "inspect", "dep_app", "--format", "{{json .CreatedAt}}"]);
    let time = |t: &str| chrono::DateTime::parse_from_rfc3339(t.trim().trim_matches('"')).map_err(|e| format!("{t}: {e}")).unwrap();
    assert!(time(&app_created) >= time(&healthy_at), "app created at {app_created}, db running (healthy) at {healthy_at}");
    println!("db healthy at {} → app created {} ms later", healthy_at.trim().trim_matches('"'), (time(&app_created) - time(&healthy_at)).num_milliseconds());
}

/// `resources.reservations`: Swarm places a task only where what it reserves is free. More
/// memory than the node has waits, saying so; an amount the node has runs, reserved.
#[test]
fn a_reservation_no_node_can_hold_waits_saying_so_and_one_it_can_runs_reserved() {
    let mut lab = Lab::new();
    lab.cleanup.push("rsv".into());
    remove_lab_objects("rsv");
    let text = |memory: &str| lab_yaml("rsv", &format!("    db: {{replicas: 2, resources: {{memory: 1000G, reservations: {{cpus: 0.1, memory: {memory}}}}}}}\n"));
    lab.write("rsv.yaml", &text("900G"));
    lab.start_labd();
    let waiting = lab.wait_phase_saying("rsv", "Progressing", "db 0/2 (no node may run it)", READY);
    let said = waiting["services"]["db"]["message"].as_str().unwrap_or_default().to_string();
    assert!(said.contains("insufficient resources") && said.contains("has the memory and CPUs it reserves"), "{said}");
    lab.write("rsv.yaml", &text("64M"));
    lab.wait_phase("rsv", "Ready", READY);
    let reserved = docker_ok(&["service", "inspect", "rsv_db", "--format", "{{.Spec.TaskTemplate.Resources.Reservations.MemoryBytes}} {{.Spec.TaskTemplate.Resources.Reservations.NanoCPUs}}"]);
    assert_eq!(reserved.trim(), format!("{} 100000000", 64 * 1024 * 1024));
    // A new reservation is a new spec for the tasks: Swarm replaces them.
    let events = String::from_utf8_lossy(&lab.labctl(&["events", "rsv"]).stdout).to_string();
    assert!(events.contains("update service rsv_db (its tasks' spec changed"), "{events}");
}

/// `logging` (here in `spec.defaults`, options only: the daemon's driver): a chatty task's log
/// is rotated at the size the lab sets, and `labctl logs` still reads it; a service's own
/// `driver: none` overrides it.
#[test]
fn logging_options_rotate_a_chatty_task_s_log_and_labctl_logs_still_reads_it() {
    let mut lab = Lab::new();
    lab.cleanup.push("logrot".into());
    remove_lab_objects("logrot");
    let text = lab_yaml("logrot", "    chatty: {command: [sh, -c, 'i=0; while true; do i=$((i+1)); echo line $i of a chatty node; sleep 0.01; done']}\n    silent: {command: [sh, -c, 'while true; do echo lost; sleep 1; done'], logging: {driver: none}}\n")
        .replace("    init: true\n", "    init: true\n    logging: {options: {max-size: 2k, max-file: 2}}\n");
    lab.write("logrot.yaml", &text);
    lab.start_labd();
    lab.wait_phase("logrot", "Ready", READY);
    let container = running_container_of_slot("logrot_chatty", 1);
    let config = docker_ok(&["inspect", &container, "--format", "{{.HostConfig.LogConfig.Type}} {{json .HostConfig.LogConfig.Config}}"]);
    assert_eq!(config.trim(), r#"json-file {"max-file":"2","max-size":"2k"}"#);
    let log = docker_ok(&["inspect", &container, "--format", "{{.LogPath}}"]);
    // A few hundred lines later the log has rotated: its file stays at about 2 kB.
    eventually("the log to rotate", Duration::from_secs(20), || {
        let rotated = std::path::Path::new(&format!("{}.1", log.trim())).exists();
        if rotated { Ok(()) } else { Err("no .1 file yet".into()) }
    });
    let size = std::fs::metadata(log.trim()).map(|m| m.len()).unwrap_or(u64::MAX);
    assert!(size <= 4 * 1024, "the current log file is {size} bytes");
    let out = lab.labctl(&["logs", "logrot", "--tail", "5"]);
    let (logs, said) = (String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string());
    assert!(out.status.success() && logs.lines().any(|l| l.starts_with("chatty.1 | line ") && l.ends_with("of a chatty node")), "{logs}{said}");
    // A service whose driver keeps nothing is said to, not shown as one that wrote nothing.
    assert!(!logs.contains("lost") && said.contains("labctl logs: silent: its log driver is `none`: Docker keeps none of its output"), "{logs}{said}");
}

/// `readOnly`, `capDrop` and `placement.preferences`, as a user checks them: a write to the
/// root filesystem refused, to a tmpfs allowed, `chown` refused without CAP_CHOWN.
#[test]
fn a_read_only_task_with_a_capability_dropped_writes_only_to_its_mounts() {
    let mut lab = Lab::new();
    lab.cleanup.push("locked".into());
    remove_lab_objects("locked");
    let text = lab_yaml("locked", "    node:\n      replicas: 2\n      readOnly: true\n      capDrop: [CHOWN]\n      placement: {preferences: [{spread: node.labels.zone}]}\n      volumes: [{type: tmpfs, target: /scratch}]\n");
    lab.write("locked.yaml", &text);
    lab.start_labd();
    lab.wait_phase("locked", "Ready", READY);
    let run = |command: &str| {
        let out = lab.labctl(&["exec", "locked", "node.1", "--", "sh", "-c", command]);
        (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    };
    let (code, said) = run("touch /written");
    assert!(code != Some(0) && said.contains("Read-only file system"), "{code:?} {said}");
    assert_eq!(run("touch /scratch/written && echo ok"), (Some(0), "ok\n".to_string()));
    let (code, said) = run("chown 1 /scratch/written");
    assert!(code != Some(0) && said.contains("Operation not permitted"), "{code:?} {said}");
    let spread = docker_ok(&["service", "inspect", "locked_node", "--format", "{{json .Spec.TaskTemplate.Placement.Preferences}}"]);
    assert_eq!(spread.trim(), r#"[{"Spread":{"SpreadDescriptor":"node.labels.zone"}}]"#);
}

#[test]
fn labctl_restart_replaces_every_task_and_a_later_scale_does_not_restart_them_again() {
    let mut lab = Lab::new();
    lab.cleanup.push("rst".into());
    remove_lab_objects("rst");
    let text = |replicas: u32| lab_yaml("rst", &format!("    node: {{replicas: {replicas}}}\n"));
    lab.write("rst.yaml", &text(2));
    lab.start_labd();
    lab.wait_phase("rst", "Ready", READY);
    let slots = || [1, 2].map(|slot| running_container_of_slot("rst_node", slot));
    let before = slots();
    let restart = std::process::Command::new(env!("CARGO_BIN_EXE_labctl"))
        .args(["--redis", &lab.redis.url(), "restart", "rst"])
        .env("DOCKER_API_VERSION", "1.41")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("labctl restart");
    // Said as a restart while it goes, not as an edit of the spec.
    let seen = lab.wait_phase_saying("rst", "Progressing", "(restarting: ", READY);
    let message = seen["message"].as_str().unwrap_or_default();
    assert!(message.contains("still to be replaced") && !message.contains("previous spec"), "{message}");
    let out = restart.wait_with_output().expect("labctl restart");
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success() && said.contains("restarting node (2 tasks)") && said.contains("node: every task replaced after"), "{said}");
    let restarted = slots();
    assert!(restarted.iter().zip(&before).all(|(now, was)| now != was), "{before:?} → {restarted:?}");
    lab.write("rst.yaml", &text(3));
    eventually("slot 3 running", READY, || if docker_ok(&["service", "ls", "--filter", "name=rst_node", "--format", "{{.Replicas}}"]).trim() == "3/3" { Ok(()) } else { Err("not yet".into()) });
    lab.wait_phase("rst", "Ready", READY);
    assert_eq!(slots(), restarted, "the scale restarted the tasks again");
    // On the lab's timeline.
    let events = String::from_utf8_lossy(&lab.labctl(&["events", "rst"]).stdout).to_string();
    assert!(events.lines().any(|l| l.contains(" Normal ") && l.contains("Restarted") && l.ends_with("labctl restart: every task of node replaced")), "{events}");
    assert_eq!(docker_ok(&["service", "inspect", "rst_node", "--format", "{{.Spec.TaskTemplate.ForceUpdate}}"]).trim(), "1");
    // Named wrong: said so, nothing restarted.
    let out = lab.labctl(&["restart", "rst", "nope"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("it has no service nope (it has node)"), "{out:?}");
}
