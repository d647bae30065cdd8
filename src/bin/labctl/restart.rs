//! `labctl restart LAB [SERVICE...] [--detach] [--timeout 120s]`: every task of the lab's
//! services replaced, one after the other, as `kubectl rollout restart` (a fresh start between
//! two runs of an experiment); by default it waits until Swarm has replaced them all.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use swarmlab::status::{EventReason, LabEvent};
use swarmlab::swarm::{DockerSwarm, RestartProgress, RESTART_POLL};

pub struct Args {
    pub lab: String,
    pub services: Vec<String>,
    pub detach: bool,
    pub timeout: Duration,
}

pub async fn run(redis: &str, docker_host: Option<&str>, args: Args) -> anyhow::Result<ExitCode> {
    let swarm = DockerSwarm::connect(docker_host).await?;
    let restarting = swarm.restart_services(&args.lab, &args.services).await?;
    if restarting.is_empty() {
        eprintln!("lab {} runs only jobs: name one to run it again (`labctl restart {} SERVICE`)", args.lab, args.lab);
        return Ok(ExitCode::SUCCESS);
    }
    // On the lab's timeline (its events, its logs' marks, its report), best effort: the restart
    // is Swarm's to do, with or without Redis.
    let names: Vec<&str> = restarting.iter().map(|r| r.service.as_str()).collect();
    let event = LabEvent::now(EventReason::Restarted, format!("labctl restart: every task of {} replaced", names.join(", ")));
    match crate::common::reader(redis).await {
        Ok(mut r) => {
            if let Err(e) = r.add_event(&args.lab, &event).await {
                eprintln!("warning: the restart is not on the lab's timeline: {e}");
            }
        }
        Err(e) => eprintln!("warning: the restart is not on the lab's timeline: {e:#}"),
    }
    for r in &restarting {
        let tasks = r.replicas.map_or_else(|| "every node's task".to_string(), |n| format!("{n} tasks"));
        eprintln!("restarting {} ({tasks})", r.service);
    }
    if args.detach {
        return Ok(ExitCode::SUCCESS);
    }
    let started = Instant::now();
    let mut waiting: Vec<_> = restarting.iter().collect();
    while !waiting.is_empty() {
        let mut still = Vec::new();
        for r in waiting {
            match swarm.restart_progress(&r.id).await? {
                RestartProgress::Done => eprintln!("{}: every task replaced after {:.1}s", r.service, started.elapsed().as_secs_f64()),
                RestartProgress::Updating => still.push(r),
                RestartProgress::Stopped(why) => anyhow::bail!("{}: Swarm stopped replacing its tasks: {why} (`labctl describe {}`, `docker service ps {}_{}`)", r.service, args.lab, args.lab, r.service),
            }
        }
        waiting = still;
        if !waiting.is_empty() {
            if started.elapsed() > args.timeout {
                let names: Vec<&str> = waiting.iter().map(|r| r.service.as_str()).collect();
                eprintln!("still replacing the tasks of {} after {:?} (`docker service ps`); they go on", names.join(", "), args.timeout);
                return Ok(ExitCode::from(1));
            }
            tokio::time::sleep(RESTART_POLL).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}
