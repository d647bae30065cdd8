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

/// `desired` as the lab's schedule has it now, read from Swarm (labctl has no clock of its
/// own): its jobs in the run they carry, everything stopped if the schedule stopped it. A lab
/// in the middle of its schedule is then no difference.
fn as_scheduled(desired: swarmlab::plan::DesiredLab, observed: &swarmlab::plan::Observed) -> swarmlab::plan::DesiredLab {
    use swarmlab::plan::labels;
    let label = |key: &str| observed.services.iter().find_map(|s| s.labels.get(key).cloned());
    let desired = match label(labels::JOB_RUN) {
        Some(run) => swarmlab::plan::gate_jobs(desired, &swarmlab::plan::JobGate::Open { run: Some(run) }, observed),
        None => desired,
    };
    match label(labels::STOPPED).and(label(labels::SCHEDULE_CLOCK)) {
        Some(clock) => swarmlab::plan::stopped(desired, &clock),
        None => desired,
    }
}

/// Prints every difference; returns how many there are.
async fn differences(dir: &std::path::Path, docker_host: Option<&str>) -> anyhow::Result<usize> {
    use swarmlab::plan::{desired_lab, passes, teardown};
    use swarmlab::swarm::{DockerSwarm, Swarm};
    let catalog = load_dir(dir)?;
    let swarm = DockerSwarm::connect(docker_host).await?;
    // One look at the whole Swarm serves every lab.
    let observed = swarm.observe_all().await?;
    let mut changes = 0;
    for (name, entry) in &catalog.labs {
        match entry {
            LabEntry::Valid(v) => {
                let observed = observed.of_lab(name);
                let passes = passes(&as_scheduled(desired_lab(&v.lab), &observed), &observed);
                for c in passes.first().map(|p| p.conflicts.as_slice()).unwrap_or_default() {
                    println!("! {name}: {c}");
                    changes += 1;
                }
                // A later pass's actions (a recreated network created again, its services
                // back on it) happen once the earlier ones are done: shown as such.
                for (i, plan) in passes.iter().enumerate() {
                    for a in &plan.actions {
                        println!("~ {name}: {}{}", if i > 0 { "then " } else { "" }, a.describe());
                        changes += 1;
                    }
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
