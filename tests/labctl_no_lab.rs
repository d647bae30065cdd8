//! A lab that labd reports no status of, named to labctl: the error says which labs there are,
//! and which lab a file of that name defines (labs are named by `metadata.name`, not by file).

mod common;

use std::process::Command;

use common::Redis;

fn labctl_error(redis: &Redis, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_labctl")).args(args).env("REDIS_URL", redis.url()).output().expect("labctl");
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
    assert_eq!(
        labctl_error(&redis, &["describe", "nope"]),
        "labctl: no lab `nope` (labd reports coins, kv); is its file in labd's labs directory? `labctl validate FILE` says what is wrong with a file"
    );
}
