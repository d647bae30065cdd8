//! `labctl validate PATH…`: every error of every lab file, located.

use std::path::PathBuf;
use std::process::ExitCode;

use swarmlab::source::{load_dir, LabEntry};

pub fn run(paths: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    for path in paths {
        let catalog = match load_dir(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
                continue;
            }
        };
        for d in catalog.diagnostics() {
            println!("{d}");
            failed = true;
        }
        for (name, entry) in &catalog.labs {
            if let LabEntry::Valid(lab) = entry {
                let services = lab.lab.spec.services.len();
                let replicas: u32 = lab.lab.resolved_services().map(|(_, s)| s.replicas.unwrap_or(1)).sum();
                let networks = lab.lab.network_names().len();
                println!("valid   {name:<20} revision {}  {services} services, {replicas} replicas, {networks} networks", lab.revision);
            }
        }
        if catalog.labs.is_empty() && catalog.file_errors.is_empty() {
            println!("no labs in {}", path.display());
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

