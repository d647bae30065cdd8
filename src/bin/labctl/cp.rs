//! `labctl cp LAB SERVICE[.SLOT]:PATH DEST`: a file or directory out of each task of a service
//! (or the one in a slot) on this node, as `docker cp` takes it out of one container, into
//! `DEST/<service>.<slot>/` (`DEST/<service>@<node>/` for a global service's task), so that the
//! copies of several tasks sit side by side. An ended task counts (its latest container): a
//! job's results, or a crashed node's last log, are there after the run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use futures::TryStreamExt;
use swarmlab::swarm::{task_label, DockerSwarm, SwarmError, TaskContainer};
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::tasks::{this_node, Placement, Target};

pub struct Args {
    pub lab: String,
    /// `SERVICE[.SLOT]:PATH`
    pub source: String,
    pub dest: PathBuf,
}

/// What one task gave.
#[derive(Debug, Default, PartialEq, Eq)]
struct Copied {
    files: u64,
    bytes: u64,
}

/// `SERVICE[.SLOT]:PATH`, the path absolute (a task has no working directory to be relative to
/// from outside).
fn parse_source(text: &str) -> anyhow::Result<(Target, String)> {
    let Some((target, path)) = text.split_once(':') else {
        anyhow::bail!("`{text}`: expected SERVICE[.SLOT]:PATH, as in `raft.1:/var/log/raft`");
    };
    if !path.starts_with('/') {
        anyhow::bail!("`{text}`: the path in the task must be absolute (`{target}:/{path}`?)");
    }
    Ok((target.parse()?, path.to_string()))
}

/// The latest container of each slot (of each global task here): a slot's earlier tries are
/// history.
fn latest_per_slot(containers: Vec<TaskContainer>, target: &Target) -> Vec<TaskContainer> {
    let mut latest: BTreeMap<Option<u64>, TaskContainer> = BTreeMap::new();
    for c in containers.into_iter().filter(|c| target.matches(c.slot)) {
        if latest.get(&c.slot).is_none_or(|held| c.created > held.created) {
            latest.insert(c.slot, c);
        }
    }
    latest.into_values().collect()
}

/// Unpacks Docker's tar stream of `path` into `dir`; entries that would land outside it are
/// refused by `tar` (`unpack_in`).
async fn copy_one(swarm: &DockerSwarm, container: &str, path: &str, dir: &Path) -> anyhow::Result<Copied> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let stream = swarm.copy_from_task(container, path).map_err(std::io::Error::other);
    let reader = SyncIoBridge::new(StreamReader::new(stream));
    let dir = dir.to_path_buf();
    // `tar` reads synchronously: on a blocking thread, fed as the bytes come.
    tokio::task::spawn_blocking(move || -> std::io::Result<Copied> {
        let mut archive = tar::Archive::new(reader);
        let mut copied = Copied::default();
        for entry in archive.entries()? {
            let mut entry = entry?;
            if entry.header().entry_type().is_file() {
                copied.files += 1;
                copied.bytes += entry.size();
            }
            entry.unpack_in(&dir)?;
        }
        Ok(copied)
    })
    .await?
    .map_err(|e| match e.get_ref().and_then(|inner| inner.downcast_ref::<SwarmError>()) {
        Some(SwarmError::NotFound(_)) => anyhow::anyhow!("no {path} in its container"),
        _ => anyhow::Error::new(e),
    })
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b < 1024 => format!("{b} B"),
        b if b < 1024 * 1024 => format!("{:.1} KB", b as f64 / 1024.0),
        b => format!("{:.1} MB", b as f64 / 1024.0 / 1024.0),
    }
}

pub async fn run(url: &str, docker_host: Option<&str>, args: Args) -> anyhow::Result<ExitCode> {
    let Args { lab, source, dest } = args;
    let (target, path) = parse_source(&source)?;
    let swarm = DockerSwarm::connect(docker_host).await?;
    let node = this_node(&swarm).await;
    let here = latest_per_slot(swarm.task_containers(&lab, &target.service).await?, &target);
    let placed = Placement::of(&swarm, url, &lab, Some(&target), &node).await;
    if here.is_empty() {
        return Err(placed.none_here("task", &lab, &target));
    }
    placed.warn_elsewhere("labctl cp", "copied");
    let mut failed = 0;
    for c in &here {
        let label = task_label(&c.service, c.slot, &node);
        let dir = dest.join(&label);
        match copy_one(&swarm, &c.id, &path, &dir).await {
            Ok(copied) => {
                let name = Path::new(&path).file_name().map(|n| dir.join(n)).unwrap_or(dir);
                println!("{label}: {path} -> {} ({} file{}, {})", name.display(), copied.files, if copied.files == 1 { "" } else { "s" }, size(copied.bytes));
            }
            Err(e) => {
                failed += 1;
                eprintln!("labctl cp: {label}: {}", swarmlab::error_chain::Chain(e.as_ref()));
            }
        }
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_names_the_tasks_and_an_absolute_path() {
        let (target, path) = parse_source("raft.2:/var/log/raft").expect("valid");
        assert_eq!((target.service.as_str(), target.slot, path.as_str()), ("raft", Some(2), "/var/log/raft"));
        assert!(parse_source("raft").unwrap_err().to_string().contains("SERVICE[.SLOT]:PATH"));
        assert!(parse_source("raft:log").unwrap_err().to_string().contains("`raft:/log`?"));
    }

    #[test]
    fn each_slot_gives_its_latest_container() {
        let c = |id: &str, slot, created| TaskContainer { id: id.into(), service: "raft".into(), slot, created };
        let all = vec![c("old1", Some(1), 10), c("new1", Some(1), 20), c("two", Some(2), 5)];
        let ids = |v: Vec<TaskContainer>| v.into_iter().map(|c| c.id).collect::<Vec<_>>();
        assert_eq!(ids(latest_per_slot(all.clone(), &"raft".parse().expect("target"))), ["new1", "two"]);
        assert_eq!(ids(latest_per_slot(all, &"raft.2".parse().expect("target"))), ["two"]);
    }
}
