//! `labctl graph LAB|FILE [-o mermaid|dot|html]`: the lab's services, networks and the
//! conditions on each attachment. A lab name is looked up in labd's status (its file, and how
//! many tasks run); a file is drawn as written.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use swarmlab::graph::Topology;

use crate::common::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Mermaid,
    Dot,
    Html,
}

fn lab_in(file: &Path, name: Option<&str>) -> anyhow::Result<swarmlab::spec::Lab> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let docs = swarmlab::spec::parse_file(file, &text);
    for doc in docs {
        match doc.result {
            Ok(v) if name.is_none_or(|n| v.name() == n) => return Ok(std::sync::Arc::unwrap_or_clone(v.lab)),
            Err(d) if name.is_none_or(|n| doc.name.as_deref() == Some(n)) => {
                anyhow::bail!("{} is not valid: {} (`labctl validate {}` lists every error)", file.display(), d[0], file.display())
            }
            _ => {}
        }
    }
    anyhow::bail!("no lab {} in {}", name.unwrap_or(""), file.display())
}

pub async fn run(url: &str, target: &str, format: Format) -> anyhow::Result<ExitCode> {
    let (lab, status) = if Path::new(target).is_file() {
        (lab_in(Path::new(target), None)?, None)
    } else {
        let mut r = reader(url).await?;
        let Some(status) = r.status(target).await? else {
            let e = no_such_lab(&mut r, target, "graph").await;
            anyhow::bail!("`{target}` is not a file, and {e}");
        };
        anyhow::ensure!(!status.source.is_empty(), "labd does not know which file defines `{target}`; give the file instead");
        (lab_in(Path::new(&status.source), Some(target))?, Some(status))
    };
    let topology = Topology::of(&lab, status.as_ref());
    print!(
        "{}",
        match format {
            Format::Mermaid => topology.mermaid(),
            Format::Dot => topology.dot(),
            Format::Html => topology.html(),
        }
    );
    Ok(ExitCode::SUCCESS)
}
