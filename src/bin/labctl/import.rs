//! `labctl import docker-compose.yml [--name LAB] [-o lab.yaml] [--image FROM=TO]…`: a Compose
//! file as a Lab, with a located comment for every field that does not carry over.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use swarmlab::import::{compose_to_lab, ImageMap, ImportError, ImportOptions};

/// Compose's project name: the file's `name`, else its directory's.
fn default_name(file: &Path, text: &str) -> String {
    let dir = std::fs::canonicalize(file).ok().and_then(|p| p.parent().and_then(|d| d.file_name()).map(|n| n.to_string_lossy().to_string()));
    swarmlab::import::project_name(text, dir.as_deref())
}

pub fn run(file: &Path, name: Option<&str>, output: Option<&Path>, images: &[String], profiles: &[String]) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let images: ImageMap = images
        .iter()
        .map(|m| m.split_once('=').map(|(a, b)| (a.to_string(), b.to_string())).with_context(|| format!("--image {m}: expected FROM=TO, e.g. redis=labbox:latest")))
        .collect::<anyhow::Result<_>>()?;
    let name = name.map(str::to_string).unwrap_or_else(|| default_name(file, &text));
    let options = ImportOptions { images, profiles: profiles.to_vec() };
    let imported = compose_to_lab(file, &text, &name, &options, &|path| std::fs::read_to_string(path)).inspect_err(|e| {
        // What to do about it is in the notes, located in the Compose file.
        if let ImportError::Invalid { notes, .. } = e {
            notes.iter().for_each(|n| eprintln!("{}:{n}", file.display()));
        }
    })?;
    match output {
        Some(path) => {
            std::fs::write(path, &imported.text).with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("wrote lab `{name}` to {} ({} notes on what did not carry over, at its top)", path.display(), imported.notes.len());
        }
        None => print!("{}", imported.text),
    }
    for n in &imported.notes {
        eprintln!("{}:{n}", file.display());
    }
    Ok(ExitCode::SUCCESS)
}
