//! End-to-end: `docker stack deploy -c charts/swarmlab.yml` on the three-node harness brings up
//! labd (leader and standby), an agent per node and Redis; a lab dropped into the labs volume
//! converges and is shaped on the workers; killing the leader lets the standby take over
//! without recreating any lab object.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::eventually;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn sh(cmd: &str) -> String {
    let out = Command::new("bash").arg("-c").arg(cmd).current_dir(root()).env("DOCKER_API_VERSION", "1.41").output().unwrap();
    assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

const D1: &str = "/usr/bin/docker -H unix:///run/slmn/n1/docker.sock";

struct Harness;
impl Drop for Harness {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(root().join("scripts/multinode.sh")).arg("down").output();
    }
}

fn labctl_status(lab: &str) -> Result<serde_json::Value, String> {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("{D1} exec $({D1} ps -q -f name=swarmlab_labd | head -1) labctl status {lab} -o json"))
        .env("DOCKER_API_VERSION", "1.41")
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).to_string());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

#[test]
fn the_stack_deploys_swarmlab_which_converges_a_lab_and_survives_losing_its_leader() {
    // The debug build `cargo test` has just made (stripped): a release build would add minutes.
    let bins = PathBuf::from(env!("CARGO_BIN_EXE_labd"));
    let bins = bins.parent().expect("labd's directory");
    assert_eq!(bins, PathBuf::from(env!("CARGO_BIN_EXE_labctl")).parent().expect("labctl's directory"));
    sh(&format!("SWARMLAB_BINS={} bash charts/build-images.sh", bins.display()));
    sh("bash scripts/multinode.sh up 3");
    let _harness = Harness;
    sh("for i in 1 2 3; do /usr/bin/docker save swarmlab:latest swarmlab-redis:latest | /usr/bin/docker -H unix:///run/slmn/n$i/docker.sock load >/dev/null; done");
    // Two managers; the labs directory lives on n1, labelled so (charts/swarmlab.yml).
    sh(&format!("{D1} node promote slmn-n2"));
    sh(&format!("{D1} node update --label-add swarmlab.labs=true slmn-n1"));
    sh(&format!("{D1} stack deploy --resolve-image never -c charts/swarmlab.yml swarmlab"));
    eventually("the stack running", Duration::from_secs(60), || {
        let s = sh(&format!("{D1} stack services swarmlab --format '{{{{.Name}}}} {{{{.Replicas}}}}'"));
        let ok = ["swarmlab_agent 3/3", "swarmlab_labd 2/2", "swarmlab_redis 1/1"].iter().all(|want| s.contains(want));
        if ok { Ok(()) } else { Err(s) }
    });
    let labd_nodes = sh(&format!("{D1} service ps swarmlab_labd --filter desired-state=running --format '{{{{.Node}}}}'"));
    assert_eq!(labd_nodes.lines().collect::<Vec<_>>(), ["slmn-n1", "slmn-n1"], "both labd replicas beside the labs directory");
    let volume = sh(&format!("{D1} volume inspect swarmlab_labs --format '{{{{.Mountpoint}}}}'"));
    let lab = "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {name: charted}\nspec:\n  defaults: {image: labbox:latest, init: true, stopGracePeriod: 1s, networks: [lan]}\n  networks:\n    lan: {conditions: {delay: 10ms}}\n  services:\n    w:\n      replicas: 2\n      command: [sleep, \"100000\"]\n      placement: {constraints: [\"node.role==worker\"]}\n";
    std::fs::write(PathBuf::from(&volume).join("charted.yaml"), lab).unwrap();
    eventually("the lab Ready and shaped by the agents", Duration::from_secs(90), || {
        let s = labctl_status("charted")?;
        let shaped = s["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "ShapingApplied" && c["status"] == "True");
        if s["phase"] == "Ready" && shaped { Ok(()) } else { Err(s.to_string()) }
    });
    let version = sh(&format!("{D1} service inspect charted_w --format '{{{{.Version.Index}}}}'"));
    // What the tasks use, sampled by each worker's agent in its container from the host's
    // cgroup tree the chart mounts (not from Docker's stats, its fallback).
    eventually("labctl top to show both tasks of w", Duration::from_secs(40), || {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!("{D1} exec $({D1} ps -q -f name=swarmlab_labd | head -1) labctl top charted -o json"))
            .env("DOCKER_API_VERSION", "1.41")
            .output()
            .unwrap();
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&out.stderr)))?;
        let sampled = rows.iter().filter(|r| r["service"] == "w" && r["memoryBytes"].as_u64().unwrap_or(0) > 0 && r["networks"][0]["network"] == "lan").count();
        if sampled == 2 { Ok(()) } else { Err(format!("{rows:?}")) }
    });
    let agent_logs = Command::new("bash").arg("-c").arg(format!("{D1} service logs swarmlab_agent 2>&1")).env("DOCKER_API_VERSION", "1.41").output().unwrap();
    let agent_logs = String::from_utf8_lossy(&agent_logs.stdout).to_string();
    assert!(agent_logs.contains("agent") && !agent_logs.contains("cgroup files are not readable"), "{agent_logs}");
    // The image's nf_tables iptables announces its changes: task rules are read back when they
    // change, not every 3 s.
    let plain: String = agent_logs.split('\x1b').map(|piece| piece.strip_prefix('[').map_or(piece, |code| code.split_once('m').map_or(code, |(_, rest)| rest))).collect();
    assert!(plain.contains("changes_heard=true"), "{agent_logs}");

    // Kill the leader's container: the standby takes the lease.
    let leader = eventually("a leader", Duration::from_secs(10), || {
        for c in sh(&format!("{D1} ps -q -f name=swarmlab_labd")).lines() {
            let logs = Command::new("bash").arg("-c").arg(format!("{D1} logs {c} 2>&1")).env("DOCKER_API_VERSION", "1.41").output().unwrap();
            if String::from_utf8_lossy(&logs.stdout).contains("leader lease acquired") {
                return Ok(c.to_string());
            }
        }
        Err("no leader yet".to_string())
    });
    sh(&format!("{D1} kill {leader}"));
    // Any status written from now on comes from the new leader (a pass stamps it as it starts).
    let killed_at = chrono::Utc::now();
    eventually("the standby to take over", Duration::from_secs(40), || {
        for c in sh(&format!("{D1} ps -q -f name=swarmlab_labd")).lines().filter(|c| *c != leader) {
            let logs = Command::new("bash").arg("-c").arg(format!("{D1} logs {c} 2>&1")).env("DOCKER_API_VERSION", "1.41").output().unwrap();
            if String::from_utf8_lossy(&logs.stdout).contains("leader lease acquired") {
                return Ok(());
            }
        }
        Err("no new leader".to_string())
    });
    // The new leader looks at the lab (its first pass writes the status) and recreates nothing.
    let s = eventually("the new leader's pass over the lab", Duration::from_secs(40), || {
        let s = labctl_status("charted")?;
        let at = s["updatedAt"].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
        if at.is_some_and(|t| t > killed_at) { Ok(s) } else { Err(s.to_string()) }
    });
    assert_eq!(s["phase"], "Ready", "{s}");
    assert_eq!(sh(&format!("{D1} service inspect charted_w --format '{{{{.Version.Index}}}}'")), version, "the lab's service was updated or recreated");
    sh(&format!("{D1} stack rm swarmlab"));
}
