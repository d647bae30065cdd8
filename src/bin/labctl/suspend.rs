//! `labctl suspend LAB` / `labctl resume LAB` (Flux's suspend): labd stops changing the lab
//! (drift stays, file changes wait) until it is resumed. Kept in Redis, so it holds across
//! labd restarts; `suspend: true` in the spec does the same from the file.

use std::process::ExitCode;

use crate::common::*;

pub async fn run(url: &str, lab: &str, suspend: bool) -> anyhow::Result<ExitCode> {
    let mut r = reader(url).await?;
    if r.status(lab).await?.is_none() {
        eprintln!("note: labd has no status for `{lab}` (yet); the flag is set anyway");
    }
    r.set_suspended(lab, suspend).await?;
    if suspend {
        println!("{lab} suspended: labd stops changing it within a few seconds (`labctl resume {lab}` to undo)");
    } else {
        println!("{lab} resumed: labd reconciles it again within a few seconds");
    }
    Ok(ExitCode::SUCCESS)
}
