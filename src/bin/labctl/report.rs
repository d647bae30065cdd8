//! `labctl report LAB [-o report.html]`: the lab's definition, its timeline, the plots of
//! every `labctl probe` run against it and of what its services used, in one self-contained
//! HTML file; or the same data as JSON (`-o report.json`, `--format json`) for one's own
//! analysis.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::common::*;

#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
pub enum Format {
    /// One self-contained page: the definition, the timeline, plots.
    Html,
    /// `{lab, definition, status, events, probes, usage}`: every sample, as stored.
    Json,
}

impl Format {
    /// As asked, else as the output file is named (`report.json`), else HTML.
    pub fn of(asked: Option<Format>, output: Option<&Path>) -> Format {
        asked.unwrap_or(match output.and_then(Path::extension).and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("json") => Format::Json,
            _ => Format::Html,
        })
    }
}

pub async fn run(url: &str, lab: &str, output: Option<&Path>, format: Format) -> anyhow::Result<ExitCode> {
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
    if status.is_none() && events.is_empty() && probes.is_empty() && usage.is_empty() {
        return Err(crate::common::no_such_lab(&mut r, lab, "report").await);
    }
    let text = match format {
        Format::Html => swarmlab::report::render(lab, &definition, status.as_ref(), &events, &probes, &usage),
        Format::Json => serde_json::to_string_pretty(&serde_json::json!({"lab": lab, "definition": definition, "status": status, "events": events, "probes": probes, "usage": usage}))?,
    };
    match output {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("wrote {} ({} events, {} probes, {} usage samples)", path.display(), events.len(), probes.len(), usage.len());
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_is_as_asked_else_as_the_file_is_named() {
        assert!(Format::of(None, Some(Path::new("out/run1.JSON"))) == Format::Json);
        assert!(Format::of(None, Some(Path::new("report.html"))) == Format::Html);
        assert!(Format::of(None, None) == Format::Html);
        assert!(Format::of(Some(Format::Json), None) == Format::Json);
        assert!(Format::of(Some(Format::Html), Some(Path::new("r.json"))) == Format::Html);
    }
}
