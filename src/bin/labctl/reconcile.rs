//! `labctl reconcile [LAB]` (Flux's `flux reconcile`): labd reads its source now (a Git
//! branch is fetched at once instead of at its next `--interval`; a directory is read again)
//! and looks at LAB, or every lab, at once; with LAB, it waits until the lab is Ready after
//! that look.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::common::*;

pub async fn run(url: &str, lab: Option<&str>, timeout: Duration) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut r = reader(url).await?;
    let (id, heard) = r.request_reconcile(lab).await?;
    if heard == 0 {
        eprintln!("labctl reconcile: no labd listens on {url}: `labctl status` says whether one leads (STALE, STOPPED), and start labd if none does");
        return Ok(ExitCode::from(1));
    }
    let answer = loop {
        if let Some(answer) = r.reconcile_answer(&id).await? {
            break answer;
        }
        if started.elapsed() >= timeout {
            eprintln!("labctl reconcile: labd heard the request but did not answer within {}s (a fetch may be slow: each is given 120 s); its log says more", timeout.as_secs());
            return Ok(ExitCode::from(1));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // A commit as `labctl status` shows it.
    let short = |c: &str| c.chars().take(7).collect::<String>();
    if let Some(source) = &answer.source {
        let commit = source.commit.as_deref().map_or("none yet".to_string(), short);
        if let Some(error) = &source.error {
            eprintln!("labctl reconcile: fetching `{}` of {} failed: {error}; labs stay at commit {commit}", source.branch, source.url);
            return Ok(ExitCode::from(1));
        }
        let what = if answer.moved { "a new commit, applied" } else { "no new commit" };
        println!("fetched `{}` of {}: commit {commit} ({what}) after {:.1}s", source.branch, source.url, started.elapsed().as_secs_f64());
    } else {
        println!("labd read its labs directory again after {:.1}s", started.elapsed().as_secs_f64());
    }
    let Some(lab) = lab else {
        println!("looked at again: {}", if answer.labs.is_empty() { "no lab".to_string() } else { answer.labs.join(", ") });
        return Ok(ExitCode::SUCCESS);
    };
    if !answer.labs.iter().any(|l| l == lab) {
        let at = answer.source.as_ref().and_then(|s| s.commit.as_deref()).map(|c| format!(" at commit {}", short(c))).unwrap_or_default();
        eprintln!("labctl reconcile: no lab `{lab}`{at}: `labctl status` lists the labs labd has");
        return Ok(ExitCode::from(1));
    }
    Ok(crate::wait::run_after(url, lab, crate::wait::WaitFor::Ready, timeout.saturating_sub(started.elapsed()), answer.answered_at).await)
}
