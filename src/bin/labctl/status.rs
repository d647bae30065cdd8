//! `labctl status [LAB] [-o json|yaml] [--watch]`.

use std::process::ExitCode;

use crate::common::*;
use crate::Output;

pub async fn run(url: &str, lab: Option<&str>, output: Output, watch: bool) -> anyhow::Result<ExitCode> {
    once_or_watched(url, watch, async |r| {
        let (text, notes) = shown(r, lab, output).await?;
        // A table carries its notes; JSON and YAML stay parseable.
        if !watch && !matches!(output, Output::Table) {
            notes.iter().for_each(|n| eprintln!("{n}"));
        }
        Ok(text)
    })
    .await
}

/// The statuses as `output` shows them, and the notes that go with them (stale statuses, labs
/// labd cannot read).
async fn shown(r: &mut swarmlab::store::StoreReader, lab: Option<&str>, output: Output) -> anyhow::Result<(String, Vec<String>)> {
    let names = match lab {
        Some(l) => vec![l.to_string()],
        None => r.labs().await?,
    };
    let mut statuses = Vec::new();
    for n in &names {
        match r.status(n).await? {
            Some(s) => statuses.push(s),
            None if lab.is_some() => return Err(no_such_lab(r, n, "status").await),
            None => {}
        }
    }
    let stale = staleness(r).await;
    // A Git source that cannot be fetched (the labs run at the last commit fetched), or a labs
    // directory that cannot be read.
    let notes: Vec<String> = stale.iter().cloned().chain(fetch_trouble(r).await).collect();
    let text = match output {
        Output::Table => {
            let table = if statuses.is_empty() { no_labs(r, stale.is_some()).await } else { status_table(&statuses, stale.is_some()) };
            notes.iter().map(String::as_str).chain([table.as_str()]).collect::<Vec<_>>().join("\n")
        }
        Output::Json if lab.is_some() => serde_json::to_string_pretty(&statuses[0])?,
        Output::Json => serde_json::to_string_pretty(&statuses)?,
        Output::Yaml if lab.is_some() => serde_yaml_ng::to_string(&statuses[0])?,
        Output::Yaml => serde_yaml_ng::to_string(&statuses)?,
    };
    Ok((text, notes))
}

/// What an empty table says: where a running labd looks for labs (a file put elsewhere is the
/// usual reason), or that no labd runs.
async fn no_labs(r: &mut swarmlab::store::StoreReader, stale: bool) -> String {
    let source = if stale { None } else { r.source().await.ok().flatten() };
    match source {
        Some(s) if s.error.is_none() && s.branch.is_empty() => {
            format!("no labs: labd reads {} and finds no lab there (`labctl validate {}` checks its files)", s.url, s.url)
        }
        Some(s) if s.error.is_none() => format!("no labs: labd follows `{}` of {} and finds no lab there", s.branch, s.url),
        _ => "no labs (is labd running?)".to_string(),
    }
}

/// What labctl says when labd's last fetch of its Git source failed, or it could not read its
/// labs directory (a source without a branch).
async fn fetch_trouble(r: &mut swarmlab::store::StoreReader) -> Option<String> {
    let source = r.source().await.ok()??;
    let error = source.error?;
    let at = source.fetched_at.map(|t| t.with_timezone(&chrono::Local).format("%H:%M:%S").to_string()).unwrap_or_default();
    if source.branch.is_empty() {
        return Some(format!("SOURCE: labd cannot read its labs directory {} (since {at}): {error}; every lab stays as it is (is labd's --labs right?)", source.url));
    }
    let commit = source.commit.map(|c| format!("commit {}", &c[..c.len().min(7)])).unwrap_or_else(|| "nothing (no fetch has worked yet)".into());
    Some(format!("SOURCE: fetching `{}` of {} failed at {at}: {error}; labs stay at {commit}", source.branch, source.url))
}

/// Why the statuses may be stale: the leading labd has not said it is alive for three resync
/// periods (at least 15 s), or never did.
async fn staleness(r: &mut swarmlab::store::StoreReader) -> Option<String> {
    match r.heartbeat().await {
        Ok(Some(swarmlab::store::Heartbeat { stopped_at: Some(at), .. })) => {
            let ago = (chrono::Utc::now() - at).to_std().unwrap_or_default();
            Some(format!(
                "STOPPED: labd stopped at {} ({}s ago); these statuses are what it saw then. Labs keep running, their traffic conditions too, \
                 but for the userspace backend's delay, jitter and loss (its workers stopped with labd); start labd to reconcile again",
                at.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S"),
                ago.as_secs()
            ))
        }
        Ok(Some(swarmlab::store::Heartbeat { at, resync, .. })) => {
            let age = (chrono::Utc::now() - at).to_std().unwrap_or_default();
            let limit = (resync * 3).max(std::time::Duration::from_secs(15));
            (age > limit).then(|| {
                format!(
                    "STALE: labd was last seen {} ({}s ago); these statuses are what it saw then (is labd running and leading? `labctl` reads Redis only)",
                    at.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S"),
                    age.as_secs()
                )
            })
        }
        Ok(None) => Some("STALE: no labd has written here yet (is labd running against this Redis?)".to_string()),
        Err(_) => None,
    }
}
