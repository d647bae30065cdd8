//! `labctl fmt [PATH…] [--check]`: lab files in one layout, comments kept (as `gofmt -l`/`-w`).
//! Exit 0: nothing to change; 1: with --check, files would change; 2: a file could not be read,
//! parsed or written, or its layout cannot change without changing its meaning.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use swarmlab::source::lab_files;
use swarmlab::spec::format::format;

/// Written beside the file and renamed over it: labd never reads half a file.
fn replace(path: &Path, text: &str) -> std::io::Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = path.with_file_name(format!(".{name}.labctl-fmt"));
    std::fs::write(&temp, text)?;
    if let Ok(meta) = std::fs::metadata(path) {
        let _ = std::fs::set_permissions(&temp, meta.permissions());
    }
    std::fs::rename(&temp, path)
}

pub fn run(paths: &[PathBuf], check: bool) -> ExitCode {
    let (mut changed, mut failed) = (0, false);
    for root in paths {
        if !root.exists() {
            eprintln!("labctl fmt: {}: no such file or directory", root.display());
            failed = true;
            continue;
        }
        for path in lab_files(root).0 {
            let outcome = std::fs::read_to_string(&path).map_err(|e| e.to_string()).and_then(|t| format(&t).map_err(|e| e.to_string()));
            match outcome {
                Ok(None) => {}
                Ok(Some(_)) if check => {
                    println!("{}", path.display());
                    changed += 1;
                }
                Ok(Some(text)) => match replace(&path, &text) {
                    Ok(()) => {
                        println!("formatted {}", path.display());
                        changed += 1;
                    }
                    Err(e) => {
                        eprintln!("labctl fmt: {}: cannot write: {e}", path.display());
                        failed = true;
                    }
                },
                Err(e) => {
                    eprintln!("labctl fmt: {}: {e}", path.display());
                    failed = true;
                }
            }
        }
    }
    if failed {
        ExitCode::from(2)
    } else if check && changed > 0 {
        eprintln!("labctl fmt: {changed} file(s) not formatted; `labctl fmt` rewrites them");
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
