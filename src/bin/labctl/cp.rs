//! `labctl cp LAB SERVICE[.SLOT]:PATH DEST`: a file or directory out of each task of a service
//! (or the one in a slot), as `docker cp` takes it out of one container (on other nodes, their
//! agents take it out when started with `--allow-exec`, relayed through Redis), into
//! `DEST/<service>.<slot>/` (`DEST/<service>@<node>/` for a global service's task), so that the
//! copies of several tasks sit side by side. An ended task counts (its latest container): a
//! job's results, or a crashed node's last log, are there after the run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use futures::TryStreamExt;
use futures::channel::mpsc::UnboundedSender;
use swarmlab::exec_relay::TaskAction;
use swarmlab::swarm::{task_label, DockerSwarm, SwarmError};
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::asked::ask_agents;
use crate::relayed_tasks::{follow, stopped_agents, TaskSink};
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

/// Unpacks Docker's tar archive of `path` into `dir`, as its bytes come (from this node's
/// Docker, or relayed by another node's agent); entries that would land outside `dir` are
/// refused by `tar` (`unpack_in`).
async fn unpack<S>(archive: S, path: &str, dir: &Path) -> anyhow::Result<Copied>
where
    S: futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + Unpin + 'static,
{
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let reader = SyncIoBridge::new(StreamReader::new(archive));
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

/// The archives relayed by the other nodes' agents, each unpacked as it comes into its task's
/// directory.
struct Unpacking<'a> {
    path: &'a str,
    dest: &'a Path,
    /// The directories given out (this node's tasks first).
    taken: BTreeSet<String>,
    open: BTreeMap<(String, String), UnboundedSender<std::io::Result<bytes::Bytes>>>,
    /// By the name each task's copy is shown by (its directory's).
    unpacked: BTreeMap<String, tokio::task::JoinHandle<anyhow::Result<Copied>>>,
}

impl Unpacking<'_> {
    /// A task's directory: its name, or `name@node` when another node's task of that name (a
    /// slot whose task moved between nodes, each node holding one of its containers) already
    /// has it, so that two archives are never unpacked over each other.
    fn directory_for(&mut self, node: &str, task: &str) -> String {
        if self.taken.insert(task.to_string()) {
            return task.to_string();
        }
        let apart = format!("{task}@{node}");
        eprintln!("labctl cp: {task} also on {node} (the slot's task moved between nodes): that copy goes into {}", self.dest.join(&apart).display());
        self.taken.insert(apart.clone());
        apart
    }
}

impl TaskSink for Unpacking<'_> {
    fn started(&mut self, node: &str, task: &str) -> String {
        let name = self.directory_for(node, task);
        let (bytes, archive) = futures::channel::mpsc::unbounded();
        let (path, dir) = (self.path.to_string(), self.dest.join(&name));
        self.unpacked.insert(name.clone(), tokio::spawn(async move { unpack(archive, &path, &dir).await }));
        self.open.insert((node.to_string(), task.to_string()), bytes);
        name
    }

    fn output(&mut self, node: &str, task: &str, _stderr: bool, bytes: Vec<u8>) {
        if let Some(open) = self.open.get(&(node.to_string(), task.to_string())) {
            let _ = open.unbounded_send(Ok(bytes.into()));
        }
    }

    /// The archive ends with its last piece (a copy that failed ends short: `tar` says so).
    fn ended(&mut self, node: &str, task: &str) {
        self.open.remove(&(node.to_string(), task.to_string()));
    }
}

/// What one task gave, said.
fn said(label: &str, path: &str, dir: &Path, copied: anyhow::Result<Copied>) -> bool {
    match copied {
        Ok(copied) => {
            let name = Path::new(path).file_name().map(|n| dir.join(n)).unwrap_or(dir.to_path_buf());
            println!("{label}: {path} -> {} ({} file{}, {})", name.display(), copied.files, if copied.files == 1 { "" } else { "s" }, size(copied.bytes));
            true
        }
        Err(e) => {
            eprintln!("labctl cp: {label}: {}", swarmlab::error_chain::Chain(e.as_ref()));
            false
        }
    }
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
    let here = swarm.latest_task_containers(&lab, &target.service, target.slot).await?;
    let placed = Placement::of(&swarm, url, &lab, Some(&target), &node).await;
    if here.is_empty() && !placed.ask_elsewhere() {
        return Err(placed.none_here("task", &lab, &target));
    }
    // The tasks on other nodes, through their agents, left alone when nothing of the target is
    // listed there and either the list is Swarm's own or the task asked for is here.
    let only_here = placed.elsewhere.is_empty() && ((target.slot.is_some() && !here.is_empty()) || !placed.ask_elsewhere());
    let asked = match only_here {
        true => None,
        false => ask_agents(url, swarm.this_node_id().await, TaskAction::Copy { path: path.clone() }, &placed, here.is_empty(), "labctl cp", "copied").await?,
    };
    // This node's one after the other, the others' meanwhile (their agents wait while labctl
    // does not read).
    let local = async {
        let mut copied = 0;
        for c in &here {
            let label = task_label(&c.service, c.slot, &node);
            let dir = dest.join(&label);
            let archive = swarm.copy_from_task(&c.id, &path).map_err(std::io::Error::other);
            copied += usize::from(said(&label, &path, &dir, unpack(Box::pin(archive), &path, &dir).await));
        }
        copied
    };
    let remote = async {
        let Some(mut asked) = asked else { return (0, 0) };
        let withdraw = asked.withdrawer();
        let taken = here.iter().map(|c| task_label(&c.service, c.slot, &node)).collect();
        let mut unpacking = Unpacking { path: &path, dest: &dest, taken, open: BTreeMap::new(), unpacked: BTreeMap::new() };
        let ended = follow(&mut asked.messages, &placed.expected_answers(), withdraw, stopped_agents(url), &mut unpacking).await;
        asked.finish().await;
        let mut copied = 0;
        for (task, end) in &ended {
            let unpacked = unpacking.unpacked.remove(task);
            let copy = match (end, unpacked) {
                (Ok(_), Some(unpacked)) => unpacked.await.map_err(anyhow::Error::new).and_then(|r| r),
                (Ok(_), None) => Err(anyhow::anyhow!("its archive was not relayed")),
                (Err(e), _) => Err(anyhow::anyhow!("{e}")),
            };
            copied += usize::from(said(task, &path, &dest.join(task), copy));
        }
        (copied, ended.len())
    };
    let (copied_here, (copied_elsewhere, tried_elsewhere)) = tokio::join!(local, remote);
    if here.is_empty() && tried_elsewhere == 0 {
        return Err(placed.none_answered("task", &lab, &target));
    }
    Ok(if copied_here == here.len() && copied_elsewhere == tried_elsewhere { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_copied_on_two_nodes_goes_into_two_directories() {
        let dest = Path::new("/tmp/out");
        let mut unpacking = Unpacking { path: "/log", dest, taken: BTreeSet::from(["w.1".to_string()]), open: BTreeMap::new(), unpacked: BTreeMap::new() };
        // w.1's latest container here, another of w.1 on n3 and on n4; w.2 only on n3.
        assert_eq!(unpacking.directory_for("n3", "w.1"), "w.1@n3");
        assert_eq!(unpacking.directory_for("n4", "w.1"), "w.1@n4");
        assert_eq!(unpacking.directory_for("n3", "w.2"), "w.2");
        assert_eq!(unpacking.directory_for("n4", "w.2"), "w.2@n4");
    }

    #[test]
    fn a_source_names_the_tasks_and_an_absolute_path() {
        let (target, path) = parse_source("raft.2:/var/log/raft").expect("valid");
        assert_eq!((target.service.as_str(), target.slot, path.as_str()), ("raft", Some(2), "/var/log/raft"));
        assert!(parse_source("raft").unwrap_err().to_string().contains("SERVICE[.SLOT]:PATH"));
        assert!(parse_source("raft:log").unwrap_err().to_string().contains("`raft:/log`?"));
    }
}
