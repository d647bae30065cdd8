//! Following what the other nodes' agents relay for `labctl exec`, `cp` and `probe`: each node's
//! answer (the tasks it acts on, or why it will not), then each task's output and end. The
//! subcommand says what to do with a task's output (`TaskSink`); this says when it is over:
//! once every node expected has answered (or had its time) and every task it named has ended.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use swarmlab::exec_relay::ExecRelayed;
use tokio::sync::{mpsc, watch};

/// How long the other nodes' agents have to answer (they look every 300 ms).
pub const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// An agent that has not passed for this long has stopped (it passes every half second).
pub const AGENT_STOPPED_AFTER: Duration = Duration::from_secs(10);

/// The nodes whose agent has stopped passing, read from Redis every 2 s while the sender is
/// held (a node never seen is not among them: its agent may not have said anything yet).
pub fn stopped_agents(url: &str) -> watch::Receiver<BTreeSet<String>> {
    let (tx, rx) = watch::channel(BTreeSet::new());
    let url = url.to_string();
    tokio::spawn(async move {
        let Ok(mut store) = crate::common::reader(&url).await else { return };
        while !tx.is_closed() {
            tokio::time::sleep(Duration::from_secs(2)).await;
            if let Ok(ages) = store.agent_ages().await {
                let stopped: BTreeSet<String> = ages.into_iter().filter(|(_, age)| *age > AGENT_STOPPED_AFTER).map(|(node, _)| node).collect();
                tx.send_if_modified(|now| std::mem::replace(now, stopped.clone()) != stopped);
            }
        }
    });
    rx
}

/// A task's end, by the name it is shown by: its exit code, or why it has none.
pub type Ended = (String, Result<i64, String>);

/// What a subcommand does with the tasks relayed.
pub trait TaskSink {
    /// The agent on `node` acts on `task`; its output follows. Returns the name the task is
    /// shown by (its end too): `task`, unless the subcommand tells two of one name apart.
    fn started(&mut self, node: &str, task: &str) -> String;
    fn output(&mut self, node: &str, task: &str, stderr: bool, bytes: Vec<u8>);
    /// Nothing more of `task` comes (before its end is counted).
    fn ended(&mut self, node: &str, task: &str);
}

/// Follows `messages` until it is over. `expected`: node → the tasks placed there.
/// `all_answered` is called once every node expected has answered or had its time: the
/// request can go (an agent restarted meanwhile would otherwise act on it again).
/// `stopped`: the nodes whose agent has stopped passing; a task still running there ends with
/// that (its end will not come).
pub async fn follow(messages: &mut mpsc::Receiver<ExecRelayed>, expected: &BTreeMap<String, Vec<String>>, mut all_answered: impl FnMut(), mut stopped: watch::Receiver<BTreeSet<String>>, sink: &mut impl TaskSink) -> Vec<Ended> {
    let mut unanswered: BTreeMap<&String, &Vec<String>> = expected.iter().collect();
    let mut answered = BTreeSet::new();
    // (node, task) → the name it is shown by.
    let mut running: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut ended = Vec::new();
    let answer_by = tokio::time::Instant::now() + ANSWER_WITHIN;
    let no_answer = |node: &str, task: &str| (task.to_string(), Err(format!("no answer from the agent on {node} within {} s: is `labd agent` running there, with this Redis?", ANSWER_WITHIN.as_secs())));
    while !unanswered.is_empty() || !running.is_empty() {
        let waiting = !unanswered.is_empty();
        let received = async {
            if waiting {
                tokio::time::timeout_at(answer_by, messages.recv()).await.ok()
            } else {
                Some(messages.recv().await)
            }
        };
        let next = tokio::select! {
            next = received => next,
            Ok(()) = stopped.changed() => {
                let gone = stopped.borrow_and_update().clone();
                for (node, task) in running.keys().filter(|(node, _)| gone.contains(node)).cloned().collect::<Vec<_>>() {
                    let Some(shown) = running.remove(&(node.clone(), task.clone())) else { continue };
                    sink.ended(&node, &task);
                    ended.push((shown, Err(format!("the agent on {node} stopped before relaying the end (no pass for {} s)", AGENT_STOPPED_AFTER.as_secs()))));
                }
                continue;
            }
        };
        let message = match next {
            // The nodes that have not answered had their time; the tasks running go on.
            None => {
                for (node, tasks) in std::mem::take(&mut unanswered) {
                    if tasks.is_empty() {
                        eprintln!("labctl: no answer from the agent on {node} within {} s: its tasks, if it has any, were left out", ANSWER_WITHIN.as_secs());
                    }
                    ended.extend(tasks.iter().map(|t| no_answer(node, t)));
                }
                all_answered();
                continue;
            }
            // The stream's reader ended: nothing more comes.
            Some(None) => {
                for (node, tasks) in std::mem::take(&mut unanswered) {
                    ended.extend(tasks.iter().map(|t| no_answer(node, t)));
                }
                for ((node, task), shown) in std::mem::take(&mut running) {
                    sink.ended(&node, &task);
                    ended.push((shown, Err("its end was not relayed (Redis went away?)".to_string())));
                }
                break;
            }
            Some(Some(message)) => message,
        };
        match message {
            // An agent answers once (one restarted meanwhile may answer again: not acted on twice).
            ExecRelayed::Answered { node, .. } if answered.contains(&node) => {}
            ExecRelayed::Answered { node, tasks, refused } => {
                answered.insert(node.clone());
                let wanted = unanswered.remove(&node).cloned().unwrap_or_default();
                if waiting && unanswered.is_empty() {
                    all_answered();
                }
                // A task placed there that its agent does not find has stopped or moved since.
                ended.extend(wanted.iter().filter(|t| !tasks.contains(t)).map(|t| (t.clone(), Err(format!("not on {node} any more")))));
                match refused {
                    Some(reason) => ended.extend(tasks.into_iter().map(|t| (t, Err(reason.clone())))),
                    None => {
                        for task in tasks {
                            let shown = sink.started(&node, &task);
                            running.insert((node.clone(), task), shown);
                        }
                    }
                }
            }
            ExecRelayed::Output { node, task, stderr, bytes } => {
                if running.contains_key(&(node.clone(), task.clone())) {
                    sink.output(&node, &task, stderr, bytes);
                }
            }
            ExecRelayed::Exited { node, task, code } => {
                if let Some(shown) = running.remove(&(node.clone(), task.clone())) {
                    sink.ended(&node, &task);
                    ended.push((shown, Ok(code)));
                }
            }
            ExecRelayed::Failed { node, task, message } => {
                let shown = match running.remove(&(node.clone(), task.clone())) {
                    Some(shown) => {
                        sink.ended(&node, &task);
                        shown
                    }
                    None => task,
                };
                ended.push((shown, Err(message)));
            }
        }
    }
    ended
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Seen(Vec<String>);

    impl TaskSink for Seen {
        fn started(&mut self, node: &str, task: &str) -> String {
            self.0.push(format!("start {task}@{node}"));
            task.to_string()
        }
        fn output(&mut self, _: &str, task: &str, stderr: bool, bytes: Vec<u8>) {
            self.0.push(format!("{task} {} {}", if stderr { "err" } else { "out" }, String::from_utf8_lossy(&bytes)));
        }
        fn ended(&mut self, _: &str, task: &str) {
            self.0.push(format!("end {task}"));
        }
    }

    fn expected(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        pairs.iter().map(|(node, tasks)| (node.to_string(), tasks.iter().map(|t| t.to_string()).collect())).collect()
    }

    #[tokio::test]
    async fn each_relayed_task_ends_with_its_code_or_why_it_has_none() {
        let (tx, mut rx) = mpsc::channel(16);
        let node = |n: &str| n.to_string();
        for message in [
            ExecRelayed::Answered { node: node("n3"), tasks: vec!["w.3".into(), "w.4".into()], refused: None },
            ExecRelayed::Answered { node: node("n2"), tasks: vec!["w.1".into()], refused: Some("start it with --allow-exec".into()) },
            ExecRelayed::Output { node: node("n3"), task: "w.3".into(), stderr: false, bytes: b"hi".to_vec() },
            // A restarted agent's second answer is not acted on.
            ExecRelayed::Answered { node: node("n3"), tasks: vec!["w.3".into()], refused: None },
            ExecRelayed::Exited { node: node("n3"), task: "w.3".into(), code: 0 },
            ExecRelayed::Failed { node: node("n3"), task: "w.4".into(), message: "frozen".into() },
        ] {
            tx.send(message).await.unwrap();
        }
        let (mut withdrawn, mut seen) = (0, Seen::default());
        let (_stopped, none_stopped) = watch::channel(BTreeSet::new());
        let mut ended = follow(&mut rx, &expected(&[("n2", &["w.1", "w.2"]), ("n3", &["w.3", "w.4"])]), || withdrawn += 1, none_stopped, &mut seen).await;
        assert_eq!(withdrawn, 1, "the request goes once every node has answered");
        ended.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            ended,
            [
                ("w.1".to_string(), Err("start it with --allow-exec".to_string())),
                ("w.2".to_string(), Err("not on n2 any more".to_string())),
                ("w.3".to_string(), Ok(0)),
                ("w.4".to_string(), Err("frozen".to_string())),
            ]
        );
        assert_eq!(seen.0, ["start w.3@n3", "start w.4@n3", "w.3 out hi", "end w.3", "end w.4"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_that_does_not_answer_is_named_after_its_time_and_the_others_run_on() {
        let (tx, mut rx) = mpsc::channel(16);
        tx.send(ExecRelayed::Answered { node: "n3".into(), tasks: vec!["w.3".into()], refused: None }).await.unwrap();
        let late = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(ANSWER_WITHIN * 2).await;
            late.send(ExecRelayed::Exited { node: "n3".into(), task: "w.3".into(), code: 2 }).await.unwrap();
        });
        let started = tokio::time::Instant::now();
        let (_stopped, none_stopped) = watch::channel(BTreeSet::new());
        let ended = follow(&mut rx, &expected(&[("n2", &["w.1"]), ("n3", &["w.3"])]), || {}, none_stopped, &mut Seen::default()).await;
        assert_eq!(started.elapsed(), ANSWER_WITHIN * 2, "w.3's end is waited for past the time to answer");
        let (task, said) = &ended[0];
        assert!(task == "w.1" && said.as_ref().is_err_and(|e| e.contains("no answer from the agent on n2 within 5 s")), "{ended:?}");
        assert_eq!(ended[1], ("w.3".to_string(), Ok(2)));
        drop(tx);
    }

    #[tokio::test]
    async fn a_task_whose_agent_stops_midway_ends_with_that() {
        let (tx, mut rx) = mpsc::channel(16);
        tx.send(ExecRelayed::Answered { node: "n3".into(), tasks: vec!["w.3".into()], refused: None }).await.unwrap();
        tx.send(ExecRelayed::Output { node: "n3".into(), task: "w.3".into(), stderr: false, bytes: b"partial".to_vec() }).await.unwrap();
        let (stop, stopped) = watch::channel(BTreeSet::new());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            stop.send_replace(BTreeSet::from(["n3".to_string()]));
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        let mut seen = Seen::default();
        let ended = follow(&mut rx, &expected(&[("n3", &["w.3"])]), || {}, stopped, &mut seen).await;
        assert!(matches!(&ended[..], [(task, Err(e))] if task == "w.3" && e.contains("the agent on n3 stopped")), "{ended:?}");
        assert_eq!(seen.0, ["start w.3@n3", "w.3 out partial", "end w.3"]);
        drop(tx);
    }
}
