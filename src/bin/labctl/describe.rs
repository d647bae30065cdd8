//! `labctl describe LAB`: conditions, services, per-task shaping, metrics, recent events.

use std::process::ExitCode;

use comfy_table::{presets::NOTHING, Table};
use swarmlab::spec::EffectiveConditions;
use swarmlab::store::keys;

use crate::common::*;

pub async fn run(url: &str, lab: &str) -> anyhow::Result<ExitCode> {
    let mut r = reader(url).await?;
    let Some(s) = r.status(lab).await? else {
        return Err(no_such_lab(&mut r, lab, "describe").await);
    };
    println!("Name:         {}", s.name);
    println!("Phase:        {}", s.phase);
    println!("Message:      {}", s.message);
    if !s.source.is_empty() {
        println!("File:         {}", s.source);
    }
    println!("Revision:     {}", s.revision);
    if let Some(commit) = &s.commit {
        println!("Commit:       {commit}");
    }
    println!("Generation:   {} (observed {})", s.generation, s.observed_generation);
    if let Some(e) = &s.last_error {
        println!("Last error:   {e}");
    }
    if let Some(b) = &s.backoff {
        println!("Backoff:      attempt {}, next try {}", b.attempt, b.next_try.to_rfc3339());
    }
    if let Some(w) = &s.waiting {
        // The progress deadline's clock: how long the lab has waited for exactly this.
        let waited = (chrono::Utc::now() - w.since).num_seconds().max(0);
        println!("Waiting:      {} (for {waited}s, since {})", w.what, w.since.format("%H:%M:%S"));
    }
    if let Some(c) = &s.schedule {
        let time = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(|t| t.format("%H:%M:%S%.3f").to_string()).unwrap_or_else(|| "-".into());
        println!("Schedule:     step {} (started {}, next change {})", step_cell(&s), time(c.started_at), time(c.next_change_at));
        let applied = c.applied_after_ms.map(|ms| format!("applied by every agent {:.1}s after its time", ms as f64 / 1000.0)).unwrap_or_else(|| "not yet applied everywhere".into());
        println!("In force:     {} ({applied})", c.in_force);
    }
    println!("\nConditions:");
    let mut t = Table::new();
    t.load_preset(NOTHING);
    t.set_header(["TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"]);
    for c in &s.conditions {
        t.add_row([c.type_.clone(), c.status.to_string(), c.reason.clone(), c.last_transition_time.format("%H:%M:%S").to_string(), c.message.clone()]);
    }
    println!("{}", t.trim_fmt());
    println!("\nServices:");
    let mut t = Table::new();
    t.load_preset(NOTHING);
    let jobs = s.services.values().any(|v| v.completed.is_some());
    // While Swarm rolls a change out: running tasks still on the previous spec.
    let rolling = s.services.values().any(|v| v.outdated > 0);
    let mut header = vec!["SERVICE", "RUNNING", "DESIRED"];
    header.extend(rolling.then_some("OUTDATED"));
    header.extend(jobs.then_some("COMPLETED"));
    header.extend(["RESTARTS", "MESSAGE"]);
    t.set_header(header);
    for (name, svc) in &s.services {
        let mut row = vec![name.clone(), svc.running.to_string(), svc.desired.to_string()];
        if rolling {
            row.push(svc.outdated.to_string());
        }
        if jobs {
            row.push(svc.completed.map(|c| c.to_string()).unwrap_or_else(|| "-".into()));
        }
        // As kubectl's pod RESTARTS: `4 (12s ago)`. A job's tasks end by design: none.
        row.push(match (svc.completed, svc.last_restart) {
            (Some(_), _) => "-".into(),
            (None, Some(last)) => format!("{} ({} ago)", svc.restarts, since(last)),
            (None, None) => svc.restarts.to_string(),
        });
        row.push(svc.message.clone());
        t.add_row(row);
    }
    println!("{}", t.trim_fmt());
    let mut tasks = r.task_shaping(lab).await.unwrap_or_default();
    tasks.sort_by(|a, b| (&a.service, a.slot, &a.node).cmp(&(&b.service, b.slot, &b.node)));
    let name = |t: &swarmlab::status::TaskShaping| swarmlab::status::task_name(&t.service, t.slot, &t.node);
    if tasks.iter().any(|t| !t.attachments.is_empty()) {
        println!("\nShaping (per task and network; egress):");
        let mut t = Table::new();
        t.load_preset(NOTHING);
        t.set_header(["TASK", "CONTAINER", "NODE", "NETWORK", "IF", "BACKEND", "DESIRED", "APPLIED", "COUNTERS", "PROBLEMS"]);
        for task in &tasks {
            for a in &task.attachments {
                let counters = a.counters.map(|c| format!("seen={} drop={} corrupt={} dup={} reorder={}", c.seen, c.dropped, c.corrupted, c.duplicated, c.reordered)).unwrap_or_default();
                let mut problems: Vec<String> = a.error.iter().cloned().collect();
                problems.extend(a.unsupported.iter().cloned());
                t.add_row([
                    name(task),
                    task.container.clone(),
                    task.node.clone(),
                    a.network.clone(),
                    a.interface.clone(),
                    a.backend.map(|b| b.to_string()).unwrap_or_else(|| "-".into()),
                    summary(&a.desired),
                    applied_cell(&a.desired, &a.applied),
                    counters,
                    problems.join("; "),
                ]);
            }
        }
        println!("{}", t.trim_fmt());
    }
    let processes: Vec<_> = tasks.iter().filter(|t| t.paused.is_some() || t.fault_error.is_some()).collect();
    if !processes.is_empty() {
        println!("\nTasks the schedule pauses, caps or kills (Docker's read-back):");
        let mut t = Table::new();
        t.load_preset(NOTHING);
        t.set_header(["TASK", "CONTAINER", "NODE", "STARTED", "PAUSED", "CPUS", "PROBLEMS"]);
        for task in processes {
            t.add_row([
                name(task),
                task.container.clone(),
                task.node.clone(),
                task.started_at.map(|t| t.format("%H:%M:%S%.3f").to_string()).unwrap_or_else(|| "-".into()),
                task.paused.map(|p| if p { "yes" } else { "no" }).unwrap_or("-").to_string(),
                cpus_cell(task.nano_cpus, task.nano_cpus_before),
                task.fault_error.clone().unwrap_or_default(),
            ]);
        }
        println!("{}", t.trim_fmt());
    }
    let metrics = r.metrics(&keys::metrics(lab)).await.unwrap_or_default();
    if !metrics.is_empty() {
        let line: Vec<String> = metrics.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("\nMetrics: {}", line.join(" "));
    }
    println!("\nEvents (the last 15; `labctl events {lab}` for more, `-w` to follow):");
    let mut t = Table::new();
    t.load_preset(NOTHING);
    t.set_header(["TIME", "TYPE", "REASON", "MESSAGE"]);
    for e in r.events(lab, 15).await.unwrap_or_default() {
        t.add_row([e.time.format("%H:%M:%S").to_string(), e.kind.to_string(), e.reason.to_string(), e.message]);
    }
    println!("{}", t.trim_fmt());
    Ok(ExitCode::SUCCESS)
}

/// A task's CPU limit as Docker reads it back: `0.2 (capped)` while the schedule's cap holds,
/// `any` with no limit.
fn cpus_cell(nano_cpus: Option<i64>, before: Option<i64>) -> String {
    let Some(nano) = nano_cpus else { return "-".into() };
    let limit = if nano == 0 { "any".to_string() } else { format!("{}", nano as f64 / 1e9) };
    if before.is_some() { format!("{limit} (capped)") } else { limit }
}

/// Conditions as a user writes them (`delay 40ms, loss 1%, toward b: delay 80ms`), not as JSON.
fn summary(c: &EffectiveConditions) -> String {
    if c.is_empty() { "none".into() } else { c.summary() }
}

/// What the agent reads back: `= desired` when it matches, else what it is.
fn applied_cell(desired: &EffectiveConditions, applied: &EffectiveConditions) -> String {
    if applied == desired { "= desired".into() } else { summary(applied) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_read_as_written_and_a_match_says_so() {
        let desired: EffectiveConditions = serde_json::from_str(r#"{"delay":"40ms","loss":"1%"}"#).unwrap();
        assert_eq!(summary(&desired), "delay 40ms, loss 1%");
        assert_eq!(applied_cell(&desired, &desired), "= desired");
        assert_eq!(applied_cell(&desired, &EffectiveConditions::default()), "none");
    }
}
