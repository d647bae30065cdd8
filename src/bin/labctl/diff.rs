//! `labctl diff [DIR]`: what labd would do, without doing it: the Swarm objects it would
//! change, and the conditions it would have the node agents apply. Exit status as `flux
//! diff`: 0 when Swarm matches DIR, 1 when something would change (or clashes), 2 on error.

use std::collections::BTreeMap;
use std::process::ExitCode;

use swarmlab::plan::{shaping_in_force, DesiredLab, Observed, Shaping};
use swarmlab::source::{load_dir, LabEntry};
use swarmlab::spec::EffectiveConditions;
use swarmlab::store::StoreReader;
use swarmlab::swarm::Swarm;

pub async fn run(redis: &str, dir: &std::path::Path, docker_host: Option<&str>) -> ExitCode {
    match differences(redis, dir, docker_host).await {
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
async fn differences(redis: &str, dir: &std::path::Path, docker_host: Option<&str>) -> anyhow::Result<usize> {
    use swarmlab::plan::{desired_lab, passes, teardown};
    use swarmlab::swarm::DockerSwarm;
    let catalog = load_dir(dir)?;
    let swarm = DockerSwarm::connect(docker_host).await?;
    // One look at the whole Swarm serves every lab.
    let observed = swarm.observe_all().await?;
    // Without labd's Redis the objects are still compared, not the conditions.
    let mut store = match StoreReader::connect(redis).await {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("labctl diff: conditions not compared: cannot reach redis at {redis} ({e}); set --redis or REDIS_URL");
            None
        }
    };
    let mut changes = 0;
    for (name, entry) in &catalog.labs {
        match entry {
            LabEntry::Valid(v) => {
                let observed = observed.of_lab(name);
                let desired = desired_lab(&v.lab);
                if let Some(r) = store.as_mut() {
                    for line in shaping_changes(r, &swarm, &desired, &v.lab, &observed).await? {
                        println!("~ {name}: {line}");
                        changes += 1;
                    }
                }
                // Created once the services it depends on run, as labd does (`dependsOn`).
                let held = swarmlab::plan::hold_dependents(desired.clone(), &observed).held;
                let passes = passes(&as_scheduled(desired, &observed), &observed);
                for c in passes.first().map(|p| p.conflicts.as_slice()).unwrap_or_default() {
                    println!("! {name}: {c}");
                    changes += 1;
                }
                // A later pass's actions (a recreated network created again, its services
                // back on it) happen once the earlier ones are done: shown as such.
                for (i, plan) in passes.iter().enumerate() {
                    for a in &plan.actions {
                        let after = match a {
                            swarmlab::plan::Action::CreateService(s) => held.get(&s.name).map(|deps| format!(", once {} (dependsOn)", swarmlab::plan::order::awaited(deps))),
                            _ => None,
                        };
                        println!("~ {name}: {}{}{}", if i > 0 { "then " } else { "" }, a.describe(), after.unwrap_or_default());
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

/// The conditions the file puts on each attachment that differ from those labd has the node
/// agents apply now (`conditions of a on lan: delay 5ms (now: none)`). A lab with a schedule is
/// left out: what is in force changes on labd's clock, not with the file alone.
async fn shaping_changes(r: &mut StoreReader, swarm: &impl Swarm, desired: &DesiredLab, lab: &swarmlab::spec::Lab, observed: &Observed) -> anyhow::Result<Vec<String>> {
    if lab.spec.schedule.is_some() {
        return Ok(vec![]);
    }
    // Links classify by the addresses of the tasks they lead to, as labd finds them.
    let addresses = if desired.links.is_empty() { BTreeMap::new() } else { swarm.lab_addresses(desired, observed).await? };
    let wanted = shaping_in_force(desired, None, &addresses);
    Ok(shaping_lines(&desired.lab, &wanted, &r.desired_shaping(&desired.lab).await?))
}

/// One line per attachment whose conditions differ, in name order.
fn shaping_lines(lab: &str, wanted: &Shaping, now: &Shaping) -> Vec<String> {
    let none = EffectiveConditions::default();
    let mut attachments: Vec<(&String, &String)> = wanted.iter().chain(now).flat_map(|(svc, nets)| nets.keys().map(move |n| (svc, n))).collect();
    attachments.sort();
    attachments.dedup();
    let text = |c: &EffectiveConditions| if c.is_empty() { "none".to_string() } else { c.summary() };
    let prefix = format!("{lab}_");
    attachments
        .into_iter()
        .filter_map(|(svc, net)| {
            let get = |s: &Shaping| s.get(svc).and_then(|n| n.get(net)).cloned().unwrap_or_else(|| none.clone());
            let (want, have) = (get(wanted), get(now));
            (want != have).then(|| {
                let (svc, net) = (svc.strip_prefix(&prefix).unwrap_or(svc), net.strip_prefix(&prefix).unwrap_or(net));
                format!("conditions of {svc} on {net}: {} (now: {})", text(&want), text(&have))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_added_or_removed_attachment_is_a_line_and_an_equal_one_none() {
        let delay = |ms: &str| serde_json::from_value::<EffectiveConditions>(serde_json::json!({"delay": ms})).expect("conditions");
        let shaping = |entries: &[(&str, &str, &str)]| {
            let mut s = Shaping::new();
            for (svc, net, ms) in entries {
                s.entry(format!("kv_{svc}")).or_default().insert(format!("kv_{net}"), delay(ms));
            }
            s
        };
        let wanted = shaping(&[("a", "lan", "5ms"), ("b", "lan", "10ms"), ("c", "lan", "1ms")]);
        let now = shaping(&[("a", "lan", "20ms"), ("b", "lan", "10ms"), ("d", "wan", "7ms")]);
        assert_eq!(
            shaping_lines("kv", &wanted, &now),
            ["conditions of a on lan: delay 5ms (now: delay 20ms)", "conditions of c on lan: delay 1ms (now: none)", "conditions of d on wan: none (now: delay 7ms)"]
        );
        assert!(shaping_lines("kv", &wanted, &wanted).is_empty());
    }
}
