//! `labctl logs LAB [SERVICE...]`: what the lab's tasks wrote, merged in time order as `docker
//! compose logs` shows a project's, each line labelled with its task (`raft.2 | …`), with the
//! schedule's steps marked where they came (`=== 01:02:03.456 step 2/3 (run 1): …`), so what a
//! node did reads against what the experiment did to it. `-f` follows, as `docker service logs
//! -f` does (lines in the order they arrive).

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::stream::{SelectAll, StreamExt};
use swarmlab::store::StoreReader;
use swarmlab::swarm::{DockerSwarm, LabTask, LogLine, LogRange};

use crate::common::*;

pub struct Args {
    pub lab: String,
    /// Short names; empty: every service.
    pub services: Vec<String>,
    pub follow: bool,
    pub since: Option<Duration>,
    pub tail: Option<u64>,
    pub timestamps: bool,
    /// Mark the schedule's steps among the lines.
    pub steps: bool,
}

/// A line of output, or a step of the schedule, at its time.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    time: DateTime<Utc>,
    /// Steps before lines of the same instant: a line at the step's time was written under it.
    line: bool,
    text: String,
}

/// Stable: a task's own lines keep their order at equal times.
fn in_time_order(entries: &mut [Entry]) {
    entries.sort_by_key(|e| (e.time, e.line));
}

fn line_entry(task: &LabTask, width: usize, line: LogLine, timestamps: bool) -> Entry {
    let time = if timestamps { format!("{} ", line.time.format("%Y-%m-%dT%H:%M:%S%.3fZ")) } else { String::new() };
    Entry { time: line.time, line: true, text: format!("{:<width$} | {time}{}", task.label(), line.text) }
}

/// The schedule's steps as entries among the lines.
async fn step_marks(store: Option<&mut StoreReader>, lab: &str, after: Option<DateTime<Utc>>) -> Vec<Entry> {
    schedule_steps(store, lab, after).await.iter().map(|e| Entry { time: e.time, line: false, text: step_mark(e) }).collect()
}

pub async fn run(url: &str, docker_host: Option<&str>, args: Args) -> anyhow::Result<ExitCode> {
    let Args { lab, services, follow, since, tail, timestamps, steps } = args;
    let swarm = DockerSwarm::connect(docker_host).await?;
    let tasks = swarm.lab_tasks(&lab, &services).await?;
    if tasks.is_empty() {
        let which = if services.is_empty() { String::new() } else { format!(" ({})", services.join(", ")) };
        anyhow::bail!("no task of lab `{lab}`{which} on this swarm: is it deployed (`labctl status {lab}`), and is DOCKER_HOST a manager of its swarm?");
    }
    // Said, not left to look like a quiet service.
    let silent: BTreeSet<&str> = tasks.iter().filter(|t| t.log_driver.as_deref() == Some("none")).map(|t| t.service.as_str()).collect();
    for service in silent {
        eprintln!("labctl logs: {service}: its log driver is `none`: Docker keeps none of its output (`logging.driver` in the lab)");
    }
    let since = since.and_then(|d| chrono::Duration::from_std(d).ok()).map(|d| Utc::now() - d);
    let range = LogRange { follow, since, tail };
    let width = tasks.iter().map(|t| t.label().len()).max().unwrap_or(0);
    // One connection for every look at the steps (`-f` looks each second).
    let mut store = if steps { reader(url).await.ok() } else { None };
    let mut marks = step_marks(store.as_mut(), &lab, since).await;
    if !follow {
        let mut entries = std::mem::take(&mut marks);
        for task in &tasks {
            let lines: Vec<_> = swarm.task_log(&task.id, range).collect().await;
            for line in lines {
                match line {
                    Ok(line) => entries.push(line_entry(task, width, line, timestamps)),
                    // A task on a node that is down: the others' output still counts.
                    Err(e) => {
                        eprintln!("labctl logs: {} on {}: {e}", task.label(), task.node);
                        break;
                    }
                }
            }
        }
        // With `--tail`, the steps from the first line shown on, not the whole schedule's.
        if tail.is_some() {
            if let Some(first) = entries.iter().filter(|e| e.line).map(|e| e.time).min() {
                entries.retain(|e| e.line || e.time >= first);
            }
        }
        in_time_order(&mut entries);
        for e in entries {
            println!("{}", e.text);
        }
        return Ok(ExitCode::SUCCESS);
    }
    // Following: the steps so far, then lines (each task's past ones first) and steps in the
    // order they come; tasks Swarm starts meanwhile (a killed one's replacement) are joined.
    let mut streams = SelectAll::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut last_mark = marks.iter().map(|m| m.time).max();
    let start = |task: &LabTask, range: LogRange, swarm: &DockerSwarm| {
        let task = task.clone();
        swarm.task_log(&task.id, range).map(move |line| (task.clone(), line))
    };
    for task in &tasks {
        seen.insert(task.id.clone());
        streams.push(start(task, range, &swarm).boxed());
    }
    for m in marks {
        println!("{}", m.text);
    }
    let mut look = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            item = streams.next(), if !streams.is_empty() => {
                let Some((task, line)) = item else { continue };
                match line {
                    Ok(line) => println!("{}", line_entry(&task, width, line, timestamps).text),
                    Err(e) => eprintln!("labctl logs: {}: {e}", task.label()),
                }
            }
            _ = look.tick() => {
                if steps {
                    for m in step_marks(store.as_mut(), &lab, last_mark).await {
                        last_mark = Some(m.time);
                        println!("{}", m.text);
                    }
                }
                let now = swarm.lab_tasks(&lab, &services).await.unwrap_or_default();
                for task in now {
                    if seen.insert(task.id.clone()) {
                        streams.push(start(&task, LogRange { follow: true, since: None, tail: None }, &swarm).boxed());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_sorts_before_a_line_of_the_same_instant_and_lines_are_labelled() {
        let t = Utc::now();
        let task = LabTask { id: "x".into(), service: "raft".into(), slot: Some(2), node: "n1".into(), created_at: None, current: true, log_driver: None };
        let line = line_entry(&task, 8, LogLine { time: t, stderr: false, text: "elected".into() }, false);
        assert_eq!(line.text, "raft.2   | elected");
        let step = Entry { time: t, line: false, text: "=== step".into() };
        let mut v = vec![line.clone(), step.clone()];
        in_time_order(&mut v);
        assert_eq!(v, vec![step, line]);
    }
}
