//! `labctl`: validate lab files, print the schema, and read the status labd writes.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use swarmlab::source::{load_dir, LabEntry};

#[derive(Parser)]
#[command(name = "labctl", version, about = "Inspect and validate swarmlab labs", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check lab files or directories; print every error as path:line:column: field: message.
    Validate {
        /// Files or directories (read recursively); default ./labs.
        #[arg(default_value = "labs")]
        paths: Vec<PathBuf>,
    },
    /// Print the JSON Schema of the Lab resource.
    Schema,
    /// Print shell completions, e.g. `labctl completions bash > /etc/bash_completion.d/labctl`.
    Completions { shell: clap_complete::Shell },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { paths } => validate(&paths),
        Command::Schema => {
            print!("{}", swarmlab::spec::schema::lab_schema_text());
            ExitCode::SUCCESS
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "labctl", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
    }
}

fn validate(paths: &[PathBuf]) -> ExitCode {
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
