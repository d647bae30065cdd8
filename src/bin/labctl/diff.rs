//! `labctl diff [DIR]`: what labd would do, without doing it. Exit status as `flux diff`:
//! 0 when Swarm matches DIR, 1 when something would change (or clashes), 2 on error.

use std::process::ExitCode;

use swarmlab::source::{load_dir, LabEntry};

pub async fn run(dir: &std::path::Path, docker_host: Option<&str>) -> ExitCode {
    match differences(dir, docker_host).await {
        Ok(0) => {
            println!("no changes: Swarm matches {}", dir.display());
            ExitCode::SUCCESS
        }
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("labctl diff: {}", swarmlab::error_chain::Chain(e.as_ref()));
            ExitCode::from(2)
        }
    }
}

/// Prints every difference; returns how many there are.
async fn differences(dir: &std::path::Path, docker_host: Option<&str>) -> anyhow::Result<usize> {
    use swarmlab::plan::{desired_lab, diff, teardown};
    use swarmlab::swarm::{DockerSwarm, Swarm};
    let catalog = load_dir(dir)?;
    let swarm = DockerSwarm::connect(docker_host).await?;
    // One look at the whole Swarm serves every lab.
    let observed = swarm.observe_all().await?;
    let mut changes = 0;
    for (name, entry) in &catalog.labs {
        match entry {
            LabEntry::Valid(v) => {
                let plan = diff(&desired_lab(&v.lab), &observed.of_lab(name));
                for c in &plan.conflicts {
                    println!("! {name}: {c}");
                    changes += 1;
                }
                for a in &plan.actions {
                    println!("~ {name}: {}", a.describe());
                    changes += 1;
                }
            }
            LabEntry::Invalid(d) => println!("! {name}: invalid, labd keeps its last good version: {}", d[0]),
        }
    }
    for lab in observed.owned_labs() {
        if !catalog.labs.contains_key(&lab) {
            for a in teardown(&lab, &observed.of_lab(&lab)).actions {
                println!("- {lab}: {}", a.describe());
                changes += 1;
            }
        }
    }
    Ok(changes)
}
