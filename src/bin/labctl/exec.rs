//! `labctl exec LAB SERVICE[.SLOT] [-i] [-t] -- COMMAND...`: runs a command in a task of the
//! lab, as `docker exec` does, found by the lab's names instead of a container id: in the task
//! of that slot (with a terminal if asked: `-it … -- sh` is a shell's prompt), or in every task
//! of the service (each line labelled `raft.2 | …`, as `labctl logs` labels them, and the tasks
//! run at once). Docker runs a command only in a container of its own node: in the tasks on
//! other nodes their agents run it, when started with `--allow-exec` (through Redis, see
//! `exec_relay`), labctl's input and terminal size going the same way for `-i` and `-t`.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use futures::future::join_all;
use futures::StreamExt;
use swarmlab::agent::requests::append;
use swarmlab::exec_relay::{ExecInput, TaskAction, INPUT_ALIVE_EVERY, INPUT_GONE_AFTER, STREAM_KEPT};
use swarmlab::store::keys;
use swarmlab::swarm::{task_label, DockerSwarm, ExecOutput, LocalTask};
use tokio::io::AsyncWriteExt;

use crate::asked::ask_agents;
use crate::relayed_tasks::{follow, stopped_agents, TaskSink};
use crate::tasks::{this_node, Placement, Target};

pub struct Args {
    pub lab: String,
    /// `service` or `service.slot`.
    pub target: String,
    pub command: Vec<String>,
    /// Pass labctl's standard input to the command (one task only).
    pub stdin: bool,
    /// Give the command a terminal (one task only).
    pub tty: bool,
}

/// Splits what a task wrote into whole lines, each printed with the task's label as it ends
/// (a line is never cut by another task's).
#[derive(Default)]
struct Lines {
    pending: Vec<u8>,
}

impl Lines {
    fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            out.push(String::from_utf8_lossy(&line[..end]).trim_end_matches('\r').to_string());
        }
        out
    }

    fn rest(&mut self) -> Option<String> {
        (!self.pending.is_empty()).then(|| String::from_utf8_lossy(&std::mem::take(&mut self.pending)).to_string())
    }
}

/// Runs the command in one task; returns its exit code. `prefix`: label each line (several
/// tasks), else pass the bytes through as they come.
async fn run_in(swarm: &DockerSwarm, task: &LocalTask, name: &str, command: &[String], stdin: bool, tty: bool, prefix: Option<usize>) -> anyhow::Result<i64> {
    // Docker would say "unpause the container": here a schedule froze it, and holds it so.
    if swarm.task_paused(&task.container).await.unwrap_or(false) {
        anyhow::bail!("{name} is frozen by a pause step of the lab's schedule: a command runs in it once the schedule thaws it");
    }
    let mut exec = swarm.exec_in_task(&task.container, command, stdin, tty).await.with_context(|| format!("{name}: cannot run {}", command.join(" ")))?;
    // Keys typed go to the task's terminal as they are (as `docker exec -it`).
    let _raw = (tty && stdin).then(crate::terminal::RawMode::enter).flatten();
    if tty {
        follow_terminal_size(swarm.clone(), exec.id.clone()).await;
    }
    if let Some(mut input) = exec.input.take() {
        // The command reads until labctl's input ends (as `docker exec -i`).
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut input).await;
            let _ = input.shutdown().await;
        });
    }
    let (mut out, mut err) = (Lines::default(), Lines::default());
    let show = |stderr: bool, line: &str| show(name, prefix.unwrap_or(0), stderr, line);
    while let Some(piece) = exec.output.next().await {
        match (piece.with_context(|| format!("{name}: reading the command's output"))?, prefix) {
            (ExecOutput::Stdout(bytes), None) => {
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(&bytes)?;
                stdout.flush()?;
            }
            (ExecOutput::Stderr(bytes), None) => {
                std::io::stderr().lock().write_all(&bytes)?;
            }
            (ExecOutput::Stdout(bytes), Some(_)) => out.push(&bytes).iter().for_each(|l| show(false, l)),
            (ExecOutput::Stderr(bytes), Some(_)) => err.push(&bytes).iter().for_each(|l| show(true, l)),
        }
    }
    if prefix.is_some() {
        out.rest().iter().for_each(|l| show(false, l));
        err.rest().iter().for_each(|l| show(true, l));
    }
    swarm.exec_ended(&exec.id).await.with_context(|| format!("{name}: the command's end"))
}

/// Sizes the command's terminal as the local one, now and whenever that one is resized.
async fn follow_terminal_size(swarm: DockerSwarm, exec_id: String) {
    let Some((rows, columns)) = crate::terminal::size() else { return };
    let _ = swarm.resize_exec_terminal(&exec_id, rows, columns).await;
    let Ok(mut resized) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()) else { return };
    tokio::spawn(async move {
        while resized.recv().await.is_some() {
            if let Some((rows, columns)) = crate::terminal::size() {
                let _ = swarm.resize_exec_terminal(&exec_id, rows, columns).await;
            }
        }
    });
}

pub async fn run(url: &str, docker_host: Option<&str>, args: Args) -> anyhow::Result<ExitCode> {
    let Args { lab, target, command, stdin, tty } = args;
    let target: Target = target.parse()?;
    if command.is_empty() {
        anyhow::bail!("no command: put it after `--`, as in `labctl exec {lab} {} -- ip addr`", target.service);
    }
    let swarm = DockerSwarm::connect(docker_host).await?;
    let node = this_node(&swarm).await;
    let mut here = swarm.local_tasks_of(&lab).await?;
    here.retain(|t| t.service == target.service && target.matches(t.slot));
    let placed = Placement::of(&swarm, url, &lab, Some(&target), &node).await;
    if here.is_empty() && !placed.ask_elsewhere() {
        return Err(placed.none_here("running task", &lab, &target));
    }
    let tasks = here.len() + placed.elsewhere.len();
    let one = || here.first().and_then(|t| t.slot).unwrap_or(1);
    if stdin && tasks > 1 {
        anyhow::bail!("-i passes one input to one command: name a slot (`{}.{}`)", target.service, one());
    }
    if tty && tasks > 1 {
        anyhow::bail!("-t gives one command a terminal: name a slot (`{}.{}`)", target.service, one());
    }
    if (stdin || tty) && here.is_empty() && placed.elsewhere.is_empty() {
        return Err(placed.none_here("running task", &lab, &target));
    }
    // Whether the other nodes' agents are left alone: nothing of the target is listed there,
    // and either the list is Swarm's own, or the task asked for is here, or only a task here
    // can be reached (-i, -t).
    let only_here = placed.elsewhere.is_empty() && (stdin || tty || (target.slot.is_some() && !here.is_empty()) || !placed.ask_elsewhere());
    let names: Vec<String> = here.iter().map(|t| task_label(&t.service, t.slot, &node)).collect();
    if here.len() == 1 && only_here {
        let code = run_in(&swarm, &here[0], &names[0], &command, stdin, tty, None).await?;
        // As a shell passes its command's status on (a code beyond 255 is a failure still).
        let code = u8::try_from(code).unwrap_or(1);
        if stdin {
            // The copy of labctl's input may be blocked reading it (a terminal waiting for a
            // key): the command has ended, so labctl ends now rather than at the next key.
            let _ = std::io::stdout().flush();
            std::process::exit(i32::from(code));
        }
        return Ok(ExitCode::from(code));
    }
    // The tasks on other nodes, through their agents.
    let attached = (stdin || tty) && here.is_empty();
    let action = TaskAction::Run { command: command.clone(), stdin: attached && stdin, tty: attached && tty };
    let asked = match only_here {
        true => None,
        false => ask_agents(url, swarm.this_node_id().await, action, &placed, here.is_empty(), "labctl exec", "run").await?,
    };
    if attached {
        let Some(asked) = asked else { anyhow::bail!("labctl exec: cannot ask the agents through Redis") };
        return attached_elsewhere(url, asked, &placed, stdin, tty).await;
    }
    let remote_names = placed.elsewhere_by_node.values().flatten();
    // Tasks the agents find that no list named are labelled as well (`service.N` fits most).
    let width = names.iter().chain(remote_names).map(String::len).max().unwrap_or(0).max(target.service.len() + 2);
    let prefix = (tasks > 1 || (asked.is_some() && target.slot.is_none())).then_some(width);
    let local = join_all(here.iter().zip(&names).map(|(task, name)| run_in(&swarm, task, name, &command, false, false, prefix)));
    let remote = async {
        match asked {
            Some(mut asked) => {
                let withdraw = asked.withdrawer();
                let ended = follow(&mut asked.messages, &placed.expected_answers(), withdraw, stopped_agents(url), &mut Shown { prefix, lines: BTreeMap::new() }).await;
                asked.finish().await;
                ended
            }
            None => vec![],
        }
    };
    let (local, remote) = tokio::join!(local, remote);
    let mut results: Vec<(String, Result<i64, String>)> = names.into_iter().zip(local.into_iter().map(|r| r.map_err(|e| format!("{}", swarmlab::error_chain::Chain(e.as_ref()))))).chain(remote).collect();
    // In slot order (`w.2` before `w.10`), wherever each ran.
    results.sort_by_key(|(name, _)| {
        let (service, slot) = name.split_once('.').unwrap_or((name, ""));
        (service.to_string(), slot.parse::<u64>().unwrap_or(0), name.clone())
    });
    if results.is_empty() {
        return Err(placed.none_answered("running task", &lab, &target));
    }
    if let [(_, Ok(code))] = results.as_slice() {
        return Ok(ExitCode::from(u8::try_from(*code).unwrap_or(1)));
    }
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(name, result)| match result {
            Ok(0) => None,
            Ok(code) => Some(format!("{name}: exit {code}")),
            Err(e) if e.starts_with(name.as_str()) => Some(e.clone()),
            Err(e) => Some(format!("{name}: {e}")),
        })
        .collect();
    if failed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("labctl exec: failed in {} of {} tasks: {}", failed.len(), results.len(), failed.join("; "));
    Ok(ExitCode::FAILURE)
}

/// One task on another node with labctl's input (`-i`) and terminal (`-t`): what labctl
/// reads goes to the command through the request's input stream, and its output comes back
/// as it is. Ends labctl with the command's exit code.
async fn attached_elsewhere(url: &str, mut asked: crate::asked::Asked<swarmlab::exec_relay::ExecRelayed>, placed: &Placement, stdin: bool, tty: bool) -> anyhow::Result<ExitCode> {
    let raw = (tty && stdin).then(crate::terminal::RawMode::enter).flatten();
    let sender = tokio::spawn(send_input(url.to_string(), keys::exec_input(&asked.id), stdin, tty));
    let withdraw = asked.withdrawer();
    let ended = follow(&mut asked.messages, &placed.expected_answers(), withdraw, stopped_agents(url), &mut Shown { prefix: None, lines: BTreeMap::new() }).await;
    asked.finish().await;
    sender.abort();
    drop(raw);
    let code = match ended.as_slice() {
        [(_, Ok(code))] => u8::try_from(*code).unwrap_or(1),
        [(name, Err(e))] => {
            eprintln!("labctl exec: {name}: {e}");
            1
        }
        _ => {
            eprintln!("labctl exec: no agent ran the command");
            1
        }
    };
    // The copy of labctl's input may be blocked reading it (a terminal waiting for a key):
    // the command has ended, so labctl ends now rather than at the next key.
    let _ = std::io::stdout().flush();
    std::process::exit(i32::from(code));
}

/// Sends labctl's input (`-i`) and terminal size (`-t`, now and on every resize) to the
/// command's agent, and that it is still there while it sends nothing else.
async fn send_input(url: String, stream: String, stdin: bool, tty: bool) {
    use tokio::io::AsyncReadExt;
    let Ok(client) = swarmlab::store::client(&url) else { return };
    let Ok(conn) = client.get_multiplexed_async_connection().await else { return };
    // The stream outlives labctl by three times the agent's patience.
    let expiry = INPUT_GONE_AFTER.as_secs() as i64 * 3;
    let send = move |entry: ExecInput| {
        let (mut conn, stream) = (conn.clone(), stream.clone());
        async move {
            let _ = append(&mut conn, &stream, [entry.to_fields()], STREAM_KEPT, expiry).await;
        }
    };
    let size = || crate::terminal::size().map(|(rows, columns)| ExecInput::Resize { rows, columns });
    if let Some(resize) = size().filter(|_| tty) {
        send(resize).await;
    }
    let mut resized = tty.then(|| tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()).ok()).flatten();
    let mut input = stdin.then(tokio::io::stdin);
    let mut alive = tokio::time::interval(INPUT_ALIVE_EVERY);
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            read = async { input.as_mut()?.read(&mut buffer).await.ok() }, if input.is_some() => match read {
                Some(n) if n > 0 => send(ExecInput::Data(buffer[..n].to_vec())).await,
                _ => {
                    input = None;
                    send(ExecInput::End).await;
                }
            },
            Some(()) = async { resized.as_mut()?.recv().await }, if resized.is_some() => {
                if let Some(resize) = size() {
                    send(resize).await;
                }
            }
            _ = alive.tick() => send(ExecInput::Alive).await,
        }
    }
}

/// The output of the tasks on other nodes, shown as it comes: as it is for one task, else in
/// whole lines labelled with the task.
struct Shown {
    prefix: Option<usize>,
    lines: BTreeMap<(String, String), (Lines, Lines)>,
}

impl TaskSink for Shown {
    fn started(&mut self, node: &str, task: &str) -> String {
        self.lines.insert((node.to_string(), task.to_string()), Default::default());
        task.to_string()
    }

    fn output(&mut self, node: &str, task: &str, stderr: bool, bytes: Vec<u8>) {
        let Some((out, err)) = self.lines.get_mut(&(node.to_string(), task.to_string())) else { return };
        match self.prefix {
            None => {
                let _ = if stderr { std::io::stderr().lock().write_all(&bytes) } else { std::io::stdout().lock().write_all(&bytes).and_then(|()| std::io::stdout().flush()) };
            }
            Some(width) => {
                let lines = if stderr { err.push(&bytes) } else { out.push(&bytes) };
                lines.iter().for_each(|l| show(task, width, stderr, l));
            }
        }
    }

    /// What it wrote after its last newline is shown.
    fn ended(&mut self, node: &str, task: &str) {
        if let (Some((mut out, mut err)), Some(width)) = (self.lines.remove(&(node.to_string(), task.to_string())), self.prefix) {
            out.rest().iter().for_each(|l| show(task, width, false, l));
            err.rest().iter().for_each(|l| show(task, width, true, l));
        }
    }
}

/// One line of a task's output, labelled.
fn show(name: &str, width: usize, stderr: bool, line: &str) {
    if stderr {
        eprintln!("{name:<width$} | {line}");
    } else {
        println!("{name:<width$} | {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_cut_into_whole_lines_and_the_rest_kept_for_the_end() {
        let mut lines = Lines::default();
        assert_eq!(lines.push(b"one\ntw"), ["one"]);
        assert_eq!(lines.push(b"o\r\nthree"), ["two"]);
        assert_eq!(lines.rest().as_deref(), Some("three"));
        assert_eq!(lines.rest(), None);
    }
}
