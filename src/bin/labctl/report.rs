//! `labctl report LAB [-o report.html]`: the lab's definition, its timeline, the plots of
//! every `labctl probe` run against it and of what its services used, in one self-contained
//! HTML file.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::common::*;

pub async fn run(url: &str, lab: &str, output: Option<&Path>) -> anyhow::Result<ExitCode> {
    let mut r = reader(url).await?;
    let status = r.status(lab).await?;
    let definition = status
        .as_ref()
        .filter(|s| !s.source.is_empty())
        .and_then(|s| std::fs::read_to_string(&s.source).ok())
        .unwrap_or_else(|| "(the lab's file is not readable from here)".into());
    let events = r.events(lab, 200).await.unwrap_or_default();
    let probes = r.probes(lab).await.unwrap_or_default();
    let mut usage = r.usage_history(lab).await.unwrap_or_default();
    // Samples of an earlier lab of the same name (kept, as probes are) are not this one's.
    if let Some(created) = status.as_ref().and_then(|s| s.created_at) {
        usage.retain(|record| record.at >= created);
    }
    anyhow::ensure!(status.is_some() || !events.is_empty() || !probes.is_empty() || !usage.is_empty(), "nothing is known of lab `{lab}` (is labd running against this Redis?)");
    let html = swarmlab::report::render(lab, &definition, status.as_ref(), &events, &probes, &usage);
    match output {
        Some(path) => {
            std::fs::write(path, html).with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("wrote {} ({} events, {} probes, {} usage samples)", path.display(), events.len(), probes.len(), usage.len());
        }
        None => print!("{html}"),
    }
    Ok(ExitCode::SUCCESS)
}
