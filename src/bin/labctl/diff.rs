//! `labctl diff [DIR]`: what labd would do, without doing it.

use std::process::ExitCode;

use swarmlab::source::{load_dir, LabEntry};

pub async fn run(dir: &std::path::Path, docker_host: Option<&str>) -> anyhow::Result<ExitCode> {
    use swarmlab::plan::{desired_lab, diff, teardown};
    use swarmlab::swarm::{DockerSwarm, Swarm};
    let catalog = load_dir(dir)?;
    let swarm = DockerSwarm::connect(docker_host).await?;
    let mut changes = 0;
    for (name, entry) in &catalog.labs {
        match entry {
            LabEntry::Valid(v) => {
                let plan = diff(&desired_lab(&v.lab), &swarm.observe(name).await?);
                for c in &plan.conflicts {
                    println!("! {name}: {c}");
                }
                for a in &plan.actions {
                    println!("~ {name}: {}", a.describe());
                    changes += 1;
                }
            }
            LabEntry::Invalid(d) => println!("! {name}: invalid, labd keeps its last good version: {}", d[0]),
        }
    }
    for lab in swarm.owned_labs().await? {
        if !catalog.labs.contains_key(&lab) {
            for a in teardown(&lab, &swarm.observe(&lab).await?).actions {
                println!("- {lab}: {}", a.describe());
                changes += 1;
            }
        }
    }
    if changes == 0 {
        println!("no changes: Swarm matches {}", dir.display());
    }
    Ok(ExitCode::SUCCESS)
}
