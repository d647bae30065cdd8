//! labctl against a real Redis holding what labd writes: a lab that labd reports no status of
//! (the error says which labs there are, and which lab a file of that name defines: labs are
//! named by `metadata.name`, not by file), and a labs directory labd cannot read.

mod common;

use std::process::Command;

use common::Redis;

fn labctl(redis: &Redis, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_labctl")).args(args).env("REDIS_URL", redis.url()).output().expect("labctl")
}

fn labctl_error(redis: &Redis, args: &[&str]) -> String {
    let out = labctl(redis, args);
    assert!(!out.status.success(), "{args:?} succeeded: {out:?}");
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

#[test]
fn a_lab_named_by_its_file_or_not_known_is_answered_with_the_labs_there_are() {
    let redis = Redis::start();
    assert_eq!(
        labctl_error(&redis, &["describe", "coins"]),
        "labctl: no lab `coins`: labd reports no lab at all; is labd running, and is the lab's file in its labs directory?"
    );
    let status = |name: &str, file: &str| {
        serde_json::json!({"name": name, "phase": "Ready", "generation": 1, "observedGeneration": 1, "revision": "600a53af", "source": file, "message": "1/1 services running", "conditions": [], "services": {}}).to_string()
    };
    redis.cli(&["sadd", "swarmlab:labs", "coins", "kv"]);
    redis.cli(&["set", "swarmlab:lab:coins:status", &status("coins", "/srv/labs/dockercoins.yaml")]);
    redis.cli(&["set", "swarmlab:lab:kv:status", &status("kv", "/srv/labs/kv.yaml")]);
    for verb in ["describe", "status", "top", "events"] {
        assert_eq!(
            labctl_error(&redis, &[verb, "dockercoins"]),
            format!("labctl: no lab `dockercoins`, but /srv/labs/dockercoins.yaml defines the lab `coins` (a lab is named by its metadata.name): `labctl {verb} coins`")
        );
    }
    let described = labctl(&redis, &["describe", "coins"]);
    assert!(String::from_utf8_lossy(&described.stdout).lines().any(|l| l == "File:         /srv/labs/dockercoins.yaml"), "{described:?}");
    assert_eq!(
        labctl_error(&redis, &["describe", "nope"]),
        "labctl: no lab `nope` (labd reports coins, kv); is its file in labd's labs directory? `labctl validate FILE` says what is wrong with a file"
    );
}

#[test]
fn a_labs_directory_labd_cannot_read_is_said_above_the_table() {
    let redis = Redis::start();
    let source = serde_json::json!({"url": "/srv/labs", "branch": "", "fetchedAt": "2026-12-05T20:00:00Z", "error": "cannot read labs directory /srv/labs: No such file or directory (os error 2)"});
    redis.cli(&["hset", "swarmlab:labd", "source", &source.to_string()]);
    let out = labctl(&redis, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let said = text.lines().find(|l| l.starts_with("SOURCE: ")).unwrap_or_default();
    assert!(
        said.starts_with("SOURCE: labd cannot read its labs directory /srv/labs (since ")
            && said.ends_with("): cannot read labs directory /srv/labs: No such file or directory (os error 2); every lab stays as it is (is labd's --labs right?)"),
        "{text}"
    );
    // Read again, by a labd that is running: nothing to say but where it looks.
    redis.cli(&["hset", "swarmlab:labd", "source", &serde_json::json!({"url": "/srv/labs", "branch": ""}).to_string()]);
    redis.cli(&["hset", "swarmlab:labd", "heartbeat", &chrono::Utc::now().to_rfc3339(), "resync_secs", "15"]);
    let out = labctl(&redis, &["status"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no labs: labd reads /srv/labs and finds no lab there (`labctl validate /srv/labs` checks its files)", "{out:?}");
}
