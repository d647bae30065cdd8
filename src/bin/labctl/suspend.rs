//! `labctl suspend LAB` / `labctl resume LAB` (Flux's suspend): labd stops changing the lab
//! (drift stays, file changes wait) until it is resumed. Kept in Redis (labd also keeps it in
//! the lab's memory on Swarm, so a Redis that restarts empty does not resume the lab);
//! `suspend: true` in the spec does the same from the file. And `labctl start LAB`: time 0 of
//! a `start: manual` schedule.

use std::process::ExitCode;

use crate::common::*;

pub async fn run(url: &str, lab: &str, suspend: bool) -> anyhow::Result<ExitCode> {
    let mut r = reader(url).await?;
    if r.status(lab).await?.is_none() {
        eprintln!("note: labd has no status for `{lab}` (yet); the flag is set anyway");
    }
    r.set_suspended(lab, suspend).await?;
    if suspend {
        println!("{lab} suspended: labd stops changing it once a pass in progress ends (`labctl resume {lab}` to undo)");
    } else {
        println!("{lab} resumed: labd reconciles it again at once");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn start(url: &str, lab: &str) -> anyhow::Result<ExitCode> {
    let mut r = reader(url).await?;
    let manual = r.status(lab).await?.and_then(|s| s.schedule).is_some_and(|c| c.in_force.contains("labctl start") || c.started_at.is_some());
    let at = r.start_schedule(lab).await?;
    println!("{lab}: schedule started at {} (its time 0; labd reads it at once: `labctl wait {lab} --for step=1` waits for the first step)", at.format("%H:%M:%S%.3f"));
    if !manual {
        eprintln!("note: this counts only for a schedule with `start: manual`");
    }
    Ok(ExitCode::SUCCESS)
}
